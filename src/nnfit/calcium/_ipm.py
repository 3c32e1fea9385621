"""Compiled primal-dual interior-point solver for one trace or two side by side (used by
:mod:`nnfit.calcium.exact`).

Problem (``Pi`` centres the residual when the constant baseline is estimated jointly)::

    min_s  F(s) = 0.5 || Pi (y - K s) ||^2 + lam sum(s),   s >= 0

``K`` is the *truncated* kernel, applied exactly in O(T) by :mod:`nnfit.calcium.ar2`. Newton
systems ``(K^T Pi K + Z/S) dx = rhs`` are solved with the untruncated kernel, for which
``K^T K + D = G^-T (alpha^2 P + G^T D G) G^-1`` has a pentadiagonal middle factor (O(T) LDL^T),
and the baseline's rank-one term by Sherman-Morrison. The residuals are always computed with the
truncated kernel, so the iterates converge to the truncated problem's optimum; the stop is a
duality-gap certificate on the truncated problem, which bounds ``F(s) - F*`` rigorously.

One module, though long: the compiled kernels call each other and numba inlines across them
only within a module, and splitting the Newton step from its sweeps would cost a pass per
iteration.
"""

from __future__ import annotations

import numba
import numpy as np

from nnfit.calcium.ar2 import _adjoint, _forward, _g_mul, _gt_mul
from nnfit.calcium.doubledouble import dd_add, dd_div, dd_mul, two_prod

#: fraction of the step to the boundary (Mehrotra)
STEP_FRACTION = 0.995
#: relative gap below which a step that does not halve the gap ends the iterations
STALL_GAP = 1e-6
#: the start: every spike at this many times the rate that explains the trace's standard
#: deviation, z = lam (1-10 all within one iteration on simulations; 3 saves one on average)
START_SCALE = 3.0
#: the exact step's first guess of the support: the entries whose barrier weight z / s is below
#: this many times the kernel's energy (the Hessian's diagonal). On simulations (5 kinetics and
#: noise levels, with and without baseline, 2 x 40 traces) 1 gave the final support in 80 of 80
#: and 1.7-2.0 rounds on average, 1e3 78 of 80 and 2.05-2.15 rounds, 0.1-0.3 76 of 80
SUPPORT_RATIO = 1.0
#: a trace still running after this many iterations factors in double-double for the rest of
#: its solve (:func:`_penta_factor_precise`); the traces that stop before are solved exactly as
#: without it
PRECISE_AFTER = 30
#: ... and every trace does from the start where ``(1 - d)(1 - r)``, the smooth directions' share
#: of ``G``, is below this: the double factor then keeps fewer than about 8 digits there
#: (``eps |G|^2 / ((1 - d)(1 - r))^2``), and a switch after 30 iterations comes too late for
#: half of those traces (GCaMP6s-like at 120-158 Hz: 13 of 24 certified with the switch alone,
#: 24 of 24 from the start; at 60 Hz and for faster kinetics nothing changes)
PRECISE_ROOTS = 3e-4


#: Newton directions only: the certificate (primal, dual, residuals) never uses these flags, so
#: contraction to fused multiply-adds cannot change what is certified, only the search path
_DIR_MATH = {"contract"}


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH)
def _penta_factor(Dg, alpha2, g1, g2, dd, l1, l2):  # pragma: no cover - compiled
    """LDL^T of ``alpha^2 P + G^T diag(Dg) G`` (pentadiagonal); ``dd`` gets ``1 / D``.

    Written on the numerators ``e_i = l1[i] D_i`` and ``a2_i = l2[i] D_i`` so that the chain from
    one pivot to the next is one division, one multiply and one subtraction:
    ``D_i = (a0_i - l2[i-2] a2_(i-2)) - e_(i-1)^2 / D_(i-1)``, ``e_i = a1_i - l2[i-1] e_(i-1)``.
    """
    T = Dg.shape[0]
    g11 = g1 * g1
    g22 = g2 * g2
    g12 = g1 * g2
    e1 = 0.0  # e_(i-1)
    inv1 = 0.0  # 1 / D_(i-1)
    l2m1 = 0.0  # l2[i-1]
    l2m2 = 0.0  # l2[i-2]
    a2m2 = 0.0  # a2_(i-2)
    a2m1 = 0.0  # a2_(i-1)
    for i in range(T):
        a0 = Dg[i] + (alpha2 if i < T - 1 else 0.0)
        a1 = 0.0
        a2 = 0.0
        if i + 1 < T:
            a0 += g11 * Dg[i + 1]
            a1 = -g1 * Dg[i + 1]
        if i + 2 < T:
            a0 += g22 * Dg[i + 2]
            a1 += g12 * Dg[i + 2]
            a2 = -g2 * Dg[i + 2]
        di = (a0 - l2m2 * a2m2) - (e1 * e1) * inv1
        e = a1 - l2m1 * e1
        inv = 1.0 / di
        dd[i] = inv  # stored inverted: the solves multiply
        li2 = a2 * inv
        l1[i] = e * inv
        l2[i] = li2
        e1 = e
        inv1 = inv
        l2m2 = l2m1
        l2m1 = li2
        a2m2 = a2m1
        a2m1 = a2


