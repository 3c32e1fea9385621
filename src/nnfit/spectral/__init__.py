"""Spectral cube fitting (CubeFit): LOSVD-convolved templates, HyperCube, global NNLS."""
