"""The operator interface and a dense reference implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse.linalg as spla


class LinearOperator(ABC):
    """A linear map ``A`` from model space to data space, given by ``forward`` and ``adjoint``.

    Subclasses set ``model_shape`` and ``data_shape`` and implement :meth:`forward`
    (``x -> A x``) and :meth:`adjoint` (``r -> A^T r``). Arrays keep their natural shapes
    (for example ``(C, P)`` weights and ``(S, L)`` spectra); :meth:`aslinearoperator`
    flattens them for SciPy.
    """

    model_shape: tuple[int, ...]
    data_shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float64)

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply the operator: model-space array -> data-space array."""

    @abstractmethod
    def adjoint(self, r: np.ndarray) -> np.ndarray:
        """Apply the transpose: data-space array -> model-space array."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_data, n_model)``: the shape of the equivalent matrix."""
        return int(np.prod(self.data_shape)), int(np.prod(self.model_shape))

    def aslinearoperator(self) -> spla.LinearOperator:
        """Return a :class:`scipy.sparse.linalg.LinearOperator` on flattened vectors."""

        def mv(v: np.ndarray) -> np.ndarray:
            return self.forward(np.reshape(v, self.model_shape)).ravel()

        def rmv(v: np.ndarray) -> np.ndarray:
            return self.adjoint(np.reshape(v, self.data_shape)).ravel()

        return spla.LinearOperator(self.shape, matvec=mv, rmatvec=rmv, dtype=self.dtype)

    def todense(self) -> np.ndarray:
        """Materialise the matrix column by column (for tests on small problems only)."""
        n_data, n_model = self.shape
        out = np.empty((n_data, n_model), dtype=self.dtype)
        e = np.zeros(n_model, dtype=self.dtype)
        for j in range(n_model):
            e[j] = 1.0
            out[:, j] = self.forward(e.reshape(self.model_shape)).ravel()
            e[j] = 0.0
        return out


class MatrixOperator(LinearOperator):
    """A dense matrix as an operator: the reference the fast operators are tested against.

    Examples
    --------
    >>> op = MatrixOperator(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    >>> op.forward(np.array([1.0, 1.0])).tolist()
    [3.0, 7.0, 11.0]
    >>> op.adjoint(np.array([1.0, 0.0, 0.0])).tolist()
    [1.0, 2.0]
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix)
        if self.matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D; got shape {self.matrix.shape}")
        self.data_shape = (self.matrix.shape[0],)
        self.model_shape = (self.matrix.shape[1],)
        self.dtype = np.result_type(self.matrix.dtype, np.float64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.matrix @ np.ravel(x)
        return out

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.matrix.T @ np.ravel(r)
        return out


def dottest(op: LinearOperator, *, seed: int = 0) -> float:
    """Return the relative mismatch of ``<A x, y>`` and ``<x, A^T y>`` for random x, y.

    A correct adjoint gives a value near machine precision.

    Examples
    --------
    >>> dottest(MatrixOperator(np.eye(3))) < 1e-14
    True
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(op.model_shape)
    y = rng.standard_normal(op.data_shape)
    lhs = float(np.vdot(op.forward(x), y))
    rhs = float(np.vdot(x, op.adjoint(y)))
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), np.finfo(float).tiny)
