"""The demo's FITS path: a simulated cube written as FITS + pPXF npz + LOSVD histograms."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import h5py
import numpy as np
import pytest

from nnfit.spectral.simulate_ifu import write_ifu_demo

fits = pytest.importorskip("astropy.io.fits")


@pytest.mark.slow
def test_demo_files_through_init_global_fit_and_maps(run_cli, tmp_path):
    from astropy.wcs import WCS

    info = write_ifu_demo(tmp_path / "demo", n_side=5, n_components=2, seed=4)
    store = tmp_path / "store.h5"
    run_cli(
        "cube",
        "init",
        info["cube"],
        "--templates",
        info["templates"],
        "--losvd",
        info["losvd"],
        "--fwhm",
        "none",
        "--no-line-mask",
        "--min-sn",
        "0",
        "--out",
        store,
        check=True,
    )
    run_cli("cube", "fit", store, check=True)
    out = run_cli("cube", "maps", store, "--out", tmp_path / "maps", check=True)
    assert "global fit, 25 bins" in out.stdout
    with fits.open(tmp_path / "maps" / "maps.fits") as h:
        chi = h["CHI2DOF"].data
        mf = h["MASSFRAC"].data
        wcs = WCS(h["LGAGE_L"].header)
        age = h["LGAGE_L"].data
    # The simulated noise is the stored noise: chi^2/dof of the global optimum is about 1.
    assert 0.8 < np.median(chi) < 1.2
    np.testing.assert_allclose(mf.sum(axis=0), 1.0, rtol=1e-6)
    ra, dec = wcs.pixel_to_world_values(2.0, 2.0)  # the cube's reference pixel (3, 3) 1-based
    assert (ra, dec) == pytest.approx((150.0, 2.0), abs=1e-9)
    # Light-weighted mean age per spaxel against the truth (templates in the band's light).
    t = np.load(info["truth"])
    tpl = np.load(info["templates"])
    lam = tpl["lam"]
    band = (lam >= 5070) & (lam <= 5950)
    band_mean = tpl["templates"][band].mean(axis=0).ravel()  # (n_ages * n_metals,)
    lg = np.repeat(np.log10(t["ages"]) + 9, t["metals"].size)
    light = np.einsum("cp,p,sc->sp", t["x_true"], band_mean, t["amplitude"])
    truth = (light @ lg) / light.sum(axis=1)
    got = age.ravel()  # spaxel s = y * 5 + x
    assert np.abs(got - truth).max() < 0.1


def _demo_store(tmp_path, info=None, cube=None):
    """A store of a demo cube (default: the 3 x 3 one, one component, or ``cube`` made from
    ``info``'s) with the demo's LOSVDs, every spaxel kept."""
    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.kinematics import read_losvd_file

    if info is None:
        info = write_ifu_demo(tmp_path / "demo", n_side=3, n_components=1, seed=5)
    store = tmp_path / "s.h5"
    store_from_ifu_cube(
        info["cube"] if cube is None else cube,
        info["templates"],
        store,
        losvd=read_losvd_file(info["losvd"]),
        fwhm_gal=None,
        lines=[],
        min_sn=0.0,
    )
    return store


@pytest.mark.slow
def test_global_fit_with_polynomials_maps_rebuild_the_continuum(tmp_path):
    """maps' chi^2 of a global fit with additive polynomials equals the fit's own chi^2."""
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.maps import population_maps

    store = _demo_store(tmp_path)
    _, stats = fit_cube(store, degree=3)
    res = population_maps(store)  # the degree is read from the fit's record on /X_global
    assert res["source"] == "global"
    assert res["settings"] == {
        "fit": "global",
        "degree": 3,
        "mdegree": 0,
        "regul": 0.0,
        "regul_order": 2,
    }
    assert res["chi2"].sum() == pytest.approx(stats["chi2"], rel=1e-8)
    np.testing.assert_allclose(res["mass_fraction"], 1.0)
    assert population_maps(store, degree=3)["chi2"].sum() == pytest.approx(stats["chi2"])
    with pytest.raises(ValueError, match=r"--degree 2 contradicts the fit's degree 3 .*X_global"):
        population_maps(store, degree=2)
    # A Kaczmarz run's /X_global (its fingerprint in /Fit/state) leaves fit_cube's record
    # stale: ignored, the flags (default none) decide.
    import h5py

    with h5py.File(store, "a") as f:
        f.create_dataset("Fit/state/X_global_fp", data=np.array([b"kaczmarz-run"], "S64"))
    stale = population_maps(store)
    assert stale["settings"]["regul"] == "unrecorded" and stale["settings"]["degree"] == -1
    assert population_maps(store, degree=2)["settings"]["degree"] == 2


@pytest.mark.slow
def test_maps_and_the_model_cube_follow_the_fit_written_last(tmp_path, capsys):
    """A per-bin fit, then a global fit with polynomials: maps show the global one (the newer),
    and reconstruct's /ModelCube is the model that fit compared with the data (its chi^2)."""
    import h5py

    from nnfit.cli import main
    from nnfit.spectral.bin_fit import fit_bins
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.maps import population_maps
    from nnfit.spectral.store import load_problem

    store = _demo_store(tmp_path)
    fit_bins(store)
    _, stats = fit_cube(store, degree=2)
    assert population_maps(store)["source"] == "global"
    assert population_maps(store, fit="per-bin")["source"] == "bins"
    fit_bins(store)
    assert population_maps(store)["source"] == "bins"
    assert main(["spectral", "reconstruct", str(store)]) == 0
    assert "with the fit's continuum (degree 2, mdegree 0)" in capsys.readouterr().out
    prob = load_problem(store)
    with h5py.File(store, "r") as f:
        model = f["ModelCube"][()]
        fitted = f["BinMask"][()] & prob.mask[None, :]
    chi2 = (np.where(fitted, (prob.datacube - model) / prob.noise, 0.0) ** 2).sum()
    assert chi2 == pytest.approx(stats["chi2"], rel=1e-9)


@pytest.mark.slow
def test_maps_read_per_bin_settings_and_refuse_contradicting_flags(run_cli, tmp_path):
    """--per-bin --degree/--regul are recorded on /BinFit, in maps.fits' header and table."""
    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    store = tmp_path / "s.h5"
    run_cli(
        "cube", "init", info["cube"], "--templates", info["templates"], "--losvd",
        info["losvd"], "--fwhm", "none", "--no-line-mask", "--min-sn", "0", "--out", store,
        check=True,
    )  # fmt: skip
    run_cli("cube", "fit", store, "--per-bin", "--degree", "2", "--regul", "5", check=True)
    out = run_cli("cube", "maps", store, "--out", tmp_path / "m", check=True)
    assert "degree 2, mdegree 0, regul 5.0" in out.stdout
    with fits.open(tmp_path / "m" / "maps.fits") as h:
        head = h[0].header
        assert (head["FITMODE"], head["DEGREE"], head["REGUL"]) == ("per-bin", 2, "5.0")
        np.testing.assert_array_equal(h["BINS"].data["REGUL"], 5.0)
    bad = run_cli("cube", "maps", store, "--mdegree", "4", "--out", tmp_path / "m2")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "--mdegree 4 contradicts the fit's mdegree 0" in bad.stderr
    assert not (tmp_path / "m2").exists()
    bad = run_cli("cube", "fit", store, "--regul", "auto")
    assert bad.returncode == 2 and "--regul auto" in bad.stderr and "--per-bin" in bad.stderr


@pytest.mark.slow
def test_map_figures_on_sky_axes_for_one_component_and_without_wcs(tmp_path):
    """C = 1: PNGs on RA/Dec axes from the cube's WCS (no warnings), the FITS WCS reads back; a store
    without a celestial header still gets its figures, on spaxel axes."""
    import json

    import h5py
    from astropy.wcs import WCS

    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.maps import write_maps

    info = write_ifu_demo(tmp_path / "demo", n_side=3, n_components=1, seed=8)
    store = _demo_store(tmp_path, info)
    fit_cube(store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = write_maps(store, tmp_path / "sky")
    # tick spacings that are whole multiples of the last digit shown: astropy warns otherwise
    # (ResourceWarnings of other tests' objects collected meanwhile are not this figure's)
    mine = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
    assert not mine, mine
    assert res["sky_axes"]
    for png in ("maps.png", "weights_grid.png", "mass_fractions.png", "residuals.png"):
        assert (tmp_path / "sky" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cube_wcs = WCS(fits.getheader(info["cube"], "DATA")).celestial
    with fits.open(tmp_path / "sky" / "maps.fits") as h:
        for name in ("LGAGE_L", "CHI2DOF", "BINMAP"):
            w = WCS(h[name].header)
            xy = np.array([[0.0, 0.0], [2.0, 1.0]])
            np.testing.assert_allclose(w.all_pix2world(xy, 0), cube_wcs.all_pix2world(xy, 0))
        assert h["MASSFRAC"].data.shape == (1, 3, 3)
    with h5py.File(store, "a") as f:
        ifu = json.loads(f.attrs["ifu_json"])
        ifu.pop("celestial_header")
        f.attrs["ifu_json"] = json.dumps(ifu)
    res = write_maps(store, tmp_path / "pix")
    assert not res["sky_axes"]
    assert (tmp_path / "pix" / "maps.png").stat().st_size > 10_000


@pytest.mark.slow
def test_per_bin_dof_counts_only_the_pixels_the_bin_has(tmp_path):
    """A bin missing a stretch of its spectrum (NaN in every spaxel, /BinMask False there):
    its dof and chi^2/dof count only its own fitted pixels, as maps' global branch does."""
    from nnfit.spectral.bin_fit import fit_bins
    from nnfit.spectral.maps import population_maps

    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    with fits.open(info["cube"]) as h:
        hdul = fits.HDUList([hdu.copy() for hdu in h])
    L = hdul["DATA"].data.shape[0]
    hdul["DATA"].data[L // 3 : L // 2, 0, 1] = np.nan  # spaxel (x 1, y 0) = bin 1
    cube = tmp_path / "gap.fits"
    hdul.writeto(cube)
    store = _demo_store(tmp_path, info, cube)
    degree = 2
    res = fit_bins(store, degree=degree)
    with h5py.File(store, "r") as f:
        good = f["Mask"][()] & f["BinMask"][()]
        y, noise = f["DataCube"][()], f["Noise"][()]
        model = f["BinFit/model"][()].astype(np.float64)
    n_good = good.sum(axis=1)
    assert n_good[1] < n_good[0] - L // 10  # the gap is the bin's own, not the store's mask
    nnz = np.count_nonzero(res["weights"].reshape(res["weights"].shape[0], -1), axis=1)
    np.testing.assert_array_equal(res["dof"], n_good - nnz - (degree + 1))
    chi2 = (np.where(good, (y - model) / noise, 0.0) ** 2).sum(axis=1)
    np.testing.assert_allclose(res["chi2"], chi2, rtol=1e-4)  # model is stored as float32
    np.testing.assert_allclose(population_maps(store)["chi2_dof"], chi2 / res["dof"], rtol=1e-4)


@pytest.mark.slow
def test_init_excludes_dq_flagged_pixels_and_says_how_many(run_cli, tmp_path):
    """A DQ extension's flagged pixels give the store a NaN-variance cube would; --dq-ext none
    reads them as good."""
    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    with fits.open(info["cube"]) as h:
        hdul = fits.HDUList([hdu.copy() for hdu in h])
    var = hdul["STAT"].data
    flagged = np.random.default_rng(1).random(var.shape) < 0.02
    n = int(flagged.sum())
    dq_cube, nan_cube = tmp_path / "dq.fits", tmp_path / "nan.fits"
    fits.HDUList([*hdul, fits.ImageHDU(flagged.astype(np.uint8), name="DQ")]).writeto(dq_cube)
    hdul["STAT"].data = np.where(flagged, np.nan, var).astype(np.float32)
    hdul.writeto(nan_cube)
    common = ["--templates", info["templates"], "--losvd", info["losvd"], "--fwhm", "none"]
    common += ["--no-line-mask", "--min-sn", "0"]
    stores = {}
    for name, cube, extra in (
        ("dq", dq_cube, []),
        ("nan", nan_cube, []),
        ("off", dq_cube, ["--dq-ext", "none"]),
    ):
        stores[name] = tmp_path / f"{name}.h5"
        out = run_cli("cube", "init", cube, *common, *extra, "--out", stores[name], check=True)
        assert (f"extension DQ flags {n} pixels of the selection bad" in out.stdout) == (
            name == "dq"
        )
    with h5py.File(stores["dq"]) as a, h5py.File(stores["nan"]) as b, h5py.File(stores["off"]) as c:
        for k in ("DataCube", "Noise", "BinMask"):
            np.testing.assert_array_equal(a[k][()], b[k][()])
        assert c["BinMask"][()].all() and not a["BinMask"][()].all()
    bad = run_cli("cube", "init", dq_cube, *common, "--dq-ext", "QUAL", "--out", tmp_path / "x.h5")
    assert bad.returncode == 2 and "--dq-ext none" in bad.stderr


@pytest.mark.slow
def test_medium_obs_and_template_margin_reach_a_store_from_a_fits_cube(run_cli, tmp_path):
    """--medium-obs stands in for a missing CTYPE3 (it was ignored and the error named a
    --medium that does not exist); --template-margin widens the template grid."""
    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    with fits.open(info["cube"]) as h:
        hdul = fits.HDUList([hdu.copy() for hdu in h])
    for ext in ("DATA", "STAT"):
        del hdul[ext].header["CTYPE3"]
    bare = tmp_path / "noctype.fits"
    hdul.writeto(bare)
    common = ["--templates", info["templates"], "--losvd", info["losvd"], "--fwhm", "none"]
    common += ["--no-line-mask", "--min-sn", "0"]
    s = {k: tmp_path / f"{k}.h5" for k in ("ref", "air", "wide")}
    bad = run_cli("cube", "init", bare, *common, "--out", tmp_path / "x.h5")
    assert bad.returncode == 2 and "(CLI --medium-obs)" in bad.stderr
    run_cli("cube", "init", bare, *common, "--medium-obs", "air", "--out", s["air"], check=True)
    run_cli("cube", "init", info["cube"], *common, "--out", s["ref"], check=True)
    bad = run_cli(
        "cube", "init", info["cube"], *common, "--medium-obs", "vacuum", "--out", s["wide"]
    )
    assert bad.returncode == 2 and "says air wavelengths but medium='vacuum'" in bad.stderr
    lo, hi = info["lam_range"]
    wide = ["--template-margin", "4000", "--lam-range", f"{lo + 60}", f"{hi - 60}"]
    run_cli("cube", "init", info["cube"], *common, *wide, "--out", s["wide"], check=True)

    def reach_kms(f):  # template coverage beyond the data, the narrower side
        tem, obs = f["TemPix"][()], f["ObsPix"][()]
        return 299792.458 * min(obs[0] - tem[0], tem[-1] - obs[-1])

    with h5py.File(s["ref"]) as r, h5py.File(s["air"]) as a, h5py.File(s["wide"]) as w:
        assert json.loads(a.attrs["ifu_json"])["medium"] == "air"
        for k in ("DataCube", "Noise", "TemPix", "ObsPix"):
            np.testing.assert_array_equal(a[k][()], r[k][()])
        assert reach_kms(r) < 4000 <= reach_kms(w)


def test_map_figures_name_their_axes_with_typeset_units(tmp_path, saved_figures):
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.maps import write_maps

    info = write_ifu_demo(tmp_path / "demo", n_side=3, n_components=2, seed=8)
    store = _demo_store(tmp_path, info)
    fit_cube(store)
    write_maps(store, tmp_path / "maps")
    names = ["maps", "weights_grid", "mass_fractions", "residuals"]
    figs = dict(zip(names, saved_figures, strict=True))
    spectra = [ax for ax in figs["residuals"].axes if ax.get_title()]
    assert len(spectra) == 2
    for ax in spectra:  # the cube's BUNIT 10**(-20)*erg/s/cm**2/Angstrom, typeset
        assert ax.get_ylabel().startswith(r"flux [$\mathrm{1 \times 10^{-20}\,erg\,")
    assert figs["residuals"].axes[-1].get_xlabel() == "wavelength (rest frame, air) [Å]"
    bars = [ax.get_ylabel() for ax in figs["mass_fractions"].axes if not ax.get_title()]
    assert bars == ["mass fraction", "mass fraction"]


def test_demo_cube_variance_unit_is_the_flux_unit_squared(tmp_path):
    import astropy.units as u

    info = write_ifu_demo(tmp_path, n_side=2, n_components=1)
    with fits.open(info["cube"]) as h:
        flux = u.Unit(h["DATA"].header["BUNIT"], format="fits")
        var = u.Unit(h["STAT"].header["BUNIT"], format="fits")
    assert var == flux**2


def test_demo_cube_checksums_verify(tmp_path):
    info = write_ifu_demo(tmp_path, n_side=2, n_components=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum that does not verify warns
        with fits.open(info["cube"], checksum=True) as h:
            assert all("CHECKSUM" in x.header and "DATASUM" in x.header for x in h)


_CUT = {"n": 4, "C": 2, "x": (1, 4), "y": (2, 4)}


@pytest.fixture(scope="module")
def cut_maps(tmp_path_factory):
    """maps.fits of a demo cube cut with x_range/y_range (``_CUT``), the cube, and maps.fits of
    the same store without its celestial WCS."""
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.kinematics import read_losvd_file
    from nnfit.spectral.maps import write_maps

    tmp = tmp_path_factory.mktemp("cut_maps")
    n, (x0, x1), (y0, y1) = _CUT["n"], _CUT["x"], _CUT["y"]
    info = write_ifu_demo(tmp / "demo", n_side=n, n_components=_CUT["C"], seed=8)
    losvd, vel = read_losvd_file(info["losvd"])
    each = losvd.shape[1:]
    cut = losvd.reshape(n, n, *each)[y0:y1, x0:x1].reshape(-1, *each)  # spaxel s = y n + x
    store = tmp / "s.h5"
    store_from_ifu_cube(
        info["cube"], info["templates"], store, losvd=(cut, vel), fwhm_gal=None, lines=[],
        min_sn=0.0, x_range=(x0, x1), y_range=(y0, y1),
    )  # fmt: skip
    fit_cube(store)
    write_maps(store, tmp / "maps")
    bare = tmp / "bare.h5"  # the same without a celestial WCS
    shutil.copy(store, bare)
    with h5py.File(bare, "a") as f:
        ifu = json.loads(f.attrs["ifu_json"])
        ifu.pop("celestial_header")
        f.attrs["ifu_json"] = json.dumps(ifu)
    write_maps(bare, tmp / "bare")
    return tmp / "maps" / "maps.fits", info["cube"], tmp / "bare" / "maps.fits"


@pytest.mark.slow
def test_maps_fits_checksums_verify_without_warnings(cut_maps):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # VerifyWarning, a checksum that does not verify
        with fits.open(cut_maps[0], checksum=True) as h:
            h.verify("exception")
            assert all("CHECKSUM" in x.header and "DATASUM" in x.header for x in h)


@pytest.mark.slow
def test_maps_fits_images_and_table_columns_carry_fits_units(cut_maps):
    with fits.open(cut_maps[0]) as h:
        units = {x.name: x.header.get("BUNIT") for x in h[1:] if x.is_image}
        tunits = {c.name: c.unit for t in ("BINS", "AGES", "METALS") for c in h[t].columns}
    assert units == {
        "CHI2DOF": "", "LGAGE_L": "log(yr)", "LGAGE_M": "log(yr)", "MH_L": "dex",
        "MH_M": "dex", "BINMAP": None, "MASSFRAC": "", "LIGHTGRID": "",
    }  # fmt: skip
    assert tunits == {
        "BIN_ID": None, "CHI2DOF": None, "LGAGE_L": "log(yr)", "LGAGE_M": "log(yr)",
        "MH_L": "dex", "MH_M": "dex", "MASSFRAC0": None, "MASSFRAC1": None,
        "AGE_GYR": "Gyr", "MH": "dex",
    }  # fmt: skip


@pytest.mark.slow
def test_maps_fits_wcs_describes_every_axis_and_puts_the_cut_on_the_cube_sky(cut_maps):
    """Every image's WCS has as many axes as the image; the third of MASSFRAC and LIGHTGRID is
    the component; pixel (0, 0) of a map is the cut's first spaxel on the cube's sky."""
    from astropy.wcs import WCS

    path, cube, _ = cut_maps
    (x0, x1), (y0, y1) = _CUT["x"], _CUT["y"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FITSFixedWarning: a header astropy had to repair
        with fits.open(path) as h:
            for x in h[1:]:
                if x.is_image:
                    assert WCS(x.header).naxis == x.header["NAXIS"], x.name
            mf = WCS(h["MASSFRAC"].header)
            grid = WCS(h["LIGHTGRID"].header)
            shape = h["MASSFRAC"].data.shape
    assert shape == (_CUT["C"], y1 - y0, x1 - x0)
    assert mf.wcs.ctype[2] == "COMP"
    assert list(grid.wcs.ctype) == ["AGEINDEX", "MHINDEX", "COMP"]
    pix = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    world = mf.all_pix2world(pix, 0)
    np.testing.assert_allclose(world[:, 2], [0.0, 1.0])  # the component index
    sky = WCS(fits.getheader(cube, "DATA")).celestial.all_pix2world(pix[:, :2] + [x0, y0], 0)
    np.testing.assert_allclose(world[:, :2], sky, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_maps_fits_wcs_axes_have_all_their_keywords_with_and_without_a_sky_wcs(cut_maps):
    """fitsverify warns about a WCS axis (up to WCSAXES) without CTYPE, CRPIX or CRVAL."""
    for path in (cut_maps[0], cut_maps[2]):
        with fits.open(path) as h:
            for x in h[1:]:
                n = x.header.get("WCSAXES", 0)
                for key in ("CTYPE", "CRPIX", "CRVAL"):
                    missing = [i for i in range(1, n + 1) if f"{key}{i}" not in x.header]
                    assert not missing, (path.parent.name, x.name, key, missing)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="needs HEASARC's fitsverify")
def test_fitsverify_finds_no_warning_or_error_in_maps_fits(cut_maps):
    for path in (cut_maps[0], cut_maps[2]):
        out = subprocess.run(["fitsverify", path], capture_output=True, text=True).stdout
        assert "Verification found 0 warning(s) and 0 error(s)" in out, out
