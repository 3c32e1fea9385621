"""The two-decay kernel and its certified solver, against dense references and the one-decay
solver."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import TwoDecayKernel, deconvolve_two_decay, estimate_two_decay_kernel
from nnfit.calcium.estimate import LAM_Z, estimate_noise
from nnfit.calcium.exact import solve_exact
from nnfit.calcium.two_decay import GRID_FAST, GRID_MIN_RATIO, two_decay_grid
from nnfit.operators import dottest
from nnfit.solvers.nnls import nnls_gram

KERNELS = [
    (0.02, 0.15, 1.0, 0.7, 60.0),  # a fast and a slow decay at 60 Hz
    (0.002, 0.1, 1.0, 0.81, 122.0),  # the mix fitted to DS30's true spikes, rise at 2 ms
    (0.05, 0.6, 2.0, 0.5, 30.0),
    (0.05, 0.3, 0.3, 1.0, 30.0),  # one decay (f = 1, the second root cancelled)
]


def _dense(k: TwoDecayKernel, T: int) -> np.ndarray:
    h = k.samples(T)
    K = np.zeros((T, T))
    for j in range(T):
        K[j:, j] = h[: T - j]
    return K


def _trace(k: TwoDecayKernel, T: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = (rng.random(T) < 0.03) * rng.exponential(1.0, T)
    return k.forward(s) + 0.3 + 0.1 * rng.standard_normal(T)


def _gap_by_convolve(y, spikes, k, lam):
    """The relative duality gap of ``spikes`` (constant baseline), the kernel applied by
    ``np.convolve``: a certificate that does not trust the solver's operators."""
    T = y.shape[0]
    h = k.samples(T)
    r = y - np.convolve(spikes, h)[:T]
    r -= r.mean()
    ktr = np.convolve(r[::-1], h)[:T][::-1]
    primal = 0.5 * r @ r + lam * spikes.sum()
    theta = min(r @ y / (r @ r), lam / ktr.max())
    return (primal - (theta * (r @ y) - 0.5 * theta**2 * (r @ r))) / primal, primal


@pytest.mark.parametrize("args", KERNELS)
def test_kernel_is_the_formula_and_its_recursion_is_exact(args):
    k = TwoDecayKernel(*args)
    tr, t1, t2, f, fs = args
    n = 400
    u = np.arange(n) / fs
    raw = f * np.exp(-u / t1) + (1 - f) * np.exp(-u / t2) - np.exp(-u / tr)
    np.testing.assert_allclose(k.samples(n), raw / raw.max(), rtol=0, atol=1e-13)
    s = np.random.default_rng(0).standard_normal(n)
    np.testing.assert_allclose(k.forward(s), _dense(k, n) @ s, rtol=0, atol=1e-11)
    np.testing.assert_allclose(k.adjoint(s), _dense(k, n).T @ s, rtol=0, atol=1e-11)


def test_three_slow_roots_keep_their_digits():
    # 0.4 s, 0.8 s and 2.4 s at 120 Hz: the three-pole recursion in direct form (the taps of
    # coefficients()) left a relative error of 4e-11 on K s; three first-order branches keep it
    # to rounding
    k = TwoDecayKernel(0.4, 0.8, 2.4, 0.7, 120.0)
    T = 3000
    rng = np.random.default_rng(0)
    s, u = rng.random(T), rng.standard_normal(T)
    h = k.samples(T)
    ref = np.convolve(s, h)[:T]
    assert np.max(np.abs(k.forward(s) - ref)) <= 1e-13 * np.max(np.abs(ref))
    ref = np.convolve(u[::-1], h)[:T][::-1]
    assert np.max(np.abs(k.adjoint(u) - ref)) <= 1e-13 * np.max(np.abs(ref))


def test_adjoint_passes_the_dot_test():
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)

    class Op:
        model_shape = data_shape = (500,)
        forward = staticmethod(k.forward)
        adjoint = staticmethod(k.adjoint)

    assert dottest(Op()) < 1e-12


