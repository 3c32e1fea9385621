"""The in-memory recording every calcium reader returns, so that solvers never see a file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.validate import check_real

__all__ = [
    "FS_TOLERANCE",
    "NEUROPIL_FACTOR",
    "TIMESTAMP_TOLERANCE",
    "Recording",
    "rate_from_timestamps",
    "resolve_fs",
]

#: suite2p's usual neuropil coefficient: F_corrected = F - 0.7 Fneu.
NEUROPIL_FACTOR = 0.7
#: Largest distance, in frame intervals, of a timestamp from the evenly spaced frames through
#: the first and the last accepted as uniform sampling: timestamps rounded to the millisecond
#: or stored in float32 stay within a few hundredths, a dropped frame moves them by ~0.5.
TIMESTAMP_TOLERANCE = 0.1
#: Largest relative difference between a given ``fs`` and the rate of the timestamps.
FS_TOLERANCE = 0.01


@dataclass(frozen=True)
class Recording:
    """Traces ready to deconvolve, with where they came from.

    Attributes
    ----------
    traces : numpy.ndarray or None
        ``(n_cells, n_timepoints)`` float64, finite; ``None`` when the recording is streamed
        from ``dataset`` (read rows with :meth:`read_rows`).
    fs : float
        Sampling rate in Hz.
    kind : str
        ``"npy"``, ``"catune"``, ``"suite2p"``, ``"nwb"`` or ``"caiman"``.
    source : Path
        The path given.
    cell_index : numpy.ndarray
        Row of each trace in the source's ROI list (suite2p keeps only ROIs marked as cells,
        CaImAn only accepted components, NWB the rows of the ROI table the series refers to).
    roi_ids : numpy.ndarray, optional
        Identifiers the file gives those ROIs (the NWB ROI table's ``id`` column).
    dataset : str, optional
        HDF5 path, inside ``source``, of a ``(n_timepoints, n_cells)`` dataset the traces are
        streamed from (column ``j`` is cell ``j``); ``None`` when ``traces`` holds them.
    provenance : dict
        What a writer records: ``input_sha256`` and format details (series path, neuropil
        coefficient and where it came from, ...).
    """

    traces: np.ndarray | None
    fs: float
    kind: str
    source: Path
    cell_index: np.ndarray
    roi_ids: np.ndarray | None = None
    dataset: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.traces is None) == (self.dataset is None):
            raise ValueError("a Recording holds either traces or a dataset to stream, not both")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_cells, n_timepoints)`` without reading the traces."""
        if self.traces is not None:
            return (int(self.traces.shape[0]), int(self.traces.shape[1]))
        from nnfit.io.hdf5 import open_h5

        with open_h5(self.source, "r") as f:
            return (len(self.cell_index), int(f[self.dataset].shape[0]))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Traces ``start:stop`` as float64 ``(stop - start, n_timepoints)``."""
        if self.traces is not None:
            return np.asarray(self.traces[start:stop], dtype=np.float64)
        from nnfit.calcium.pipeline import read_rows

        return read_rows(self.source, start, stop, dataset=self.dataset)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Traces of the given increasing ``rows`` as float64 (one read for a streamed one)."""
        if self.traces is not None:
            return np.asarray(self.traces[rows], dtype=np.float64)
        from nnfit.calcium.pipeline import read_columns

        assert self.dataset is not None  # __post_init__: one of the two
        return read_columns(self.source, self.dataset, np.asarray(rows))

    def load(self) -> np.ndarray:
        """All traces in memory (reads a streamed recording whole)."""
        return self.traces if self.traces is not None else self.read_rows(0, self.shape[0])


def resolve_fs(found: float | None, given: float | None, where: str, label: str = "fs") -> float:
    """The sampling rate: the file's (``found``) or the user's (``given``), never two that differ."""
    if given is not None:
        given = check_real(label, given, low=0.0, low_inclusive=False)
    if found is not None and given is not None and not math.isclose(found, given, rel_tol=1e-9):
        raise ValueError(
            f"{label} = {given:g} Hz contradicts the sampling rate {found:g} Hz recorded in "
            f"{where}; drop {label} or fix the file"
        )
    fs = found if found is not None else given
    if fs is None:
        raise ValueError(f"{where} does not record a sampling rate: pass {label} (in Hz)")
    return fs


def rate_from_timestamps(
    ts: np.ndarray, where: str, fs: float | None = None, fs_label: str = "fs"
) -> float:
    """The sampling rate of evenly spaced ``ts`` (seconds): ``(n - 1) / (t[-1] - t[0])``.

    Every timestamp must be finite and lie within :data:`TIMESTAMP_TOLERANCE` frame intervals
    of the evenly spaced frames through the first and the last (rounding stays well within
    that; a dropped frame or a gap between recordings does not), and a given ``fs`` within
    :data:`FS_TOLERANCE` of the rate found. ``where`` (the timestamps' file and place) starts
    every error message.

    Examples
    --------
    >>> rate_from_timestamps(np.round(np.arange(100) / 30, 3), "t.csv")
    30.0
    """
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"{where}: expected at least 2 timestamps; got shape {ts.shape}")
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        raise ValueError(
            f"{where}: {bad.size} NaN/Inf timestamp(s), first at index {bad[0]}; fix the file "
            "(or export the traces and pass --fs)"
        )
    dt = np.diff(ts)
    back = np.flatnonzero(dt <= 0)
    if back.size:
        i = int(back[0])
        raise ValueError(
            f"{where}: timestamps do not increase: interval {i} is {dt[i]:.6g} s "
            f"({back.size} such interval(s)); fix the file"
        )
    # from the whole span, not one interval: timestamps rounded to the millisecond make
    # intervals of 33 and 34 ms at 30 Hz, and the span averages the rounding out
    step = float(ts[-1] - ts[0]) / (ts.size - 1)
    dev = np.abs(ts - (ts[0] + step * np.arange(ts.size))) / step
    if float(dev.max()) > TIMESTAMP_TOLERANCE:
        j = int(np.argmax(np.abs(dt - step)))
        raise ValueError(
            f"{where}: sampling is not uniform: interval {j} is {dt[j]:.6g} s against "
            f"{step:.6g} s on average, and frame {int(np.argmax(dev))} lies "
            f"{float(dev.max()):.2g} intervals off the evenly spaced frames (more than "
            f"{TIMESTAMP_TOLERANCE:g}); deconvolution needs evenly spaced frames"
        )
    found = 1.0 / step
    if fs is not None:
        given = check_real(fs_label, fs, low=0.0, low_inclusive=False)
        if not math.isclose(given, found, rel_tol=FS_TOLERANCE):
            raise ValueError(
                f"{fs_label} = {given:g} Hz contradicts the sampling rate {found:g} Hz of the "
                f"timestamps in {where}; drop {fs_label} or fix the file"
            )
    return found
