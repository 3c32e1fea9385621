"""Accelerated projected gradient: reaches the NNLS optimum on well-conditioned problems."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from nnfit.operators import MatrixOperator
from nnfit.solvers.pgd import operator_objective, pgd


def test_reaches_nnls_optimum(rng):
    A = rng.standard_normal((300, 30))
    y = A @ np.clip(rng.standard_normal(30), 0, None) + 0.1 * rng.standard_normal(300)
    ref, rnorm = nnls(A, y)
    fg, hv = operator_objective(MatrixOperator(A), y)
    res = pgd(fg, np.zeros(30), hess_vec=hv, max_iter=3000, ftol=1e-14)
    assert np.all(res.x >= 0)
    assert res.f - rnorm**2 <= 1e-9 * rnorm**2
    np.testing.assert_allclose(res.x, ref, atol=1e-5)


def test_diagonal_preconditioning_helps_badly_scaled_columns(rng):
    A = rng.standard_normal((200, 20)) * np.logspace(0, 3, 20)[None, :]
    y = A @ rng.random(20)
    fg, hv = operator_objective(MatrixOperator(A), y)
    scale = 1.0 / np.linalg.norm(A, axis=0)
    plain = pgd(fg, np.zeros(20), hess_vec=hv, max_iter=300)
    pre = pgd(fg, np.zeros(20), hess_vec=hv, scale=scale, max_iter=300)
    assert pre.f < 1e-3 * plain.f


def test_weights_and_stop_callback(rng):
    A = rng.random((50, 5))
    y = A @ np.ones(5)
    w = rng.random(50) + 0.5
    fg, hv = operator_objective(MatrixOperator(A), y, weights=w)
    f0, g0 = fg(np.zeros(5))
    assert np.isclose(f0, np.sum((w * y) ** 2))
    np.testing.assert_allclose(g0, -2 * A.T @ (w**2 * y))
    res = pgd(fg, np.zeros(5), hess_vec=hv, stop=lambda it, x, f, g: it >= 7)
    assert res.iterations == 7 and res.converged
