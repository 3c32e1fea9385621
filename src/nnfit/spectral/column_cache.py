"""Weighted design columns kept in memory between working-set rounds, under a memory cap.

The working-set fit of :mod:`nnfit.spectral.fit` extends its Gram block every round with the
columns of the new candidates. Each entry ``G[i, j] = <B_i, B_j>`` needs both weighted design
columns ``B_j = W A e_j`` (S, L), and building one costs ``2 S K L`` flops (K dictionary
entries), against ``2 S L`` per Gram entry. Without a cache the support's columns are rebuilt
every round (1003 of the 2264 columns built in the C = 22 benchmark of
:doc:`/spectral/exact-fit`; the rest are new candidates). :class:`ColumnCache` keeps ``B_j``
for as many columns as ``cap_bytes`` allows, support first, and evicts the least recently
used column that is not in the current working set when a slot is needed. Columns that do not
fit are computed as before, so the cap bounds the memory and never the result.

The same columns give the model of the support without a forward pass: when every non-zero
weight has its column in the cache, ``W A x = sum_j x_j B_j`` costs ``2 S L m`` flops instead
of ``2 S C K L``, and :meth:`ColumnCache.gradient` then needs only the adjoint pass.

Everything is float64 and in-process (the local scheduler); the sums run in a different order
from :func:`nnfit.spectral.gram.cube_gram`, so results agree with it to rounding.
"""

from __future__ import annotations

import heapq

import numpy as np

from nnfit.spectral.continuum import project_out
from nnfit.spectral.cube_operator import CubeOperator, _adjoint_core, _phi_to_model
from nnfit.spectral.gram import block_columns

__all__ = ["ColumnCache"]

_GAP = 4  # slots of other columns a GEMM over a run of cached slots may include


def _slot_runs(slots: np.ndarray) -> list[tuple[int, int]]:
    """Ranges ``[lo, hi)`` covering ``slots``, split where more than ``_GAP`` slots are unused."""
    s = np.unique(slots)
    if s.size == 0:
        return []
    cut = np.flatnonzero(np.diff(s) > _GAP + 1) + 1
    return [(int(g[0]), int(g[-1]) + 1) for g in np.split(s, cut)]


_STEP_BYTES = 256e6  # design columns computed per spaxel step (per round: new + uncached)


