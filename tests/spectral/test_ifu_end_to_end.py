"""From the real MUSE minicube and real E-MILES templates to maps, against pPXF.

* init -> fit -> maps, one command each, on the real cube with kinematics from pPXF; every
  bin's chi^2/dof equals pPXF's with the same templates, kinematics and (no) polynomials;
* a synthetic cube made of real templates on the real MUSE grid (``_muse_synth.py``):
  noise-free, the light-weighted mean lg age and [M/H] of every bin are recovered within
  0.005 dex (the pipeline is exact). With noise drawn from the real variance (Voronoi bins at
  S/N 60) the worst bin misses the issue's 0.05 dex: unregularised 0.051 dex in lg age and
  0.070 in [M/H] (pPXF 0.048, 0.075); with regul = 3, decided beforehand on other simulations
  (bench/ifu_regul_rule.py), 0.045 and 0.075 (pPXF with the same regul 0.044, 0.076). The
  tests assert nnfit is as close as pPXF; the 0.05 dex target at S/N 60 is a strict xfail.
  That miss is the data's, not the solver's (bench/ifu_information_limit.py): over 100 noise
  draws on these bins the fit's worst bin has a median of 0.080 / 0.069 dex (bias and spread
  of the same size, 0.02-0.03 per bin), while any unbiased fit over the 39-template grid has
  0.21-0.31 / 0.09-0.13 dex per bin (Cramer-Rao) and only a fit knowing the two SSPs gets
  0.003. At S/N 200, derived from independent draws before the test ran, the target is met.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

mpdaf = pytest.importorskip("mpdaf", reason="the real MUSE cube ships with mpdaf (test extra)")
ppxf_pkg = pytest.importorskip("ppxf", reason="pPXF is the reference (test extra ppxf==8.2.6)")
fits = pytest.importorskip("astropy.io.fits")

from ._muse_synth import (  # noqa: E402
    OLD,
    SIGMA_KMS,
    SIGNAL_SCALE,
    TEST_SEED,
    YOUNG,
    old_young,
    synthetic_store,
)

MINICUBE = Path(mpdaf.__file__).parent / "data" / "sdetect" / "minicube.fits"
MILES = Path(ppxf_pkg.__file__).parent / "miles_models"
PATTERN = "Eun1.30Z[mp]0.[024]*.fits"  # [M/H] = -0.40, 0.00, +0.22; with ages 1-16 Gyr: 39
Z = 0.0863  # Abell 478's brightest cluster galaxy


def _ppxf_chi2(store: Path, degree: int, mdegree: int) -> tuple[np.ndarray, np.ndarray]:
    """chi^2 of every bin: ours (/BinFit) and pPXF's with the store's templates, noise, mask
    and kinematics held fixed, and the same polynomials (chi^2 itself: the two count degrees
    of freedom differently, pPXF subtracting only its non-linear parameters)."""
    from ppxf.ppxf import ppxf

    c = 299792.458
    with h5py.File(store, "r") as f:
        T = f["Templates"][()].astype(np.float64).T
        y, noise = f["DataCube"][()], f["Noise"][()]
        good = f["Mask"][()] & f["BinMask"][()]
        tem, obs = f["TemPix"][()], f["ObsPix"][()]
        V, sig = f["Kinematics/V"][()], f["Kinematics/sigma"][()]
        ours = f["BinFit/chi2"][()]
        ifu = json.loads(f.attrs["ifu_json"])
    ref = np.zeros(y.shape[0])
    for s in range(y.shape[0]):
        pp = ppxf(
            T,
            y[s],
            noise[s],
            ifu["velscale_kms"],
            [V[s], sig[s]],
            moments=-2,
            degree=degree,
            mdegree=mdegree,
            goodpixels=np.flatnonzero(good[s]),
            vsyst=c * (tem[0] - obs[0]),
            velscale_ratio=ifu["velscale_ratio"],
            quiet=True,
        )
        ref[s] = pp.chi2 * pp.dof
    return ours, ref


@pytest.mark.slow
def test_minicube_init_fit_maps_against_ppxf(run_cli, tmp_path):
    from astropy.wcs import WCS

    store = tmp_path / "store.h5"
    out = run_cli(
        "cube",
        "init",
        MINICUBE,
        "--templates",
        MILES,
        "--template-pattern",
        PATTERN,
        "--age-range",
        "1",
        "16",
        "--redshift",
        Z,
        "--target-sn",
        "15",
        "--lam-range",
        "4800",
        "7000",
        "--kinematics",
        "ppxf",
        "--no-progress",
        "--out",
        store,
        check=True,
    )
    assert "bins from" in out.stdout and "kinematics from ppxf" in out.stdout
    assert "pPXF kinematics" not in out.stderr  # --no-progress
    fit = run_cli("cube", "fit", store, "--per-bin", "--degree", "4", check=True)
    # Real data: chi2/dof grows with the bins' size (pPXF's chi2 below is the same), the
    # signature of noise underestimated in sums of spaxels; the fit says so.
    assert "chi2/dof rises with the bins' size" in fit.stderr
    run_cli("cube", "maps", store, "--out", tmp_path / "maps", check=True)

    ours, ref = _ppxf_chi2(store, degree=4, mdegree=0)
    assert ours.size >= 10
    np.testing.assert_allclose(ours, ref, rtol=0.05)  # measured: within 0.03%

    # The maps carry the cube's celestial WCS: same sky position for the same spaxel.
    with fits.open(tmp_path / "maps" / "maps.fits") as h:
        names = {x.name for x in h}
        assert {
            "CHI2DOF",
            "LGAGE_L",
            "LGAGE_M",
            "MH_L",
            "MH_M",
            "BINMAP",
            "MASSFRAC",
            "LIGHTGRID",
            "BINS",
        } <= names
        w = WCS(h["LGAGE_L"].header)
        chi_img = h["CHI2DOF"].data
        binmap = h["BINMAP"].data
        table = h["BINS"].data
    with h5py.File(store, "r") as f:
        chi2_dof = f["BinFit/chi2"][()] / f["BinFit/dof"][()]
    w0 = WCS(fits.getheader(MINICUBE, "DATA")).celestial
    xy = np.array([[0, 0], [12, 30], [39, 39]], dtype=float)
    np.testing.assert_allclose(w.all_pix2world(xy, 0), w0.all_pix2world(xy, 0), atol=1e-10)
    used = binmap >= 0
    np.testing.assert_allclose(chi_img[used], table["CHI2DOF"][binmap[used]], rtol=1e-6)
    np.testing.assert_allclose(table["CHI2DOF"], chi2_dof, rtol=1e-6)
    for png in ("maps.png", "weights_grid.png", "mass_fractions.png", "residuals.png"):
        assert (tmp_path / "maps" / png).stat().st_size > 20_000


@pytest.mark.slow
def test_minicube_multiplicative_polynomials_against_ppxf(tmp_path):
    """mdegree=8 (the alternating fit) on the bins of the galaxy's centre, against pPXF."""
    from nnfit.spectral.bin_fit import fit_bins
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    store = tmp_path / "centre.h5"
    info = store_from_ifu_cube(
        MINICUBE,
        MILES,
        store,
        redshift=Z,
        target_sn=14,
        lam_range=(4800, 7000),
        x_range=(15, 25),
        y_range=(14, 24),
        template_pattern=PATTERN,
        age_range=(1, 16),
    )
    assert 2 <= info["S"] <= 4
    fit_bins(store, mdegree=8)
    ours, ref = _ppxf_chi2(store, degree=-1, mdegree=8)
    np.testing.assert_allclose(ours, ref, rtol=0.05)  # measured: within 0.12% on all 18 bins