@numba.njit(cache=True, error_model="numpy")
def _penta_factor_precise(Dg, alpha2, g1, g2, dd, l1, l2):  # pragma: no cover - compiled
    """:func:`_penta_factor` in double-double arithmetic, rounded to double into its arrays.

    With both roots near 1 (slow kinetics at high frame rates) the smooth directions of ``G^T D
    G`` fall below the double factor's rounding where the barrier weights span many orders, and
    the Newton directions stop improving the gap: on CaLab's GCaMP6s preset at 120-158 Hz 10 of
    24 cells stopped uncertified (gaps 2.5e-8 to 9.8e-6, 83-89 iterations); with this factor
    24 of 24 certified in 19-25 (docs/calcium/limitations.rst).
    """
    T = Dg.shape[0]
    g11h, g11l = two_prod(g1, g1)
    g22h, g22l = two_prod(g2, g2)
    g12h, g12l = two_prod(g1, g2)
    e1h = e1l = inv1h = inv1l = 0.0  # e_(i-1), 1 / D_(i-1)
    l2m1h = l2m1l = l2m2h = l2m2l = 0.0  # l2[i-1], l2[i-2]
    a2m1h = a2m1l = a2m2h = a2m2l = 0.0  # a2_(i-1), a2_(i-2)
    for i in range(T):
        a0h, a0l = Dg[i], 0.0
        if i < T - 1:
            a0h, a0l = dd_add(a0h, a0l, alpha2, 0.0)
        a1h = a1l = a2h = a2l = 0.0
        if i + 1 < T:
            th, tl = dd_mul(g11h, g11l, Dg[i + 1], 0.0)
            a0h, a0l = dd_add(a0h, a0l, th, tl)
            a1h, a1l = two_prod(-g1, Dg[i + 1])
        if i + 2 < T:
            th, tl = dd_mul(g22h, g22l, Dg[i + 2], 0.0)
            a0h, a0l = dd_add(a0h, a0l, th, tl)
            th, tl = dd_mul(g12h, g12l, Dg[i + 2], 0.0)
            a1h, a1l = dd_add(a1h, a1l, th, tl)
            a2h, a2l = two_prod(-g2, Dg[i + 2])
        # D_i = (a0_i - l2[i-2] a2_(i-2)) - e_(i-1)^2 / D_(i-1), e_i = a1_i - l2[i-1] e_(i-1)
        th, tl = dd_mul(l2m2h, l2m2l, a2m2h, a2m2l)
        dh, dl = dd_add(a0h, a0l, -th, -tl)
        th, tl = dd_mul(e1h, e1l, e1h, e1l)
        th, tl = dd_mul(th, tl, inv1h, inv1l)
        dh, dl = dd_add(dh, dl, -th, -tl)
        th, tl = dd_mul(l2m1h, l2m1l, e1h, e1l)
        eh, el = dd_add(a1h, a1l, -th, -tl)
        invh, invl = dd_div(1.0, 0.0, dh, dl)
        li2h, li2l = dd_mul(a2h, a2l, invh, invl)
        dd[i] = invh
        l1[i] = dd_mul(eh, el, invh, invl)[0]
        l2[i] = li2h
        e1h, e1l, inv1h, inv1l = eh, el, invh, invl
        l2m2h, l2m2l, l2m1h, l2m1l = l2m1h, l2m1l, li2h, li2l
        a2m2h, a2m2l, a2m1h, a2m1l = a2m1h, a2m1l, a2h, a2l


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH)
def _penta_solve(dd, l1, l2, b, x):  # pragma: no cover - compiled
    T = b.shape[0]
    y1 = 0.0
    y2 = 0.0
    for i in range(T):
        v = b[i]
        if i >= 2:
            v -= l2[i - 2] * y2
        if i >= 1:
            v -= l1[i - 1] * y1
        y2 = y1
        y1 = v
        x[i] = v * dd[i]
    for i in range(T - 1, -1, -1):
        v = x[i]
        if i + 2 < T:
            v -= l2[i] * x[i + 2]
        if i + 1 < T:
            v -= l1[i] * x[i + 1]
        x[i] = v


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH)
def _newton_solve(dd, l1, l2, g1, g2, rhs, tmp, tmp2, out):  # pragma: no cover - compiled
    """out = (K_full^T K_full + D)^-1 rhs = G M^-1 G^T rhs, in two fused passes.

    Forward: ``b = G^T rhs`` on the fly and ``L y = b``, ``tmp = D^-1 y``. Backward:
    ``L^T w = tmp`` and ``out = G w``, each ``out[i+2]`` finished as soon as ``w[i]`` is known.
    ``tmp2`` is unused (kept for the signature). ``out`` may alias ``rhs``.
    """
    T = rhs.shape[0]
    if T < 4:
        _gt_mul(rhs, g1, g2, tmp)
        _penta_solve(dd, l1, l2, tmp, tmp2)
        _g_mul(tmp2, g1, g2, out)
        return
    # forward sweep, first two rows peeled
    b = rhs[0] - g1 * rhs[1] - g2 * rhs[2]
    y2 = b
    tmp[0] = b * dd[0]
    b = rhs[1] - g1 * rhs[2] - g2 * rhs[3]
    y1 = b - l1[0] * y2
    tmp[1] = y1 * dd[1]
    for i in range(2, T - 2):
        b = rhs[i] - g1 * rhs[i + 1] - g2 * rhs[i + 2]
        v = (b - l2[i - 2] * y2) - l1[i - 1] * y1
        y2 = y1
        y1 = v
        tmp[i] = v * dd[i]
    b = rhs[T - 2] - g1 * rhs[T - 1]
    v = (b - l2[T - 4] * y2) - l1[T - 3] * y1
    y2 = y1
    y1 = v
    tmp[T - 2] = v * dd[T - 2]
    v = (rhs[T - 1] - l2[T - 3] * y2) - l1[T - 2] * y1
    tmp[T - 1] = v * dd[T - 1]
    _newton_back(l1, l2, g1, g2, tmp, out)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH)
def _newton_back(l1, l2, g1, g2, tmp, out):  # pragma: no cover - compiled
    """The backward half of :func:`_newton_solve` (``T >= 4``): ``L^T w = tmp``, ``out = G w``."""
    T = tmp.shape[0]
    # backward sweep: w[i] = (tmp[i] - l2[i] w[i+2]) - l1[i] w[i+1]; out[i+2] = G w
    w2 = tmp[T - 1]  # w[i+1] for i = T-2
    w1 = tmp[T - 2] - l1[T - 2] * w2  # w[T-2]
    # w1 = w[i+1], w2 = w[i+2] for i = T-3
    for i in range(T - 3, -1, -1):
        w = (tmp[i] - l2[i] * w2) - l1[i] * w1
        out[i + 2] = w2 - g1 * w1 - g2 * w
        w2 = w1
        w1 = w
    out[1] = w2 - g1 * w1
    out[0] = w1


@numba.njit(cache=True, error_model="numpy")
def _newton_solve_ref(dd, l1, l2, g1, g2, rhs, tmp, tmp2, out):  # pragma: no cover - compiled
    """Unfused reference of :func:`_newton_solve` (tests)."""
    _gt_mul(rhs, g1, g2, tmp)
    _penta_solve(dd, l1, l2, tmp, tmp2)
    _g_mul(tmp2, g1, g2, out)


@numba.njit(cache=True, error_model="numpy")
def _residual(y, s, centre, p, Ks, r):  # pragma: no cover - compiled
    g1, g2, alpha, d, rr, dK, rK, K = p
    _forward(s, g1, g2, alpha, d, rr, dK, rK, K, Ks)
    T = y.shape[0]
    m = 0.0
    for t in range(T):
        r[t] = y[t] - Ks[t]
        m += r[t]
    m /= T
    if centre:
        for t in range(T):
            r[t] -= m
    return m


