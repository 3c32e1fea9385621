"""``deconvolve`` reaches the optimum of CaTune's objective and certifies it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import cholesky, solve_triangular
from scipy.optimize import nnls

from nnfit.calcium import deconvolve, run_deconvolution, simulate_recording
from nnfit.calcium.ar2 import AR2Convolution


def objective(y, s, tr, td, fs, lam, centre):
    r = y - AR2Convolution(len(y), tr, td, fs).forward(s)
    if centre:
        r = r - r.mean()
    return 0.5 * r @ r + lam * s.sum()


def exact_optimum(y, tr, td, fs, lam, centre):
    """Independent reference: the problem as an NNLS, solved by Lawson-Hanson active sets."""
    T = len(y)
    K = AR2Convolution(T, tr, td, fs).todense()[:, :-1]  # s[T-1] cannot change the fit
    yy = y.copy()
    if centre:
        K = K - K.mean(axis=0)
        yy = y - y.mean()
    Q = K.T @ K
    q = K.T @ yy - lam
    R = cholesky(Q)  # Q = R^T R
    s, _ = nnls(R, solve_triangular(R.T, q, lower=True), maxiter=50 * T)
    s = np.r_[s, 0.0]
    return s, objective(y, s, tr, td, fs, lam, centre)


CASES = [
    (0.05, 0.5, 30.0, 0.3, 0.2),
    (0.02, 0.15, 120.0, 0.5, 0.1),
    (0.1, 1.2, 60.0, 1.0, 0.3),
]


@pytest.mark.parametrize(("tr", "td", "fs", "lam", "noise"), CASES)
@pytest.mark.parametrize("baseline", ["none", "constant"])
def test_matches_exact_nnls_optimum(tr, td, fs, lam, noise, baseline):
    rec = simulate_recording(
        1,
        300,
        fs=fs,
        tau_rise=tr,
        tau_decay=td,
        rate_hz=2.0,
        noise=noise,
        baseline=0.7 if baseline == "constant" else 0.0,
        seed=3,
    )
    y = rec.traces[0]
    centre = baseline == "constant"
    s_ref, f_ref = exact_optimum(y, tr, td, fs, lam, centre)
    res = deconvolve(y, fs, tr, td, lam=lam, baseline=baseline)
    f = objective(y, res.spikes, tr, td, fs, lam, centre)
    assert res.converged[0] and res.gap[0] <= 1e-9
    assert f == pytest.approx(res.objective[0], rel=1e-12)
    # certified: within the gap of the optimum, and the optimum really is f_ref
    assert (f - f_ref) / f_ref <= 1e-9
    assert f >= f_ref * (1 - 1e-12)
    np.testing.assert_allclose(res.spikes, s_ref, atol=1e-4 * max(1.0, s_ref.max()))
    assert res.spikes.min() >= 0.0
    if centre:
        fit = res.baseline + res.calcium
        assert abs(np.mean(y - fit)) < 1e-9


def test_at_or_below_converged_fista(rng):
    rec = simulate_recording(2, 2000, rate_hz=1.0, noise=0.2, seed=5)
    lam = 0.4
    ref = run_deconvolution(rec.traces, 30.0, 0.05, 0.5, lam, tolerance=1e-13, max_iters=200000)
    res = deconvolve(rec.traces, 30.0, 0.05, 0.5, lam=lam, baseline="none")
    for i in range(2):
        f_ref = objective(rec.traces[i], ref[i], 0.05, 0.5, 30.0, lam, False)
        f = res.objective[i]
        assert f <= f_ref * (1 + 1e-9)
        assert abs(f - f_ref) / f_ref < 1e-6


def test_at_or_below_oasis_ar2():
    from oasis.oasis_methods import oasisAR2

    from nnfit.calcium.ar2 import AR2Coefficients

    tr, td, fs, lam = 0.05, 0.5, 30.0, 0.5
    rec = simulate_recording(1, 6000, rate_hz=1.0, noise=0.2, seed=9)
    y = rec.traces[0]
    c = AR2Coefficients(tr, td, fs)
    # oasis's response starts at h[0] = 1: shift by one frame and rescale lam by its peak
    _, s_o = oasisAR2(y[1:].copy(), c.g1, c.g2, lam=lam / c.alpha)
    s_o = np.r_[np.asarray(s_o) / c.alpha, 0.0]
    f_o = objective(y, np.maximum(s_o, 0), tr, td, fs, lam, False)
    res = deconvolve(y, fs, tr, td, lam=lam, baseline="none")
    assert res.objective[0] <= f_o


def test_rows_threads_and_one_d_agree():
    rec = simulate_recording(4, 1500, rate_hz=1.0, noise=0.2, baseline=0.3, seed=2)
    a = deconvolve(rec.traces, 30.0, 0.05, 0.5, lam=0.3, baseline="constant")
    b = deconvolve(rec.traces, 30.0, 0.05, 0.5, lam=0.3, baseline="constant", n_jobs=2)
    np.testing.assert_array_equal(a.spikes, b.spikes)
    one = deconvolve(rec.traces[2], 30.0, 0.05, 0.5, lam=0.3, baseline="constant")
    assert one.spikes.shape == (1500,)
    np.testing.assert_array_equal(one.spikes, a.spikes[2])


def test_drift_baseline_beats_constant_on_drift():
    fs, T = 30.0, 9000
    rec = simulate_recording(3, T, rate_hz=0.5, noise=0.15, seed=4)
    t = np.arange(T) / fs
    drift = 0.5 * np.sin(2 * np.pi * t / 90.0 + np.arange(3)[:, None])
    y = rec.traces + drift
    scores = {}
    for kind in ("constant", "drift", "auto"):
        res = deconvolve(y, fs, 0.05, 0.5, baseline=kind)
        scores[kind] = np.mean([np.corrcoef(res.spikes[i], rec.spikes[i])[0, 1] for i in range(3)])
        if kind == "auto":
            assert res.baseline_kind == ["drift"] * 3
    assert scores["drift"] > scores["constant"] + 0.05
    assert scores["auto"] == scores["drift"]


def test_auto_picks_constant_on_a_flat_baseline():
    rec = simulate_recording(3, 9000, rate_hz=0.5, noise=0.15, baseline=1.0, seed=4)
    res = deconvolve(rec.traces, 30.0, 0.05, 0.5)
    assert res.baseline_kind == ["constant"] * 3
    assert res.estimated == {"kinetics": False, "lam": True}


def test_estimates_kinetics_when_none_given():
    rec = simulate_recording(4, 18000, tau_rise=0.05, tau_decay=0.7, rate_hz=0.5, noise=0.1, seed=8)
    res = deconvolve(rec.traces, 30.0)
    assert res.estimated["kinetics"]
    assert res.tau_decay == pytest.approx(0.7, rel=0.15)
    assert np.mean([np.corrcoef(res.spikes[i], rec.spikes[i])[0, 1] for i in range(4)]) > 0.6


def test_bad_arguments():
    y = np.zeros(100)
    with pytest.raises(ValueError, match="baseline"):
        deconvolve(y, 30.0, 0.05, 0.5, lam=1.0, baseline="linear")
    with pytest.raises(ValueError, match="tau_rise and tau_decay"):
        deconvolve(y, 30.0, 0.05, None, lam=1.0)
    with pytest.raises(ValueError, match="lam"):
        deconvolve(y, 30.0, 0.05, 0.5, lam=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        deconvolve(np.full(100, np.nan), 30.0, 0.05, 0.5, lam=1.0)
    with pytest.raises(ValueError, match="tau_rise must be smaller"):
        deconvolve(y, 30.0, 0.5, 0.05, lam=1.0)


def test_zero_trace_gives_zero_spikes():
    res = deconvolve(np.zeros(500), 30.0, 0.05, 0.5, lam=0.1, baseline="constant")
    assert np.all(res.spikes < 1e-9)


@pytest.mark.parametrize("baseline", ["constant", "auto"])
def test_raw_fluorescence_offsets_keep_the_certificate(baseline):
    # raw fluorescence sits at 1e3-1e6 over transients of ~1; the offset is fitted, so the
    # answer is the offset-free one, certified to tol, and the certificate is true: its
    # objective on the offset-free trace is within tol of the offset-free solve's
    y = simulate_recording(2, 3000, tau_rise=0.05, tau_decay=0.6, rate_hz=0.5, seed=5).traces
    ref = deconvolve(y, 30.0, 0.05, 0.6, lam=0.3, baseline=baseline)
    for offset in (1e3, 1e4, 1e6):
        res = deconvolve(y + offset, 30.0, 0.05, 0.6, lam=0.3, baseline=baseline)
        assert np.all(res.converged) and res.baseline_kind == ref.baseline_kind
        # (a drift's objective is that of its final curve: compared through the baseline below)
        for i in np.flatnonzero(np.array(ref.baseline_kind) == "constant"):
            f = objective(y[i], res.spikes[i], 0.05, 0.6, 30.0, 0.3, True)
            f_ref = objective(y[i], ref.spikes[i], 0.05, 0.6, 30.0, 0.3, True)
            assert abs(f - f_ref) <= 1e-9 * f_ref
        np.testing.assert_allclose(res.baseline - offset, ref.baseline, atol=1e-6)


@pytest.mark.parametrize("T", [2, 3, 4, 5, 7, 60])
def test_fused_newton_solve_matches_dense(T):
    """The fused pentadiagonal factor + solve give (K^T K + D)^-1 rhs to rounding."""
    from nnfit.calcium._ipm import _newton_solve, _newton_solve_ref, _penta_factor
    from nnfit.calcium.ar2 import AR2Coefficients

    c = AR2Coefficients(0.05, 0.5, 30.0)
    rng = np.random.default_rng(T)
    Dg = rng.uniform(1e-3, 1e3, T)
    dd, l1, l2 = np.empty(T), np.empty(T), np.empty(T)
    _penta_factor(Dg, c.alpha**2, c.g1, c.g2, dd, l1, l2)
    G = np.eye(T) - c.g1 * np.eye(T, k=-1) - c.g2 * np.eye(T, k=-2)
    P = np.eye(T)
    P[-1, -1] = 0.0
    A = c.alpha**2 * P + G.T @ np.diag(Dg) @ G
    rhs = rng.standard_normal(T)
    ref = G @ np.linalg.solve(A, G.T @ rhs)
    out, out2, t1, t2 = np.empty(T), np.empty(T), np.empty(T), np.empty(T)
    _newton_solve(dd, l1, l2, c.g1, c.g2, rhs, t1, t2, out)
    _newton_solve_ref(dd, l1, l2, c.g1, c.g2, rhs, t1, t2, out2)
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() <= 1e-12 * scale
    assert np.abs(out2 - ref).max() <= 1e-12 * scale


@pytest.mark.parametrize("T", [2, 3, 4, 5, 7, 60])
@pytest.mark.parametrize("ca", [0.0, 0.7])
def test_fused_predictor_and_corrector_match_dense(T, ca):
    """The sweeps with the factorisation, right-hand side and epilogues fused into them give
    the predictor and corrector directions, dual steps and boundary steps of the dense
    Newton system (baseline correction ``Mk c`` included)."""
    from nnfit.calcium._ipm import (
        _corrector_back,
        _corrector_forward,
        _factor_forward,
        _newton_back,
        _predictor_back,
    )
    from nnfit.calcium.ar2 import AR2Coefficients

    c = AR2Coefficients(0.05, 0.5, 30.0)
    rng = np.random.default_rng(100 + T)
    s, z = rng.uniform(0.1, 2.0, T), rng.uniform(0.1, 2.0, T)
    grad, Mk = rng.standard_normal(T), rng.standard_normal(T)
    Dg = z / s
    G = np.eye(T) - c.g1 * np.eye(T, k=-1) - c.g2 * np.eye(T, k=-2)
    P = np.eye(T)
    P[-1, -1] = 0.0
    M = G @ np.linalg.solve(c.alpha**2 * P + G.T @ np.diag(Dg) @ G, G.T)  # (K^T K + D)^-1
    dd, l1, l2, tmp = np.empty(T), np.empty(T), np.empty(T), np.empty(T)
    dxa, dza = np.empty(T), np.empty(T)
    _factor_forward(Dg, c.alpha**2, c.g1, c.g2, dd, l1, l2, grad, tmp)
    ap, ad, sxz, szz, sxx = _predictor_back(
        l1, l2, c.g1, c.g2, tmp, s, z, 1 / s, 1 / z, ca != 0.0, Mk, ca, dxa, dza
    )
    want_x = Mk * ca - M @ grad
    want_z = -z - Dg * want_x
    scale = np.abs(want_x).max()
    assert np.abs(dxa - want_x).max() <= 1e-11 * scale
    assert np.abs(dza - want_z).max() <= 1e-11 * np.abs(want_z).max()
    assert ap == pytest.approx(1 / max(1.0, np.max(-want_x / s)), rel=1e-10)
    assert ad == pytest.approx(1 / max(1.0, np.max(-want_z / z)), rel=1e-10)
    mu_aff = np.mean((s + ap * want_x) * (z + ad * want_z))
    assert np.mean(s * z) + (ap * sxz + ad * szz + ap * ad * sxx) / T == pytest.approx(mu_aff)
    # a second right-hand side in the same sweep (the factor read as it is formed), its
    # backward half after: M^-1 Mk
    tmp2, tmp3, out = np.empty(T), np.empty(T), np.empty(T)
    _factor_forward(Dg, c.alpha**2, c.g1, c.g2, dd, l1, l2, grad, tmp2, Mk, tmp3)
    assert np.array_equal(tmp, tmp2)
    if T >= 4:
        _newton_back(l1, l2, c.g1, c.g2, tmp3, out)
        assert np.abs(out - M @ Mk).max() <= 1e-11 * np.abs(M @ Mk).max()
    sm, sc, dx, dz = 0.3, np.empty(T), np.empty(T), np.empty(T)
    kr = _corrector_forward(
        dd, l1, l2, c.g1, c.g2, s, z, dxa, dza, grad, 1 / s, sm, ca != 0.0, Mk, sc, tmp
    )
    rc = s * z + dxa * dza - sm
    rhs = -(grad - z) - rc / s
    assert np.allclose(sc, rc, rtol=1e-14, atol=0) and kr == pytest.approx(Mk @ rhs if ca else 0.0)
    a = _corrector_back(l1, l2, c.g1, c.g2, tmp, z, 1 / s, 1 / z, sc, ca != 0.0, Mk, ca, dx, dz)
    want_x = M @ rhs + Mk * ca
    want_z = -(rc + z * want_x) / s
    assert np.abs(dx - want_x).max() <= 1e-11 * np.abs(want_x).max()
    assert np.abs(dz - want_z).max() <= 1e-11 * np.abs(want_z).max()
    assert a == pytest.approx(1 / max(1.0, np.max(-want_x / s), np.max(-want_z / z)), rel=1e-10)


def test_stalled_gap_ends_the_iterations_certified():
    """On this low-noise trace with a small lam the gap stalls near 1e-9 (rounding in the
    Newton systems) and running on takes about 80 steps; the iterations stop at the stall and
    the exact step on the support certifies the optimum. The duality gap is recomputed here
    from the spikes alone, with the kernel applied by ``np.convolve``."""
    from nnfit.calcium import build_kernel

    y = simulate_recording(4, 3000, rate_hz=1.0, noise=0.05, seed=0).traces[0]
    lam = 0.02
    res = deconvolve(y, 30.0, 0.05, 0.5, lam=lam, baseline="none")
    assert res.converged[0] and res.iterations[0] <= 30
    h = build_kernel(0.05, 0.5, 30.0)
    s = res.spikes
    r = y - np.convolve(s, h)[: len(y)]
    ktr = np.convolve(r[::-1], h)[: len(y)][::-1]  # K^T r
    primal = 0.5 * r @ r + lam * s.sum()
    theta = min(1.0, lam / ktr.max())
    dual = theta * (y @ r) - 0.5 * theta**2 * (r @ r)
    assert primal == pytest.approx(res.objective[0], rel=1e-12)
    assert (primal - dual) / primal <= 1e-9


def _certified_gap(y, s, lam, fs, tr, td, centre):
    """Relative duality gap at ``s``, from the spikes alone (kernel applied by np.convolve)."""
    from nnfit.calcium import build_kernel

    h = build_kernel(tr, td, fs)
    r = y - np.convolve(s, h)[: len(y)]
    if centre:
        r = r - r.mean()
    ktr = np.convolve(r[::-1], h)[: len(y)][::-1]
    primal = 0.5 * r @ r + lam * s.sum()
    theta = min(1.0, lam / ktr.max())
    return (primal - (theta * (y @ r) - 0.5 * theta**2 * (r @ r))) / primal


@pytest.mark.parametrize(("fs", "tr", "td"), [(30.0, 0.4, 1.8), (120.0, 0.4, 1.5)])
def test_without_polish_the_iterate_is_certified_to_tol(fs, tr, td):
    """``polish=False`` (the decay search's solves) ends at an interior-point iterate: its gap,
    recomputed from the spikes alone by ``np.convolve``, is within ``tol``, and its objective
    is within ``tol`` of the polished optimum's (solved to 1e-9)."""
    from nnfit.calcium.estimate import estimate_noise, lam_from_noise
    from nnfit.calcium.exact import solve_exact

    y = simulate_recording(1, 6000, fs=fs, tau_rise=tr, tau_decay=td, noise=0.2, seed=4).traces
    lam = lam_from_noise(estimate_noise(y, fs), tr, td, fs, 2.0)
    fast = solve_exact(y, fs, tr, td, lam, "constant", tol=1e-6, polish=False)
    best = solve_exact(y, fs, tr, td, lam, "constant", tol=1e-9)
    assert _certified_gap(y[0], fast.spikes[0], lam[0], fs, tr, td, True) <= 1e-6
    f_fast = objective(y[0], fast.spikes[0], tr, td, fs, lam[0], True)
    f_best = objective(y[0], best.spikes[0], tr, td, fs, lam[0], True)
    assert f_best <= f_fast <= f_best * (1.0 + 1e-6)


@pytest.mark.parametrize("centre", [False, True])
@pytest.mark.parametrize("polish_at", [1e-9, 1e-6])
def test_two_traces_side_by_side_equal_each_alone(centre, polish_at):
    """Two traces solved together (sweeps interleaved, each with its own stop) give bit for bit
    what each gives alone: iterations, certificate, baseline and spikes, also when one stops
    first (different lam and noise: 10 to 19 iterations here) and when the exact step on the
    support ends one inside the loop (``polish_at`` above ``tol``). Every answer certifies."""
    from nnfit.calcium._ipm import ipm_traces
    from nnfit.calcium.ar2 import AR2Coefficients

    c = AR2Coefficients(0.05, 0.5, 30.0)
    hsq = float(c.kernel() @ c.kernel())
    low = simulate_recording(1, 3000, rate_hz=1.0, noise=0.05, seed=0).traces[0]
    high = simulate_recording(1, 3000, rate_hz=0.5, noise=0.3, baseline=0.5, seed=3).traces[0]
    pairs = [(low, high, 0.02, 0.6), (high, low, 0.6, 0.02), (low, high, 0.3, 0.3)]
    iters = set()
    for ya, yb, la, lb in pairs:
        Y = np.stack([ya, yb])
        lam = np.array([la, lb])
        S, info = np.zeros_like(Y), np.empty((2, 5))
        ipm_traces(Y, c.params(), lam, hsq, centre, 1e-9, 100, S, info, polish_at)
        for k in range(2):
            S1, info1 = np.zeros((1, Y.shape[1])), np.empty((1, 5))
            ipm_traces(Y[k : k + 1].copy(), c.params(), lam[k : k + 1], hsq, centre, 1e-9, 100,
                       S1, info1, polish_at)  # fmt: skip
            np.testing.assert_array_equal(S[k], S1[0])
            np.testing.assert_array_equal(info[k], info1[0])
            assert _certified_gap(Y[k], S[k], lam[k], 30.0, 0.05, 0.5, centre) <= 1e-9
        iters.add(tuple(info[:, 0]))
    assert any(a != b for a, b in iters)  # one trace of a pair went on alone


@pytest.mark.parametrize("baseline", ["none", "constant", "auto", "drift"])
def test_batches_equal_one_trace_at_a_time(baseline):
    """``deconvolve`` on a batch (traces solved in pairs, an odd one alone; with two workers for
    three traces, each alone in its thread) equals it trace by trace, with "auto" switching to
    drift in one trace of a pair."""
    fs, T = 30.0, 6000
    rec = simulate_recording(3, T, rate_hz=0.5, noise=0.15, baseline=0.5, seed=5)
    y = rec.traces.copy()
    y[1] += 0.6 * np.sin(2 * np.pi * np.arange(T) / fs / 60.0)
    res = deconvolve(y, fs, 0.05, 0.5, baseline=baseline)
    if baseline == "auto":
        assert res.baseline_kind == ["constant", "drift", "constant"]
    for i in range(3):
        one = deconvolve(y[i], fs, 0.05, 0.5, lam=res.lam[i], baseline=res.baseline_kind[i])
        np.testing.assert_array_equal(res.spikes[i], one.spikes)
        np.testing.assert_array_equal(res.baseline[i], one.baseline)
        assert res.iterations[i] == one.iterations[0] and res.gap[i] == one.gap[0]
    assert res.converged.all()
    threads = deconvolve(y, fs, 0.05, 0.5, lam=res.lam, baseline=baseline, n_jobs=2)
    np.testing.assert_array_equal(threads.spikes, res.spikes)


@pytest.mark.parametrize(("fs", "tr", "td"), [(120.0, 0.8, 3.0), (158.0, 0.4, 1.8)])
def test_slow_kinetics_at_high_rates_are_certified(fs, tr, td):
    """Both roots near 1 (GCaMP6s-like at 120-158 Hz): the double pentadiagonal factor loses
    the smooth directions of ``G^T D G`` and these cells stopped uncertified after 80-100
    iterations; with the factor in double-double they certify, the gap recomputed from the
    spikes alone by ``np.convolve``."""
    from nnfit.calcium.ar2 import AR2Coefficients
    from nnfit.calcium.exact import solve_exact

    c = AR2Coefficients(tr, td, fs)
    assert (1.0 - c.d) * (1.0 - c.r) < 3e-4  # the precise factor from the start
    y = simulate_recording(2, 12_000, fs=fs, tau_rise=tr, tau_decay=td, noise=0.1, seed=2).traces
    res = deconvolve(y, fs, tr, td, baseline="constant")
    assert np.all(res.converged) and np.all(res.gap <= 1e-9) and np.all(res.iterations <= 40)
    for i in range(2):
        assert _certified_gap(y[i], res.spikes[i], res.lam[i], fs, tr, td, True) <= 1e-8
    # a pair side by side gives what each gives alone
    one = solve_exact(y[1:], fs, tr, td, res.lam[1:], "constant")
    np.testing.assert_array_equal(one.spikes[0], res.spikes[1])
