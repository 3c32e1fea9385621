"""The survey cube formats read_ifu_cube recognises, each in its data model's layout.

Every file here is synthetic and tiny, written with the extension names, header keywords and
dtypes of the survey's data model: MaNGA DRP ``LOGCUBE`` (FLUX/IVAR/MASK/WAVE and the LSF
extensions, ``CTYPE3 = 'WAVE-LOG'``), CALIFA DR3 (primary + ERROR/ERRWEIGHT/BADPIX/FIBCOVER, no
``CTYPE3``), SAMI DR3 (primary + VARIANCE/WEIGHT/COVAR), KCWI ``_icubes`` (primary +
UNCERT/MASK/FLAGS) and JWST ``s3d`` (SCI/ERR/DQ/WMAP, micron).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from nnfit.spectral.ifu_cube import read_ifu_cube

fits = pytest.importorskip("astropy.io.fits")

L, NY, NX = 40, 3, 4
# MaNGA DR17 LOGCUBE: 1e-4 dex pixels from 3621.596 A, CD3_3 = CRVAL3 ln(10) 1e-4
MANGA_CRVAL3 = 3621.5959848601
MANGA_CD3_3 = MANGA_CRVAL3 * np.log(10.0) * 1e-4
NOCOV, LOWCOV, DEADFIBER, FORESTAR, DONOTUSE = 1, 2, 4, 8, 1024


def _streamed_variance(cube):
    return np.concatenate([v for _, _, v in cube.slabs(max_bytes=8 * NY * NX * 7)])


def _manga_wave(n=L, crval=MANGA_CRVAL3, cd=MANGA_CD3_3):
    return crval * np.exp(cd * np.arange(n) / crval)


def write_manga(
    path,
    *,
    n=L,
    crval=MANGA_CRVAL3,
    flux=None,
    ivar=None,
    mask=None,
    lsf=("LSFPRE", "LSFPOST", "PRESPECRES", "SPECRES"),
    wave=None,
    pointers=False,
    ny=NY,
    nx=NX,
):
    """A MaNGA DRP LOGCUBE: FLUX/IVAR float32, MASK int32 (DRP3PIXMASK), WAVE float64."""
    cd = crval * np.log(10.0) * 1e-4
    rng = np.random.default_rng(2)
    flux = (rng.random((n, ny, nx)) + 1.0).astype(np.float32) if flux is None else flux
    ivar = (
        (1.0 / (rng.random((n, ny, nx)) * 0.1 + 0.01)).astype(np.float32) if ivar is None else ivar
    )
    mask = np.zeros((n, ny, nx), dtype=np.int32) if mask is None else mask
    wave = _manga_wave(n, crval, cd) if wave is None else wave
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 205.4, 27.0, 2.0, 2.0
    h["CD1_1"], h["CD2_2"] = -0.5 / 3600, 0.5 / 3600
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CTYPE3"], h["CUNIT3"] = "WAVE-LOG", "Angstrom"
    h["CRPIX3"], h["CRVAL3"], h["CD3_3"] = 1.0, crval, cd
    h["BUNIT"] = "1E-17 erg/s/cm^2/Ang/spaxel"
    if pointers:  # ESO data-format keywords, as an SDSS file may carry them
        h["HDUCLAS1"], h["ERRDATA"], h["QUALDATA"] = "CUBE", "IVAR", "MASK"
    prim = fits.PrimaryHDU()
    prim.header["VERSDRP3"] = "v3_1_1"
    prim.header["TELESCOP"] = "SDSS 2.5-M"
    hdus = [prim, fits.ImageHDU(flux, h, name="FLUX")]
    ih = h.copy()
    if pointers:
        ih["HDUCLAS3"] = "INVMSE"
    hdus += [fits.ImageHDU(ivar, ih, name="IVAR"), fits.ImageHDU(mask, h, name="MASK")]
    yy, xx = np.mgrid[:ny, :nx]
    sig = 1.1 + 0.05 * (yy + xx)[None] + 1e-4 * np.arange(n)[:, None, None]  # A, per spaxel
    for name in ("LSFPOST", "LSFPRE"):
        if name in lsf:
            hdus.append(
                fits.ImageHDU(
                    sig.astype(np.float32) * (1.02 if "POST" in name else 1.0), h, name=name
                )
            )
    hdus.append(fits.ImageHDU(np.asarray(wave, dtype=np.float64), name="WAVE"))
    R = wave / (2.3548 * 1.2)
    for name in ("PRESPECRES", "SPECRES"):
        if name in lsf:
            hdus.append(fits.ImageHDU(R * (0.98 if name == "SPECRES" else 1.0), name=name))
    fits.HDUList(hdus).writeto(path)
    return path


# ------------------------------------------------------------------ MaNGA
@pytest.mark.parametrize("pointers", [False, True])
def test_manga_logcube_wavelengths_follow_wave_log_and_the_wave_extension(tmp_path, pointers):
    p = write_manga(tmp_path / "manga-8485-1901-LOGCUBE.fits", pointers=pointers)
    cube = read_ifu_cube(p)
    p_ = np.arange(1, L + 1)
    want = MANGA_CRVAL3 * np.exp(MANGA_CD3_3 * (p_ - 1.0) / MANGA_CRVAL3)  # FITS WCS III
    np.testing.assert_allclose(cube.wave, want, rtol=1e-14, atol=0)
    with fits.open(p) as h:
        np.testing.assert_allclose(cube.wave, h["WAVE"].data, rtol=1e-13, atol=0)
    np.testing.assert_allclose(np.diff(np.log(cube.wave)), np.log(10) * 1e-4, rtol=1e-9)
    assert cube.medium == "vacuum" and cube.file_format == "manga"
    assert (cube.noise_name, cube.noise_kind, cube.dq_name) == ("IVAR", "ivar", "MASK")
    assert cube.bunit == "1E-17 erg/s/cm^2/Ang/spaxel"


def test_manga_mask_excludes_the_bits_the_dap_excludes_and_keeps_the_others(tmp_path):
    mask = np.zeros((L, NY, NX), dtype=np.int32)
    ivar = np.full((L, NY, NX), 4.0, dtype=np.float32)
    bad = {(1, 0, 0): FORESTAR, (2, 1, 1): DONOTUSE, (3, 2, 2): NOCOV | DONOTUSE}
    kept = {(4, 0, 1): LOWCOV, (5, 1, 2): DEADFIBER, (6, 2, 3): NOCOV, (7, 0, 3): 1 << 20}
    for idx, bits in {**bad, **kept}.items():
        mask[idx] = bits
    ivar[3, 2, 2] = 0.0  # MaNGA: no coverage, no inverse variance
    cube = read_ifu_cube(write_manga(tmp_path / "m.fits", ivar=ivar, mask=mask))
    assert cube.n_flagged() == len(bad)
    assert cube.dq_rule == "bad where FORESTAR (bit 3) or DONOTUSE (bit 10) is set"
    want = np.full((L, NY, NX), 0.25)
    for idx in bad:
        want[idx] = np.nan
    np.testing.assert_array_equal(cube.variance, want)  # LOWCOV etc.: 1 / ivar, kept
    np.testing.assert_array_equal(_streamed_variance(cube), want)
    assert np.isfinite(np.asarray(cube.flux)).all()  # the flux is the file's


def test_manga_wave_extension_that_disagrees_with_the_wcs_is_refused(tmp_path):
    wave = _manga_wave()
    wave[10] += 0.1  # a tenth of a 0.9 A pixel
    p = write_manga(tmp_path / "m.fits", wave=wave)
    with pytest.raises(ValueError, match=r"WAVE extension gives .* pixel 10.*inconsistent"):
        read_ifu_cube(p)


def test_manga_lsf_is_the_dap_choice_median_over_spaxels_as_fwhm(tmp_path):
    cube = read_ifu_cube(write_manga(tmp_path / "m.fits"), x_range=(1, 4), y_range=(0, 2))
    name, fwhm = cube.lsf_fwhm()
    with fits.open(tmp_path / "m.fits") as h:
        sig = h["LSFPRE"].data[:, 0:2, 1:4].astype(np.float64)
    assert name == "LSFPRE"  # before PRESPECRES, LSFPOST and SPECRES, as in MaNGA's DAP
    np.testing.assert_allclose(fwhm, np.median(sig.reshape(L, -1), axis=1) * 2.354820045, rtol=1e-9)
    # spaxels without an LSF (0) are left out of the median
    sig0 = np.ones((L, NY, NX), dtype=np.float32)
    sig0[:, 0, :] = 0.0
    sig0[:, 1, :] = 3.0
    p2 = write_manga(tmp_path / "m2.fits", lsf=())
    with fits.open(p2, mode="update") as h:
        h.insert(4, fits.ImageHDU(sig0, h["FLUX"].header, name="LSFPRE"))
    np.testing.assert_allclose(read_ifu_cube(p2).lsf_fwhm()[1], 2.0 * 2.354820045, rtol=1e-9)
    # a file with only the resolution vector: FWHM = lambda / R
    cube = read_ifu_cube(write_manga(tmp_path / "m3.fits", lsf=("SPECRES",)))
    name, fwhm = cube.lsf_fwhm()
    assert name == "SPECRES"
    np.testing.assert_allclose(fwhm, 2.3548 * 1.2 / 0.98, rtol=1e-12)


def test_gzip_file_is_refused_naming_gunzip(tmp_path):
    p = write_manga(tmp_path / "m.fits")
    gz = tmp_path / "manga-8485-1901-LOGCUBE.fits.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    with pytest.raises(ValueError, match=r"gzip-compressed.*gunzip -k"):
        read_ifu_cube(gz)


@pytest.mark.parametrize(
    ("ctype", "words"),
    [("WAVE-TAB", r"-TAB.*linear_wave=True"), ("WAVE-F2W", r"linear .* and logarithmic")],
)
def test_tabulated_and_other_nonlinear_axes_are_refused(tmp_path, ctype, words):
    h = fits.Header(
        {"CTYPE3": ctype, "CRVAL3": 1.0, "CDELT3": 0.001, "CRPIX3": 1.0, "CUNIT3": "um"}
    )
    d = np.ones((L, NY, NX), dtype=np.float32)
    p = tmp_path / "c.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(d, h, name="SCI"), fits.ImageHDU(d, h, name="ERR")]
    ).writeto(p)
    with pytest.raises(ValueError, match=words):
        read_ifu_cube(p)


# ------------------------------------------------------------------ CALIFA, SAMI, KCWI, JWST
def test_califa_error_is_sigma_badpix_one_is_bad_and_air_without_ctype3(tmp_path):
    rng = np.random.default_rng(4)
    flux = (rng.random((L, NY, NX)) + 1.0).astype(np.float32)
    err = (rng.random((L, NY, NX)) * 0.2 + 0.05).astype(np.float32)
    badpix = np.zeros((L, NY, NX), dtype=np.uint8)
    badpix[[3, 9], [0, 2], [1, 3]] = 1
    h = fits.Header({"CRVAL3": 3749.0, "CDELT3": 2.0, "CRPIX3": 1.0})  # V500, no CTYPE3
    prim = fits.PrimaryHDU(flux, h)
    p = tmp_path / "NGC0001.V500.rscube.fits"
    fits.HDUList(
        [
            prim,
            fits.ImageHDU(err, h, name="ERROR"),
            fits.ImageHDU(np.ones_like(err), h, name="ERRWEIGHT"),
            fits.ImageHDU(badpix, h, name="BADPIX"),
            fits.ImageHDU(np.full((L, NY, NX), 3, dtype=np.uint8), h, name="FIBCOVER"),
        ]
    ).writeto(p)
    cube = read_ifu_cube(p)
    assert (cube.file_format, cube.medium, cube.noise_kind, cube.dq_name) == (
        "califa",
        "air",
        "sigma",
        "BADPIX",
    )
    np.testing.assert_allclose(cube.wave, 3749.0 + 2.0 * np.arange(L))
    want = np.where(badpix == 1, np.nan, err.astype(np.float64) ** 2)
    np.testing.assert_array_equal(cube.variance, want)
    np.testing.assert_array_equal(_streamed_variance(cube), want)
    assert read_ifu_cube(p, medium="vacuum").medium == "vacuum"  # the default can be overridden


def test_sami_primary_flux_and_variance(tmp_path):
    rng = np.random.default_rng(5)
    flux = (rng.random((L, NY, NX)) + 1.0).astype(np.float32)
    var = (rng.random((L, NY, NX)) * 0.1 + 0.01).astype(np.float32)
    flux[:, 0, 0] = np.nan  # SAMI: NaN where there is no data
    var[:, 0, 0] = np.nan
    h = fits.Header(
        {"CTYPE3": "AWAV", "CUNIT3": "Angstrom", "CRVAL3": 4700.0, "CDELT3": 1.04, "CRPIX3": 1.0}
    )
    p = tmp_path / "9011900430_cube_blue.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(flux, h),
            fits.ImageHDU(var, h, name="VARIANCE"),
            fits.ImageHDU(np.ones_like(var), h, name="WEIGHT"),
            fits.ImageHDU(np.zeros((2, 5, 5, NY, NX), dtype=np.float32), name="COVAR"),
        ]
    ).writeto(p)
    cube = read_ifu_cube(p)
    assert (cube.file_format, cube.noise_name, cube.noise_kind, cube.dq_name) == (
        "sami",
        "VARIANCE",
        "variance",
        "",
    )
    np.testing.assert_array_equal(cube.variance, var.astype(np.float64))


def _kcwi(path, utype="StdDevUncertainty"):
    rng = np.random.default_rng(6)
    flux = (rng.random((L, NY, NX)) + 1.0).astype(np.float32)
    unc = (rng.random((L, NY, NX)) * 0.2 + 0.05).astype(np.float32)
    mask = np.zeros((L, NY, NX), dtype=np.uint8)
    mask[[2, 5], [1, 2], [0, 3]] = 1
    flags = np.zeros((L, NY, NX), dtype=np.uint8)
    flags[8, 0, 0] = 128  # FLAGS is not read: this pixel stays good
    h = fits.Header(
        {
            "INSTRUME": "KCWI",
            "CTYPE3": "AWAV",
            "CUNIT3": "Angstrom",
            "CRVAL3": 4400.0,
            "CD3_3": 0.5,
            "CRPIX3": 1.0,
            "BUNIT": "FLAM16",
        }
    )
    uh = fits.Header()
    if utype:
        uh["UTYPE"] = utype  # astropy CCDData.to_hdu's key_uncertainty_type
    fits.HDUList(
        [
            fits.PrimaryHDU(flux, h),
            fits.ImageHDU(mask, name="MASK"),
            fits.ImageHDU(unc, uh, name="UNCERT"),
            fits.ImageHDU(flags, name="FLAGS"),
        ]
    ).writeto(path)
    return unc.astype(np.float64), mask


def test_kcwi_uncert_by_its_utype_and_mask_nonzero_is_bad(tmp_path):
    unc, mask = _kcwi(tmp_path / "kb230101_00042_icubes.fits")
    cube = read_ifu_cube(tmp_path / "kb230101_00042_icubes.fits")
    assert (cube.file_format, cube.noise_name, cube.noise_kind, cube.dq_name, cube.medium) == (
        "kcwi",
        "UNCERT",
        "sigma",
        "MASK",
        "air",
    )
    want = np.where(mask != 0, np.nan, unc**2)
    np.testing.assert_array_equal(cube.variance, want)
    np.testing.assert_array_equal(_streamed_variance(cube), want)
    _kcwi(tmp_path / "nout.fits", utype=None)
    with pytest.raises(ValueError, match=r"UTYPE = 'missing'.*--noise-ext"):
        read_ifu_cube(tmp_path / "nout.fits")
    assert read_ifu_cube(tmp_path / "nout.fits", noise_ext="UNCERT").noise_kind == "sigma"


def test_jwst_s3d_microns_err_sigma_and_only_do_not_use_is_bad(tmp_path):
    rng = np.random.default_rng(7)
    sci = (rng.random((L, NY, NX)) + 1.0).astype(np.float32)
    err = (rng.random((L, NY, NX)) * 0.2 + 0.05).astype(np.float32)
    dq = np.zeros((L, NY, NX), dtype=np.uint32)
    bad = {(1, 0, 0): 1, (2, 1, 1): 513, (3, 2, 2): 1 | 2}  # DO_NOT_USE (+ NON_SCIENCE, SATURATED)
    kept = {(4, 0, 1): 512, (5, 1, 2): 2, (6, 2, 3): 1 << 31}
    for idx, v in {**bad, **kept}.items():
        dq[idx] = v
    h = fits.Header(
        {
            "CTYPE3": "WAVE",
            "CUNIT3": "um",
            "CRVAL3": 1.65,
            "CDELT3": 0.000395,
            "CRPIX3": 1.0,
            "PC3_3": 1.0,
            "BUNIT": "MJy/sr",
        }
    )
    prim = fits.PrimaryHDU()
    prim.header["TELESCOP"], prim.header["INSTRUME"] = "JWST", "NIRSPEC"
    p = tmp_path / "jw01234-o001_t001_nirspec_g235h-f170lp_s3d.fits"
    fits.HDUList(
        [
            prim,
            fits.ImageHDU(sci, h, name="SCI"),
            fits.ImageHDU(err, h, name="ERR"),
            fits.ImageHDU(dq, h, name="DQ"),
            fits.ImageHDU(np.ones((L, NY, NX), dtype=np.float32), h, name="WMAP"),
        ]
    ).writeto(p)
    cube = read_ifu_cube(p)
    assert (cube.file_format, cube.medium, cube.noise_kind, cube.bunit) == (
        "jwst",
        "vacuum",
        "sigma",
        "MJy/sr",
    )
    np.testing.assert_allclose(cube.wave, 1e4 * (1.65 + 0.000395 * np.arange(L)), rtol=1e-12)
    assert cube.n_flagged() == len(bad) and "DO_NOT_USE (bit 0)" in cube.dq_rule
    want = err.astype(np.float64) ** 2
    for idx in bad:
        want[idx] = np.nan
    np.testing.assert_array_equal(cube.variance, want)
    np.testing.assert_array_equal(_streamed_variance(cube), want)


def test_eso_hduclas3_says_what_the_errdata_extension_holds(tmp_path):
    rng = np.random.default_rng(8)
    d = (rng.random((L, NY, NX)) + 1.0).astype(np.float32)
    sig = (rng.random((L, NY, NX)) * 0.2 + 0.05).astype(np.float32)
    h = fits.Header(
        {
            "CTYPE3": "AWAV",
            "CUNIT3": "Angstrom",
            "CRVAL3": 5000.0,
            "CD3_3": 1.25,
            "CRPIX3": 1.0,
            "ERRDATA": "NOISE",
        }
    )
    p = tmp_path / "c.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(d, h, name="DATA"),
            fits.ImageHDU(sig, fits.Header({"HDUCLAS3": "RMSE"}), name="NOISE"),
        ]
    ).writeto(p)
    cube = read_ifu_cube(p)
    assert cube.noise_kind == "sigma"
    np.testing.assert_array_equal(cube.variance, sig.astype(np.float64) ** 2)


# ------------------------------------------------------------------ MaNGA end to end
def _smooth_manga(tmp_path, mask=None):
    """A 600 x 2 x 3 MaNGA LOGCUBE of one smooth spectrum plus 1 % noise, ivar 1e4."""
    n, ny, nx = 600, 2, 3
    wave = _manga_wave(n, 5000.0, 5000.0 * np.log(10) * 1e-4)
    rng = np.random.default_rng(9)
    flux = (1.0 + 0.1 * np.sin(wave / 40.0))[:, None, None] * np.ones((n, ny, nx))
    flux = (flux + rng.normal(0, 0.01, flux.shape)).astype(np.float32)
    return write_manga(
        tmp_path / "manga-1-2-LOGCUBE.fits",
        n=n,
        crval=5000.0,
        flux=flux,
        ivar=np.full((n, ny, nx), 1e4, dtype=np.float32),
        mask=mask,
        ny=ny,
        nx=nx,
    )


def test_manga_logcube_to_a_store_with_its_own_lsf(tmp_path, caplog):
    """A MaNGA-layout LOGCUBE, with a kinematics table and small templates, to a store: the
    data's own 1e-4 dex step is kept, its LSFPRE chosen by fwhm_gal="auto" and recorded."""
    import h5py

    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.model import C_KMS
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    demo = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    mask = np.zeros((600, 2, 3), dtype=np.int32)
    mask[100:110, 0, 0] = DONOTUSE
    p, (n, ny, nx) = _smooth_manga(tmp_path, mask), (600, 2, 3)
    S = ny * nx
    kin = {"V": np.zeros(S), "sigma": np.full(S, 150.0), "h3": np.zeros(S), "h4": np.zeros(S)}
    out = tmp_path / "s.h5"
    with caplog.at_level("INFO", logger="nnfit.spectral.ifu_store"):
        info = store_from_ifu_cube(
            p,
            demo["templates"],
            out,
            bin_map=np.arange(S).reshape(ny, nx),
            kinematics=kin,
            lines=[],
            min_sn=0.0,
        )
    assert info["S"] == S and info["L"] == n and info["dq_flagged"] == 10
    np.testing.assert_allclose(info["velscale"], C_KMS * np.log(10) * 1e-4, rtol=1e-9)
    assert "own LSF (extension LSFPRE, median over the selected spaxels)" in caplog.text
    with h5py.File(out, "r") as f:
        ifu = json.loads(f.attrs["ifu_json"])
        assert f["BinMask"][0, 100:110].sum() == 0 and f["BinMask"][1].all()
    assert ifu["fwhm_gal"] == "cube extension LSFPRE, median over the selected spaxels"
    assert ifu["format"] == "manga"
    assert ifu["medium"] == "vacuum" and ifu["bunit"] == "1E-17 erg/s/cm^2/Ang/spaxel"
    assert ifu["dq"]["rule"].startswith("bad where FORESTAR") and ifu["noise"] == "IVAR (ivar)"


