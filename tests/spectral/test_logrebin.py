"""Log-rebinning of log-spaced input (MaNGA LOGCUBE): geometric edges, identity, flux."""

from __future__ import annotations

import numpy as np

from nnfit.spectral.logrebin import linear_pixel_edges, log_rebin, pixel_edges
from nnfit.spectral.model import C_KMS

DLN = np.log(10.0) * 1e-4  # MaNGA's 1e-4 dex pixels
WAVE = 3621.5959848601 * np.exp(DLN * np.arange(500))


def test_log_grid_edges_are_geometric_midpoints_and_linear_ones_arithmetic():
    e = pixel_edges(WAVE)
    np.testing.assert_allclose(np.diff(np.log(e)), DLN, rtol=1e-9)
    np.testing.assert_allclose(e[1:-1], np.sqrt(WAVE[1:] * WAVE[:-1]), rtol=1e-14)
    lin = 5000.0 + 1.25 * np.arange(500)
    np.testing.assert_array_equal(pixel_edges(lin), linear_pixel_edges(lin))


def test_log_spaced_spectra_at_their_own_velscale_come_back_unchanged():
    rng = np.random.default_rng(3)
    f = rng.random((4, WAVE.size)) + 0.5
    v = rng.random((4, WAVE.size)) * 0.1
    for vs in (None, C_KMS * DLN):
        out, out_var, ln_lam, got = log_rebin(WAVE, f, velscale=vs, variance=v)
        assert out.shape == f.shape and np.isclose(got, C_KMS * DLN, rtol=1e-12)
        # the ln(lambda) edges of float64 carry ~2e-15 in ln: ~1e-11 of a pixel
        np.testing.assert_allclose(out, f, rtol=1e-10, atol=0)
        np.testing.assert_allclose(out_var, v, rtol=1e-10, atol=0)
        np.testing.assert_allclose(np.exp(ln_lam), WAVE, rtol=1e-13)


def test_log_spaced_spectra_conserve_flux_at_another_velscale():
    rng = np.random.default_rng(4)
    f = rng.random(WAVE.size) + 0.5
    e_in = pixel_edges(WAVE)
    out, _, ln_lam, vs = log_rebin(WAVE, f, velscale=2.5 * C_KMS * DLN)
    d = vs / C_KMS
    e_out = np.exp(np.concatenate([ln_lam - d / 2, [ln_lam[-1] + d / 2]]))
    covered = e_in[0] <= e_out[0] and e_out[-1] <= e_in[-1]
    # the flux over the output's range, from the input's step function
    cum = np.concatenate([[0.0], np.cumsum(f * np.diff(e_in))])
    want = np.interp(e_out[-1], e_in, cum) - np.interp(e_out[0], e_in, cum)
    assert covered
    np.testing.assert_allclose(np.sum(out * np.diff(e_out)), want, rtol=1e-12)


def test_a_log_sampled_template_library_on_its_own_grid_comes_back_unchanged(tmp_path):
    from nnfit.spectral.templates import load_template_library

    wave = 4500.0 * np.exp(DLN * np.arange(3000))
    rng = np.random.default_rng(5)
    t = rng.random((wave.size, 2, 2)) + 0.5
    npz = tmp_path / "log_library.npz"
    np.savez(npz, templates=t, lam=wave, ages=np.array([1.0, 5.0]), metals=np.array([-0.4, 0.0]))
    edges = np.log(pixel_edges(wave))[1000:2001]  # 1000 of the library's own pixels
    lib = load_template_library(npz, edges, fwhm_gal=None, normalisation="mass")
    # mass normalisation is one scalar for the whole library: out = t / scalar on the pixels
    ratio = lib.templates / t[1000:2000]
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-10)


def test_a_library_fwhm_that_varies_is_matched_wavelength_by_wavelength(tmp_path):
    from nnfit.spectral.lsf import LSFTable
    from nnfit.spectral.templates import load_template_library

    wave = 4500.0 + 0.9 * np.arange(4000)
    rng = np.random.default_rng(6)
    t = rng.random((wave.size, 2, 1)) + 0.5
    npz = tmp_path / "lib.npz"
    np.savez(npz, templates=t, lam=wave, ages=np.array([1.0, 5.0]), metals=np.array([0.0]))
    edges = np.log(pixel_edges(wave))[500:3001:2]
    kw = {"normalisation": "mass"}
    fwhm = LSFTable([4500.0, 6000.0, 8100.0], [2.5, 2.5, 6.0], source="test")
    # a library already at the instrument's varying resolution is not smoothed at all
    same = load_template_library(npz, edges, fwhm_gal=fwhm, fwhm_tem=fwhm, **kw)
    none = load_template_library(npz, edges, fwhm_gal=None, **kw)
    np.testing.assert_allclose(same.templates, none.templates, rtol=1e-12)
    # and a constant given as a function is the constant
    const = load_template_library(
        npz, edges, fwhm_gal=fwhm, fwhm_tem=lambda lam: 0 * lam + 2.5, **kw
    )
    ref = load_template_library(npz, edges, fwhm_gal=fwhm, fwhm_tem=2.5, **kw)
    np.testing.assert_array_equal(const.templates, ref.templates)
    assert not np.allclose(ref.templates, same.templates, rtol=1e-6)  # 2.5 A smooths the red
