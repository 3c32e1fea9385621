"""Noise level, kinetics and sparsity weight estimated from the traces themselves.

- **noise** ``sigma``: from the high-frequency part of the power spectrum (Welch, one-sided
  density), where the calcium signal has decayed and only white noise is left:
  ``sigma^2 = median(PSD[f in [fs/4, fs/2]]) fs / 2`` (Welch averages segments, so each bin is
  close to its mean; the median over the band ignores a few lines).
- **kinetics**: the autocovariance of a spike train convolved with the kernel is, for lags
  ``k >= 1`` (lag 0 holds the noise), ``A d^k + B r^k`` with ``d, r`` the kernel's roots. The
  AR(2) Yule-Walker equations on lags 1..3 give a start, refined by a least-squares fit of the
  two-exponential model to lags ``1 .. L``. Pooled kinetics come from the mean of the
  cells' normalised autocovariances; the pooled decay is then refined by deconvolution
  (:func:`refine_kinetics`: the decay whose deconvolution residuals are whitest, never longer
  than an autocovariance decay that its lags resolve), and the rise refitted to the lags up to
  that decay only (:func:`rise_at_short_lags`), where the curvature that carries it is not
  outweighed by the misfit of a decay that is not one exponential.
- **lam**: ``z sigma ||h||_2``. Under pure noise ``(K^T r)_i`` is ``N(0, sigma^2 ||h||^2)`` and
  a frame gets a spike only where it exceeds ``lam``; so the rule fixes the false-positive rate
  *per frame*, whatever the trace length (a trace repeated 4 times gets the same spikes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
from scipy import optimize, signal

from nnfit.calcium.exact import solve_exact
from nnfit.calcium.kernel import build_kernel, check_kinetics
from nnfit.validate import as_float_array, check_real

log = logging.getLogger(__name__)

#: default multiplier ``z`` of the lam rule: chosen on simulations with spikes in continuous
#: time (z in 0.5-2: mean r highest at 1.5, a plateau from 1 to 2) and confirmed by
#: leave-one-dataset-out on the ground truth (1.5 chosen in all four folds);
#: ``bench/calcium_lam_rule.py``
LAM_Z = 1.5
#: z of the decay search's deconvolutions: with z = 1 the search erred long where spikes are
#: sparse or the SNR low (1.3-2.1x the true decay on simulations of fast kernels), z = 2 did not;
#: ``bench/calcium_kinetics.py --search``
REFINE_LAM_Z = 2.0
#: fallback and bounds for kinetics, seconds
_TAU_BOUNDS = (0.002, 10.0)


def estimate_noise(traces: np.ndarray, fs: float) -> np.ndarray:
    """Noise standard deviation per trace from the upper half of the spectrum.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sn = estimate_noise(0.3 * rng.standard_normal((2, 20000)), 30.0)
    >>> bool(np.allclose(sn, 0.3, rtol=0.05))
    True
    """
    x = as_float_array("traces", traces, ndim=(1, 2))
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    x2 = np.atleast_2d(x)
    nperseg = int(min(256, x2.shape[1]))
    if nperseg < 8:
        raise ValueError(f"traces need at least 8 frames to estimate the noise; got {x2.shape[1]}")
    f, pxx = signal.welch(x2, fs=fs, nperseg=nperseg, axis=-1, detrend="constant")
    band = (f >= fs / 4) & (f <= fs / 2)
    sn = np.sqrt(np.median(pxx[:, band], axis=1) * fs / 2.0)
    return sn if x.ndim == 2 else sn[:1]


def _autocov(x: np.ndarray, n_lags: int) -> np.ndarray:
    """Biased autocovariance for lags 0..n_lags of each row (FFT)."""
    x = x - x.mean(axis=-1, keepdims=True)
    T = x.shape[-1]
    n = 1 << int(np.ceil(np.log2(2 * T)))
    spec = np.fft.rfft(x, n=n, axis=-1)
    ac = np.fft.irfft(spec * np.conj(spec), n=n, axis=-1)[..., : n_lags + 1]
    return ac / T


def _acov_shape(k: np.ndarray, d: float, r: float) -> np.ndarray:
    """Autocovariance shape of white input through the AR(2) kernel (one free amplitude).

    With ``h_j = (d^(j+1) - r^(j+1)) / (d - r)``, ``sum_j h_j h_(j+k)`` is proportional to
    ``d^k (d^2/(1-d^2) - dr/(1-dr)) + r^k (r^2/(1-r^2) - dr/(1-dr))``.
    """
    dr = d * r / (1.0 - d * r)
    return d**k * (d * d / (1.0 - d * d) - dr) + r**k * (r * r / (1.0 - r * r) - dr)


def _fit_roots(ac: np.ndarray, fs: float) -> tuple[float, float]:
    """Fit the AR(2) autocovariance shape (amplitude + offset) to lags 1..L; return taus.

    Lag 0 holds the noise variance and is left out; the offset absorbs the bias of the
    mean-subtracted estimate. A grid over (tau_decay, tau_rise / tau_decay) picks the start of
    a bounded least-squares refinement.
    """
    L = ac.shape[0] - 1
    k = np.arange(1, L + 1, dtype=float)
    y = ac[1:]

    def resid_for(td: float, ratio: float) -> np.ndarray:
        tr = td * ratio
        d, r = np.exp(-1.0 / (fs * td)), np.exp(-1.0 / (fs * tr))
        B = np.stack([_acov_shape(k, d, r), np.ones_like(k)], axis=1)
        coef, *_ = np.linalg.lstsq(B, y, rcond=None)
        return B @ coef - y

    best = (np.inf, 0.5, 0.1)
    for td in np.geomspace(0.03, 6.0, 30):
        for ratio in (0.03, 0.08, 0.15, 0.3, 0.5):
            v = float(np.sum(resid_for(td, ratio) ** 2))
            if v < best[0]:
                best = (v, td, ratio)
    _, td0, ratio0 = best
    lo = np.array([np.log(_TAU_BOUNDS[0]), np.log(1e-3)])
    hi = np.array([np.log(_TAU_BOUNDS[1]), np.log(0.9)])
    p0 = np.clip(np.log([td0, ratio0]), lo + 1e-9, hi - 1e-9)
    sol = optimize.least_squares(
        lambda q: resid_for(float(np.exp(q[0])), float(np.exp(q[1]))), p0, bounds=(lo, hi)
    )
    td = float(np.exp(sol.x[0]))
    tr = td * float(np.exp(sol.x[1]))
    tr = max(tr, 0.25 / fs)  # below a quarter frame the rise is not resolved
    if tr >= 0.9 * td:
        tr = 0.9 * td
    return float(tr), float(td)


#: lags fitted, seconds, and the high-pass applied first (slower than any calcium kernel)
KINETICS_LAGS_S = 2.0
HIGHPASS_S = 10.0


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d(x, sigma, axis=-1, mode="nearest")``, by FFT.

    The direct filter costs ``8 sigma`` operations per frame, so a window fixed in seconds grows
    with the frame rate squared; by FFT the cost is ``O(T log T)`` whatever ``sigma``.

    Examples
    --------
    >>> from scipy import ndimage
    >>> x = np.random.default_rng(0).standard_normal((2, 3000))
    >>> bool(np.allclose(gaussian_smooth(x, 40.0), ndimage.gaussian_filter1d(x, 40.0, mode="nearest")))
    True
    """
    radius = int(4.0 * float(sigma) + 0.5)  # ndimage's truncate=4.0
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)], mode="edge")
    return signal.fftconvolve(padded, w.reshape((1,) * (x.ndim - 1) + (-1,)), mode="valid", axes=-1)


