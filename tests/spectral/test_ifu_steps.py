"""The single steps of the FITS path: binning, kinematics into LOSVDs, LOSVD files, masks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nnfit.spectral.binning import BinMap, bin_spectra, spaxel_signal_noise, voronoi_bins
from nnfit.spectral.ifu_cube import read_ifu_cube
from nnfit.spectral.kinematics import (
    losvd_from_kinematics,
    read_kinematics_table,
    read_losvd_file,
)
from nnfit.spectral.linemask import DEFAULT_LINES, line_mask, read_line_list
from nnfit.spectral.model import C_KMS

fits = pytest.importorskip("astropy.io.fits")


@pytest.fixture
def small_cube(tmp_path):
    """A 30 x 6 x 7 cube with a few NaN pixels and one all-NaN spaxel."""
    rng = np.random.default_rng(3)
    d = (rng.random((30, 6, 7)) + 1.0).astype(np.float32)
    v = (rng.random((30, 6, 7)) * 0.1 + 0.01).astype(np.float32)
    d[:, 0, 0] = np.nan
    d[4, 2, 3] = np.nan
    d[5, 2, 3] = np.nan
    d[5, 2, 4] = np.nan
    h = fits.Header(
        {"CTYPE3": "WAVE", "CRVAL3": 5000.0, "CD3_3": 2.0, "CRPIX3": 1.0, "CUNIT3": "Angstrom"}
    )
    p = tmp_path / "c.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(d, h, name="DATA"), fits.ImageHDU(v, h, name="STAT")]
    ).writeto(p)
    return p, d.astype(np.float64), v.astype(np.float64)


def test_bin_spectra_equals_brute_force_sums_streamed(small_cube):
    p, d, v = small_cube
    cube = read_ifu_cube(p)
    assert cube.medium == "vacuum"
    sig, _, ok = spaxel_signal_noise(cube, max_bytes=8 * 42 * 4)
    assert not ok[0, 0] and ok.sum() == 41
    bmap = np.full((6, 7), -1)
    bmap[ok] = np.arange(41) % 5
    bins = BinMap.from_map(bmap)
    flux, var = bin_spectra(cube, bins, max_bytes=8 * 42 * 3)  # slabs of 3 planes
    for b in range(5):
        sel = bmap == b
        f, vv = d[:, sel], v[:, sel]
        good = np.isfinite(f)
        scale = sel.sum() / good.sum(axis=1)
        np.testing.assert_allclose(flux[b], np.where(good, f, 0).sum(1) * scale, rtol=1e-12)
        np.testing.assert_allclose(var[b], np.where(good, vv, 0).sum(1) * scale**2, rtol=1e-12)
    np.testing.assert_allclose(sig[ok], np.nanmean(d[:, ok], axis=0), rtol=1e-12)


def test_voronoi_bins_reach_the_target_with_vorbin(small_cube):
    p, _, _ = small_cube
    cube = read_ifu_cube(p)
    s, n, ok = spaxel_signal_noise(cube)
    sn = s / n
    bins = voronoi_bins(s, n, ok, target_sn=3 * np.nanmedian(sn))
    assert 1 < bins.n_bins < 41 and (bins.bin_map[~ok] == -1).all()
    # S/N of each bin (quadrature sum) is near the target for most bins (vorbin's goal).
    per_bin = np.sqrt(
        np.bincount(bins.binnum, sn[bins.ypix.astype(int), bins.xpix.astype(int)] ** 2)
    )
    assert np.median(per_bin) > 0.8 * 3 * np.nanmedian(sn)
    none = voronoi_bins(s, n, ok, target_sn=None)
    assert none.n_bins == 41
    with pytest.raises(ValueError, match="target_sn"):
        voronoi_bins(s, n, ok, target_sn=1e6)
    with pytest.raises(ValueError, match=r"0\.\.S-1"):
        BinMap.from_map(np.array([[0, 2], [2, -1]]))


def test_covariance_scales_bin_noise_by_one_plus_alpha_log10_n(small_cube):
    p, _, _ = small_cube
    cube = read_ifu_cube(p)
    _, _, ok = spaxel_signal_noise(cube)
    bmap = np.full((6, 7), -1)
    bmap[ok] = np.arange(41) % 5  # bins of 8 and 9 spaxels
    bins = BinMap.from_map(bmap)
    flux0, var0 = bin_spectra(cube, bins)
    flux, var = bin_spectra(cube, bins, covariance=1.62)
    n = np.bincount(bins.binnum)
    np.testing.assert_array_equal(flux, flux0)
    np.testing.assert_allclose(var, var0 * ((1 + 1.62 * np.log10(n)) ** 2)[:, None], rtol=1e-14)
    a, b = bin_spectra(cube, bins, covariance=0.0)
    np.testing.assert_array_equal(a, flux0)
    np.testing.assert_array_equal(b, var0)
    with pytest.raises(ValueError, match="--covariance"):
        bin_spectra(cube, bins, covariance=-1.0)


def test_voronoi_bins_with_covariance_reach_the_corrected_target(small_cube):
    p, _, _ = small_cube
    cube = read_ifu_cube(p)
    s, n, ok = spaxel_signal_noise(cube)
    target = 3 * np.nanmedian(s / n)
    plain = voronoi_bins(s, n, ok, target_sn=target)
    cov = voronoi_bins(s, n, ok, target_sn=target, covariance=0.5)
    assert 1 <= cov.n_bins < plain.n_bins  # correlated noise needs bigger bins
    y, x = cov.ypix.astype(int), cov.xpix.astype(int)
    n_b = np.bincount(cov.binnum)
    corrected = (
        np.bincount(cov.binnum, s[y, x])
        / np.sqrt(np.bincount(cov.binnum, n[y, x] ** 2))
        / (1 + 0.5 * np.log10(n_b))
    )
    assert np.median(corrected) > 0.8 * target
    with pytest.raises(ValueError, match=r"whole field reaches S/N .* < target_sn"):
        voronoi_bins(s, n, ok, target_sn=0.9 * np.sqrt(np.nansum((s / n)[ok] ** 2)), covariance=1)
    # just below the whole field's corrected S/N vorbin keeps no bin: named, not an IndexError
    whole = np.nansum(s[ok]) / np.sqrt(np.nansum(n[ok] ** 2)) / (1 + np.log10(ok.sum()))
    with pytest.raises(ValueError, match=r"could not grow any bin .* --covariance 1\)"):
        voronoi_bins(s, n, ok, target_sn=0.99 * whole, covariance=1.0)


def test_kinematics_table_to_losvds(tmp_path):
    from astropy.table import Table

    t = Table(
        {
            "BIN_ID": [1, 0],
            "V": [50.0, -20.0],
            "SIGMA": [180.0, 220.0],
            "H3": [0.0, 0.05],
            "H4": [0.02, 0.0],
        }
    )
    t.write(tmp_path / "kin.fits")
    t.write(tmp_path / "kin.csv", format="ascii.csv")
    a = read_kinematics_table(tmp_path / "kin.fits")
    b = read_kinematics_table(tmp_path / "kin.csv")
    np.testing.assert_array_equal(a["V"], [-20.0, 50.0])
    for k in ("V", "sigma", "h3", "h4"):
        np.testing.assert_array_equal(a[k], b[k])
    dlog = 20.0 / C_KMS
    L, vel = losvd_from_kinematics(a, dlog)
    assert L.shape == (2, vel.size, 1) and (L >= 0).all()
    np.testing.assert_allclose(L.sum(axis=1), 1.0)
    # Bins are whole template pixels in ln(lambda): VelPix (cz) maps to integer shifts.
    shifts = np.log1p(vel / C_KMS) / dlog
    np.testing.assert_allclose(shifts, np.round(shifts), atol=1e-9)
    # Gaussian moments: the LOSVD's mean and dispersion in pPXF's log-velocity.
    g = losvd_from_kinematics(
        {"V": np.array([35.0]), "sigma": np.array([150.0]), "h3": np.zeros(1), "h4": np.zeros(1)},
        dlog,
    )
    u = C_KMS * np.log1p(g[1] / C_KMS)
    w = g[0][0, :, 0]
    # (sampled every 20 km/s and cut at |V| + 5 sigma: the moments hold to 1e-4)
    assert w @ u == pytest.approx(35.0, abs=1e-3)
    assert np.sqrt(w @ (u - 35.0) ** 2) == pytest.approx(150.0, rel=1e-4)
    (tmp_path / "bad.csv").write_text("V,S\n1,2\n")
    with pytest.raises(ValueError, match="SIGMA"):
        read_kinematics_table(tmp_path / "bad.csv")


def test_losvd_files_npz_h5_npy(tmp_path):
    L = np.random.default_rng(0).random((4, 9, 2))
    vel = np.linspace(-400, 400, 9)
    np.savez(tmp_path / "l.npz", losvd=L, vel_pix=vel)
    with h5py.File(tmp_path / "orbits.h5", "w") as f:
        f["LOSVD"] = L
        f["VelPix"] = vel
    np.save(tmp_path / "l.npy", L)
    for path, v in (("l.npz", None), ("orbits.h5", None), ("l.npy", vel)):
        got, gv = read_losvd_file(tmp_path / path, v)
        np.testing.assert_array_equal(got, L)
        np.testing.assert_array_equal(gv, vel)
    with pytest.raises(ValueError, match="vel-pix"):
        read_losvd_file(tmp_path / "l.npy")


def test_line_mask_default_and_edited(tmp_path):
    z = 0.0863
    ln = np.log(np.linspace(4400.0, 6500.0, 4000))
    m = line_mask(ln, z)
    lam = np.exp(ln)
    assert not m[np.argmin(np.abs(lam - 5006.84))]  # [OIII] at rest
    assert not m[np.argmin(np.abs(lam - 5577.34 / (1 + z)))]  # sky line, observed frame
    assert m[np.argmin(np.abs(lam - 5400.0))]
    p = tmp_path / "lines.txt"
    p.write_text("\n".join(f"{n} {w} {h} {fr}" for n, w, h, fr in DEFAULT_LINES[:3]) + "\n")
    np.testing.assert_array_equal(
        line_mask(ln, z, read_line_list(p)), line_mask(ln, z, DEFAULT_LINES[:3])
    )
    p.write_text("Halpha 6562.8 800\n")
    with pytest.raises(ValueError, match=r"lines.txt:1"):
        read_line_list(p)


def test_resolution_matching_needs_the_instrument(small_cube, tmp_path):
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    p, _, _ = small_cube
    with pytest.raises(ValueError, match="INSTRUME"):
        store_from_ifu_cube(p, tmp_path, tmp_path / "s.h5", min_sn=0.0)
    assert not (tmp_path / "s.h5").exists()


def _absorption_spectra(n_bins: int, seed: int, V=None, sigma=None):
    """Spectra of known V, sigma (drawn unless given) from four line-rich templates (pPXF's
    grids: the templates twice as finely sampled, ``vsyst`` 0)."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    velscale = 60.0  # km/s per observed pixel
    ln_t = np.arange(1200) * velscale / 2 / C_KMS  # template pixels, half the observed step
    lines = rng.uniform(0.05, 0.95, (4, 25)) * ln_t[-1]
    depth = rng.uniform(0.1, 0.5, (4, 25))
    templates = 1.0 - np.einsum(
        "pj,pjt->tp", depth, np.exp(-0.5 * ((ln_t - lines[..., None]) * C_KMS / 40.0) ** 2)
    )
    V = rng.uniform(-150, 150, n_bins) if V is None else np.asarray(V, float)
    sigma = rng.uniform(120, 220, n_bins) if sigma is None else np.asarray(sigma, float)
    spectra = np.empty((n_bins, 600))
    for s in range(n_bins):
        shifted = np.interp(ln_t - V[s] / C_KMS, ln_t, templates @ [1.0, 0.6, 0.3, 0.2])
        fine = gaussian_filter1d(shifted, sigma[s] / (velscale / 2))
        spectra[s] = fine.reshape(600, 2).mean(axis=1)
    noise = np.full_like(spectra, 0.01)
    spectra += noise * rng.standard_normal(spectra.shape)
    return spectra, noise, templates, velscale, V, sigma


