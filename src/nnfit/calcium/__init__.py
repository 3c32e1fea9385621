"""Calcium spike deconvolution: the CaTune Python companion."""

from nnfit.calcium.fista import DeconvolutionInfo, KernelOperator, run_deconvolution
from nnfit.calcium.kernel import build_kernel, compute_lipschitz, tau_to_ar2

__all__ = [
    "DeconvolutionInfo",
    "KernelOperator",
    "build_kernel",
    "compute_lipschitz",
    "run_deconvolution",
    "tau_to_ar2",
]
