"""Deconvolution from traces to results: every missing parameter filled in, then the exact solve.

:func:`deconvolve` estimates what is not given (kinetics pooled over cells with
:mod:`nnfit.calcium.estimate`, ``lam`` per cell from the noise), then runs the certified solve
of :mod:`nnfit.calcium.exact`; this is the top of the calcium chain
``pipeline -> estimate -> exact -> {_ipm, ar2, baseline} -> kernel``.

Whole recordings in bounded memory: :func:`deconvolve_recording` reads a ``(cells, T)`` ``.npy`` memory-mapped, cuts it into blocks of
cells and deconvolves each block (in this process with all cores, or on a Dask cluster with
``scheduler=``). Each finished block is written atomically to ``OUT/.partial/block_NNNNNN.npz``
by whoever computed it, so a killed run loses at most the blocks in flight, and a rerun with the
same input and settings skips the blocks already on disk (a ``state.json`` there records the
input's size, mtime and head hash, and the settings; a mismatch starts over). At the end the
blocks are assembled into ``spikes.npy``, ``reconvolution.npy`` (calcium + baseline) and
``baseline.npy``
(memory-mapped writes, each atomically renamed into place) and a per-cell ``summary.csv``; then
``.partial`` is removed. Peak memory is a few blocks, whatever the number of cells.

On a cluster the workers read the input and write the blocks themselves: ``INPUT`` and ``OUT``
must be on a file system they share (as with any Dask deployment over files).

The input can also be a ``(T, cells)`` dataset inside an HDF5 file (an NWB
``RoiResponseSeries``'s ``data``, chunked and compressed or not): ``dataset=`` names it, and
each block reads its columns as one hyperslab, so such a file is never loaded whole either.

One module, though long: ``deconvolve`` (fill in what is missing, then solve) and the
streamed, resumable ``deconvolve_recording`` are one pipeline at two scales; the block reading,
fingerprinting and assembly helpers below serve only the streamed path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnfit.calcium.estimate import estimate_kinetics, estimate_noise, lam_from_noise
from nnfit.calcium.exact import BASELINES, DeconvolutionResult, solve_exact
from nnfit.calcium.indicators import Indicator, indicator_kinetics
from nnfit.calcium.kernel import check_kinetics
from nnfit.calcium.results import SUMMARY_FIELDS, summary_lines
from nnfit.io import atomic_path, atomic_write_bytes, atomic_write_json
from nnfit.io.arrays import load_npy
from nnfit.io.lock import output_folder
from nnfit.validate import NonFiniteValues, as_float_array, check_finite_rows, check_int, check_real

if TYPE_CHECKING:
    from nnfit.calcium.two_decay import TwoDecayKernel

logger = logging.getLogger(__name__)

__all__ = [
    "BlockSettings",
    "deconvolve",
    "deconvolve_recording",
    "open_traces",
    "read_columns",
    "read_rows",
]


def _two_decay_kernel(
    fs: float,
    tau_rise: float | None,
    tau_decay: float | None,
    tau_decay2: float | None,
    fraction: float | None,
    indicator: str | None,
    sample: Callable[[], np.ndarray],
    n_jobs: int,
) -> tuple[TwoDecayKernel, bool]:
    """The kernel with two decays of :func:`deconvolve` and :func:`deconvolve_recording`: given
    whole, or estimated from ``sample()`` (rows of traces); and whether it was estimated."""
    from nnfit.calcium.two_decay import TwoDecayKernel, estimate_two_decay_kernel

    if indicator is not None:
        raise ValueError(
            "indicator bounds the one-decay estimate; a kernel with two decays takes no "
            f"indicator: drop indicator={indicator!r}, or the second decay"
        )
    given = (tau_rise, tau_decay, tau_decay2, fraction)
    if all(v is None for v in given):
        return estimate_two_decay_kernel(list(sample()), fs, n_jobs=n_jobs), True
    if any(v is None for v in given):
        raise ValueError(
            "a kernel with two decays is given by tau_rise, tau_decay (the fast decay), "
            "tau_decay2 and fraction together, or estimated with none of them (two_decay=True); "
            f"got tau_rise={tau_rise!r}, tau_decay={tau_decay!r}, tau_decay2={tau_decay2!r}, "
            f"fraction={fraction!r}"
        )
    return TwoDecayKernel(tau_rise, tau_decay, tau_decay2, fraction, fs), False  # type: ignore[arg-type]


def deconvolve(
    traces: np.ndarray,
    fs: float,
    tau_rise: float | None = None,
    tau_decay: float | None = None,
    lam: float | np.ndarray | None = None,
    baseline: str = "auto",
    *,
    tol: float = 1e-9,
    max_iter: int = 100,
    n_jobs: int = 1,
    drift_rounds: int = 2,
    indicator: str | None = None,
    tau_decay2: float | None = None,
    fraction: float | None = None,
    two_decay: bool = False,
) -> DeconvolutionResult:
    r"""Infer spikes: CaTune's objective, solved to a certified optimum in O(T) per iteration.

    Parameters
    ----------
    traces : array_like
        ``(T,)`` or ``(cells, T)`` fluorescence.
    fs : float
        Sampling rate in Hz.
    tau_rise, tau_decay : float, optional
        Kernel time constants in seconds. Both ``None`` (default): estimated from the data
        (pooled over cells, :func:`nnfit.calcium.estimate_parameters`), within ``indicator``'s
        range if one is named.
    lam : float or array_like, optional
        Sparsity weight, as in ``run_deconvolution``: one value or one per cell. ``None``:
        ``z noise ||h||_2`` per cell (independent of trace length).
    baseline : {"auto", "none", "constant", "drift"}
        Baseline model; see the module docstring.
    tol : float
        Stop when the relative duality gap is at most ``tol``.
    max_iter : int
        Interior-point iterations per solve.
    n_jobs : int
        Threads over cells (the compiled solver releases the GIL); ``-1`` for all cores.
    drift_rounds : int
        Baseline refinement rounds for ``"drift"``.
    indicator : str, optional
        The indicator (e.g. ``"GCaMP6s"``; :data:`nnfit.calcium.indicators.INDICATORS`), a
        prior on the estimate: with ``tau_rise`` and ``tau_decay`` not given, the kinetics are
        estimated as without it, the decay within the indicator's
        :attr:`~nnfit.calcium.indicators.Indicator.decay_range` (a warning is logged where it
        stops at a bound). For the preset's kinetics as they are, pass them as ``tau_rise``
        and ``tau_decay``.
    tau_decay2, fraction : float, optional
        A kernel with two decays (:class:`~nnfit.calcium.TwoDecayKernel`): ``tau_decay`` the
        fast one with weight ``fraction``, ``tau_decay2`` the slow one; give them with
        ``tau_rise`` and ``tau_decay``. Solved by :func:`~nnfit.calcium.deconvolve_two_decay`.
    two_decay : bool
        With no kinetics given: estimate a kernel with two decays
        (:func:`~nnfit.calcium.estimate_two_decay_kernel`, a second decay only where the
        traces show one; 4-13x the one-decay estimate's cost) instead of one decay.

    Returns
    -------
    DeconvolutionResult

    Notes
    -----
    For each trace ``y`` (length ``T``) the problem is

    .. math::

        \min_{s \ge 0,\; b} \; \tfrac12 \lVert y - b - K s \rVert_2^2
        + \lambda \sum_t s_t ,

    with ``K`` CaTune's truncated double-exponential kernel (the convolution matrix of
    :func:`~nnfit.calcium.build_kernel`) and ``b`` the baseline model chosen by ``baseline``
    (zero, one constant, or a slow curve plus a constant). It is solved by a primal-dual
    interior-point method with Mehrotra's predictor-corrector [1]_; each Newton system is
    pentadiagonal through the kernel's AR(2) form (as in OASIS [2]_), so an iteration costs
    O(T). The returned ``gap`` is the relative duality gap of a feasible dual point [3]_:
    ``F(s) - F* <= gap F(s)`` holds for the returned ``s``.

    References
    ----------
    .. [1] S. Mehrotra, "On the implementation of a primal-dual interior point method",
       SIAM J. Optim. 2(4), 575-601 (1992). https://doi.org/10.1137/0802028
    .. [2] J. Friedrich, P. Zhou, L. Paninski, "Fast online deconvolution of calcium imaging
       data", PLoS Comput. Biol. 13(3), e1005423 (2017).
       https://doi.org/10.1371/journal.pcbi.1005423
    .. [3] S. Boyd, L. Vandenberghe, *Convex Optimization*, Cambridge University Press
       (2004), chapter 5. https://doi.org/10.1017/CBO9780511804441

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s_true = rng.poisson(0.02, 3000).astype(float)
    >>> from nnfit.calcium.ar2 import AR2Convolution
    >>> y = 0.5 + AR2Convolution(3000, 0.05, 0.5, 30.0).forward(s_true)
    >>> y += 0.1 * rng.standard_normal(3000)
    >>> res = deconvolve(y, 30.0, 0.05, 0.5, lam=0.3, baseline="constant")
    >>> bool(res.converged[0]), bool(res.gap[0] <= 1e-9), round(float(res.baseline[0]), 1)
    (True, True, 0.5)
    """
    start = time.perf_counter()
    x = as_float_array("traces", traces, ndim=(1, 2))
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
    tol = check_real("tol", tol, low=0.0, low_inclusive=False)
    max_iter = check_int("max_iter", max_iter, low=1)
    n_jobs = check_int("n_jobs", n_jobs, low=-1)
    drift_rounds = check_int("drift_rounds", drift_rounds, low=0)
    if not np.all(np.isfinite(x)):
        raise ValueError("traces contain NaN or infinite values; remove or interpolate them first")
    x2 = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float64)
    n_cells, T = x2.shape
    if T < 8:
        raise ValueError(f"traces need at least 8 frames; got {T}")
    if two_decay or tau_decay2 is not None or fraction is not None:
        from nnfit.calcium.two_decay import deconvolve_two_decay

        kernel, estimated_kinetics = _two_decay_kernel(
            fs, tau_rise, tau_decay, tau_decay2, fraction, indicator, lambda: x2, n_jobs
        )
        res = deconvolve_two_decay(
            x2, kernel, lam, baseline,
            tol=tol, max_iter=max_iter, n_jobs=n_jobs, drift_rounds=drift_rounds,
        )  # fmt: skip
        res.estimated["kinetics"] = estimated_kinetics
        if x.ndim == 1:
            res.spikes, res.calcium, res.baseline = res.spikes[0], res.calcium[0], res.baseline[0]
        res.time_s = time.perf_counter() - start
        return res
    estimated = {"kinetics": False, "lam": False}
    preset = _prior(indicator, tau_rise, tau_decay)
    if tau_rise is None and tau_decay is None:
        tau_rise, tau_decay = _estimate_kinetics(x2, fs, preset)
        estimated["kinetics"] = True
    elif tau_rise is None or tau_decay is None:
        raise ValueError(
            "give both tau_rise and tau_decay, or neither (then both are estimated); "
            f"got tau_rise={tau_rise!r}, tau_decay={tau_decay!r}"
        )
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    # the noise level is needed for lam's rule and for "auto"; skip the spectrum otherwise
    noise = (
        estimate_noise(x2, fs) if (lam is None or baseline == "auto") else np.full(n_cells, np.nan)
    )
    if lam is None:
        lams = lam_from_noise(noise, tau_rise, tau_decay, fs)
        estimated["lam"] = True
    else:
        lams = np.asarray(lam, dtype=float)
        if lams.ndim == 0:
            lams = np.full(n_cells, float(lams))
        if lams.shape != (n_cells,):
            raise ValueError(
                f"lam must be a number or one value per cell ({n_cells}); got {lams.shape}"
            )
        if not np.all(np.isfinite(lams)) or np.any(lams <= 0):
            raise ValueError(f"lam must be finite and > 0; got {lam!r}")

    res = solve_exact(
        x2,
        fs,
        tau_rise,
        tau_decay,
        lams,
        baseline,
        noise=noise,
        tol=tol,
        max_iter=max_iter,
        n_jobs=n_jobs,
        drift_rounds=drift_rounds,
    )
    res.estimated = estimated
    res.indicator = None if preset is None else preset.name
    if x.ndim == 1:
        res.spikes, res.calcium, res.baseline = res.spikes[0], res.calcium[0], res.baseline[0]
    res.time_s = time.perf_counter() - start
    return res


def _prior(
    indicator: str | None, tau_rise: float | None, tau_decay: float | None
) -> Indicator | None:
    """The named indicator's preset, refused beside given kinetics (it bounds their estimate)."""
    if indicator is None:
        return None
    if tau_rise is not None or tau_decay is not None:
        raise ValueError(
            "give tau_rise and tau_decay, or indicator (a prior on their estimate), not both; "
            f"got indicator={indicator!r}, tau_rise={tau_rise!r}, tau_decay={tau_decay!r}"
        )
    return indicator_kinetics(indicator)


