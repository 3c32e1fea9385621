"""The double-exponential kernel fitted by least squares to fluorescence, given the spikes.

Given spike times (true ones from electrophysiology, or inferred spikes at frame times with
their amplitudes as weights), the fluorescence of each recording is modelled as ::

    y(t_j) = a_i x(t_j; tau_rise, tau_decay, delay) + b_i(t_j) + noise,
    x(t) = sum_k w_k h(t - t_k - delay),  h(u) = (exp(-u/tau_decay) - exp(-u/tau_rise)) / peak

for ``u > 0`` (zero before), with one amplitude ``a_i`` and one slow baseline ``b_i`` (a
constant plus cosines slower than ``slow_s``) per recording and the kinetics and delay shared.
The linear parameters are solved exactly for every trial kinetics (variable projection), so
the non-linear search is over ``(log tau_rise, log tau_decay, delay)`` only.

``x`` is computed exactly at the frame times in ``O(T + spikes)``: each spike contributes
``w exp(-(t_j - t_k - delay) / tau)`` to the first frame after it, and the one-pole recursion
carries it on (frames are taken as evenly spaced at ``1/fs`` for the recursion).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from nnfit.validate import check_real

logger = logging.getLogger(__name__)

#: baseline components slower than this (seconds) are free per recording
SLOW_S = 60.0
#: search bounds, seconds
TAU_RISE_BOUNDS = (0.001, 1.0)
TAU_DECAY_BOUNDS = (0.01, 10.0)


@dataclass(frozen=True)
class KernelFit:
    """Result of :func:`fit_kernel`.

    Attributes
    ----------
    tau_rise, tau_decay : float
        Fitted time constants, seconds.
    delay : float
        Fitted delay from a spike to the start of its transient, seconds.
    amplitudes : numpy.ndarray
        Peak amplitude of one unit-weight spike, per recording.
    r2 : float
        Fraction of the variance (after the slow baseline) that the fit explains.
    """

    tau_rise: float
    tau_decay: float
    delay: float
    amplitudes: np.ndarray
    r2: float


def _peak(tau_rise: float, tau_decay: float) -> float:
    t = tau_rise * tau_decay / (tau_decay - tau_rise) * np.log(tau_decay / tau_rise)
    return float(np.exp(-t / tau_decay) - np.exp(-t / tau_rise))


def _one_pole(t, fs, spike_t, w, tau):
    """``sum_k w_k exp(-(t_j - s_k)/tau)`` over ``s_k < t_j``, at each frame time ``t_j``."""
    j = np.searchsorted(t, spike_t, side="right")
    ok = j < t.shape[0]
    c = np.bincount(
        j[ok], weights=w[ok] * np.exp(-(t[j[ok]] - spike_t[ok]) / tau), minlength=t.shape[0]
    )
    return signal.lfilter([1.0], [1.0, -np.exp(-1.0 / (fs * tau))], c)


def spike_response(t, fs, spike_t, w, tau_rise, tau_decay, delay=0.0) -> np.ndarray:
    """``x(t_j)``: the weighted spikes seen through the peak-normalised kernel, at frames ``t``.

    Examples
    --------
    >>> t = np.arange(100) / 30.0
    >>> x = spike_response(t, 30.0, np.array([0.0]), np.array([1.0]), 0.05, 0.5)
    >>> from nnfit.calcium import build_kernel  # the same shape, peak 1 on the frames
    >>> bool(np.allclose(x[:60] / x.max(), build_kernel(0.05, 0.5, 30.0)[:60]))
    True
    """
    s = spike_t + delay
    xd = _one_pole(t, fs, s, w, tau_decay)
    xr = _one_pole(t, fs, s, w, tau_rise)
    return (xd - xr) / _peak(tau_rise, tau_decay)


def _slow_basis(n: int, fs: float, slow_s: float) -> np.ndarray:
    m = int(2.0 * n / (fs * slow_s))
    k = np.arange(n)
    cols = [np.ones(n)] + [np.cos(np.pi * q * (k + 0.5) / n) for q in range(1, m + 1)]
    return np.stack(cols, axis=1)


def fit_kernel(
    recordings: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    fs: float,
    *,
    tau_rise: float = 0.05,
    tau_decay: float = 0.5,
    fit_delay: bool = True,
    slow_s: float = SLOW_S,
    search: bool = True,
) -> KernelFit:
    """Least-squares kinetics (and delay) from spikes to fluorescence, pooled over recordings.

    Parameters
    ----------
    recordings : list of (y, t, spike_t, w)
        Per recording: fluorescence ``y`` at frame times ``t`` (seconds), spike times
        ``spike_t`` (seconds, same clock) and their weights ``w`` (1 for true spikes; the
        inferred amplitudes for inferred spikes placed at frame times).
    fs : float
        Frame rate in Hz.
    tau_rise, tau_decay : float
        Starting point, seconds.
    fit_delay : bool
        Fit a delay between spikes and transients (else 0).
    slow_s : float
        Baseline components slower than this many seconds are fitted per recording.
    search : bool
        Start from the best point of a coarse grid around the start (else from the start).

    Returns
    -------
    KernelFit

    Notes
    -----
    Variable projection (Golub & Pereyra 1973, doi:10.1137/0710036): for fixed kinetics the
    amplitude and baseline of each recording are the linear least-squares solution, and the
    residual of that solution is minimised over the kinetics by bounded Gauss-Newton
    (``scipy.optimize.least_squares``) from the best point of a coarse grid.

    Examples
    --------
    >>> from nnfit.calcium import simulate_recording
    >>> rec = simulate_recording(1, 9000, tau_rise=0.05, tau_decay=0.8, noise=0.1, seed=1)
    >>> t = np.arange(9000) / 30.0
    >>> fit = fit_kernel([(rec.traces[0], t, t, rec.spikes[0])], 30.0, fit_delay=False)
    >>> bool(abs(fit.tau_decay - 0.8) < 0.05)
    True
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    if not recordings:
        raise ValueError("recordings must hold at least one (y, t, spike_t, w) tuple")
    data = []
    for y, t, st, w in recordings:
        y = np.asarray(y, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        keep = np.asarray(w) != 0
        B = _slow_basis(y.shape[0], fs, slow_s)
        Q, _ = np.linalg.qr(B)
        yr = y - Q @ (Q.T @ y)
        data.append((yr, t, np.asarray(st, float)[keep], np.asarray(w, float)[keep], Q))
    total = sum(float(d[0] @ d[0]) for d in data)

    def resid(tr, td, dl):
        out = []
        amps = []
        for yr, t, st, w, Q in data:
            x = spike_response(t, fs, st, w, tr, td, dl)
            x = x - Q @ (Q.T @ x)
            xx = float(x @ x)
            a = float(x @ yr) / xx if xx > 0 else 0.0
            amps.append(a)
            out.append(yr - a * x)
        return np.concatenate(out), np.array(amps)

    def unpack(p):
        tr, td = float(np.exp(p[0])), float(np.exp(p[1]))
        return min(tr, 0.95 * td), td, (float(p[2]) if fit_delay else 0.0)

    # coarse grid for the start (the objective has local minima in the rise/delay trade-off)
    best = (np.inf, (np.log(min(tau_rise, 0.5 * tau_decay)), np.log(tau_decay), 0.0))
    grid_td = np.geomspace(max(TAU_DECAY_BOUNDS[0], tau_decay / 4), tau_decay * 4, 7)
    for td in grid_td if search else ():
        for tr in np.geomspace(max(TAU_RISE_BOUNDS[0], 0.2 / fs), 0.3 * td, 3):
            for dl in np.linspace(-1.0, 1.0, 3) / fs if fit_delay else (0.0,):
                v = float(np.sum(resid(tr, td, dl)[0] ** 2))
                if v < best[0]:
                    best = (v, (np.log(tr), np.log(td), dl))
    lo = [np.log(TAU_RISE_BOUNDS[0]), np.log(TAU_DECAY_BOUNDS[0]), -3.0 / fs]
    hi = [np.log(TAU_RISE_BOUNDS[1]), np.log(TAU_DECAY_BOUNDS[1]), 6.0 / fs]
    p0 = np.clip(np.array(best[1], dtype=float), np.add(lo, 1e-9), np.subtract(hi, 1e-9))
    if not fit_delay:
        lo[2], hi[2], p0[2] = -1e-9, 1e-9, 0.0
    sol = optimize.least_squares(
        lambda p: resid(*unpack(p))[0],
        p0,
        bounds=(lo, hi),
        diff_step=1e-3,
        x_scale=[1, 1, 1 / fs],
        xtol=1e-4,
        ftol=1e-6,
        max_nfev=60,
    )
    tr, td, dl = unpack(sol.x)
    r, amps = resid(tr, td, dl)
    r2 = 1.0 - float(r @ r) / total if total > 0 else 0.0
    logger.debug("kernel fit: tau_rise %.4g s, tau_decay %.4g s, delay %.4g s", tr, td, dl)
    return KernelFit(tau_rise=tr, tau_decay=td, delay=dl, amplitudes=amps, r2=r2)