class ColumnCache:
    """In-memory weighted design columns ``B_j`` of a :class:`CubeOperator`, at most ``cap_bytes``.

    Parameters
    ----------
    op : CubeOperator
        The operator (its weights, continuum projection and data as they are now: build a new
        cache after :meth:`CubeOperator.set_continuum`).
    cap_bytes : float
        Memory for cached columns, ``S * L * 8`` bytes each; 0 disables caching (every column
        is recomputed).

    Examples
    --------
    >>> from nnfit.spectral.gram import cube_gram
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(60)
    >>> rng = np.random.default_rng(1)
    >>> op = CubeOperator(rng.random((4, 60)), rng.random((3, 3, 2)), [-100.0, 0.0, 100.0],
    ...                   tem, tem[15:45:3], datacube=rng.random((3, 10)))
    >>> cache = ColumnCache(op, cap_bytes=1e6)
    >>> G1, b1 = cache.gram_extend(np.array([0, 5]), np.array([2, 3]))
    >>> G2, b2 = cube_gram(op, np.array([0, 5, 2, 3]), new_from=2)
    >>> bool(np.allclose(G1, G2, rtol=1e-12) and np.allclose(b1, b2, rtol=1e-12))
    True
    """

    def __init__(self, op: CubeOperator, cap_bytes: float) -> None:
        self.op = op
        S, L = op.data_shape
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

    @property
    def nbytes(self) -> int:
        """Bytes held by cached columns (slots in use)."""
        return len(self.slot) * self.col_bytes

    def _assign(self, cols: np.ndarray) -> np.ndarray:
        """Slots for ``cols`` in priority order (cached or newly assigned), -1 where none fits.

        Newly assigned slots are filled during this round's pass.
        """
        want = set(int(c) for c in cols)
        out = np.full(cols.size, -1, dtype=np.int64)
        fresh = []
        for i, c in enumerate(cols):
            c = int(c)
            self._used[c] = self._round
            s = self.slot.get(c)
            if s is None:
                if not self._free:
                    victims = [j for j in self.slot if j not in want]
                    if victims:
                        v = min(victims, key=lambda j: self._used.get(j, -1))
                        heapq.heappush(self._free, self.slot.pop(v))
                if not self._free:
                    continue
                s = heapq.heappop(self._free)
                self.slot[c] = s
                fresh.append(i)
            out[i] = s
        if fresh and self._store is None:
            self._store = np.empty((self.capacity, self.S, self.L))
        self._fresh = np.asarray(fresh, dtype=np.int64)
        return out

    def _design(self, sub, columns: np.ndarray) -> np.ndarray:
        """Weighted, projected design columns ``(m, S_step, L)`` of the spaxel step ``sub``."""
        return project_out(sub.q, block_columns(sub, columns, self.C, self.P))

    def gram_extend(self, J: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``G[:, new]`` (m, m_new) for ``cols = [J, new]`` and ``b[new]``.

        What :func:`nnfit.spectral.gram.cube_gram` returns with ``new_from=len(J)``, with
        every cached column's design taken from memory and every computed one stored when a
        slot is free (``J`` has priority over ``new``).
        """
        self._round += 1
        J = np.asarray(J, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        cols = np.concatenate([J, new])
        m, m0, mn = cols.size, J.size, new.size
        slots = self._assign(cols)
        computed_now = np.zeros(m, dtype=bool)
        computed_now[self._fresh] = True
        computed_now[slots < 0] = True
        comp = np.flatnonzero(computed_now)  # positions in cols to build this round
        k0 = int(np.searchsorted(comp, m0))  # comp[k0:] are new columns
        self.computed += comp.size
        # cached rows are multiplied straight from the store, one GEMM per run of slots
        resident = np.flatnonzero(slots >= 0)
        runs = []
        for lo, hi in _slot_runs(slots[resident]):
            sel = resident[(slots[resident] >= lo) & (slots[resident] < hi)]
            runs.append((lo, hi, sel, slots[sel] - lo))
        unslotted = np.flatnonzero(slots < 0)
        where = np.searchsorted(comp, unslotted)
        cached_new = np.flatnonzero(~computed_now[m0:])
        d = self.op._data
        G = np.zeros((m, mn))
        b = np.zeros(mn)
        step = max(1, int(_STEP_BYTES // max(1, (comp.size + mn) * self.L * 8)))
        for a in range(0, self.S, step):
            sub = d.rows(a, min(self.S, a + step))
            sb = sub.kern.shape[0]
            Bc = self._design(sub, cols[comp]) if comp.size else None
            for i, pos in enumerate(comp):
                if slots[pos] >= 0:
                    self._store[slots[pos], a : a + sb] = Bc[i]
            if cached_new.size == 0:  # every new column was built now: a view
                R2 = Bc[k0:].reshape(mn, -1)
            else:
                R = np.empty((mn, sb, self.L))
                if k0 < comp.size:
                    R[comp[k0:] - m0] = Bc[k0:]
                R[cached_new] = self._store[slots[m0 + cached_new], a : a + sb]
                R2 = R.reshape(mn, -1)
            for lo, hi, sel, rows in runs:
                V = self._store[lo:hi, a : a + sb].reshape(hi - lo, -1)  # strided view, no copy
                G[sel] += (V @ R2.T)[rows]
            if unslotted.size:
                G[unslotted] += Bc[where].reshape(unslotted.size, -1) @ R2.T
            if sub.wy is not None:
                b += R2 @ sub.wy.ravel()
        return G, b

    def covers(self, x: np.ndarray) -> bool:
        """Whether every non-zero weight of ``x`` (flat) has its column in the cache."""
        return all(int(j) in self.slot for j in np.flatnonzero(x))

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """:meth:`CubeOperator.gradient` with the model taken from cached columns.

        Needs :meth:`covers` ``(x)``. Returns ``(A^T W^2 (A x - y) (C, P), chi^2)``.
        """
        op = self.op
        d = op._data
        if d.wy is None:
            raise ValueError("the operator has no datacube; build it with datacube=...")
        flat = np.asarray(x, dtype=np.float64).ravel()
        nz = np.flatnonzero(flat)
        sl = np.array([self.slot[int(j)] for j in nz], dtype=np.int64)
        runs = []  # weights per run of slots: one GEMV on a view of the store, no gather
        for lo, hi in _slot_runs(sl):
            coef = np.zeros(hi - lo)
            inside = (sl >= lo) & (sl < hi)
            coef[sl[inside] - lo] = flat[nz[inside]]
            runs.append((lo, hi, coef))
        phi = None
        chi2 = 0.0
        for s0 in range(0, self.S, op.block_size):
            s1 = min(self.S, s0 + op.block_size)
            sub = d.rows(s0, s1)
            res = -sub.wy
            for lo, hi, coef in runs:
                res = res + np.tensordot(coef, self._store[lo:hi, s0:s1], axes=1)
            chi2 += float(np.einsum("ij,ij->", res, res))
            if sub.w is not None:
                res = res * sub.w
            part = _adjoint_core(sub, res)
            phi = part if phi is None else phi.__iadd__(part)
        return _phi_to_model(d.Y, phi), chi2