def _estimate_kinetics(
    traces: np.ndarray, fs: float, prior: Indicator | None
) -> tuple[float, float]:
    """Pooled ``(tau_rise, tau_decay)``, the decay within ``prior``'s range when one is named."""
    decay_range = None if prior is None else prior.decay_range
    _, _, tau_rise, tau_decay = estimate_kinetics(traces, fs, decay_range=decay_range)
    if prior is not None and prior.at_bound(tau_decay):
        logger.warning(
            "the decay estimated from the data stopped at the %s prior's bound, %.3g s (its "
            "range: %.3g-%.3g s): check the indicator, or give tau_decay",
            prior.name,
            tau_decay,
            *prior.decay_range,
        )
    return tau_rise, tau_decay


@dataclass(frozen=True)
class BlockSettings:
    """Everything a block needs besides its rows (small: sent to every worker once)."""

    path: str
    out: str
    fs: float
    tau_rise: float
    tau_decay: float
    lam: float | None
    baseline: str
    tol: float
    n_jobs: int
    dataset: str | None = None
    tau_decay2: float | None = None
    fraction: float | None = None
    max_iter: int = 100


def open_traces(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a ``.npy`` of traces as ``(cells, T)`` (1-D files become one cell)."""
    arr = load_npy(path, mmap_mode="r")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a (cells, T) or (T,) array; got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{path}: expected real numbers; got dtype {arr.dtype}")
    return arr


def read_rows(
    path: str | os.PathLike[str], start: int, stop: int, *, dataset: str | None = None
) -> np.ndarray:
    """Rows ``start:stop`` of a ``(cells, T)`` ``.npy`` as float64, read with plain file reads,
    checked finite (:func:`~nnfit.validate.check_finite_rows`: a NaN is named by its cell in
    the whole file).

    With ``dataset``, ``path`` is an HDF5 file and the rows are columns ``start:stop`` of its
    ``(T, cells)`` dataset ``dataset`` (one hyperslab read, transposed).

    A memory map would leave every page it touched resident in this process (file-backed
    pages count in its RSS until the kernel evicts them); reading only the block's bytes keeps
    the process at a few blocks whatever the file size. Fortran-ordered files fall back to the
    memory map.
    """
    if dataset is not None:
        return read_columns(path, dataset, slice(start, stop))
    rows = _npy_rows(path, start, stop)
    check_finite_rows(rows, np.arange(start, stop), _where(path, None))
    return rows


def _npy_rows(path: str | os.PathLike[str], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a ``.npy`` as float64 (:func:`read_rows`, unchecked)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            return np.asarray(open_traces(path)[start:stop], dtype=np.float64)
        shape, fortran, dtype = readers[version](f)
        if fortran or len(shape) not in (1, 2) or dtype.hasobject:
            return np.asarray(open_traces(path)[start:stop], dtype=np.float64)
        T = shape[-1]
        f.seek(start * T * dtype.itemsize, os.SEEK_CUR)
        rows = np.fromfile(f, dtype=dtype, count=(stop - start) * T).reshape(stop - start, T)
    return rows.astype(np.float64)


def read_columns(
    path: str | os.PathLike[str], dataset: str, cols: slice | np.ndarray
) -> np.ndarray:
    """Columns ``cols`` (a slice or increasing indices) of an HDF5 ``(T, cells)`` dataset.

    Returned as float64 ``(cells, T)`` rows, checked finite (:func:`check_finite_rows`). One
    selection, so each chunk of a chunked dataset is read and decompressed once.
    """
    from nnfit.io.hdf5 import open_h5
    from nnfit.validate import as_float_array

    with open_h5(path, "r") as f:
        n_cols = f[dataset].shape[1]
        block = f[dataset][:, cols]
    rows = np.arange(n_cols)[cols]
    out = np.ascontiguousarray(
        as_float_array(f"{dataset} in {path}", block, ndim=(2,), finite=False).T
    )
    check_finite_rows(out, rows, _where(path, dataset))
    return out


def _h5_shape(path: str | os.PathLike[str], dataset: str) -> tuple[int, int]:
    from nnfit.io.hdf5 import open_h5

    with open_h5(path, "r") as f:
        T, n_cells = f[dataset].shape
    return int(n_cells), int(T)


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(st.st_size - (1 << 20))
            h.update(f.read(1 << 20))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": h.hexdigest()}


def _block_path(out: str, i: int) -> Path:
    return Path(out) / ".partial" / f"block_{i:06d}.npz"


def _where(path: str | os.PathLike[str], dataset: str | None) -> str:
    """How a message names the traces read: the file, or the dataset in it."""
    return str(path) if dataset is None else f"{dataset} in {path}"


def _run_block(spec: tuple[int, int, int], settings: BlockSettings) -> dict[str, Any]:
    """Deconvolve rows ``start:stop`` and write the block file atomically; return its summary."""
    i, start, stop = spec
    traces = read_rows(settings.path, start, stop, dataset=settings.dataset)
    res = deconvolve(
        traces,
        settings.fs,
        settings.tau_rise,
        settings.tau_decay,
        lam=settings.lam,
        baseline=settings.baseline,
        tol=settings.tol,
        max_iter=settings.max_iter,
        n_jobs=settings.n_jobs,
        tau_decay2=settings.tau_decay2,
        fraction=settings.fraction,
    )
    summary = {
        "baseline_kind": np.array(res.baseline_kind),
        "lam": res.lam,
        "noise": res.noise,
        "objective": res.objective,
        "gap": res.gap,
        "kkt": res.kkt,
        "iterations": res.iterations,
        "converged": res.converged,
    }
    path = _block_path(settings.out, i)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            spikes=res.spikes,
            reconvolution=res.calcium + res.baseline,
            baseline=res.baseline,
            **summary,
        )
    return {"block": i, "converged": int(res.converged.sum()), "cells": stop - start}


def _deconvolve_recording(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fs: float,
    tau_rise: float | None = None,
    tau_decay: float | None = None,
    lam: float | None = None,
    *,
    baseline: str = "auto",
    tol: float = 1e-9,
    max_iter: int = 100,
    block_cells: int = 256,
    scheduler: Any = None,
    n_jobs: int = -1,
    progress: bool | None = None,
    estimate_cells: int = 200,
    dataset: str | None = None,
    indicator: str | None = None,
    tau_decay2: float | None = None,
    fraction: float | None = None,
    two_decay: bool = False,
    source_rows: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Deconvolve every cell of a ``.npy`` recording into ``out``, in blocks, resumably.

    Parameters
    ----------
    path : path-like
        ``(cells, T)`` ``.npy`` (read a block at a time), or an HDF5 file with ``dataset``.
    out : path-like
        Output folder: ``spikes.npy``, ``reconvolution.npy``, ``baseline.npy`` (cells x T,
        float64) and ``summary.csv``.
    fs : float
        Sampling rate in Hz.
    tau_rise, tau_decay : float, optional
        Kinetics; both ``None``: estimated (pooled) from up to ``estimate_cells`` cells spread
        over the recording, and reported in the returned record.
    lam : float, optional
        Sparsity weight; ``None``: the length-invariant rule per cell.
    baseline : str
        As in :func:`nnfit.calcium.deconvolve`.
    tol : float
        Relative duality gap that certifies a cell.
    max_iter : int
        Iteration limit per cell, as in :func:`nnfit.calcium.deconvolve`.
    block_cells : int
        Cells per block (memory is a few blocks).
    scheduler : None, str or dask.distributed.Client
        Where blocks run (:func:`nnfit.parallel.client_for`).
    n_jobs : int
        Threads per block (``-1``: all cores; on a cluster, the worker's).
    progress : bool, optional
        Progress bar over cells (``None``: when interactive).
    estimate_cells : int
        Cells the kinetics are estimated from when they are not given.
    dataset : str, optional
        HDF5 path, inside ``path``, of a ``(T, cells)`` dataset to read instead of a ``.npy``
        (an NWB ``RoiResponseSeries``'s ``data``).
    indicator : str, optional
        A prior on the estimated kinetics, as in :func:`nnfit.calcium.deconvolve`.
    tau_decay2, fraction, two_decay
        A kernel with two decays, given or estimated (from the ``estimate_cells`` cells), as in
        :func:`nnfit.calcium.deconvolve`.
    source_rows : sequence of int, optional
        Each cell's row in the input's ROI list (``summary.csv``'s ``source_row``; e.g. the
        ROI table rows of an NWB series). Default: the cell's index.

    Returns
    -------
    dict
        The run record (also written to ``run.json`` by the CLI): kinetics used and whether
        estimated, blocks resumed, cells, converged count.

    Examples
    --------
    >>> import tempfile
    >>> from nnfit.calcium import simulate_recording
    >>> d = Path(tempfile.mkdtemp())
    >>> np.save(d / "rec.npy", simulate_recording(5, 900, seed=1).traces)
    >>> rec = deconvolve_recording(d / "rec.npy", d / "out", 30.0, 0.05, 0.5, 0.3,
    ...                            block_cells=2, progress=False)
    >>> rec["cells"], rec["blocks"], np.load(d / "out" / "spikes.npy").shape
    (5, 3, (5, 900))
    """
    from nnfit.calcium.kernel import check_kinetics
    from nnfit.parallel import map_blocks
    from nnfit.progress import progress as bar
    from nnfit.validate import check_int, check_real

    path = Path(path).resolve()
    out = Path(out).resolve()
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    block_cells = check_int("block_cells", block_cells, low=1)
    n_cells, T = open_traces(path).shape if dataset is None else _h5_shape(path, dataset)
    if source_rows is not None and len(source_rows) != n_cells:
        raise ValueError(
            f"source_rows must give one row per cell ({n_cells}); got {len(source_rows)}"
        )
    estimated = False
    two = two_decay or tau_decay2 is not None or fraction is not None

    def sample() -> np.ndarray:
        rows = np.unique(np.linspace(0, n_cells - 1, min(n_cells, estimate_cells)).astype(int))
        if dataset is None:
            x = np.asarray(open_traces(path)[rows], dtype=float)
            check_finite_rows(x, rows, _where(path, None))
            return x
        return read_columns(path, dataset, rows)

    if two:
        k, estimated = _two_decay_kernel(
            fs, tau_rise, tau_decay, tau_decay2, fraction, indicator, sample, n_jobs
        )
        tau_rise, tau_decay, tau_decay2, fraction = (
            k.tau_rise,
            k.tau_decay,
            k.tau_decay2,
            k.fraction,
        )
    else:
        prior = _prior(indicator, tau_rise, tau_decay)
        if tau_rise is None and tau_decay is None:
            tau_rise, tau_decay = _estimate_kinetics(sample(), fs, prior)
            estimated = True
        elif tau_rise is None or tau_decay is None:
            raise ValueError(
                "give both tau_rise and tau_decay, or neither (then both are estimated)"
            )
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    settings = BlockSettings(
        str(path),
        str(out),
        fs,
        tau_rise,
        tau_decay,
        None if lam is None else float(lam),
        baseline,
        float(tol),
        int(n_jobs),
        dataset,
        tau_decay2,
        fraction,
        check_int("max_iter", max_iter, low=1),
    )
    partial = out / ".partial"
    state = {
        "input": str(path),
        "fingerprint": _fingerprint(path),
        "settings": {k: v for k, v in settings.__dict__.items() if k not in ("out", "n_jobs")},
        "block_cells": block_cells,
        "shape": [n_cells, T],
    }
    state_file = partial / "state.json"
    if state_file.is_file():
        try:
            old = json.loads(state_file.read_text())
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(state)):
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file, state)

    specs = [
        (i, a, min(a + block_cells, n_cells)) for i, a in enumerate(range(0, n_cells, block_cells))
    ]
    todo = [s for s in specs if not _block_ok(_block_path(str(out), s[0]))]
    resumed = len(specs) - len(todo)
    with bar(n_cells, desc="deconvolving (exact)", unit="cell", enabled=progress) as pb:
        pb.update(sum(s[2] - s[1] for s in specs if s not in todo))

        def done(_i: int, r: dict[str, Any]) -> None:
            pb.update(r["cells"])

        map_blocks(_run_block, todo, scheduler=scheduler, broadcast=[settings], on_result=done)

    converged = _assemble(out, specs, n_cells, T, source_rows)
    shutil.rmtree(partial)
    return {
        "cells": n_cells,
        "frames": T,
        "fs": fs,
        "tau_rise": tau_rise,
        "tau_decay": tau_decay,
        **({} if not two else {"tau_decay2": tau_decay2, "fraction": fraction}),
        "kinetics_estimated": estimated,
        "lam": lam,
        "baseline": baseline,
        "tol": tol,
        "max_iter": max_iter,
        "blocks": len(specs),
        "blocks_resumed": resumed,
        "converged": converged,
    }


