"""Double-double arithmetic and the precise banded factor of the one-decay solver, against
exact rationals."""

from __future__ import annotations

from fractions import Fraction

import numba
import numpy as np

from nnfit.calcium.doubledouble import dd_div, two_prod, two_sum


@numba.njit(cache=False)
def _transforms(a, b):
    # compiled as the solvers compile them: a contraction to fused multiply-adds would break
    # the error-free transformations silently
    p, pe = two_prod(a, b)
    s, se = two_sum(a, b)
    qh, ql = dd_div(a, a * 1e-17, b, b * 1e-17)
    return p, pe, s, se, qh, ql


def test_transformations_are_exact():
    rng = np.random.default_rng(0)
    worst = 0.0
    for a, b in rng.standard_normal((2000, 2)) * 10.0 ** rng.uniform(-8, 8, (2000, 2)):
        p, pe, s, se, qh, ql = _transforms(a, b)
        assert Fraction(p) + Fraction(pe) == Fraction(a) * Fraction(b)
        assert Fraction(s) + Fraction(se) == Fraction(a) + Fraction(b)
        exact = (Fraction(a) + Fraction(a * 1e-17)) / (Fraction(b) + Fraction(b * 1e-17))
        worst = max(worst, abs(float((Fraction(qh) + Fraction(ql) - exact) / exact)))
    assert worst < 1e-30


def test_precise_pentadiagonal_factor_is_the_exact_factor_rounded():
    # alpha^2 P + G^T D G of a GCaMP6s-like kernel at 158 Hz, barrier weights over 18 orders:
    # the precise factor equals the rational one rounded; the double one is far off
    from nnfit.calcium._ipm import _penta_factor, _penta_factor_precise
    from nnfit.calcium.ar2 import AR2Coefficients

    c = AR2Coefficients(0.8, 3.0, 158.0)
    T = 40
    Dg = 10.0 ** np.random.default_rng(1).uniform(-8, 10, T)
    g1, g2, a2 = Fraction(c.g1), Fraction(c.g2), Fraction(c.alpha * c.alpha)
    D = [Fraction(v) for v in Dg]
    # bands of the middle factor, as _penta_factor forms them
    a0 = [D[i] + (a2 if i < T - 1 else 0) + (g1 * g1 * D[i + 1] if i + 1 < T else 0)
          + (g2 * g2 * D[i + 2] if i + 2 < T else 0) for i in range(T)]  # fmt: skip
    a1 = [(-g1 * D[i + 1] if i + 1 < T else 0) + (g1 * g2 * D[i + 2] if i + 2 < T else 0)
          for i in range(T)]  # fmt: skip
    a2b = [(-g2 * D[i + 2] if i + 2 < T else 0) for i in range(T)]
    # L D L^T with l1[i] = L(i+1, i), l2[i] = L(i+2, i), as _penta_factor stores them
    piv, l1, l2 = [Fraction(0)] * T, [Fraction(0)] * T, [Fraction(0)] * T
    for i in range(T):
        if i >= 1:
            e = a1[i - 1] - (l2[i - 2] * piv[i - 2] * l1[i - 2] if i >= 2 else 0)
            l1[i - 1] = e / piv[i - 1]
        piv[i] = a0[i] - (l2[i - 2] ** 2 * piv[i - 2] if i >= 2 else 0)
        piv[i] -= l1[i - 1] ** 2 * piv[i - 1] if i >= 1 else 0
        l2[i] = a2b[i] / piv[i]
    exact = [np.array([float(v) for v in col]) for col in ([1 / q for q in piv], l1, l2)]
    dd, d1, d2 = np.zeros(T), np.zeros(T), np.zeros(T)
    _penta_factor_precise(Dg, c.alpha * c.alpha, c.g1, c.g2, dd, d1, d2)
    for got, want in zip((dd, d1, d2), exact, strict=True):
        np.testing.assert_allclose(got, want, rtol=4e-16, atol=1e-300)
    _penta_factor(Dg, c.alpha * c.alpha, c.g1, c.g2, dd, d1, d2)
    assert np.max(np.abs(dd - exact[0]) / np.abs(exact[0])) > 1e-6
