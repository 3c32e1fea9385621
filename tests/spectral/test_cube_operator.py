"""CubeOperator: the matrix-free model equals the HyperCube rows; exact adjoint; weights."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nnfit.operators import dottest
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.model import model_rows
from nnfit.spectral.store import load_problem


def test_forward_and_adjoint_equal_hypercube(built_store, rng):
    op = CubeOperator.from_h5(built_store)
    with h5py.File(built_store, "r") as f:
        models = f["HyperCube/models"][()].astype(np.float64)  # (S, C, P, L)
    x = rng.random(op.model_shape)
    ref = np.einsum("scpl,cp->sl", models, x)
    got = op.forward(x)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()  # float32 cube
    r = rng.standard_normal(op.data_shape)
    ref_adj = np.einsum("scpl,sl->cp", models, r)
    got_adj = op.adjoint(r)
    assert np.abs(got_adj - ref_adj).max() <= 1e-6 * np.abs(ref_adj).max()


def test_rows_match_model_rows_in_float64(small_store, rng):
    prob = load_problem(small_store)
    op = CubeOperator.from_problem(prob)
    for s, c in [(0, 0), (5, 2), (11, 1)]:
        e = np.zeros(op.model_shape)
        p = rng.integers(op.n_populations)
        e[c, p] = 1.0
        row = op.forward(e)[s]
        ref = model_rows(
            prob.templates_PT, prob.losvd[s, :, c], prob.vel_pix, prob.tem_pix, prob.obs_pix
        )[p]
        assert np.abs(row - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("weighted", [False, True])
def test_dottest_float64(small_store, weighted):
    op = CubeOperator.from_h5(small_store, weighted=weighted, block_size=5)
    assert dottest(op, seed=1) < 1e-10
    assert dottest(op, seed=2) < 1e-10


def test_weights_follow_mask_and_noise(small_store, rng):
    prob = load_problem(small_store)
    op = CubeOperator.from_problem(prob, weighted=True)
    plain = CubeOperator.from_problem(prob)
    W = np.where(prob.mask[None, :], 1.0 / prob.noise, 0.0)
    np.testing.assert_array_equal(op.weights, W)
    x = rng.random(op.model_shape)
    np.testing.assert_allclose(op.forward(x), W * plain.forward(x), rtol=1e-14)
    # gradient = A^T W^2 (A x - y), chi2 = ||W (A x - y)||^2
    g, chi2 = op.gradient(x)
    res = plain.forward(x) - prob.datacube
    assert np.isclose(chi2, np.sum((W * res) ** 2), rtol=1e-12)
    np.testing.assert_allclose(g, plain.adjoint(W**2 * res), rtol=1e-10, atol=1e-12 * abs(g).max())
    # masked pixels carry no weight at all
    assert np.all(op.forward(x)[:, ~prob.mask] == 0)


def test_blocks_and_shapes_validated(small_store, rng):
    prob = load_problem(small_store)
    a = CubeOperator.from_problem(prob, block_size=1)
    b = CubeOperator.from_problem(prob, block_size=100)
    x = rng.random(a.model_shape)
    np.testing.assert_allclose(a.forward(x), b.forward(x), rtol=1e-14)
    np.testing.assert_allclose(a.adjoint(a.forward(x)), b.adjoint(b.forward(x)), rtol=1e-12)
    lin = a.aslinearoperator()
    assert lin.shape == (prob.S * prob.L, prob.C * prob.P)
    with pytest.raises(ValueError, match="losvd"):
        CubeOperator(
            prob.templates_PT, prob.losvd[:, :-1], prob.vel_pix, prob.tem_pix, prob.obs_pix
        )
    with pytest.raises(ValueError, match="noise"):
        CubeOperator(
            prob.templates_PT,
            prob.losvd,
            prob.vel_pix,
            prob.tem_pix,
            prob.obs_pix,
            noise=np.zeros((prob.S, prob.L)),
        )
    with pytest.raises(ValueError, match="datacube"):
        CubeOperator(
            prob.templates_PT, prob.losvd, prob.vel_pix, prob.tem_pix, prob.obs_pix
        ).gradient(x)


def test_a_split_dictionary_gives_the_whole_ones_results(small_store, rng, monkeypatch):
    """Enough masked pixels: the dictionary is kept as its fitted and masked parts; forward,
    adjoint, gradient and the dictionary itself equal those of the whole one, in this process
    and on a two-worker Dask cluster (whose workers split it too)."""
    from dask.distributed import Client, LocalCluster

    from nnfit.spectral import cube_operator

    prob = load_problem(small_store)
    assert np.mean(~prob.mask) >= cube_operator.MIN_MASKED
    x = rng.random((prob.C, prob.P))
    r = rng.standard_normal((prob.S, prob.L))

    def passes(op):
        return op.forward(x), op.adjoint(r), *op.gradient(x)

    split = CubeOperator.from_problem(prob)
    assert split._data.Y is None and split._data.twin.Y.shape[2] == prob.mask.sum()
    results = [passes(split)]
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        results.append(passes(CubeOperator.from_h5(small_store, scheduler=client, block_size=5)))
    monkeypatch.setattr(cube_operator, "MIN_MASKED", 2.0)  # never split
    whole = CubeOperator.from_problem(prob)
    assert whole._data.Y is not None
    np.testing.assert_allclose(split.dictionary, whole.dictionary, rtol=0, atol=1e-15)
    ref = passes(whole)
    for got in results:
        for a, b in zip(got[:3], ref[:3], strict=True):
            assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
        assert got[3] == pytest.approx(ref[3], rel=1e-13)


def test_component_chunks_give_the_one_chunk_passes(small_store, rng, monkeypatch):
    """The local passes a component at a time (as at C = 207) equal one chunk of all, and a
    component whose weights are all zero is skipped without changing the model."""
    from nnfit.spectral import cube_operator

    op = CubeOperator.from_h5(small_store)
    x = rng.random(op.model_shape)
    x[1] = 0.0  # a component left out of the forward pass
    r = rng.standard_normal(op.data_shape)
    C, K, L = op.n_components, op.n_taps, op.n_obs
    assert len(cube_operator._component_chunks(C, K, L)) == 1
    ref = op.forward(x), op.adjoint(r), *op.gradient(x)
    monkeypatch.setattr(cube_operator, "_CHUNK_BYTES", 8 * K * L)  # one component per chunk
    assert len(cube_operator._component_chunks(C, K, L)) == C
    got = op.forward(x), op.adjoint(r), *op.gradient(x)
    for a, b in zip(got[:3], ref[:3], strict=True):
        assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    assert got[3] == pytest.approx(ref[3], rel=1e-13)


@pytest.mark.parametrize("split", [True, False])
def test_a_screening_gradient_is_the_float64_one_to_float32_accuracy(
    small_store, rng, monkeypatch, split
):
    from nnfit.spectral import cube_operator

    if not split:
        monkeypatch.setattr(cube_operator, "MIN_MASKED", 2.0)
    prob = load_problem(small_store)
    op = CubeOperator.from_problem(prob)
    x = rng.random((prob.C, prob.P))
    g, chi2 = op.gradient(x)
    g32, chi2_32 = op.gradient(x, screen=True)
    assert chi2_32 == chi2  # the model and the residual stay float64
    err = np.abs(g32 - g).max() / np.abs(g).max()
    assert 0 < err <= 1e-5  # float32 products, float32 accuracy
    kern32, Y32 = op._screening_copies()
    assert kern32.dtype == Y32.dtype == np.float32
    assert op.screening_bytes() == kern32.nbytes + Y32.nbytes
    assert Y32.shape[-1] == (prob.mask.sum() if split else prob.L)  # the fitted pixels'


@pytest.mark.parametrize("split", [True, False])
def test_spaxels_share_the_dictionary_and_equal_the_problem_of_those_spaxels(
    small_store, rng, monkeypatch, split
):
    """``op.spaxels(s, s + 1)`` is the operator of ``problem.spaxel(s)`` to the bit (passes,
    and fits with continua), holds no dictionary of its own, and its continuum leaves the
    whole operator's model as it was; a bad range is refused naming it."""
    from nnfit.spectral import cube_operator
    from nnfit.spectral.fit import fit_cube

    if not split:
        monkeypatch.setattr(cube_operator, "MIN_MASKED", 2.0)  # the dictionary kept whole
    prob = load_problem(small_store)
    whole = CubeOperator.from_problem(prob)
    x = rng.random((prob.C, prob.P))
    before = whole.forward(x), *whole.gradient(x)
    alone_3 = CubeOperator.from_problem(prob.spaxel(3))
    for s in (0, 3, prob.S - 1):
        alone = CubeOperator.from_problem(prob.spaxel(s))
        part = whole.spaxels(s, s + 1)
        assert part._data.fitted().Y is whole._data.fitted().Y  # shared, not rebuilt
        r = rng.standard_normal((1, prob.L))
        for got, ref in zip(
            (part.forward(x), part.adjoint(r), *part.gradient(x)),
            (alone.forward(x), alone.adjoint(r), *alone.gradient(x)),
            strict=True,
        ):
            np.testing.assert_array_equal(got, ref)
        for kw in ({}, {"degree": 2, "mdegree": 2}):
            xa, sa = fit_cube(alone, checkpoint=False, x0=None, **kw)
            xp, sp = fit_cube(part, checkpoint=False, x0=None, **kw)
            np.testing.assert_array_equal(xp, xa)
            assert sp["chi2"] == sa["chi2"]
    after = whole.forward(x), *whole.gradient(x)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
    whole.set_continuum(2)  # a view starts from the plain model whatever its parent holds
    np.testing.assert_array_equal(whole.spaxels(3, 4).gradient(x)[0], alone_3.gradient(x)[0])
    with pytest.raises(ValueError, match=r"spaxels a:b must satisfy 0 <= a < b <= \d+; got 2:2"):
        whole.spaxels(2, 2)