@pytest.mark.parametrize("args", KERNELS)
@pytest.mark.parametrize("baseline", ["constant", "none"])
def test_solver_reaches_the_dense_optimum(args, baseline):
    k = TwoDecayKernel(*args)
    T, lam = 400, 0.2
    y = _trace(k, T, seed=1)
    P = np.eye(T) - (np.full((T, T), 1.0 / T) if baseline == "constant" else 0.0)
    A = P @ _dense(k, T)
    ref = nnls_gram(A.T @ A, A.T @ (P @ y) - lam, tol=1e-14).x
    f_ref = 0.5 * np.sum((P @ y - A @ ref) ** 2) + lam * ref.sum()
    res = deconvolve_two_decay(y, k, lam, baseline)
    assert res.gap[0] <= 1e-9 and res.converged[0]
    assert abs(res.objective[0] - f_ref) <= 1e-12 * f_ref
    np.testing.assert_allclose(res.spikes, ref, rtol=0, atol=1e-9)
    # the result describes its own model: y = baseline + K s + residual, baseline its mean
    np.testing.assert_allclose(res.calcium, k.forward(res.spikes), rtol=0, atol=1e-12)
    expected = np.mean(y - res.calcium) if baseline == "constant" else 0.0
    np.testing.assert_allclose(res.baseline, expected, rtol=0, atol=1e-12)


def test_a_slow_basis_is_fitted_jointly_and_exactly():
    # a drifting baseline as a constant and slow cosines (calcium_two_decay.py's projection)
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    T, lam = 500, 0.2
    u = np.arange(T)
    B = np.stack([np.ones(T)] + [np.cos(np.pi * j * (u + 0.5) / T) for j in (1, 2, 3)], axis=1)
    y = _trace(k, T, seed=6) + 0.4 * np.cos(np.pi * 2 * (u + 0.5) / T)
    Q, _ = np.linalg.qr(B)
    P = np.eye(T) - Q @ Q.T
    A = P @ _dense(k, T)
    ref = nnls_gram(A.T @ A, A.T @ (P @ y) - lam, tol=1e-14).x
    f_ref = 0.5 * np.sum((P @ y - A @ ref) ** 2) + lam * ref.sum()
    res = deconvolve_two_decay(y, k, lam, baseline=3.0 * B)  # any scaling of the columns
    assert res.gap[0] <= 1e-9 and res.baseline_kind == ["basis"]
    assert abs(res.objective[0] - f_ref) <= 1e-12 * f_ref
    np.testing.assert_allclose(res.spikes, ref, rtol=0, atol=1e-9)
    # the baseline is the basis's least-squares fit to what the calcium leaves
    fit = Q @ (Q.T @ (y - res.calcium))
    np.testing.assert_allclose(res.baseline, fit, rtol=0, atol=1e-12)


@pytest.mark.parametrize("baseline", ["auto", "drift"])
def test_baseline_models_are_those_of_the_one_decay_solver(baseline):
    # f = 1 on traces shorter than the one-decay kernel's truncation: the same problem, so the
    # same "auto" choices and the same drift curves
    tr, td, fs, T = 0.05, 0.5, 30.0, 200
    k = TwoDecayKernel(tr, td, td, 1.0, fs)
    u = np.arange(T) / fs
    Y = np.stack([_trace(k, T, seed) for seed in (3, 4)])
    Y[1] += 0.8 * np.sin(2 * np.pi * u / 5.0)  # a drift of 5 s
    noise = estimate_noise(Y, fs)
    lam = np.full(2, 0.15)
    ours = deconvolve_two_decay(Y, k, lam, baseline, tol=1e-12)
    theirs = solve_exact(Y, fs, tr, td, lam, baseline, noise=noise, tol=1e-12)
    assert ours.baseline_kind == theirs.baseline_kind
    assert ours.baseline_kind[1] == ("drift" if baseline == "drift" else "constant")  # too short
    np.testing.assert_allclose(ours.baseline, theirs.baseline, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ours.spikes, theirs.spikes, rtol=0, atol=1e-7)


