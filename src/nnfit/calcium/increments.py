"""The decay time constant from the fluorescence increments, by a least-squares kernel fit.

A spike raises the fluorescence within the rise time; between spikes the trace relaxes by the
factor ``gamma = exp(-1 / (fs tau_decay))`` per frame. The innovation
``e_t = g_t - gamma g_(t-1)`` of the (lightly smoothed) trace ``g`` is therefore the spike
train seen through the rise only, plus noise. Its part above ``INCREMENT_Z`` robust standard
deviations is a spike proxy that does not depend on the decay being right, and the kernel is
fitted from it to the fluorescence by least squares (:func:`nnfit.calcium.kernel_fit.fit_kernel`,
the same fit that, with true spike times, defines the ground-truth kernel).

Starting from ``gamma = 1`` (plain increments, which err long where transients overlap: a
spike on a decaying tail raises the trace by less than its amplitude), ``gamma`` is updated
from the fitted decay and the fit repeated; on simulated recordings this converges within
three to four rounds to within a few per cent of the true decay at 30-158 Hz (see
``bench/calcium_kinetics.py``).

It is not the default of :func:`nnfit.calcium.estimate_kinetics_pooled`: on the four CASCADE
ground-truth datasets it brings the decay closer to the ground-truth-fitted one (0.58-1.23x
instead of 0.37-0.65x), but the spike-rate correlation of the deconvolution is lower with it
than with the shorter whiteness decay (``bench/calcium_accuracy.py``), and at 158 Hz with a
slow indicator at low SNR it can err long by a factor 2 or more (``bench/calcium_kinetics.py``).

Why a criterion on the deconvolution residual errs short: a kernel with a shorter decay plus small extra spikes on
every tail reproduces a longer kernel exactly (``e^(-t/tau_L) = e^(-t/tau_S) * g`` with
``g >= 0``), so every criterion computed from a non-negative deconvolution with free spike
amplitudes (residual whiteness, cross-validated fit, alternation with a kernel refit) favours
or keeps a short decay. The increments are computed without any deconvolution.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from nnfit.calcium.kernel_fit import fit_kernel
from nnfit.validate import check_real

logger = logging.getLogger(__name__)

#: proxy threshold, robust standard deviations of the innovation
INCREMENT_Z = 3.0
#: Gaussian smoothing of the trace before differencing, seconds (at least half a frame)
INCREMENT_SMOOTH_S = 0.02
#: rounds of (proxy, kernel fit)
INCREMENT_ROUNDS = 4
#: at most this many traces, of at most this many frames each (cost bounded in frames), after
#: averaging blocks of frames down to at most INCREMENT_MAX_FS (a slow indicator's increments per
#: frame at 158 Hz are lost in the noise; per 25 ms they are not)
INCREMENT_MAX_TRACES = 8
INCREMENT_MAX_FRAMES = 12000
INCREMENT_MAX_FS = 40.0


def increment_proxy(y: np.ndarray, fs: float, gamma: float) -> np.ndarray:
    """Spike proxy: the innovation ``g_t - gamma g_(t-1)`` above ``INCREMENT_Z`` robust SDs.

    Examples
    --------
    >>> y = np.r_[np.zeros(50), np.exp(-np.arange(50) / 10.0)]
    >>> p = increment_proxy(y + 1e-3 * np.sin(np.arange(100)), 30.0, np.exp(-0.1))
    >>> int(np.argmax(p))
    50
    """
    g = ndimage.gaussian_filter1d(
        np.asarray(y, dtype=np.float64), max(0.5, INCREMENT_SMOOTH_S * fs)
    )
    e = g - gamma * np.r_[g[0], g[:-1]]
    e = e - np.median(e)
    mad = 1.4826 * float(np.median(np.abs(e)))
    return np.maximum(e - INCREMENT_Z * mad, 0.0)


def decay_from_increments(
    traces: list[np.ndarray], fs: float, *, tau_rise: float = 0.05, tau_decay: float = 0.5
) -> tuple[float, float]:
    """``(tau_rise, tau_decay)`` of the least-squares kernel from the increment proxy.

    Parameters
    ----------
    traces : list of array_like
        Fluorescence traces (any lengths, any baseline) sharing one indicator.
    fs : float
        Frame rate in Hz.
    tau_rise, tau_decay : float
        Starting point of the first fit, seconds.

    Returns
    -------
    tuple of float
        The fitted rise and decay; the rise is poorly determined by this fit (the proxy keeps
        the rising edge) and is best taken from elsewhere.

    Examples
    --------
    >>> from nnfit.calcium import simulate_recording
    >>> rec = simulate_recording(4, 9000, tau_rise=0.02, tau_decay=0.4, noise=0.2, seed=1)
    >>> _, td = decay_from_increments(list(rec.traces), 30.0)
    >>> bool(abs(td / 0.4 - 1) < 0.1)
    True
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    step = max(1, len(traces) // INCREMENT_MAX_TRACES)
    q = max(1, int(fs // INCREMENT_MAX_FS))
    ys = []
    for t in traces[::step][:INCREMENT_MAX_TRACES]:
        y = np.asarray(t, dtype=np.float64)[: INCREMENT_MAX_FRAMES * q]
        y = y[: y.shape[0] // q * q].reshape(-1, q).mean(axis=1)
        if y.shape[0] >= 64:
            ys.append(y)
    fs = fs / q
    if not ys:
        raise ValueError("traces need at least 64 frames to estimate the kinetics")
    gamma, tr, td = 1.0, float(tau_rise), float(tau_decay)
    for k in range(INCREMENT_ROUNDS):
        recs = []
        for y in ys:
            t = np.arange(y.shape[0]) / fs
            recs.append((y, t, t, increment_proxy(y, fs, gamma)))
        fit = fit_kernel(recs, fs, tau_rise=tr, tau_decay=td, search=k == 0)
        tr, td = fit.tau_rise, fit.tau_decay
        gamma = float(np.exp(-1.0 / (fs * td)))
        logger.debug("increment fit round: tau_decay %.4g s", td)
    return tr, td
