"""The cube model as a matrix-free linear operator: weights ``x (C, P)`` -> spectra ``(S, L)``.

By linearity no HyperCube is needed. With the LOSVD kernel of spaxel ``s`` and component ``c``
written as taps ``kern[s, c, k]`` on template-pixel shifts ``k - center`` (see
:mod:`nnfit.spectral.model`), every model row is a combination of a small dictionary of
*shifted, rebinned templates*::

    Y[p, k, :] = Rebin( shift_{k - center}(T_p) )            (P, K, L), built once
    A[s, c, p, :] = sum_k kern[s, c, k] * Y[p, k, :]          (exactly the HyperCube row)

so that

* forward: ``model[s] = sum_{c,k} kern[s, c, k] * Q[c, k]`` with ``Q[c, k] = sum_p x[c, p] Y[p, k]``
  -- two matrix products, ``(C*K*L) x P`` once and ``S x (C*K) x L``;
* adjoint: ``Phi[c, k] = sum_s kern[s, c, k] r[s]`` over all spaxels, then one
  ``(C, K*L) x (K*L, P)`` product;
* Gram columns ``A^T W^2 A e_j`` and the whole streamed Gram come from the same dictionary
  (:mod:`nnfit.spectral.gram`).

Everything is float64. The shift-and-add is the zero-padded linear convolution of
:func:`nnfit.spectral.model.convolve_spectra` written as a sum over taps, so the rows agree
with the HyperCube to rounding. Weights follow the Kaczmarz path: ``W = mask / sigma`` with
``sigma`` from ``/Noise`` when present (else 1), masked pixels (``mask == False``) weigh zero.

With a Dask ``scheduler`` spaxels are processed in blocks that run on the workers, which read
their own slice of an HDF5 problem (``from_h5``), so only ``x``, residual blocks and the small
``(C, P)`` or Gram accumulators cross the network. In one process (``scheduler=None``) the
forward, adjoint and gradient passes take all spaxels at once, a chunk of components at a
time: the adjoint is then one ``(C_chunk*K, S) x (S, L)`` product per chunk instead of a
``(C*K, L)`` accumulator per spaxel block summed over blocks (a gradient pass at C = 22: 0.76 s
against 0.94 s in blocks; at C = 207 two blocks' accumulators in flight held ~0.4 GiB). The two
orders of summation differ in the last bits.

One module, though long: the operator, the block tasks it maps over spaxels and the
per-process cache those tasks read from are one object's machinery; the tasks must be
module-level functions for Dask to ship them.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import get_blas_funcs

from nnfit.operators import LinearOperator
from nnfit.parallel import usable_cpus
from nnfit.spectral.continuum import project_out, weighted_basis
from nnfit.spectral.model import mean_flux, shifted_template_dictionary

__all__ = ["CubeOperator", "kernel_matrix", "shifted_template_dictionary"]


def kernel_matrix(vel_pix: np.ndarray, dlog: float) -> tuple[np.ndarray, int]:
    """Dense map ``(V, K)`` from LOSVD bins to kernel taps, and the zero-shift index.

    Built from :func:`nnfit.spectral.model.losvd_to_kernel` applied to unit LOSVDs (the
    kernel is linear in the LOSVD), so it follows the store's convention exactly.
    """
    from nnfit.spectral.model import losvd_to_kernel

    vel = np.asarray(vel_pix, dtype=np.float64)
    rows = []
    center = None
    for v in range(vel.size):
        e = np.zeros(vel.size)
        e[v] = 1.0
        k, c = losvd_to_kernel(e, vel, dlog)
        if center is not None and (c != center or k.size != rows[0].size):
            raise ValueError("losvd_to_kernel returned kernels of differing support")
        center = c
        rows.append(np.asarray(k, dtype=np.float64))
    return np.vstack(rows), int(center)


@dataclass
class _Data:
    """Per-problem state shared by all blocks (lives on each worker once)."""

    Y: np.ndarray | None  # (P, K, L); None where split over fitted and masked pixels (``parts``)
    kern: np.ndarray  # (S_or_block, C, K)
    w: np.ndarray | None  # (S_or_block, L) weights (mask / sigma), None = all ones
    wy: np.ndarray | None  # (S_or_block, L) weighted data W * y (None without data)
    s0: int = 0
    q: np.ndarray | None = None  # (S_or_block, L, d+1) orthonormal basis of W * Legendre
    fit: np.ndarray | None = None  # the fitted pixels, where the mask drops enough of them
    twin: _Data | None = None  # the same data on the fitted pixels only (see ``fitted``)
    masked: np.ndarray | None = None  # the other pixels, and the dictionary there:
    Ym: np.ndarray | None = None  # (P, K, L_masked), beside ``twin.Y`` (P, K, L_fit)

    def rows(self, a: int, b: int) -> _Data:
        """The spaxels ``a:b`` of this block (views, no copies)."""

        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else v[a:b]

        return _Data(
            Y=self.Y,
            kern=self.kern[a:b],
            w=cut(self.w),
            wy=cut(self.wy),
            s0=self.s0 + a,
            q=cut(self.q),
            fit=self.fit,
            twin=None if self.twin is None else self.twin.rows(a, b),
            masked=self.masked,
            Ym=self.Ym,
        )

    def parts(self) -> list[tuple[Any, np.ndarray]]:
        """``(pixels, dictionary there)``: the whole dictionary, or its fitted and masked parts.

        Where the mask drops ``MIN_MASKED`` or more of the pixels the dictionary is kept as
        those two parts only (no full copy beside them); the unweighted passes combine them.
        """
        if self.Y is not None:
            return [(slice(None), self.Y)]
        return [(self.fit, self.twin.Y), (self.masked, self.Ym)]

    def full_dictionary(self) -> np.ndarray:
        """The dictionary on every pixel (P, K, L): a new array where it is kept split."""
        if self.Y is not None:
            return self.Y
        (f, Yf), (m, Ym) = self.parts()
        Y = np.empty((*Yf.shape[:2], f.size + m.size))
        Y[:, :, f] = Yf
        Y[:, :, m] = Ym
        return Y

    def fitted(self) -> _Data:
        """The weighted passes' data: on the fitted pixels alone where the mask drops some.

        Masked pixels weigh zero, so ``W A``, ``W y`` and the continuum basis vanish there and
        every weighted product (gradient, design columns, Gram entries) is the same sum
        without them: ``MIN_MASKED`` or more of the pixels masked cost that much less work.
        """
        return self if self.twin is None else self.twin

    def make_twin(self, Y: np.ndarray | None = None) -> None:
        """(Re)build :meth:`fitted`'s data from the full arrays; ``Y``: its dictionary (P, K,
        L_fit) the first time (later the twin keeps its own)."""
        if self.fit is None:
            return
        f = self.fit

        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else np.ascontiguousarray(v[:, f])

        if Y is None:
            Y = self.twin.Y
        self.twin = _Data(
            Y=Y, kern=self.kern, w=cut(self.w), wy=cut(self.wy), s0=self.s0, q=cut(self.q)
        )


MIN_MASKED = 0.05  # masked fraction from which the weighted passes skip masked pixels


_REGISTRY: dict[Any, _Data] = {}
_REGISTRY_LOCK = threading.Lock()


def _h5_block(path: str, s0: int, s1: int, mtime: float) -> _Data:
    """Load (once per worker) the dictionary and one spaxel block of an HDF5 problem."""
    key_full = ("h5", path, mtime)
    key = ("h5", path, mtime, s0, s1)
    with _REGISTRY_LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
        base = _REGISTRY.get(key_full)
    if base is None:  # a worker that has not read the file yet (the building process has)
        from nnfit.spectral.store import load_problem

        base = CubeOperator.from_problem(load_problem(path))._data
        with _REGISTRY_LOCK:
            _REGISTRY[key_full] = base
    d = base.rows(s0, s1)
    with _REGISTRY_LOCK:
        _REGISTRY[key] = d
    return d


def _block_data(source: tuple, s0: int, s1: int) -> _Data:
    kind = source[0]
    if kind == "mem":
        with _REGISTRY_LOCK:
            d = _REGISTRY.get(source[1])
        if d is None:
            raise RuntimeError("operator data not in this process; use from_h5 for clusters")
        return d.rows(s0, s1)
    if kind == "h5":
        return _h5_block(source[1], s0, s1, source[2])
    if kind == "arrays":  # block shipped with its arrays (cluster, in-memory operator)
        return source[1]
    raise ValueError(f"unknown operator source {kind!r}")


_Q_CACHE: dict[str, Any] = {}
_Q_LOCK = threading.Lock()  # blocks run in threads wait for one Q rather than each build it


def _q_from_x(Y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Q[c, k, l] = sum_p x[c, p] Y[p, k, l]`` as (C*K, L), cached for the last ``x``.

    Every spaxel block of one pass needs the same ``Q``; the cache makes it one product per
    pass and process (on a cluster: per worker), not one per block.
    """
    key = (id(Y), Y.shape, x.shape, hash(x.tobytes()))
    with _Q_LOCK:
        if _Q_CACHE.get("key") == key:
            return _Q_CACHE["Q"]
        P, K, L = Y.shape
        Q = (x @ Y.reshape(P, K * L)).reshape(x.shape[0] * K, L)
        _Q_CACHE["key"] = key
        _Q_CACHE["Q"] = Q
        return Q


