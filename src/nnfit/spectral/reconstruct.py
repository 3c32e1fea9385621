"""Reconstruct the model cube ``y_hat[s, :] = sum_{c,p} x[c, p] A[s, c, p, :]`` from the HyperCube.

Single process, memory bounded: slabs ``(dS, dC, dP, L)`` of ``/HyperCube/models`` are read in
float32 (never copied to float64 as a whole) and contracted with ``x`` through ``np.einsum``
with ``dtype=float64`` and ``out=`` a ``(dS, L)`` view, so the promotion happens in einsum's
small buffers and every tile, including a ragged last one, uses ``(dS, :)`` views (the
original's last-tile broadcast bug cannot happen).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nnfit.io import array_sha256
from nnfit.io.hdf5 import open_h5
from nnfit.spectral.kaczmarz_fit import blas_limit
from nnfit.spectral.store_checks import check_hypercube_shape, check_tile_finite
from nnfit.validate import as_float_array, check_int

__all__ = ["plan_tiles", "reconstruct_model_cube_single"]


def plan_tiles(
    S: int, C: int, P: int, L: int, *, S_tile: int, max_bytes_per_slab: int
) -> tuple[int, int, int]:
    """Return ``(dS, dC, dP)`` with ``dS * dC * dP * L * 4 <= max_bytes_per_slab``.

    Shrinks the population block first, then the component block, then the spaxel tile.

    Examples
    --------
    >>> plan_tiles(10, 2, 6, 100, S_tile=4, max_bytes_per_slab=4 * 4 * 2 * 3 * 100)
    (4, 2, 3)
    >>> plan_tiles(10, 2, 6, 100, S_tile=4, max_bytes_per_slab=400)
    (1, 1, 1)
    """
    row = L * 4
    budget = int(max_bytes_per_slab)
    if budget < row:
        raise ValueError(
            f"max_bytes_per_slab={budget} is below one model row ({row} bytes = L * 4); raise it"
        )
    dS, dC, dP = min(S_tile, S), C, P
    if dS * dC * dP * row > budget:
        dP = max(1, budget // (dS * dC * row))
    if dS * dC * dP * row > budget:
        dC = max(1, budget // (dS * dP * row))
    if dS * dC * dP * row > budget:
        dS = max(1, budget // (dC * dP * row))
    return dS, dC, dP


def reconstruct_model_cube_single(
    h5_path: str | os.PathLike[str],
    x_global: Any,
    array_name: str = "ModelCube",
    blas_threads: int | None = None,
    S_tile: int | None = None,
    max_bytes_per_slab: int = 6_000_000_000,
    *,
    force: bool = False,
    continuum: tuple[int, int] = (-1, 0),
) -> dict[str, Any]:
    """Write ``/<array_name>`` (S, L) float64 = A x, tile by tile, within a memory budget.

    Parameters
    ----------
    h5_path : path-like
        A store. With a complete ``/HyperCube/models`` the model is summed from it tile by
        tile; without one (e.g. after the exact fit) it is applied matrix-free from the
        templates and LOSVDs (:meth:`CubeOperator.unweighted_forward`). Opened as the single
        writer: no fit may be running on it.
    x_global : array, (C*P,) or (C, P)
        Weights.
    array_name : str
        Output dataset name.
    blas_threads : int, optional
        BLAS thread limit (via threadpoolctl).
    S_tile : int, optional
        Spaxels per tile; default the HyperCube's ``S_chunk``.
    max_bytes_per_slab : int
        Budget of one float32 slab ``(dS, dC, dP, L)``. Peak extra memory is about this plus
        ``2 * dS * L * 8`` bytes.
    force : bool
        Recompute even when the stored digest of ``x`` matches.
    continuum : (int, int)
        ``(degree, mdegree)`` of the fit's continuum polynomials (the record on ``/X_global``,
        :func:`nnfit.spectral.fit_record.recorded_settings`): each spaxel's model gets them at
        their optimum for ``x`` (:func:`nnfit.spectral.continuum.with_continuum`, from the
        store's data, noise and masks), so the cube is the model the fit compared with the
        data. Default ``(-1, 0)``: none, ``A x`` alone.

    Returns
    -------
    dict
        ``skipped``, ``tiles``, ``tile`` ``(dS, dC, dP)``, ``slab_bytes_max``, ``time_s``,
        ``x_sha256``.

    Examples
    --------
    >>> import tempfile, pathlib, h5py
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.h5"
    >>> with h5py.File(p, "w", libver="latest") as f:
    ...     _ = f.create_dataset("HyperCube/models", data=np.ones((3, 1, 2, 4), np.float32),
    ...                          chunks=(2, 1, 2, 4))
    >>> info = reconstruct_model_cube_single(p, [1.0, 2.0])
    >>> with h5py.File(p, "r") as f:
    ...     f["ModelCube"][2].tolist()
    [3.0, 3.0, 3.0, 3.0]
    >>> reconstruct_model_cube_single(p, [1.0, 2.0])["skipped"]
    True
    """
    path = Path(h5_path)
    t0 = time.perf_counter()
    x = as_float_array("x_global", x_global, ndim=(1, 2)).reshape(-1)
    budget = check_int("max_bytes_per_slab", int(max_bytes_per_slab), low=1)
    degree, mdegree = (int(v) for v in continuum)
    digest = array_sha256(x)
    polish = None
    if degree >= 0 or mdegree > 0:
        digest += f" continuum degree={degree} mdegree={mdegree}"
        polish = _continuum(path, degree, mdegree)
    with open_h5(path, "r") as f:
        has_cube = "HyperCube/models" in f
    if not has_cube:
        return _reconstruct_matrix_free(path, x, array_name, digest, force, t0, polish)
    with open_h5(path, "a") as f:
        models = f["HyperCube/models"]
        S, C, P, L = check_hypercube_shape(f, path)
        if x.size != C * P:
            raise ValueError(f"x_global must have C*P = {C * P} values; got {x.size}")
        done = models.parent.get("_done")
        if done is not None and "complete" in models.parent.attrs:
            if not bool(models.parent.attrs["complete"]):
                raise ValueError(
                    f"{path}: the HyperCube build is not complete; finish `nnfit spectral build`"
                )
        chunk_S = int((models.chunks or models.shape)[0])
        tile_S = chunk_S if S_tile is None else check_int("S_tile", S_tile, low=1)
        dS, dC, dP = plan_tiles(S, C, P, L, S_tile=tile_S, max_bytes_per_slab=budget)
        info: dict[str, Any] = {
            "skipped": False,
            "tiles": 0,
            "tile": (dS, dC, dP),
            "slab_bytes_max": 0,
            "x_sha256": digest,
        }
        if _up_to_date(f, path, array_name, (S, L), digest, force):
            info["skipped"] = True
            info["time_s"] = time.perf_counter() - t0
            return info
        out = f.create_dataset(array_name, shape=(S, L), dtype="f8", chunks=(min(dS, S), L))
        out.attrs["complete"] = False
        out.attrs["x_sha256"] = ""
        xcp = x.reshape(C, P)
        flat = np.empty(dS * dC * dP * L, dtype=np.float32)
        tmp = np.empty((dS, L), dtype=np.float64)
        acc = np.empty((dS, L), dtype=np.float64)
        with blas_limit(blas_threads):
            for s0 in range(0, S, dS):
                s1 = min(s0 + dS, S)
                n = s1 - s0
                acc[:n] = 0.0
                for c0 in range(0, C, dC):
                    c1 = min(c0 + dC, C)
                    for p0 in range(0, P, dP):
                        p1 = min(p0 + dP, P)
                        shape = (n, c1 - c0, p1 - p0, L)
                        view = flat[: int(np.prod(shape))].reshape(shape)
                        models.read_direct(view, source_sel=np.s_[s0:s1, c0:c1, p0:p1, :])
                        check_tile_finite(path, view, np.s_[s0:s1, c0:c1, p0:p1])
                        info["slab_bytes_max"] = max(info["slab_bytes_max"], view.nbytes)
                        np.einsum(
                            "dcpl,cp->dl",
                            view,
                            xcp[c0:c1, p0:p1],
                            out=tmp[:n],
                            dtype=np.float64,
                        )
                        acc[:n] += tmp[:n]
                        info["tiles"] += 1
                out[s0:s1] = acc[:n] if polish is None else polish(acc[:n], s0, s1)
        out.attrs["x_sha256"] = digest
        out.attrs["complete"] = True
        f.flush()
    info["time_s"] = time.perf_counter() - t0
    return info


def _up_to_date(
    f: h5py.File, path: Path, array_name: str, shape: tuple[int, int], digest: str, force: bool
) -> bool:
    """Whether ``/array_name`` already holds the complete model of ``x`` (else it is removed).

    Refuses a dataset that reconstruct did not write (input data), naming the fix.
    """
    if array_name not in f:
        return False
    out = f[array_name]
    if not isinstance(out, h5py.Dataset) or "x_sha256" not in out.attrs:
        raise ValueError(
            f"{path}: /{array_name.lstrip('/')} is not a model cube written by "
            "reconstruct (it holds input data); choose another array_name "
            "(--array-name), e.g. the default ModelCube"
        )
    if (
        not force
        and out.shape == shape
        and bool(out.attrs.get("complete", False))
        and out.attrs.get("x_sha256", "") == digest
    ):
        return True
    del f[array_name]
    return False


def _continuum(path: Path, degree: int, mdegree: int) -> Callable[..., np.ndarray]:
    """``polish(u, s0, s1)``: spaxels ``s0:s1`` of the model ``u`` with their continuum."""
    from nnfit.spectral.continuum import with_continuum
    from nnfit.spectral.store import load_problem

    prob = load_problem(path)
    with open_h5(path, "r") as f:
        bins = f["BinMask"][()] if "BinMask" in f else np.ones((prob.S, prob.L), bool)
    noise = prob.noise if prob.noise is not None else np.ones((prob.S, prob.L))
    w = (bins & prob.mask[None, :]) / noise  # the fit's weights: masked pixels count zero
    y = prob.datacube

    def polish(u: np.ndarray, s0: int, s1: int) -> np.ndarray:
        return with_continuum(u, y[s0:s1], w[s0:s1], degree, mdegree)

    return polish


def _reconstruct_matrix_free(
    path: Path,
    x: np.ndarray,
    array_name: str,
    digest: str,
    force: bool,
    t0: float,
    polish: Callable[..., np.ndarray] | None,
) -> dict[str, Any]:
    """``/array_name = A x`` without a HyperCube: the operator applied to ``x`` once."""
    from nnfit.spectral.cube_operator import CubeOperator

    op = CubeOperator.from_h5(path)
    C, P = op.model_shape
    if x.size != C * P:
        raise ValueError(f"x_global must have C*P = {C * P} values; got {x.size}")
    model = op.unweighted_forward(x.reshape(C, P))
    if polish is not None:
        model = polish(model, 0, model.shape[0])
    info: dict[str, Any] = {"skipped": False, "tiles": 0, "tile": None, "slab_bytes_max": 0}
    info["x_sha256"] = digest
    info["matrix_free"] = True
    with open_h5(path, "a") as f:
        if _up_to_date(f, path, array_name, model.shape, digest, force):
            info["skipped"] = True
        else:
            out = f.create_dataset(array_name, shape=model.shape, dtype="f8")
            out.attrs["complete"] = False  # marked as ours before any data goes in
            out.attrs["x_sha256"] = ""
            out[...] = model
            out.attrs["x_sha256"] = digest
            out.attrs["complete"] = True
            f.flush()
    info["time_s"] = time.perf_counter() - t0
    return info