# ---------------------------------------------------------------------------- synthetic cube
REGUL = 3.0  # decided on other simulations: bench/ifu_regul_rule.py (docs/spectral/ifu.rst)


def _recovery(tmp_path, noisy, regul=0.0, target_sn=60.0):
    """Fit the test's synthetic cube; at ``target_sn`` above 60 the galaxy is brighter by the
    same factor (the variance stays the real one), so the bins stay about the same."""
    from nnfit.spectral.bin_fit import fit_bins
    from nnfit.spectral.maps import population_maps

    sim = synthetic_store(
        tmp_path,
        [OLD, YOUNG],
        old_young,
        seed=TEST_SEED,
        noisy=noisy,
        target_sn=target_sn,
        signal_scale=SIGNAL_SCALE * target_sn / 60.0,
    )
    fit_bins(sim["store"], regul=regul)
    res = population_maps(sim["store"])
    assert sim["S"] >= 10
    err_age = res["lg_age_light"] - sim["lg_age"]
    err_mh = res["metal_light"] - sim["metal"]
    print(
        f"S/N {target_sn:g}, S={sim['S']} bins, regul {regul}: lg age error max "
        f"{np.abs(err_age).max():.3f} dex, [M/H] error max {np.abs(err_mh).max():.3f} dex"
    )
    return sim, res, err_age, err_mh


@pytest.fixture(scope="module")
def recovery(tmp_path_factory):
    """``_recovery`` once per case for the whole module (the pPXF comparison and the 0.05 dex
    check of the same case share one fit)."""
    done: dict[tuple, tuple] = {}

    def get(noisy, regul=0.0, target_sn=60.0):
        key = (noisy, regul, target_sn)
        if key not in done:
            done[key] = _recovery(tmp_path_factory.mktemp("synth"), noisy, regul, target_sn)
        return done[key]

    return get


