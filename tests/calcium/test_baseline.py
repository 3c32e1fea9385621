"""The running baseline tracks slow drift under calcium transients."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import deconvolve, running_baseline, simulate_recording


@pytest.mark.parametrize("period", [60.0, 120.0, 300.0])
def test_tracks_drift_under_activity(period):
    fs, T = 30.0, 18000
    rec = simulate_recording(2, T, rate_hz=0.5, noise=0.1, seed=1)
    drift = 0.5 * np.sin(2 * np.pi * np.arange(T) / fs / period)
    b = running_baseline(rec.traces + drift, fs, 0.5)
    err = b - drift
    # the running estimate is only the start (a constant offset is estimated jointly and the
    # curve is refined against the fit): it must follow the drift's shape
    assert np.median(np.abs(err - np.median(err, axis=1, keepdims=True))) < 0.06
    assert b.shape == rec.traces.shape
    final = deconvolve(rec.traces + drift, fs, 0.05, 0.5, baseline="drift").baseline
    assert np.percentile(np.abs(final - drift), 95) < 0.1


def test_one_dimensional_and_short_traces():
    assert running_baseline(np.ones(5), 30.0, 0.5).shape == (5,)
    np.testing.assert_allclose(running_baseline(np.full(300, 2.0), 30.0, 0.5), 2.0)
    with pytest.raises(ValueError, match="tau_decay"):
        running_baseline(np.ones(50), 30.0, 0.0)
