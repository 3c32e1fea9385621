"""Seeded synthetic calcium recordings: spikes, noise-free fluorescence and noisy traces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnfit.calcium.ar2 import convolve_kernel
from nnfit.calcium.kernel import check_kinetics
from nnfit.validate import check_int, check_real

__all__ = ["SimulatedRecording", "simulate_recording"]


@dataclass(frozen=True)
class SimulatedRecording:
    """A synthetic recording and its ground truth.

    Attributes
    ----------
    traces : numpy.ndarray
        ``(n_cells, n_timepoints)`` observed fluorescence: ``calcium + baseline + noise``.
    spikes : numpy.ndarray
        ``(n_cells, n_timepoints)`` spike counts per frame (float64).
    calcium : numpy.ndarray
        ``(n_cells, n_timepoints)`` noise-free ``K spikes`` (no baseline).
    fs, tau_rise, tau_decay, noise, baseline : float
        The settings used.
    seed : int
        The seed that reproduces it.
    """

    traces: np.ndarray
    spikes: np.ndarray
    calcium: np.ndarray
    fs: float
    tau_rise: float
    tau_decay: float
    noise: float
    baseline: float
    seed: int


def simulate_recording(
    n_cells: int = 10,
    n_timepoints: int = 3000,
    *,
    fs: float = 30.0,
    tau_rise: float = 0.05,
    tau_decay: float = 0.5,
    rate_hz: float = 0.5,
    noise: float = 0.2,
    baseline: float = 0.0,
    seed: int = 0,
) -> SimulatedRecording:
    """Simulate Poisson spiking cells seen through the CaTune kernel, with Gaussian noise.

    Spike counts per frame are Poisson with mean ``rate_hz / fs``; the fluorescence is the
    spikes convolved with :func:`~nnfit.calcium.build_kernel` (peak 1 per spike), plus
    ``baseline``, plus white Gaussian noise of standard deviation ``noise``. The same
    ``seed`` gives the same recording on every platform (numpy's PCG64).

    Parameters
    ----------
    n_cells, n_timepoints : int
        Size of the recording, >= 1.
    fs : float
        Sampling rate in Hz.
    tau_rise, tau_decay : float
        Kernel time constants in seconds.
    rate_hz : float
        Mean firing rate, >= 0.
    noise : float
        Noise standard deviation (a spike's peak is 1), >= 0.
    baseline : float
        Constant added to every trace.
    seed : int
        Random seed, >= 0.

    Returns
    -------
    SimulatedRecording

    Examples
    --------
    >>> rec = simulate_recording(3, 600, seed=1)
    >>> rec.traces.shape, bool(np.array_equal(rec.traces, simulate_recording(3, 600, seed=1).traces))
    ((3, 600), True)
    """
    n_cells = check_int("n_cells", n_cells, low=1)
    n_timepoints = check_int("n_timepoints", n_timepoints, low=1)
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    rate_hz = check_real("rate_hz", rate_hz, low=0.0)
    noise = check_real("noise", noise, low=0.0)
    baseline = check_real("baseline", baseline)
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    spikes = rng.poisson(rate_hz / fs, size=(n_cells, n_timepoints)).astype(np.float64)
    calcium = convolve_kernel(spikes, tau_rise, tau_decay, fs)
    traces = calcium + baseline + noise * rng.standard_normal(spikes.shape)
    return SimulatedRecording(
        traces=traces,
        spikes=spikes,
        calcium=calcium,
        fs=fs,
        tau_rise=tau_rise,
        tau_decay=tau_decay,
        noise=noise,
        baseline=baseline,
        seed=seed,
    )
