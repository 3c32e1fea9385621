"""LSF files (wavelength vs FWHM): reading, refusals, and the analytic line width they give."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nnfit.spectral.lsf import read_lsf_table
from nnfit.spectral.templates import load_template_library

fits = pytest.importorskip("astropy.io.fits")


def _fwhm(lam):
    return 2.0 + (np.asarray(lam) - 4500.0) / 1500.0  # 2 A at 4500 A to 4 A at 7500 A


def test_text_and_fits_tables_read_the_same(tmp_path):
    from astropy.table import Table

    w = np.linspace(4500.0, 7500.0, 7)
    np.savetxt(tmp_path / "lsf.txt", np.c_[w, _fwhm(w)], header="wavelength_A fwhm_A")
    Table({"LAMBDA": w, "FWHM": _fwhm(w)}).write(tmp_path / "lsf.fits")
    a, b = read_lsf_table(tmp_path / "lsf.txt"), read_lsf_table(tmp_path / "lsf.fits")
    lam = np.linspace(4500.0, 7500.0, 101)
    np.testing.assert_allclose(a(lam), _fwhm(lam), rtol=1e-12)
    np.testing.assert_allclose(b(lam), _fwhm(lam), rtol=1e-12)
    assert a(np.array([4000.0]))[0] == 2.0  # the end value holds beyond the table
    with pytest.raises(ValueError, match=r"covers 4500.0-7500.0 A.*4400.0-7000.0"):
        a.check_covers(4400.0, 7000.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("5000 2.5\n", "two or more rows"),
        ("5000 2.5 1\n6000 2.4 1\n", "need 2 columns"),
        ("6000 2.5\n5000 2.4\n", "increase strictly"),
        ("5000 2.5\n6000 -1\n", "FWHM must be > 0"),
        ("5000 abc\n", "not a text table"),
    ],
)
def test_bad_tables_are_refused_naming_the_file(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        read_lsf_table(p)
    assert "bad.txt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_lsf_table(tmp_path / "missing.txt")
    fits.HDUList([fits.PrimaryHDU(np.zeros(3))]).writeto(tmp_path / "img.fits")
    with pytest.raises(ValueError, match="no table extension"):
        read_lsf_table(tmp_path / "img.fits")


def test_matched_lines_have_the_tabulated_width(tmp_path):
    """Gaussian lines of 1 A FWHM in a library of 1 A resolution, matched to an LSF file:
    each line's FWHM becomes the table's at its wavelength (Gaussians convolve in quadrature:
    sqrt(1 + (F^2 - 1)) = F), widened only by the pixels' boxcars (variance width^2 / 12)."""
    lam = np.arange(4000.0, 8000.0, 0.25)
    centres = np.array([5000.0, 6000.0, 7000.0])
    s0 = 1.0 / np.sqrt(8 * np.log(2))
    depth = sum(np.exp(-0.5 * ((lam - c) / s0) ** 2) for c in centres)
    np.savez(
        tmp_path / "lib.npz",
        templates=(1.0 - 0.5 * depth)[:, None, None],
        lam=lam,
        ages=np.array([10.0]),
        metals=np.array([0.0]),
        fwhm=np.full(lam.size, 1.0),
    )
    w = np.linspace(4200.0, 7800.0, 13)
    np.savetxt(tmp_path / "lsf.txt", np.c_[w, _fwhm(w)])
    ln_edges = np.log(4300.0) + 2e-5 * np.arange(int(np.log(7700 / 4300) / 2e-5))
    lib = load_template_library(
        tmp_path / "lib.npz", ln_edges, fwhm_gal=read_lsf_table(tmp_path / "lsf.txt")
    )
    t = lib.templates[:, 0, 0]
    lam_out = np.exp(lib.ln_lam)
    for c in centres:
        near = np.abs(lam_out - c) < 15.0
        d = 1.0 - t[near] / np.median(t)  # the line (continuum 1 after normalisation)
        var = (d * (lam_out[near] - c) ** 2).sum() / d.sum()
        # plus the boxcars of the library's pixels and the output's (flux-conserving rebin)
        pixels = (0.25**2 + (2e-5 * c) ** 2) / 12.0
        expected = np.sqrt(_fwhm(c) ** 2 + 8 * np.log(2) * pixels)
        assert np.sqrt(8 * np.log(2) * var) == pytest.approx(expected, rel=5e-4)


@pytest.mark.slow
def test_store_with_a_constant_lsf_file_equals_the_number(tmp_path, run_cli):
    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.kinematics import read_losvd_file
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=3)
    lo, hi = info["lam_range"]
    np.savetxt(tmp_path / "lsf.txt", [[lo - 1, 1.5], [hi + 1, 1.5]])
    kw = dict(losvd=read_losvd_file(info["losvd"]), lines=[], min_sn=0.0)
    store_from_ifu_cube(info["cube"], info["templates"], tmp_path / "a.h5", fwhm_gal=1.5, **kw)
    store_from_ifu_cube(
        info["cube"], info["templates"], tmp_path / "b.h5", fwhm_gal=tmp_path / "lsf.txt", **kw
    )
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["Templates"][()], b["Templates"][()])
        assert "LSF file" in b.attrs["ifu_json"]
    np.savetxt(tmp_path / "short.txt", [[lo + 50, 1.5], [hi, 1.5]])
    bad = run_cli(
        "cube", "init", info["cube"], "--templates", info["templates"], "--losvd",
        info["losvd"], "--fwhm", tmp_path / "short.txt", "--no-line-mask", "--min-sn", "0",
        "--out", tmp_path / "c.h5",
    )  # fmt: skip
    assert bad.returncode == 2 and "short.txt: covers" in bad.stderr
    assert not Path(tmp_path / "c.h5").exists()
    bad = run_cli(
        "cube", "init", info["cube"], "--templates", info["templates"], "--fwhm", "x",
        "--out", tmp_path / "d.h5",
    )  # fmt: skip
    assert bad.returncode == 2 and "an LSF file" in bad.stderr
    # the library's own resolution from a file (E-MILES varies): a constant one is the number
    np.savetxt(tmp_path / "tem.txt", [[1000.0, 0.5], [60000.0, 0.5]])
    store_from_ifu_cube(
        info["cube"], info["templates"], tmp_path / "e.h5", fwhm_gal=1.5, fwhm_tem=0.5, **kw
    )
    store_from_ifu_cube(
        info["cube"], info["templates"], tmp_path / "f.h5", fwhm_gal=1.5,
        fwhm_tem=tmp_path / "tem.txt", **kw,
    )  # fmt: skip
    with h5py.File(tmp_path / "e.h5") as e, h5py.File(tmp_path / "f.h5") as f:
        np.testing.assert_array_equal(e["Templates"][()], f["Templates"][()])
        assert json.loads(f.attrs["ifu_json"])["fwhm_templates"].startswith("LSF file")
    bad = run_cli(
        "cube", "init", info["cube"], "--templates", info["templates"], "--fwhm-templates", "x",
        "--out", tmp_path / "g.h5",
    )  # fmt: skip
    assert bad.returncode == 2 and "--fwhm-templates must be a number (A) or an LSF file" in (
        bad.stderr
    )
