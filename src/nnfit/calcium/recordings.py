"""Read a recording given on the command line: ``.npy``, CaTune stem, suite2p, NWB, CaImAn.

Every reader returns the same :class:`Recording`, so solvers never see a file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from nnfit.calcium.browser_files import load_tuning_data, tuning_paths
from nnfit.calcium.recording import NEUROPIL_FACTOR, Recording, resolve_fs
from nnfit.io.arrays import load_npy
from nnfit.validate import as_float_array

__all__ = ["NEUROPIL_FACTOR", "Recording", "read_input", "warn_if_transposed"]

log = logging.getLogger(__name__)


def warn_if_transposed(shape: tuple[int, ...], path: str | os.PathLike[str], fs: float) -> None:
    """Log a warning where a ``(cells, frames)`` array holds fewer frames than cells.

    A ``.npy`` carries no axis names; a ``(frames, cells)`` file (as pandas or MATLAB users
    often save one) is read with cells and frames swapped and deconvolves without complaint.
    Recordings have far more frames than cells, so the other way round is worth a word.
    """
    if len(shape) == 2 and shape[1] < shape[0]:
        n, T = shape
        log.warning(
            "%s is read as (cells, frames) = (%d, %d): %d cells of %d frames (%.3g s at %g Hz); "
            "if it holds (frames, cells), save its transpose (np.save(path, traces.T))",
            path, n, T, n, T, T / fs, fs,
        )  # fmt: skip


#: File suffixes read as NWB and as CaImAn HDF5 results.
NWB_SUFFIXES = (".nwb",)
CAIMAN_SUFFIXES = (".hdf5", ".h5")


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
        fs_ = resolve_fs(float(meta["sampling_rate_hz"]), fs, str(sidecar), fs_label)
        return Recording(
            traces,
            fs_,
            "catune",
            p,
            np.arange(traces.shape[0]),
            provenance={"input_sha256": file_sha256(npy)},
        )
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
        raw = load_npy(p)
    except ValueError as exc:
        raise ValueError(f"{p}: not a readable .npy array ({exc})") from exc
    traces = as_float_array(f"traces in {p}", raw, ndim=(1, 2))
    traces = np.ascontiguousarray(np.atleast_2d(traces))
    fs_ = resolve_fs(None, fs, str(p), fs_label)
    warn_if_transposed(traces.shape, p, fs_)
    return Recording(
        traces,
        fs_,
        "npy",
        p,
        np.arange(traces.shape[0]),
        provenance={"input_sha256": file_sha256(p)},
    )


def _no_series(series: str | None, path: Path) -> None:
    if series is not None:
        raise ValueError(f"--series selects a series in an .nwb or CaImAn file; {path} is neither")