def test_one_decay_equals_the_one_decay_solver():
    # f = 1 is the one-decay kernel; on a trace shorter than that kernel's truncation the two
    # solvers solve the same problem
    tr, td, fs, T = 0.05, 0.5, 30.0, 200
    k = TwoDecayKernel(tr, td, td, 1.0, fs)
    Y = np.stack([_trace(k, T, seed) for seed in (3, 4, 5)])
    lam = np.full(3, 0.15)
    ours = deconvolve_two_decay(Y, k, lam)
    theirs = solve_exact(Y, fs, tr, td, lam, "constant", tol=1e-12)
    np.testing.assert_allclose(ours.objective, theirs.objective, rtol=1e-11)
    np.testing.assert_allclose(ours.spikes, theirs.spikes, rtol=0, atol=1e-8)


@pytest.mark.parametrize("fraction", [1.0, 0.0])
def test_one_slow_decay_is_certified(fraction):
    # one decay of 3 s at 60 Hz: with the weightless decay left as a pole cancelled by a zero
    # (a double root at 0.9945) the Newton systems broke down before the optimum
    k = TwoDecayKernel(0.02, 3.0, 3.0, fraction, 60.0)
    assert np.count_nonzero(k.roots) == 2
    rng = np.random.default_rng(7)
    T = 14_400
    s = (rng.random(T) < 0.005) * (1 + rng.poisson(1, T))
    y = k.forward(s) + 0.15 * rng.standard_normal(T)
    res = deconvolve_two_decay(y, k, lam=2 * 0.15 * np.linalg.norm(k.samples(T)))
    assert res.converged[0] and res.gap[0] <= 1e-9


@pytest.mark.parametrize("seed", [2, 5])
def test_two_slow_roots_are_certified(seed):
    # 0.8 s and 4 s at 60 Hz (the slow end of the search grid on DS14): two roots near 1
    # square the conditioning of the banded middle factor; with the banded solve alone these
    # two draws stopped at gaps of 4e-5 and 7e-6
    rng = np.random.default_rng(seed)
    T, fs = 14_400, 60.0
    k = TwoDecayKernel(0.117, 0.8, 4.0, 0.7, fs)
    s = (rng.random(T) < 1.0 / fs) * rng.exponential(0.5, T)
    y = k.forward(s) + 0.05 * rng.standard_normal(T) + 0.1 * np.sin(np.arange(T) / fs / 40)
    res = deconvolve_two_decay(y, k, lam=2 * 0.05 * np.linalg.norm(k.samples(T)))
    assert res.converged[0] and res.gap[0] <= 1e-9


@pytest.mark.parametrize("seed", [0, 1])
def test_a_slow_rise_with_two_slow_decays_is_certified(seed):
    # GCaMP6s-like at 120 Hz: three roots near 1 (0.4 s, 0.8 s, 2.4 s). The double banded factor
    # is then no preconditioner and these draws stopped at gaps of 1.7e-5 and 2.7e-6; with the
    # factor in double-double, 3.7e-9 and 3.4e-9 (K s in the direct form of its recursion);
    # with K s as three first-order recursions as well, certified
    k = TwoDecayKernel(0.4, 0.8, 2.4, 0.7, 120.0)
    rng = np.random.default_rng(seed)
    T = 8000
    s = (rng.random(T) < 0.005) * (1.0 + rng.poisson(1.0, T))
    y = k.forward(s) + 0.15 * rng.standard_normal(T)
    res = deconvolve_two_decay(y, k)
    assert res.converged[0] and res.gap[0] <= 1e-9 and res.iterations[0] <= 30
    # the gap again from the spikes alone, the kernel applied by np.convolve (constant baseline)
    assert _gap_by_convolve(y, res.spikes, k, res.lam[0])[0] <= 1e-8


