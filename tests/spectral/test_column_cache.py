"""ColumnCache and gram_extend: Gram blocks equal to the dense matrix's and, to the bit, with and
without the cache; gradients from cached columns; the memory cap honoured; fit_cube's working set
giving the same bits with and without the cache."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.spectral.column_cache import ColumnCache, design_columns, gram_extend
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import _peak_rss_bytes, fit_cube
from nnfit.spectral.gram import cube_gram


def _operator(continuum: bool = False) -> CubeOperator:
    rng = np.random.default_rng(3)
    tem = np.log(5000.0) + 1e-4 * np.arange(300)
    S, C, P, V, L = 30, 3, 12, 7, 100
    op = CubeOperator(
        rng.random((P, 300)),
        rng.random((S, V, C)),
        np.linspace(-200, 200, V),
        tem,
        tem[50:250:2],
        mask=rng.random(L) > 0.2,
        noise=0.5 + rng.random((S, L)),
        datacube=rng.random((S, L)),
        block_size=8,
    )
    if continuum:
        op.set_continuum(degree=2, mpoly=1.0 + 0.2 * rng.random((S, L)))
    return op


def _dense_gram(op: CubeOperator) -> tuple[np.ndarray, np.ndarray]:
    """``(W A)^T (W A)`` and ``(W A)^T W y`` column by column through the operator itself."""
    from nnfit.spectral.continuum import project_out

    C, P = op.model_shape
    d = op._data
    cols = []
    for j in range(C * P):
        e = np.zeros(C * P)
        e[j] = 1.0
        cols.append(project_out(d.q, op.unweighted_forward(e) * d.w).ravel())
    A = np.stack(cols, axis=1)
    return A.T @ A, A.T @ d.wy.ravel()


@pytest.mark.parametrize("continuum", [False, True])
def test_rounds_of_gram_blocks_equal_the_streamed_and_dense_ones(continuum):
    op = _operator(continuum)
    G_ref, b_ref = _dense_gram(op)
    scale = np.abs(G_ref).max()
    cache = ColumnCache(op, cap_bytes=4 * ColumnCache(op, 0).col_bytes)  # 4 slots: evictions
    rng = np.random.default_rng(0)
    J = np.zeros(0, dtype=np.int64)
    for _ in range(6):
        new = rng.choice(np.setdiff1d(np.arange(36), J), size=5, replace=False)
        G, b = cache.gram_extend(J, new)
        cols = np.concatenate([J, new])
        G2, b2 = gram_extend(op, J, new)  # every column built again: the same bits
        np.testing.assert_array_equal(G, G2)
        np.testing.assert_array_equal(b, b2)
        G3, b3 = cube_gram(op, cols, new_from=J.size)  # the full Gram's streaming
        np.testing.assert_allclose(G, G3, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(b, b3, rtol=1e-12, atol=1e-12 * np.abs(b_ref).max())
        np.testing.assert_allclose(G, G_ref[np.ix_(cols, new)], rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(b, b_ref[new], rtol=1e-12, atol=1e-12 * np.abs(b_ref).max())
        assert len(cache.slot) <= cache.capacity == 4 and cache.nbytes <= 4 * cache.col_bytes
        J = cols[rng.random(cols.size) < 0.5]  # keep about half, as the pruning does


def test_support_columns_survive_and_re_entering_columns_are_not_rebuilt():
    op = _operator()
    cache = ColumnCache(op, cap_bytes=1e9)
    cache.gram_extend(np.array([0, 1]), np.array([2, 3]))
    assert cache.computed == 4
    cache.gram_extend(np.array([0]), np.array([1, 4]))  # 1 re-enters: only 4 is built
    assert cache.computed == 5


def test_no_fresh_slot_past_the_growth_limit_and_the_same_bits():
    op = _operator()
    cache = ColumnCache(op, cap_bytes=1e9)
    cache.gram_extend(np.array([0, 1]), np.array([2, 3]))
    assert cache.touched == 4
    cache.grow_limit = cache.touched  # no memory left for fresh slots: reuse, never grow
    G, b = cache.gram_extend(np.array([0, 1]), np.array([5, 6, 7]))
    assert cache.touched == 4 and max(cache.slot.values()) < 4
    assert set(cache.slot) >= {0, 1} and len(cache.slot) == 4  # 2 and 3 gave their slots
    assert cache.computed == 4 + 3
    G2, b2 = gram_extend(op, np.array([0, 1]), np.array([5, 6, 7]))  # no cache at all
    np.testing.assert_array_equal(G, G2)
    np.testing.assert_array_equal(b, b2)


def test_cap_zero_stores_nothing_and_still_gives_the_gram():
    op = _operator()
    cache = ColumnCache(op, cap_bytes=0)
    G, b = cache.gram_extend(np.array([0, 7]), np.array([3, 9, 20]))
    G2, b2 = cube_gram(op, np.array([0, 7, 3, 9, 20]), new_from=2)
    np.testing.assert_allclose(G, G2, rtol=1e-12)
    np.testing.assert_allclose(b, b2, rtol=1e-12)
    assert cache.computed == 5
    assert cache.capacity == 0 and not cache.slot and cache._store is None


@pytest.mark.parametrize("continuum", [False, True])
def test_gradient_from_cached_columns_equals_the_operator_pass(continuum):
    op = _operator(continuum)
    cache = ColumnCache(op, cap_bytes=1e9)
    cols = np.array([1, 8, 14, 30])
    cache.gram_extend(cols[:2], cols[2:])
    x = np.zeros(36)
    x[cols] = [0.3, 1.2, 0.0, 2.5]
    assert cache.covers(x) and not cache.covers(np.eye(36)[5])
    g1, chi1 = cache.gradient(x)
    g2, chi2 = op.gradient(x.reshape(op.model_shape))
    np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-12 * np.abs(g2).max())
    assert chi1 == pytest.approx(chi2, rel=1e-13)
    g3, chi3 = cache.gradient(x, screen=True)
    g4, _ = op.gradient(x.reshape(op.model_shape), screen=True)
    assert chi3 == chi1
    np.testing.assert_allclose(g3, g4, rtol=0, atol=1e-12 * np.abs(g2).max())
    np.testing.assert_allclose(g3, g1, rtol=0, atol=1e-5 * np.abs(g2).max())


@pytest.mark.parametrize("continuum", [False, True])
def test_gradient_with_part_of_the_support_cached_equals_the_operator_pass(continuum):
    """Component 0 is covered by the cache, component 1 only in part, component 2 not at all:
    the model is columns for the first and the forward pass for the other two."""
    op = _operator(continuum)
    cache = ColumnCache(op, cap_bytes=1e9)
    cache.gram_extend(np.array([1, 8]), np.array([14]))  # columns 1, 8 (component 0), 14
    x = np.zeros(36)
    x[[1, 8, 14, 20, 30]] = [0.3, 1.2, 0.7, 2.0, 0.4]  # 20 (component 1) and 30 not cached
    assert not cache.covers(x)
    g1, chi1 = cache.gradient(x)
    g2, chi2 = op.gradient(x.reshape(op.model_shape))
    np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-12 * np.abs(g2).max())
    assert chi1 == pytest.approx(chi2, rel=1e-13)
    x[[14, 20, 30]] = 0.0  # covered: no forward pass at all
    g3, _ = cache.gradient(x)
    g4, _ = op.gradient(x.reshape(op.model_shape))
    np.testing.assert_allclose(g3, g4, rtol=0, atol=1e-12 * np.abs(g4).max())


def test_forward_pass_skips_zero_components_exactly(rng):
    """One product per component with a non-zero weight, added in place, gives the model of
    every component's product, zeros included (split dictionary: fitted and masked pixels)."""
    op = _operator()
    C, P = op.model_shape
    x = rng.random((C, P))
    kern, Y = op._data.kern, op._data.full_dictionary()
    scale = np.abs(op.forward(x)).max()
    cases = ([1], [0, 2], [0], [2], [], [0, 1, 2])  # components set to zero
    sparse = np.zeros((C, P))
    sparse[0, 3], sparse[2, [1, 5]] = 0.7, [1.1, 0.4]  # few templates: their rows alone
    for xz in [np.where(np.isin(np.arange(C), z)[:, None], 0.0, x) for z in cases] + [sparse]:
        ref = np.einsum("sck,cp,pkl->sl", kern, xz, Y)  # every component, zeros included
        got = op.forward(xz)
        assert got.flags.c_contiguous
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("cache_gb", [1.0, 4e-5])  # everything cached / about one column
def test_fit_cube_with_the_cache_gives_the_same_optimum(small_store, cache_gb):
    budget = _peak_rss_bytes() / 2**30 + 4.0  # above this process's peak: the cache is not cut
    kw = dict(method="active-set", x0=None, batch=4, checkpoint=False, memory_gb=budget)
    x0, st0 = fit_cube(small_store, cache_gb=0.0, **kw)
    x1, st1 = fit_cube(small_store, cache_gb=cache_gb, **kw)
    assert st0["column_cache"] is None and st1["column_cache"]["bytes"] <= cache_gb * 2**30
    assert st1["converged"] and st1["kkt_violation"] <= st1["kkt_tol"]
    assert st1["rounds"] == st0["rounds"]
    if cache_gb == 1.0:  # the support is never rebuilt: at most the candidates cost a column
        assert st1["columns_built"] <= st1["candidates"] < st0["columns_built"]
    # the Gram entries are the same bits, so the subproblems and the weights are too
    np.testing.assert_array_equal(x1, x0)
    for key in ("chi2", "objective", "kkt_violation"):
        assert st1[key] == st0[key]


