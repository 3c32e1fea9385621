"""nnfit on real simultaneous imaging + electrophysiology (CASCADE DS09, GCaMP6f, mouse V1)."""

import numpy as np
import pytest

from nnfit.calcium import deconvolve


def _best_lag_r(t, fs, inferred, spikes):
    """Spikefinder metric: Pearson r of rates in 40 ms bins, best over lags of +-2 frames."""
    edges = np.arange(t[0] - 0.5 / fs, t[-1] + 0.5 / fs + 0.04, 0.04)
    true, _ = np.histogram(spikes, edges)
    best = -1.0
    for lag in range(-2, 3):
        shifted = np.zeros_like(inferred)
        if lag >= 0:
            shifted[lag:] = inferred[: len(inferred) - lag]
        else:
            shifted[:lag] = inferred[-lag:]
        rate, _ = np.histogram(t, edges, weights=shifted)
        best = max(best, float(np.corrcoef(rate, true)[0, 1]))
    return best


@pytest.mark.slow
@pytest.mark.parametrize("recording", [0, 1, 2, 3])
def test_inferred_spikes_follow_real_electrophysiology(ground_truth_dir, recording):
    z = np.load(ground_truth_dir / "DS09-GCaMP6f-m-V1.npz")
    t = z[f"time_{recording}"]
    y = z[f"fluo_{recording}"].astype(np.float64)
    fs = float(z["fs"][recording])
    res = deconvolve(y, fs)  # kinetics, lam and baseline all estimated from this one trace
    assert np.all(res.spikes >= 0)
    assert np.all(res.gap <= 1e-8)  # the optimum of the estimated problem, certified
    # A shuffled-spike control sits near 0 (the dataset README reports |r| < 0.07).
    assert _best_lag_r(t, fs, res.spikes, z[f"spikes_{recording}"]) > 0.35
