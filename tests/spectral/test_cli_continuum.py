"""``nnfit spectral fit --degree/--mdegree`` reaches fit_cube's continuum and reports chi^2/dof."""

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_cli_fit_with_polynomials(small_store, run_cli, tmp_path):
    r = run_cli(
        "cube",
        "fit",
        small_store,
        "--method",
        "gram",
        "--degree",
        "2",
        "--mdegree",
        "1",
        "--stats",
        tmp_path / "s.json",
        "--quiet",
        check=True,
    )
    assert "chi2/dof" in r.stdout
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["degree"] == 2 and st["mdegree"] == 1 and st["continuum_rounds"] >= 1
    assert st["dof"] > 0 and st["chi2_dof"] == pytest.approx(st["chi2"] / st["dof"])


@pytest.mark.slow
def test_cli_init_records_the_model_and_refuses_mixed_media(run_cli, tmp_path, small_sim):
    from nnfit.spectral.store import load_problem

    sim = small_sim
    cut = slice(40, -40)  # room for the band-limited taps
    npz = tmp_path / "p.npz"
    np.savez(
        npz,
        tem_pix=sim.tem_pix,
        obs_pix=sim.obs_pix[cut],
        vel_pix=sim.vel_pix,
        losvd=sim.losvd,
        datacube=sim.datacube[:, cut],
        templates=sim.templates,
    )
    bad = run_cli(
        "cube",
        "init",
        "--npz",
        npz,
        "--out",
        tmp_path / "b.h5",
        "--medium-obs",
        "vacuum",
        "--medium-templates",
        "air",
    )
    assert bad.returncode == 2 and "air_to_vac" in bad.stderr
    store = tmp_path / "f.h5"
    run_cli(
        "cube",
        "init",
        "--npz",
        npz,
        "--out",
        store,
        "--kernel",
        "fourier",
        "--convention",
        "ppxf",
        "--vsyst",
        "50",
        check=True,
    )
    assert load_problem(store).model_options == {
        "kernel": "fourier",
        "convention": "ppxf",
        "vsyst": 50.0,
    }