def test_a_design_column_has_the_same_bits_built_alone_or_with_others():
    op = _operator(continuum=True)
    d = op._data.fitted().rows(0, 8)  # the columns live on the fitted pixels
    L = d.Y.shape[2]
    cols = np.array([5, 17, 29, 6, 18])  # three components of one population, and others
    together = np.empty((cols.size, 8, L))
    design_columns(d, cols, op.n_populations, together)
    for i, j in enumerate(cols):
        alone = np.empty((1, 8, L))
        design_columns(d, [j], op.n_populations, alone)
        np.testing.assert_array_equal(alone[0], together[i])
    # built in another order (they are taken a template at a time) into given rows
    where = np.array([3, 0, 4, 2, 1])
    placed = np.empty_like(together)
    design_columns(d, cols[::-1], op.n_populations, placed, where)
    for i, j in enumerate(cols[::-1]):
        np.testing.assert_array_equal(placed[where[i]], together[list(cols).index(j)])


def test_slot_runs_cover_every_slot_and_skip_long_gaps():
    from nnfit.spectral.column_cache import _GAP, _slot_runs

    slots = np.array([9, 0, 1, 3, 9 + _GAP + 2, 2])
    runs = _slot_runs(slots)
    assert runs == [(0, 4), (9, 10), (9 + _GAP + 2, 9 + _GAP + 3)]
    assert _slot_runs(np.array([0, 1 + _GAP])) == [(0, 2 + _GAP)]  # a short gap is included
    assert _slot_runs(np.zeros(0, dtype=np.int64)) == []
