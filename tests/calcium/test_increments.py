"""The decay from the increment proxy."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import simulate_recording
from nnfit.calcium.increments import INCREMENT_MAX_FRAMES, decay_from_increments


@pytest.mark.slow
@pytest.mark.parametrize(("tr", "td", "fs"), [(0.017, 0.66, 158.0), (0.12, 2.0, 158.0)])
def test_decay_at_158_hz_within_15_percent(tr, td, fs):
    rec = simulate_recording(4, int(240 * fs), fs=fs, tau_rise=tr, tau_decay=td, noise=0.2, seed=3)
    _, td_est = decay_from_increments(list(rec.traces), fs)
    assert td_est == pytest.approx(td, rel=0.15)


@pytest.mark.slow
def test_shorter_decay_plus_extra_spikes_reproduces_a_longer_kernel():
    """Why no criterion on a free non-negative deconvolution can pick the decay: the long
    exponential is the short one convolved with a non-negative sequence (checked numerically),
    so the short kernel fits whatever the long one fits."""
    from scipy.optimize import nnls

    fs, n = 30.0, 200
    t = np.arange(n) / fs
    long_, short = np.exp(-t / 1.0), np.exp(-t / 0.4)
    K = np.array([np.r_[np.zeros(j), short[: n - j]] for j in range(n)]).T
    g, res = nnls(K, long_)
    assert res < 1e-8 * np.linalg.norm(long_)
    assert np.all(g >= 0) and g[1:].sum() > 0.5  # the tail is carried by extra spikes


@pytest.mark.slow
def test_cost_is_bounded_in_frames():
    """Only the first INCREMENT_MAX_FRAMES frames (after averaging 120 Hz to 40 Hz) are read."""
    rec = simulate_recording(2, 3 * INCREMENT_MAX_FRAMES, fs=120.0, tau_decay=0.5, seed=5)
    tail = np.full((2, 5000), 1e6)
    a = decay_from_increments(list(rec.traces), 120.0)
    b = decay_from_increments(list(np.hstack([rec.traces, tail])), 120.0)
    assert a == b
