"""FITS IFU cube reading against MPDAF on the real MUSE minicube; malformed files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnfit.spectral.ifu_cube import (
    air_to_vacuum,
    muse_lsf_fwhm,
    read_ifu_cube,
    vacuum_to_air,
)

mpdaf = pytest.importorskip("mpdaf", reason="the real MUSE cube ships with mpdaf (test extra)")
fits = pytest.importorskip("astropy.io.fits")

MINICUBE = Path(mpdaf.__file__).parent / "data" / "sdetect" / "minicube.fits"


def test_reads_the_real_muse_cube_like_mpdaf():
    from mpdaf.obj import Cube

    ref = Cube(str(MINICUBE))
    cube = read_ifu_cube(MINICUBE)
    assert cube.shape == ref.shape and cube.medium == "air"
    np.testing.assert_allclose(cube.wave, ref.wave.coord(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(cube.flux), ref.data.filled(np.nan))
    np.testing.assert_array_equal(np.asarray(cube.variance), ref.var.filled(np.nan))
    assert cube.bunit == "10**(-20)*erg/s/cm**2/Angstrom"


def test_sub_selection_and_celestial_wcs_match_mpdaf():
    from astropy.wcs import WCS
    from mpdaf.obj import Cube

    ref = Cube(str(MINICUBE))[:, 5:25, 10:30]
    cube = read_ifu_cube(MINICUBE, lam_range=(5000, 6000), x_range=(10, 30), y_range=(5, 25))
    keep = (ref.wave.coord() >= 5000) & (ref.wave.coord() <= 6000)
    np.testing.assert_allclose(cube.wave, ref.wave.coord()[keep], atol=1e-9)
    np.testing.assert_array_equal(np.asarray(cube.flux), ref.data.filled(np.nan)[keep])
    w = WCS(fits.Header.fromstring(cube.celestial_header))
    yx = np.array([[0, 0], [3, 17], [19, 19]])
    dec_ra = ref.wcs.pix2sky(yx)  # MPDAF: (dec, ra) of (y, x) pixels
    ra, dec = w.pixel_to_world_values(yx[:, 1], yx[:, 0])
    np.testing.assert_allclose(np.c_[dec, ra], dec_ra, rtol=0, atol=1e-10)


def test_slabs_stream_the_selection():
    cube = read_ifu_cube(MINICUBE, lam_range=(4800, 5000))
    parts = list(cube.slabs(max_bytes=8 * 40 * 40 * 7))
    assert len(parts) > 1 and all(f.shape[0] <= 7 for _, f, _ in parts)
    np.testing.assert_array_equal(np.concatenate([f for _, f, _ in parts]), np.asarray(cube.flux))


def test_air_vacuum_against_ppxf_and_lsf_range():
    util = pytest.importorskip("ppxf.ppxf_util", reason="ppxf is the reference (test extra)")
    lam = np.linspace(3600.0, 9400.0, 50)
    np.testing.assert_allclose(vacuum_to_air(lam), util.vac_to_air(lam), rtol=0, atol=1e-12)
    # pPXF's air_to_vac is the one-step approximation lam * n(lam_air); ours inverts exactly.
    np.testing.assert_allclose(air_to_vacuum(lam), util.air_to_vac(lam), rtol=0, atol=1e-4)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(lam)), lam, rtol=0, atol=1e-9)
    f = muse_lsf_fwhm(np.linspace(4750, 9350, 100))
    assert 2.4 < f.min() and f.max() < 3.0


# ------------------------------------------------------------------ malformed files
def _write(
    path, *, data_shape=(20, 3, 4), var_shape=None, header=None, names=("DATA", "STAT"), nan=False
):
    h = fits.Header(
        {"CTYPE3": "AWAV", "CRVAL3": 5000.0, "CD3_3": 1.25, "CRPIX3": 1.0, "CUNIT3": "Angstrom"}
    )
    for k, v in (header or {}).items():
        if v is None:
            del h[k]
        else:
            h[k] = v
    d = np.ones(data_shape, dtype=np.float32) * (np.nan if nan else 1.0)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(d, h, name=names[0])]
    if len(names) > 1:
        v = np.ones(var_shape or data_shape, dtype=np.float32)
        hdus.append(fits.ImageHDU(v, h, name=names[1]))
    fits.HDUList(hdus).writeto(path)
    return path


BAD = {
    "missing extension": ({"names": ("DATA",)}, "no variance extension"),
    "no spectral WCS": ({"header": {"CRVAL3": None}}, "CRVAL3"),
    "no spectral step": ({"header": {"CD3_3": None}}, "CD3_3"),
    "unknown CTYPE3": ({"header": {"CTYPE3": "FREQ"}}, "CTYPE3"),
    "bad CUNIT3": ({"header": {"CUNIT3": "Jy"}}, "CUNIT3"),
    "all-NaN cube": ({"nan": True}, "no finite data"),
    "1-D file": ({"data_shape": (20,)}, "NAXIS = 1"),
    "mismatched variance": ({"var_shape": (20, 3, 5)}, "must match"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_reader_refuses_malformed_files(tmp_path, case):
    kw, words = BAD[case]
    p = _write(tmp_path / "bad.fits", **kw)
    with pytest.raises(ValueError, match=words):
        read_ifu_cube(p)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["missing extension", "no spectral WCS", "all-NaN cube", "1-D file", "mismatched variance"],
)
def test_cli_refuses_malformed_files_exit_2_nothing_written(run_cli, tmp_path, case):
    kw, words = BAD[case]
    p = _write(tmp_path / "bad.fits", **kw)
    out = tmp_path / "store.h5"
    proc = run_cli("cube", "init", p, "--templates", tmp_path, "--out", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnfit: error: ") and words in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.fits"]


# ------------------------------------------------------------------ noise kinds and DQ
_HDR = {"CTYPE3": "AWAV", "CRVAL3": 5000.0, "CD3_3": 1.25, "CRPIX3": 1.0, "CUNIT3": "Angstrom"}


def _noise_cube(path, extra):
    """DATA (20, 3, 4) with random positive values and the extensions ``extra`` {name: array}."""
    rng = np.random.default_rng(11)
    d = (rng.random((20, 3, 4)) + 1.0).astype(np.float32)
    h = fits.Header(_HDR)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(d, h, name="DATA")]
    hdus += [fits.ImageHDU(a, h, name=n) for n, a in extra.items()]
    fits.HDUList(hdus).writeto(path)
    return d.astype(np.float64)


def _streamed_variance(cube):
    return np.concatenate([v for _, _, v in cube.slabs(max_bytes=8 * 12 * 3)])


def test_dq_flags_pixels_bad_like_a_nan_variance_and_leaves_the_flux(tmp_path):
    from nnfit.spectral.binning import BinMap, bin_spectra

    rng = np.random.default_rng(5)
    var = (rng.random((20, 3, 4)) * 0.1 + 0.01).astype(np.float32)
    dq = np.zeros((20, 3, 4), dtype=np.int32)
    dq[[2, 7, 7, 15], [0, 1, 2, 2], [1, 3, 0, 3]] = [1, 4, 1 << 20, 2]
    d = _noise_cube(tmp_path / "dq.fits", {"STAT": var, "DQ": dq})
    # the reference: the same file with the flagged variances NaN and no DQ
    var_nan = np.where(dq != 0, np.nan, var).astype(np.float32)
    _noise_cube(tmp_path / "nan.fits", {"STAT": var_nan})

    cube = read_ifu_cube(tmp_path / "dq.fits")
    ref = read_ifu_cube(tmp_path / "nan.fits")
    assert cube.dq_name == "DQ" and cube.n_flagged() == 4 and ref.n_flagged() == 0
    np.testing.assert_array_equal(np.asarray(cube.flux), d)  # the flux is the file's
    np.testing.assert_array_equal(cube.variance, var_nan.astype(np.float64))
    np.testing.assert_array_equal(_streamed_variance(cube), var_nan.astype(np.float64))
    bins = BinMap.from_map(np.arange(12).reshape(3, 4) % 3)
    for got, want in zip(bin_spectra(cube, bins), bin_spectra(ref, bins), strict=True):
        np.testing.assert_array_equal(got, want)

    off = read_ifu_cube(tmp_path / "dq.fits", dq_ext=None)
    assert off.dq_name == "" and off.n_flagged() == 0
    np.testing.assert_array_equal(np.asarray(off.variance), var.astype(np.float64))
    with pytest.raises(ValueError, match=r"no data-quality extension 'QUAL'.*--dq-ext none"):
        read_ifu_cube(tmp_path / "dq.fits", dq_ext="QUAL")


def test_real_minicube_dq_flags_its_five_pixels():
    cube = read_ifu_cube(MINICUBE)
    assert cube.dq_name == "DQ" and cube.n_flagged() == 5
    with fits.open(MINICUBE) as h:
        flagged = h["DQ"].data != 0
    assert np.isnan(np.asarray(cube.variance)[flagged]).all()
    assert read_ifu_cube(MINICUBE, lam_range=(4800, 7000)).n_flagged() == 0  # all in the last plane


def test_inverse_variance_is_inverted_and_never_read_as_a_variance(tmp_path):
    rng = np.random.default_rng(6)
    var = rng.random((20, 3, 4)) * 0.1 + 0.01
    ivar = (1.0 / var).astype(np.float32)
    ivar[3, 1, 1] = 0.0  # MaNGA: no data
    ivar[4, 2, 2] = -1.0
    _noise_cube(tmp_path / "ivar.fits", {"IVAR": ivar})
    want = np.full(ivar.shape, np.nan)
    np.divide(1.0, ivar.astype(np.float64), out=want, where=ivar > 0)
    for kw in ({}, {"ivar_ext": "IVAR"}, {"ivar_ext": 2}):
        cube = read_ifu_cube(tmp_path / "ivar.fits", **kw)
        assert cube.noise_kind == "ivar" and cube.noise_name == "IVAR"
        np.testing.assert_allclose(cube.variance, want, rtol=1e-12)
        np.testing.assert_allclose(_streamed_variance(cube), want, rtol=1e-12)
    np.testing.assert_allclose(want[ivar > 0], var[ivar > 0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"'IVAR' holds an inverse variance.*--ivar-ext"):
        read_ifu_cube(tmp_path / "ivar.fits", var_ext="IVAR")
    with pytest.raises(ValueError, match=r"var_ext and ivar_ext"):
        read_ifu_cube(tmp_path / "ivar.fits", var_ext="IVAR", ivar_ext="IVAR")
    # a file with both: the variance wins, as before
    _noise_cube(tmp_path / "both.fits", {"IVAR": ivar, "STAT": var.astype(np.float32)})
    assert read_ifu_cube(tmp_path / "both.fits").noise_name == "STAT"


def test_sigma_that_is_not_finite_and_positive_marks_the_pixel_bad(tmp_path):
    rng = np.random.default_rng(7)
    err = (rng.random((20, 3, 4)) * 0.3 + 0.1).astype(np.float32)
    bad = [(1, 0, 0), (2, 1, 1), (3, 2, 2), (4, 0, 3)]
    for idx, value in zip(bad, (-1.0, 0.0, np.nan, np.inf), strict=True):
        err[idx] = value
    _noise_cube(tmp_path / "err.fits", {"ERR": err})
    cube = read_ifu_cube(tmp_path / "err.fits")
    assert cube.noise_is_sigma
    want = err.astype(np.float64) ** 2
    for idx in bad:
        want[idx] = np.nan
    np.testing.assert_array_equal(cube.variance, want)
    np.testing.assert_array_equal(_streamed_variance(cube), want)
