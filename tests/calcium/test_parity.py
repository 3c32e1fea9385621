"""run_deconvolution against PyPI catune 0.1.0, the oracle: same spikes, same iteration counts.

catune does not report how many iterations it ran. Each of its iterations calls
``np.convolve`` exactly three times (forward at y_k, adjoint, forward at x_{k+1}), so the test
swaps the ``np`` that ``catune._fista`` sees for a proxy that counts those calls and otherwise
delegates to numpy: the count divided by three is catune's own iteration count.
"""

from __future__ import annotations

import types

import catune
import catune._fista
import numpy as np
import pytest

from nnfit.calcium import build_kernel, run_deconvolution


class _CountingNumpy(types.ModuleType):
    def __init__(self):
        super().__init__("numpy_counting_proxy")
        self.convolve_calls = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def convolve(self, *args, **kwargs):
        self.convolve_calls += 1
        return np.convolve(*args, **kwargs)


def catune_with_iterations(traces, fs, tau_r, tau_d, lam, **kw):
    """catune's result and its per-cell iteration counts (one 1-D call per cell)."""
    proxy = _CountingNumpy()
    saved = catune._fista.np
    catune._fista.np = proxy
    try:
        rows = np.atleast_2d(traces)
        out, iters = [], []
        for row in rows:
            proxy.convolve_calls = 0
            out.append(catune.run_deconvolution(row, fs, tau_r, tau_d, lam, **kw))
            assert proxy.convolve_calls % 3 == 0
            iters.append(proxy.convolve_calls // 3)
    finally:
        catune._fista.np = saved
    return np.asarray(out).reshape(np.shape(traces)), np.asarray(iters)


def assert_parity(traces, fs, tau_r, tau_d, lam, **kw):
    ref, ref_iters = catune_with_iterations(traces, fs, tau_r, tau_d, lam, **kw)
    got, info = run_deconvolution(traces, fs, tau_r, tau_d, lam, return_info=True, **kw)
    assert got.shape == ref.shape
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_array_equal(info.iterations, ref_iters)
    max_iters = kw.get("max_iters", 2000)
    np.testing.assert_array_equal(info.converged, ref_iters < max_iters)
    return info


def _synthetic(rng, n_cells, n, tau_r, tau_d, fs, rate=0.03, noise=0.1, offset=0.0):
    h = build_kernel(tau_r, tau_d, fs)
    s = rng.random((n_cells, n)) * (rng.random((n_cells, n)) < rate)
    y = np.array([np.convolve(row, h)[:n] for row in s])
    return y + noise * rng.standard_normal(y.shape) + offset


# A seeded sweep: kinetics, rates, lambda, lengths 2..5000.
SWEEP = [
    # tau_r, tau_d, fs, lam, n
    (0.05, 0.5, 30.0, 0.5, 5000),
    (0.02, 0.4, 30.0, 0.01, 2000),
    (0.005, 0.1, 100.0, 0.1, 3000),
    (0.1, 2.0, 7.5, 1.0, 1500),
    (0.001, 0.01, 1000.0, 0.05, 4000),
    (0.2, 0.21, 15.0, 0.2, 800),
    (0.05, 1.0, 20.0, 2.0, 2500),
    (0.03, 0.3, 60.0, 0.0, 600),
    (0.05, 0.5, 30.0, 0.5, 2),
    (0.05, 0.5, 30.0, 0.5, 3),
    (0.05, 0.5, 30.0, 0.5, 10),
    (0.05, 0.5, 30.0, 0.5, 207),
    (0.05, 0.5, 30.0, 0.5, 209),
    # the shortest decay accepted (1/8 of a frame): the kernel's recursion keeps its digits
    (0.5 / (8.0 * 30.0), 1.0001 / (8.0 * 30.0), 30.0, 0.1, 300),
]


@pytest.mark.parametrize(("tau_r", "tau_d", "fs", "lam", "n"), SWEEP)
def test_matches_catune_on_seeded_sweep(tau_r, tau_d, fs, lam, n):
    rng = np.random.default_rng(int(n * 1000 + fs))
    y = _synthetic(rng, 3, n, tau_r, tau_d, fs)
    assert_parity(y, fs, tau_r, tau_d, lam)  # 2-D, all cells together
    assert_parity(y[1], fs, tau_r, tau_d, lam)  # 1-D


def test_matches_catune_random_parameters(rng):
    for _ in range(6):
        tau_d = float(rng.uniform(0.05, 1.5))
        tau_r = float(tau_d * rng.uniform(0.02, 0.6))
        fs = float(rng.choice([10.0, 15.0, 30.0, 60.0]))
        lam = float(10 ** rng.uniform(-3, 0.5))
        n = int(rng.integers(2, 1500))
        y = _synthetic(rng, 2, n, tau_r, tau_d, fs, noise=float(rng.uniform(0, 0.5)))
        assert_parity(y, fs, tau_r, tau_d, lam)


def test_decays_catune_accepts_but_nnfit_cannot_resolve_are_refused(rng):
    # below 1/8 of a frame the two-pole recursion loses digits (1/30: 8e-4 of the
    # spikes); catune's explicit convolution has no such limit, but such a kernel is one frame
    y = _synthetic(rng, 1, 200, 0.002, 0.05, 30.0)[0]
    with pytest.raises(ValueError, match=r"tau_d=0\.0005 s is shorter than 1/8 of a frame"):
        run_deconvolution(y, 30.0, 2.5e-4, 5e-4, 0.1)


def test_matches_catune_zero_trace():
    info = assert_parity(np.zeros((2, 300)), 30.0, 0.05, 0.5, 0.5)
    assert info.iterations.tolist() == [6, 6]


def test_matches_catune_very_high_lambda(rng):
    y = _synthetic(rng, 2, 1000, 0.05, 0.5, 30.0, noise=0.2)
    info = assert_parity(y, 30.0, 0.05, 0.5, 1e6)
    got = run_deconvolution(y, 30.0, 0.05, 0.5, 1e6)
    assert np.all(got == 0.0) and np.all(info.converged)


def test_matches_catune_constant_offset(rng):
    y = _synthetic(rng, 2, 1200, 0.05, 0.5, 30.0, offset=3.0)
    assert_parity(y, 30.0, 0.05, 0.5, 0.3)
    assert_parity(np.full(500, 2.0), 30.0, 0.05, 0.5, 0.3)


def test_matches_catune_ten_samples_and_iteration_limit(rng):
    y = _synthetic(rng, 2, 10, 0.05, 0.5, 30.0)
    assert_parity(y, 30.0, 0.05, 0.5, 0.01)
    # Stopped by max_iters and by a loose or strict tolerance: same count, same result.
    y = _synthetic(rng, 2, 1000, 0.05, 0.5, 30.0)
    info = assert_parity(y, 30.0, 0.05, 0.5, 0.01, max_iters=7)
    assert info.iterations.tolist() == [7, 7]
    assert_parity(y, 30.0, 0.05, 0.5, 0.01, tolerance=1e-3)
    assert_parity(y, 30.0, 0.05, 0.5, 0.01, tolerance=1e-9, max_iters=3000)
    assert_parity(y, 30.0, 0.05, 0.5, 0.01, max_iters=1)


def test_integer_and_float32_input_match_catune(rng):
    y = np.round(_synthetic(rng, 2, 400, 0.05, 0.5, 30.0) * 100).astype(np.int32)
    assert_parity(y, 30.0, 0.05, 0.5, 5.0)
    assert_parity(y.astype(np.float32), 30, 0.05, 0.5, 5)


def test_iteration_count_method_is_honest(rng):
    """The convolve count is catune's iteration count: re-running catune with max_iters set to
    that count reproduces its result exactly, and one iteration fewer does not."""
    y = _synthetic(rng, 1, 700, 0.05, 0.5, 30.0)[0]
    full, (k,) = catune_with_iterations(y, 30.0, 0.05, 0.5, 0.1)
    assert 6 < k < 2000
    assert np.array_equal(catune.run_deconvolution(y, 30.0, 0.05, 0.5, 0.1, max_iters=k), full)
    assert not np.array_equal(
        catune.run_deconvolution(y, 30.0, 0.05, 0.5, 0.1, max_iters=k - 1), full
    )
    # catune's own 2-D call gives the rows of its 1-D calls, which run_deconvolution matches.
    y2 = _synthetic(rng, 3, 400, 0.05, 0.5, 30.0)
    ref2 = catune.run_deconvolution(y2, 30.0, 0.05, 0.5, 0.1)
    got2 = run_deconvolution(y2, 30.0, 0.05, 0.5, 0.1)
    np.testing.assert_allclose(got2, ref2, rtol=1e-10, atol=1e-12 * np.abs(ref2).max())
