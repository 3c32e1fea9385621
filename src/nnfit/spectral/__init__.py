"""Spectral cube fitting (CubeFit): LOSVD-convolved templates, HyperCube, global NNLS.

Public names are imported lazily, so ``nnfit --help`` and other command groups do not pay
for importing h5py and SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining module.
_LAZY = {
    "CubeProblem": "nnfit.spectral.store",
    "H5Manager": "nnfit.spectral.manager",
    "load_problem": "nnfit.spectral.store",
    "open_h5": "nnfit.io.hdf5",
    "SimulatedCube": "nnfit.spectral.simulate",
    "simulate_cube": "nnfit.spectral.simulate",
    "build_hypercube": "nnfit.spectral.hypercube",
    "compress_hypercube_inplace": "nnfit.spectral.hypercube",
    "HyperCubeReader": "nnfit.spectral.hypercube_reader",
    "PipelineRunner": "nnfit.spectral.kaczmarz_fit",
    "FitTracker": "nnfit.spectral.tracker",
    "TrackerConfig": "nnfit.spectral.tracker",
    "reconstruct_model_cube_single": "nnfit.spectral.reconstruct",
    "live_fit_dashboard": "nnfit.spectral.plots",
    "CubeOperator": "nnfit.spectral.cube_operator",
    "fit_cube": "nnfit.spectral.fit",
    # The exact (band-limited) model, LOSVDs and velocity conventions.
    "losvd_from_moments": "nnfit.spectral.losvd",
    "convert_velocity": "nnfit.spectral.losvd",
    "velocity_from_redshift": "nnfit.spectral.losvd",
    "redshift_from_velocity": "nnfit.spectral.losvd",
    # From a FITS IFU cube to population maps.
    "read_ifu_cube": "nnfit.spectral.ifu_cube",
    "spaxel_signal_noise": "nnfit.spectral.binning",
    "voronoi_bins": "nnfit.spectral.binning",
    "bin_spectra": "nnfit.spectral.binning",
    "log_rebin": "nnfit.spectral.logrebin",
    "load_template_library": "nnfit.spectral.templates",
    "read_lsf_table": "nnfit.spectral.lsf",
    "line_mask": "nnfit.spectral.linemask",
    "read_kinematics_table": "nnfit.spectral.kinematics",
    "losvd_from_kinematics": "nnfit.spectral.kinematics",
    "read_losvd_file": "nnfit.spectral.kinematics",
    "store_from_ifu_cube": "nnfit.spectral.ifu_store",
    "fit_bins": "nnfit.spectral.bin_fit",
    "regul_for_chi2_rise": "nnfit.spectral.regul_search",
    "population_maps": "nnfit.spectral.maps",
    "write_maps": "nnfit.spectral.maps",
    "write_ifu_demo": "nnfit.spectral.simulate_ifu",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnfit.spectral' has no attribute {name!r}")