@pytest.mark.parametrize("args", [(0.1, 0.3, 1.2, 0.7, 30.0), (0.1, 0.3, 1.2, 0.7, 120.0)])
def test_without_polish_the_iterate_is_certified_to_tol(args):
    """``polish=False`` (the two-decay search's solves) ends at an interior-point iterate (every
    entry positive: no solve on a support, which would set the others to 0): its gap,
    recomputed from the spikes by ``np.convolve``, is within ``tol``, and its objective within
    ``tol`` of the polished optimum's (solved to 1e-9)."""
    k = TwoDecayKernel(*args)
    rng = np.random.default_rng(3)
    T = 6000
    s = (rng.random(T) < 0.01) * (1.0 + rng.poisson(1.0, T))
    y = k.forward(s) + 0.2 * rng.standard_normal(T)
    lam = 2.0 * 0.2 * k.norm
    fast = deconvolve_two_decay(y, k, lam, tol=1e-6, polish=False)
    best = deconvolve_two_decay(y, k, lam, tol=1e-9)
    gap_fast, f_fast = _gap_by_convolve(y, fast.spikes, k, lam)
    _, f_best = _gap_by_convolve(y, best.spikes, k, lam)
    assert np.all(fast.spikes > 0) and np.any(best.spikes == 0)
    assert gap_fast <= 1e-6 and fast.gap[0] <= 1e-6
    assert f_best <= f_fast <= f_best * (1.0 + 1e-6)


def test_precise_factor_is_the_exact_factor_rounded():
    # against the L D L^T of the same banded matrix in rational arithmetic: barrier weights over
    # 18 orders and three roots near 1, where the double factor is off by a third
    from fractions import Fraction

    from nnfit.calcium.two_decay import _assemble, _ldl, _ldl_precise

    k = TwoDecayKernel(0.4, 0.8, 2.4, 0.7, 120.0)
    g, b = k.coefficients()
    T = 40
    Dg = 10.0 ** np.random.default_rng(0).uniform(-8, 10, T)
    gc = [Fraction(1)] + [-Fraction(v) for v in g]
    nc = [Fraction(0), Fraction(b[0]), Fraction(b[1]), Fraction(0)]

    def band(c: int, j: int) -> Fraction:
        terms = (Fraction(Dg[c + m]) * gc[m - j] * gc[m] + nc[m - j] * nc[m]
                 for m in range(j, min(4, T - c)))  # fmt: skip
        return sum(terms, Fraction(0))

    M = [[band(c, j) for j in range(4)] for c in range(T)]
    L = [[Fraction(0)] * 4 for _ in range(T)]
    D = [Fraction(0)] * T
    for i in range(T):
        e = {}
        for j in (3, 2, 1):
            if i - j >= 0:
                above = (e[j + m] * L[i - j][m] for m in range(1, 4 - j) if i - j - m >= 0)
                e[j] = M[i - j][j] - sum(above, Fraction(0))
                L[i][j] = e[j] / D[i - j]
        D[i] = M[i][0] - sum((e[j] * L[i][j] for j in e), Fraction(0))
    exact = np.array([[float(D[i])] + [float(L[i][j]) for j in (1, 2, 3)] for i in range(T)])
    precise = np.zeros((T, 5))
    assert _ldl_precise(Dg, g, b, precise, 0.0)
    np.testing.assert_allclose(precise[:, :4], exact, rtol=4e-16, atol=0)
    np.testing.assert_allclose(precise[:, 4], 1.0 / exact[:, 0], rtol=4e-16, atol=0)
    Mb, double = np.empty((T, 4)), np.zeros((T, 5))
    _assemble(Dg, g, b, Mb)
    assert _ldl(Mb, double, 0.0)
    assert np.max(np.abs(double[:, :4] - exact) / np.maximum(np.abs(exact), 1e-300)) > 1e-3