def _ppxf_means(store, res, regul=0.0):
    """pPXF's light-weighted <lg age> and <[M/H]> per bin (same templates, kinematics)."""
    from ppxf.ppxf import ppxf

    with h5py.File(store, "r") as f:
        T = f["Templates"][()].astype(np.float64).T
        yb, nb, fs = f["DataCube"][()], f["Noise"][()], f["FluxScale"][()]
        good = f["Mask"][()] & f["BinMask"][()]
        vsyst = 299792.458 * (f["TemPix"][0] - f["ObsPix"][0])
        ifu = json.loads(f.attrs["ifu_json"])
    ages = np.repeat(np.log10(res["ages"]) + 9, res["metals"].size)
    mets = np.tile(res["metals"], res["ages"].size)
    S = yb.shape[0]
    ref_age, ref_mh = np.zeros(S), np.zeros(S)
    for b in range(S):
        pp = ppxf(
            T,
            yb[b] / fs[b],  # nnfit's weight scale, so that the same regul means the same
            nb[b] / fs[b],
            ifu["velscale_kms"],
            [0.0, SIGMA_KMS],
            moments=-2,
            degree=-1,
            mdegree=0,
            goodpixels=np.flatnonzero(good[b]),
            vsyst=vsyst,
            velscale_ratio=ifu["velscale_ratio"],
            regul=regul,
            reg_dim=(res["ages"].size, res["metals"].size),
            quiet=True,
        )
        w = pp.weights
        ref_age[b], ref_mh[b] = w @ ages / w.sum(), w @ mets / w.sum()
    return ref_age, ref_mh


@pytest.mark.slow
def test_synthetic_cube_noise_free_recovers_means_exactly(recovery):
    _, _, err_age, err_mh = recovery(noisy=False)
    assert np.abs(err_age).max() < 0.005 and np.abs(err_mh).max() < 0.005


@pytest.mark.slow
@pytest.mark.parametrize("regul", [0.0, REGUL])
def test_synthetic_cube_as_close_as_ppxf(recovery, regul):
    """Real variance, no regularisation and regul = REGUL: as close to the truth as pPXF with
    the same regul and reg_dim (the two share the objective; per bin their means differ by up to
    0.013 dex through the LOSVD convolution, pPXF's analytic Fourier kernel against nnfit's
    exact one; the same model gives the same optimum: test_ifu_regul.py)."""
    sim, res, err_age, err_mh = recovery(noisy=True, regul=regul)
    ref_age, ref_mh = _ppxf_means(sim["store"], res, regul=regul)
    print(
        f"pPXF regul {regul}: lg age error max {np.abs(ref_age - sim['lg_age']).max():.3f} "
        f"dex, [M/H] {np.abs(ref_mh - sim['metal']).max():.3f} dex"
    )
    assert np.abs(err_age).max() <= np.abs(ref_age - sim["lg_age"]).max() + 0.01
    assert np.abs(err_mh).max() <= np.abs(ref_mh - sim["metal"]).max() + 0.01


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the issue's 0.05 dex target at S/N 60 is not met: with REGUL = 3 (decided on other "
    "simulations) this case gives 0.045 dex in lg age but 0.075 in [M/H] (pPXF with the same "
    "regul: 0.044 / 0.076); on the 8 simulated cubes of bench/ifu_regul_rule.py no regul "
    "reached 0.05 in both; over noise draws the worst bin's median is 0.080 / 0.069 and the "
    "full-grid Cramer-Rao bound 0.53 / 0.22 (bench/ifu_information_limit.py)",
)
def test_synthetic_cube_regularised_within_0p05_dex(recovery):
    _, _, err_age, err_mh = recovery(noisy=True, regul=REGUL)
    assert np.abs(err_age).max() < 0.05 and np.abs(err_mh).max() < 0.05


# The S/N at which the data carry the target for this fit, derived before this test was run
# (bench/ifu_information_limit.py, docs/spectral/ifu.rst "The S/N the target needs"): on this
# cube's bins with independent noise draws of the real variance, the regul = 3 fit's worst bin
# (90th percentile over draws) is 0.115 / 0.086 dex (lg age / [M/H]) at S/N 60, 0.057 / 0.041
# at S/N 150 and 0.045 / 0.032 at S/N 200 (40 draws); on the bench's mixes 0.047-0.055 /
# 0.028-0.042 at S/N 120-150. Any unbiased fit over the full grid would need S/N 625 (the
# Cramer-Rao bound's median worst bin); knowing the support, S/N 7 would do.
SN_NEEDED = 200.0


