"""Spectral cube fitting (CubeFit): LOSVD-convolved templates, HyperCube, global NNLS."""

# Store, operators, simulation and HyperCube build (issue 4).
from nnfit.spectral.hypercube import build_hypercube, compress_hypercube_inplace
from nnfit.spectral.simulate import SimulatedCube, simulate_cube
from nnfit.spectral.store import CubeProblem, H5Manager, load_problem, open_h5

__all__ = [
    "CubeProblem",
    "H5Manager",
    "SimulatedCube",
    "build_hypercube",
    "compress_hypercube_inplace",
    "load_problem",
    "open_h5",
    "simulate_cube",
]
