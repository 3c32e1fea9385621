import numpy as np

from nnfit.operators import LinearOperator, MatrixOperator, dottest


class _Diff(LinearOperator):
    """First differences: an operator with a hand-written adjoint."""

    def __init__(self, n):
        self.model_shape = (n,)
        self.data_shape = (n - 1,)

    def forward(self, x):
        return np.diff(x)

    def adjoint(self, r):
        out = np.zeros(len(r) + 1)
        out[1:] += r
        out[:-1] -= r
        return out


def test_dottest_and_dense_agree():
    op = _Diff(7)
    assert dottest(op) < 1e-14
    dense = op.todense()
    assert np.array_equal(dense, np.diff(np.eye(7), axis=0))
    lin = op.aslinearoperator()
    v = np.arange(7.0)
    assert np.allclose(lin.matvec(v), dense @ v)
    assert np.allclose(lin.rmatvec(np.ones(6)), dense.T @ np.ones(6))


def test_dottest_catches_wrong_adjoint():
    class Wrong(_Diff):
        def adjoint(self, r):
            return np.concatenate([r, [0.0]])

    assert dottest(Wrong(7)) > 1e-3


def test_matrix_operator_roundtrip():
    m = np.random.default_rng(1).standard_normal((5, 3))
    op = MatrixOperator(m)
    assert op.shape == (5, 3)
    assert np.allclose(op.todense(), m)