@numba.njit(inline="always")
def _cert_terms(yt, st, rt, kt, lam, rr, yr, ssum, vmax, kkt):  # pragma: no cover - compiled
    """One frame's share of :func:`_certificate`'s sums; also returns the gradient there."""
    rr += rt * rt
    yr += yt * rt
    ssum += st
    if kt > vmax:
        vmax = kt
    g = lam - kt  # gradient of F
    if st > 0.0:
        v = abs(g)
    else:
        v = -g if g < 0.0 else 0.0
    if v > kkt:
        kkt = v
    return rr, yr, ssum, vmax, kkt, g


@numba.njit(inline="always")
def _cert_value(rr, yr, ssum, vmax, kkt, lam):  # pragma: no cover - compiled
    primal = 0.5 * rr + lam * ssum
    theta = 1.0
    if vmax > lam:
        theta = lam / vmax
    dual = theta * yr - 0.5 * theta * theta * rr
    return primal, dual, kkt / lam


@numba.njit(cache=True, error_model="numpy")
def _certificate(y, s, r, KTr, lam):  # pragma: no cover - compiled
    """Primal value, dual value and KKT violation at (s, r = Pi (y - K s)), K^T r given.

    The dual point is ``theta r`` with ``theta = min(1, lam / max K^T r)`` (feasible:
    ``K^T theta r <= lam``), so ``primal - dual >= F(s) - F*``.
    """
    rr = 0.0
    yr = 0.0
    ssum = 0.0
    vmax = -np.inf
    kkt = 0.0
    for t in range(y.shape[0]):
        rr, yr, ssum, vmax, kkt, _ = _cert_terms(
            y[t], s[t], r[t], KTr[t], lam, rr, yr, ssum, vmax, kkt
        )
    return _cert_value(rr, yr, ssum, vmax, kkt, lam)


# rows of one trace's workspace: :func:`ipm_traces` gives every trace one (_NW, T) array, so
# that two traces run through the same sweeps with one argument each
_S, _GRAD, _KVEC, _Z, _R, _DG, _INVS, _INVZ, _DD, _L1, _L2, _TMP = range(12)
_RHS, _DX, _DZ, _MK, _SC = range(12, 17)
_NW = 17
#: the rows from here on are free once the iterations end: the exact step's scratch
_SCRATCH = 3
# rows that share storage, each pair never alive at once: the predictor's direction replaces
# the last step's (taken by then), the final point's K s and K^T r come after the last step,
# and the corrector's sc is free where M^-1 kvec and the in-loop exact step need scratch
_DXA, _DZA, _KS, _KTR, _TMP2 = _DX, _DZ, _DX, _DZ, _SC

# Each sweep is written once, as the body of one step (``*_step``, state in and out as a
# tuple, inlined), and driven by two loops: one trace, or two traces interleaved step by step.
# The sweeps are recursions whose every step waits for the last (latency-bound); two
# independent recursions in one loop overlap, so two traces cost little more than one. Each
# trace's arithmetic is the same in both loops, so the results are bit-identical.


@numba.njit(inline="always")
def _adjoint_certify_step(t, y, s, z, r, m, lam, p, grad, Dg, inv_s, inv_z, st):  # pragma: no cover
    g1, g2, alpha, d, rd, dK, rK, K = p
    x1, x2, fd, fr, rr, yr, ssum, vmax, kkt, mu = st
    T = y.shape[0]
    v = r[t + 1] - m if t + 1 < T else 0.0
    x = v + g1 * x1 + g2 * x2
    x2 = x1
    x1 = x
    w = alpha * x
    if t + K < T:
        u = r[t + K] - m
        fd = d * fd + u
        fr = rd * fr + u
        w -= dK * fd - rK * fr
    sv = s[t]
    rr, yr, ssum, vmax, kkt, g = _cert_terms(y[t], sv, r[t] - m, w, lam, rr, yr, ssum, vmax, kkt)
    grad[t] = g
    mu += sv * z[t]
    inv = 1.0 / sv
    inv_s[t] = inv
    Dg[t] = z[t] * inv
    inv_z[t] = 1.0 / z[t]
    return (x1, x2, fd, fr, rr, yr, ssum, vmax, kkt, mu)


@numba.njit(inline="always")
def _adjoint_certify_end(st, lam, T):  # pragma: no cover - compiled
    rr, yr, ssum, vmax, kkt, mu = st[4], st[5], st[6], st[7], st[8], st[9]
    primal, dual, kkt = _cert_value(rr, yr, ssum, vmax, kkt, lam)
    return primal, dual, kkt, mu / T


@numba.njit(cache=True, error_model="numpy", _nrt=False)
def _adjoint_certify(y, s, z, r, m, lam, p, grad, Dg, inv_s, inv_z):  # pragma: no cover
    """``K^T (r - m)`` (the recursion of :func:`nnfit.calcium.ar2._adjoint`, not stored), the
    certificate of :func:`_certificate` at the residual ``r - m`` and the Newton system's
    inputs, in one backward pass (``m``: the mean that centres the residual, or 0).

    ``grad = lam - K^T r``, ``Dg = z / s``, ``inv_s = 1 / s``, ``inv_z = 1 / z``. Returns
    (primal, dual, kkt, mu) with ``mu = mean(s z)``.
    """
    T = y.shape[0]
    st = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -np.inf, 0.0, 0.0)
    for t in range(T - 1, -1, -1):
        st = _adjoint_certify_step(t, y, s, z, r, m, lam, p, grad, Dg, inv_s, inv_z, st)
    return _adjoint_certify_end(st, lam, T)


@numba.njit(inline="always")
def _step_residual_step(t, y, s, z, dx, dz, a, p, r, st):  # pragma: no cover - compiled
    g1, g2, alpha, d, rr, dK, rK, K = p
    c1, c2, ed, er, m = st
    sv = s[t] + a * dx[t]
    if sv <= 0.0:
        sv = 1e-300
    s[t] = sv
    zt = z[t] + a * dz[t]
    if zt <= 0.0:
        zt = 1e-300
    z[t] = zt
    v = alpha * c1
    if t >= K:
        x = s[t - K]
        ed = d * ed + x
        er = rr * er + x
        v -= dK * ed - rK * er
    rt = y[t] - v
    r[t] = rt
    m += rt
    c = g1 * c1 + g2 * c2 + sv
    return (c, c1, ed, er, m)


