"""Calcium spike deconvolution: the CaTune Python companion."""

from nnfit.calcium.kernel import build_kernel, compute_lipschitz, tau_to_ar2

__all__ = ["build_kernel", "compute_lipschitz", "tau_to_ar2"]
from nnfit.calcium.ar2 import AR2Convolution
from nnfit.calcium.baseline import running_baseline
from nnfit.calcium.estimate import estimate_parameters
from nnfit.calcium.solver import DeconvolutionResult, deconvolve

__all__ += [
    "AR2Convolution",
    "DeconvolutionResult",
    "deconvolve",
    "estimate_parameters",
    "running_baseline",
]
