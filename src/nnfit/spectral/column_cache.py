"""Weighted design columns for the working-set fit, kept in memory between rounds under a cap.

The working-set fit of :mod:`nnfit.spectral.fit` extends its Gram block every round with the
columns of the new candidates. Each entry ``G[i, j] = <B_i, B_j>`` needs both weighted design
columns ``B_j = W A e_j`` (S, L), and building one costs ``2 S K L`` flops (K dictionary
entries), against ``2 S L`` per Gram entry. :func:`gram_extend` streams those entries spaxel
block by spaxel block; with a :class:`ColumnCache` (the local scheduler) the columns of the
support are kept between rounds, so only the new candidates are built (the support was 1003 of
the 2264 columns built in the C = 22 benchmark of :doc:`/spectral/exact-fit`). The cache keeps
as many columns as ``cap_bytes`` allows, support first, and evicts the least recently used
column outside the current working set when a slot is needed; columns that do not fit are
computed as before, so the cap bounds the memory and never the result.

The arithmetic does not depend on the cache, nor on where a block runs: every column is built
by its own ``(rows, K) @ (K, L)`` product over fixed steps of :data:`STEP` spaxels, and every
step's Gram update is one product of the same ``(m, rows * L)`` matrix whether its rows came
from memory or were just built (BLAS results depend on the shapes of a product, so a column
built alongside others, or a Gram entry from a product of another shape, could differ in the
last bits). A cached fit, an uncached one and a Dask cluster's (same BLAS library)
therefore give the same bits.

The same columns give the model of the support without a forward pass: for a component whose
non-zero weights all have their column in the cache, ``sum_j x_j B_j`` costs ``2 S L`` flops a
column instead of the forward pass's ``2 S K L`` for the component, so
:meth:`ColumnCache.gradient` runs the forward pass on the other components only (none when the
cache holds the whole support) before its adjoint pass. It only ranks candidates; the fit's
final KKT check uses the operator's own gradient.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from nnfit.spectral.continuum import project_out
from nnfit.spectral.cube_operator import (
    CubeOperator,
    _add,
    _block_data,
    _forward_local,
    reduce_blocks,
)

__all__ = ["STEP", "ColumnCache", "design_columns", "gram_extend"]

STEP = 64  # spaxels per design step: fixed, so a column's bits never depend on the round
_GAP = 4  # slots of other columns a GEMV over a run of cached slots may include


def _slot_runs(slots: np.ndarray) -> list[tuple[int, int]]:
    """Ranges ``[lo, hi)`` covering ``slots``, split where more than ``_GAP`` slots are unused."""
    s = np.unique(slots)
    if s.size == 0:
        return []
    cut = np.flatnonzero(np.diff(s) > _GAP + 1) + 1
    return [(int(g[0]), int(g[-1]) + 1) for g in np.split(s, cut)]


def design_columns(
    d: Any, columns: np.ndarray, P: int, out: np.ndarray, where: np.ndarray | None = None
) -> None:
    """Weighted, projected design columns of the spaxels of ``d`` into ``out[where]`` (rows, L).

    Each column is its own ``(rows, K) @ (K, L)`` product, then weighted and projected per
    column, so its bits depend only on the column and the spaxel rows, never on which other
    columns are built with it. Columns of one template are built one after the other, so its
    dictionary rows (``K * L``, 1.5 MB at NGC 4365 sizes) are read from memory once per step,
    not once per column.
    """
    cols = np.asarray(columns, dtype=np.int64)
    pos = np.arange(cols.size) if where is None else np.asarray(where, dtype=np.int64)
    order = np.argsort(cols % P, kind="stable")
    for j, i in zip(cols[order], pos[order], strict=True):
        c, p = divmod(int(j), P)
        np.matmul(np.ascontiguousarray(d.kern[:, c, :]), d.Y[p], out=out[i])
        if d.w is not None:
            out[i] *= d.w
        if d.q is not None:
            out[i] = project_out(d.q, out[i])


def _task_gram_extend(
    block: tuple, cols: np.ndarray, new_from: int, P: int, cache: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """One block's ``G[:, new_from:]`` and ``b[new_from:]``, :data:`STEP` spaxels at a time."""
    source, s0, s1, _ = block
    d = _block_data(source, s0, s1).fitted()
    m = cols.size
    L = d.Y.shape[2]
    G = np.zeros((m, m - new_from))
    b = np.zeros(m - new_from)
    stored = np.zeros(m, dtype=bool) if cache is None else cache._valid
    build = np.flatnonzero(~stored)
    keep = np.zeros(0, dtype=np.int64) if cache is None else cache._fill
    buf = np.empty((m, STEP, L))  # reused by every full step: no fresh pages per step
    for a in range(0, s1 - s0, STEP):
        sub = d.rows(a, min(s1 - s0, a + STEP))
        r0, r1 = s0 + a, s0 + a + sub.kern.shape[0]
        B = buf if r1 - r0 == STEP else np.empty((m, r1 - r0, L))
        for i in np.flatnonzero(stored):  # slot by slot: a view each, one copy
            B[i] = cache._store[cache._slots[i], r0:r1]
        design_columns(sub, cols[build], P, B, build)
        for i in keep:
            cache._store[cache._slots[i], r0:r1] = B[i]
        B2 = B.reshape(m, -1)
        G += (B2[new_from:] @ B2.T).T  # this orientation packs faster: ~20 % less time
        if sub.wy is not None:
            b += B2[new_from:] @ sub.wy.ravel()
    return G, b


