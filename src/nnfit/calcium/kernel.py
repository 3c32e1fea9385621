"""The double-exponential calcium kernel and its AR(2) form.

The kernel is ``h[i] = exp(-i dt / tau_decay) - exp(-i dt / tau_rise)`` for
``i = 0 .. K-1``, ``K = max(2, ceil(-ln(1e-6) tau_decay fs))``, scaled so that its peak is 1
(so ``h[0] = 0``). It equals CaTune's kernel bit for bit. It is also the impulse response of
the AR(2) recursion ``c[t] = g1 c[t-1] + g2 c[t-2] + s[t]``, delayed by one frame and scaled
by ``(d - r) / peak``, which is what lets the fast solvers work in O(T).
"""

from __future__ import annotations

import logging

import numpy as np

from nnfit.validate import as_float_array, check_real

log = logging.getLogger(__name__)


def check_kinetics(tau_rise: object, tau_decay: object, fs: object) -> tuple[float, float, float]:
    """Validate kinetics and sampling rate; return them as floats.

    ``tau_rise >= tau_decay`` would give a zero or negative kernel, so it is refused.
    """
    fs_ = check_real("fs", fs, low=0.0, low_inclusive=False)
    tr = check_real("tau_rise", tau_rise, low=0.0, low_inclusive=False)
    td = check_real("tau_decay", tau_decay, low=0.0, low_inclusive=False)
    if tr >= td:
        raise ValueError(
            f"tau_rise must be smaller than tau_decay; got tau_rise={tr:g} s, tau_decay={td:g} s "
            "(swap them if they were given in the wrong order)"
        )
    check_decay_scale(td, fs_)
    n = kernel_length(td, fs_)
    if n > MAX_KERNEL_LENGTH:
        raise ValueError(
            f"tau_decay={td:g} s at fs={fs_:g} Hz needs a kernel of {n} samples, more than "
            f"{MAX_KERNEL_LENGTH}; calcium indicators decay within seconds (is tau_decay in "
            "seconds, and fs in Hz?)"
        )
    return tr, td, fs_


def check_decay_scale(tau_decay: float, fs: float, name: str = "tau_decay") -> None:
    """Refuse a decay shorter than :data:`MIN_DECAY_FRAMES` of a frame; warn above
    :data:`MAX_PLAUSIBLE_DECAY_S` (kinetics given in ms), once per decay value in a process.

    Below the floor the kernel is one frame: nothing to deconvolve, and its two-pole
    recursion (CaTune's, :func:`~nnfit.calcium.run_deconvolution`) subtracts terms that differ
    by the decay's per-frame factor (< 3.4e-4 here), losing digits as it shrinks; a decay of
    1e-9 s made the kernel's peak 0 and its scale a division by zero.

    Examples
    --------
    >>> check_decay_scale(0.5, 30.0)
    >>> check_decay_scale(0.0005, 30.0)
    Traceback (most recent call last):
    ...
    ValueError: tau_decay=0.0005 s is shorter than 1/8 of a frame (0.00417 s at fs=30 Hz): the kernel would be a single frame; give the decay in seconds (not ms), or a higher fs
    """
    if tau_decay * fs < MIN_DECAY_FRAMES:
        raise ValueError(
            f"{name}={tau_decay:g} s is shorter than 1/8 of a frame "
            f"({MIN_DECAY_FRAMES / fs:.3g} s at fs={fs:g} Hz): the kernel would be a single "
            "frame; give the decay in seconds (not ms), or a higher fs"
        )
    if tau_decay > MAX_PLAUSIBLE_DECAY_S and tau_decay not in _WARNED_DECAYS:
        _WARNED_DECAYS.add(tau_decay)
        log.warning(
            "%s=%g s: calcium indicators decay within seconds; is it in seconds, not ms?",
            name,
            tau_decay,
        )


#: Shortest decay accepted, in frames (1/8: the per-frame factor exp(-1 / (tau_decay fs)) is
#: then 3.4e-4, where run_deconvolution still agrees with catune to 6e-13 of the spikes'
#: maximum; at 1/13 to 2e-11, at 1/30 to 8e-4).
MIN_DECAY_FRAMES = 1.0 / 8.0
#: Longer decays are accepted with a warning (kinetics given in ms look like this).
MAX_PLAUSIBLE_DECAY_S = 30.0
#: Decays warned about: a run checks its kinetics wherever it builds a kernel (its AR(2) form,
#: each block of cells, each solver), and its user needs to read the warning once.
_WARNED_DECAYS: set[float] = set()

MAX_KERNEL_LENGTH = 10_000_000
"""Longest kernel accepted (samples): ~23 min of decay at 1 kHz, far beyond any indicator."""


def kernel_length(tau_decay: float, fs: float) -> int:
    """Number of kernel samples: until the decay envelope falls below 1e-6."""
    return max(2, int(np.ceil(-np.log(1e-6) * tau_decay / (1.0 / fs))))


