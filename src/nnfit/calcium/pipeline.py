"""Whole recordings in bounded memory: cell blocks streamed, written as they finish, resumable.

:func:`deconvolve_recording` reads a ``(cells, T)`` ``.npy`` memory-mapped, cuts it into blocks of
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
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.io import atomic_path, atomic_write_bytes, atomic_write_json
from nnfit.io.arrays import load_npy
from nnfit.io.lock import output_folder

__all__ = ["BlockSettings", "deconvolve_recording", "open_traces", "read_rows"]

SUMMARY_FIELDS = ("cell", "baseline_kind", "lam", "noise", "objective", "gap", "kkt", "iterations",
                  "converged")  # fmt: skip


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


def read_rows(path: str | os.PathLike[str], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a ``(cells, T)`` ``.npy`` as float64, read with plain file reads.

    A memory map would leave every page it touched resident in this process (file-backed
    pages count in its RSS until the kernel evicts them); reading only the block's bytes keeps
    the process at a few blocks whatever the file size. Fortran-ordered files fall back to the
    memory map.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}  # fmt: skip
        if version not in readers:
            return np.asarray(open_traces(path)[start:stop], dtype=np.float64)
        shape, fortran, dtype = readers[version](f)
        if fortran or len(shape) not in (1, 2) or dtype.hasobject:
            return np.asarray(open_traces(path)[start:stop], dtype=np.float64)
        T = shape[-1]
        f.seek(start * T * dtype.itemsize, os.SEEK_CUR)
        rows = np.fromfile(f, dtype=dtype, count=(stop - start) * T).reshape(stop - start, T)
    return rows.astype(np.float64)


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


def _run_block(spec: tuple[int, int, int], settings: BlockSettings) -> dict[str, Any]:
    """Deconvolve rows ``start:stop`` and write the block file atomically; return its summary."""
    from nnfit.calcium.exact import deconvolve

    i, start, stop = spec
    traces = read_rows(settings.path, start, stop)
    res = deconvolve(
        traces,
        settings.fs,
        settings.tau_rise,
        settings.tau_decay,
        lam=settings.lam,
        baseline=settings.baseline,
        tol=settings.tol,
        n_jobs=settings.n_jobs,
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
        np.savez(f, spikes=res.spikes, reconvolution=res.calcium + res.baseline,
                 baseline=res.baseline, **summary)  # fmt: skip
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
    block_cells: int = 256,
    scheduler: Any = None,
    n_jobs: int = -1,
    progress: bool | None = None,
    estimate_cells: int = 200,
) -> dict[str, Any]:
    """Deconvolve every cell of a ``.npy`` recording into ``out``, in blocks, resumably.

    Parameters
    ----------
    path : path-like
        ``(cells, T)`` ``.npy`` (read memory-mapped).
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
    block_cells : int
        Cells per block (memory is a few blocks).
    scheduler : None, str or dask.distributed.Client
        Where blocks run (:func:`nnfit.parallel.client_for`).
    n_jobs : int
        Threads per block (``-1``: all cores; on a cluster, the worker's).
    progress : bool, optional
        Progress bar over cells (``None``: when interactive).

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
    from nnfit.calcium.estimate import estimate_kinetics
    from nnfit.calcium.kernel import check_kinetics
    from nnfit.parallel import map_blocks
    from nnfit.progress import progress as bar
    from nnfit.validate import check_int, check_real

    path = Path(path).resolve()
    out = Path(out).resolve()
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    block_cells = check_int("block_cells", block_cells, low=1)
    traces = open_traces(path)
    n_cells, T = traces.shape
    estimated = False
    if tau_rise is None and tau_decay is None:
        rows = np.unique(np.linspace(0, n_cells - 1, min(n_cells, estimate_cells)).astype(int))
        _, _, tau_rise, tau_decay = estimate_kinetics(np.asarray(traces[rows], dtype=float), fs)
        estimated = True
    elif tau_rise is None or tau_decay is None:
        raise ValueError("give both tau_rise and tau_decay, or neither (then both are estimated)")
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    settings = BlockSettings(str(path), str(out), fs, tau_rise, tau_decay,
                             None if lam is None else float(lam), baseline, float(tol),
                             int(n_jobs))  # fmt: skip
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

    converged = _assemble(out, specs, n_cells, T)
    shutil.rmtree(partial)
    return {
        "cells": n_cells,
        "frames": T,
        "fs": fs,
        "tau_rise": tau_rise,
        "tau_decay": tau_decay,
        "kinetics_estimated": estimated,
        "lam": lam,
        "baseline": baseline,
        "tol": tol,
        "blocks": len(specs),
        "blocks_resumed": resumed,
        "converged": converged,
    }


@functools.wraps(_deconvolve_recording)
def deconvolve_recording(path, out, *args, **kwargs):
    # One run per output folder (a second is refused, naming the first); temporary files of
    # an assembly killed by a signal are removed first; an error before any block finished
    # leaves no .partial behind.
    with output_folder(Path(out).resolve()) as folder:
        for name in ("spikes.npy", "reconvolution.npy", "baseline.npy", "summary.csv"):
            for stale in folder.glob(f".{name}.*.tmp*"):
                stale.unlink(missing_ok=True)
        try:
            return _deconvolve_recording(path, out, *args, **kwargs)
        except BaseException:
            partial = folder / ".partial"
            if not any(partial.glob("block_*.npz")):
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


def _assemble(out: Path, specs: list[tuple[int, int, int]], n_cells: int, T: int) -> int:
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
                for key, f in files.items():
                    block = np.ascontiguousarray(z[key], dtype="<f8")
                    if block.shape != (b - a, T):
                        raise ValueError(f"block {i} holds {block.shape}; expected {(b - a, T)}")
                    f.write(block.tobytes())
                for j in range(b - a):
                    row = [str(a + j), str(z["baseline_kind"][j])]
                    row += [
                        repr(float(z[k][j])) for k in ("lam", "noise", "objective", "gap", "kkt")
                    ]
                    row += [str(int(z["iterations"][j])), str(bool(z["converged"][j]))]
                    lines.append(",".join(row))
                converged += int(z["converged"].sum())
    atomic_write_bytes(out / "summary.csv", ("\n".join(lines) + "\n").encode())
    return converged
