"""nnfit: non-negative fitting of scientific signals.

Capabilities live in sub-packages over shared layers:

- :mod:`nnfit.calcium`  -- calcium spike deconvolution (CaTune companion)
- :mod:`nnfit.spectral` -- spectral cube fitting (CubeFit)
- :mod:`nnfit.fixtures` -- ptychography dataset fixtures
- :mod:`nnfit.operators`, :mod:`nnfit.solvers` -- linear operators and the solvers that take them
- :mod:`nnfit.io` -- atomic writes, sidecars and hashing
- :mod:`nnfit.parallel` -- local or Dask-distributed execution
"""

__version__ = "0.1.0"