@functools.wraps(_deconvolve_recording)
def deconvolve_recording(path, out, *args, **kwargs):
    # One run per output folder (a second is refused, naming the first); temporary files of
    # an assembly killed by a signal are removed first; an error before any block finished,
    # or traces that must be cleaned (their fix changes the input, so nothing resumes), leave
    # no .partial behind.
    names = ("spikes.npy", "reconvolution.npy", "baseline.npy", "summary.csv")
    with output_folder(Path(out).resolve(), outputs=names) as folder:
        try:
            return _deconvolve_recording(path, out, *args, **kwargs)
        except BaseException as exc:
            partial = folder / ".partial"
            if isinstance(exc, NonFiniteValues) or not any(partial.glob("block_*.npz")):
                shutil.rmtree(partial, ignore_errors=True)
            raise


def _block_ok(path: Path) -> bool:
    """Whether a finished block file is whole; a damaged one is removed and recomputed."""
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.testzip() is None and "spikes.npy" in zf.namelist():
                return True
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        pass
    path.unlink(missing_ok=True)
    return False


def _assemble(
    out: Path,
    specs: list[tuple[int, int, int]],
    n_cells: int,
    T: int,
    source_rows: Sequence[int] | None,
) -> int:
    """Append the block files, in order, to the final arrays and write ``summary.csv``.

    Plain sequential writes after an ``.npy`` header, not a memory map: the mapped output
    pages would count in this process's memory (three cells x T float64 arrays, gigabytes for
    a large session) until written back.
    """
    names = {
        "spikes": "spikes.npy",
        "reconvolution": "reconvolution.npy",
        "baseline": "baseline.npy",
    }
    header = {"descr": "<f8", "fortran_order": False, "shape": (n_cells, T)}
    lines = [",".join(SUMMARY_FIELDS)]
    fields = ("baseline_kind", "lam", "noise", "objective", "gap", "kkt", "iterations", "converged")
    converged = 0
    with (
        atomic_path(out / names["spikes"], suffix=".npy") as t1,
        atomic_path(out / names["reconvolution"], suffix=".npy") as t2,
        atomic_path(out / names["baseline"], suffix=".npy") as t3,
        open(t1, "wb") as f1,
        open(t2, "wb") as f2,
        open(t3, "wb") as f3,
    ):
        files = dict(zip(names, (f1, f2, f3), strict=True))
        for f in files.values():
            np.lib.format.write_array_header_1_0(f, header)
        for i, a, b in sorted(specs, key=lambda spec: spec[1]):
            with np.load(_block_path(str(out), i)) as z:
                columns = {k: z[k] for k in fields}
                for key, f in files.items():
                    block = np.ascontiguousarray(z[key], dtype="<f8")
                    if block.shape != (b - a, T):
                        raise ValueError(f"block {i} holds {block.shape}; expected {(b - a, T)}")
                    f.write(block.tobytes())
                    # per-cell columns derived from the block's arrays, not stored beside them
                    if key == "baseline":
                        columns["baseline"] = block.mean(axis=1)
                    elif key == "spikes":
                        columns["spike_sum"] = block.sum(axis=1)
                if source_rows is not None:
                    columns["source_row"] = np.asarray(source_rows[a:b])
                lines += summary_lines(columns, first_cell=a)
                converged += int(z["converged"].sum())
    atomic_write_bytes(out / "summary.csv", ("\n".join(lines) + "\n").encode())
    return converged