def test_manga_bins_with_covariance_carry_the_calibrated_noise(tmp_path, caplog):
    """Bins of a MaNGA cube: without --covariance the store says the noise is correlated; with
    it, each bin's noise is 1 + ALPHA log10(n) times the root of its summed variances."""
    import h5py

    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    demo = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    p, (ny, nx) = _smooth_manga(tmp_path), (2, 3)
    kin = {"V": np.zeros(2), "sigma": np.full(2, 150.0), "h3": np.zeros(2), "h4": np.zeros(2)}
    rows = np.repeat(np.arange(2), 3).reshape(ny, nx)  # two bins of three spaxels
    noise = {}
    for alpha in (0.0, 1.62):
        out = tmp_path / f"s{alpha}.h5"
        caplog.clear()
        with caplog.at_level("WARNING", logger="nnfit.spectral.ifu_store"):
            store_from_ifu_cube(
                p,
                demo["templates"],
                out,
                bin_map=rows,
                kinematics=kin,
                lines=[],
                min_sn=0.0,
                covariance=alpha,
            )
        assert ("--covariance ALPHA corrects" in caplog.text) == (alpha == 0)
        with h5py.File(out, "r") as f:
            noise[alpha] = f["Noise"][()]
            assert json.loads(f.attrs["ifu_json"])["covariance"] == alpha
    ok = np.isfinite(noise[0.0]) & (noise[0.0] > 0)
    assert ok.sum() > 500
    np.testing.assert_allclose(noise[1.62][ok] / noise[0.0][ok], 1 + 1.62 * np.log10(3), rtol=1e-6)


