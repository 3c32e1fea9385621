"""nnfit: non-negative fitting of scientific signals.

Capabilities live in sub-packages over shared layers:

- :mod:`nnfit.calcium`  -- calcium spike deconvolution (CaTune companion)
- :mod:`nnfit.spectral` -- spectral cube fitting (CubeFit)
- :mod:`nnfit.ptycho` -- ptychography dataset fixtures (formerly ``nnfit.fixtures``)
- :mod:`nnfit.operators`, :mod:`nnfit.solvers` -- linear operators and the solvers that take them
- :mod:`nnfit.io` -- atomic writes, hashing, byte-deterministic NPZ, safe HDF5 opening
- :mod:`nnfit.parallel` -- local or Dask-distributed execution
- :mod:`nnfit.cli` -- the ``nnfit`` command line and demos (nothing else imports it)
"""

__version__ = "0.1.0"