@numba.njit(cache=True, error_model="numpy", _nrt=False)
def _step_residual(y, s, z, dx, dz, a, p, r):  # pragma: no cover - compiled
    """Take the step (``s += a dx``, ``z += a dz``, kept > 0), then ``r = y - K s`` at the new
    ``s``, in one forward pass (the recursion of :func:`nnfit.calcium.ar2._forward`); returns
    the mean of ``r``, which :func:`_adjoint_certify` subtracts where the baseline is fitted."""
    T = y.shape[0]
    st = (0.0, 0.0, 0.0, 0.0, 0.0)
    for t in range(T):
        st = _step_residual_step(t, y, s, z, dx, dz, a, p, r, st)
    return st[4] / T


@numba.njit(inline="always")
def _factor_forward_step(
    i, Dg, alpha2, g1, g2, dd, l1, l2, factor, rhs, tmp, st
):  # pragma: no cover
    # with factor, row i of the LDL^T is formed here; without, it is read (a second right-hand
    # side behind the first)
    e1, inv1, l2m1, l2m2, a2m2, a2m1, l1m1, y1, y2, r0, r1, r2 = st
    T = rhs.shape[0]
    if factor:
        a0 = Dg[i] + (alpha2 if i < T - 1 else 0.0)
        a1 = 0.0
        a2 = 0.0
        if i + 1 < T:
            a0 += (g1 * g1) * Dg[i + 1]
            a1 = -g1 * Dg[i + 1]
        if i + 2 < T:
            a0 += (g2 * g2) * Dg[i + 2]
            a1 += (g1 * g2) * Dg[i + 2]
            a2 = -g2 * Dg[i + 2]
        di = (a0 - l2m2 * a2m2) - (e1 * e1) * inv1
        e = a1 - l2m1 * e1
        inv = 1.0 / di
        dd[i] = inv
        li1 = e * inv
        li2 = a2 * inv
        l1[i] = li1
        l2[i] = li2
        e1 = e
        inv1 = inv
        a2m2 = a2m1
        a2m1 = a2
    else:
        inv = dd[i]
        li1 = l1[i]
        li2 = l2[i]
    b = r0 - g1 * r1 - g2 * r2
    v = (b - l2m2 * y2) - l1m1 * y1
    y2 = y1
    y1 = v
    tmp[i] = v * inv
    r2n = rhs[i + 3] if i + 3 < T else 0.0
    return (e1, inv1, li2, l2m1, a2m2, a2m1, li1, y1, y2, r1, r2, r2n)


@numba.njit(inline="always")
def _factor_forward_start(rhs):  # pragma: no cover - compiled
    T = rhs.shape[0]
    r1 = rhs[1] if T > 1 else 0.0  # rhs[i+1]
    r2 = rhs[2] if T > 2 else 0.0  # rhs[i+2]
    return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, rhs[0], r1, r2)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _factor_forward(
    Dg, alpha2, g1, g2, dd, l1, l2, rhs, tmp, rhs2=None, tmp2=None, precise=False
):  # pragma: no cover - compiled
    """The forward half of :func:`_newton_solve` for ``rhs``, with the LDL^T of
    :func:`_penta_factor` formed in the same pass: row ``i`` of the elimination needs only
    the factor's rows up to ``i``. With ``rhs2``, its forward half too (into ``tmp2``), from
    each row of the factor as it is formed. With ``precise``, the factor is
    :func:`_penta_factor_precise`'s, formed first."""
    st = _factor_forward_start(rhs)
    st2 = st if rhs2 is None else _factor_forward_start(rhs2)
    if precise:
        _penta_factor_precise(Dg, alpha2, g1, g2, dd, l1, l2)
    for i in range(rhs.shape[0]):
        st = _factor_forward_step(i, Dg, alpha2, g1, g2, dd, l1, l2, not precise, rhs, tmp, st)
        if rhs2 is not None:
            st2 = _factor_forward_step(i, Dg, alpha2, g1, g2, dd, l1, l2, False, rhs2, tmp2, st2)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _factor_forward2(wa, wb, alpha2, g1, g2, second):  # pragma: no cover - compiled
    """:func:`_factor_forward` of ``grad`` (and with ``second`` of ``kvec``, into ``rhs``) for
    two traces at once."""
    sa = _factor_forward_start(wa[_GRAD])
    sb = _factor_forward_start(wb[_GRAD])
    ka = _factor_forward_start(wa[_KVEC])
    kb = _factor_forward_start(wb[_KVEC])
    for i in range(wa.shape[1]):
        sa = _factor_forward_step(
            i, wa[_DG], alpha2, g1, g2, wa[_DD], wa[_L1], wa[_L2], True, wa[_GRAD], wa[_TMP], sa
        )
        sb = _factor_forward_step(
            i, wb[_DG], alpha2, g1, g2, wb[_DD], wb[_L1], wb[_L2], True, wb[_GRAD], wb[_TMP], sb
        )
        if second:
            ka = _factor_forward_step(
                i, wa[_DG], alpha2, g1, g2, wa[_DD], wa[_L1], wa[_L2], False, wa[_KVEC], wa[_RHS],
                ka,
            )  # fmt: skip
            kb = _factor_forward_step(
                i, wb[_DG], alpha2, g1, g2, wb[_DD], wb[_L1], wb[_L2], False, wb[_KVEC], wb[_RHS],
                kb,
            )  # fmt: skip


