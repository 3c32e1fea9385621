"""Read a recording given on the command line: ``.npy``, CaTune stem, suite2p, NWB, CaImAn,
MATLAB ``.mat`` or a text table.

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


def warn_if_transposed(
    shape: tuple[int, ...],
    path: str | os.PathLike[str],
    fs: float,
    fix: str = "if it holds (frames, cells), save its transpose (np.save(path, traces.T))",
) -> None:
    """Log a warning where a ``(cells, frames)`` array holds fewer frames than cells.

    A ``.npy`` (or a ``.mat`` matrix, or a table) carries no axis names; a ``(frames, cells)``
    file (as pandas or MATLAB users often save one) is read with cells and frames swapped and
    deconvolves without complaint. Recordings have far more frames than cells, so the other
    way round is worth a word; ``fix`` says how to turn the file round.
    """
    if len(shape) == 2 and shape[1] < shape[0]:
        n, T = shape
        log.warning(
            "%s is read as (cells, frames) = (%d, %d): %d cells of %d frames (%.3g s at %g Hz); "
            "%s",
            path, n, T, n, T, T / fs, fs, fix,
        )  # fmt: skip


#: File suffixes read as NWB, CaImAn HDF5 results, MATLAB files and text tables.
NWB_SUFFIXES = (".nwb",)
CAIMAN_SUFFIXES = (".hdf5", ".h5")
MATLAB_SUFFIXES = (".mat",)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
#: Every suffix of a file read by its suffix (an export into a folder drops it from the name).
FILE_SUFFIXES = NWB_SUFFIXES + CAIMAN_SUFFIXES + MATLAB_SUFFIXES + TABLE_SUFFIXES
#: What INPUT may be, for messages.
INPUT_KINDS = (
    "a .npy file, a CaTune stem, a suite2p folder, an .nwb file, CaImAn .hdf5 results, a "
    "MATLAB .mat file or a .csv/.tsv/.txt table"
)


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
      :func:`nnfit.calcium.suite2p.read_suite2p`, or the ``suite2p`` folder above the planes:
      all of them, see :func:`nnfit.calcium.suite2p.read_suite2p_planes`;
    * an NWB file (``.nwb``): a ``RoiResponseSeries`` of the ophys processing module, chosen
      by ``series`` (e.g. ``"Fluorescence/RoiResponseSeries"``), see
      :func:`nnfit.calcium.nwb.read_nwb`; ``lazy`` streams it instead of loading it;
    * CaImAn results (``.hdf5``/``.h5`` written by ``CNMF.save``): ``series`` is ``"C+YrA"``
      (default), ``"C"`` or ``"F_dff"``, see :func:`nnfit.calcium.caiman.read_caiman`;
    * a MATLAB file (``.mat``, any version): ``series`` names the variable (or ``NAME.FIELD``
      of a struct), rows are cells, see :func:`nnfit.calcium.matlab.read_matlab`;
    * a text table (``.csv``, ``.tsv``, ``.txt``; an Inscopix IDPS cell-trace export or plain
      columns): rows are frames, see :func:`nnfit.calcium.tables.read_table`;
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
        from nnfit.calcium.suite2p import plane_folders, read_suite2p, read_suite2p_planes

        _no_series(series, p)
        if not (p / "F.npy").is_file() and plane_folders(p):
            return read_suite2p_planes(p, fs, fs_label=fs_label)
        return read_suite2p(p, fs, fs_label=fs_label)
    suffix = p.suffix.lower()
    if suffix in FILE_SUFFIXES and p.is_file():
        if suffix in NWB_SUFFIXES:
            from nnfit.calcium.nwb import read_nwb

            return read_nwb(p, series, fs, fs_label=fs_label, lazy=lazy)
        if suffix in CAIMAN_SUFFIXES:
            from nnfit.calcium.caiman import read_caiman

            return read_caiman(p, fs, fs_label=fs_label, traces=series or "C+YrA")
        if suffix in MATLAB_SUFFIXES:
            from nnfit.calcium.matlab import read_matlab

            rec = read_matlab(p, series, fs, fs_label=fs_label)
            fix = "if its rows are frames, store its transpose (in MATLAB: X = X.')"
        else:
            from nnfit.calcium.tables import read_table

            rec = read_table(p, series, fs, fs_label=fs_label)
            fix = "a table's rows are frames: if its rows are cells, store its transpose"
        warn_if_transposed(rec.shape, p, rec.fs, fix)
        return rec
    npy, sidecar = tuning_paths(p)
    stem = npy.is_file() and sidecar.is_file()
    # a missing file is named as missing before any option is held against it
    if not stem and not p.is_file():
        raise FileNotFoundError(f"input not found: {p} (expected {INPUT_KINDS})")
    _no_series(series, p)
    if stem:
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
    if p.suffix != ".npy":
        raise ValueError(f"input {p} is not {INPUT_KINDS}")
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
        raise ValueError(
            f"--series selects a series in an .nwb, CaImAn or .mat file, or the cells of an IDPS "
            f".csv; {path} is none of these"
        )
