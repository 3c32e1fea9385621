"""Active-set NNLS on a Gram matrix: exact against scipy, warm starts, equality constraints."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize, nnls

from nnfit.solvers.nnls import nnls_gram


def _ssp_like(rng, m=1500, n=120):
    t = np.linspace(0, 1, m)[:, None]
    a = np.linspace(0.1, 3, n)[None, :]
    return np.exp(-t * a) + 0.01 * np.sin(40 * t * a) + 1e-3 * rng.random((m, n))


@pytest.mark.parametrize("kind", ["random", "ssp"])
def test_matches_scipy_nnls(rng, kind):
    A = rng.standard_normal((400, 60)) if kind == "random" else _ssp_like(rng)
    n = A.shape[1]
    y = A @ np.clip(rng.standard_normal(n), 0, None) + 0.01 * rng.standard_normal(A.shape[0])
    ref, _ = nnls(A, y, maxiter=50 * n)
    res = nnls_gram(A.T @ A, A.T @ y)
    f = lambda x: float(np.sum((A @ x - y) ** 2))  # noqa: E731
    assert res.converged
    assert np.all(res.x >= 0)
    # the objective agrees to rounding (the Gram route squares cond(A); x may differ
    # along near-null directions of the SSP-like problem but not in chi^2)
    assert f(res.x) - f(ref) <= 1e-10 * f(ref)
    if kind == "random":
        np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-10 * ref.max())


def test_warm_start_and_kkt(rng):
    A = rng.standard_normal((300, 40))
    y = A @ np.clip(rng.standard_normal(40), 0, None) + 0.1 * rng.standard_normal(300)
    G, b = A.T @ A, A.T @ y
    cold = nnls_gram(G, b)
    warm = nnls_gram(G, b, x0=cold.x)
    assert warm.iterations <= 2
    np.testing.assert_allclose(warm.x, cold.x, atol=1e-12)
    w = b - G @ cold.x
    d = np.sqrt(np.diag(G))
    assert np.all(w[cold.x == 0] / d[cold.x == 0] <= 1e-9)
    assert np.abs(w[cold.x > 0]).max() <= 1e-9 * np.abs(b).max()


def test_equality_constraints_are_exact_and_optimal(rng):
    # two groups; group sums must be in the ratio 2:1 (alpha free)
    A = rng.random((200, 10))
    y = A @ rng.random(10) + 0.05 * rng.standard_normal(200)
    E = np.zeros((1, 10))
    E[0, :5] = 1.0
    E[0, 5:] = -2.0
    res = nnls_gram(A.T @ A, A.T @ y, equality=E)
    assert res.converged
    s1, s2 = res.x[:5].sum(), res.x[5:].sum()
    assert abs(s1 - 2 * s2) <= 1e-10 * s1
    f = lambda x: float(np.sum((A @ x - y) ** 2))  # noqa: E731
    ref = minimize(
        f,
        np.full(10, 0.1),
        jac=lambda x: 2 * A.T @ (A @ x - y),
        bounds=[(0, None)] * 10,
        constraints=[{"type": "eq", "fun": lambda x: E @ x, "jac": lambda x: E}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert f(res.x) <= ref.fun + 1e-8 * ref.fun


def test_degenerate_inputs():
    res = nnls_gram(np.zeros((3, 3)), np.zeros(3))
    assert res.converged and np.all(res.x == 0)
    res = nnls_gram(np.eye(2), np.array([-1.0, -2.0]))
    assert np.all(res.x == 0)
    with pytest.raises(ValueError, match="must be"):
        nnls_gram(np.eye(2), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        nnls_gram(np.eye(2), np.array([np.nan, 1.0]))
