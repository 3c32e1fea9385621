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
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnfit.spectral' has no attribute {name!r}")
