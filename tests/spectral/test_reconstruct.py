"""Model cube reconstruction: exact A x, bounded slabs, ragged tiles, digest skip."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nnfit.spectral.reconstruct import plan_tiles, reconstruct_model_cube_single

from ._kaczmarz_fixtures import make_store


def _dense(st, x):
    _, C, P, _ = st.models.shape
    return np.einsum("scpl,cp->sl", st.models.astype(np.float64), x.reshape(C, P))


def test_equals_dense_and_skips_when_digest_matches(tmp_path, rng):
    st = make_store(tmp_path / "c.h5", S=10, C=3, P=4, L=25, S_chunk=4)
    x = rng.random(12)
    info = reconstruct_model_cube_single(st.path, x)
    assert not info["skipped"] and info["tile"] == (4, 3, 4) and info["tiles"] == 3
    with h5py.File(st.path, "r") as f:
        out = f["ModelCube"][:]
        assert f["ModelCube"].dtype == np.float64 and f["ModelCube"].attrs["complete"]
    np.testing.assert_allclose(out, _dense(st, x), rtol=1e-13, atol=1e-13)
    assert reconstruct_model_cube_single(st.path, x.reshape(3, 4))["skipped"]
    again = reconstruct_model_cube_single(st.path, x, force=True)
    assert not again["skipped"]
    x2 = x.copy()
    x2[0] += 1.0
    info2 = reconstruct_model_cube_single(st.path, x2, array_name="Other")
    assert not info2["skipped"]
    with h5py.File(st.path, "r") as f:
        np.testing.assert_allclose(f["Other"][:], _dense(st, x2), rtol=1e-13, atol=1e-13)


def test_tiny_budget_forces_many_tiles_and_a_ragged_last_tile(tmp_path, rng):
    import tracemalloc

    L = 3000
    st = make_store(tmp_path / "c.h5", S=13, C=3, P=7, L=L, S_chunk=5)
    x = rng.random(21)
    budget = 3 * 1 * 2 * L * 4  # room for 3 spaxels x 2 (component, population) rows
    tracemalloc.start()
    try:
        info = reconstruct_model_cube_single(st.path, x, S_tile=3, max_bytes_per_slab=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["tile"] == (3, 2, 1)  # populations shrink first, then components
    assert info["slab_bytes_max"] <= budget
    # ceil(13/3) spaxel tiles (the last has 1 spaxel) x ceil(3/2) (ragged) x 7 populations
    assert info["tiles"] == 5 * 2 * 7
    # peak memory: the slab, two (dS, L) float64 accumulators and small change; the
    # float32 cube is 3.3 MB
    assert peak < budget + 2 * 3 * L * 8 + 200_000
    with h5py.File(st.path, "r") as f:
        np.testing.assert_allclose(f["ModelCube"][:], _dense(st, x), rtol=1e-13, atol=1e-13)


def test_checks(tmp_path):
    st = make_store(tmp_path / "c.h5", S=4, C=1, P=2, L=10, S_chunk=2)
    with pytest.raises(ValueError, match="C\\*P = 2"):
        reconstruct_model_cube_single(st.path, np.ones(3))
    with pytest.raises(ValueError, match="below one model row"):
        reconstruct_model_cube_single(st.path, np.ones(2), max_bytes_per_slab=8)
    assert plan_tiles(4, 1, 2, 10, S_tile=9, max_bytes_per_slab=10**9) == (4, 1, 2)


def test_without_a_hypercube_the_model_is_applied_matrix_free(small_store, built_store, rng):
    """After the exact fit there is no HyperCube: the model cube comes from the operator and
    equals the one summed from the HyperCube of the same store (float32 tiles: 1e-5)."""
    x = rng.random(3 * 8)
    info = reconstruct_model_cube_single(small_store, x)
    assert info["matrix_free"] and not info["skipped"]
    reconstruct_model_cube_single(built_store, x)
    with h5py.File(small_store, "r") as a, h5py.File(built_store, "r") as b:
        free, summed = a["ModelCube"][()], b["ModelCube"][()]
        assert "HyperCube" not in a and a["ModelCube"].attrs["complete"]
    np.testing.assert_allclose(free, summed, rtol=1e-5, atol=1e-6 * np.abs(summed).max())
    assert reconstruct_model_cube_single(small_store, x)["skipped"]  # same x: nothing to do
    with pytest.raises(ValueError, match="holds input data"):
        reconstruct_model_cube_single(small_store, x, array_name="DataCube")