def normalized_autocov(traces: np.ndarray, fs: float, n_lags: int | None = None) -> np.ndarray:
    """Autocovariance (lags 0..n_lags, normalised to lag 1) of high-passed traces, per row.

    Components slower than ``HIGHPASS_S`` seconds (baseline drift, slow state changes) are
    removed first: they are not the kernel, and would otherwise dominate the long lags.
    """
    x = np.atleast_2d(as_float_array("traces", traces, ndim=(1, 2)))
    if n_lags is None:
        n_lags = round(KINETICS_LAGS_S * fs)
    n_lags = int(np.clip(n_lags, 8, max(8, x.shape[1] // 4)))
    sigma = HIGHPASS_S * fs
    if x.shape[1] > 4 * sigma:
        x = x - gaussian_smooth(x, sigma)
    ac = _autocov(x, n_lags)
    norm = np.where(ac[:, 1] > 0, ac[:, 1], 1.0)
    return ac / norm[:, None]


#: refinement by deconvolution: residual autocorrelation summed over lags up to this (seconds),
#: candidate decays on a log grid with this ratio between neighbours, the best one refined by a
#: golden-section search to this width in log tau, and at most this many traces of at most this
#: many frames each (600 s at 30 Hz)
REFINE_LAGS_S = 1.0
REFINE_GRID_RATIO = 1.5
REFINE_LOG_TOL = 0.04
REFINE_MAX_TRACES = 8
REFINE_MAX_FRAMES = 18000
#: relative duality gap of the search's deconvolutions: the criterion is the same to 5 digits as
#: at 1e-9, and solves that stall below 1e-6 (most often at high frame rates) stop early. They
#: end at the certified iterate, without the exact Newton step on the support: at this gap that
#: step seldom certifies at high frame rates, and its conjugate-gradient rounds cost more than
#: the iterations (``solve_exact(polish=False)``)
REFINE_TOL = 1e-6
#: range searched for the decay (seconds; the lower end is at least 2 frames)
REFINE_TAU_RANGE = (0.03, 5.0)
#: the autocovariance decay caps the search only where the fitted lags (``KINETICS_LAGS_S``) span
#: at least this many of its decay times: over fewer, the decay trades off against the fit's
#: offset and scatters (0.72-1.24 of a 2 s decay on 240 s x 4 cells at 158 Hz)
REFINE_CAP_SPANS = 2.0


def residual_whiteness(
    y: np.ndarray, fs: float, tau_rise: float, tau_decay: float, noise: float | None = None
) -> float:
    """``sum_k rho_k^2`` of the deconvolution residual, lags ``1 .. REFINE_LAGS_S fs``.

    The trace is deconvolved with these kinetics (lam from its noise, constant baseline) and
    ``rho_k`` is the residual's autocorrelation. With the right kernel the residual is the
    (white) noise; a decay too short leaves the tails of the transients in the residual, one
    too long leaves the overshoot after them, and both correlate the residual over many lags.
    ``noise``: the trace's noise level where it is known already (else from its spectrum).
    """
    y2 = np.asarray(y, dtype=np.float64)[None, :]
    if noise is None:
        noise = float(estimate_noise(y2, fs)[0])
    lam = lam_from_noise(noise, tau_rise, tau_decay, fs, REFINE_LAM_Z)
    res = solve_exact(y2, fs, tau_rise, tau_decay, lam, "constant", tol=REFINE_TOL, polish=False)
    return whiteness(y - res.baseline[0] - res.calcium[0], fs)


def whiteness(residual: np.ndarray, fs: float) -> float:
    """``sum_k rho_k^2``: the squared autocorrelations of a residual at lags ``1 .. REFINE_LAGS_S
    fs`` (0 for a constant residual)."""
    L = max(3, round(REFINE_LAGS_S * fs))
    ac = _autocov(np.asarray(residual, dtype=np.float64)[None, :], L)[0]
    if not ac[0] > 0:
        return 0.0
    rho = ac[1:] / ac[0]
    return float(rho @ rho)


def search_min_frames(fs: float) -> int:
    """The shortest trace a search by deconvolution reads: ``max(64, 8 REFINE_LAGS_S fs)``
    frames, eight times the criterion's lags."""
    return max(64, 8 * round(REFINE_LAGS_S * fs))


def search_selection(lengths: Sequence[int], fs: float) -> np.ndarray:
    """Which traces a search by deconvolution reads: up to ``REFINE_MAX_TRACES`` spread over
    the list (every ``len(lengths) // REFINE_MAX_TRACES``-th from the first), those long enough
    for the criterion's lags (:func:`search_min_frames`). Each is read to at most
    ``REFINE_MAX_FRAMES`` frames: a cap in frames, not seconds, so a search costs the same at
    any frame rate.

    Which traces they are matters where cells decay differently: on the ground-truth datasets
    the pooled decay moved by up to 1.7x with the order of the recordings
    (``docs/calcium/ground-truth.rst``, "Which traces the decay search reads").
    """
    n_frames = np.asarray(lengths, dtype=np.int64)
    idx = np.arange(0, n_frames.size, max(1, n_frames.size // REFINE_MAX_TRACES))
    idx = idx[:REFINE_MAX_TRACES]
    return idx[n_frames[idx] >= search_min_frames(fs)]


def search_traces(traces: list[np.ndarray], fs: float) -> list[np.ndarray]:
    """The traces a search by deconvolution reads (:func:`search_selection`), their first
    ``REFINE_MAX_FRAMES`` frames.

    The frames stay at the full rate (averaging them blurs the kernel's first frames: fast
    decays at high rates came out short).
    """
    idx = search_selection([np.shape(t)[-1] for t in traces], fs)
    return [np.asarray(traces[i], dtype=float)[:REFINE_MAX_FRAMES] for i in idx]


def _minimise_log_search(
    q: Callable[[float], float], lo: float, hi: float, ratio: float, log_tol: float
) -> float:
    """Minimiser of ``q`` over ``[lo, hi]``: a log grid walked down from ``hi``, then golden section.

    The grid ``hi, hi / ratio, ...`` (not below ``lo``) is evaluated from the top and stops once
    two points in a row are worse than the best so far; so the count of evaluations depends on
    where the minimum lies, not on ``lo``. The best point's neighbours bracket a golden-section
    search in ``log tau``, run until the bracket is narrower than ``log_tol``; the best point
    evaluated is returned (``hi`` itself where the minimum lies at or above it). A parabola
    through three grid points is not enough: the residual criterion rises much faster above the
    true decay than below it, so the vertex of a parabola through that kink lands short.

    Examples
    --------
    >>> t = _minimise_log_search(lambda x: (np.log(x) - np.log(0.7)) ** 2, 0.03, 5.0, 1.5, 0.01)
    >>> bool(abs(t - 0.7) < 0.01)
    True
    """
    seen: dict[float, float] = {}

    def f(log_tau: float) -> float:
        tau = float(np.exp(log_tau))
        seen[tau] = q(tau)
        return seen[tau]

    grid = [np.log(hi)]
    vals = [f(grid[0])]
    best = 0
    step = np.log(ratio)
    while grid[-1] - step >= np.log(lo) and len(grid) - 1 - best < 2:
        grid.append(grid[-1] - step)
        vals.append(f(grid[-1]))
        if vals[-1] < vals[best]:
            best = len(grid) - 1
    a = grid[best + 1] if best + 1 < len(grid) else max(np.log(lo), grid[best] - step)
    b = grid[max(best - 1, 0)]
    g = 0.5 * (np.sqrt(5.0) - 1.0)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > log_tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return min(seen, key=seen.__getitem__)


def refine_kinetics(
    traces: list[np.ndarray],
    fs: float,
    tau_rise: float,
    tau_decay: float,
    decay_range: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Decay refined by deconvolution: the one whose residuals are whitest, pooled over traces.

    The autocovariance fit (:func:`_fit_roots`) sees everything slow in the traces (neuropil,
    slow state changes) as part of the kernel and overestimates the decay on real recordings.
    Here the mean :func:`residual_whiteness` of the traces and frames of
    :func:`search_traces` is minimised over the decay by
    :func:`_minimise_log_search` in ``REFINE_TAU_RANGE``. Where the autocovariance lags
    (``KINETICS_LAGS_S``) span at least ``REFINE_CAP_SPANS`` of the autocovariance decay
    ``tau_decay`` given, the search stops at that decay (the whiteness errs long where the
    traces hold slow components that are not the kernel); where they span fewer, that decay is
    too uncertain to cap anything. The rise is the autocovariance estimate, kept below half the
    decay. ``decay_range`` (seconds, e.g. an indicator's,
    :attr:`nnfit.calcium.indicators.Indicator.decay_range`) holds the decay found (or, where
    the traces are too short to search, the autocovariance decay) within it; a decay found
    inside it is returned unchanged.

    Examples
    --------
    >>> from nnfit.calcium import simulate_recording
    >>> rec = simulate_recording(3, 9000, tau_rise=0.05, tau_decay=0.6, rate_hz=0.5, seed=3)
    >>> tr, td = refine_kinetics(list(rec.traces), 30.0, 0.05, 1.2)
    >>> bool(abs(td - 0.6) < 0.1)
    True
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    sub = search_traces(traces, fs)
    bounds = None
    if decay_range is not None:
        a, b = (check_real("decay_range", v, low=0.0, low_inclusive=False) for v in decay_range)
        if a > b:
            raise ValueError(f"decay_range must be (low, high) with low <= high; got {decay_range}")
        bounds = (a, b)

    def rise(td: float) -> float:
        return float(min(tau_rise, 0.5 * td))

    if not sub:
        if bounds is None:
            return tau_rise, tau_decay
        td = float(np.clip(tau_decay, *bounds))
        return rise(td), td
    lo = max(REFINE_TAU_RANGE[0], 2.0 / fs)
    hi = REFINE_TAU_RANGE[1]
    if REFINE_CAP_SPANS * float(tau_decay) <= KINETICS_LAGS_S:
        hi = min(hi, max(float(tau_decay), lo))

    noise = [float(estimate_noise(y, fs)[0]) for y in sub]  # does not depend on the kernel

    def q(td: float) -> float:
        return float(
            np.mean(
                [
                    residual_whiteness(y, fs, rise(td), td, n)
                    for y, n in zip(sub, noise, strict=True)
                ]
            )
        )

    td = _minimise_log_search(q, lo, hi, REFINE_GRID_RATIO, REFINE_LOG_TOL)
    if bounds is not None:
        # the search itself is the same with or without bounds: within them nothing changes
        td = float(np.clip(td, *bounds))
    return rise(td), td


def warn_at_search_end(tau_decay: float, fs: float) -> None:
    """Log a warning where a decay found by :func:`refine_kinetics` lies at an end of the range
    it searches (within ``REFINE_LOG_TOL`` in ``log tau``): there the estimate says only that
    the criterion kept falling, not where its minimum is."""
    lo, hi = max(REFINE_TAU_RANGE[0], 2.0 / fs), REFINE_TAU_RANGE[1]
    if abs(np.log(hi / tau_decay)) < REFINE_LOG_TOL:
        why = (
            "the traces may hold slow components that are not the kernel (neuropil, drift) "
            "or an indicator slower than that"
        )
    elif abs(np.log(tau_decay / lo)) < REFINE_LOG_TOL:
        why = f"a decay shorter than two frames ({2.0 / fs:.3g} s at {fs:g} Hz) is not resolved"
    else:
        return
    log.warning(
        "the decay estimated from the data, %.3g s, lies at an end of the range searched "
        "(%.3g-%.3g s): %s; give tau_decay (or name the indicator) if it is known",
        tau_decay, lo, hi, why,
    )  # fmt: skip


def rise_at_short_lags(ac: np.ndarray, fs: float, tau_decay: float) -> float:
    """The rise refitted to the autocovariance lags ``1 .. tau_decay fs`` only.

    The rise shapes the autocovariance only over the first few lags (its curvature there).
    Fitted over all lags, a decay that is not one exponential (real indicators, neuropil)
    leaves a misfit at long lags that outweighs those few points and pushes the rise to its
    floor; over lags up to the (refined) decay time the double exponential is a good local
    model and the curvature decides. The local decay is a free nuisance parameter here.
    """
    n = max(8, round(float(tau_decay) * fs))
    tr, _ = _fit_roots(np.asarray(ac, dtype=np.float64)[: n + 1], fs)
    return float(min(max(tr, 0.25 / fs), 0.5 * float(tau_decay)))


def estimate_kinetics(
    traces: np.ndarray, fs: float, *, decay_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Rise and decay time constants per trace and pooled over traces (seconds).

    Returns ``(tau_rise per trace, tau_decay per trace, pooled tau_rise, pooled tau_decay)``;
    the pooled values fit the mean of the traces' normalised autocovariances, which is far more
    stable than any single trace (same indicator, many cells). ``decay_range``: bounds on the
    pooled decay (see :func:`refine_kinetics`); the per-trace values are the unbounded
    autocovariance fits.
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    acn = normalized_autocov(traces, fs)
    taus = np.array([_fit_roots(a, fs) for a in acn])
    ac = acn.mean(axis=0)
    tr_p, td_p = _fit_roots(ac, fs)
    x = np.atleast_2d(as_float_array("traces", traces, ndim=(1, 2)))
    tr_p, td_p = refine_kinetics(list(x), fs, tr_p, td_p, decay_range)
    warn_at_search_end(td_p, fs)
    tr_p = rise_at_short_lags(ac, fs, td_p)
    return taus[:, 0], taus[:, 1], tr_p, td_p


def estimate_kinetics_pooled(
    traces: list[np.ndarray], fs: float, *, decay_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Pooled ``(tau_rise, tau_decay)`` from traces of different lengths (e.g. recordings).

    ``decay_range``: bounds on the decay, as in :func:`estimate_kinetics`.

    Examples
    --------
    >>> from nnfit.calcium import simulate_recording
    >>> recs = [simulate_recording(1, n, tau_decay=0.6, seed=n).traces[0] for n in (9000, 12000)]
    >>> tr, td = estimate_kinetics_pooled(recs, 30.0)
    >>> bool(abs(td - 0.6) < 0.1)
    True
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    rows = [as_float_array(f"traces[{i}]", t, ndim=(1,)) for i, t in enumerate(traces)]
    if not rows:
        raise ValueError("traces is empty: pass a list of 1-D traces (e.g. one per recording)")
    tr, td = _pooled_kinetics(rows, fs, decay_range)
    warn_at_search_end(td, fs)
    return tr, td


def _pooled_kinetics(
    rows: list[np.ndarray], fs: float, decay_range: tuple[float, float] | None
) -> tuple[float, float]:
    """:func:`estimate_kinetics_pooled` on checked 1-D float traces, without its warning."""
    n_lags = round(KINETICS_LAGS_S * fs)
    acs = [normalized_autocov(t, fs, n_lags)[0] for t in rows]
    L = min(len(a) for a in acs)
    ac = np.mean([a[:L] for a in acs], axis=0)
    _, td = refine_kinetics(rows, fs, *_fit_roots(ac, fs), decay_range)
    return rise_at_short_lags(ac, fs, td), td


#: fewer recordings than this (with halves long enough to search) keep the pooled kinetics:
#: their spread says too little about how much they disagree
SHRINK_MIN_RECORDINGS = 4


@overload
def estimate_kinetics_per_recording(
    traces: list[np.ndarray],
    fs: float,
    *,
    decay_range: tuple[float, float] | None = ...,
    return_info: Literal[False] = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def estimate_kinetics_per_recording(
    traces: list[np.ndarray],
    fs: float,
    *,
    decay_range: tuple[float, float] | None = ...,
    return_info: Literal[True],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]: ...


def estimate_kinetics_per_recording(
    traces: list[np.ndarray],
    fs: float,
    *,
    decay_range: tuple[float, float] | None = None,
    return_info: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    r"""Per-recording ``(tau_rise, tau_decay)``: each decay shrunk towards the pooled one by as
    much as the recordings' own noise explains their disagreement.

    Recordings of one indicator can still decay differently (preparation, temperature, cell
    type). Each recording's decay is refined on its own (:func:`refine_kinetics`), and so is
    each half of the frames that refinement reads, which measures how much a recording's
    estimate scatters by noise alone. Where the recordings' decays spread no more than that
    scatter explains, every recording gets the pooled decay of
    :func:`estimate_kinetics_pooled`; where they spread more, each moves towards its own
    estimate in proportion. The rise is the pooled one (a recording alone places it poorly),
    kept below half the recording's decay.

    Parameters
    ----------
    traces : list of array_like
        One entry per recording, all at ``fs``, any lengths: a 1-D trace, or the ``(cells,
        T)`` traces of one session (its decay then pooled over its cells).
    fs : float
        Sampling rate in Hz.
    decay_range : (float, float), optional
        Bounds on every decay (e.g. an indicator's,
        :attr:`nnfit.calcium.indicators.Indicator.decay_range`).
    return_info : bool
        Also return how the decays were found (below).

    Returns
    -------
    tau_rise, tau_decay : numpy.ndarray
        One value per recording, seconds. All equal to the pooled estimate where fewer than
        :data:`SHRINK_MIN_RECORDINGS` recordings are long enough to be searched in halves
        (``8 REFINE_LAGS_S fs`` frames each), or where they do not disagree beyond their noise;
        a recording too short for that keeps the pooled decay.
    info : dict
        Only with ``return_info``: ``pooled`` (``{"tau_rise", "tau_decay"}``, the pooled
        estimate every decay is shrunk towards), ``own_tau_decay`` (each recording's decay
        found on its own, NaN where it was too short to be compared), ``weight`` (how far each
        decay moved from the pooled one towards its own, in log: 0 keeps the pooled decay, 1
        the recording's own; ``None`` where fewer than :data:`SHRINK_MIN_RECORDINGS` could be
        compared), ``noise_variance`` and ``spread`` (``v`` and ``tau^2`` of the Notes;
        ``None`` with ``weight``).

    Notes
    -----
    With ``d_i`` the log decay of recording ``i``, ``a_i`` and ``b_i`` those of its two halves
    and ``m`` the log of the pooled decay, a normal model ``d_i = theta_i + e_i``,
    ``e_i ~ N(0, v)``, ``theta_i ~ N(m, tau^2)`` has the posterior mean

    .. math:: \hat d_i = m + \frac{\tau^2}{\tau^2 + v} (d_i - m).

    A half has twice the variance of the whole, so ``E[(a_i - b_i)^2] = 4 v`` and ``v`` is the
    mean of ``(a_i - b_i)^2 / 4``; ``tau^2 = max(0, s^2 - v)`` with ``s = 1.4826 MAD(d)``, a
    spread one outlying recording does not inflate. Chosen on simulations
    (``bench/calcium_per_recording.py --simulate``: sets of 8 recordings of GCaMP6f- and
    6s-like kernels at 30 and 158 Hz, decays equal or spread by 0.3 in log): where the decays
    were equal every recording got the pooled decay (12 sets of 12); where they differed, r of
    the inferred spikes rose by 0.0036 on average (-0.0006 to +0.0167) against the pooled
    decay, while each recording's own decay lost up to 0.025 (and 0.008 on average where the
    decays were equal). In a scratch run the variance in place of the MAD lost up to 0.011 on
    two sets of equal decays. Cost: three decay searches per recording besides the pooled one.

    References
    ----------
    .. [1] B. Efron, C. Morris, "Stein's estimation rule and its competitors - an empirical
       Bayes approach", J. Am. Stat. Assoc. 68, 117-130 (1973).
       https://doi.org/10.1080/01621459.1973.10481362

    Examples
    --------
    >>> from nnfit.calcium import simulate_recording
    >>> recs = [simulate_recording(1, 7200, tau_decay=td, seed=i).traces[0]
    ...         for i, td in enumerate([0.4, 0.4, 0.4, 1.6, 1.6, 1.6])]
    >>> tr, td = estimate_kinetics_per_recording(recs, 30.0)
    >>> bool(td[:3].max() < td[3:].min())
    True
    >>> *_, info = estimate_kinetics_per_recording(recs, 30.0, return_info=True)
    >>> bool(info["weight"] > 0.5), bool(td[0] < info["pooled"]["tau_decay"] < td[-1])
    (True, True)
    """
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    if isinstance(traces, np.ndarray) or not len(traces):
        raise ValueError(
            "traces must be a non-empty list of recordings (1-D traces or (cells, T) arrays), "
            "one per recording; for the cells of one recording alone, use estimate_parameters "
            "(kinetics pooled over its cells)"
        )
    recs = [
        np.atleast_2d(as_float_array(f"traces[{i}]", t, ndim=(1, 2))) for i, t in enumerate(traces)
    ]
    tr_p, td_p = estimate_kinetics_pooled([c for r in recs for c in r], fs, decay_range=decay_range)
    n = len(recs)
    tr = np.full(n, tr_p)
    td = np.full(n, td_p)
    info: dict[str, Any] = {
        "pooled": {"tau_rise": float(tr_p), "tau_decay": float(td_p)},
        "own_tau_decay": np.full(n, np.nan),
        "weight": None,
        "noise_variance": None,
        "spread": None,
    }
    # the cells and frames each recording's decay search reads (its cells share one length, so
    # none is read only where all are too short), and their halves
    used = [r[search_selection([r.shape[1]] * r.shape[0], fs), :REFINE_MAX_FRAMES] for r in recs]
    ok = np.array([u.shape[1] // 2 >= search_min_frames(fs) for u in used])
    if ok.sum() < SHRINK_MIN_RECORDINGS:
        return (tr, td, info) if return_info else (tr, td)

    def decay(cells: np.ndarray) -> float:
        # each recording and half on its own: no warning for each (the pooled call above warns)
        return _pooled_kinetics(list(cells), fs, None)[1]

    idx = np.flatnonzero(ok)
    d = np.log([decay(used[i]) for i in idx])
    a = np.log([decay(used[i][:, : used[i].shape[1] // 2]) for i in idx])
    b = np.log([decay(used[i][:, used[i].shape[1] // 2 :]) for i in idx])
    v = float(np.mean((a - b) ** 2) / 4.0)
    s2 = float((1.4826 * np.median(np.abs(d - np.median(d)))) ** 2)
    tau2 = max(0.0, s2 - v)
    w = tau2 / (tau2 + v) if tau2 + v > 0 else 0.0
    m = np.log(td_p)
    td[idx] = np.exp(m + w * (d - m))
    if decay_range is not None:
        td = np.clip(td, *decay_range)
    log.info(
        "per-recording decays: noise variance %.3g, spread %.3g (log), weight %.2f", v, tau2, w
    )
    info["own_tau_decay"][idx] = np.exp(d)
    info.update(weight=w, noise_variance=v, spread=tau2)
    tr = np.minimum(tr, 0.5 * td)
    return (tr, td, info) if return_info else (tr, td)


def lam_from_noise(
    noise: np.ndarray | float, tau_rise: float, tau_decay: float, fs: float, z: float = LAM_Z
) -> np.ndarray:
    """The sparsity weight ``lam = z sigma ||h||_2`` (independent of trace length).

    Examples
    --------
    >>> float(np.round(lam_from_noise(0.1, 0.05, 0.5, 30.0, z=1.0)[0], 4))
    0.3374
    """
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    h = build_kernel(tau_rise, tau_decay, fs)
    return np.atleast_1d(np.asarray(noise, dtype=float)) * float(z) * float(np.linalg.norm(h))


def estimate_parameters(
    traces: np.ndarray,
    fs: float,
    *,
    z: float = LAM_Z,
    decay_range: tuple[float, float] | None = None,
) -> dict:
    """Estimate ``noise``, ``tau_rise``, ``tau_decay`` and ``lam`` per cell and pooled.

    Parameters
    ----------
    traces : array_like
        ``(T,)`` or ``(cells, T)`` fluorescence (any baseline; it is removed).
    fs : float
        Sampling rate in Hz.
    z : float
        Multiplier of the lam rule ``lam = z noise ||h||_2``.
    decay_range : (float, float), optional
        Bounds on the pooled decay (e.g. an indicator's, see :func:`estimate_kinetics`).

    Returns
    -------
    dict
        ``noise``, ``tau_rise``, ``tau_decay``, ``lam``: arrays with one value per cell (``lam``
        uses the pooled kinetics, which are what :func:`deconvolve` uses), and ``pooled``: a
        dict with the same keys as floats (noise and lam pooled by the median).

    Examples
    --------
    >>> from nnfit.calcium.ar2 import AR2Convolution
    >>> rng = np.random.default_rng(1)
    >>> s = rng.poisson(0.5 / 30.0, (4, 18000)).astype(float)
    >>> y = AR2Convolution(18000, 0.05, 0.6, 30.0, n_cells=4).forward(s) + 0.1 * rng.standard_normal(s.shape)
    >>> p = estimate_parameters(y, 30.0)
    >>> bool(abs(p["pooled"]["tau_decay"] - 0.6) < 0.1), bool(abs(p["pooled"]["noise"] - 0.1) < 0.01)
    (True, True)
    """
    x = as_float_array("traces", traces, ndim=(1, 2))
    fs = check_real("fs", fs, low=0.0, low_inclusive=False)
    z = check_real("z", z, low=0.0, low_inclusive=False)
    x2 = np.atleast_2d(x)
    noise = estimate_noise(x2, fs)
    tr, td, tr_p, td_p = estimate_kinetics(x2, fs, decay_range=decay_range)
    lam = lam_from_noise(noise, tr_p, td_p, fs, z)
    pooled_noise = float(np.median(noise))
    return {
        "noise": noise,
        "tau_rise": tr,
        "tau_decay": td,
        "lam": lam,
        "pooled": {
            "noise": pooled_noise,
            "tau_rise": tr_p,
            "tau_decay": td_p,
            "lam": float(np.median(lam)),
        },
    }