def build_kernel(tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """Build the double-exponential calcium kernel, scaled to a peak of 1.

    Parameters
    ----------
    tau_rise : float
        Rise time constant in seconds, ``0 < tau_rise < tau_decay``.
    tau_decay : float
        Decay time constant in seconds.
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        Kernel of length ``max(2, ceil(-ln(1e-6) tau_decay fs))``, float64, ``h[0] = 0``.

    Examples
    --------
    >>> h = build_kernel(0.05, 0.5, 30.0)
    >>> len(h), float(h[0]), float(h.max())
    (208, 0.0, 1.0)
    """
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    dt = 1.0 / fs
    t = np.arange(kernel_length(tau_decay, fs)) * dt
    kernel = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    peak = kernel.max()
    if peak > 0.0:
        kernel /= peak
    return kernel


def tau_to_ar2(tau_rise: float, tau_decay: float, fs: float) -> tuple[float, float, float, float]:
    """AR(2) coefficients of the kernel: ``(g1, g2, d, r)``.

    ``d = exp(-dt / tau_decay)`` and ``r = exp(-dt / tau_rise)`` are the roots of the
    recursion ``c[t] = g1 c[t-1] + g2 c[t-2] + s[t]``, with ``g1 = d + r`` and ``g2 = -d r``.

    Examples
    --------
    >>> g1, g2, d, r = tau_to_ar2(0.05, 0.5, 30.0)
    >>> bool(np.isclose(g1, d + r) and np.isclose(g2, -d * r))
    True
    """
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    dt = 1.0 / fs
    d = np.exp(-dt / tau_decay)
    r = np.exp(-dt / tau_rise)
    return float(d + r), float(-(d * r)), float(d), float(r)


def spike_time_offset(
    tau_rise: float,
    tau_decay: float,
    fs: float,
    *,
    tau_decay2: float | None = None,
    fraction: float = 1.0,
) -> float:
    """Mean delay, in frames, from the frame a spike is reported at to the spike itself.

    The kernel's first sample is ``h[0] = 0``: a spike reported at frame ``j`` first shows at
    frame ``j + 1``. A real spike at time ``t_j + u / fs`` (``0 < u <= 1``) is fitted by spikes
    at frames ``j``, ``j + 1``, ``j + 2`` (the best non-negative least-squares combination of
    the sampled kernel with the continuous one shifted by ``u``), whose centre of mass is
    earlier than ``u`` when the rise is faster than a frame. Averaged over ``u`` uniform in the
    frame and weighted by the fitted mass, the delay is this offset: half a frame when the rise
    is instantaneous, towards 0 when the rise spans several frames (the sampled kernel then
    places spikes between frames by splitting them). Report spike ``j`` at
    ``frame_time[j] + offset / fs``. Depends on the kinetics only, never on data.

    Parameters
    ----------
    tau_rise, tau_decay : float
        Kinetics in seconds, ``0 < tau_rise < tau_decay``.
    fs : float
        Sampling rate in Hz.
    tau_decay2, fraction : float, optional
        A second, slower decay and the weight of the first
        (:class:`nnfit.calcium.TwoDecayKernel`'s shape); ``fraction = 1`` (default): one decay.

    Returns
    -------
    float
        Offset in frames, in ``[0, 0.5]``.

    Examples
    --------
    >>> round(spike_time_offset(1e-5, 0.5, 30.0), 3)  # instantaneous rise: half a frame
    0.5
    >>> spike_time_offset(0.2, 1.0, 30.0) < 0.05  # a rise of 6 frames: spikes land on time
    True
    """
    from scipy.optimize import nnls

    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    f = check_real("fraction", fraction, low=0.0, high=1.0)
    if tau_decay2 is not None:
        check_real("tau_decay2", tau_decay2, low=tau_decay)
    tau_2 = tau_decay if tau_decay2 is None or f == 1.0 else float(tau_decay2)
    n = int(np.ceil(10.0 * max(tau_decay, tau_2) * fs)) + 8
    k = np.arange(n, dtype=np.float64)

    def h(t: np.ndarray) -> np.ndarray:
        tp = np.maximum(t, 0.0)
        decay = f * np.exp(-tp / tau_decay) + (1.0 - f) * np.exp(-tp / tau_2)
        return np.where(t > 0, decay - np.exp(-tp / tau_rise), 0.0)

    hd = h(k / fs)
    design = np.stack([np.r_[np.zeros(j), hd[: n - j]] for j in range(3)], axis=1)
    pos = np.arange(3, dtype=np.float64)
    num = den = 0.0
    for u in (np.arange(64) + 0.5) / 64:
        a, _ = nnls(design, h((k - u) / fs))
        num += float(a @ (u - pos))
        den += float(a.sum())
    return float(np.clip(num / den, 0.0, 0.5)) if den > 0 else 0.0


def compute_lipschitz(kernel: np.ndarray) -> float:
    """Lipschitz constant of the gradient of ``0.5 ||y - K s||^2``: ``max |DFT(h)|^2``.

    The DFT is taken over ``next_pow2(2 len(h))`` points, as CaTune does; for a
    non-negative kernel the maximum is at zero frequency and equals ``sum(h)**2``.

    Examples
    --------
    >>> h = build_kernel(0.05, 0.5, 30.0)
    >>> bool(np.isclose(compute_lipschitz(h), h.sum() ** 2))
    True
    """
    h = as_float_array("kernel", kernel, ndim=(1,))
    n_fft = 1
    while n_fft < 2 * len(h):
        n_fft *= 2
    return max(float(np.max(np.abs(np.fft.fft(h, n=n_fft)) ** 2)), 1e-10)