def test_long_traces_are_certified_in_few_iterations():
    k = TwoDecayKernel(0.05, 0.6, 4.0, 0.5, 30.0)
    rng = np.random.default_rng(2)
    T = 30_000
    s = (rng.random((2, T)) < 0.01) * (1 + rng.poisson(1, (2, T)))
    drift = 0.2 * np.sin(np.arange(T) / 900.0)
    Y = np.stack([k.forward(si) for si in s]) + 1.0 + drift + 0.3 * rng.standard_normal((2, T))
    res = deconvolve_two_decay(Y, k, lam=1.5, n_jobs=2)
    assert np.all(res.converged) and np.all(res.gap <= 1e-9) and np.all(res.kkt <= 1e-9)
    assert np.all(res.iterations <= 30)
    assert res.spikes.shape == (2, T) and np.all(res.spikes >= 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau_decay2": 0.1}, "tau_decay2 must be"),
        ({"fraction": 1.5}, "fraction"),
        ({"tau_rise": 0.5}, "tau_rise"),
    ],
)
def test_kernel_refuses_bad_kinetics(kwargs, match):
    args = {"tau_rise": 0.02, "tau_decay": 0.15, "tau_decay2": 1.0, "fraction": 0.7, "fs": 60.0}
    with pytest.raises(ValueError, match=match):
        TwoDecayKernel(**{**args, **kwargs})


