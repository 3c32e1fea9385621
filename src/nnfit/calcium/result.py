"""The one result type of every calcium solver: :class:`DeconvolutionResult`.

``deconvolve`` (exact, certified), ``run_deconvolution(..., return_info=True)`` (catune's
FISTA) and ``deconvolve_from_export(..., return_info=True)`` (the CaTune browser's problem)
all describe their solution with it; a field a solver does not compute holds NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnfit.calcium.kernel import spike_time_offset

__all__ = ["DeconvolutionResult"]


@dataclass
class DeconvolutionResult:
    """What every calcium solver returns. Per-cell arrays have one entry per trace.

    ``spikes``, ``calcium`` and ``baseline`` have the shape of the input (one trace or
    ``(cells, T)``); the per-cell fields are arrays over cells (length 1 for one trace).

    Attributes
    ----------
    spikes : numpy.ndarray
        Inferred spikes ``s >= 0``, shape of the input.
    calcium : numpy.ndarray
        ``K s``: the fitted calcium (without baseline), shape of the input.
    baseline : numpy.ndarray
        The baseline under the fit (``y ~ baseline + calcium``), shape of the input (a
        read-only broadcast of one constant per cell where the solver fits a constant;
        zeros where it fits none).
    lam : numpy.ndarray
        The sparsity weight used per cell (for the browser's problem, the slider value times
        the kernel's DC gain, i.e. the weight of ``sum(s)`` in the objective).
    objective : numpy.ndarray
        Objective value per cell (with the baseline it used).
    gap : numpy.ndarray
        Relative duality gap per cell: a proof that ``objective`` is within ``gap * objective``
        of the optimum. NaN for the FISTA solvers, which give no certificate.
    kkt : numpy.ndarray
        Largest violation of the optimality conditions per cell, in units of ``lam`` (NaN for
        the FISTA solvers).
    iterations : numpy.ndarray
        Solver iterations per cell (interior-point iterations of the last solve for
        ``"drift"``; FISTA iterations, the count ``catune`` would run, for FISTA).
    converged : numpy.ndarray
        The solver's stop rule was met before ``max_iter``: ``gap <= tol`` for the exact
        solver, a relative objective change below ``tol`` for FISTA.
    baseline_kind : list of str
        ``"none"``, ``"constant"`` or ``"drift"`` per cell (what ``"auto"`` chose).
    tau_rise, tau_decay, fs : float
        Kinetics and sampling rate used (for a kernel with two decays, ``tau_decay`` is the
        fast one).
    noise : numpy.ndarray
        Noise estimate per cell (from the spectrum); NaN where nothing needed it.
    estimated : dict
        Which parameters were estimated from the data (``{"kinetics": bool, "lam": bool}``).
    indicator : str or None
        The indicator named as the prior of the estimated kinetics
        (:mod:`nnfit.calcium.indicators`), if any.
    time_s : float
        Wall-clock seconds the call took.
    params : ExportParams or None
        The browser export applied (:func:`~nnfit.calcium.deconvolve_from_export` and
        :func:`~nnfit.calcium.solve_with_baseline`); None for the other solvers.
    tau_decay2, fraction : float or None, float
        The slow decay and the fast decay's weight of a kernel with two decays
        (:func:`~nnfit.calcium.deconvolve_two_decay`); None and 1 for one decay.
    """

    spikes: np.ndarray
    calcium: np.ndarray
    baseline: np.ndarray
    lam: np.ndarray
    objective: np.ndarray
    gap: np.ndarray
    kkt: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    baseline_kind: list
    tau_rise: float
    tau_decay: float
    fs: float
    noise: np.ndarray
    estimated: dict = field(default_factory=dict)
    indicator: str | None = None
    time_s: float = math.nan
    params: Any = None
    tau_decay2: float | None = None
    fraction: float = 1.0

    @property
    def time_offset(self) -> float:
        """Seconds from a frame's time to the spikes reported at that frame, on average.

        :func:`nnfit.calcium.kernel.spike_time_offset` over ``fs``: spike ``spikes[..., j]``
        is best placed at ``frame_time[j] + time_offset``.
        """
        return (
            spike_time_offset(
                self.tau_rise,
                self.tau_decay,
                self.fs,
                tau_decay2=self.tau_decay2,
                fraction=self.fraction,
            )
            / self.fs
        )

    @property
    def reconvolution(self) -> np.ndarray:
        """``calcium + baseline``: the model of the traces, shape of the input."""
        return self.calcium + self.baseline

    @classmethod
    def concatenate(cls, parts: list[DeconvolutionResult]) -> DeconvolutionResult:
        """Join results over blocks of cells (2-D inputs, same kinetics) into one.

        Examples
        --------
        >>> z = np.zeros((1, 4))
        >>> one = DeconvolutionResult(z, z, z, np.ones(1), np.zeros(1), np.zeros(1),
        ...     np.zeros(1), np.ones(1, int), np.ones(1, bool), ["none"], 0.05, 0.5, 30.0,
        ...     np.zeros(1))
        >>> DeconvolutionResult.concatenate([one, one]).spikes.shape
        (2, 4)
        """
        first = parts[0]
        arrays = (
            "spikes",
            "calcium",
            "baseline",
            "lam",
            "objective",
            "gap",
            "kkt",
            "iterations",
            "converged",
            "noise",
        )
        joined: dict[str, Any] = {
            name: np.concatenate([getattr(p, name) for p in parts]) for name in arrays
        }
        return cls(
            **joined,
            baseline_kind=[k for p in parts for k in p.baseline_kind],
            tau_rise=first.tau_rise,
            tau_decay=first.tau_decay,
            fs=first.fs,
            estimated=dict(first.estimated),
            indicator=first.indicator,
            time_s=float(sum(p.time_s for p in parts)),
            params=first.params,
            tau_decay2=first.tau_decay2,
            fraction=first.fraction,
        )
