"""Regularisation operators, grid metadata, mass constraints; regularised recovery at S/N 50."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.spectral.fit import fit_cube
from nnfit.spectral.regularization import (
    difference_operator,
    grid_shape_from_meta,
    mass_constraints,
    regularizer,
)
from nnfit.spectral.simulate import simulate_cube


def test_difference_operator_kills_polynomials():
    D1 = difference_operator((3, 5), order=1)
    D2 = difference_operator((3, 5), order=2)
    z, a = np.meshgrid(np.arange(3.0), np.arange(5.0), indexing="ij")
    assert np.allclose(D1 @ np.ones(15), 0)
    assert np.allclose(D2 @ (2 * z + 3 * a + 1).ravel(), 0)
    assert not np.allclose(D2 @ (a**2).ravel(), 0)
    # order 2: pPXF's Laplacian, one row per point interior along some axis (corners dropped)
    assert D1.shape == (2 * 5 + 3 * 4, 15) and D2.shape == (15 - 4, 15)
    with pytest.raises(ValueError, match="order"):
        difference_operator((4,), order=3)
    H = regularizer(2, (3, 5), 2.0, order=2)
    np.testing.assert_allclose(H, 4.0 * (D2.T @ D2).toarray())


def test_grid_shape_from_store_meta():
    sim = simulate_cube(2, 1, 12, population_grid=(3, 4))
    assert grid_shape_from_meta(sim.template_meta, 12) == (3, 4)
    assert grid_shape_from_meta('{"shape": [100, 3, 4]}', 12) == (3, 4)
    with pytest.raises(ValueError, match="populations"):
        grid_shape_from_meta({"shape": [5, 5]}, 12)


def test_mass_constraints_rows():
    E = mass_constraints([1.0, 3.0, 0.5], 4)
    x = np.concatenate([np.full(4, 0.25), np.full(4, 0.75), np.full(4, 0.125)])
    np.testing.assert_allclose(E @ x, 0, atol=1e-15)
    assert E.shape == (2, 12)
    with pytest.raises(ValueError, match="weights"):
        mass_constraints([0.0, 0.0], 3)


def test_regularisation_recovers_true_weights_at_snr50(tmp_path):
    sim = simulate_cube(24, 1, 24, seed=3, snr=50.0, population_grid=(4, 6))
    path = sim.to_h5(tmp_path / "reg.h5")
    xt = sim.x_true
    err, chi2 = {}, {}
    for regul in (0.0, 30.0):
        x, st = fit_cube(path, method="gram", regul=regul, x0=None, checkpoint=False)
        assert st["converged"]
        err[regul] = np.linalg.norm(x - xt) / np.linalg.norm(xt)
        chi2[regul] = st["chi2"]
    assert err[0.0] > 1.0  # unregularised NNLS: spiky, far from the truth
    assert err[30.0] < 0.35  # regularised: close to the smooth truth
    # and it costs little chi^2: under sqrt(2 N) for N fitted pixels (pPXF's criterion)
    n_pix = sim.mask.sum() * sim.datacube.shape[0]
    assert 0 <= chi2[30.0] - chi2[0.0] < np.sqrt(2 * n_pix)


def test_regul_search_brackets_both_ways_and_stops_at_the_bounds():
    from nnfit.spectral.regul_search import regul_for_chi2_rise

    rise = np.sqrt(2 * 400) / 400 * 400.0  # chi2_0 = N = 400: the target rise sqrt(2 N)
    for true in (0.05, 7.0, 3e4):  # below, near and above the start of 10
        r, c = regul_for_chi2_rise(lambda r, t=true: 400.0 + rise * (r / t) ** 2, 400.0, 400)
        assert abs(c - 400.0 - rise) <= 0.05 * rise
        assert r == pytest.approx(true, rel=0.03)
    flat = regul_for_chi2_rise(lambda r: 400.0, 400.0, 400)  # the data allow any regul
    assert flat == (1e6, 400.0)
    with pytest.raises(ValueError, match="n_good"):
        regul_for_chi2_rise(lambda r: 1.0, 0.0, 10)