# ------------------------------------------------------------------ units, messages, logging
def _jwst_s3d(path, sci, err, *, crval, cdelt, bunit="MJy/sr"):
    """A JWST s3d: SCI/ERR float32, DQ uint32 (all good), micron axis, CDELT + PC celestial."""
    h = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CTYPE3": "WAVE",
            "CUNIT1": "deg",
            "CUNIT2": "deg",
            "CUNIT3": "um",
            "CRVAL1": 205.4,
            "CRVAL2": 27.0,
            "CRVAL3": crval,
            "CRPIX1": 1.0,
            "CRPIX2": 1.0,
            "CRPIX3": 1.0,
            "CDELT1": 0.1 / 3600,
            "CDELT2": 0.1 / 3600,
            "CDELT3": cdelt,
            "PC1_1": -1.0,
            "PC2_2": 1.0,
            "PC3_3": 1.0,
            "BUNIT": bunit,
        }
    )
    prim = fits.PrimaryHDU()
    prim.header["TELESCOP"], prim.header["INSTRUME"] = "JWST", "NIRSPEC"
    fits.HDUList(
        [
            prim,
            fits.ImageHDU(sci.astype(np.float32), h, name="SCI"),
            fits.ImageHDU(err.astype(np.float32), h, name="ERR"),
            fits.ImageHDU(np.zeros(sci.shape, dtype=np.uint32), h, name="DQ"),
        ]
    ).writeto(path)
    return path