def test_solver_refuses_bad_input():
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    y = np.zeros(100)
    with pytest.raises(ValueError, match="baseline must be"):
        deconvolve_two_decay(y, k, 0.1, baseline="wavy")
    with pytest.raises(ValueError, match="lam must be > 0"):
        deconvolve_two_decay(y, k, 0.0)
    with pytest.raises(ValueError, match="one per cell"):
        deconvolve_two_decay(np.zeros((3, 100)), k, [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or inf"):
        deconvolve_two_decay(np.full(100, np.nan), k, 0.1)
    with pytest.raises(ValueError, match="T >= 8"):
        deconvolve_two_decay(np.zeros(5), k, 0.1)
    with pytest.raises(ValueError, match="T = 100 rows"):
        deconvolve_two_decay(y, k, 0.1, baseline=np.ones((99, 2)))
    with pytest.raises(ValueError, match="dependent columns"):
        deconvolve_two_decay(y, k, 0.1, baseline=np.ones((100, 2)))
    for kwargs, name in [({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter"),
                         ({"n_jobs": -2}, "n_jobs"), ({"drift_rounds": -1}, "drift_rounds")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            deconvolve_two_decay(y, k, 0.1, **kwargs)
    with pytest.raises(TypeError, match="TwoDecayKernel"):
        deconvolve_two_decay(y, (0.02, 0.15), 0.1)


def test_threads_give_the_answer_of_one_thread():
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    Y = np.stack([_trace(k, 600, seed) for seed in range(5)])
    one = deconvolve_two_decay(Y, k, lam=[0.1, 0.2, 0.3, 0.2, 0.1])
    two = deconvolve_two_decay(Y, k, lam=[0.1, 0.2, 0.3, 0.2, 0.1], n_jobs=2)
    np.testing.assert_array_equal(one.spikes, two.spikes)
    np.testing.assert_array_equal(one.objective, two.objective)


def test_default_lam_is_the_deconvolve_rule():
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    Y = np.stack([_trace(k, 2000, seed) for seed in (8, 9)])
    res = deconvolve_two_decay(Y, k)
    np.testing.assert_allclose(res.lam, LAM_Z * estimate_noise(Y, 60.0) * k.norm, rtol=1e-12)
    np.testing.assert_allclose(res.noise, estimate_noise(Y, 60.0), rtol=1e-12)
    assert res.estimated["lam"] and np.all(res.converged)
    # the closed-form norm is that of the samples
    assert k.norm == pytest.approx(np.linalg.norm(k.samples(20_000)), rel=1e-12)


def test_grid_holds_one_decay_kernels_and_ordered_pairs():
    grid = two_decay_grid(0.1)
    assert all(t1 > 0.1 for t1, _, _ in grid)
    one = [g for g in grid if g[2] == 1.0]
    assert all(t1 == t2 for t1, t2, _ in one) and len(one) == len({g[0] for g in one})
    assert all(t2 > GRID_MIN_RATIO * t1 for t1, t2, f in grid if f < 1.0)
    assert len(two_decay_grid(0.01)) == 108 and two_decay_grid(5.0) == []


def _cells(kernel: TwoDecayKernel, n: int, T: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    s = (rng.random((n, T)) < 0.01) * (1 + rng.poisson(1, (n, T)))
    return np.stack([kernel.forward(r) for r in s]) + 0.15 * rng.standard_normal((n, T))


def test_estimate_finds_a_second_decay_where_there_is_one():
    truth = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    k = estimate_two_decay_kernel(_cells(truth, 2, 3600), 60.0, tau_rise=0.02, n_jobs=2)
    assert k.fraction < 1.0 and k.tau_decay < 0.3 and k.tau_decay2 > 0.6
    # the kernel's shape is close to the simulated one (a coarse grid: not equal)
    n = 240
    assert np.abs(k.samples(n) - truth.samples(n)).max() < 0.1


def test_estimate_keeps_one_decay_where_there_is_one():
    decay = GRID_FAST[5]  # on the grid: the search can find it exactly
    truth = TwoDecayKernel(0.02, decay, decay, 1.0, 60.0)
    k = estimate_two_decay_kernel(_cells(truth, 2, 3600), 60.0, tau_rise=0.02, n_jobs=2)
    assert k.fraction == 1.0 and k.tau_decay == decay


def test_estimate_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty list"):
        estimate_two_decay_kernel([], 60.0)
    with pytest.raises(ValueError, match="shorter rise"):
        estimate_two_decay_kernel(np.zeros((1, 1000)), 60.0, tau_rise=5.0)
    with pytest.raises(ValueError, match="too short to search"):
        estimate_two_decay_kernel(np.zeros((3, 400)), 60.0, tau_rise=0.02)


def test_time_stamp_is_that_of_the_two_decay_kernel():
    from nnfit.calcium import spike_time_offset

    # one decay: the second is ignored; an instantaneous rise: half a frame; a slow one: ~0
    assert spike_time_offset(0.05, 0.5, 30.0, tau_decay2=2.0, fraction=1.0) == spike_time_offset(
        0.05, 0.5, 30.0
    )
    assert spike_time_offset(1e-5, 0.1, 30.0, tau_decay2=1.0, fraction=0.7) == pytest.approx(0.5)
    assert spike_time_offset(0.2, 0.5, 30.0, tau_decay2=2.0, fraction=0.7) < 0.05
    # the fast decay shapes the first frames: the offset differs from the slow decay's alone
    two = spike_time_offset(0.02, 0.05, 60.0, tau_decay2=1.0, fraction=0.7)
    assert two != spike_time_offset(0.02, 1.0, 60.0)
    with pytest.raises(ValueError, match="fraction"):
        spike_time_offset(0.02, 0.05, 60.0, tau_decay2=1.0, fraction=1.5)
    with pytest.raises(ValueError, match="tau_decay2"):
        spike_time_offset(0.02, 0.5, 60.0, tau_decay2=0.1, fraction=0.5)
    k = TwoDecayKernel(0.02, 0.05, 1.0, 0.7, 60.0)
    res = deconvolve_two_decay(_trace(k, 600, seed=1), k, lam=0.2)
    assert (res.tau_decay2, res.fraction) == (1.0, 0.7)
    assert res.time_offset == pytest.approx(two / 60.0, rel=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_random_kernels_reach_the_dense_optimum(seed):
    # kernels drawn over the frame rates, rises and decays of the indicators in use
    rng = np.random.default_rng(100 + seed)
    fs = float(rng.choice([30.0, 60.0, 122.0, 158.0]))
    tau_rise = float(np.exp(rng.uniform(np.log(0.001), np.log(0.1))))
    t1 = float(np.exp(rng.uniform(np.log(max(0.05, 2 * tau_rise)), np.log(1.0))))
    t2 = t1 * float(np.exp(rng.uniform(0.0, np.log(8.0))))
    k = TwoDecayKernel(tau_rise, t1, t2, float(rng.uniform(0.0, 1.0)), fs)
    T = 300
    y = _trace(k, T, seed) + 0.2 * np.linspace(-1, 1, T)
    B = np.stack([np.ones(T), np.linspace(-1, 1, T)], axis=1)
    Q, _ = np.linalg.qr(B)
    P = np.eye(T) - Q @ Q.T
    A = P @ _dense(k, T)
    lam = float(rng.uniform(0.05, 0.5))
    ref = nnls_gram(A.T @ A, A.T @ (P @ y) - lam, tol=1e-14).x
    f_ref = 0.5 * np.sum((P @ y - A @ ref) ** 2) + lam * ref.sum()
    res = deconvolve_two_decay(y, k, lam, baseline=B)
    assert res.gap[0] <= 1e-9
    assert res.objective[0] <= f_ref * (1 + 1e-10)
    assert res.objective[0] >= f_ref * (1 - 1e-10)


def test_auto_finds_the_drift_where_there_is_one():
    k = TwoDecayKernel(0.05, 0.3, 1.5, 0.6, 30.0)
    T = 9000
    Y = np.stack([_trace(k, T, seed) for seed in (11, 12)])
    drift = 1.0 * np.sin(2 * np.pi * np.arange(T) / 30.0 / 40.0)  # 40 s period
    Y[0] += drift
    res = deconvolve_two_decay(Y, k, baseline="auto")
    assert res.baseline_kind == ["drift", "constant"] and np.all(res.converged)
    # the curve follows the drift (its amplitude shared with the spikes, as with one decay);
    # the clean trace keeps one offset
    assert np.corrcoef(res.baseline[0], drift)[0, 1] > 0.8
    assert np.ptp(res.baseline[1]) == 0.0


def test_a_constant_roi_gets_no_spikes_and_stops_nothing():
    # a dead ROI has no noise, so the lam rule gives 0: floored as in the one-decay solver
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    Y = np.vstack([np.full(2000, 3.0), _trace(k, 2000, seed=13)])
    res = deconvolve_two_decay(Y, k)
    assert np.all(res.converged) and res.spikes[0].sum() < 1e-6
    np.testing.assert_allclose(res.baseline[0], 3.0, atol=1e-6)


@pytest.mark.parametrize("basis", [False, True])
def test_raw_fluorescence_offsets_keep_the_certificate(basis):
    # an offset of 1e4-1e6 (raw fluorescence) is fitted, so the answer is the offset-free
    # one, certified to tol: its objective on the offset-free trace is within tol of the
    # offset-free solve's (the baseline projected out by least squares, the kernel by
    # np.convolve)
    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    T = 3000
    y = _trace(k, T, seed=21)
    u = np.linspace(0.0, 1.0, T)
    B = np.stack([np.ones(T), np.cos(np.pi * u)], axis=1) if basis else np.ones((T, 1))
    baseline = B if basis else "constant"
    lam = 0.05
    h = k.samples(T)

    def objective(s):
        r = y - np.convolve(s, h)[:T]
        r -= B @ np.linalg.lstsq(B, r, rcond=None)[0]
        return 0.5 * r @ r + lam * s.sum()

    ref = deconvolve_two_decay(y, k, lam, baseline)
    assert ref.spikes.sum() > 10.0
    for offset in (1e4, 1e6):
        drift = offset * B[:, 0] + (5.0 * B[:, 1] if basis else 0.0)
        res = deconvolve_two_decay(y + drift, k, lam, baseline)
        assert res.converged[0]
        assert abs(objective(res.spikes) - objective(ref.spikes)) <= 1e-9 * objective(ref.spikes)
        np.testing.assert_allclose(res.baseline - drift, ref.baseline, atol=1e-6)


@pytest.mark.parametrize(
    ("baseline", "level"), [("none", 0.0), ("constant", 0.0), ("constant", 1.0)]
)
@pytest.mark.parametrize("lam", [1e-12, 0.1])
def test_a_flat_trace_is_solved_at_no_spikes(baseline, level, lam):
    # no spikes is the optimum (the gradient lam - K^T Pi y is lam there) even where the
    # optimum's value is 0 and no relative gap can certify it
    k = TwoDecayKernel(0.05, 0.3, 1.0, 0.7, 30.0)
    res = deconvolve_two_decay(np.full((2, 3000), level), k, lam, baseline)
    assert np.all(res.spikes == 0.0) and np.all(res.converged) and np.all(res.iterations == 0)
    np.testing.assert_allclose(res.baseline, level, atol=1e-12)
