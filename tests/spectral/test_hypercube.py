"""HyperCube build: stored rows against the direct reference, resume, chunk checks."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.spectral.hypercube import build_hypercube
from nnfit.spectral.operators import C_KMS, grid_step
from nnfit.spectral.store import load_problem, open_h5


def _direct_row(prob, s, c, p):
    dlog = grid_step(prob.tem_pix)
    T = prob.T
    tpl = prob.templates_PT[p]
    padded = np.concatenate([[0.0], tpl, [0.0]])
    pos = np.arange(-1, T + 1, dtype=float)
    conv = np.zeros(T)
    for w, v in zip(prob.losvd[s, :, c], prob.vel_pix, strict=True):
        d = np.log1p(v / C_KMS) / dlog
        conv += w * np.interp(np.arange(T) - d, pos, padded, left=0.0, right=0.0)
    return prob.rebin @ conv


def test_stored_rows_equal_direct_convolution_then_rebin(built_store, rng):
    prob = load_problem(built_store)
    with open_h5(built_store, "r") as f:
        M = f["HyperCube/models"]
        assert M.dtype == np.float32
        assert M.chunks == (5, 1, 3, prob.L)
        assert bool(f["HyperCube"].attrs["complete"])
        for _ in range(12):
            s, c, p = (
                int(rng.integers(prob.S)),
                int(rng.integers(prob.C)),
                int(rng.integers(prob.P)),
            )
            ref = _direct_row(prob, s, c, p)
            row = M[s, c, p, :].astype(np.float64)
            np.testing.assert_allclose(row, ref, rtol=0, atol=2e-7 * np.abs(ref).max())


def test_model_cube_reproduces_simulated_model(built_store, small_sim):
    with open_h5(built_store, "r") as f:
        M = f["HyperCube/models"][()].astype(np.float64)
    y = np.einsum("scpl,cp->sl", M, small_sim.x_true)
    np.testing.assert_allclose(
        y, small_sim.model, rtol=0, atol=1e-6 * np.abs(small_sim.model).max()
    )


def test_zero_losvd_gives_zero_models(tmp_path):
    from nnfit.spectral.simulate import simulate_cube

    sim = simulate_cube(3, 2, 4, seed=2)
    sim.losvd[1] = 0.0
    sim.losvd[:, :, 1] = 0.0
    p = sim.to_h5(tmp_path / "z.h5")
    build_hypercube(p, S_chunk=2, n_workers=0)
    with open_h5(p, "r") as f:
        M = f["HyperCube/models"][()]
    assert not M[1].any() and not M[:, 1].any()
    assert M[0, 0].any()


def test_rerun_is_noop_and_chunk_mismatch_is_an_error(built_store):
    assert (
        build_hypercube(built_store, S_chunk=5, C_chunk=1, P_chunk=3, n_workers=0)["tiles_built"]
        == 0
    )
    with open_h5(built_store, "r+") as f:  # pretend the build was cut short
        f["HyperCube/_done"][0, 0, 0] = 0
        f["HyperCube"].attrs["complete"] = False
    with pytest.raises(ValueError, match="partial HyperCube"):
        build_hypercube(built_store, S_chunk=4, P_chunk=3, n_workers=0)
    info = build_hypercube(built_store, S_chunk=4, P_chunk=3, n_workers=0, overwrite=True)
    assert info["tiles_built"] == info["tiles_total"]
    with open_h5(built_store, "r") as f:
        assert f["HyperCube/models"].chunks[:3] == (4, 1, 3)