def _apply(item: tuple) -> Any:
    func, block, args = item
    return [func(block, *args)]  # a holder the reducer can empty once it is summed


def reduce_blocks(
    func: Any,
    blocks: list,
    args: tuple,
    scheduler: Any,
    combine: Any,
    on_block: Any = None,
    threads: int = 1,
) -> Any:
    """Run ``func(block, *args)`` over blocks and fold the results with ``combine(acc, r)``.

    Results are folded in block order whatever order they arrive in (so a cluster run adds
    exactly like a local run) and each block's result is released as soon as it is folded:
    at most the out-of-order ones are held, never the whole list (a ``(C*K, L)`` accumulator
    is 380 MB per block at C = 207). ``threads``: local blocks in flight at once (see
    :func:`nnfit.parallel.map_blocks`).
    """
    from nnfit.parallel import map_blocks

    state: dict[str, Any] = {"acc": None, "next": 0, "pending": {}}

    def on_result(i: int, holder: list) -> None:
        state["pending"][i] = holder
        while state["next"] in state["pending"]:
            h = state["pending"].pop(state["next"])
            r = h[0]
            h[0] = None
            state["acc"] = r if state["acc"] is None else combine(state["acc"], r)
            if on_block is not None:
                on_block(state["next"], None)
            state["next"] += 1

    map_blocks(
        _apply,
        [(func, b, args) for b in blocks],
        scheduler=scheduler,
        on_result=on_result,
        threads=threads,
    )
    return state["acc"]


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        a += b
        return a
    return a + b


