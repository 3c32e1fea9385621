"""The O(T) recursion equals dense convolution with the truncated kernel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import toeplitz

from nnfit.calcium.ar2 import AR2Coefficients, AR2Convolution
from nnfit.calcium.kernel import build_kernel
from nnfit.operators import dottest

KINETICS = [
    (0.05, 0.5, 30.0),
    (0.02, 0.15, 120.0),
    (0.1, 1.5, 60.06),
    (0.005, 0.02, 10.0),  # kernel of 2-3 samples
]


@pytest.mark.parametrize(("tr", "td", "fs"), KINETICS)
@pytest.mark.parametrize("T", [1, 2, 7, 250, 1500])
def test_forward_and_adjoint_equal_dense_convolution(rng, tr, td, fs, T):
    h = build_kernel(tr, td, fs)
    op = AR2Convolution(T, tr, td, fs)
    s = rng.standard_normal(T)
    u = rng.standard_normal(T)
    ref_f = np.convolve(s, h)[:T]
    ref_a = np.convolve(u[::-1], h)[:T][::-1]
    scale = np.abs(h).sum() * (np.abs(s).max() + np.abs(u).max())
    np.testing.assert_allclose(op.forward(s), ref_f, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(op.adjoint(u), ref_a, rtol=0, atol=1e-13 * scale)
    assert dottest(op) < 1e-12


def test_truncation_correction_is_exact_beyond_k(rng):
    # a spike long before the end: frames >= K after it must be exactly (to rounding) zero
    tr, td, fs = 0.05, 0.5, 30.0
    K = len(build_kernel(tr, td, fs))
    s = np.zeros(3 * K)
    s[3] = 1.0
    out = AR2Convolution(3 * K, tr, td, fs).forward(s)
    assert np.abs(out[3 + K :]).max() < 1e-15
    assert out[3 + K - 1] > 1e-7  # the last kernel sample is still there


def test_dense_matrix_is_the_toeplitz_matrix():
    tr, td, fs = 0.05, 0.3, 30.0
    T = 60
    h = build_kernel(tr, td, fs)
    col = np.zeros(T)
    col[: min(T, len(h))] = h[:T]
    dense = AR2Convolution(T, tr, td, fs).todense()
    np.testing.assert_allclose(dense, toeplitz(col, np.zeros(T)), rtol=0, atol=1e-14)


def test_two_dimensional_rows_are_independent(rng):
    op2 = AR2Convolution(300, 0.05, 0.5, 30.0, n_cells=3)
    op1 = AR2Convolution(300, 0.05, 0.5, 30.0)
    s = rng.standard_normal((3, 300))
    out = op2.forward(s)
    for i in range(3):
        np.testing.assert_array_equal(out[i], op1.forward(s[i]))
    assert dottest(op2) < 1e-12
    with pytest.raises(ValueError, match="shape"):
        op2.forward(s[:2])


def test_coefficients_match_kernel():
    c = AR2Coefficients(0.05, 0.5, 30.0)
    h = build_kernel(0.05, 0.5, 30.0)
    assert c.length == len(h)
    np.testing.assert_allclose(c.kernel(), h)
    assert c.alpha > 0 and c.g1 == pytest.approx(c.d + c.r)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="tau_rise"):
        AR2Convolution(10, 0.5, 0.05, 30.0)
    with pytest.raises(ValueError, match="n_frames"):
        AR2Convolution(0, 0.05, 0.5, 30.0)
