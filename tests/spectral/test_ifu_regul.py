"""Regularised bin fits against pPXF's ``regul`` on the same bins (real SSPs, real MUSE grid).

nnfit minimises ``chi^2 + regul^2 ||D x||^2`` with ``D`` pPXF's rows (first differences, or the
Laplacian for order 2) over the (age, [M/H]) grid; pPXF with ``regul``, ``reg_dim`` and
``reg_ord`` the same, and the galaxy divided by the store's flux scale (so that its weights are
nnfit's ``x``), minimises the same objective. The two optima must agree.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("mpdaf", reason="the real MUSE cube ships with mpdaf (test extra)")
pytest.importorskip("ppxf", reason="pPXF is the reference (test extra ppxf==8.2.6)")
pytest.importorskip("vorbin", reason="Voronoi binning (spectral extra)")

from nnfit.spectral.bin_fit import fit_bins
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.regularization import difference_operator
from nnfit.spectral.store import load_problem

from ._muse_synth import synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    def fractions(yy, xx):
        f = np.clip(0.8 - 0.5 * np.hypot(xx - 20.0, yy - 19.0) / 28.0, 0.3, 0.8)
        return np.stack([f, 1 - f])

    sim = synthetic_store(
        tmp_path_factory.mktemp("regul"), [(7.9433, 0.0), (1.5849, -0.4)], fractions, seed=21
    )
    return sim["store"]


@pytest.mark.slow
@pytest.mark.parametrize(("regul", "order"), [(10.0, 2), (30.0, 1)])
def test_regularised_bins_match_ppxf(store, regul, order):
    """pPXF given nnfit's model columns of each bin as templates (no further convolution:
    sigma fixed at 0.01 pixel) solves the same regularised problem: the same optimum."""
    from ppxf.ppxf import ppxf

    fit_bins(store, regul=regul, regul_order=order)
    prob = load_problem(store)
    meta = prob.template_meta
    grid = (len(meta["axis_values"]["age"]), len(meta["axis_values"]["metal"]))
    D = difference_operator(grid, order).toarray()
    with h5py.File(store, "r") as f:
        w = f["BinFit/weights"][()]
        fs = f["FluxScale"][()]
        good = f["Mask"][()] & f["BinMask"][()]
        velscale = json.loads(f.attrs["ifu_json"])["velscale_kms"]
        assert f["BinFit"].attrs["regul"] == regul and f["BinFit"].attrs["regul_order"] == order
    amp = prob.losvd.sum(axis=1) * fs[:, None]  # (S, C)
    for s in range(0, prob.S, 6):
        x = w[s, 0] / amp[s, 0]
        op = CubeOperator.from_problem(prob.spaxel(s))
        cols = np.stack([op.forward(e[None])[0] for e in np.eye(prob.P)], axis=1)  # (L, P)
        y, noise = prob.datacube[s], prob.noise[s]
        pp = ppxf(
            cols,
            y,
            noise,
            velscale,
            [0.0, 0.01 * velscale],
            moments=-2,
            degree=-1,
            goodpixels=np.flatnonzero(good[s]),
            regul=regul,
            reg_dim=grid,
            reg_ord=order,
            quiet=True,
        )

        def objective(v, s=s, y=y, noise=noise, cols=cols):
            r = ((cols @ v - y) / noise)[good[s]]
            return (r**2).sum() + regul**2 * ((D @ v) ** 2).sum()

        ours, theirs = objective(x), objective(pp.weights)
        assert ours == pytest.approx(theirs, rel=1e-6)
        np.testing.assert_allclose(x, pp.weights, atol=1e-3 * pp.weights.sum())


@pytest.mark.slow
def test_auto_regul_raises_each_bins_chi2_by_sqrt_2n(tmp_path):
    """regul='auto' (pPXF's rule): each bin's chi^2 exceeds its unregularised chi^2 by
    sqrt(2 N) in the noise units where that chi^2 is N, within the search's 5 %."""
    sim = synthetic_store(
        tmp_path,
        [(6.3096, -0.4)],
        lambda yy, xx: np.ones((1, *yy.shape)),
        seed=5,
        target_sn=150.0,
    )
    free = fit_bins(sim["store"])
    auto = fit_bins(sim["store"], regul="auto")
    n = free["n_good"]
    rise = free["chi2"] * np.sqrt(2 * n) / n
    assert np.all((auto["regul"] > 1.0) & (auto["regul"] < 1e6))
    np.testing.assert_allclose(auto["chi2"], free["chi2"] + rise, atol=0.05 * rise.max())
    with h5py.File(sim["store"], "r") as f:
        assert f["BinFit"].attrs["regul"] == "auto"
        np.testing.assert_array_equal(f["BinFit/regul"][()], auto["regul"])
