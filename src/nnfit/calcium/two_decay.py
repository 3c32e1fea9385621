"""A calcium kernel with one rise and two decays, and the certified deconvolution for it.

The kernel, in frames ``k = 0, 1, ...`` (``d_1, d_2, r`` the per-frame roots of
``tau_decay``, ``tau_decay2`` and ``tau_rise``) ::

    h[0] = 0,   h[k] = A (f d_1^k + (1 - f) d_2^k - r^k),   A such that max_k h[k] = 1

is the one-decay kernel of :func:`nnfit.calcium.kernel.build_kernel` with its decay split in a
fast part of weight ``f`` and a slow one, and is not truncated. ``K s`` and ``K^T u`` run as
three first-order recursions, one per root (a few multiply-adds a frame, accurate to rounding
however close the roots). Its ``z``-transform is rational, ``H = Z N / G`` with ``G`` the
three-pole recursion ``(G c)[t] = c[t] - g_1 c[t-1] - g_2 c[t-2] - g_3 c[t-3]`` and ``N`` a
two-tap filter (one zero), which makes the Newton systems banded.

The deconvolution minimises, for each trace ``y`` ::

    F(s) = 0.5 || Pi (y - K s) ||^2 + lam sum(s),   s >= 0

(``Pi`` projects out the baseline fitted jointly: the mean, or any given slow basis) with
a primal-dual interior-point method. Its Newton systems are banded in disguise: ``K^T K + D =
G^-T (N^T Z^T Z N + G^T D G) G^-1`` has a middle factor with three diagonals on each side,
factored in ``O(T)``, and the baseline's low-rank term is added by Woodbury's identity. That
middle factor carries the conditioning of ``G`` squared, so with two slow decays (two roots
near 1) rounding takes digits from it: each Newton direction is therefore computed by
conjugate gradients against the operators themselves, with the banded inverse (its diagonal
shifted where its pivots are lost) as the preconditioner; one or two iterations where it is
exact. With three roots near 1 (a slow rise and two slow decays at a high frame rate) the double
factor is no preconditioner at all, and once a direction takes many iterations the rest of the
solve forms and factors the middle factor in double-double arithmetic. Once the gap is small,
the exact minimiser on the support the iterate implies is tried (the same conjugate
gradients). The stop is a certificate: a dual point ``theta Pi (y - K s)``, scaled to be
feasible, whose value ``D`` proves ``F(s) - F* <= F(s) - D``; the relative gap ``(F(s) - D) /
F(s)`` is reported and the iterations stop at ``tol``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from nnfit.calcium.doubledouble import dd_add, dd_div, dd_mul, two_prod
from nnfit.calcium.estimate import (
    LAM_Z,
    REFINE_LAM_Z,
    REFINE_TOL,
    estimate_kinetics_pooled,
    estimate_noise,
    search_min_frames,
    search_traces,
    whiteness,
)
from nnfit.calcium.exact import BASELINES, LAM_FLOOR, baseline_models
from nnfit.calcium.kernel import check_kinetics
from nnfit.calcium.result import DeconvolutionResult
from nnfit.validate import check_int, check_real

log = logging.getLogger(__name__)

__all__ = [
    "TwoDecayKernel",
    "deconvolve_two_decay",
    "estimate_two_decay_kernel",
    "two_decay_criteria",
    "two_decay_grid",
]

#: fraction of the step to the boundary (Mehrotra)
STEP_FRACTION = 0.995
#: the start: every spike at this many times the rate that explains the trace's standard
#: deviation, ``z = lam`` (as the one-decay solver, :mod:`nnfit.calcium._ipm`)
START_SCALE = 3.0
#: relative gap from which each iteration also tries the exact solve on the support it implies
POLISH_AT = 1e-4
#: the support: the entries whose barrier weight z / s is below the kernel's energy
#: ``||h||^2`` (the Hessian's diagonal), as the one-decay solver's ``SUPPORT_RATIO = 1``
SUPPORT_RATIO = 1.0
#: the polish drops the entries its solve makes non-positive and solves again, this many times
POLISH_ROUNDS = 5
#: the polish's preconditioner pins the entries off the support with this many times ``||h||^2``
PIN = 1e6
#: the largest relative shift of the banded factor's diagonal (:func:`_factor_shifted`)
MAX_SHIFT = 1e-2
#: a Newton direction: conjugate gradients preconditioned by the banded inverse, to this
#: relative residual, at most this many iterations (the first is the banded solve itself)
NEWTON_TOL = 1e-10
NEWTON_MAX_CG = 50
#: a Newton direction that takes more conjugate-gradient iterations than this makes the rest of
#: the solve factor in double-double arithmetic (:func:`_ldl_precise`): with three roots near 1
#: (a slow rise and two slow decays at a high frame rate) the double factor is no preconditioner
#: at all
PRECISE_AFTER = 10
#: iterations without the best gap falling below STALL_FACTOR of itself end the solve (near
#: rounding, with decays of several seconds at 150 Hz, the gap can hover above tol)
STALL_ITERATIONS = 30
STALL_FACTOR = 0.5
#: the grid of the two-decay search, fixed on simulations before any recording was looked at
#: (``docs/calcium/ground-truth.rst``): fast decays 0.05-0.8 s, slow decays 0.5-4 s, log-spaced
#: (neighbours about 1.6x apart), the fast decay's weight; one-decay kernels at every decay of
#: either axis, and a slow decay at least ``GRID_MIN_RATIO`` times the fast one
GRID_FAST = tuple(float(v) for v in np.geomspace(0.05, 0.8, 7))
GRID_SLOW = tuple(float(v) for v in np.geomspace(0.5, 4.0, 5))
GRID_WEIGHTS = (0.5, 0.7, 0.85)
GRID_MIN_RATIO = 1.4


@dataclass(frozen=True)
class TwoDecayKernel:
    """The kernel ``h[k] = A (f d_1^k + (1 - f) d_2^k - r^k)`` (module docstring).

    Parameters
    ----------
    tau_rise, tau_decay, tau_decay2 : float
        Rise, fast decay and slow decay in seconds, ``0 < tau_rise < tau_decay <= tau_decay2``.
    fraction : float
        Weight ``f`` of the fast decay, ``0 <= f <= 1`` (1: one decay, ``tau_decay``).
    fs : float
        Sampling rate in Hz.

    Examples
    --------
    >>> k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    >>> h = k.samples(600)
    >>> float(h[0]), float(round(h.max(), 12))
    (0.0, 1.0)
    >>> s = np.zeros(600); s[[5, 300]] = 1.0
    >>> bool(np.allclose(k.forward(s), np.convolve(s, h)[:600], rtol=0, atol=1e-13))
    True
    """

    tau_rise: float
    tau_decay: float
    tau_decay2: float
    fraction: float
    fs: float

    def __post_init__(self) -> None:
        tau_rise, tau_decay, fs = check_kinetics(self.tau_rise, self.tau_decay, self.fs)
        tau_decay2 = float(self.tau_decay2)
        if not (math.isfinite(tau_decay2) and tau_decay2 >= tau_decay):
            raise ValueError(
                f"tau_decay2 must be finite and at least tau_decay ({tau_decay} s); got "
                f"{self.tau_decay2!r}: pass the slow decay as tau_decay2"
            )
        f = float(self.fraction)
        if not (0.0 <= f <= 1.0):
            raise ValueError(f"fraction (the fast decay's weight) must be in [0, 1]; got {f!r}")
        for name, v in (
            ("tau_rise", tau_rise),
            ("tau_decay", tau_decay),
            ("tau_decay2", tau_decay2),
            ("fraction", f),
            ("fs", fs),
        ):
            object.__setattr__(self, name, v)

    @property
    def roots(self) -> np.ndarray:
        """``(d_1, d_2, r)``: the per-frame roots of the two decays and the rise.

        A decay of weight 0 (``f = 1`` or ``f = 0``) gets the root 0, which takes it out of the
        recursion (``g_3 = 0``) instead of leaving a pole cancelled by a zero: a double root
        near 1 would make the Newton systems needlessly ill-conditioned.
        """
        taus = np.array([self.tau_decay, self.tau_decay2, self.tau_rise])
        roots = np.exp(-1.0 / (self.fs * taus))
        roots[[self.fraction == 0.0, self.fraction == 1.0, False]] = 0.0
        return roots

    @property
    def weights(self) -> np.ndarray:
        """``A (f, 1 - f, -1)``: the weight of each root's geometric series (peak 1)."""
        w = np.array([self.fraction, 1.0 - self.fraction, -1.0])
        # the peak lies within a few rise times: the samples up to where every term but the
        # slowest has decayed hold it
        n = int(np.ceil(12.0 * self.tau_decay * self.fs)) + 2
        k = np.arange(n)
        raw = w @ (self.roots[:, None] ** k[None, :])
        return w / float(raw.max())

    def samples(self, n: int) -> np.ndarray:
        """The first ``n`` samples of ``h``."""
        k = np.arange(int(n))
        h = self.weights @ (self.roots[:, None] ** k[None, :])
        h[0] = 0.0
        return h

    @property
    def norm(self) -> float:
        """``||h||_2`` of the untruncated kernel, in closed form:
        ``sum_(i,j) w_i w_j rho_i rho_j / (1 - rho_i rho_j)``."""
        w, rho = self.weights, self.roots
        pr = np.outer(rho, rho)
        return float(np.sqrt(np.outer(w, w).ravel() @ (pr / (1.0 - pr)).ravel()))

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``(g, b)``: ``G``'s recursion ``(g_1, g_2, g_3)`` and ``N``'s taps ``(b_1, b_2)``.

        ``h`` is the response of ``x[t] = s[t] + g_1 x[t-1] + g_2 x[t-2] + g_3 x[t-3]``,
        ``h[t] = b_1 x[t-1] + b_2 x[t-2]`` (``b`` from ``G``'s coefficients and ``h[1], h[2]``):
        the form the Newton systems' banded factor is built from (the operators themselves run
        as :meth:`branches`).
        """
        a = np.poly(self.roots)  # 1, -g_1, -g_2, -g_3
        h = self.samples(3)
        b = np.array([h[1], h[2] + a[1] * h[1]])
        return -a[1:].astype(float), b

    def branches(self) -> np.ndarray:
        """``(c_1, c_2, c_3, rho_1, rho_2, rho_3)``: ``h`` as three first-order recursions.

        ``h[t] = sum_i c_i x_i[t-1]`` with ``x_i[t] = rho_i x_i[t-1] + s[t]`` and ``c_i = w_i
        rho_i`` (:attr:`weights`, :attr:`roots`). :meth:`forward` and :meth:`adjoint` run in this
        form: the direct form of :meth:`coefficients` amplifies rounding by the closeness of
        its roots (a relative error of 4e-11 on ``K s`` with roots of 0.4, 0.8 and 2.4 s at
        120 Hz, 2e-15 here), and the duality gap is no more accurate than ``K s``.
        """
        return np.concatenate([self.weights * self.roots, self.roots])

    def forward(self, s: np.ndarray) -> np.ndarray:
        """``K s`` for one trace ``(T,)``, in ``O(T)``."""
        s = np.ascontiguousarray(s, dtype=np.float64)
        return _forward(s, self.branches(), np.empty_like(s))

    def adjoint(self, u: np.ndarray) -> np.ndarray:
        """``K^T u`` for one trace ``(T,)``, in ``O(T)``."""
        u = np.ascontiguousarray(u, dtype=np.float64)
        return _adjoint(u, self.branches(), np.empty_like(u))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _forward(s, p, out):  # pragma: no cover - compiled
    """``out = K s`` by the three first-order recursions of :meth:`TwoDecayKernel.branches`."""
    T = s.shape[0]
    c1, c2, c3, r1, r2, r3 = p[0], p[1], p[2], p[3], p[4], p[5]
    x1 = 0.0
    x2 = 0.0
    x3 = 0.0
    for t in range(T):
        out[t] = c1 * x1 + c2 * x2 + c3 * x3
        x1 = r1 * x1 + s[t]
        x2 = r2 * x2 + s[t]
        x3 = r3 * x3 + s[t]
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _adjoint(u, p, out):  # pragma: no cover - compiled
    """``out = K^T u``: the recursions of :func:`_forward` run backwards."""
    T = u.shape[0]
    c1, c2, c3, r1, r2, r3 = p[0], p[1], p[2], p[3], p[4], p[5]
    x1 = 0.0
    x2 = 0.0
    x3 = 0.0
    for t in range(T - 1, -1, -1):
        out[t] = c1 * x1 + c2 * x2 + c3 * x3
        x1 = r1 * x1 + u[t]
        x2 = r2 * x2 + u[t]
        x3 = r3 * x3 + u[t]
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _assemble(Dg, g, b, M):  # pragma: no cover - compiled
    """The bands of ``M = N^T Z^T Z N + G^T diag(Dg) G``, ``M[c, k] = M(c, c + k)``.

    Row ``t`` of ``G`` has the taps ``1, -g_1, -g_2, -g_3`` at columns ``t, t-1, t-2, t-3``, row
    ``t`` of ``Z N`` the taps ``b_1, b_2`` at ``t-1, t-2``, so ``M(c, c + k) = sum_(m = k..3)
    Dg[c + m] G_(m-k) G_m + N_(m-k) N_m`` over the rows ``c + m < T``.
    """
    T = Dg.shape[0]
    gc = np.array([1.0, -g[0], -g[1], -g[2]])
    nc = np.array([0.0, b[0], b[1], 0.0])
    g1, g2, g3 = gc[1], gc[2], gc[3]
    n11, n12, n22 = nc[1] * nc[1], nc[1] * nc[2], nc[2] * nc[2]
    # each term rounded as ``(Dg[c + m] G_(m-k)) G_m + N_(m-k) N_m`` and the terms summed in
    # the order of m, as the last rows' loop below spells out (where a tap is 1 or 0 the
    # product is exact): forming G_(m-k) G_m first and adding N's part last gave 3x the
    # conjugate-gradient iterations with two slow decays at 120 Hz
    for c in range(T - 3):
        d0, d1, d2, d3 = Dg[c], Dg[c + 1], Dg[c + 2], Dg[c + 3]
        M[c, 0] = ((d0 + (d1 * g1 * g1 + n11)) + (d2 * g2 * g2 + n22)) + d3 * g3 * g3
        M[c, 1] = (d1 * g1 + (d2 * g1 * g2 + n12)) + d3 * g2 * g3
        M[c, 2] = d2 * g2 + d3 * g1 * g3
        M[c, 3] = d3 * g3
    for c in range(max(T - 3, 0), T):  # the last rows, where G and N are cut off
        for k in range(4):
            v = 0.0
            for m in range(k, T - c):
                v += Dg[c + m] * gc[m - k] * gc[m] + nc[m - k] * nc[m]
            M[c, k] = v


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _ldl(M, L, shift):  # pragma: no cover - compiled
    """Banded ``L D L^T`` (half-bandwidth 3) of ``M`` with its diagonal scaled by ``1 + shift``.

    ``L[i, k]`` (``k = 1, 2, 3``) holds the unit factor's entry ``(i, i - k)``, ``L[i, 0]`` the
    pivot ``D[i]`` and ``L[i, 4]`` its inverse (the solves multiply; one division a row, on the
    factorisation's critical path only). Returns False where a pivot is not positive and
    finite.
    """
    T = M.shape[0]
    for i in range(T):
        # e_k = L(i, i - k) D[i - k], from the rows above
        e3 = M[i - 3, 3] if i >= 3 else 0.0
        l3 = e3 * L[i - 3, 4] if i >= 3 else 0.0
        e2 = 0.0
        l2 = 0.0
        if i >= 2:
            e2 = M[i - 2, 2] - e3 * L[i - 2, 1]
            l2 = e2 * L[i - 2, 4]
        e1 = 0.0
        l1 = 0.0
        if i >= 1:
            e1 = M[i - 1, 1] - e3 * L[i - 1, 2] - e2 * L[i - 1, 1]
            l1 = e1 * L[i - 1, 4]
        d = M[i, 0] * (1.0 + shift) - e3 * l3 - e2 * l2 - e1 * l1
        if not (d > 0.0 and d < np.inf):
            return False
        L[i, 0] = d
        L[i, 1] = l1
        L[i, 2] = l2
        L[i, 3] = l3
        L[i, 4] = 1.0 / d
    return True


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _band_dd(Dg, P, c, k):  # pragma: no cover - compiled
    """``M(c, c + k)`` of :func:`_assemble` in double-double; ``P[k, m]`` holds the tap products
    ``(G_(m-k) G_m, N_(m-k) N_m)`` as double-double pairs."""
    hi = 0.0
    lo = 0.0
    for m in range(k, min(4, Dg.shape[0] - c)):
        th, tl = dd_mul(P[k, m, 0], P[k, m, 1], Dg[c + m], 0.0)
        th, tl = dd_add(th, tl, P[k, m, 2], P[k, m, 3])
        hi, lo = dd_add(hi, lo, th, tl)
    return hi, lo


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _ldl_precise(Dg, g, b, L, shift):  # pragma: no cover - compiled
    """:func:`_ldl` of :func:`_assemble`'s ``M``, both in double-double arithmetic (about 32
    digits), the factor rounded to double into ``L``.

    Where ``M``'s entries span many orders (barrier weights from 1e-8 to 1e10) and ``G`` has three
    roots near 1, the double factor's backward error swamps the smooth directions of ``G^T D G``
    (one banded solve with it left a relative residual of 1 on ``K^T K + D``, a factor from 64-bit
    long doubles 1e-2); rounding a more precise factor to double keeps what the solves need.
    Rows are formed as they are reached, the last three kept, so no band is stored.
    """
    T = Dg.shape[0]
    gc = np.array([1.0, -g[0], -g[1], -g[2]])
    nc = np.array([0.0, b[0], b[1], 0.0])
    P = np.zeros((4, 4, 4))
    for k in range(4):
        for m in range(k, 4):
            P[k, m, 0], P[k, m, 1] = two_prod(gc[m - k], gc[m])
            P[k, m, 2], P[k, m, 3] = two_prod(nc[m - k], nc[m])
    # the unit factor's L(i - 1, i - 2), L(i - 1, i - 3), L(i - 2, i - 3) and the pivots of
    # rows i - 1, i - 2, i - 3, each (hi, lo)
    a1h = a1l = a2h = a2l = b1h = b1l = 0.0
    d1h = d1l = d2h = d2l = d3h = d3l = 0.0
    for i in range(T):
        e3h = e3l = l3h = l3l = e2h = e2l = l2h = l2l = e1h = e1l = l1h = l1l = 0.0
        if i >= 3:
            e3h, e3l = _band_dd(Dg, P, i - 3, 3)
            l3h, l3l = dd_div(e3h, e3l, d3h, d3l)
        if i >= 2:
            e2h, e2l = _band_dd(Dg, P, i - 2, 2)
            th, tl = dd_mul(e3h, e3l, b1h, b1l)
            e2h, e2l = dd_add(e2h, e2l, -th, -tl)
            l2h, l2l = dd_div(e2h, e2l, d2h, d2l)
        if i >= 1:
            e1h, e1l = _band_dd(Dg, P, i - 1, 1)
            th, tl = dd_mul(e3h, e3l, a2h, a2l)
            e1h, e1l = dd_add(e1h, e1l, -th, -tl)
            th, tl = dd_mul(e2h, e2l, a1h, a1l)
            e1h, e1l = dd_add(e1h, e1l, -th, -tl)
            l1h, l1l = dd_div(e1h, e1l, d1h, d1l)
        dh, dl = _band_dd(Dg, P, i, 0)
        dh, dl = dd_mul(dh, dl, 1.0 + shift, 0.0)
        th, tl = dd_mul(e3h, e3l, l3h, l3l)
        dh, dl = dd_add(dh, dl, -th, -tl)
        th, tl = dd_mul(e2h, e2l, l2h, l2l)
        dh, dl = dd_add(dh, dl, -th, -tl)
        th, tl = dd_mul(e1h, e1l, l1h, l1l)
        dh, dl = dd_add(dh, dl, -th, -tl)
        if not (dh > 0.0 and dh < np.inf):
            return False
        L[i, 0] = dh
        L[i, 1] = l1h
        L[i, 2] = l2h
        L[i, 3] = l3h
        L[i, 4] = 1.0 / dh
        # shift the window: row i becomes row i - 1
        b1h, b1l = a1h, a1l
        a1h, a1l, a2h, a2l = l1h, l1l, l2h, l2l
        d3h, d3l, d2h, d2l, d1h, d1l = d2h, d2l, d1h, d1l, dh, dl
    return True


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _factor_shifted(Dg, g, b, M, L, precise):  # pragma: no cover - compiled
    """``M`` assembled once (:func:`_assemble`) and factored, its diagonal raised by ``1e-12,
    1e-10, ...`` of itself until the pivots stay positive; ``precise``: both in double-double
    (:func:`_ldl_precise`).

    In ``M`` the conditioning of ``K^T K + D`` is multiplied by that of ``G`` squared, so with
    two roots near 1 and barrier weights many orders apart rounding can take its pivots; the
    factor of the shifted matrix is then a preconditioner (:func:`_pcg` iterates against the
    operators themselves). Returns False where even ``MAX_SHIFT`` does not do.
    """
    if not precise:
        _assemble(Dg, g, b, M)
    shift = 0.0
    while shift <= MAX_SHIFT:
        if _ldl_precise(Dg, g, b, L, shift) if precise else _ldl(M, L, shift):
            return True
        shift = 1e-12 if shift == 0.0 else 100.0 * shift
    return False


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _solve_a(L, g, rhs, tmp, out):  # pragma: no cover - compiled
    """``out = (K^T K + D)^-1 rhs = G M^-1 G^T rhs`` with ``M = L D L^T`` (:func:`_ldl`).

    Two sweeps: ``G^T`` fused into the forward substitution, ``G`` into the backward one (its
    row ``i + 3`` as soon as ``w[i]`` is known); the newest value enters each recursion last,
    so one multiply-add a row lies on the critical path.
    """
    T = rhs.shape[0]
    g1, g2, g3 = g[0], g[1], g[2]
    # forward: tmp = L^-1 G^T rhs (the last three values carried)
    t1 = 0.0
    t2 = 0.0
    t3 = 0.0
    for i in range(T):
        v = rhs[i]
        if i + 3 < T:
            v = v - g1 * rhs[i + 1] - g2 * rhs[i + 2] - g3 * rhs[i + 3]
        else:
            for k in range(1, T - i):
                v -= g[k - 1] * rhs[i + k]
        v = (v - L[i, 3] * t3 - L[i, 2] * t2) - L[i, 1] * t1
        tmp[i] = v
        t3 = t2
        t2 = t1
        t1 = v
    # backward: w = L^-T D^-1 tmp (in tmp), and out = G w
    w1 = 0.0
    w2 = 0.0
    w3 = 0.0
    for i in range(T - 1, -1, -1):
        v = tmp[i] * L[i, 4]
        if i + 3 < T:
            v = (v - L[i + 3, 3] * w3 - L[i + 2, 2] * w2) - L[i + 1, 1] * w1
            out[i + 3] = w3 - g1 * w2 - g2 * w1 - g3 * v
        else:
            if i + 2 < T:
                v -= L[i + 2, 2] * w2
            if i + 1 < T:
                v -= L[i + 1, 1] * w1
        tmp[i] = v
        w3 = w2
        w2 = w1
        w1 = v
    for t in range(min(3, T)):
        v = tmp[t]
        for k in range(1, t + 1):
            v -= g[k - 1] * tmp[t - k]
        out[t] = v
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _project(Q, v):  # pragma: no cover - compiled
    """``v <- Pi v = v - Q^T (Q v)`` in place; returns ``Q v`` (the baseline's coefficients)."""
    m, T = Q.shape
    c = np.zeros(m)
    for j in range(m):
        acc = 0.0
        for t in range(T):
            acc += Q[j, t] * v[t]
        c[j] = acc
    for j in range(m):
        for t in range(T):
            v[t] -= c[j] * Q[j, t]
    return c


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _woodbury(L, g, q, aq, C):  # pragma: no cover - compiled
    """After :func:`_factor_shifted`: ``aq = A^-1 q^T`` (rows) and ``C = I - q A^-1 q^T``; whether
    ``C`` is finite."""
    m, T = q.shape
    tmp = np.empty(T)
    for j in range(m):
        _solve_a(L, g, q[j], tmp, aq[j])
    for i in range(m):
        for j in range(m):
            acc = 0.0
            for t in range(T):
                acc += q[i, t] * aq[j, t]
            C[i, j] = (1.0 if i == j else 0.0) - acc
    return bool(np.all(np.isfinite(C)))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _newton(L, g, q, aq, C, rhs, tmp, out):  # pragma: no cover - compiled
    """``(K^T Pi K + D)^-1 rhs``: Woodbury on ``A = K^T K + D`` minus ``q^T q``.

    ``q = Q K`` (rows: the kernel's adjoint of the baseline's basis), ``aq`` and ``C`` from
    :func:`_woodbury`; ``m = 0`` rows without a baseline.
    """
    _solve_a(L, g, rhs, tmp, out)
    m, T = q.shape
    if m > 0:
        c = np.empty(m)
        for j in range(m):
            acc = 0.0
            for t in range(T):
                acc += q[j, t] * out[t]
            c[j] = acc
        w = np.linalg.solve(C, c)
        for j in range(m):
            for t in range(T):
                out[t] += w[j] * aq[j, t]
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _pcg(L, g, p, Q, q, aq, C, Dop, mask, rhs, x, work, tol, max_iter):  # pragma: no cover
    """Conjugate gradients on ``P (K^T Pi K + diag(Dop)) P x = P rhs``, ``P = diag(mask)``.

    Preconditioned by the banded inverse of :func:`_newton` (factored beforehand), to a
    residual of ``tol`` of the right-hand side; ``x`` holds the start and gets the answer.
    The banded factor alone loses digits where roots near 1 square the conditioning of its
    middle factor; the iterations, against the operators themselves, make up for it.
    Returns the number of iterations.
    """
    T = rhs.shape[0]
    r = work[0]
    d = work[1]
    hp = work[2]
    zz = work[3]
    tmp = work[4]
    bn = 0.0
    for t in range(T):
        bn += (mask[t] * rhs[t]) ** 2
    if bn == 0.0:
        for t in range(T):
            x[t] = 0.0
        return 0
    start = False
    for t in range(T):
        if x[t] != 0.0:
            start = True
            break
    if start:
        _apply_h(x, Q, p, tmp, hp)
    else:  # the residual of x = 0 is the right-hand side: no product to form
        hp[:] = 0.0
    rr = 0.0
    for t in range(T):
        r[t] = mask[t] * (rhs[t] - hp[t] - Dop[t] * x[t])
        rr += r[t] * r[t]
    done = tol * tol * bn
    if rr <= done:
        return 0
    _newton(L, g, q, aq, C, r, tmp, zz)
    rz = 0.0
    for t in range(T):
        zz[t] *= mask[t]
        d[t] = zz[t]
        rz += r[t] * zz[t]
    n = 0
    for it in range(max_iter):
        n = it + 1
        _apply_h(d, Q, p, tmp, hp)
        dhd = 0.0
        for t in range(T):
            hp[t] = mask[t] * (hp[t] + Dop[t] * d[t])
            dhd += d[t] * hp[t]
        if not dhd > 0.0:
            break
        a = rz / dhd
        rr = 0.0
        for t in range(T):
            x[t] += a * d[t]
            r[t] -= a * hp[t]
            rr += r[t] * r[t]
        # the stop is decided before the next preconditioned residual, which only the next
        # iteration would use
        if rr <= done or it + 1 >= max_iter:
            break
        _newton(L, g, q, aq, C, r, tmp, zz)
        rz_new = 0.0
        for t in range(T):
            zz[t] *= mask[t]
            rz_new += r[t] * zz[t]
        beta = rz_new / rz
        rz = rz_new
        for t in range(T):
            d[t] = zz[t] + beta * d[t]
    return n


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _step_to_boundary(v, dv):  # pragma: no cover - compiled
    a = 1.0
    for t in range(v.shape[0]):
        if dv[t] < 0.0:
            c = -v[t] / dv[t]
            if c < a:
                a = c
    return a


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _state(y, s, lam, Q, p, Ks, r, KTr):  # pragma: no cover - compiled
    """Residual, gradient and certificate at ``s``: (primal, dual, kkt).

    ``r = Pi (y - K s)``, ``Ks`` gets the baseline ``y - K s - r`` added (the model);
    ``KTr = K^T r``; the dual point is ``theta r`` with ``theta`` the best value of the
    concave dual along ``r`` that keeps ``K^T Pi (theta r) <= lam``.
    """
    T = y.shape[0]
    _forward(s, p, Ks)
    for t in range(T):
        r[t] = y[t] - Ks[t]
    _project(Q, r)
    rr = 0.0
    ry = 0.0
    ssum = 0.0
    for t in range(T):
        Ks[t] = y[t] - r[t]
        rr += r[t] * r[t]
        ry += r[t] * y[t]
        ssum += s[t]
    _adjoint(r, p, KTr)
    vmax = 0.0
    for t in range(T):
        if KTr[t] > vmax:
            vmax = KTr[t]
    primal = 0.5 * rr + lam * ssum
    theta = ry / rr if rr > 0.0 else 0.0
    if vmax > 0.0 and theta * vmax > lam:
        theta = lam / vmax
    if theta < 0.0:
        theta = 0.0
    dual = theta * ry - 0.5 * theta * theta * rr
    # dual feasibility in units of lam: the gradient lam - K^T r may not be negative anywhere
    kkt = max(vmax - lam, 0.0) / lam
    return primal, dual, kkt


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _apply_h(v, Q, p, tmp, out):  # pragma: no cover - compiled
    """``out = K^T Pi K v``."""
    _forward(v, p, tmp)
    _project(Q, tmp)
    _adjoint(tmp, p, out)
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _polish(y, s, z, g, b, p, lam, Q, q, hsq, M, L, work, x, precise):  # pragma: no cover
    """The exact minimiser on the support ``{t : z_t / s_t < SUPPORT_RATIO ||h||^2}``, in ``x``.

    Conjugate gradients (:func:`_pcg`) on ``P_S K^T Pi K P_S x = P_S (K^T Pi y - lam)``,
    preconditioned by the banded inverse with the entries off the support pinned (``D = PIN
    ||h||^2`` there, 0 on it), to a residual of 1e-14 of the right-hand side; entries that come out non-positive
    leave the support and the solve is repeated (``POLISH_ROUNDS`` at most). Returns whether
    every entry of the final support came out positive (``x`` is then the candidate; the
    caller's certificate decides).
    """
    T = y.shape[0]
    m = Q.shape[0]
    on = work[0]
    Dg = work[1]
    zero = work[2]
    tmp = work[3]
    rhs = work[4]
    kty = work[5]
    pwork = work[6:11]
    zero[:] = 0.0
    aq = np.empty((m, T))
    C = np.empty((m, m))
    n_on = 0
    for t in range(T):
        if z[t] < SUPPORT_RATIO * hsq * s[t]:
            on[t] = 1.0
            Dg[t] = 0.0
            n_on += 1
        else:
            on[t] = 0.0
            Dg[t] = PIN * hsq
    if n_on == 0 or on[T - 1] > 0.0:
        return False
    for t in range(T):
        tmp[t] = y[t]
    _project(Q, tmp)
    _adjoint(tmp, p, kty)
    for _ in range(POLISH_ROUNDS):
        if not (_factor_shifted(Dg, g, b, M, L, precise) and _woodbury(L, g, q, aq, C)):
            return False
        # right-hand side K^T Pi y - lam on the support; start from the interior point's values
        for t in range(T):
            x[t] = s[t] * on[t]
            rhs[t] = kty[t] - lam
        _pcg(L, g, p, Q, q, aq, C, zero, on, rhs, x, pwork, 1e-14, 100)
        dropped = 0
        for t in range(T):
            if on[t] > 0.0 and not x[t] > 0.0:
                on[t] = 0.0
                Dg[t] = PIN * hsq
                dropped += 1
        if dropped == 0:
            return True
    return False


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _keep_best(x, state, best, stats):  # pragma: no cover - compiled
    """Keep ``x`` in ``best`` if its relative gap (from ``state = (primal, dual, kkt)``) is
    below ``stats[0]``; ``stats`` = (gap, primal, kkt) of the best. Returns ``x``'s gap."""
    primal, dual, kkt = state
    rel = (primal - dual) / primal if primal > 0.0 else 0.0
    if rel < stats[0]:
        stats[0] = rel
        stats[1] = primal
        stats[2] = kkt
        best[:] = x
    return rel


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _ipm(y, g, b, p, lam, hsq, Q, tol, max_iter, s, base, polish_at):  # pragma: no cover
    """One trace: Mehrotra's predictor-corrector to a relative gap of ``tol``.

    ``hsq = ||h||^2``; ``Q``: ``(m, T)`` orthonormal rows spanning the baseline (``m = 0``: none);
    the exact step on the support is tried once the gap is at most ``polish_at``. Returns
    (iterations, primal, gap, kkt); ``s`` gets the best certified iterate, ``base`` its
    baseline.
    """
    T = y.shape[0]
    m = Q.shape[0]
    n = float(T)
    z = np.empty(T)
    Ks = np.empty(T)
    r = np.empty(T)
    KTr = np.empty(T)
    rd = np.empty(T)
    rhs = np.empty(T)
    dx = np.empty(T)
    dz = np.empty(T)
    ones = np.ones(T)
    pwork = np.empty((5, T))
    q = np.empty((m, T))
    aq = np.empty((m, T))
    C = np.empty((m, m))
    Dg = np.empty(T)
    M = np.empty((T, 4))
    L = np.zeros((T, 5))
    best = np.empty(T)
    work = np.empty((11, T))
    xp = np.empty(T)
    cand = np.empty((3, T))
    for j in range(m):
        _adjoint(Q[j], p, q[j])
    stats = np.array([np.inf, np.inf, np.inf])  # best relative gap, its primal, its kkt
    # no spikes is the optimum where the gradient there, lam - K^T Pi y, is nowhere negative
    # (a flat trace): said here, as the relative gap cannot say it where the optimum is F = 0
    s[:] = 0.0
    primal, _, kkt = _state(y, s, lam, Q, p, Ks, r, KTr)
    flat = kkt == 0.0
    if flat:
        stats[:] = (0.0, primal, 0.0)
        best[:] = 0.0
    hsum = (b[0] + b[1]) / (1.0 - g[0] - g[1] - g[2])
    # the start: spikes at START_SCALE times the rate that explains the trace's spread
    ystd = np.std(y)
    s[:] = START_SCALE * (ystd if ystd > 0.0 else 1.0) / hsum
    z[:] = lam
    it = 0
    last_gain = 0
    precise = False
    while not flat:
        before = stats[0]
        rel = _keep_best(s, _state(y, s, lam, Q, p, Ks, r, KTr), best, stats)
        if stats[0] < STALL_FACTOR * before:
            last_gain = it
        if stats[0] <= tol or it >= max_iter or it - last_gain >= STALL_ITERATIONS:
            break
        if rel <= polish_at and _polish(y, s, z, g, b, p, lam, Q, q, hsq, M, L, work, xp, precise):
            # the candidate's state in buffers of its own: the interior point's is kept
            _keep_best(xp, _state(y, xp, lam, Q, p, cand[0], cand[1], cand[2]), best, stats)
            if stats[0] <= tol:
                break
        it += 1
        mu = 0.0
        for t in range(T):
            rd[t] = lam - KTr[t] - z[t]  # gradient minus the dual
            Dg[t] = z[t] / s[t]
            mu += s[t] * z[t]
        mu /= n
        if not (_factor_shifted(Dg, g, b, M, L, precise) and _woodbury(L, g, q, aq, C)):
            break  # the Newton systems are lost to rounding: the best iterate stands
        # predictor: the Newton step to s z = 0
        for t in range(T):
            rhs[t] = -rd[t] - z[t]
        dx[:] = 0.0
        n_cg = _pcg(L, g, p, Q, q, aq, C, Dg, ones, rhs, dx, pwork, NEWTON_TOL, NEWTON_MAX_CG)
        precise = precise or n_cg > PRECISE_AFTER
        for t in range(T):
            dz[t] = -z[t] - z[t] * dx[t] / s[t]
        a = min(_step_to_boundary(s, dx), _step_to_boundary(z, dz))
        mu_aff = 0.0
        for t in range(T):
            mu_aff += (s[t] + a * dx[t]) * (z[t] + a * dz[t])
        sigma = (mu_aff / n / mu) ** 3
        if not np.isfinite(sigma):  # rounding has taken over
            break
        # corrector: towards sigma mu, with the predictor's second-order term
        for t in range(T):
            rc = s[t] * z[t] + dx[t] * dz[t] - sigma * mu
            rhs[t] = -rd[t] - rc / s[t]
            dz[t] = rc  # kept for the dual step below
        dx[:] = 0.0
        n_cg = _pcg(L, g, p, Q, q, aq, C, Dg, ones, rhs, dx, pwork, NEWTON_TOL, NEWTON_MAX_CG)
        precise = precise or n_cg > PRECISE_AFTER
        for t in range(T):
            dz[t] = (-dz[t] - z[t] * dx[t]) / s[t]
        a = min(1.0, STEP_FRACTION * min(_step_to_boundary(s, dx), _step_to_boundary(z, dz)))
        finite = a > 0.0
        for t in range(T):
            s[t] += a * dx[t]
            z[t] += a * dz[t]
            if not (s[t] > 0.0 and z[t] > 0.0):
                finite = False
        if not finite:  # the steps have run into rounding: the best iterate stands
            break
    s[:] = best
    _forward(s, p, Ks)
    for t in range(T):
        r[t] = y[t] - Ks[t]
    c = _project(Q, r)
    for t in range(T):
        acc = 0.0
        for j in range(m):
            acc += c[j] * Q[j, t]
        base[t] = acc
    return it, stats[1], max(stats[0], 0.0), stats[2]


def deconvolve_two_decay(
    traces: np.ndarray,
    kernel: TwoDecayKernel,
    lam: float | np.ndarray | None = None,
    baseline: str | np.ndarray = "constant",
    *,
    tol: float = 1e-9,
    max_iter: int = 200,
    n_jobs: int = 1,
    drift_rounds: int = 2,
    polish: bool = True,
) -> DeconvolutionResult:
    r"""Deconvolve with the two-decay kernel, to a certified optimum.

    Parameters
    ----------
    traces : array_like
        ``(T,)`` or ``(cells, T)`` fluorescence, finite, ``T >= 8``.
    kernel : TwoDecayKernel
        The kernel (its ``fs`` is the traces' sampling rate).
    lam : float or array_like, optional
        Sparsity weight, one value or one per cell, ``> 0``. ``None``: ``LAM_Z sigma ||h||``
        per cell, ``sigma`` its noise (:func:`nnfit.calcium.estimate.estimate_noise`), as
        :func:`nnfit.calcium.deconvolve`'s rule.
    baseline : {"auto", "none", "constant", "drift"} or numpy.ndarray
        As :func:`nnfit.calcium.deconvolve`'s (``"drift"`` smoothed on the scale of the slow
        decay), or a ``(T, m)`` array: any combination of its columns (e.g. a constant and
        slow cosines), fitted jointly and exactly.
    tol : float
        Stop when the relative duality gap is at most ``tol``.
    max_iter : int
        Interior-point iterations per trace.
    n_jobs : int
        Threads over cells (the compiled solver releases the GIL); ``-1`` for all cores.
    drift_rounds : int
        Baseline refinement rounds for ``"drift"``.
    polish : bool
        Try the exact minimiser on the support once the gap is below ``POLISH_AT`` (it ends
        most solves at the optimum to rounding). ``False`` skips it: the answer is the
        interior-point iterate certified to ``tol``, cheaper where the step does not certify
        (most of the two-decay search's solves at its gap of 1e-6, where its
        conjugate-gradient rounds cost more than the iterations they save).

    Returns
    -------
    DeconvolutionResult
        Spikes, calcium ``K s``, baseline, objective, gap and iterations per cell; the
        kernel in ``tau_rise``, ``tau_decay`` (the fast decay), ``tau_decay2`` and ``fraction``
        (so ``time_offset`` is this kernel's time stamp), ``kkt`` is
        the largest violation of dual feasibility, ``max(K^T r - lam, 0) / lam``, and
        ``baseline_kind`` is ``"constant"``, ``"none"``, ``"drift"`` or ``"basis"``.

    Notes
    -----
    Minimises ``0.5 ||Pi (y - K s)||^2 + lam sum(s)`` over ``s >= 0`` with Mehrotra's
    predictor-corrector interior-point method [1]_; the Newton matrix
    ``K^T Pi K + Z S^-1`` is inverted by conjugate gradients preconditioned with
    ``G M^-1 G^T``, ``M`` banded (module docstring), the baseline's ``m`` columns by
    Woodbury's identity, so one iteration is ``O(T m)`` times the few conjugate-gradient
    steps it takes. The stop is the duality gap of the dual point ``theta Pi (y - K s)``, which
    bounds the distance of the objective to the optimum.

    References
    ----------
    .. [1] S. J. Wright, *Primal-Dual Interior-Point Methods*, SIAM (1997),
       doi:10.1137/1.9781611971453

    Examples
    --------
    >>> k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    >>> s = np.zeros(1200); s[[100, 400, 405, 900]] = 1.0
    >>> y = k.forward(s) + 0.5 + 0.02 * np.random.default_rng(0).standard_normal(1200)
    >>> res = deconvolve_two_decay(y, k, lam=0.05)
    >>> bool(res.gap[0] <= 1e-9), np.flatnonzero(res.spikes > 0.5).tolist()
    (True, [100, 400, 405, 900])
    """
    start = time.perf_counter()
    if not isinstance(kernel, TwoDecayKernel):
        raise TypeError(f"kernel must be a TwoDecayKernel; got {type(kernel).__name__}")
    x = np.asarray(traces, dtype=np.float64)
    one = x.ndim == 1
    x2 = np.ascontiguousarray(x[None, :] if one else x)
    if x2.ndim != 2 or x2.shape[1] < 8:
        raise ValueError(f"traces must be (T,) or (cells, T) with T >= 8; got shape {x.shape}")
    if not np.all(np.isfinite(x2)):
        raise ValueError("traces hold NaN or inf: fill or drop those frames first")
    n_cells, T = x2.shape
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ValueError(
            f"baseline must be one of {BASELINES} or a (T, m) array of basis columns; "
            f"got {baseline!r}"
        )
    tol = check_real("tol", tol, low=0.0, low_inclusive=False)
    max_iter = check_int("max_iter", max_iter, low=1)
    n_jobs = check_int("n_jobs", n_jobs, low=-1)
    drift_rounds = check_int("drift_rounds", drift_rounds, low=0)
    polish_at = POLISH_AT if polish else 0.0
    noise = np.full(n_cells, np.nan)
    lam_estimated = lam is None
    if lam is None or (isinstance(baseline, str) and baseline == "auto"):
        noise = estimate_noise(x2, kernel.fs)
    if lam is None:
        lam = np.maximum(LAM_Z * noise * kernel.norm, LAM_FLOOR)
    lam_arr = np.asarray(lam, dtype=np.float64)
    if lam_arr.ndim > 1 or lam_arr.size not in (1, n_cells):
        raise ValueError(
            f"lam must be one value or one per cell ({n_cells}); got shape {lam_arr.shape}"
        )
    lams = np.broadcast_to(lam_arr.ravel(), (n_cells,)).copy()
    if not np.all(lams > 0):
        raise ValueError(f"lam must be > 0 (one value or one per cell); got {lam!r}")
    g, b = kernel.coefficients()
    p = kernel.branches()
    hsq = kernel.norm**2
    constant = np.full((1, T), 1.0 / np.sqrt(T))

    def solve_rows(Yr: np.ndarray, lr: np.ndarray, centre: bool, tol_r: float) -> list:
        Q = constant if centre else np.zeros((0, T))
        out = []
        for y, lam_i in zip(Yr, lr, strict=True):
            s, base = np.zeros(T), np.zeros(T)
            it, primal, gap, kkt = _ipm(np.ascontiguousarray(y), g, b, p, lam_i, hsq, Q, tol_r,
                                        max_iter, s, base, polish_at)  # fmt: skip
            out.append((s, float(base[0]), int(it), primal, gap, kkt))
        return out

    def forward(s: np.ndarray) -> np.ndarray:
        return _forward(s, p, np.empty(T))

    if isinstance(baseline, str):
        # the baseline models of the one-decay solver around this one (drift smoothed on the
        # scale of the slow decay)
        def work(i: int) -> tuple:
            rows = slice(i, i + 1)
            return baseline_models(x2[rows], baseline, lams[rows], noise[rows], solve_rows,
                                   forward, kernel.tau_decay2, kernel.fs, tol,
                                   drift_rounds)[0]  # fmt: skip

    else:
        B = np.asarray(baseline, dtype=np.float64)
        if B.ndim != 2 or B.shape[0] != T or not np.all(np.isfinite(B)):
            raise ValueError(
                f"a baseline basis must be a finite (T, m) array with T = {T} rows (one per "
                f"frame); got shape {B.shape}"
            )
        u, sv, _ = np.linalg.svd(B, full_matrices=False)
        if sv.size == 0 or sv[-1] <= 1e-10 * sv[0]:
            raise ValueError("the baseline basis has dependent columns: drop the redundant ones")
        Q = np.ascontiguousarray(u.T)

        def work(i: int) -> tuple:
            # solved about the trace's part in the basis, which holds the offset (as
            # baseline_models solves about the mean: the solver's sums keep their digits)
            part = Q.T @ (Q @ x2[i])
            s, base = np.zeros(T), np.zeros(T)
            it, primal, gap, kkt = _ipm(
                x2[i] - part, g, b, p, lams[i], hsq, Q, tol, max_iter, s, base, polish_at
            )
            return s, base + part, "basis", int(it), primal, gap, kkt

    workers = (os.cpu_count() or 1) if n_jobs == -1 else max(n_jobs, 1)
    if workers > 1 and n_cells > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(work, range(n_cells)))
    else:
        out = [work(i) for i in range(n_cells)]
    S = np.stack([o[0] for o in out])
    calcium = np.stack([forward(S[i]) for i in range(n_cells)])
    gap = np.array([o[5] for o in out])
    info = np.array([[o[3], o[4], o[5], o[6]] for o in out])
    base = np.stack([o[1] for o in out])
    kinds = [o[2] for o in out]

    def shape(a: np.ndarray) -> np.ndarray:
        return a[0] if one else a

    return DeconvolutionResult(
        spikes=shape(S),
        calcium=shape(calcium),
        baseline=shape(base),
        lam=lams,
        objective=info[:, 1].copy(),
        gap=gap.copy(),
        kkt=info[:, 3].copy(),
        iterations=info[:, 0].astype(int),
        converged=gap <= tol,
        baseline_kind=kinds,
        tau_rise=kernel.tau_rise,
        tau_decay=kernel.tau_decay,
        tau_decay2=kernel.tau_decay2,
        fraction=kernel.fraction,
        fs=kernel.fs,
        noise=noise,
        estimated={"kinetics": False, "lam": lam_estimated},
        time_s=time.perf_counter() - start,
    )


