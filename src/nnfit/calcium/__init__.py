"""Calcium spike deconvolution: the CaTune Python companion."""

from nnfit.calcium.kernel import build_kernel, compute_lipschitz, tau_to_ar2

__all__ = ["build_kernel", "compute_lipschitz", "tau_to_ar2"]
