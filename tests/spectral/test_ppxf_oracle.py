"""The exact model and the continuum against pPXF on a real SDSS spectrum with E-MILES SSPs.

pPXF (``ppxf==8.2.6``, test extra) is the oracle: its own spectrum (NGC 4636, SDSS DR12) and
templates log-rebinned to the galaxy's velocity step with the two grids 0.37 pixel apart.
"""

import numpy as np
import pytest

from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import fit_cube
from nnfit.spectral.losvd import losvd_from_moments

from ._ppxf_real import C_KMS, load_sdss, run_ppxf

pytest.importorskip("ppxf", reason="pPXF is the oracle (test extra)")
pytest.importorskip("astropy", reason="reads the SDSS and E-MILES FITS files")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec():
    return load_sdss(n_templates=6, frac=0.37)


def _mask(sp):
    m = np.zeros(sp.galaxy.size, bool)
    m[sp.goodpixels] = True
    return m


def _op(sp, **kw):
    return CubeOperator(
        sp.templates.T,
        kw.pop("losvd", None),
        kw.pop("vel_pix", None),
        sp.ln_lam_temp,
        sp.ln_lam_gal,
        mask=_mask(sp),
        noise=sp.noise[None],
        datacube=sp.galaxy[None],
        kernel="fourier",
        convention="ppxf",
        **kw,
    )


def _chi2(sp, model):
    return float(np.sum(((sp.galaxy - model) / sp.noise)[_mask(sp)] ** 2))


V_REF = 1003.5  # km/s, near pPXF's fit of this spectrum in its observed frame


@pytest.mark.parametrize("sig_px", [0.5, 0.67, 1.0, 1.6, 3.0, 5.0])
def test_model_and_chi2_match_ppxf_at_its_kinematics(spec, sig_px):
    sig = sig_px * spec.velscale
    pp = run_ppxf(spec, [V_REF, sig], fixed=True)
    op = _op(spec, moments=np.array([[[V_REF, sig]]]))
    _, st = fit_cube(op, method="gram", tol=1e-10)
    assert abs(st["chi2"] / _chi2(spec, pp.bestfit) - 1) <= 1e-4
    # pPXF's weights through nnfit's model: the models agree to 1e-3 of the flux (median 1)
    model = op.forward(pp.weights[None, :])[0]
    assert np.max(np.abs(model - pp.bestfit)[_mask(spec)]) <= 1e-3


@pytest.mark.parametrize("sig_px", [0.5, 1.6])
def test_histogram_losvd_matches_ppxf(spec, sig_px):
    # a LOSVD histogram on bins of a quarter template pixel (delta bins, sampled density)
    sig = sig_px * spec.velscale
    pp = run_ppxf(spec, [V_REF, sig], fixed=True)
    vel = V_REF + spec.velscale / 4 * np.arange(-48, 49)
    losvd = losvd_from_moments(vel, V_REF, sig)[None, :, None]
    op = _op(spec, losvd=losvd, vel_pix=vel)
    _, st = fit_cube(op, method="gram", tol=1e-10)
    assert abs(st["chi2"] / _chi2(spec, pp.bestfit) - 1) <= 1e-4
    assert np.max(np.abs(op.forward(pp.weights[None, :])[0] - pp.bestfit)[_mask(spec)]) <= 1e-3


def test_fitted_kinematics_within_ppxf_formal_error(spec):
    from scipy.optimize import minimize

    pp = run_ppxf(spec, [V_REF, 200.0], fixed=False, degree=4)

    def chi2(p):
        op = _op(spec, moments=np.array([[[p[0], p[1]]]]))
        return fit_cube(op, method="gram", tol=1e-9, degree=4)[1]["chi2"]

    res = minimize(
        chi2, x0=[V_REF - 20.0, 180.0], method="Nelder-Mead", options={"xatol": 0.02, "fatol": 1e-4}
    )
    err = pp.error  # pPXF's formal 1-sigma errors
    assert abs(res.x[0] - pp.sol[0]) <= err[0]
    assert abs(res.x[1] - pp.sol[1]) <= err[1]
    # and much closer than that: the two models are the same
    assert abs(res.x[1] - pp.sol[1]) <= 0.1 * err[1]


@pytest.mark.parametrize(("degree", "mdegree"), [(4, 0), (-1, 8), (4, 8)])
def test_polynomials_match_ppxf(spec, degree, mdegree):
    sig = 216.0
    pp = run_ppxf(spec, [V_REF, sig], fixed=True, degree=degree, mdegree=mdegree)
    op = _op(spec, moments=np.array([[[V_REF, sig]]]))
    _, st = fit_cube(op, method="gram", tol=1e-10, degree=degree, mdegree=mdegree)
    ratio = st["chi2"] / _chi2(spec, pp.bestfit)
    assert abs(ratio - 1) <= 1e-3
    h = np.asarray(st["chi2_history"])
    assert np.all(np.diff(h) <= 1e-9 * h[0])  # never increases
    assert st["kkt_violation"] <= 1e-6


def test_observed_and_rest_frame_fits_of_a_real_spectrum_agree(spec):
    vsys = 1003.5
    sig = 216.0
    rest = CubeOperator(
        spec.templates.T,
        None,
        None,
        spec.ln_lam_temp,
        spec.ln_lam_gal - vsys / C_KMS,
        mask=_mask(spec),
        noise=spec.noise[None],
        datacube=spec.galaxy[None],
        kernel="fourier",
        convention="ppxf",
        moments=np.array([[[0.0, sig]]]),
    )
    obs = _op(spec, moments=np.array([[[0.0, sig]]]), vsyst=vsys)
    assert rest.n_taps == obs.n_taps
    x_r, _ = fit_cube(rest, method="gram", tol=1e-12)
    x_o, _ = fit_cube(obs, method="gram", tol=1e-12)
    assert np.max(np.abs(x_o - x_r)) <= 1e-6 * np.max(x_r)