def test_ppxf_kinematics_bins_in_threads_with_progress():
    """pPXF's per-bin kinematics fitted two bins at a time equal one at a time and a direct
    pPXF call, recover the simulated V and sigma, and report ``progress(done, total)``."""
    ppxf = pytest.importorskip("ppxf.ppxf")
    from nnfit.spectral.kinematics import ppxf_kinematics

    spectra, noise, templates, velscale, V, sigma = _absorption_spectra(5, seed=2)
    mask = np.ones(600, bool)
    mask[:20] = mask[-20:] = False  # the edges, where the shifted templates run out
    kw = {"velscale_ratio": 2, "moments": 2, "degree": 4}
    calls = []
    one = ppxf_kinematics(spectra, noise, templates, velscale, mask, threads=1, **kw)
    two = ppxf_kinematics(
        spectra, noise, templates, velscale, mask, threads=2, **kw,
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert calls == [(s, 5) for s in range(1, 6)]
    for k in ("V", "sigma", "h3", "h4", "chi2"):
        np.testing.assert_array_equal(two[k], one[k])  # the docs promise the same bits
    pp = ppxf.ppxf(
        templates, spectra[3], noise[3], velscale, [0.0, 200.0], goodpixels=np.flatnonzero(mask),
        quiet=True, **kw,
    )  # fmt: skip
    np.testing.assert_allclose([one["V"][3], one["sigma"][3]], pp.sol, rtol=1e-10)
    np.testing.assert_allclose(one["V"], V, atol=10.0)  # km/s (a sixth of a pixel), S/N 100
    np.testing.assert_allclose(one["sigma"], sigma, rtol=0.08)
    assert np.all(one["h3"] == 0) and np.all(one["h4"] == 0)


@pytest.mark.slow
def test_ppxf_kinematics_on_a_dask_cluster_equal_here():
    """The bins fitted on a local Dask cluster's workers: the same numbers, every bin counted
    once in ``progress`` although results come back in completion order."""
    pytest.importorskip("ppxf.ppxf")
    from dask.distributed import Client, LocalCluster

    from nnfit.spectral.kinematics import ppxf_kinematics

    spectra, noise, templates, velscale, _, _ = _absorption_spectra(4, seed=5)
    mask = np.ones(600, bool)
    here = ppxf_kinematics(spectra, noise, templates, velscale, mask, velscale_ratio=2)
    calls = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        Client(c) as client,
    ):
        there = ppxf_kinematics(
            spectra, noise, templates, velscale, mask, velscale_ratio=2, scheduler=client,
            progress=lambda done, total: calls.append((done, total)),
        )  # fmt: skip
    assert calls == [(s, 4) for s in range(1, 5)]
    for k in here:
        np.testing.assert_array_equal(there[k], here[k])