def two_decay_grid(
    tau_rise: float,
    fast: tuple[float, ...] = GRID_FAST,
    slow: tuple[float, ...] = GRID_SLOW,
    weights: tuple[float, ...] = GRID_WEIGHTS,
) -> list[tuple[float, float, float]]:
    """The kernels of the search, as ``(tau_decay, tau_decay2, fraction)``.

    One decay (``fraction = 1``) at every decay of either axis, then every fast decay with
    every slow one at least ``GRID_MIN_RATIO`` times longer and every weight; decays not longer
    than ``tau_rise`` left out.

    Examples
    --------
    >>> len(two_decay_grid(0.01)), two_decay_grid(0.01)[0]
    (108, (0.05, 0.05, 1.0))
    """
    one = [(t, t, 1.0) for t in sorted(set(fast) | set(slow)) if t > tau_rise]
    two = [
        (a, b, f)
        for a in fast
        if a > tau_rise
        for b in slow
        if b > GRID_MIN_RATIO * a
        for f in weights
    ]
    return one + two


def two_decay_criteria(
    traces: list[np.ndarray],
    fs: float,
    tau_rise: float,
    kernels: list[tuple[float, float, float]],
    *,
    noise: list[float] | None = None,
    n_jobs: int = 1,
) -> np.ndarray:
    """The search's criterion for each kernel: the residual whiteness, summed over the traces.

    Each trace is deconvolved with each kernel (:func:`deconvolve_two_decay`, a constant
    baseline, ``lam = REFINE_LAM_Z sigma ||h||`` as the one-decay search, to a gap of
    ``REFINE_TOL``, without the exact step on the support, as the one-decay search), and the
    criterion is :func:`nnfit.calcium.estimate.whiteness` of the residual, as
    :func:`nnfit.calcium.estimate.residual_whiteness` for one decay.

    Parameters
    ----------
    traces : list of numpy.ndarray
        The traces, each read whole.
    fs, tau_rise : float
        Sampling rate (Hz) and the kernels' rise (seconds).
    kernels : list of (tau_decay, tau_decay2, fraction)
        E.g. :func:`two_decay_grid`.
    noise : list of float, optional
        Each trace's noise level (default: from its spectrum).
    n_jobs : int
        Threads over the (kernel, trace) pairs; ``-1`` for all cores.

    Returns
    -------
    numpy.ndarray
        ``(len(kernels),)`` criteria; lower is whiter.
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    ys = [np.ascontiguousarray(y, dtype=np.float64) for y in traces]
    if noise is None:
        noise = [float(estimate_noise(y, fs)[0]) for y in ys]
    ks = [TwoDecayKernel(tau_rise, a, b, f, fs) for a, b, f in kernels]

    def one(pair: tuple[int, int]) -> float:
        k, i = ks[pair[0]], pair[1]
        lam = max(REFINE_LAM_Z * noise[i] * k.norm, LAM_FLOOR)
        res = deconvolve_two_decay(ys[i], k, lam, "constant", tol=REFINE_TOL, polish=False)
        return whiteness(ys[i] - res.calcium - res.baseline, fs)

    pairs = [(j, i) for j in range(len(ks)) for i in range(len(ys))]
    workers = (os.cpu_count() or 1) if n_jobs == -1 else max(int(n_jobs), 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            vals = list(pool.map(one, pairs))
    else:
        vals = [one(p) for p in pairs]
    return np.asarray(vals).reshape(len(ks), len(ys)).sum(axis=1)


def estimate_two_decay_kernel(
    traces: np.ndarray | list[np.ndarray],
    fs: float,
    *,
    tau_rise: float | None = None,
    n_jobs: int = 1,
) -> TwoDecayKernel:
    r"""A kernel with one rise and two decays, found from the fluorescence alone.

    The rise is nnfit's pooled estimate (:func:`nnfit.calcium.estimate_kinetics_pooled`)
    unless given; the decays and the fast decay's weight are those of the kernel of
    :func:`two_decay_grid` whose deconvolution residuals are whitest
    (:func:`two_decay_criteria`) over the traces the one-decay search reads
    (:func:`nnfit.calcium.estimate.search_traces`). The grid holds
    the one-decay kernels too, so a single decay is kept where the traces show no second one.

    Parameters
    ----------
    traces : array_like or list of array_like
        ``(cells, T)`` or a list of traces (e.g. recordings of different lengths).
    fs : float
        Sampling rate in Hz.
    tau_rise : float, optional
        The rise (seconds); estimated if not given.
    n_jobs : int
        Threads; ``-1`` for all cores.

    Returns
    -------
    TwoDecayKernel

    Notes
    -----
    About 100 kernels, each deconvolving up to ``REFINE_MAX_TRACES`` traces of up to
    ``REFINE_MAX_FRAMES`` frames: seconds to a minute per dataset on one core, bounded in
    frames whatever the recording's length. Measured on simulations and on four ground-truth
    datasets in ``docs/calcium/ground-truth.rst``; a neuropil left in the traces can be taken
    for a second, slow decay.

    Examples
    --------
    >>> k0 = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    >>> rng = np.random.default_rng(7)
    >>> s = (rng.random((2, 3600)) < 0.01) * (1 + rng.poisson(1, (2, 3600)))
    >>> y = np.stack([k0.forward(r) for r in s]) + 0.15 * rng.standard_normal((2, 3600))
    >>> k = estimate_two_decay_kernel(y, 60.0, tau_rise=0.02, n_jobs=2)
    >>> bool(k.tau_decay < 0.3 < 0.6 < k.tau_decay2), k.fraction
    (True, 0.7)
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    rows = [np.asarray(t, dtype=np.float64) for t in traces]
    if not rows or any(r.ndim != 1 for r in rows):
        raise ValueError("traces must be (cells, T) or a non-empty list of 1-D traces")
    if tau_rise is None:
        tau_rise = estimate_kinetics_pooled(rows, fs)[0]
    tau_rise = check_real("tau_rise", tau_rise, low=0.0, low_inclusive=False)
    sub = search_traces(rows, fs)
    if not sub:
        raise ValueError(
            f"the traces are too short to search for a second decay: it needs traces of at "
            f"least {search_min_frames(fs)} frames ({search_min_frames(fs) / fs:.3g} s at "
            f"{fs:g} Hz); "
            "give the kernel (tau_rise, tau_decay, tau_decay2, fraction) instead"
        )
    kernels = two_decay_grid(tau_rise)
    if not kernels:
        raise ValueError(
            f"tau_rise = {tau_rise} s is not shorter than the grid's decays (up to "
            f"{max(GRID_SLOW)} s): pass a shorter rise"
        )
    crit = two_decay_criteria(sub, fs, tau_rise, kernels, n_jobs=n_jobs)
    best = kernels[int(np.argmin(crit))]
    log.info(
        "two-decay kernel: rise %.4f s, decays %.3f s (%.0f %%) + %.3f s, criterion %.4f",
        tau_rise, best[0], 100 * best[2], best[1], float(crit.min()),
    )  # fmt: skip
    return TwoDecayKernel(tau_rise, *best, fs)
