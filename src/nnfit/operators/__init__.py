"""Linear operators with a forward and an adjoint, in the PyLops style.

Solvers in :mod:`nnfit.solvers` take any :class:`LinearOperator`; they never know where
the numbers come from (an array, an HDF5 file, a recursion).
"""

from nnfit.operators.base import LinearOperator, MatrixOperator, dottest

__all__ = ["LinearOperator", "MatrixOperator", "dottest"]
