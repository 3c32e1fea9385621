"""Slow baselines: a robust running estimate whose window is tied to the decay time.

A drifting baseline (bleaching, slow neuropil, focus drift) is a slow curve under the calcium
transients. :func:`running_baseline` estimates it without knowing the spikes: the trace is
averaged in short bins (half a decay time: this averages the noise down but keeps the drift),
a low percentile of the bin means is taken over a sliding window of ``window_tau`` decay
times (transients only ever push the trace *up*, so a low percentile sits on the baseline), and
the result is interpolated back to frames. The percentile sits a little below the true baseline
(noise in the bin means), so :func:`nnfit.calcium.deconvolve` estimates a constant offset jointly
on top of it, exactly, inside the optimisation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnfit.validate import as_float_array, check_real

#: window of the running estimate, in decay times (chosen on simulated drift; see the README)
WINDOW_TAU = 10.0
#: shortest window in seconds (fast indicators still need enough baseline between transients)
MIN_WINDOW_S = 5.0
#: percentile of the bin means
PERCENTILE = 20.0


def running_baseline(
    traces: np.ndarray,
    fs: float,
    tau_decay: float,
    *,
    window_tau: float = WINDOW_TAU,
    min_window_s: float = MIN_WINDOW_S,
    percentile: float = PERCENTILE,
) -> np.ndarray:
    """Robust running baseline of each trace, same shape as ``traces``.

    Parameters
    ----------
    traces : array_like
        ``(T,)`` or ``(cells, T)``.
    fs : float
        Sampling rate in Hz.
    tau_decay : float
        Decay time constant in seconds: sets the bin (``tau_decay / 2``) and the window
        (``max(window_tau * tau_decay, min_window_s)``).
    window_tau, min_window_s, percentile : float
        Window in decay times, its floor in seconds, and the percentile of the bin means.

    Examples
    --------
    >>> t = np.arange(30000) / 30.0
    >>> drift = 0.5 * np.sin(2 * np.pi * t / 120.0)
    >>> rng = np.random.default_rng(0)
    >>> b = running_baseline(drift + 0.05 * rng.standard_normal(t.size), 30.0, 0.5)
    >>> bool(np.abs(b - drift).max() < 0.1)
    True
    """
    x = as_float_array("traces", traces, ndim=(1, 2))
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    tau_decay = check_real("tau_decay", tau_decay, low=0.0, low_inclusive=False)
    x2 = np.atleast_2d(x)
    n_cells, T = x2.shape
    bin_len = max(1, round(0.5 * tau_decay * fs))
    n_bins = int(np.ceil(T / bin_len))
    pad = n_bins * bin_len - T
    xp = np.pad(x2, ((0, 0), (0, pad)), mode="edge") if pad else x2
    means = xp.reshape(n_cells, n_bins, bin_len).mean(axis=2)
    window_s = max(window_tau * tau_decay, min_window_s)
    width = max(1, round(window_s * fs / bin_len))
    width = min(width, n_bins) | 1  # odd, centred
    low = ndimage.percentile_filter(means, percentile, size=(1, width), mode="nearest")
    # smooth the staircase with a moving average over a third of the window
    sm = max(1, width // 3) | 1
    low = ndimage.uniform_filter1d(low, sm, axis=1, mode="nearest")
    centres = (np.arange(n_bins) + 0.5) * bin_len - 0.5
    frames = np.arange(T, dtype=float)
    out = np.empty_like(x2)
    for i in range(n_cells):
        out[i] = np.interp(frames, centres, low[i])
    return out if x.ndim == 2 else out[0]
