"""Least-squares kernel fit from spike times to fluorescence."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium.kernel_fit import fit_kernel, spike_response


def _direct(t, spike_t, w, tr, td, delay):
    """Brute-force sum over spikes of the continuous, peak-normalised double exponential."""
    u = t[:, None] - spike_t[None, :] - delay
    up = np.maximum(u, 0.0)
    h = np.where(u > 0, np.exp(-up / td) - np.exp(-up / tr), 0.0)
    tp = tr * td / (td - tr) * np.log(td / tr)
    return (h @ w) / (np.exp(-tp / td) - np.exp(-tp / tr))


def test_spike_response_equals_the_direct_sum(rng):
    fs = 60.0
    t = np.arange(3000) / fs
    spike_t = np.sort(rng.uniform(0, 50, 40))
    w = rng.uniform(0.5, 2.0, 40)
    x = spike_response(t, fs, spike_t, w, 0.03, 0.7, 0.012)
    np.testing.assert_allclose(x, _direct(t, spike_t, w, 0.03, 0.7, 0.012), atol=1e-10)


@pytest.mark.slow
def test_recovers_kinetics_and_delay_from_spike_times(rng):
    fs, dur = 30.0, 600.0
    t = np.arange(int(dur * fs)) / fs
    recs = []
    for amp in (0.8, 1.5):
        spike_t = np.sort(rng.uniform(0, dur, int(0.5 * dur)))
        y = 0.3 + amp * _direct(t, spike_t, np.ones(spike_t.size), 0.08, 1.2, 0.02)
        recs.append((y + 0.1 * rng.standard_normal(t.size), t, spike_t, np.ones(spike_t.size)))
    fit = fit_kernel(recs, fs)
    assert fit.tau_decay == pytest.approx(1.2, rel=0.03)
    assert fit.tau_rise == pytest.approx(0.08, rel=0.1)
    assert fit.delay == pytest.approx(0.02, abs=0.005)
    np.testing.assert_allclose(fit.amplitudes, [0.8, 1.5], rtol=0.03)


def test_bad_input():
    with pytest.raises(ValueError, match="recordings"):
        fit_kernel([], 30.0)