def test_jwst_flux_per_frequency_is_fitted_per_wavelength(tmp_path, caplog):
    """An s3d in MJy/sr (per unit frequency) gives the store of the same cube in f_lambda: the
    templates are per unit wavelength, and f_nu = f_lambda lambda^2 / c would tilt it."""
    import h5py

    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    demo = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    n, ny, nx = 500, 2, 2
    lam_um = 0.52 + 0.0001 * np.arange(n)  # inside the demo templates' 4788-6316 A
    f_lam = 1.0 + 0.1 * np.sin(lam_um * 2e3)[:, None, None] * np.ones((n, ny, nx))
    to_f_nu = (lam_um * 1e4) ** 2 / 2.99792458e18 * 1e17 * 4.0  # erg/s/cm2/A/sr -> MJy/sr
    S = ny * nx
    kin = {"V": np.zeros(S), "sigma": np.full(S, 100.0), "h3": np.zeros(S), "h4": np.zeros(S)}
    stores = {}
    for unit, f in (("MJy/sr", f_lam * to_f_nu[:, None, None]), ("erg/s/cm2/Angstrom/sr", f_lam)):
        p = _jwst_s3d(tmp_path / "jw_s3d.fits", f, 0.01 * f, crval=0.52, cdelt=1e-4, bunit=unit)
        with caplog.at_level("INFO", logger="nnfit.spectral.ifu_store"):
            store_from_ifu_cube(
                p,
                demo["templates"],
                tmp_path / "s.h5",
                bin_map=np.arange(S).reshape(ny, nx),
                kinematics=kin,
                lines=[],
                min_sn=0.0,
                fwhm_gal=None,
                overwrite=True,
            )
        p.unlink()
        with h5py.File(tmp_path / "s.h5", "r") as h5:
            stores[unit] = (h5["DataCube"][()], h5["Noise"][()], json.loads(h5.attrs["ifu_json"]))
    (d_nu, n_nu, ifu), (d_lam, n_lam, _) = stores["MJy/sr"], stores["erg/s/cm2/Angstrom/sr"]
    np.testing.assert_allclose(d_nu, 4.0 * d_lam, rtol=1e-5)  # not tilted by lambda^2
    np.testing.assert_allclose(n_nu, 4.0 * n_lam, rtol=1e-5)
    assert ifu["bunit"] == "erg / (Angstrom s sr cm2)" and ifu["bunit_file"] == "MJy/sr"
    assert (ifu["data"], ifu["noise"], ifu["format"]) == ("SCI", "ERR (sigma)", "jwst")
    assert "'MJy/sr' is a flux density per unit frequency" in caplog.text


