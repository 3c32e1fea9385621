"""The kernel functions against PyPI catune 0.1.0 (the reference) and analytic facts."""

import catune
import numpy as np
import pytest

from nnfit.calcium import build_kernel, compute_lipschitz, tau_to_ar2

PARAMS = [
    (0.05, 0.5, 30.0),
    (0.02, 0.4, 30.0),
    (0.005, 0.1, 100.0),
    (0.1, 2.0, 7.5),
    (0.001, 0.01, 1000.0),
    (0.2, 0.21, 15.0),
]


@pytest.mark.parametrize(("tr", "td", "fs"), PARAMS)
def test_matches_catune_exactly(tr, td, fs):
    h = build_kernel(tr, td, fs)
    assert np.array_equal(h, catune.build_kernel(tr, td, fs))
    assert tau_to_ar2(tr, td, fs) == catune.tau_to_ar2(tr, td, fs)
    assert compute_lipschitz(h) == catune.compute_lipschitz(h)


@pytest.mark.parametrize(("tr", "td", "fs"), PARAMS)
def test_kernel_shape_and_ar2_recursion(tr, td, fs):
    h = build_kernel(tr, td, fs)
    assert h[0] == 0.0 and h.max() == 1.0 and np.all(h >= 0)
    assert len(h) == max(2, int(np.ceil(-np.log(1e-6) * td * fs)))
    # Lipschitz of a non-negative kernel is its DC gain squared.
    assert np.isclose(compute_lipschitz(h), h.sum() ** 2, rtol=1e-12)
    # h is the AR(2) impulse response delayed by one frame: h[t] = g1 h[t-1] + g2 h[t-2], t >= 3.
    g1, g2, _, _ = tau_to_ar2(tr, td, fs)
    if len(h) > 3:
        assert np.allclose(h[3:], g1 * h[2:-1] + g2 * h[1:-2], atol=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.5, 0.05, 30.0), "tau_rise must be smaller than tau_decay"),
        ((0.5, 0.5, 30.0), "tau_rise must be smaller than tau_decay"),
        ((0.0, 0.5, 30.0), "tau_rise must be > 0"),
        ((0.05, -1.0, 30.0), "tau_decay must be > 0"),
        ((0.05, 0.5, 0.0), "fs must be > 0"),
        ((0.05, 0.5, float("nan")), "fs must be finite"),
        ((1e-9, 2e-9, 30.0), "tau_decay=2e-09 s is shorter than 1/8 of a frame"),
        ((2.5e-4, 5e-4, 30.0), "shorter than 1/8 of a frame"),
    ],
)
def test_bad_kinetics_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        build_kernel(*args)
    with pytest.raises(ValueError, match=message):
        tau_to_ar2(*args)


def _continuous_spike_trace(tr, td, fs, n_spikes, seed):
    """Isolated unit spikes at continuous times (frames), the continuous kernel sampled."""
    rng = np.random.default_rng(seed)
    gap = int(6 * td * fs) + 10
    frames = np.arange(1, n_spikes + 1) * gap
    times = frames + rng.uniform(0.0, 1.0, n_spikes)
    k = np.arange(gap * (n_spikes + 1), dtype=float)
    y = np.zeros(k.size)
    for t0 in times:
        dt = (k - t0) / fs
        m = dt > 0
        y[m] += np.exp(-dt[m] / td) - np.exp(-dt[m] / tr)
    return y, frames, times


@pytest.mark.parametrize(
    ("tr", "td", "fs"),
    [
        (0.005, 0.5, 30.0),
        (0.02, 0.5, 30.0),
        (0.002, 0.25, 122.0),
        (0.012, 0.38, 60.0),
        (0.18, 0.74, 60.0),
    ],
)
def test_spike_time_offset_is_the_solvers_measured_delay(tr, td, fs):
    """Brute force: spikes at random sub-frame times, deconvolved without noise by the exact
    solver; the mass-weighted delay from the reported frames to the true times is the offset."""
    from nnfit.calcium import deconvolve, spike_time_offset

    y, frames, times = _continuous_spike_trace(tr, td, fs, 150, seed=int(fs))
    res = deconvolve(y, fs, tr, td, lam=1e-4, baseline="none")
    num = den = 0.0
    for f0, t0 in zip(frames, times, strict=True):
        idx = np.arange(f0 - 3, f0 + 6)
        w = res.spikes[idx]
        num += float(w @ (t0 - idx))
        den += float(w.sum())
    measured = num / den
    offset = spike_time_offset(tr, td, fs)
    assert abs(measured - offset) < 0.02, (measured, offset)
    assert res.time_offset == pytest.approx(offset / fs)


def test_spike_time_offset_limits():
    from nnfit.calcium import spike_time_offset

    assert spike_time_offset(1e-6, 0.5, 30.0) == pytest.approx(0.5, abs=1e-3)
    slow = [spike_time_offset(tr, 1.0, 30.0) for tr in (0.01, 0.05, 0.2)]
    assert slow[0] > slow[1] > slow[2] >= 0.0


def test_a_decay_given_in_ms_is_flagged_once(caplog, monkeypatch):
    from nnfit.calcium import kernel
    from nnfit.calcium.fista import check_solver_params

    monkeypatch.setattr(kernel, "_WARNED_DECAYS", set())
    with caplog.at_level("WARNING", logger="nnfit.calcium"):
        build_kernel(0.05, 0.5, 30.0)
        assert not caplog.records
        build_kernel(50.0, 500.0, 30.0)
        # a solver checks the same kinetics again for each form of the kernel it builds
        tau_to_ar2(50.0, 500.0, 30.0)
        check_solver_params(30.0, 50.0, 500.0, 0.5)
        build_kernel(50.0, 400.0, 30.0)
    assert "tau_decay=500 s: calcium indicators decay within seconds" in caplog.text
    assert caplog.text.count("=500 s: calcium") == 1
    assert caplog.text.count("=400 s: calcium") == 1
