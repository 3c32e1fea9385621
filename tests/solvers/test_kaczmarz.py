"""The array-level projected Kaczmarz kernel and ratio penalty."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls

from nnfit.solvers.kaczmarz import (
    RatioPenalty,
    kaczmarz_nnls,
    kaczmarz_rows,
    residual_sse,
    visit_blocks,
)


def _reference(x, rows, y, lr, w=None, rho=None, project=True, norm_weighted=False):
    """Plain-Python transcription of the update, projecting after every row."""
    x = x.copy()
    sse = 0.0
    for i, a in enumerate(rows.astype(np.float64)):
        r = y[i] - a @ x
        sse += ((1.0 if w is None else w[i]) * r) ** 2
        nrm = a @ a
        if nrm == 0:
            continue
        rel = 1.0 if rho is None else rho[i]
        if norm_weighted:
            rel = min(rho[i] * nrm, 1.0)
        x = x + lr * rel * r / nrm * a
        if project:
            x = np.maximum(x, 0.0)
    return x, sse


def test_kernel_matches_reference_with_projection_after_every_row(rng):
    rows = rng.standard_normal((40, 7)).astype(np.float32)
    y = rng.standard_normal(40)
    x0 = np.abs(rng.standard_normal(7))
    x = x0.copy()
    sse = kaczmarz_rows(x, rows, y, lr=0.7)
    xr, sr = _reference(x0, rows, y, 0.7)
    np.testing.assert_allclose(x, xr, rtol=1e-13, atol=1e-14)
    assert sse == pytest.approx(sr, rel=1e-13)
    assert (x >= 0).all()
    # projecting only at the end (the original's fault) gives a different iterate
    xe, _ = _reference(x0, rows, y, 0.7, project=False)
    assert np.abs(np.maximum(xe, 0) - x).max() > 1e-3


def test_kernel_float32_rows_promote_exactly(rng):
    rows = rng.random((20, 5)).astype(np.float32)
    y = rng.random(20)
    x1 = np.zeros(5)
    x2 = np.zeros(5)
    kaczmarz_rows(x1, rows, y, lr=0.5)
    kaczmarz_rows(x2, rows.astype(np.float64), y, lr=0.5)
    np.testing.assert_array_equal(x1, x2)


def test_kernel_weights_rho_and_zero_rows(rng):
    rows = rng.random((10, 4))
    rows[3] = 0.0  # a zero row is skipped, not divided by
    y = rng.random(10)
    w = 0.5 + rng.random(10)
    rho = 0.2 + rng.random(10)
    for nw in (False, True):
        x = np.zeros(4)
        sse = kaczmarz_rows(x, rows, y, lr=0.9, weights=w, rho=rho, norm_weighted=nw)
        xr, sr = _reference(np.zeros(4), rows, y, 0.9, w=w, rho=rho, norm_weighted=nw)
        np.testing.assert_allclose(x, xr, rtol=1e-13)
        assert sse == pytest.approx(sr, rel=1e-13)
        assert np.isfinite(x).all()


def test_kernel_input_checks():
    with pytest.raises(ValueError, match="float64"):
        kaczmarz_rows(np.zeros(2, np.float32), np.ones((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="rows must have shape"):
        kaczmarz_rows(np.zeros(2), np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="y must have shape"):
        kaczmarz_rows(np.zeros(2), np.ones((2, 2)), np.ones(3))


def test_residual_sse_does_not_move_x(rng):
    rows = rng.random((6, 3)).astype(np.float32)
    x = rng.random(3)
    y = rng.random(6)
    before = x.copy()
    w = rng.random(6)
    expect = float(np.sum((w * (y - rows.astype(np.float64) @ x)) ** 2))
    assert residual_sse(x, rows, y, w) == pytest.approx(expect, rel=1e-13)
    np.testing.assert_array_equal(x, before)


def test_dense_driver_converges_to_scipy_nnls_on_consistent_problem(rng):
    A = rng.random((200, 12))
    xt = rng.random(12)
    xt[[1, 5, 7]] = 0.0
    y = A @ xt
    gaps = []
    _, rnorm = nnls(A, y)
    f_opt = rnorm**2

    def cb(ep, x):
        gaps.append(np.sum((A @ x - y) ** 2) - f_opt)

    x = kaczmarz_nnls(A, y, epochs=60, lr=1.0, seed=3, callback=cb)
    assert gaps[-1] < 1e-6 * gaps[0]
    np.testing.assert_allclose(x, xt, atol=1e-5)


def test_visit_blocks_calls_back_per_block():
    seen = []
    x = np.zeros(2)
    blocks = [(np.eye(2), np.array([1.0, 2.0])), (np.ones((1, 2)), np.array([3.0]))]
    visit_blocks(x, blocks, lr=1.0, on_block=lambda i, s, n: seen.append((i, n)))
    assert seen == [(0, 2), (1, 1)]
    assert x.sum() == pytest.approx(3.0)


def test_ratio_penalty_uses_current_sums_and_converges():
    w = np.array([4.0, 2.0, 1.0, 1e-6])
    pen = RatioPenalty(w, n_populations=3, eta=0.5, batch=2, min_weight=1e-3)
    assert pen.anchor_index == 0
    assert list(pen.candidates) == [1, 2]  # the negligible component stays free
    x = np.ones(12)
    rng = np.random.default_rng(0)
    for _ in range(200):
        pen.step(x, rng.choice(pen.candidates, size=2), project_nonneg=True)
    s = x.reshape(4, 3).sum(axis=1)
    np.testing.assert_allclose(s[1:3] / s[0], [0.5, 0.25], rtol=1e-8)
    # the same component twice in one batch: the second step sees the first step's sums
    x = np.ones(12)
    pen.step(x, np.array([1, 1]), project_nonneg=True)
    x2 = np.ones(12)
    pen.step(x2, np.array([1]), project_nonneg=True)
    pen.step(x2, np.array([1]), project_nonneg=True)
    np.testing.assert_array_equal(x, x2)


def test_ratio_penalty_draws_and_checks():
    pen = RatioPenalty(np.array([1.0, 1.0]), n_populations=1, eta=0.1, prob=0.5, batch=3)
    comps = pen.draw(np.random.default_rng(1), 100)
    assert comps.size % 3 == 0 and 60 < comps.size < 240
    with pytest.raises(ValueError, match="non-negative"):
        RatioPenalty(np.array([-1.0, 1.0]), n_populations=1, eta=0.1)
    with pytest.raises(ValueError, match="weight 0"):
        RatioPenalty(np.array([0.0, 1.0]), n_populations=1, eta=0.1, anchor=0)
    with pytest.raises(ValueError, match="ratio_anchor"):
        RatioPenalty(np.array([1.0, 1.0]), n_populations=1, eta=0.1, anchor=5)