def test_lam_range_refusal_names_the_file_the_flag_and_the_unit(tmp_path):
    p = _jwst_s3d(
        tmp_path / "jw_s3d.fits", np.ones((L, NY, NX)), np.ones((L, NY, NX)), crval=1.65, cdelt=1e-3
    )
    # a JWST user's micron range: the cube is read in Angstrom
    with pytest.raises(
        ValueError, match=r"jw_s3d\.fits: lam_range .*--lam-range, observed Angstrom"
    ):
        read_ifu_cube(p, lam_range=(1.66, 1.67))


def test_tile_compressed_cube_is_refused_with_the_funpack_command(tmp_path):
    p = write_manga(tmp_path / "m.fits")
    with fits.open(p) as h:
        hdus = [fits.PrimaryHDU(header=h[0].header)] + [
            fits.CompImageHDU(e.data, e.header, name=e.name)
            if e.header.get("NAXIS") == 3
            else e.copy()
            for e in h[1:]
        ]
        fits.HDUList(hdus).writeto(tmp_path / "manga-1-2-LOGCUBE.fits.fz")
    fz = tmp_path / "manga-1-2-LOGCUBE.fits.fz"
    with pytest.raises(ValueError, match=r"tile-compressed.*funpack -O .*LOGCUBE\.fits .*\.fz\)"):
        read_ifu_cube(fz)


