"""Log-rebinning and template libraries against pPXF's own functions, on real spectra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnfit.spectral.logrebin import log_grid, log_rebin
from nnfit.spectral.templates import gaussian_filter_variable, load_template_library

ppxf = pytest.importorskip("ppxf", reason="pPXF is the reference (test extra ppxf==8.2.6)")
from ppxf import miles_util, ppxf_util  # noqa: E402

MILES = Path(ppxf.__file__).parent / "miles_models"

SUBSET = "Eun1.30Z[mp]0.[024]*T0[13579].*.fits"  # 3 metallicities x a few ages, real E-MILES


def _muse_spectrum():
    mpdaf = pytest.importorskip("mpdaf", reason="the real MUSE cube ships with mpdaf")
    from nnfit.spectral.ifu_cube import read_ifu_cube

    cube = read_ifu_cube(Path(mpdaf.__file__).parent / "data/sdetect/minicube.fits")
    f = np.asarray(cube.flux[:, 18:22, 18:22], dtype=np.float64).sum(axis=(1, 2))
    v = np.asarray(cube.variance[:, 18:22, 18:22], dtype=np.float64).sum(axis=(1, 2))
    return cube.wave, f, v


def test_log_rebin_equals_ppxf_on_a_real_muse_spectrum():
    wave, f, _ = _muse_spectrum()
    ours, _, ln_lam, vs = log_rebin(wave, f)
    ref, ln_ref, vs_ref = ppxf_util.log_rebin(wave[[0, -1]], f)
    assert vs == pytest.approx(vs_ref, rel=1e-12)
    np.testing.assert_allclose(ln_lam, ln_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    # A chosen step (pPXF 8.2.6's velscale= path fails under NumPy 2, int() of an array):
    # the flux integral over the covered range is conserved exactly.
    out, _, ln2, vs2 = log_rebin(wave, f, velscale=40.0)
    assert vs2 == pytest.approx(40.0)
    e_out = np.exp(np.concatenate([ln2 - 20.0 / 299792.458, [ln2[-1] + 20.0 / 299792.458]]))
    e_in = np.concatenate([wave - 0.625, [wave[-1] + 0.625]])
    cum = np.concatenate([[0.0], np.cumsum(f * 1.25)])
    integral = np.interp(e_out[-1], e_in, cum) - np.interp(e_out[0], e_in, cum)
    assert (out * np.diff(e_out)).sum() == pytest.approx(integral, rel=1e-10)


def test_log_rebin_variance_matches_monte_carlo():
    rng = np.random.default_rng(1)
    wave = 4800.0 + 1.25 * np.arange(300)
    sig = rng.uniform(0.5, 2.0, 300)
    _, var, _, _ = log_rebin(wave, np.zeros(300), velscale=95.0, variance=sig**2)
    draws = rng.normal(size=(20000, 300)) * sig
    mc = log_rebin(wave, draws, velscale=95.0)[0].var(axis=0)
    np.testing.assert_allclose(var, mc, rtol=0.05)


def test_variable_gaussian_filter_equals_ppxf():
    rng = np.random.default_rng(2)
    x = rng.random(2000)
    sig = np.linspace(0.3, 3.5, 2000)
    p = 14  # pPXF leaves the outer ceil(4 max sigma) pixels 0; ours zero-pads beyond the ends
    np.testing.assert_allclose(
        gaussian_filter_variable(x, sig)[p:-p],
        ppxf_util.gaussian_filter1d(x, sig)[p:-p],
        rtol=1e-12,
    )


def test_miles_folder_matches_ppxf_recipe():
    """Real E-MILES files through pPXF's recipe (miles_util: Gaussian smoothing to the galaxy
    FWHM, log_rebin at its default step, mean in the band = 1) equal our library on that grid.

    ``miles_util.miles`` itself calls ``log_rebin(velscale=...)``, which pPXF 8.2.6 cannot run
    under NumPy 2, so its steps are run here with pPXF's and SciPy's functions.
    """
    from astropy.io import fits
    from scipy.ndimage import gaussian_filter1d

    fwhm_gal = 2.9
    files = sorted(MILES.glob(SUBSET))
    h = fits.getheader(files[0])
    n = h["NAXIS1"]
    lam = h["CRVAL1"] + h["CDELT1"] * np.arange(n)
    sigma = np.sqrt(fwhm_gal**2 - 2.51**2) / np.sqrt(8 * np.log(2)) / h["CDELT1"]
    refs = {}
    for f in files:
        ssp = gaussian_filter1d(
            fits.getdata(f).astype(np.float64), sigma, radius=int(np.ceil(4 * sigma))
        )
        t, ln_ref, vs = ppxf_util.log_rebin(lam[[0, -1]], ssp)
        refs[miles_util.age_metal(str(f))] = t
    keep = (ln_ref > np.log(4200)) & (ln_ref < np.log(7000))
    d = vs / 299792.458
    ln_c = ln_ref[keep]
    edges = np.concatenate([ln_c - d / 2, [ln_c[-1] + d / 2]])
    lib = load_template_library(
        MILES, edges, fwhm_gal=fwhm_gal, pattern=SUBSET, norm_range=(5070, 5950)
    )
    np.testing.assert_allclose(lib.ln_lam, ln_c, rtol=0, atol=1e-9)
    band = (np.exp(ln_c) >= 5070) & (np.exp(ln_c) <= 5950)
    for i, age in enumerate(lib.ages):
        for j, met in enumerate(lib.metals):
            ref = refs[(age, met)][keep]
            np.testing.assert_allclose(lib.templates[:, i, j], ref / ref[band].mean(), rtol=1e-9)
    assert lib.meta()["normalisation"] == "light"


def test_ppxf_npz_library_equals_the_same_spectra_as_fits(tmp_path):
    """A pPXF SPS .npz holding the same E-MILES spectra loads to the same templates."""
    from astropy.io import fits

    files = sorted(MILES.glob(SUBSET))
    ages = sorted({miles_util.age_metal(str(f))[0] for f in files})
    metals = sorted({miles_util.age_metal(str(f))[1] for f in files})
    with fits.open(files[0]) as h:
        n, h0 = h[0].data.size, h[0].header
    lam = h0["CRVAL1"] + h0["CDELT1"] * np.arange(n)
    t = np.zeros((n, len(ages), len(metals)))
    for f in files:
        a, m = miles_util.age_metal(str(f))
        t[:, ages.index(a), metals.index(m)] = fits.getdata(f)
    npz = tmp_path / "spectra_emiles_9.0.npz"
    np.savez_compressed(
        npz,
        templates=t,
        lam=lam,
        ages=ages,
        metals=metals,
        masses=np.ones(t.shape[1:]),
        fwhm=np.full(n, 2.51),
    )
    edges, _ = log_grid(4500.0, 6500.0, 30.0)
    a = load_template_library(npz, edges, fwhm_gal=2.8, normalisation="mass")
    b = load_template_library(MILES, edges, fwhm_gal=2.8, pattern=SUBSET, normalisation="mass")
    np.testing.assert_allclose(a.templates, b.templates, rtol=1e-10)
    np.testing.assert_allclose(a.band_flux, b.band_flux, rtol=1e-10)
    assert a.meta()["grid_axes"] == ["age", "metal"]


def test_templates_must_cover_the_grid(tmp_path):
    edges, _ = log_grid(1000.0, 2000.0, 60.0)
    with pytest.raises(ValueError, match="covers"):
        load_template_library(MILES, edges, pattern=SUBSET)
    with pytest.raises(ValueError, match="age/metallicity tag"):
        (tmp_path / "x.fits").write_bytes(b"")
        load_template_library(tmp_path, edges)
