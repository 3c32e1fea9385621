"""Properties of run_deconvolution (the plan's solver tests) and of the kernel operator."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import (
    build_kernel,
    load_tuning_data,
    run_deconvolution,
    save_for_tuning,
    simulate_recording,
)
from nnfit.calcium.ar2 import AR2Convolution
from nnfit.calcium.fista import kernel_recursion
from nnfit.operators import MatrixOperator, dottest

TR, TD, FS = 0.02, 0.4, 30.0


def make_synthetic_trace(kernel, n, spike_locs, amplitude=1.0):
    s = np.zeros(n)
    s[list(spike_locs)] = amplitude
    return np.convolve(s, kernel)[:n]


def conv_matrix(kernel, n):
    """The explicit (n x n) causal convolution matrix: M[i, j] = h[i - j]."""
    m = np.zeros((n, n))
    for j in range(n):
        seg = kernel[: n - j]
        m[j : j + len(seg), j] = seg
    return m


def test_delta_impulse_recovery():
    h = build_kernel(TR, TD, FS)
    trace = h.copy()  # a single spike at t = 0
    s = run_deconvolution(trace, FS, TR, TD, 0.001)
    peak = int(np.argmax(s))
    assert peak <= 2 and s[peak] > 0.1
    assert s.sum() - s[peak] < s[peak]


def test_zero_trace_produces_zero_solution():
    s, info = run_deconvolution(np.zeros(100), FS, TR, TD, 0.1, return_info=True)
    assert s.max() < 1e-10
    assert info.iterations[0] == 6 and info.converged[0] and info.objective[0] == 0.0


def test_convergence_within_max_iters():
    h = build_kernel(TR, TD, FS)
    trace = make_synthetic_trace(h, 200, [10, 50, 100, 150])
    s, info = run_deconvolution(trace, FS, TR, TD, 0.01, return_info=True)
    assert info.converged[0] and info.iterations[0] < 2000
    assert np.all(s >= 0)
    for loc in (10, 50, 100, 150):
        assert s[loc - 1 : loc + 2].sum() > 0.5


def test_solution_non_negative():
    h = build_kernel(TR, TD, FS)
    t = np.arange(300)
    trace = make_synthetic_trace(h, 300, [30, 120, 200]) + 0.3 * np.sin(t / 5.0)
    assert np.all(run_deconvolution(trace, FS, TR, TD, 0.01) >= 0.0)


def test_deterministic_output(rng):
    y = simulate_recording(4, 2000, seed=3).traces
    a = run_deconvolution(y, 30.0, 0.05, 0.5, 0.3)
    b = run_deconvolution(y, 30.0, 0.05, 0.5, 0.3)
    assert np.array_equal(a, b)
    # Same result whichever cells share the call (cells are independent).
    assert np.array_equal(run_deconvolution(y[2], 30.0, 0.05, 0.5, 0.3), a[2])


def test_reconvolution_quality():
    h = build_kernel(TR, TD, FS)
    trace = make_synthetic_trace(h, 200, [10, 50, 100, 150])
    s = run_deconvolution(trace, FS, TR, TD, 0.001)
    recon = np.convolve(s, h)[:200]
    assert np.linalg.norm(trace - recon) / np.linalg.norm(trace) < 0.1


def test_single_trace_1d_input():
    h = build_kernel(TR, TD, FS)
    out = run_deconvolution(make_synthetic_trace(h, 200, [40]), FS, TR, TD, 0.01)
    assert out.shape == (200,)


def test_multi_trace_2d_input():
    h = build_kernel(TR, TD, FS)
    y = np.stack([make_synthetic_trace(h, 200, [20 + 50 * i]) for i in range(3)])
    out, info = run_deconvolution(y, FS, TR, TD, 0.01, return_info=True)
    assert out.shape == (3, 200) and info.iterations.shape == (3,)
    for i in range(3):
        assert np.array_equal(out[i], run_deconvolution(y[i], FS, TR, TD, 0.01))
        assert abs(int(np.argmax(out[i])) - (20 + 50 * i)) <= 1


@pytest.mark.parametrize(("tr", "td"), [(0.005, 0.1), (0.05, 1.0)])
def test_various_parameter_sets(tr, td):
    h = build_kernel(tr, td, FS)
    trace = make_synthetic_trace(h, 400, [50, 200, 300])
    s, info = run_deconvolution(trace, FS, tr, td, 0.01, return_info=True)
    assert np.all(s >= 0) and info.converged[0]
    assert {int(i) for i in np.argsort(s)[-3:]} == {50, 200, 300}


def test_high_lambda_suppresses_spikes():
    h = build_kernel(TR, TD, FS)
    trace = 5.0 * make_synthetic_trace(h, 300, [30, 150])
    # The first step is a soft threshold of K^T y / L; lam above max(K^T y) leaves nothing.
    s = run_deconvolution(trace, FS, TR, TD, 1.01 * float(np.max(np.convolve(trace, h[::-1]))))
    assert np.all(s == 0.0)
    assert (
        run_deconvolution(trace, FS, TR, TD, 1.0).sum()
        < run_deconvolution(trace, FS, TR, TD, 0.001).sum()
    )


def test_short_trace():
    s, _info = run_deconvolution(np.linspace(0, 1, 10), FS, TR, TD, 0.01, return_info=True)
    assert s.shape == (10,) and np.all(np.isfinite(s)) and np.all(s >= 0)
    assert run_deconvolution(np.array([0.0, 1.0]), FS, TR, TD, 0.01).shape == (2,)


def test_objective_decreases_apart_from_restarts():
    rec = simulate_recording(1, 1500, seed=5)
    y = rec.traces[0]
    op = AR2Convolution(1500, 0.05, 0.5, 30.0)

    def objective(s):
        r = op.forward(s) - y
        return 0.5 * r @ r + 0.3 * s.sum()

    objs = []
    for k in range(1, 60):
        s, info = run_deconvolution(y, 30.0, 0.05, 0.5, 0.3, max_iters=k, return_info=True)
        objs.append(objective(s))
        assert np.isclose(objs[-1], info.objective[0], rtol=1e-12)
    objs = np.array(objs)
    # FISTA is not monotone, but adaptive restart keeps rises rare and small, and the
    # objective falls by far overall.
    rises = np.diff(objs) > 0
    assert rises.sum() <= len(objs) // 4
    assert objs[-1] < 0.5 * objs[0]
    assert objs[-1] <= objs[5:].min() * (1 + 1e-3)
    final = run_deconvolution(y, 30.0, 0.05, 0.5, 0.3, return_info=True)[1].objective[0]
    assert final <= objs.min() * (1 + 1e-9)


@pytest.mark.parametrize(("tr", "td", "fs", "n"), [(0.05, 0.5, 30.0, 40), (0.1, 0.3, 10.0, 25)])
def test_adjoint_is_transpose_of_explicit_convolution_matrix(tr, td, fs, n, rng):
    h = build_kernel(tr, td, fs)
    m = conv_matrix(h, n)
    op = AR2Convolution(n, tr, td, fs)
    x, r = rng.standard_normal(n), rng.standard_normal(n)
    np.testing.assert_allclose(op.forward(x), m @ x, rtol=0, atol=1e-13 * np.abs(m @ x).max())
    np.testing.assert_allclose(op.adjoint(r), m.T @ r, rtol=0, atol=1e-13 * np.abs(m.T @ r).max())
    np.testing.assert_allclose(op.todense(), m, rtol=0, atol=1e-14)
    # np.convolve with the slice catune uses for the adjoint is the same transpose.
    klen = len(h)
    np.testing.assert_allclose(
        np.convolve(r, h[::-1])[klen - 1 : klen - 1 + n], m.T @ r, rtol=1e-12, atol=1e-14
    )
    assert dottest(op) < 1e-13
    assert dottest(MatrixOperator(m)) < 1e-13


def test_operator_on_long_2d_input_matches_np_convolve(rng):
    tr, td, fs = 0.2, 0.21, 15.0  # close roots: the worst case for D - R cancellation
    op = AR2Convolution(4000, tr, td, fs, n_cells=3)
    h = build_kernel(tr, td, fs)
    s = rng.random((3, 4000)) * (rng.random((3, 4000)) < 0.05)
    ref = np.array([np.convolve(row, h)[:4000] for row in s])
    np.testing.assert_allclose(op.forward(s), ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    _A, _d, _r, K = kernel_recursion(tr, td, fs)
    assert K == len(h)


def test_recovers_simulated_spikes():
    rec = simulate_recording(5, 3000, noise=0.05, rate_hz=0.5, seed=11)
    s = run_deconvolution(rec.traces, rec.fs, rec.tau_rise, rec.tau_decay, 0.05)
    corr = [np.corrcoef(s[i], rec.spikes[i])[0, 1] for i in range(5)]
    assert min(corr) > 0.8


def test_save_load_solve_pipeline(tmp_path):
    h = build_kernel(TR, TD, FS)
    traces = np.stack([make_synthetic_trace(h, 500, [loc]) for loc in (100, 200, 300)])
    save_for_tuning(traces, FS, tmp_path / "rec")
    loaded, meta = load_tuning_data(tmp_path / "rec")
    assert meta["schema_version"] == "1.0.0"
    s = run_deconvolution(loaded, meta["sampling_rate_hz"], TR, TD, 0.01)
    assert s.shape == (3, 500) and np.all(s >= 0)
    assert [int(np.argmax(row)) for row in s] == [100, 200, 300]


BAD = [
    ({"traces": np.array([1.0, np.nan])}, "traces contains 1 NaN/Inf"),
    ({"traces": np.array([1.0, np.inf])}, "traces contains 1 NaN/Inf"),
    ({"traces": np.zeros((2, 3, 4))}, "traces must be 1-D or 2-D; got 3-D"),
    ({"traces": np.zeros((0,))}, "traces is empty"),
    ({"traces": np.zeros((3, 0))}, "traces is empty"),
    ({"traces": np.array(["a", "b"])}, "traces must be a real numeric array"),
    ({"traces": np.array([1 + 1j])}, "traces must be a real numeric array"),
    ({"fs": 0.0}, "fs must be > 0; got 0.0"),
    ({"fs": -30.0}, "fs must be > 0"),
    ({"tau_r": 0.0}, "tau_r must be > 0"),
    ({"tau_d": -0.5}, "tau_d must be > 0"),
    ({"tau_r": 0.5, "tau_d": 0.05}, "tau_r must be smaller than tau_d; got tau_r=0.5 s"),
    ({"tau_r": 0.5, "tau_d": 0.5}, "tau_r must be smaller than tau_d"),
    ({"lam": -0.1}, "lam must be >= 0; got -0.1"),
    ({"lam": float("nan")}, "lam must be finite"),
    ({"max_iters": 0}, "max_iters must be >= 1; got 0"),
    ({"max_iters": 2.5}, "max_iters must be an integer"),
    ({"tolerance": 0.0}, "tolerance must be > 0; got 0.0"),
    ({"tolerance": -1e-6}, "tolerance must be > 0"),
]


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_input_raises_value_error_naming_argument(override, message):
    args = {"traces": np.ones(50), "fs": 30.0, "tau_r": 0.05, "tau_d": 0.5, "lam": 0.1}
    kw = {k: override.pop(k) for k in ("max_iters", "tolerance") if k in override}
    args.update(override)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        run_deconvolution(**args, **kw)


def _three_pass_fista(trace, A, d, r, dK, rK, K, step, thr, lam, tol, max_iters, profile):
    """catune's iteration written out plainly (K y_k, K^T residual, K x_(k+1) per iteration),
    in the operation order of the compiled loop: the reference for its bitwise equality."""
    n = len(trace)
    sol, x_prev, y_k, residual = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    t_f, prev, momentum, mean, restarts = 1.0, np.inf, 0.0, 0.0, 0
    for it in range(1, max_iters + 1):
        D = R = total = 0.0
        for t in range(n):
            if it > 1:
                yv = sol[t] + momentum * (sol[t] - x_prev[t])
                y_k[t] = yv if yv > 0.0 else 0.0
            old = y_k[t - K] if t >= K else 0.0
            D, R = d * D + (y_k[t] - dK * old), r * R + (y_k[t] - rK * old)
            residual[t] = A * (D - R) - trace[t]
            total += residual[t]
        mean = total / n if profile else 0.0
        D = R = 0.0
        for t in range(n - 1, -1, -1):
            v = residual[t] - mean
            old = residual[t + K] - mean if t + K < n else 0.0
            D, R = d * D + (v - dK * old), r * R + (v - rK * old)
            x_prev[t] = sol[t]
            z = y_k[t] - step * (A * (D - R)) - thr
            sol[t] = z if z > 0.0 else 0.0
        D = R = sq = s_sum = 0.0
        for t in range(n):
            old = sol[t - K] if t >= K else 0.0
            D, R = d * D + (sol[t] - dK * old), r * R + (sol[t] - rK * old)
            residual[t] = A * (D - R) - trace[t]
            sq += residual[t] * residual[t]
            s_sum += sol[t]
        if profile:
            mean = sum(residual.tolist()) / n if n else 0.0
            sq = 0.0
            for t in range(n):
                sq += (residual[t] - mean) * (residual[t] - mean)
        obj = 0.5 * sq + lam * s_sum
        if obj > prev and it > 1:
            t_f, restarts = 1.0, restarts + 1
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t_f * t_f)) / 2.0
        momentum, t_f = (t_f - 1.0) / t_new, t_new
        if it > 5 and abs(prev - obj) / (abs(prev) + 1e-10) < tol:
            break
        prev = obj
    return sol, it, obj, restarts


@pytest.mark.parametrize("profile", [False, True])
def test_two_pass_loop_is_bitwise_catunes_three_pass_order(profile):
    """The compiled loop forms the next extrapolated point for both outcomes of the restart
    test in one pass; its spikes, iteration count and objective equal, bit for bit, the
    three-product iteration written out in catune's order, restarts included."""
    from nnfit.calcium.fista import _fista_cell

    rec = simulate_recording(1, 300, fs=30.0, tau_rise=0.05, tau_decay=0.5, noise=0.2, seed=4)
    y = rec.traces[0] + (0.7 if profile else 0.0)
    A, d, r, K = kernel_recursion(0.05, 0.5, 30.0)
    # a step of 1.9 / L overshoots often: the restart branch is taken several times
    step = 1.9 / float(build_kernel(0.05, 0.5, 30.0).sum()) ** 2
    lam = 0.05
    args = (A, d, r, d**K, r**K, K, step, step * lam, lam, 1e-12, 60)
    ref, it_ref, obj_ref, restarts = _three_pass_fista(y, *args, profile)
    assert restarts >= 4
    out, recon = np.empty(300), np.empty(300)
    it, _, obj, _ = _fista_cell(y, out, recon, *args, profile)
    assert it == it_ref and obj == obj_ref
    assert np.array_equal(out, ref)


def test_parallel_cells_equal_serial_bitwise():
    """Cells run in parallel threads, each with unchanged arithmetic: the same bits as one
    thread."""
    import numba

    rec = simulate_recording(6, 2000, seed=8)
    par, info_par = run_deconvolution(rec.traces, 30.0, 0.05, 0.5, 0.3, return_info=True)
    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        ser, info_ser = run_deconvolution(rec.traces, 30.0, 0.05, 0.5, 0.3, return_info=True)
    finally:
        numba.set_num_threads(saved)
    assert np.array_equal(par, ser)
    assert np.array_equal(info_par.iterations, info_ser.iterations)
