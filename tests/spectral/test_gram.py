"""Streamed Gram: equals the dense normal equations; column subsets and extensions."""

from __future__ import annotations

import numpy as np

from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.gram import cube_gram


def test_gram_equals_dense_normal_equations(small_store):
    op = CubeOperator.from_h5(small_store, weighted=True, block_size=5)
    A = op.todense()
    wy = op._data.wy.ravel()
    G, b = cube_gram(op)
    ref = A.T @ A
    assert np.abs(G - ref).max() <= 1e-12 * np.abs(ref).max()
    np.testing.assert_array_equal(G, G.T)
    assert np.abs(b - A.T @ wy).max() <= 1e-12 * np.abs(b).max()


def test_subsets_and_extension(small_store, rng):
    op = CubeOperator.from_h5(small_store, block_size=4)
    G, b = cube_gram(op)
    cols = rng.permutation(G.shape[0])[:9]
    Gs, bs = cube_gram(op, cols)
    np.testing.assert_allclose(Gs, G[np.ix_(cols, cols)], rtol=1e-13, atol=1e-13 * abs(G).max())
    np.testing.assert_allclose(bs, b[cols], rtol=1e-13)
    Gx, bx = cube_gram(op, cols, new_from=6)
    assert Gx.shape == (9, 3)
    np.testing.assert_allclose(Gx, G[np.ix_(cols, cols[6:])], rtol=1e-13, atol=1e-13 * abs(G).max())
    np.testing.assert_allclose(bx, b[cols[6:]], rtol=1e-13)
