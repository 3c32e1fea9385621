"""Build ``/HyperCube/models`` (S, C, P, L) float32 tile by tile, resumably.

A tile is one HDF5 chunk ``(S_chunk, C_chunk, P_chunk, L)``. ``/HyperCube/_done`` (a
``(Sgrid, Cgrid, Pgrid)`` uint8 bitmap) marks tiles whose data are on disk: a tile's data are
written and flushed before its bit is set and flushed, so after a kill at any moment every
marked tile is complete, and a rerun computes only the unmarked ones. Tiles are a pure function
of the stored inputs, so a resumed build is byte-identical to an uninterrupted one.

The builder process is the only writer. It keeps the file in SWMR mode while it writes, so
readers (``open_h5(path, "r")``, the live snapshot) can watch; worker processes (or Dask
workers) only compute tiles.

One module, though just over 500 lines: building, compressing and reporting the status of the
one ``/HyperCube`` dataset share its chunk grid and ``_done`` bitmap conventions.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nnfit.io import array_sha256, atomic_path
from nnfit.io.hdf5 import create_h5, open_h5, open_locked, writer_lock
from nnfit.parallel import usable_cpus
from nnfit.progress import progress as progress_bar
from nnfit.spectral.model import ModelRowComputer
from nnfit.spectral.store import CubeProblem, load_problem, read_rebin
from nnfit.spectral.store_checks import check_tiles_layout
from nnfit.validate import check_int

__all__ = ["build_hypercube", "compress_hypercube_inplace", "inputs_digest", "tile_grid"]


def tile_grid(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> tuple[int, int, int]:
    """Number of tiles along S, C and P.

    Examples
    --------
    >>> tile_grid((300, 3, 360), (128, 1, 360))
    (3, 3, 1)
    """
    return tuple(-(-n // k) for n, k in zip(shape, chunks, strict=True))  # type: ignore[return-value]


def inputs_digest(prob: CubeProblem) -> str:
    """Digest of every input a tile depends on (templates, LOSVDs, grids, rebin)."""
    parts = [
        array_sha256(prob.templates_PT),
        array_sha256(prob.losvd),
        array_sha256(prob.tem_pix),
        array_sha256(prob.obs_pix),
        array_sha256(prob.vel_pix),
        array_sha256(prob.rebin.data),
        array_sha256(prob.rebin.indices.astype(np.int64)),
        array_sha256(prob.rebin.indptr.astype(np.int64)),
    ]
    import hashlib

    return "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Tile computation (runs in workers)
# --------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(templates_PT, losvd, vel_pix, tem_pix, obs_pix, rebin) -> None:
    _WORKER["mc"] = ModelRowComputer(templates_PT, vel_pix, tem_pix, obs_pix, rebin=rebin)
    _WORKER["losvd"] = losvd


def _init_worker_from_file(path: str) -> None:
    from nnfit.parallel import die_with_parent

    die_with_parent()
    # Workers read the inputs themselves (SWMR read while the parent writes tiles) rather than
    # receiving them pickled through the spawn pipe: cheaper, and start-up stays small.
    with open_h5(path, "r") as f:
        tem, obs = f["TemPix"][()], f["ObsPix"][()]
        arrays = (
            f["Templates"][()].astype(np.float64),
            f["LOSVD"][()],  # float32 as stored; tiles convert blocks to float64
            f["VelPix"][()],
            tem,
            obs,
            read_rebin(f, tem.size, obs.size),
        )
    _init_worker(*arrays)


def _compute_tile(key: tuple[int, int, int], chunks: tuple[int, int, int]) -> np.ndarray:
    mc: ModelRowComputer = _WORKER["mc"]
    losvd: np.ndarray = _WORKER["losvd"]
    i, j, k = key
    sS, sC, sP = chunks
    s0, c0, p0 = i * sS, j * sC, k * sP
    block = losvd[s0 : s0 + sS, :, c0 : c0 + sC]
    return mc.tile(block, p0, min(p0 + sP, mc.n_pop))


def _compute_tile_dask(key, chunks, token: str, problem_arrays) -> np.ndarray:
    # On a Dask worker the inputs arrive once (scattered); the computer (template FFTs) is
    # cached per worker process under the inputs' digest.
    if _WORKER.get("token") != token:
        _init_worker(*problem_arrays)
        _WORKER["token"] = token
    return _compute_tile(key, chunks)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _slices(key, chunks, shape) -> tuple[slice, slice, slice]:
    return tuple(
        slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(key, chunks, shape, strict=True)
    )  # type: ignore[return-value]


def _inspect(path: Path, shape4, chunk4, digest: str) -> dict[str, Any]:
    """What ``/HyperCube`` holds now, compared with the build asked for."""
    with open_h5(path, "r") as f:
        if "HyperCube" not in f:
            return {"present": False}
        g = f["HyperCube"]
        m = g.get("models")
        done = np.asarray(g["_done"][()], dtype=bool) if "_done" in g else np.zeros(0, bool)
        found_shape = tuple(m.shape) if m is not None else None
        found_chunks = tuple(m.chunks) if m is not None and m.chunks else None
        found_digest = g.attrs.get("inputs_sha256", "")
        why = []
        if found_shape != shape4:
            why.append(f"shape {found_shape} vs inputs {shape4}")
        if found_chunks != chunk4:
            why.append(
                f"chunks (S_chunk, C_chunk, P_chunk, L) = {found_chunks}, requested {chunk4}"
            )
        if found_digest != digest:
            why.append("the inputs (templates, LOSVD, grids) changed since it was started")
        return {
            "present": True,
            "same": not why,
            "why": why,
            "n_done": int(done.sum()),
            "n_tiles": int(done.size),
            "complete": bool(g.attrs.get("complete", False)) and bool(done.size and done.all()),
        }


def _create_hypercube(g: h5py.Group, shape4, chunk4, grid, compression, digest: str) -> None:
    if compression is None:
        # Allocate every chunk now without writing fill values (a sparse file): chunk addresses
        # never change during the build, so tile writes touch raw data only, never metadata.
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunk4)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple(shape4)
        h5py.h5d.create(g.id, b"models", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    else:
        g.create_dataset(
            "models",
            shape=shape4,
            dtype="<f4",
            chunks=chunk4,
            compression=compression,
            shuffle=True,
        )
    # Written (so allocated) now: nothing needs allocating once SWMR writing starts.
    g.create_dataset("_done", data=np.zeros(grid, dtype=np.uint8))
    g.attrs["complete"] = False
    g.attrs["inputs_sha256"] = digest
    g.attrs["chunks_json"] = json.dumps(
        {"S_chunk": chunk4[0], "C_chunk": chunk4[1], "P_chunk": chunk4[2]}
    )
    g.attrs["definition"] = "models[s, c, p, :] = Rebin(LOSVD[s, :, c] (*) Templates[p, :])"


def _prepare(path: Path, shape4, chunk4, grid, compression, overwrite: bool, digest: str) -> bool:
    """Create or check ``/HyperCube`` (writer lock held); True if the build is complete."""
    state = _inspect(path, shape4, chunk4, digest)
    if state["present"] and state["same"]:
        return state["complete"]
    if state["present"] and state["n_done"] and not overwrite:
        raise ValueError(
            f"{path}: a partial HyperCube exists ({state['n_done']}/{state['n_tiles']} tiles done) "
            f"that does not match this build: {'; '.join(state['why'])}. Resume with the same "
            "parameters, or pass overwrite=True (CLI: --overwrite) to discard it"
        )
    # A fresh HyperCube is created in a copy of the store that replaces it atomically: a kill
    # here leaves the old file, never half-written metadata; a discarded cube's space is freed.
    with open_h5(path, "r") as src, atomic_path(path, suffix=".h5") as tmp:
        with create_h5(tmp) as dst:
            _copy_store(src, dst, skip=("HyperCube",))
            _create_hypercube(
                dst.create_group("HyperCube"), shape4, chunk4, grid, compression, digest
            )
    return False


def _copy_store(src: h5py.File, dst: h5py.File, *, skip: tuple[str, ...] = ()) -> None:
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for name in src:
        if name not in skip:
            src.copy(src[name], dst, name=name)


def build_hypercube(
    path: str | os.PathLike[str],
    S_chunk: int = 128,
    C_chunk: int = 1,
    P_chunk: int = 360,
    n_workers: int | None = None,
    compression: str | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Compute every model spectrum into ``/HyperCube/models``; resume if interrupted.

    Parameters
    ----------
    path : path-like
        A populated store (``H5Manager.populate_from_arrays`` + ``ensure_rebin_and_resample``).
    S_chunk, C_chunk, P_chunk : int
        Tile (and HDF5 chunk) sizes along spaxels, components and populations; the tile spans
        all L pixels. Clipped to the problem's sizes.
    n_workers : int, optional
        Worker processes computing tiles (default: CPUs available); 0 or 1 computes in this
        process. Ignored when ``scheduler`` is given.
    compression : {None, "gzip", "lzf"}
        HDF5 filter for the models during the build. None (fastest, and the only choice that
        preallocates every chunk) is recommended; compress afterwards with
        :func:`compress_hypercube_inplace`.
    overwrite : bool
        Discard an existing partial HyperCube that does not match these parameters or inputs
        (otherwise that is an error).
    scheduler : None, str or dask.distributed.Client
        Compute tiles on a Dask cluster (see :mod:`nnfit.parallel`); this process still writes.
    progress : bool, optional
        Show a progress bar (tiles done, rate, time left); default only on a terminal.

    Returns
    -------
    dict
        ``tiles_total``, ``tiles_built`` (this call), ``tiles_skipped`` (already done),
        ``time_s``, ``shape``, ``chunks``, and ``steady_tiles_per_s`` (rate between the first
        and last tile written, without start-up) when two or more tiles were built.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.spectral.simulate import simulate_cube
    >>> p = simulate_cube(5, 2, 4, seed=0).to_h5(pathlib.Path(tempfile.mkdtemp()) / "c.h5")
    >>> info = build_hypercube(p, S_chunk=2, n_workers=0)
    >>> info["tiles_total"], info["tiles_built"]
    (6, 6)
    >>> build_hypercube(p, S_chunk=2, n_workers=0)["tiles_built"]   # nothing left to do
    0
    """
    p = Path(path)
    t0 = time.perf_counter()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such cube store (create it with 'nnfit spectral init')")
    if compression in (False, "none"):
        compression = None
    if compression is not None and compression not in ("gzip", "lzf"):
        raise ValueError(f"compression must be None, 'gzip' or 'lzf'; got {compression!r}")
    if n_workers is None:
        n_workers = usable_cpus()
    n_workers = check_int("n_workers", n_workers, low=0)
    with writer_lock(p):
        prob = load_problem(p)
        if prob.model_options.get("kernel", "linear") != "linear":
            raise ValueError(
                f"{p}: the store uses kernel={prob.model_options['kernel']!r}; the HyperCube "
                "builder computes the 'linear' model only. Fit this store matrix-free with "
                "fit_cube (nnfit spectral fit), which uses the store's model"
            )
        S, C, P, L = prob.S, prob.C, prob.P, prob.L
        chunks = (
            min(check_int("S_chunk", S_chunk, low=1), S),
            min(check_int("C_chunk", C_chunk, low=1), C),
            min(check_int("P_chunk", P_chunk, low=1), P),
        )
        digest = inputs_digest(prob)
        grid = tile_grid((S, C, P), chunks)
        n_total = int(np.prod(grid))
        shape4, chunk4 = (S, C, P, L), (*chunks, L)
        if _prepare(p, shape4, chunk4, grid, compression, overwrite, digest):
            return _result(n_total, 0, n_total, t0, shape4, chunks)
        with open_h5(p, "r") as f:
            done = np.asarray(f["HyperCube/_done"][()], dtype=bool)
        todo = [tuple(int(v) for v in k) for k in np.argwhere(~done)]
        n_skip = n_total - len(todo)
        built = 0
        stamps: list[float] = []
        bar = progress_bar(n_total, desc="HyperCube tiles", unit="tile", enabled=progress)
        bar.update(n_skip)
        f = open_locked(p, "r+")
        try:
            models = f["HyperCube/models"]
            done_ds = f["HyperCube/_done"]
            f.swmr_mode = True

            def write(key: tuple[int, int, int], tile: np.ndarray) -> None:
                nonlocal built
                stamps.append(time.perf_counter())
                sl = _slices(key, chunks, (S, C, P))
                models[sl[0], sl[1], sl[2], :] = tile
                f.flush()  # the tile's data reach the file before its bit does
                done_ds[key] = 1
                f.flush()
                built += 1
                bar.update(1)

            # LOSVDs travel as float32 (their stored, exact values): half the bytes per worker.
            arrays = (
                prob.templates_PT,
                prob.losvd.astype(np.float32),
                prob.vel_pix,
                prob.tem_pix,
                prob.obs_pix,
                prob.rebin,
            )
            if scheduler is not None:
                try:
                    _run_dask(todo, chunks, arrays, digest, scheduler, write)
                finally:
                    _WORKER.clear()  # an in-process (threaded) cluster cached it here
            elif n_workers <= 1 or len(todo) <= 1:
                _init_worker(*arrays)
                try:
                    for key in todo:
                        write(key, _compute_tile(key, chunks))
                finally:
                    _WORKER.clear()
            else:
                _run_pool(todo, chunks, p, n_workers, write)
        finally:
            bar.close()
            f.close()
        with open_locked(p, "r+") as f:
            if np.asarray(f["HyperCube/_done"][()], dtype=bool).all():
                f["HyperCube"].attrs["complete"] = True
    res = _result(n_total, built, n_skip, t0, shape4, chunks)
    if len(stamps) >= 2:
        # Steady-state rate, free of start-up (imports, worker spawn): tiles per second
        # between the first and the last tile written.
        res["steady_tiles_per_s"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return res


def _result(n_total, built, skipped, t0, shape, chunks) -> dict[str, Any]:
    return {
        "tiles_total": n_total,
        "tiles_built": built,
        "tiles_skipped": skipped,
        "time_s": time.perf_counter() - t0,
        "shape": shape,
        "chunks": chunks,
    }


_SPAWN_HINT = (
    "a tile worker process died{detail}. If build_hypercube runs from a script, put the "
    'script\'s top-level code under `if __name__ == "__main__":` (worker processes are '
    "started by re-importing the main script), or pass n_workers=0 to compute in this process. "
    "Finished tiles are kept; rerun to resume"
)


def _run_pool(todo, chunks, path: Path, n_workers, write) -> None:
    ctx = mp.get_context("spawn")  # never fork a process holding HDF5 handles
    try:
        _pool_loop(todo, chunks, path, n_workers, write, ctx)
    except cf.process.BrokenProcessPool as exc:
        raise RuntimeError(_SPAWN_HINT.format(detail=f" ({exc})")) from exc


def _pool_loop(todo, chunks, path: Path, n_workers, write, ctx) -> None:
    with cf.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=ctx,
        initializer=_init_worker_from_file,
        initargs=(str(path),),
    ) as ex:
        try:
            _feed(ex, todo, chunks, n_workers, write)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or failed: stop the workers now rather than let
            # them finish the queued tiles; finished tiles are already in the file. The
            # processes are taken before shutdown, which forgets them.
            procs = list((ex._processes or {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            _stop(procs)
            raise


def _stop(procs: list[Any], grace_s: float = 5.0) -> None:
    """Terminate worker processes and wait for them; kill any that outlive ``grace_s``."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def _feed(ex, todo, chunks, n_workers, write) -> None:
    # Finished futures report themselves into a queue. cf.wait would take every pending
    # future's lock in a loop: a signal raised between two takes leaves one held, and the
    # pool's thread then blocks on it forever, so the interrupted command never exits.
    done: queue.SimpleQueue[cf.Future] = queue.SimpleQueue()
    it: Iterator = iter(todo)
    pending: dict[cf.Future, tuple[int, int, int]] = {}

    def submit(key: tuple[int, int, int]) -> None:
        fut = ex.submit(_compute_tile, key, chunks)
        pending[fut] = key
        fut.add_done_callback(done.put)

    for key in it:
        submit(key)
        # Each worker busy plus two tiles waiting for the writer: memory stays near
        # (2 n_workers + 2) tiles (the worker's tile and its pickled copy) at most.
        if len(pending) >= n_workers + 2:
            break
    while pending:
        fut = done.get()
        key = pending.pop(fut)
        write(key, fut.result())
        nxt = next(it, None)
        if nxt is not None:
            submit(nxt)


def _run_dask(todo, chunks, arrays, token, scheduler, write) -> None:
    from nnfit.parallel import client_for

    with client_for(scheduler) as client:
        from dask.distributed import as_completed

        shared = client.scatter(arrays, broadcast=True)
        n_inflight = sum(client.nthreads().values()) + 2
        it = iter(todo)
        futures = {}
        for key in it:
            futures[client.submit(_compute_tile_dask, key, chunks, token, shared, pure=False)] = key
            if len(futures) >= n_inflight:
                break
        ac = as_completed(list(futures))
        for fut in ac:
            key = futures.pop(fut)
            write(key, fut.result())
            fut.release()
            nxt = next(it, None)
            if nxt is not None:
                nf = client.submit(_compute_tile_dask, nxt, chunks, token, shared, pure=False)
                futures[nf] = nxt
                ac.add(nf)


# --------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------


def compress_hypercube_inplace(
    path: str | os.PathLike[str], codec: str = "gzip", level: int = 2, shuffle: bool = True
) -> Path:
    """Rewrite the store with ``/HyperCube/models`` compressed; crash-safe.

    The compressed store is written to a temporary file next to ``path`` and moved over it
    atomically at the end, so a kill at any moment leaves the uncompressed store intact.
    Needs a complete HyperCube and free disk space for the compressed copy.

    Parameters
    ----------
    codec : {"gzip", "lzf"}
    level : int
        gzip level 0-9 (ignored for lzf).
    shuffle : bool
        Byte-shuffle filter before compression (helps float32 a lot).
    """
    p = Path(path)
    if codec not in ("gzip", "lzf"):
        raise ValueError(f"codec must be 'gzip' or 'lzf'; got {codec!r}")
    level = check_int("level", level, low=0, high=9)
    with writer_lock(p), open_h5(p, "r") as src:
        if "HyperCube/models" not in src:
            raise ValueError(f"{p}: no /HyperCube/models to compress; build it first")
        g = src["HyperCube"]
        if not bool(g.attrs.get("complete", False)):
            raise ValueError(
                f"{p}: the HyperCube is not complete; finish the build before compressing"
            )
        check_tiles_layout(src, p)  # tile chunks: the copy is made chunk by chunk
        m = g["models"]
        with atomic_path(p, suffix=".h5") as tmp, create_h5(tmp) as dst:
            _copy_store(src, dst, skip=("HyperCube",))
            gd = dst.create_group("HyperCube")
            for k, v in g.attrs.items():
                gd.attrs[k] = v
            src.copy(g["_done"], gd, name="_done")
            kw: dict[str, Any] = {"compression": codec, "shuffle": bool(shuffle)}
            if codec == "gzip":
                kw["compression_opts"] = level
            md = gd.create_dataset("models", shape=m.shape, dtype=m.dtype, chunks=m.chunks, **kw)
            cS, cC, cP, _ = m.chunks
            S, C, P, _ = m.shape
            for s0 in range(0, S, cS):
                for c0 in range(0, C, cC):
                    for p0 in range(0, P, cP):
                        sl = np.s_[s0 : s0 + cS, c0 : c0 + cC, p0 : p0 + cP, :]
                        md[sl] = m[sl]
            gd.attrs["compression"] = json.dumps(
                {"codec": codec, "level": level, "shuffle": bool(shuffle)}
            )
    return p
