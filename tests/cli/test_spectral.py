"""``nnfit spectral simulate | init | build | status | snapshot | compress`` in real subprocesses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.store import load_problem


@pytest.mark.slow
def test_simulate_build_status_snapshot_compress(run_cli, tmp_path):
    store = tmp_path / "cube.h5"
    out = run_cli(
        "cube",
        "simulate",
        "--out",
        store,
        "--spaxels",
        "6",
        "--populations",
        "4",
        "--mask-fraction",
        "0.1",
        check=True,
    )
    assert "next: nnfit spectral build" in out.stdout
    assert run_cli("cube", "simulate", "--out", store).returncode == 2  # exists
    out = run_cli(
        "cube", "build", store, "--s-chunk", "4", "--workers", "0", "--no-progress", check=True
    )
    assert "complete; 4 tiles built, 0 already done" in out.stdout
    out = run_cli("cube", "build", store, "--s-chunk", "4", "--workers", "0", check=True)
    assert "0 tiles built, 4 already done" in out.stdout
    st = json.loads(run_cli("cube", "status", store, "--json", check=True).stdout)
    assert st["complete"] and st["tiles_done"] == 4 and st["edges"]["safe"]
    text = run_cli("cube", "status", store, check=True).stdout
    assert "tiles 4 / 4 done" in text and "Safe=True" in text
    run_cli("cube", "snapshot", store, "--out", tmp_path / "snap.png", check=True)
    assert (tmp_path / "snap.png").stat().st_size > 10_000
    out = run_cli("cube", "compress", store, "--codec", "gzip", check=True)
    assert "MB ->" in out.stdout
    with open_h5(store, "r") as f:
        assert f["HyperCube/models"].compression == "gzip" and f["Truth/x_true"].shape == (2, 4)


def test_init_from_npz_and_errors(run_cli, tmp_path, small_sim):
    sim = small_sim
    npz = tmp_path / "problem.npz"
    np.savez(
        npz,
        tem_pix=sim.tem_pix,
        obs_pix=sim.obs_pix,
        vel_pix=sim.vel_pix,
        losvd=sim.losvd,
        datacube=sim.datacube.T,
        templates=sim.templates,
        mask=sim.mask,
    )
    store = tmp_path / "mine.h5"
    out = run_cli("cube", "init", "--npz", npz, "--out", store, check=True)
    assert "safe" in out.stdout
    prob = load_problem(store)
    np.testing.assert_array_equal(prob.datacube, sim.datacube)
    np.save(tmp_path / "neg.npy", -sim.losvd)
    bad = run_cli(
        "cube", "init", "--npz", npz, "--losvd", tmp_path / "neg.npy", "--out", tmp_path / "b.h5"
    )
    assert bad.returncode == 2 and "nnfit: error: losvd must be >= 0" in bad.stderr
    miss = run_cli("cube", "init", "--tem-pix", tmp_path / "nope.npy", "--out", tmp_path / "c.h5")
    assert miss.returncode == 2 and "does not exist" in miss.stderr
    nobuild = run_cli("cube", "build", tmp_path / "absent.h5")
    assert nobuild.returncode == 2 and "no such cube store" in nobuild.stderr


@pytest.mark.parametrize("cmd", ["simulate", "init", "build", "status", "snapshot", "compress"])
def test_help_teaches(cmd):
    from nnfit.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["cube", cmd, "--help"])
    assert exc.value.code == 0