def _task_forward(block: tuple, x: np.ndarray) -> np.ndarray:
    source, s0, s1, weighted = block
    d = _block_data(source, s0, s1)
    if d.Y is None:  # a split dictionary: its parts (Q per block, not cached)
        out = _forward_local(d, x)
    else:
        out = d.kern.reshape(d.kern.shape[0], -1) @ _q_from_x(d.Y, x)
    if weighted and d.w is not None:
        out *= d.w
    return out


def _task_adjoint_item(item: tuple) -> np.ndarray:
    (source, s0, s1, weighted), r = item
    d = _block_data(source, s0, s1)
    if weighted and d.w is not None:
        r = r * d.w
    return _adjoint_core(d, r)


def _adjoint_core(d: _Data, r: np.ndarray) -> np.ndarray:
    """Block part of ``Phi[c, k, :] = sum_s kern[s, c, k] r[s, :]`` as (C*K, L)."""
    Sb, C, K = d.kern.shape
    return d.kern.reshape(Sb, C * K).T @ r


_CHUNK_BYTES = 64 * 2**20  # one component chunk's (c*K, L) adjoint: the local passes' memory


def _component_chunks(C: int, K: int, L: int) -> list[tuple[int, int]]:
    """Component ranges ``[c0, c1)`` whose ``(c*K, L)`` products take at most ``_CHUNK_BYTES``.

    Fixed by the shapes alone, so an adjoint's arithmetic (and its bits) never depends on the
    residual.
    """
    step = max(1, int(_CHUNK_BYTES // (8 * K * L)))
    return [(c0, min(C, c0 + step)) for c0 in range(0, C, step)]


def _adjoint_local(d: _Data, r: np.ndarray) -> np.ndarray:
    """``out[c, p] = sum_{s,k,l} kern[s, c, k] r[s, l] Y[p, k, l]`` (C, P) over all spaxels at once.

    Component chunk by chunk: one ``(c*K, S) x (S, L)`` product and one ``(c, K*L) x (K*L, P)``
    product each, BLAS-threaded; nothing of size ``(C*K, L)`` is held, and no per-block
    accumulators are summed (the spaxel blocks of :func:`_adjoint_core` hold one each). A split
    dictionary (:meth:`_Data.parts`) adds its two parts.
    """
    out = None
    for pix, Y in d.parts():
        part = _adjoint_with(d.kern, Y, r if isinstance(pix, slice) else r[:, pix])
        out = part if out is None else out + part
    return out


def _adjoint_with(kern: np.ndarray, Y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """:func:`_adjoint_local` on one dictionary ``Y`` (P, K, L) and ``r`` (S, L)."""
    C, K, L, k2, Y2 = _flat(kern, Y)
    out = np.empty((C, Y.shape[0]))
    for c0, c1 in _component_chunks(C, K, L):
        phi = k2[:, c0 * K : c1 * K].T @ r
        out[c0:c1] = phi.reshape(c1 - c0, K * L) @ Y2.T
    return out


def _forward_local(d: _Data, x: np.ndarray) -> np.ndarray:
    """``A x`` (S, L) unweighted, over all spaxels at once, skipping components with ``x = 0``."""
    parts = d.parts()
    if len(parts) == 1:
        return _forward_with(d.kern, parts[0][1], x)
    out = np.empty((d.kern.shape[0], sum(Y.shape[2] for _, Y in parts)))
    for pix, Y in parts:
        out[:, pix] = _forward_with(d.kern, Y, x)
    return out


def _forward_with(kern: np.ndarray, Y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_forward_local` on one dictionary ``Y`` (P, K, L).

    Per chunk of components: where every component has a non-zero weight, the mixtures
    ``Q_c = x[c] Y`` in one product and one ``(S, c*K) x (c*K, L)`` product. Otherwise only the
    components with one are multiplied, each by its own ``(S, K) x (K, L)`` product added into
    the model in place (BLAS ``gemm`` with ``beta = 1``), so a component whose weights are all
    zero costs nothing (near an optimum a quarter of them or more, 55 of 207 at C = 207 in
    :doc:`/spectral/exact-fit`). Its ``Q_c`` then comes from the dictionary rows of the
    templates it uses alone where reading them costs less than its share of a pass over the
    whole dictionary (at most ``P / c`` templates; one or two per component at an optimum).
    """
    C, K, L, k2, Y2 = _flat(kern, Y)
    P = Y2.shape[0]
    gemm = get_blas_funcs("gemm", (kern, Y2))
    out_t = np.zeros((kern.shape[0], L), dtype=np.result_type(kern, Y2)).T  # Fortran order
    for c0, c1 in _component_chunks(C, K, L):
        on = np.flatnonzero(x[c0:c1].any(axis=1)) + c0
        if on.size == 0:
            continue
        if on.size == c1 - c0:
            out = out_t.T
            np.add(out, k2[:, c0 * K : c1 * K] @ (x[c0:c1] @ Y2).reshape(-1, L), out=out)
            continue
        few = np.count_nonzero(x[on], axis=1).max() * (c1 - c0) <= P
        Q = None if few else x[on] @ Y2
        for i, c in enumerate(on):
            if Q is None:
                t = np.flatnonzero(x[c])
                q = x[c, t] @ Y2[t]
            else:
                q = Q[i]
            k = np.ascontiguousarray(kern[:, c, :])
            out_t = gemm(1.0, q.reshape(K, L).T, k.T, beta=1.0, c=out_t, overwrite_c=True)
    return out_t.T


def _flat(kern: np.ndarray, Y: np.ndarray) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """``C, K, L`` and the 2-D views ``kern (S, C*K)`` and ``Y (P, K*L)`` of the products."""
    S, C, K = kern.shape
    P, _, L = Y.shape
    return C, K, L, kern.reshape(S, C * K), Y.reshape(P, K * L)


def _phi_to_model(d: _Data, phi: np.ndarray) -> np.ndarray:
    """``out[c, p] = sum_{k,l} Phi[c, k, l] Y[p, k, l]``: one (C, K*L) x (K*L, P) product per
    part of the dictionary of ``d`` (:meth:`_Data.parts`)."""
    out = None
    for pix, Y in d.parts():
        P, K, L = Y.shape
        ph = phi if isinstance(pix, slice) else phi.reshape(-1, K, phi.shape[1])[:, :, pix]
        part = np.ascontiguousarray(ph).reshape(-1, K * L) @ Y.reshape(P, K * L).T
        out = part if out is None else out + part
    return out


def _task_gradient(block: tuple, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Block part of ``A^T W (W A x - W y)`` and of ``||W A x - W y||^2``."""
    source, s0, s1, _ = block
    d = _block_data(source, s0, s1).fitted()
    Q = _q_from_x(d.Y, x)
    res = d.kern.reshape(d.kern.shape[0], -1) @ Q
    if d.w is not None:
        res *= d.w
    if d.wy is not None:
        res -= d.wy
    res = project_out(d.q, res)
    chi2 = float(np.einsum("ij,ij->", res, res))
    if d.w is not None:
        res *= d.w
    return _adjoint_core(d, res), chi2


class CubeOperator(LinearOperator):
    """Matrix-free cube model ``A``: ``forward(x (C, P)) -> (S, L)``, ``adjoint((S, L)) -> (C, P)``.

    Parameters
    ----------
    templates_PT : array (P, T)
        Templates on the uniform ``ln lambda`` grid ``tem_pix``.
    losvd : array (S, V, C)
        LOSVD histograms per spaxel and component.
    vel_pix, tem_pix, obs_pix : arrays (V,), (T,), (L,)
        Velocity bin centres (km/s) and the two ``ln lambda`` grids.
    rebin : sparse (L, T), optional
        Rebin operator (default :func:`nnfit.spectral.model.rebin_matrix`).
    mask : bool array (L,), optional
        ``True`` = fitted pixel.
    noise : array (S, L), optional
        1-sigma noise; weights are ``mask / noise``.
    datacube : array (S, L), optional
        Observed spectra (needed for :meth:`gradient` and the fit).
    weighted : bool
        Whether :meth:`forward` and :meth:`adjoint` include the weights ``W`` (``W A`` and
        ``(W A)^T``); the default is the plain model ``A``.
    block_size : int, optional
        Spaxels per block (default: all spaxels in blocks of at most 256).
    scheduler : None, str or dask Client
        Where blocks run (see :mod:`nnfit.parallel`).
    kernel : {"linear", "fourier"}
        ``"linear"``: each LOSVD bin split linearly over two template pixels and the overlap
        rebin (the model of stores written before the exact one). ``"fourier"``: the exact
        band-limited placement of :mod:`nnfit.spectral.placement` (pPXF's model).
    convention : {"cz", "ppxf"}
        Velocity convention of ``vel_pix``, ``moments`` and ``vsyst`` (``"fourier"`` only;
        ``"linear"`` is ``"cz"``), see :mod:`nnfit.spectral.losvd`.
    vsyst : float
        Systemic velocity (km/s) added to every LOSVD bin (``"fourier"`` only): an
        observed-frame fit with ``vsyst = cz`` costs what the rest-frame fit costs.
    moments : array (S, C, m), optional
        Gauss-Hermite ``(V, sigma[, h3[, h4]])`` per spaxel and component, instead of
        ``losvd`` (pass ``losvd=None``); ``"fourier"`` only.
    flux_scale : array (S,) or "data", optional
        Multiplies every kernel of spaxel ``s``: the spaxel's flux when the LOSVDs or moments
        are unit-normalised. ``"data"``: each spaxel's mean flux over fitted pixels.
    threads : int, optional
        Spaxel blocks whose design columns are built at once on the local scheduler
        (:mod:`nnfit.spectral.column_cache`), each with one BLAS thread (default: the CPUs
        this process may use; 1: one block at a time, BLAS threaded as configured). The sums
        are the same whatever the number. The local forward, adjoint and gradient passes run
        over all spaxels at once, a chunk of components at a time (``(C_chunk*K, S) x (S, L)``
        products, BLAS-threaded), so no ``(C*K, L)`` accumulator is held per block.

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(80)
    >>> rng = np.random.default_rng(0)
    >>> op = CubeOperator(rng.random((3, 80)), rng.random((4, 5, 2)),
    ...                   np.linspace(-300, 300, 5), tem, tem[20:60:2])
    >>> op.forward(np.ones((2, 3))).shape, op.adjoint(np.ones((4, 20))).shape
    ((4, 20), (2, 3))
    >>> from nnfit.operators import dottest
    >>> dottest(op) < 1e-12
    True
    """

    def __init__(
        self,
        templates_PT: np.ndarray,
        losvd: np.ndarray | None,
        vel_pix: np.ndarray | None,
        tem_pix: np.ndarray,
        obs_pix: np.ndarray,
        *,
        rebin: sp.spmatrix | None = None,
        mask: np.ndarray | None = None,
        noise: np.ndarray | None = None,
        datacube: np.ndarray | None = None,
        weighted: bool = False,
        block_size: int | None = None,
        scheduler: Any = None,
        kernel: str = "linear",
        convention: str = "cz",
        vsyst: float = 0.0,
        moments: np.ndarray | None = None,
        flux_scale: np.ndarray | str | None = None,
        threads: int | None = None,
        _source: tuple | None = None,
    ) -> None:
        from nnfit.spectral.checks import check_ln_grid
        from nnfit.spectral.model import C_KMS, rebin_matrix
        from nnfit.spectral.placement import KERNELS, exact_model

        templates_PT = np.asarray(templates_PT, dtype=np.float64)
        tem_pix = np.asarray(tem_pix, dtype=np.float64)
        obs_pix = np.asarray(obs_pix, dtype=np.float64)
        vel_pix = None if vel_pix is None else np.asarray(vel_pix, dtype=np.float64)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
        check_ln_grid("tem_pix", tem_pix)
        check_ln_grid("obs_pix", obs_pix)
        if templates_PT.ndim != 2 or templates_PT.shape[1] != tem_pix.size:
            raise ValueError(
                f"templates_PT must be (P, T) with T = len(tem_pix) = {tem_pix.size}; "
                f"got {templates_PT.shape}"
            )
        if moments is not None:
            if kernel != "fourier":
                raise ValueError(
                    "moments need kernel='fourier' (the analytic Gauss-Hermite kernel)"
                )
            moments = np.asarray(moments, dtype=np.float64)
            if moments.ndim != 3:
                raise ValueError(f"moments must be (S, C, m); got shape {moments.shape}")
            S, C = moments.shape[:2]
        else:
            losvd = np.asarray(losvd, dtype=np.float64)
            if vel_pix is None or losvd.ndim != 3 or losvd.shape[1] != vel_pix.size:
                raise ValueError(
                    f"losvd must be (S, V, C) with V = len(vel_pix); got {losvd.shape}"
                )
            S, _, C = losvd.shape
        P = templates_PT.shape[0]
        L = obs_pix.size
        if kernel == "fourier":
            Y, kern, center, R, _, n_shift_taps = exact_model(
                templates_PT,
                tem_pix,
                obs_pix,
                losvd=None if moments is not None else losvd,
                vel_pix=vel_pix,
                moments=moments,
                convention=convention,
                vsyst_kms=vsyst,
                rebin=rebin,
            )
        else:
            if convention != "cz" or vsyst:
                raise ValueError("kernel='linear' supports convention='cz' and vsyst=0 only")
            dlog = float((tem_pix[-1] - tem_pix[0]) / (tem_pix.size - 1))
            Wk, center = kernel_matrix(vel_pix, dlog)
            kern = np.ascontiguousarray(np.matmul(losvd.transpose(0, 2, 1), Wk))  # (S, C, K)
            R = rebin_matrix(tem_pix, obs_pix) if rebin is None else sp.csr_matrix(rebin)
            n_shift_taps = kern.shape[-1]
        if isinstance(flux_scale, str):
            if flux_scale != "data" or datacube is None:
                raise ValueError(
                    "flux_scale must be an array (S,) or 'data' (each spaxel's mean flux over "
                    f"fitted pixels; needs datacube=); got {flux_scale!r}"
                )
            flux_scale = mean_flux(datacube, mask)
        if flux_scale is not None:
            fs = np.asarray(flux_scale, dtype=np.float64)
            if fs.shape != (S,) or not np.all(np.isfinite(fs)):
                raise ValueError(f"flux_scale must be finite with shape ({S},); got {fs.shape}")
            kern = kern * fs[:, None, None]
        m = None if mask is None else np.asarray(mask, dtype=bool)
        if m is not None and m.shape != (L,):
            raise ValueError(f"mask must be ({L},); got {m.shape}")
        # enough masked pixels: the dictionary in two parts, the fitted pixels' contiguous
        fit = masked = Ym = None
        if m is not None and np.mean(~m) >= MIN_MASKED:
            fit, masked = np.flatnonzero(m), np.flatnonzero(~m)
        if kernel == "linear":
            if fit is None:
                Y = shifted_template_dictionary(templates_PT, R, kern.shape[-1], center)
            else:
                Y, Ym = (
                    shifted_template_dictionary(templates_PT, R[rows], kern.shape[-1], center)
                    for rows in (fit, masked)
                )
        elif fit is not None:
            Y, Ym = np.ascontiguousarray(Y[:, :, fit]), np.ascontiguousarray(Y[:, :, masked])
        w = None
        if m is not None or noise is not None:
            w = np.ones((S, L))
            if m is not None:
                w[:, ~m] = 0.0
            if noise is not None:
                sig = np.asarray(noise, dtype=np.float64)
                if sig.shape != (S, L):
                    raise ValueError(f"noise must be ({S}, {L}); got {sig.shape}")
                used = w > 0
                if np.any(~(sig[used] > 0)) or not np.all(np.isfinite(sig[used])):
                    raise ValueError("noise must be finite and > 0 on every fitted pixel")
                w[used] /= sig[used]
        wy = None
        if datacube is not None:
            y = np.asarray(datacube, dtype=np.float64)
            if y.shape != (S, L):
                raise ValueError(f"datacube must be ({S}, {L}); got {y.shape}")
            wy = y * w if w is not None else y.copy()
            wy[~np.isfinite(wy)] = 0.0
        self.model_shape = (C, P)
        self.data_shape = (S, L)
        self.n_spaxels, self.n_components, self.n_populations, self.n_obs = S, C, P, L
        self.n_taps, self.center = kern.shape[-1], center
        self.n_shift_taps = n_shift_taps  # entries >= this are the band-limited tails
        self.kernel = kernel
        self.weighted = bool(weighted)
        self.scheduler = scheduler
        self.block_size = int(block_size) if block_size else min(S, 256)
        self.threads = usable_cpus() if threads is None else max(1, int(threads))
        if fit is None:
            self._data = _Data(Y=Y, kern=kern, w=w, wy=wy)
        else:
            self._data = _Data(Y=None, kern=kern, w=w, wy=wy, fit=fit, masked=masked, Ym=Ym)
            self._data.make_twin(Y)
        self._w0, self._wy0 = w, wy  # data weights and W y before any continuum
        self._f32: tuple[np.ndarray, np.ndarray] | None = None  # screening copies (float32)
        self.has_noise = noise is not None
        self.obs_step_kms = float(C_KMS * np.median(np.diff(obs_pix))) if L > 1 else 0.0
        self._token = uuid.uuid4().hex
        with _REGISTRY_LOCK:
            _REGISTRY[self._token] = self._data
        self._source = _source if _source is not None else ("mem", self._token)

    def __del__(self) -> None:  # free the registry entry with the operator
        try:
            with _REGISTRY_LOCK:
                _REGISTRY.pop(self._token, None)
        except Exception:
            pass

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_problem(cls, problem: Any, **kwargs: Any) -> CubeOperator:
        """Build from a :class:`nnfit.spectral.store.CubeProblem` (datacube, mask, noise...);
        the problem's ``template_meta`` (population grid) rides along as ``op.template_meta``."""
        op = cls(
            problem.templates_PT,
            problem.losvd,
            problem.vel_pix,
            problem.tem_pix,
            problem.obs_pix,
            rebin=getattr(problem, "rebin", None),
            mask=getattr(problem, "mask", None),
            noise=getattr(problem, "noise", None),
            datacube=getattr(problem, "datacube", None),
            **{**getattr(problem, "model_options", {}), **kwargs},
        )
        op.template_meta = getattr(problem, "template_meta", None)
        return op

    @classmethod
    def from_h5(cls, path: str | os.PathLike, problem: Any = None, **kwargs: Any) -> CubeOperator:
        """Build from a cube HDF5 file; cluster workers re-read their own spaxel blocks.

        ``problem``: the file's :class:`~nnfit.spectral.store.CubeProblem` when the caller has
        already loaded it (the file is then not read again here).
        """
        from nnfit.spectral.store import load_problem

        p = str(Path(path).resolve())
        source = ("h5", p, os.stat(p).st_mtime)
        if problem is None:
            problem = load_problem(p)
        op = cls.from_problem(problem, _source=source, **kwargs)
        with _REGISTRY_LOCK:  # blocks run here find the data without re-reading the file
            _REGISTRY[source] = op._data
        return op

    def spaxels(self, a: int, b: int, *, keep: np.ndarray | None = None) -> CubeOperator:
        """The operator of spaxels (or bins) ``a:b`` alone, sharing this one's dictionary.

        The same model and data as ``from_problem(problem.spaxel(s))`` for ``a:b = s:s+1``
        without building the ``(P, K, L)`` dictionary again (hundreds of MB with an SSP
        library): what a per-bin fit needs for each bin. Kernels, weights and data are views
        of this operator's rows; the continuum of the new operator
        (:meth:`set_continuum`) is its own. Runs on the local scheduler.

        Parameters
        ----------
        a, b : int
            The rows ``a:b``.
        keep : ndarray (b - a, L) bool, optional
            Pixels of these rows to fit on top of the operator's mask; the others weigh
            exactly zero, so they count neither in chi^2 nor in the fit's ``dof`` (a store's
            ``/BinMask``: pixels a bin has no data for).
        """
        S = self.n_spaxels
        if not (0 <= a < b <= S):
            raise ValueError(f"spaxels a:b must satisfy 0 <= a < b <= {S}; got {a}:{b}")
        op = copy.copy(self)
        op._data = self._data.rows(a, b)
        op._data.s0 = 0
        op._w0 = None if self._w0 is None else self._w0[a:b]
        op._wy0 = None if self._wy0 is None else self._wy0[a:b]
        if keep is not None:
            k = np.asarray(keep, dtype=bool)
            if k.shape != (b - a, self.n_obs):
                raise ValueError(f"keep must be ({b - a}, {self.n_obs}); got {k.shape}")
            w0 = np.ones(k.shape) if op._w0 is None else op._w0
            op._w0 = np.where(k, w0, 0.0)
            op._wy0 = None if op._wy0 is None else np.where(k, op._wy0, 0.0)
        op.data_shape = (b - a, self.n_obs)
        op.n_spaxels = b - a
        op.block_size = min(b - a, 256)
        op.set_continuum()  # the plain model on these rows, whatever continuum this one had
        op.scheduler = None
        op._f32 = None
        op._token = uuid.uuid4().hex
        with _REGISTRY_LOCK:
            _REGISTRY[op._token] = op._data
        op._source = ("mem", op._token)
        return op

    # ------------------------------------------------------------------ blocks
    def blocks(self, weighted: bool | None = None) -> list[tuple]:
        """Block descriptors ``(source, s0, s1, weighted)`` in spaxel order."""
        wt = self.weighted if weighted is None else weighted
        S, bs = self.n_spaxels, self.block_size
        out = []
        for s0 in range(0, S, bs):
            s1 = min(S, s0 + bs)
            src = self._source
            if self.scheduler is not None and src[0] == "mem":
                src = ("arrays", _block_data(src, s0, s1))
            out.append((src, s0, s1, wt))
        return out

    def _map(self, func, blocks, *args):
        """Run ``func(block, *args)`` over blocks, results in block order. The small ``args``
        (``x``) travel inside each task rather than through ``broadcast``: scattering identical
        content twice in a row (same ``x`` in consecutive passes) loses the scattered key on
        current Dask."""
        from nnfit.parallel import map_blocks

        parts = map_blocks(_apply, [(func, b, args) for b in blocks], scheduler=self.scheduler)
        return [p[0] for p in parts]

    # ------------------------------------------------------------------ operator
    @property
    def weights(self) -> np.ndarray:
        """``W`` (S, L): ``mask / sigma`` (ones where neither is given)."""
        d = self._data
        return np.ones(self.data_shape) if d.w is None else d.w

    @property
    def dictionary(self) -> np.ndarray:
        """The shifted, rebinned templates ``Y`` (P, K, L) (assembled anew where the operator
        keeps them as fitted and masked pixels, see :data:`MIN_MASKED`)."""
        return self._data.full_dictionary()

    @property
    def kernel_amplitude(self) -> np.ndarray:
        """Sum of each spaxel's kernel taps over components (S,): its LOSVD's flux scale."""
        return self._data.kern[..., : self.n_shift_taps].sum(axis=(1, 2))

    @property
    def kernels(self) -> np.ndarray:
        """Kernel taps ``kern`` (S, C, K)."""
        return self._data.kern

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(self.model_shape)
        if self.scheduler is None:
            out = _forward_local(self._data, x)
            if self.weighted and self._data.w is not None:
                out *= self._data.w
            return out
        parts = self._map(_task_forward, self.blocks(), x)
        return np.concatenate(parts, axis=0)

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64).reshape(self.data_shape)
        if self.scheduler is None:
            d = self._data
            return _adjoint_local(d, r * d.w if self.weighted and d.w is not None else r)
        items = [(b, r[b[1] : b[2]]) for b in self.blocks()]
        phi = reduce_blocks(
            _task_adjoint_item, items, (), self.scheduler, _add, threads=self.threads
        )
        return _phi_to_model(self._data, phi)

    def gradient(self, x: np.ndarray, screen: bool = False) -> tuple[np.ndarray, float]:
        """``(A^T W^2 (A x - y), ||W (A x - y)||^2)`` in one pass over the spaxels.

        The gradient of ``chi2(x) = ||W (A x - y)||^2`` is twice the first value. ``screen``
        (local scheduler): its adjoint in float32, see :meth:`weighted_residual_gradient`.
        """
        if self._data.wy is None:
            raise ValueError("the operator has no datacube; build it with datacube=...")
        x = np.asarray(x, dtype=np.float64).reshape(self.model_shape)
        if self.scheduler is None:
            d = self._data.fitted()
            return self.weighted_residual_gradient(
                _forward_local(d, x), weighted=False, screen=screen
            )
        phi, chi2 = reduce_blocks(
            _task_gradient, self.blocks(), (x,), self.scheduler, _add, threads=self.threads
        )
        return _phi_to_model(self._data.fitted(), phi), chi2

    def weighted_residual_gradient(
        self, model: np.ndarray, weighted: bool = True, screen: bool = False
    ) -> tuple[np.ndarray, float]:
        """:meth:`gradient` from a model already computed, all spaxels in this process.

        ``model`` is ``W A x`` (``weighted=True``, as design columns give it: weighted and
        projected) or ``A x``, on the pixels of ``_data.fitted()`` (S, L_fit); it is
        overwritten by the residual. ``screen``: the adjoint product in float32 (see
        :meth:`screening_bytes`); chi^2 and the residual stay float64.
        """
        d = self._data.fitted()
        if d.wy is None:
            raise ValueError("the operator has no datacube; build it with datacube=...")
        res = model
        if not weighted:
            if d.w is not None:
                res *= d.w
            res -= d.wy
            res = project_out(d.q, res)
        else:
            res -= d.wy
        chi2 = float(np.einsum("ij,ij->", res, res))
        if d.w is not None:
            res *= d.w
        if screen:
            kern32, Y32 = self._screening_copies()
            return _adjoint_with(kern32, Y32, res.astype(np.float32)).astype(np.float64), chi2
        return _adjoint_local(d, res), chi2

    def screening_bytes(self) -> int:
        """Memory of the float32 copies a screening gradient works on (kernel and dictionary).

        A screening gradient (``screen=True``) runs its adjoint in float32, about twice as fast
        as in float64, with relative errors near ``1e-7`` of the gradient's scale: good enough to
        choose candidate columns, never to certify a fit (the working-set fit confirms its
        stop with a float64 pass).
        """
        return 4 * sum(a.size for a in self._screening_sources())

    def _screening_sources(self) -> tuple[np.ndarray, np.ndarray]:
        """The kernels and the dictionary the weighted passes read (the fitted pixels')."""
        d = self._data.fitted()
        ((_, Y),) = d.parts()
        return d.kern, Y

    def _screening_copies(self) -> tuple[np.ndarray, np.ndarray]:
        if self._f32 is None:  # made on first use: a fit without screening never pays for it
            kern, Y = self._screening_sources()
            self._f32 = (kern.astype(np.float32), Y.astype(np.float32))
        return self._f32

    def rhs(self) -> np.ndarray:
        """``A^T W^2 y`` (C, P): minus the gradient at ``x = 0``."""
        g, _ = self.gradient(np.zeros(self.model_shape))
        return -g

    def data_norm2(self) -> float:
        """``||W y||^2``: the chi^2 of the zero model."""
        wy = self._data.wy
        return float(np.einsum("ij,ij->", wy, wy)) if wy is not None else 0.0

    def unweighted_forward(self, x: np.ndarray) -> np.ndarray:
        """``A x`` (S, L) without noise weights or continuum (what the continuum multiplies)."""
        return _forward_local(self._data, np.asarray(x, dtype=np.float64).reshape(self.model_shape))

    def set_continuum(self, degree: int = -1, mpoly: np.ndarray | None = None) -> None:
        """Add pPXF-style Legendre continua per spaxel to the model the fit sees.

        The model of spaxel ``s`` becomes ``mpoly[s] * (A x)[s] + sum_j a_sj P_j``: the
        additive terms (``degree >= 0``, ``a_sj`` free) are eliminated exactly by projecting
        ``W A x`` and ``W y`` onto the complement of ``W P`` per spaxel; ``mpoly`` (S, L) (a
        fixed multiplicative continuum, see :mod:`nnfit.spectral.continuum`) multiplies the
        model's weights. ``set_continuum()`` restores the plain model. Blocks then run from
        memory (a cluster gets the arrays with each task).
        """
        S, L = self.data_shape
        d = self._data
        w0 = self._w0
        d.q = None if degree < 0 else weighted_basis(np.ones((S, L)) if w0 is None else w0, degree)
        d.wy = None if self._wy0 is None else project_out(d.q, self._wy0)
        if mpoly is None:
            d.w = w0
        else:
            m = np.asarray(mpoly, dtype=np.float64)
            if m.shape != (S, L):
                raise ValueError(f"mpoly must be ({S}, {L}); got {m.shape}")
            d.w = (np.ones((S, L)) if w0 is None else w0) * m
        d.make_twin()
        self._source = ("mem", self._token)

    def approx_column_norms2(self) -> np.ndarray:
        """Cheap estimate (C, P) of ``||W A e_j||^2``: exact when every kernel is one tap.

        Uses the kernel sums and the unshifted dictionary row; only used to rank candidates.
        """
        d = self._data.fitted()  # masked pixels weigh zero
        amp2 = d.kern.sum(axis=2) ** 2  # (S, C)
        w2 = np.ones((self.n_spaxels, d.Y.shape[2])) if d.w is None else d.w**2
        y0 = d.Y[:, self.center, :] ** 2  # (P, L)
        return amp2.T @ (w2 @ y0.T)
