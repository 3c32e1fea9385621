"""Synthetic cubes: shapes, determinism, conditioning, and the model's consistency."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.spectral.model import model_rows, rebin_matrix
from nnfit.spectral.simulate import simulate_cube


def test_shapes_seed_and_truth():
    a = simulate_cube(5, 2, 6, seed=3, mask_fraction=0.2)
    b = simulate_cube(5, 2, 6, seed=3, mask_fraction=0.2)
    assert a.shape == {"S": 5, "C": 2, "P": 6, "L": 300, "T": 1500, "V": 41}
    np.testing.assert_array_equal(a.datacube, b.datacube)
    assert not np.array_equal(a.datacube, simulate_cube(5, 2, 6, seed=4).datacube)
    assert a.templates.shape == (1500, 2, 3) and a.templates_PT.shape == (6, 1500)
    np.testing.assert_array_equal(a.templates[:, 1, 2], a.templates_PT[5])
    assert (a.x_true >= 0).all() and (a.losvd >= 0).all()
    assert a.mask.sum() == 300 - 60
    assert a.template_meta["grid_shape"] == [2, 3]
    assert len(a.template_meta["axis_values"]["log_age"]) == 3
    # float32-exact inputs, so the store holds exactly this problem
    np.testing.assert_array_equal(a.templates_PT, a.templates_PT.astype(np.float32))
    np.testing.assert_array_equal(a.losvd, a.losvd.astype(np.float32))
    assert np.all(a.noise_sigma > 0)
    resid = (a.datacube - a.model) / a.noise_sigma
    assert 0.8 < resid.std() < 1.2
    c = simulate_cube(5, 2, 6, seed=3, noise=False)
    np.testing.assert_array_equal(c.datacube, c.model)


def test_model_equals_sum_of_hypercube_rows():
    sim = simulate_cube(4, 3, 5, templates="random", seed=9)
    R = rebin_matrix(sim.tem_pix, sim.obs_pix)
    for s in range(4):
        y = sum(
            sim.x_true[c]
            @ model_rows(
                sim.templates_PT, sim.losvd[s, :, c], sim.vel_pix, sim.tem_pix, sim.obs_pix, R
            )
            for c in range(3)
        )
        np.testing.assert_allclose(y, sim.model[s], rtol=1e-11)


def test_ssp_templates_are_nearly_collinear_random_ones_are_not():
    kw = {"n_tem_pix": 1500, "n_obs_pix": 300, "seed": 2}
    ssp = simulate_cube(2, 1, 24, templates="ssp", **kw)
    rnd = simulate_cube(2, 1, 24, templates="random", **kw)
    R = rebin_matrix(ssp.tem_pix, ssp.obs_pix)

    def cond(sim):
        A = np.vstack(
            [
                model_rows(
                    sim.templates_PT, sim.losvd[s, :, 0], sim.vel_pix, sim.tem_pix, sim.obs_pix, R
                ).T
                for s in range(2)
            ]
        )
        return np.linalg.cond(A)

    assert cond(ssp) > 1e8
    assert cond(rnd) < 1e4


def test_bad_arguments():
    with pytest.raises(ValueError, match="templates must be 'ssp' or 'random'"):
        simulate_cube(2, 1, 2, templates="miles")
    with pytest.raises(ValueError, match="population_grid"):
        simulate_cube(2, 1, 6, population_grid=(4, 2))
    with pytest.raises(ValueError, match="n_spaxels must be >= 1"):
        simulate_cube(0, 1, 2)
