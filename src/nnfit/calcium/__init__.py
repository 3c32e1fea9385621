"""Calcium spike deconvolution: the CaTune Python companion.

``run_deconvolution`` gives PyPI catune 0.1.0's result (compiled, O(T) per iteration, all
cells in parallel); ``save_for_tuning`` / ``load_tuning_data`` exchange recordings with the
CaTune browser; ``load_export_params`` / ``deconvolve_from_export`` apply the parameters the
user tuned there to a whole recording, with the browser's own problem; ``deconvolve`` solves
CaTune's objective to a certified optimum, estimating what is not given. Every solver
describes its solution with one :class:`DeconvolutionResult`.
"""

from typing import Any

from nnfit.calcium.ar2 import AR2Convolution
from nnfit.calcium.baseline import running_baseline
from nnfit.calcium.browser_files import load_tuning_data, save_for_tuning
from nnfit.calcium.browser_solver import (
    ExportParams,
    bandpass_filter,
    deconvolve_from_export,
    load_export_params,
    solve_with_baseline,
)
from nnfit.calcium.estimate import (
    estimate_kinetics_per_recording,
    estimate_kinetics_pooled,
    estimate_parameters,
)
from nnfit.calcium.fista import run_deconvolution
from nnfit.calcium.indicators import Indicator, indicator_kinetics
from nnfit.calcium.kernel import build_kernel, compute_lipschitz, spike_time_offset, tau_to_ar2
from nnfit.calcium.pipeline import deconvolve
from nnfit.calcium.result import DeconvolutionResult
from nnfit.calcium.simulate import SimulatedRecording, simulate_recording
from nnfit.calcium.two_decay import (
    TwoDecayKernel,
    deconvolve_two_decay,
    estimate_two_decay_kernel,
)

__all__ = [
    "AR2Convolution",
    "DeconvolutionResult",
    "ExportParams",
    "Indicator",
    "SimulatedRecording",
    "TwoDecayKernel",
    "bandpass_filter",
    "build_kernel",
    "compute_lipschitz",
    "deconvolve",
    "deconvolve_from_export",
    "deconvolve_two_decay",
    "estimate_kinetics_per_recording",
    "estimate_kinetics_pooled",
    "estimate_parameters",
    "estimate_two_decay_kernel",
    "indicator_kinetics",
    "load_export_params",
    "load_tuning_data",
    "run_deconvolution",
    "running_baseline",
    "save_for_tuning",
    "simulate_recording",
    "solve_with_baseline",
    "spike_time_offset",
    "tau_to_ar2",
]

#: names of the result types merged into DeconvolutionResult, importable with a warning
_MERGED = ("DeconvolutionInfo", "ExportResult")


def __getattr__(name: str) -> Any:
    if name in _MERGED:
        import warnings

        warnings.warn(
            f"{name} is now DeconvolutionResult (nnfit.calcium.DeconvolutionResult)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DeconvolutionResult
    raise AttributeError(f"module 'nnfit.calcium' has no attribute {name!r}")
