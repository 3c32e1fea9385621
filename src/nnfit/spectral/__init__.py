"""Spectral cube fitting (CubeFit): LOSVD-convolved templates, HyperCube, global NNLS.

Public names are imported lazily, so ``nnfit --help`` and other command groups do not pay
for importing h5py and SciPy: ``__all__`` lists them, ``_HOME`` says which module defines
each, and the module is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CubeOperator",
    "CubeProblem",
    "FitResult",
    "FitTracker",
    "H5Manager",
    "HyperCubeReader",
    "KinematicsAtBoundError",
    "PipelineRunner",
    "SimulatedCube",
    "TrackerConfig",
    "bin_spectra",
    "build_hypercube",
    "compress_hypercube_inplace",
    "convert_velocity",
    "fit_bins",
    "fit_cube",
    "fit_store",
    "line_mask",
    "live_fit_dashboard",
    "load_problem",
    "load_template_library",
    "log_rebin",
    "losvd_from_kinematics",
    "losvd_from_moments",
    "open_h5",
    "population_maps",
    "ppxf_kinematics",
    "read_ifu_cube",
    "read_kinematics_table",
    "read_losvd_file",
    "read_lsf_table",
    "reconstruct_model_cube_single",
    "redshift_from_velocity",
    "regul_for_chi2_rise",
    "simulate_cube",
    "spaxel_signal_noise",
    "store_from_ifu_cube",
    "velocity_from_redshift",
    "voronoi_bins",
    "write_ifu_demo",
    "write_maps",
]

# Defining module -> the public names it holds.
_HOME = {
    "nnfit.io.hdf5": ("open_h5",),
    "nnfit.spectral.binning": ("bin_spectra", "spaxel_signal_noise", "voronoi_bins"),
    "nnfit.spectral.bin_fit": ("fit_bins",),
    "nnfit.spectral.cube_operator": ("CubeOperator",),
    "nnfit.spectral.fit": ("fit_cube", "fit_store"),
    "nnfit.spectral.hypercube": ("build_hypercube", "compress_hypercube_inplace"),
    "nnfit.spectral.hypercube_reader": ("HyperCubeReader",),
    "nnfit.spectral.ifu_cube": ("read_ifu_cube",),
    "nnfit.spectral.ifu_store": ("store_from_ifu_cube",),
    "nnfit.spectral.kaczmarz_fit": ("PipelineRunner",),
    "nnfit.spectral.kinematics": (
        "KinematicsAtBoundError",
        "losvd_from_kinematics",
        "ppxf_kinematics",
        "read_kinematics_table",
        "read_losvd_file",
    ),
    "nnfit.spectral.linemask": ("line_mask",),
    "nnfit.spectral.logrebin": ("log_rebin",),
    "nnfit.spectral.lsf": ("read_lsf_table",),
    "nnfit.spectral.losvd": (
        "convert_velocity",
        "losvd_from_moments",
        "redshift_from_velocity",
        "velocity_from_redshift",
    ),
    "nnfit.spectral.manager": ("H5Manager",),
    "nnfit.spectral.maps": ("population_maps", "write_maps"),
    "nnfit.spectral.plots": ("live_fit_dashboard",),
    "nnfit.spectral.reconstruct": ("reconstruct_model_cube_single",),
    "nnfit.spectral.regul_search": ("regul_for_chi2_rise",),
    "nnfit.spectral.result": ("FitResult",),
    "nnfit.spectral.simulate": ("SimulatedCube", "simulate_cube"),
    "nnfit.spectral.simulate_ifu": ("write_ifu_demo",),
    "nnfit.spectral.store": ("CubeProblem", "load_problem"),
    "nnfit.spectral.templates": ("load_template_library",),
    "nnfit.spectral.tracker": ("FitTracker", "TrackerConfig"),
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nnfit.spectral' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
