"""``nnfit spectral simulate | init | build | status | snapshot | compress`` in real subprocesses."""

from __future__ import annotations

import json
import re

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
    assert (
        f"next: nnfit spectral fit {store} (the exact fit; no HyperCube needed); for " in out.stdout
    )
    assert f"--method kaczmarz first nnfit spectral build {store}" in out.stdout
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
    assert f"next: nnfit spectral fit {store} (the exact fit; no HyperCube needed); " in out.stdout
    assert f"for --method kaczmarz first nnfit spectral build {store}" in out.stdout
    # the HyperCube builder refuses the exact model's stores: no build to suggest
    cut = slice(40, -40)  # the exact kernel's band-limited taps need a wider margin
    arrays = dict(np.load(npz))
    arrays.update(obs_pix=sim.obs_pix[cut], datacube=sim.datacube[:, cut].T, mask=sim.mask[cut])
    np.savez(tmp_path / "cut.npz", **arrays)
    exact = tmp_path / "fourier.h5"
    argv = ["cube", "init", "--npz", tmp_path / "cut.npz", "--kernel", "fourier", "--out", exact]
    out = run_cli(*argv, check=True)
    assert f"next: nnfit spectral fit {exact} (the exact fit; no HyperCube needed)\n" in out.stdout
    assert "build" not in out.stdout
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


def _spectral_commands():
    import argparse

    from nnfit.cli import build_parser

    def subparsers(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    return subparsers(subparsers(build_parser()).choices["spectral"]).choices


@pytest.mark.parametrize("cmd", sorted(_spectral_commands()))
def test_every_option_says_what_it_is_and_its_default(cmd):
    import argparse

    parser = _spectral_commands()[cmd]
    fmt = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings or action.dest
        text = fmt._expand_help(action) if action.help else ""
        what = re.sub(r"\(default[^)]*\)", "", text).strip()
        # two words at least besides the default, and not a sentence cut off
        assert len(what.split()) >= 2 and not what.endswith((" in", "...")), (name, text)
        if action.default not in (None, False):
            assert "default" in text, (name, text)


def test_the_ifu_demo_does_what_its_hints_say_and_lists_its_files(tmp_path, capsys):
    from nnfit.cli.demo import run_spectral_ifu

    run_spectral_ifu(tmp_path, seed=1)
    out = capsys.readouterr().out
    hint = next(line for line in out.splitlines() if line.startswith("next: "))
    fit = next(line for line in out.splitlines() if line.startswith("   $ nnfit spectral fit "))
    # the demo runs the global fit: the hint offers it, and the demo says why it chose it
    assert "--per-bin" not in fit and "or without --per-bin (the global fit" in hint
    assert "# without --per-bin: the global fit" in out
    assert f"true weights {tmp_path / 'ifu' / 'truth.npz'}" in out
    assert (tmp_path / "ifu" / "truth.npz").exists() and (tmp_path / "maps" / "maps.png").exists()
