"""Read a recording given on the command line: a ``.npy``, a CaTune stem, a suite2p folder."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnfit.calcium.browser_files import load_tuning_data, tuning_paths
from nnfit.io.arrays import load_npy
from nnfit.validate import as_float_array, check_real

__all__ = ["NEUROPIL_FACTOR", "Recording", "read_input", "read_suite2p"]

#: suite2p's usual neuropil coefficient: F_corrected = F - 0.7 Fneu.
NEUROPIL_FACTOR = 0.7


@dataclass(frozen=True)
class Recording:
    """Traces ready to deconvolve, with where they came from.

    Attributes
    ----------
    traces : numpy.ndarray
        ``(n_cells, n_timepoints)`` float64, finite.
    fs : float
        Sampling rate in Hz.
    kind : str
        ``"npy"``, ``"catune"`` or ``"suite2p"``.
    source : Path
        The path given.
    cell_index : numpy.ndarray
        Row of each trace in the source (suite2p keeps only ROIs marked as cells).
    """

    traces: np.ndarray
    fs: float
    kind: str
    source: Path
    cell_index: np.ndarray


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


def read_suite2p(folder: str | os.PathLike[str], fs: float | None = None, *,
                 neuropil_factor: float = NEUROPIL_FACTOR, fs_label: str = "fs") -> Recording:  # fmt: skip
    """Read a suite2p plane folder: ``F - neuropil_factor * Fneu`` for the ROIs marked as cells.

    ``F.npy`` and ``Fneu.npy`` are required; ``iscell.npy`` (first column > 0 selects) and
    ``ops.npy`` (its ``fs``) are used when present. ``ops.npy`` is a pickled dict, so it is
    loaded with ``allow_pickle=True``: read only folders you trust.
    """
    root = Path(folder)
    files = {name: root / f"{name}.npy" for name in ("F", "Fneu", "iscell", "ops")}
    for name in ("F", "Fneu"):
        if not files[name].is_file():
            raise FileNotFoundError(f"suite2p folder {root} has no {name}.npy ({files[name]})")
    factor = check_real("neuropil_factor", neuropil_factor, low=0.0, high=1.0)
    f = as_float_array(f"traces in {files['F']}", np.load(files["F"]), ndim=(2,))
    fneu = as_float_array(f"traces in {files['Fneu']}", np.load(files["Fneu"]), ndim=(2,))
    if f.shape != fneu.shape:
        raise ValueError(f"{files['Fneu']} has shape {fneu.shape} but {files['F']} has {f.shape}")
    keep = np.arange(f.shape[0])
    if files["iscell"].is_file():
        iscell = np.asarray(np.load(files["iscell"]))
        flags = iscell[:, 0] if iscell.ndim == 2 else iscell
        if flags.shape[0] != f.shape[0]:
            raise ValueError(f"{files['iscell']} has {flags.shape[0]} rows, F.npy {f.shape[0]}")
        keep = np.flatnonzero(flags > 0)
        if keep.size == 0:
            raise ValueError(f"{files['iscell']} marks no ROI as a cell: nothing to deconvolve")
    found = None
    if files["ops"].is_file():
        ops = np.load(files["ops"], allow_pickle=True).item()
        if "fs" in ops:
            found = check_real(f"fs in {files['ops']}", ops["fs"], low=0.0, low_inclusive=False)
    fs_ = _resolve_fs(found, fs, str(files["ops"]) if found is not None else str(root), fs_label)
    traces = np.ascontiguousarray(f[keep] - factor * fneu[keep])
    return Recording(traces, fs_, "suite2p", root, keep)


def read_input(
    path: str | os.PathLike[str], fs: float | None = None, *, fs_label: str = "fs"
) -> Recording:
    """Read a recording for the CLI from any of the layouts users have.

    * a suite2p plane folder (``F.npy``, ``Fneu.npy``, ``iscell.npy``, ``ops.npy``), see
      :func:`read_suite2p`;
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
    p = Path(path)
    if p.is_dir():
        return read_suite2p(p, fs, fs_label=fs_label)
    npy, sidecar = tuning_paths(p)
    if npy.is_file() and sidecar.is_file():
        traces, meta = load_tuning_data(npy)
        fs_ = _resolve_fs(float(meta["sampling_rate_hz"]), fs, str(sidecar), fs_label)
        return Recording(traces, fs_, "catune", p, np.arange(traces.shape[0]))
    if not p.is_file():
        raise FileNotFoundError(
            f"input not found: {p} (expected a .npy file, a CaTune stem or a suite2p folder)"
        )
    if p.suffix != ".npy":
        raise ValueError(f"input {p} is not a .npy file, a CaTune stem or a suite2p folder")
    try:
        raw = load_npy(p)
    except ValueError as exc:
        raise ValueError(f"{p}: not a readable .npy array ({exc})") from exc
    traces = as_float_array(f"traces in {p}", raw, ndim=(1, 2))
    traces = np.ascontiguousarray(np.atleast_2d(traces))
    fs_ = _resolve_fs(None, fs, str(p), fs_label)
    return Recording(traces, fs_, "npy", p, np.arange(traces.shape[0]))