def test_califa_units_are_known_and_a_sky_wcs_without_ctypes_is_reported(tmp_path, caplog):
    """CALIFA's cubes say neither CTYPE3 nor CUNIT3 (Angstrom by the data model: no warning);
    axes 1-2 with CRVAL/CDELT but no CTYPE1/2 cannot be RA/Dec, which the user is told."""
    h = fits.Header({"CRVAL3": 3749.0, "CDELT3": 2.0, "CRPIX3": 1.0})
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 205.4, 27.0, 2.0, 2.0
    h["CDELT1"], h["CDELT2"] = -1 / 3600, 1 / 3600
    d = np.ones((L, NY, NX), dtype=np.float32)
    p = tmp_path / "NGC0001.V500.rscube.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(d, h),
            fits.ImageHDU(d, h, name="ERROR"),
            fits.ImageHDU(d, h, name="ERRWEIGHT"),
            fits.ImageHDU(np.zeros(d.shape, np.uint8), h, name="BADPIX"),
            fits.ImageHDU(np.zeros(d.shape, np.uint8), h, name="FIBCOVER"),
        ]
    ).writeto(p)
    with caplog.at_level("WARNING", logger="nnfit.spectral.ifu_cube"):
        cube = read_ifu_cube(p)
    assert cube.file_format == "califa" and cube.celestial_header == ""
    assert "CUNIT3" not in caplog.text
    assert "NGC0001.V500.rscube.fits: axes 1-2 have CRVAL/CDELT" in caplog.text
    assert "maps carry spaxel axes" in caplog.text