def test_ppxf_kinematics_refuse_a_bin_beyond_vmax_as_it_comes_back():
    """A bin whose LOSVD would reach beyond ``vmax`` (sigma 400 km/s: |V| + 5 sigma about
    2100 km/s against 1500) is refused when it is fitted, naming it; the bins before it were
    fitted, none after it."""
    pytest.importorskip("ppxf.ppxf")
    from nnfit.spectral.kinematics import KinematicsAtBoundError, ppxf_kinematics

    V, sigma = [0.0, 50.0, -80.0, 0.0], [150.0, 150.0, 400.0, 150.0]
    spectra, noise, templates, velscale, _, _ = _absorption_spectra(4, 1, V=V, sigma=sigma)
    mask = np.ones(600, bool)
    mask[:20] = mask[-20:] = False
    done = []
    with pytest.raises(KinematicsAtBoundError, match=r"bin 2: .*beyond the 1500 km/s") as err:
        ppxf_kinematics(
            spectra, noise, templates, velscale, mask, velscale_ratio=2, vmax=1500.0,
            threads=1, progress=lambda d, t: done.append(d),
        )  # fmt: skip
    assert err.value.bin_id == 2 and done == [1, 2]
    assert isinstance(err.value, ValueError)  # what the CLI reports as bad input