@pytest.mark.slow
def test_synthetic_cube_at_the_sn_the_target_needs_within_0p05_dex(recovery):
    """The same cube at S/N 200 (galaxy 200/60 times brighter, the real variance, about the
    same bins): every bin's mean lg age and [M/H] within 0.05 dex with regul = REGUL."""
    _, _, err_age, err_mh = recovery(noisy=True, regul=REGUL, target_sn=SN_NEEDED)
    assert np.abs(err_age).max() < 0.05 and np.abs(err_mh).max() < 0.05


@pytest.mark.slow
def test_ppxf_kinematics_options_are_used_and_recorded(tmp_path, run_cli):
    """--ppxf-moments 4 --ppxf-degree 2: the store's kinematics are pPXF's with those options
    on the store's own spectra, and the options are recorded."""
    from ppxf.ppxf import ppxf

    from nnfit.spectral.ifu_store import store_from_ifu_cube

    store = tmp_path / "k.h5"
    info = store_from_ifu_cube(
        MINICUBE,
        MILES,
        store,
        redshift=Z,
        target_sn=25,
        x_range=(14, 26),
        y_range=(13, 25),
        lam_range=(4800, 7000),
        template_pattern=PATTERN,
        age_range=(1, 16),
        kinematics="ppxf",
        ppxf_moments=4,
        ppxf_degree=2,
    )
    assert info["kinematics"] == "ppxf (moments 4, degree 2)"
    with h5py.File(store, "r") as f:
        g = f["Kinematics"]
        assert (g.attrs["ppxf_moments"], g.attrs["ppxf_degree"]) == (4, 2)
        kin = {k: g[k][()] for k in ("V", "sigma", "h3", "h4")}
        T = f["Templates"][()].astype(np.float64).T
        y, noise, good = f["DataCube"][0], f["Noise"][0], f["Mask"][()]
        vsyst = 299792.458 * (f["TemPix"][0] - f["ObsPix"][0])
        ifu = json.loads(f.attrs["ifu_json"])
    assert ifu["kinematics"] == "ppxf (moments 4, degree 2)"
    assert np.all(kin["h3"] != 0) and np.all(kin["h4"] != 0)
    pp = ppxf(
        T, y, noise, ifu["velscale_kms"], [0.0, 200.0], moments=4, degree=2,
        goodpixels=np.flatnonzero(good), vsyst=vsyst, velscale_ratio=ifu["velscale_ratio"],
        quiet=True,
    )  # fmt: skip
    got = [kin[k][0] for k in ("V", "sigma", "h3", "h4")]
    np.testing.assert_allclose(got, pp.sol, rtol=1e-3, atol=1e-3)
    bad = run_cli(
        "cube", "init", MINICUBE, "--templates", MILES, "--kinematics", "kin.csv",
        "--ppxf-degree", "2", "--out", tmp_path / "x.h5",
    )  # fmt: skip
    assert bad.returncode == 2 and "--ppxf-moments/--ppxf-degree" in bad.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_kinematics_of_noise_or_a_wrong_redshift_refused_naming_the_fix(tmp_path):
    """The real minicube as a user might first run it: without the galaxy's redshift, pPXF
    ends on its safety limits in an outer bin; with it but without binning, a bin of S/N ~4
    gets an LOSVD wider than the templates are kept for. Either is refused when that bin
    comes back (not after every bin, with a template-coverage error), naming the bin, its
    S/N and the flags that fix it (a bin map of the user's own: merge bins); no store is
    written."""
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    region = {"x_range": (10, 20), "y_range": (10, 20), "template_pattern": PATTERN}
    with pytest.raises(ValueError, match=r"safety limits.*S/N [0-9.]+\).*z = 0:.*--redshift"):
        store_from_ifu_cube(MINICUBE, MILES, tmp_path / "a.h5", **region)
    region = {"x_range": (14, 26), "y_range": (13, 25), "template_pattern": PATTERN}
    with pytest.raises(ValueError, match=r"beyond the 2000 km/s.*--min-sn \(now 1\)"):
        store_from_ifu_cube(
            MINICUBE, MILES, tmp_path / "b.h5", redshift=Z, lam_range=(4800, 7000), **region
        )
    one_each = np.arange(100).reshape(10, 10)  # the first region, a bin per spaxel
    with pytest.raises(ValueError, match=r"safety limits.*merge it with its neighbours in --bin"):
        store_from_ifu_cube(
            MINICUBE, MILES, tmp_path / "c.h5", bin_map=one_each, x_range=(10, 20),
            y_range=(10, 20), template_pattern=PATTERN,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())
