"""Read a recording given on the command line: ``.npy``, CaTune stem, suite2p, NWB, CaImAn.

Every reader returns the same :class:`Recording`, so solvers never see a file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.tuning_io import load_tuning_data, tuning_paths
from nnfit.validate import as_float_array, check_real

__all__ = ["NEUROPIL_FACTOR", "Recording", "read_input"]

#: suite2p's usual neuropil coefficient: F_corrected = F - 0.7 Fneu.
NEUROPIL_FACTOR = 0.7

#: File suffixes read as NWB and as CaImAn HDF5 results.
NWB_SUFFIXES = (".nwb",)
CAIMAN_SUFFIXES = (".hdf5", ".h5")


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
        import h5py

        with h5py.File(self.source, "r") as f:
            return (len(self.cell_index), int(f[self.dataset].shape[0]))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Traces ``start:stop`` as float64 ``(stop - start, n_timepoints)``."""
        if self.traces is not None:
            return np.asarray(self.traces[start:stop], dtype=np.float64)
        from nnfit.calcium.blocks import read_rows

        return read_rows(self.source, start, stop, dataset=self.dataset)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Traces of the given increasing ``rows`` as float64 (one read for a streamed one)."""
        if self.traces is not None:
            return np.asarray(self.traces[rows], dtype=np.float64)
        from nnfit.calcium.blocks import read_columns

        assert self.dataset is not None  # __post_init__: one of the two
        return read_columns(self.source, self.dataset, np.asarray(rows))

    def load(self) -> np.ndarray:
        """All traces in memory (reads a streamed recording whole)."""
        return self.traces if self.traces is not None else self.read_rows(0, self.shape[0])


def _resolve_fs(found: float | None, given: float | None, where: str, label: str = "fs") -> float:
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


def read_input(
    path: str | os.PathLike[str],
    fs: float | None = None,
    *,
    fs_label: str = "fs",
    series: str | None = None,
    lazy: bool = False,
) -> Recording:
    """Read a recording for the CLI from any of the layouts users have.

    * a suite2p plane folder (``F.npy``, ``Fneu.npy``, ``iscell.npy``, ``ops.npy``), see
      :func:`nnfit.calcium.suite2p.read_suite2p`;
    * an NWB file (``.nwb``): a ``RoiResponseSeries`` of the ophys processing module, chosen
      by ``series`` (e.g. ``"Fluorescence/RoiResponseSeries"``), see
      :func:`nnfit.calcium.nwb.read_nwb`; ``lazy`` streams it instead of loading it;
    * CaImAn results (``.hdf5``/``.h5`` written by ``CNMF.save``): ``series`` is ``"C+YrA"``
      (default), ``"C"`` or ``"F_dff"``, see :func:`nnfit.calcium.caiman.read_caiman`;
    * a CaTune stem: ``rec`` or ``rec.npy`` with ``rec_metadata.json`` next to it (written by
      :func:`~nnfit.calcium.save_for_tuning`); the sampling rate comes from the sidecar;
    * any other ``.npy``: ``(n_timepoints,)`` or ``(n_cells, n_timepoints)``, with ``fs``.

    A given ``fs`` that contradicts the file's is an error, as is a missing one; errors call
    it ``fs_label`` (the CLI passes ``"--fs"``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "traces.npy"
    >>> np.save(p, np.ones((3, 100)))
    >>> rec = read_input(p, fs=30)
    >>> rec.kind, rec.traces.shape, rec.fs
    ('npy', (3, 100), 30.0)
    """
    from nnfit.io import file_sha256

    p = Path(path)
    if p.is_dir():
        from nnfit.calcium.suite2p import read_suite2p

        _no_series(series, p)
        return read_suite2p(p, fs, fs_label=fs_label)
    if p.suffix.lower() in NWB_SUFFIXES + CAIMAN_SUFFIXES and p.is_file():
        if p.suffix.lower() in NWB_SUFFIXES:
            from nnfit.calcium.nwb import read_nwb

            return read_nwb(p, series, fs, fs_label=fs_label, lazy=lazy)
        from nnfit.calcium.caiman import read_caiman

        return read_caiman(p, fs, fs_label=fs_label, traces=series or "C+YrA")
    _no_series(series, p)
    npy, sidecar = tuning_paths(p)
    if npy.is_file() and sidecar.is_file():
        traces, meta = load_tuning_data(npy)
        fs_ = _resolve_fs(float(meta["sampling_rate_hz"]), fs, str(sidecar), fs_label)
        return Recording(traces, fs_, "catune", p, np.arange(traces.shape[0]),
                         provenance={"input_sha256": file_sha256(npy)})  # fmt: skip
    if not p.is_file():
        raise FileNotFoundError(
            f"input not found: {p} (expected a .npy file, a CaTune stem, a suite2p folder, "
            "an .nwb file or CaImAn .hdf5 results)"
        )
    if p.suffix != ".npy":
        raise ValueError(
            f"input {p} is not a .npy file, a CaTune stem, a suite2p folder, an .nwb file or "
            "CaImAn .hdf5 results"
        )
    try:
        raw = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{p}: not a readable .npy array ({exc})") from exc
    traces = as_float_array(f"traces in {p}", raw, ndim=(1, 2))
    traces = np.ascontiguousarray(np.atleast_2d(traces))
    fs_ = _resolve_fs(None, fs, str(p), fs_label)
    return Recording(traces, fs_, "npy", p, np.arange(traces.shape[0]),
                     provenance={"input_sha256": file_sha256(p)})  # fmt: skip


def _no_series(series: str | None, path: Path) -> None:
    if series is not None:
        raise ValueError(f"--series selects a series in an .nwb or CaImAn file; {path} is neither")