@numba.njit(inline="always")
def _predictor_back_step(
    i, l1, l2, g1, g2, tmp, s, z, inv_s, inv_z, centre, Mk, ca, dxa, dza, st
):  # pragma: no cover - compiled
    ms, mz, sxz, szz, sxx, w1, w2 = st  # w1 = w[i+1], w2 = w[i+2]
    T = tmp.shape[0]
    w = (tmp[i] - l2[i] * w2) - l1[i] * w1 if i >= 0 else 0.0
    j = i + 2
    if j < T:  # u[j] = (G w)[j] is final
        dx = -(w2 - g1 * w1 - g2 * w)
        if centre:
            dx += Mk[j] * ca
        dxa[j] = dx
        zj = z[j]
        dz = -zj - (zj * inv_s[j]) * dx
        dza[j] = dz
        v = -dx * inv_s[j]
        ms = v if v > ms else ms
        v = -dz * inv_z[j]
        mz = v if v > mz else mz
        sxz += dx * z[j]
        szz += s[j] * dz
        sxx += dx * dz
    return (ms, mz, sxz, szz, sxx, w, w1)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _predictor_back(
    l1, l2, g1, g2, tmp, s, z, inv_s, inv_z, centre, Mk, ca, dxa, dza
):  # pragma: no cover - compiled
    """Backward half of :func:`_newton_solve` for the predictor, each entry finished on the way.

    With ``u = M^-1 grad`` from the sweep: ``dxa = Mk ca - u`` (``Mk`` read only with
    ``centre``) and ``dza = -z - (z / s) dxa``.
    Returns the steps to the boundary of ``s`` and ``z`` and the sums of ``dxa z``,
    ``s dza`` and ``dxa dza``, from which ``mean((s + ap dxa)(z + ad dza))`` follows for any
    steps without another pass.
    """
    st = (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for i in range(tmp.shape[0] - 1, -3, -1):
        st = _predictor_back_step(
            i, l1, l2, g1, g2, tmp, s, z, inv_s, inv_z, centre, Mk, ca, dxa, dza, st
        )
    return 1.0 / st[0], 1.0 / st[1], st[2], st[3], st[4]


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _predictor_back2(wa, wb, g1, g2, centre, ca, cb):  # pragma: no cover - compiled
    """:func:`_predictor_back` for two traces at once (baseline coefficients ``ca``, ``cb``)."""
    sa = (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    sb = sa
    for i in range(wa.shape[1] - 1, -3, -1):
        sa = _predictor_back_step(
            i,
            wa[_L1],
            wa[_L2],
            g1,
            g2,
            wa[_TMP],
            wa[_S],
            wa[_Z],
            wa[_INVS],
            wa[_INVZ],
            centre,
            wa[_MK],
            ca,
            wa[_DXA],
            wa[_DZA],
            sa,
        )
        sb = _predictor_back_step(
            i,
            wb[_L1],
            wb[_L2],
            g1,
            g2,
            wb[_TMP],
            wb[_S],
            wb[_Z],
            wb[_INVS],
            wb[_INVZ],
            centre,
            wb[_MK],
            cb,
            wb[_DXA],
            wb[_DZA],
            sb,
        )
    return (
        (1.0 / sa[0], 1.0 / sa[1], sa[2], sa[3], sa[4]),
        (1.0 / sb[0], 1.0 / sb[1], sb[2], sb[3], sb[4]),
    )


@numba.njit(inline="always")
def _corrector_forward_step(
    j, dd, l1, l2, g1, g2, s, z, dxa, dza, grad, inv_s, sm, centre, Mk, sc, tmp, st
):  # pragma: no cover - compiled
    kr, y1, y2, r0, r1, r2 = st
    T = s.shape[0]
    k = j + 2  # rhs[k] enters
    if k < T:
        rc = s[k] * z[k] + dxa[k] * dza[k] - sm
        sc[k] = rc
        rk = -(grad[k] - z[k]) - rc * inv_s[k]
        if centre:
            kr += Mk[k] * rk
    else:
        rk = 0.0
    r0 = r1
    r1 = r2
    r2 = rk
    if j >= 0:
        b = r0 - g1 * r1 - g2 * r2
        v = b
        if j >= 2:
            v -= l2[j - 2] * y2
        if j >= 1:
            v -= l1[j - 1] * y1
        y2 = y1
        y1 = v
        tmp[j] = v * dd[j]
    return (kr, y1, y2, r0, r1, r2)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _corrector_forward(
    dd, l1, l2, g1, g2, s, z, dxa, dza, grad, inv_s, sm, centre, Mk, sc, tmp
):  # pragma: no cover - compiled
    """Forward half of :func:`_newton_solve` for the corrector, its right-hand side formed on
    the way: ``sc = s z + dxa dza - sm``, ``rhs = -(grad - z) - sc / s``. Returns ``Mk . rhs``
    (``= kvec . M^-1 rhs``, M symmetric: the baseline's correction before the solve ends)."""
    st = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for j in range(-2, s.shape[0]):
        st = _corrector_forward_step(
            j, dd, l1, l2, g1, g2, s, z, dxa, dza, grad, inv_s, sm, centre, Mk, sc, tmp, st
        )
    return st[0]


@numba.njit(inline="always")
def _corrector_back_step(
    i, l1, l2, g1, g2, tmp, z, inv_s, inv_z, sc, centre, Mk, c, dx, dz, st
):  # pragma: no cover - compiled
    m, w1, w2 = st
    T = tmp.shape[0]
    w = (tmp[i] - l2[i] * w2) - l1[i] * w1 if i >= 0 else 0.0
    j = i + 2
    if j < T:
        d = w2 - g1 * w1 - g2 * w
        if centre:
            d += Mk[j] * c
        dx[j] = d
        e = -(sc[j] + z[j] * d) * inv_s[j]
        dz[j] = e
        v = -d * inv_s[j]
        m = v if v > m else m
        v = -e * inv_z[j]
        m = v if v > m else m
    return (m, w, w1)


@numba.njit(cache=True, error_model="numpy", fastmath=_DIR_MATH, _nrt=False)
def _corrector_back(
    l1, l2, g1, g2, tmp, z, inv_s, inv_z, sc, centre, Mk, c, dx, dz
):  # pragma: no cover
    """Backward half for the corrector: ``dx = M^-1 rhs + Mk c``, ``dz = -(sc + z dx) / s``,
    each entry as it is finished; returns the step to the boundary of both."""
    st = (1.0, 0.0, 0.0)
    for i in range(tmp.shape[0] - 1, -3, -1):
        st = _corrector_back_step(
            i, l1, l2, g1, g2, tmp, z, inv_s, inv_z, sc, centre, Mk, c, dx, dz, st
        )
    return 1.0 / st[0]


@numba.njit(cache=True, error_model="numpy")
def _apply_h(x, centre, p, tmp, out):  # pragma: no cover - compiled
    """out = K^T Pi K x (Pi centres when ``centre``)."""
    g1, g2, alpha, d, rr, dK, rK, K = p
    _forward(x, g1, g2, alpha, d, rr, dK, rK, K, tmp)
    if centre:
        m = tmp.mean()
        for t in range(tmp.shape[0]):
            tmp[t] -= m
    _adjoint(tmp, g1, g2, alpha, d, rr, dK, rK, K, out)


@numba.njit(cache=True, error_model="numpy")
def _precondition(
    res, mask, centre, dd, l1, l2, g1, g2, kvec, Mk, den, tmp, tmp2, zv
):  # pragma: no cover - compiled
    """zv = M^-1 res on the support (0 off it); returns res . zv.

    ``M`` is the factored untruncated Newton matrix; with ``centre`` the baseline direction
    is removed by Sherman-Morrison (``Mk = M^-1 k``, ``den = T - k . Mk``).
    """
    _newton_solve(dd, l1, l2, g1, g2, res, tmp, tmp2, zv)
    T = res.shape[0]
    if centre:
        c = 0.0
        for t in range(T):
            c += kvec[t] * zv[t]
        c /= den
        for t in range(T):
            zv[t] += Mk[t] * c
    rz = 0.0
    for t in range(T):
        if not mask[t]:
            zv[t] = 0.0
        rz += res[t] * zv[t]
    return rz


@numba.njit(cache=True, error_model="numpy")
def _polish(
    y, s, grad, thr, hsq, lam, centre, p, kvec, max_rounds, work, cg_tol=1e-12, precise=False
):
    """Newton step restricted to the support, by preconditioned CG; returns the new s
    (``work``: 14 rows of scratch).

    The support is ``{grad < s thr}``. The preconditioner is the untruncated Newton matrix with
    barrier weights ~0 on the support and huge off it, i.e. (to 1e-8) the inverse of the
    restricted Hessian; CG with the exact truncated operator removes the rest. Entries that
    turn negative leave the support and the step is repeated (``max_rounds``).
    """
    g1, g2, alpha = p[0], p[1], p[2]
    T = y.shape[0]
    x = np.zeros(T)
    mask = np.zeros(T, dtype=np.bool_)
    s1 = np.zeros(T)
    for t in range(T):
        if grad[t] < s[t] * thr:
            mask[t] = True
            s1[t] = s[t]
    dd, l1, l2, Dg, Mk = work[0], work[1], work[2], work[3], work[4]
    Ks, r, KTr, res, zv = work[5], work[6], work[7], work[8], work[9]
    pv, Ap, tmp, tmp2 = work[10], work[11], work[12], work[13]
    Mk[:] = 0.0
    den = float(T)
    for _round in range(max_rounds):
        for t in range(T):
            Dg[t] = 1e-12 * hsq if mask[t] else 1e8 * hsq
        if precise:
            _penta_factor_precise(Dg, alpha * alpha, g1, g2, dd, l1, l2)
        else:
            _penta_factor(Dg, alpha * alpha, g1, g2, dd, l1, l2)
        if centre:
            _newton_solve(dd, l1, l2, g1, g2, kvec, tmp, tmp2, Mk)
            kMk = 0.0
            for t in range(T):
                kMk += kvec[t] * Mk[t]
            den = T - kMk
        _residual(y, s1, centre, p, Ks, r)
        _adjoint(r, g1, g2, p[2], p[3], p[4], p[5], p[6], p[7], KTr)
        gnorm = 0.0
        for t in range(T):
            res[t] = (KTr[t] - lam) if mask[t] else 0.0  # = -grad on the support
            x[t] = 0.0
            gnorm = max(gnorm, abs(res[t]))
        if gnorm <= cg_tol * lam:
            break
        rz = _precondition(res, mask, centre, dd, l1, l2, g1, g2, kvec, Mk, den, tmp, tmp2, zv)
        for t in range(T):
            pv[t] = zv[t]
        for _cg in range(30):
            _apply_h(pv, centre, p, tmp, Ap)
            pAp = 0.0
            for t in range(T):
                if not mask[t]:
                    Ap[t] = 0.0
                pAp += pv[t] * Ap[t]
            if not (pAp > 0.0):
                break
            a = rz / pAp
            rmax = 0.0
            for t in range(T):
                x[t] += a * pv[t]
                res[t] -= a * Ap[t]
                rmax = max(rmax, abs(res[t]))
            if rmax <= cg_tol * lam:
                break
            rz_new = _precondition(
                res, mask, centre, dd, l1, l2, g1, g2, kvec, Mk, den, tmp, tmp2, zv
            )
            beta = rz_new / rz
            rz = rz_new
            for t in range(T):
                pv[t] = zv[t] + beta * pv[t]
        neg = False
        for t in range(T):
            if mask[t]:
                v = s1[t] + x[t]
                if v <= 0.0:
                    mask[t] = False
                    s1[t] = 0.0
                    neg = True
                else:
                    s1[t] = v
        if not neg:
            break
    return s1


@numba.njit(cache=True, error_model="numpy")
def _finish(y, p, lam, hsq, centre, tol, it, gap, best_gap, best_primal, factored, w, s_out):
    """The final point of one trace once its iterations have ended; returns (iterations,
    primal, gap, kkt, baseline) and puts the spikes in ``s_out`` (the best iterate on entry)."""
    g1, g2, alpha, d, rr_, dK, rK, K = p
    T = y.shape[0]
    s, grad, Ks, r, KTr, tmp, kvec = w[_S], w[_GRAD], w[_KS], w[_R], w[_KTR], w[_TMP], w[_KVEC]
    # First the exact Newton step on the support the best iterate shows; where it certifies,
    # it is the answer (the gradient of the last iterate is at hand when that is the best).
    if factored and best_gap > 0.0:
        if gap != best_gap:
            for t in range(T):
                s[t] = s_out[t]
            _residual(y, s, centre, p, Ks, r)
            _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
            for t in range(T):
                grad[t] = lam - KTr[t]
        s_pol = _polish(y, s, grad, SUPPORT_RATIO * hsq, hsq, lam, centre, p, kvec, 8, w[_SCRATCH:])
        base = _residual(y, s_pol, centre, p, Ks, r)
        _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
        p3, d3, k3 = _certificate(y, s_pol, r, KTr, lam)
        if p3 - d3 < best_gap and p3 - d3 <= tol * abs(p3) and p3 <= best_primal * (1.0 + 1e-15):
            for t in range(T):
                s_out[t] = s_pol[t]
            if not centre:
                base = 0.0
            return it, p3, p3 - d3, k3, base
    # Otherwise the best certified iterate. Interior iterates are strictly positive; set the
    # entries the barrier pins at the bound (grad / s above a threshold) to exact zeros, most
    # aggressive first, and keep the first version whose certificate still passes.
    for t in range(T):
        s[t] = s_out[t]
    _residual(y, s, centre, p, Ks, r)
    _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
    primal, dual, kkt = _certificate(y, s, r, KTr, lam)
    gap = primal - dual
    for t in range(T):
        grad[t] = lam - KTr[t]
    for thr in (hsq, 1e6 * hsq, 1e9 * hsq, 1e12 * hsq):
        for t in range(T):
            tmp[t] = s[t] if grad[t] < s[t] * thr else 0.0
        _residual(y, tmp, centre, p, Ks, r)
        _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
        p2, d2, k2 = _certificate(y, tmp, r, KTr, lam)
        if p2 - d2 <= max(gap, tol * abs(p2)):
            for t in range(T):
                s_out[t] = tmp[t]
            primal, gap, kkt = p2, p2 - d2, k2
            break
    # polish: an exact Newton step on the support, kept if it certifies better
    for t in range(T):
        s[t] = s_out[t]
    _residual(y, s, centre, p, Ks, r)
    _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
    for t in range(T):
        grad[t] = lam - KTr[t]
    if factored and gap > 0.0:
        # the support guess sets the step; if the first guess does not certify, try others
        for thr in (1e3, 1e1, 1e5, 1e7):
            s_pol = _polish(y, s, grad, thr * hsq, hsq, lam, centre, p, kvec, 8, w[_SCRATCH:])
            _residual(y, s_pol, centre, p, Ks, r)
            _adjoint(r, g1, g2, alpha, d, rr_, dK, rK, K, KTr)
            p3, d3, k3 = _certificate(y, s_pol, r, KTr, lam)
            if p3 - d3 < gap and p3 <= primal * (1.0 + 1e-15):
                for t in range(T):
                    s_out[t] = s_pol[t]
                primal, gap, kkt = p3, p3 - d3, k3
            if gap <= tol * abs(primal):
                break
    base = _residual(y, s_out, centre, p, Ks, r)
    if not centre:
        base = 0.0
    return it, primal, gap, kkt, base


@numba.njit(inline="always")
def _centring(mu, pred, n):  # pragma: no cover - compiled
    """Mehrotra's ``sigma mu`` from the predictor's steps and sums (see :func:`_predictor_back`)."""
    ap, ad, sxz, szz, sxx = pred
    mu_aff = mu + (ap * sxz + ad * szz + ap * ad * sxx) / n
    sigma = (mu_aff / mu) ** 3
    if not (sigma <= 1.0):
        sigma = 1.0
    return sigma * mu


@numba.njit(cache=True, error_model="numpy", nogil=True)
def ipm_traces(
    Y, p, lam, hsq, centre, tol, max_iter, S_out, info, polish_at=1e-6
):  # pragma: no cover
    """Solve the rows of ``Y`` (one or two traces, ``lam`` one per row), two side by side.

    ``S_out`` gets the spikes; ``info[k]`` = (iterations, primal, gap, kkt, baseline) of row
    ``k``. Each trace keeps its own iterations and stop: while both iterate, the sweeps held
    back by the latency of their recursion run the two interleaved (the ``*2`` kernels) and the
    others run them one after the other; once one has stopped, the other runs alone. A trace
    gets the same arithmetic either way, so the answer does not depend on its partner.
    ``polish_at``: the relative gap from which the exact Newton step on the support is tried
    (inside the loop, and on the best iterate at the end); 0 never tries it, and the answer is
    the best iterate (certified to ``tol`` where the iterations reached it).
    """
    g1, g2, alpha, d, rr_, dK, rK, K = p
    L, T = Y.shape
    if L > 2:
        raise ValueError("ipm_traces solves one or two traces at a time")
    n = float(T)
    alpha2 = alpha * alpha
    W = np.empty((L, _NW, T))
    live = np.ones(L, dtype=np.bool_)
    done = np.zeros(L, dtype=np.bool_)  # finished inside the loop (certified exact step)
    factored = np.zeros(L, dtype=np.bool_)
    # the rest of the solve factors in double-double
    precise = np.full(L, (1.0 - d) * (1.0 - rr_) < PRECISE_ROOTS, dtype=np.bool_)
    stop_it = np.full(L, max(max_iter, 0), dtype=np.int64)
    a = np.zeros(L)  # the first pass takes no step
    m = np.zeros(L)
    gap = np.full(L, np.inf)
    prev_gap = np.full(L, np.inf)
    best_gap = np.full(L, np.inf)
    best_primal = np.full(L, np.inf)
    pol_at = np.full(L, polish_at)
    den = np.full(L, n)
    ca = np.zeros(L)  # the baseline's coefficients: predictor
    cc = np.zeros(L)  # ... and corrector
    sm = np.zeros(L)
    kr = np.zeros(L)
    mu = np.zeros(L)
    ones = np.ones(T)
    # kernel gain: sum of the kernel, for a scale-aware start
    hsum = alpha / (1.0 - g1 - g2)
    for k in range(L):
        w = W[k]
        y = Y[k]
        for t in range(T):
            w[_DX, t] = 0.0
            w[_DZ, t] = 0.0
            w[_MK, t] = 0.0  # stays 0 without the baseline (its corrections vanish)
        if centre:
            _adjoint(ones, g1, g2, alpha, d, rr_, dK, rK, K, w[_KVEC])
        ymean = 0.0
        for t in range(T):
            ymean += y[t]
        ymean /= n
        yvar = 0.0
        for t in range(T):
            yvar += (y[t] - ymean) ** 2
        ystd = np.sqrt(yvar / n)
        if ystd <= 0.0:
            ystd = 1.0
        s0 = START_SCALE * ystd / hsum
        for t in range(T):
            w[_S, t] = s0
            w[_Z, t] = lam[k]

    for it in range(1, max_iter + 1):
        k0 = -1
        k1 = -1
        for k in range(L):
            if live[k]:
                if k0 < 0:
                    k0 = k
                else:
                    k1 = k
        if k0 < 0:
            break
        for j in range(2):
            k = k0 if j == 0 else k1
            if k < 0:
                continue
            w = W[k]
            y = Y[k]
            m[k] = _step_residual(y, w[_S], w[_Z], w[_DX], w[_DZ], a[k], p, w[_R])
            primal, dual, _, mu[k] = _adjoint_certify(
                y,
                w[_S],
                w[_Z],
                w[_R],
                m[k] if centre else 0.0,
                lam[k],
                p,
                w[_GRAD],
                w[_DG],
                w[_INVS],
                w[_INVZ],
            )
            g = primal - dual
            gap[k] = g
            if g < best_gap[k]:
                best_gap[k] = g
                best_primal[k] = primal
                for t in range(T):
                    S_out[k, t] = w[_S, t]
            stop = g <= tol * abs(primal)
            if not stop and g <= pol_at[k] * abs(primal):
                # close enough to guess the support: try the exact Newton step on it
                pol_at[k] *= 1e-2
                # its own scratch: the iterate's rows are needed if it fails
                s_pol = _polish(
                    Y[k],
                    w[_S],
                    w[_GRAD],
                    SUPPORT_RATIO * hsq,
                    hsq,
                    lam[k],
                    centre,
                    p,
                    w[_KVEC],
                    4,
                    np.empty((_NW - _SCRATCH, T)),
                    precise=precise[k],
                )
                # separate buffers: on failure the iterate's residual and gradient are needed
                _residual(Y[k], s_pol, centre, p, w[_TMP], w[_RHS])
                _adjoint(w[_RHS], g1, g2, alpha, d, rr_, dK, rK, K, w[_TMP2])
                p3, d3, k3 = _certificate(Y[k], s_pol, w[_RHS], w[_TMP2], lam[k])
                if p3 - d3 <= tol * abs(p3):
                    for t in range(T):
                        S_out[k, t] = s_pol[t]
                    base = _residual(Y[k], S_out[k], centre, p, w[_KS], w[_R])
                    info[k, 0] = it
                    info[k, 1] = p3
                    info[k, 2] = p3 - d3
                    info[k, 3] = k3
                    info[k, 4] = base if centre else 0.0
                    done[k] = True
                    stop = True
            # Near the optimum each step cuts the gap many times over; one that does not halve
            # it has met rounding (the Newton systems grow as ill-conditioned as mu is small),
            # and further steps only drift: the final point's exact step on the support follows.
            stop = stop or (g <= STALL_GAP * abs(primal) and g > 0.5 * prev_gap[k])
            if not stop and it >= PRECISE_AFTER:
                # the double factor may be what keeps it from the optimum (slow kinetics at high
                # frame rates): the rest of this trace's solve factors in double-double
                precise[k] = True
            prev_gap[k] = g
            if stop or not (mu[k] > 1e-300):
                live[k] = False
                stop_it[k] = it
        if not live[k0]:
            k0 = k1
            k1 = -1
        elif k1 >= 0 and not live[k1]:
            k1 = -1
        if k0 < 0:
            break
        # Predictor (affine scaling): rhs = -(grad - z) - z = -grad, solved for +grad and
        # negated; the factorisation is formed in the forward sweep. With the baseline, M^-1 kvec
        # too (Sherman-Morrison; its forward half in the same sweep), so that the correction's
        # coefficient kvec . dxa = -Mk . grad is known before the sweep back.
        if k1 >= 0 and not (precise[k0] or precise[k1]):
            _factor_forward2(W[k0], W[k1], alpha2, g1, g2, centre)
        else:
            for k in (k0, k1):
                if k < 0:
                    continue
                w = W[k]
                if centre:
                    _factor_forward(
                        w[_DG], alpha2, g1, g2, w[_DD], w[_L1], w[_L2], w[_GRAD], w[_TMP],
                        w[_KVEC], w[_RHS], precise[k],
                    )  # fmt: skip
                else:
                    _factor_forward(
                        w[_DG], alpha2, g1, g2, w[_DD], w[_L1], w[_L2], w[_GRAD], w[_TMP],
                        None, None, precise[k],
                    )  # fmt: skip
        for j in range(2):
            k = k0 if j == 0 else k1
            if k < 0:
                continue
            factored[k] = True
            ca[k] = 0.0
            den[k] = n
            if centre:
                w = W[k]
                if T >= 4:  # the forward half of M^-1 kvec came with the factorisation
                    _newton_back(w[_L1], w[_L2], g1, g2, w[_RHS], w[_MK])
                else:
                    _newton_solve(
                        w[_DD], w[_L1], w[_L2], g1, g2, w[_KVEC], w[_RHS], w[_TMP2], w[_MK]
                    )
                kMk = 0.0
                mg = 0.0
                for t in range(T):
                    kMk += w[_KVEC, t] * w[_MK, t]
                    mg += w[_MK, t] * w[_GRAD, t]
                den[k] = n - kMk
                ca[k] = -mg / den[k]
        if k1 >= 0:
            pa, pb = _predictor_back2(W[k0], W[k1], g1, g2, centre, ca[k0], ca[k1])
            sm[k0] = _centring(mu[k0], pa, n)
            sm[k1] = _centring(mu[k1], pb, n)
        else:
            w = W[k0]
            pa = _predictor_back(
                w[_L1],
                w[_L2],
                g1,
                g2,
                w[_TMP],
                w[_S],
                w[_Z],
                w[_INVS],
                w[_INVZ],
                centre,
                w[_MK],
                ca[k0],
                w[_DXA],
                w[_DZA],
            )
            sm[k0] = _centring(mu[k0], pa, n)
        # corrector
        for j in range(2):
            k = k0 if j == 0 else k1
            if k < 0:
                continue
            w = W[k]
            kr[k] = _corrector_forward(
                w[_DD],
                w[_L1],
                w[_L2],
                g1,
                g2,
                w[_S],
                w[_Z],
                w[_DXA],
                w[_DZA],
                w[_GRAD],
                w[_INVS],
                sm[k],
                centre,
                w[_MK],
                w[_SC],
                w[_TMP],
            )
            cc[k] = kr[k] / den[k] if centre else 0.0
            a[k] = _corrector_back(
                w[_L1],
                w[_L2],
                g1,
                g2,
                w[_TMP],
                w[_Z],
                w[_INVS],
                w[_INVZ],
                w[_SC],
                centre,
                w[_MK],
                cc[k],
                w[_DX],
                w[_DZ],
            )
            a[k] = min(1.0, STEP_FRACTION * a[k])

    for k in range(L):
        if not done[k]:
            out = _finish(
                Y[k],
                p,
                lam[k],
                hsq,
                centre,
                tol,
                stop_it[k],
                gap[k],
                best_gap[k],
                best_primal[k],
                factored[k] and polish_at > 0.0,
                W[k],
                S_out[k],
            )
            info[k, 0] = out[0]
            info[k, 1] = out[1]
            info[k, 2] = out[2]
            info[k, 3] = out[3]
            info[k, 4] = out[4]
