"""The in-memory recording every calcium reader returns, so that solvers never see a file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.validate import check_real

__all__ = ["NEUROPIL_FACTOR", "Recording", "resolve_fs"]

#: suite2p's usual neuropil coefficient: F_corrected = F - 0.7 Fneu.
NEUROPIL_FACTOR = 0.7


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