def test_init_shows_the_lsf_the_templates_were_matched_to(tmp_path, run_cli):
    """The command line shows the cube's own LSF, in the observed and the rest frame, and
    where the templates are already broader than it (not sharpened)."""
    from astropy.table import Table

    from nnfit.spectral.simulate_ifu import write_ifu_demo

    demo = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    n, ny, nx = 600, 2, 3
    flux = np.ones((n, ny, nx), dtype=np.float32)
    p = write_manga(tmp_path / "manga-1-2-LOGCUBE.fits", n=n, crval=5000.0, flux=flux, ny=ny, nx=nx)
    S = ny * nx
    Table({"V": np.zeros(S), "SIGMA": np.full(S, 150.0)}).write(tmp_path / "kin.ecsv")
    out = run_cli(
        "spectral",
        "init",
        p,
        "--templates",
        demo["templates"],
        "--kinematics",
        tmp_path / "kin.ecsv",
        "--fwhm-templates",
        "4.0",
        "--redshift",
        "0.03",
        "--no-line-mask",
        "--out",
        tmp_path / "s.h5",
        check=True,
    )
    assert "templates matched to the cube's own LSF (extension LSFPRE" in out.stderr
    assert "in the rest frame (z = 0.03)" in out.stderr
    assert "templates broader than the instrument" in out.stderr