def test_bin_map_with_a_bin_of_only_nan_spaxels_is_refused_before_any_fit(small_cube, tmp_path):
    """pPXF fails on such a bin (moments 4) or returns its start as kinematics (moments 2)."""
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    p, _, _ = small_cube
    bmap = np.zeros((6, 7), dtype=np.int64)
    bmap[0, 0] = 1  # the all-NaN spaxel alone
    bmap[5, 6] = -1
    out = tmp_path / "s.h5"
    with pytest.raises(ValueError, match=r"--bin-map\): bin\(s\) 1 have no pixel .* -1"):
        store_from_ifu_cube(
            p, tmp_path / "no-templates", out, bin_map=bmap, kinematics="ppxf", fwhm_gal=2.5
        )
    assert not out.exists()
    bmap[0, 1] = 1  # with one spaxel that has data the bin is a bin: refused later, elsewhere
    with pytest.raises(ValueError, match="--fwhm"):
        store_from_ifu_cube(p, tmp_path / "no-templates", out, bin_map=bmap, kinematics="ppxf")


def test_kinematics_beyond_the_template_margin_name_the_margin_option(tmp_path, monkeypatch):
    """A sigma ~ 400 km/s galaxy reaches past the default 2000 km/s: the advice names
    margin_kms / --template-margin with a value that covers the fit (the old advice, redshift
    and S/N, could not help)."""
    import nnfit.spectral.kinematics as kinematics
    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)

    def broad(*args, vmax, **kwargs):
        raise kinematics.KinematicsAtBoundError(0, -84.0, 405.0, vmax)

    monkeypatch.setattr(kinematics, "ppxf_kinematics", broad)
    out = tmp_path / "s.h5"
    kw = dict(fwhm_gal=None, lines=[], min_sn=0.0, kinematics="ppxf")
    with pytest.raises(ValueError, match="reaching 2109 km/s") as err:
        store_from_ifu_cube(info["cube"], info["templates"], out, **kw)
    need = float(str(err.value).split("--template-margin ")[1].split(")")[0])
    assert need >= 2109 and "margin_kms=" in str(err.value)
    with pytest.raises(ValueError, match="must be > 0 km/s"):
        store_from_ifu_cube(info["cube"], info["templates"], out, margin_kms=0.0, **kw)
    assert not out.exists()
