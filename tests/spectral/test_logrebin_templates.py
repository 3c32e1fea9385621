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
    # A chosen step, and the flux integral is conserved over the covered range.
    out, _, ln2, vs2 = log_rebin(wave, f, velscale=40.0)
    ref2, ln_ref2, _ = ppxf_util.log_rebin(wave[[0, -1]], f, velscale=40.0)
    np.testing.assert_allclose(out, ref2, rtol=1e-10, atol=1e-10 * np.abs(ref2).max())
    assert vs2 == pytest.approx(40.0)


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
    np.testing.assert_allclose(
        gaussian_filter_variable(x, sig), ppxf_util.gaussian_filter1d(x, sig), rtol=1e-12
    )


def test_miles_folder_matches_ppxf_miles_util():
    """Same E-MILES files, velscale and FWHM: our library equals pPXF's miles class."""
    velscale, fwhm_gal = 50.0, 2.9
    ref = miles_util.miles(str(MILES / SUBSET), velscale, FWHM_gal=fwhm_gal,
                           norm_range=[5070, 5950], wave_range=[4200, 7000])  # fmt: skip
    d = velscale / 299792.458
    edges = np.concatenate([ref.ln_lam_temp - d / 2, [ref.ln_lam_temp[-1] + d / 2]])
    lib = load_template_library(MILES, edges, fwhm_gal=fwhm_gal, pattern=SUBSET,
                                norm_range=(5070, 5950))  # fmt: skip
    np.testing.assert_allclose(lib.ln_lam, ref.ln_lam_temp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lib.ages, ref.age_grid[:, 0])
    np.testing.assert_allclose(lib.metals, ref.metal_grid[0])
    # pPXF normalises over its full-range grid; the band and the rebin are the same.
    np.testing.assert_allclose(lib.templates, ref.templates, rtol=2e-6, atol=1e-9)
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
    np.savez_compressed(npz, templates=t, lam=lam, ages=ages, metals=metals,
                        masses=np.ones(t.shape[1:]), fwhm=np.full(n, 2.51))  # fmt: skip
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