def test_missing_fwhm_is_refused_before_the_cube_is_streamed(tmp_path, monkeypatch):
    """A cube without an LSF the reader knows (KCWI) is refused naming the file and --fwhm
    before the DQ count and the binning read the whole cube (minutes for a large one)."""
    from nnfit.spectral import binning, ifu_cube
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    p = tmp_path / "kb230101_00042_icubes.fits"
    _kcwi(p)

    def streamed(*args, **kwargs):
        raise AssertionError("the cube was streamed before the --fwhm refusal")

    monkeypatch.setattr(ifu_cube.IFUCube, "n_flagged", streamed)
    monkeypatch.setattr(binning, "spaxel_signal_noise", streamed)
    with pytest.raises(ValueError, match=r"icubes\.fits: --fwhm: INSTRUME is 'KCWI'.*--fwhm 2\.5"):
        store_from_ifu_cube(p, tmp_path / "none.npz", tmp_path / "s.h5", kinematics="ppxf")


def test_near_infrared_cube_is_told_to_move_the_light_band(tmp_path):
    """A NIRSpec cube (1.65-1.69 micron) and the default --norm-range, the V band: refused
    naming the flag and a band inside the grid, before any template is read."""
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    p = _jwst_s3d(
        tmp_path / "jw_s3d.fits", np.ones((L, NY, NX)), np.ones((L, NY, NX)), crval=1.65, cdelt=1e-3
    )
    S = NY * NX
    kin = {"V": np.zeros(S), "sigma": np.full(S, 100.0), "h3": np.zeros(S), "h4": np.zeros(S)}
    with pytest.raises(
        ValueError, match=r"jw_s3d\.fits: --norm-range 5070 5950 .*--norm-range 1"
    ) as e:
        store_from_ifu_cube(
            p,
            tmp_path / "templates.npz",  # not read: the band is checked first
            tmp_path / "s.h5",
            bin_map=np.arange(S).reshape(NY, NX),
            kinematics=kin,
            lines=[],
            min_sn=0.0,
            fwhm_gal=None,
        )
    a, b = (float(v) for v in str(e.value).rsplit("--norm-range ", 1)[1].split())
    assert 16500 < a < b < 16890  # inside the cube's rest-frame range