def gram_extend(
    op: CubeOperator, J: np.ndarray, new: np.ndarray, cache: ColumnCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``G[:, new]`` (m, m_new) for ``cols = [J, new]`` and ``b[new]``: the working set's Gram.

    ``G = (W A)^T (W A)`` and ``b = (W A)^T (W y)`` restricted to those columns (on the
    operator's current weights and continuum projection), summed over the spaxel blocks in
    block order. ``cache`` (local scheduler only) supplies and keeps design columns; the
    result is the same with or without it, to the bit.
    """
    J = np.asarray(J, dtype=np.int64)
    new = np.asarray(new, dtype=np.int64)
    cols = np.concatenate([J, new])
    if cache is not None:
        if op.scheduler is not None:
            raise ValueError("a ColumnCache works on the local scheduler only (scheduler=None)")
        cache._prepare(cols)
    _, P = op.model_shape
    return reduce_blocks(
        _task_gram_extend,
        op.blocks(weighted=True),
        (cols, J.size, P, cache),
        op.scheduler,
        _add,
        threads=op.threads,
    )


class ColumnCache:
    """In-memory weighted design columns ``B_j`` of a :class:`CubeOperator`, at most ``cap_bytes``.

    Parameters
    ----------
    op : CubeOperator
        The operator (its weights, continuum projection and data as they are now: build a new
        cache after :meth:`CubeOperator.set_continuum`).
    cap_bytes : float
        Memory for cached columns, ``S * L * 8`` bytes each (``L``: the fitted pixels where
        the mask drops :data:`~nnfit.spectral.cube_operator.MIN_MASKED` of them or more);
        0 disables caching (every column is recomputed).

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(60)
    >>> rng = np.random.default_rng(1)
    >>> op = CubeOperator(rng.random((4, 60)), rng.random((3, 3, 2)), [-100.0, 0.0, 100.0],
    ...                   tem, tem[15:45:3], datacube=rng.random((3, 10)))
    >>> cache = ColumnCache(op, cap_bytes=1e6)
    >>> G1, b1 = cache.gram_extend(np.array([0, 5]), np.array([2, 3]))
    >>> G2, b2 = gram_extend(op, np.array([0, 5]), np.array([2, 3]))  # no cache
    >>> bool(np.array_equal(G1, G2) and np.array_equal(b1, b2))
    True
    >>> G3, _ = cache.gram_extend(np.array([0, 5, 2]), np.array([1]))  # 0, 5, 2 from memory
    >>> cache.computed, bool(np.array_equal(G3[:3, 0], gram_extend(op, [0, 5, 2], [1])[0][:3, 0]))
    (5, True)
    """

    def __init__(self, op: CubeOperator, cap_bytes: float) -> None:
        self.op = op
        S = op.n_spaxels
        L = op._data.fitted().Y.shape[2]  # columns on the fitted pixels only
        self.C, self.P = op.model_shape
        self.S, self.L = S, L
        self.col_bytes = 8 * S * L
        self.capacity = int(max(0.0, cap_bytes) // self.col_bytes)
        self._store: np.ndarray | None = None  # (capacity, S, L), allocated on first use
        self.slot: dict[int, int] = {}  # column -> slot, for columns whose B is stored
        self._free = list(range(self.capacity))  # a heap: the lowest slot first keeps runs long
        self._used: dict[int, int] = {}  # column -> last round it was asked for
        self._round = 0
        self.computed = 0  # design columns built (statistics; tests check the cap by it)
        self.grow_limit = self.capacity  # slots below this index may be taken for the first time
        self.touched = 0  # slots ever written: the store's resident memory is theirs

    @property
    def nbytes(self) -> int:
        """Bytes held by cached columns (slots in use)."""
        return len(self.slot) * self.col_bytes

    def _prepare(self, cols: np.ndarray) -> None:
        """Slots for this round's ``cols`` (priority order), and which are valid or to fill.

        A column keeps its slot while cached; a new one takes a free slot, else that of the
        least recently used column outside ``cols``, else it is built without being stored.
        """
        self._round += 1
        want = set(int(c) for c in cols)
        slots = np.full(cols.size, -1, dtype=np.int64)
        valid = np.zeros(cols.size, dtype=bool)
        fill = []
        for i, c in enumerate(cols):
            c = int(c)
            self._used[c] = self._round
            s = self.slot.get(c)
            if s is not None:
                valid[i] = True
            else:
                fresh = bool(self._free) and self._free[0] >= self.touched
                if not self._free or (fresh and self._free[0] >= self.grow_limit):
                    victims = [j for j in self.slot if j not in want]
                    if victims:
                        v = min(victims, key=lambda j: self._used.get(j, -1))
                        heapq.heappush(self._free, self.slot.pop(v))
                if not self._free or self._free[0] >= max(self.grow_limit, self.touched):
                    continue
                s = heapq.heappop(self._free)
                self.touched = max(self.touched, s + 1)
                self.slot[c] = s
                fill.append(i)
            slots[i] = s
        if fill and self._store is None:
            self._store = np.empty((self.capacity, self.S, self.L))
        self._slots, self._valid = slots, valid
        self._fill = np.asarray(fill, dtype=np.int64)
        self.computed += int(cols.size - valid.sum())

    def gram_extend(self, J: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`gram_extend` of this cache's operator with the columns kept here.

        Every cached column's design comes from memory and every built one is stored when a
        slot is free (``J`` has priority over ``new``); the result is the same as without
        the cache, to the bit.
        """
        return gram_extend(self.op, J, new, self)

    def covers(self, x: np.ndarray) -> bool:
        """Whether every non-zero weight of ``x`` (flat) has its column in the cache."""
        return all(int(j) in self.slot for j in np.flatnonzero(x))

    def gradient(self, x: np.ndarray, screen: bool = False) -> tuple[np.ndarray, float]:
        """:meth:`CubeOperator.gradient` with part of the model taken from cached columns.

        A component whose non-zero weights all have their column here contributes
        ``sum_j x_j B_j`` (``2 S L`` flops a column); the others go through the operator's
        forward pass (``2 S K L`` a component), and none at all when :meth:`covers` ``(x)``.
        Returns ``(A^T W^2 (A x - y) (C, P), chi^2)``; ``screen`` as in
        :meth:`CubeOperator.weighted_residual_gradient`.
        """
        flat = np.asarray(x, dtype=np.float64).ravel()
        nz = np.flatnonzero(flat)
        cached = np.array([int(j) in self.slot for j in nz], dtype=bool)
        rest = np.zeros(self.C, dtype=bool)  # components with a non-zero weight not cached
        rest[nz[~cached] // self.P] = True
        take = nz[~rest[nz // self.P]]
        sl = np.array([self.slot[int(j)] for j in take], dtype=np.int64)
        model = np.zeros(self.S * self.L)
        for lo, hi in _slot_runs(sl):  # one GEMV on a contiguous view of the store, no gather
            coef = np.zeros(hi - lo)
            inside = (sl >= lo) & (sl < hi)
            coef[sl[inside] - lo] = flat[take[inside]]
            model += coef @ self._store[lo:hi].reshape(hi - lo, -1)
        model = model.reshape(self.S, self.L)
        if rest.any():
            d = self.op._data.fitted()
            part = _forward_local(d, np.where(rest[:, None], flat.reshape(self.C, self.P), 0.0))
            if d.w is not None:
                part *= d.w
            model += project_out(d.q, part)
        return self.op.weighted_residual_gradient(model, screen=screen)
