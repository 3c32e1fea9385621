"""The five silent mistakes are caught, each with the fix in the message."""

import warnings

import numpy as np
import pytest

from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import fit_cube
from nnfit.spectral.manager import H5Manager
from nnfit.spectral.simulate import simulate_cube


def _sim():
    return simulate_cube(4, 1, 5, seed=3, snr=100.0, vmax=600.0)


def _op(sim, **kw):
    return CubeOperator(
        sim.templates_PT,
        kw.pop("losvd", sim.losvd),
        sim.vel_pix,
        sim.tem_pix,
        kw.pop("obs_pix", sim.obs_pix),
        **kw,
    )


def test_log10_or_angstrom_grid_is_refused(tmp_path):
    sim = _sim()
    with pytest.raises(ValueError, match=r"log10\(lambda\).*np\.log\(10\) \* obs_pix"):
        _op(sim, obs_pix=sim.obs_pix / np.log(10))
    with pytest.raises(ValueError, match=r"wavelengths, not ln\(lambda\).*np\.log\(tem_pix\)"):
        H5Manager(tmp_path / "a.h5", np.exp(sim.tem_pix), sim.obs_pix)


def test_air_templates_for_vacuum_data_are_refused(tmp_path):
    sim = _sim()
    mgr = H5Manager(tmp_path / "m.h5", sim.tem_pix, sim.obs_pix)
    mgr.set_velocity_grid(sim.vel_pix)
    with pytest.raises(ValueError, match=r"vacuum.*air.*ppxf\.ppxf_util\.air_to_vac"):
        mgr.populate_from_arrays(
            sim.losvd, sim.datacube, sim.templates, medium_obs="vacuum", medium_templates="air"
        )
    assert not mgr.path.exists() or "DataCube" not in __import__("h5py").File(mgr.path)


def test_variance_passed_as_noise_is_warned():
    sim = _sim()
    sigma = sim.noise_sigma
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right noise: no warning
        _, st = fit_cube(_op(sim, noise=sigma, datacube=sim.datacube), method="gram")
    assert 0.5 < st["chi2_dof"] < 2.0
    with pytest.warns(UserWarning, match=r"chi\^2/dof = .*variance, pass its square root"):
        _, st = fit_cube(_op(sim, noise=sigma**2, datacube=sim.datacube), method="gram")
    assert st["chi2_dof"] > 100


@pytest.mark.filterwarnings("ignore:chi\\^2/dof")  # the mis-scaled fit is bad in chi^2 too
def test_losvds_not_scaled_to_the_flux_are_warned_and_flux_scale_fixes_it():
    sim = _sim()
    f = np.array([1.0, 3.0, 10.0, 30.0])
    unit = sim.losvd / sim.losvd.sum(axis=(1, 2), keepdims=True)
    y = sim.datacube * f[:, None]
    sig = sim.noise_sigma * f[:, None]
    with pytest.warns(UserWarning, match=r"not scaled to each spaxel's flux.*flux_scale='data'"):
        _, bad = fit_cube(_op(sim, losvd=unit, noise=sig, datacube=y), method="gram")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = _op(sim, losvd=unit, noise=sig, datacube=y, flux_scale="data")
        _, good = fit_cube(op, method="gram")
    assert good["chi2"] < 0.01 * bad["chi2"]


@pytest.mark.slow
def test_velocity_in_the_wrong_frame_is_warned():
    pytest.importorskip("ppxf", reason="real SDSS spectrum and E-MILES templates")
    pytest.importorskip("astropy")
    from ._ppxf_real import load_sdss

    sp = load_sdss(n_templates=4)
    mask = np.zeros(sp.galaxy.size, bool)
    mask[sp.goodpixels] = True

    def op(vsyst):
        return CubeOperator(
            sp.templates.T,
            None,
            None,
            sp.ln_lam_temp,
            sp.ln_lam_gal,
            mask=mask,
            noise=sp.noise[None],
            datacube=sp.galaxy[None],
            kernel="fourier",
            convention="ppxf",
            vsyst=vsyst,
            moments=np.array([[[0.0, 216.0]]]),
        )

    # the spectrum is in its observed frame (cz ~ 1000 km/s): fitted as if at rest
    with pytest.warns(UserWarning, match=r"sit \+\d+ km/s from where the model.*pass vsyst"):
        fit_cube(op(0.0), method="gram")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit_cube(op(1003.5), method="gram")
