"""``nnfit spectral fit | reconstruct | dashboard`` in real subprocesses."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest

from nnfit.cli import main

from ..spectral._kaczmarz_fixtures import make_store


def test_fit_reconstruct_dashboard(tmp_path, run_cli):
    st = make_store(tmp_path / "c.h5", S=8, C=2, P=3, L=30, S_chunk=4)
    r = run_cli(
        "cube",
        "fit",
        st.path,
        "--method",
        "kaczmarz",
        "--epochs",
        "3",
        "-K",
        "20",
        "--lr",
        "0.8",
        "--orbit-weights",
        "1,2",
        "--out",
        "x.npy",
        "--stats",
        "stats.json",
        check=True,
    )
    assert "3 epoch(s) run from seed" in r.stdout
    assert "epoch 3/3: train RMSE" in r.stderr
    x = np.load(tmp_path / "x.npy")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["epochs_run"] == 3 and stats["tracker_drops"] == 0
    r = run_cli("cube", "reconstruct", st.path, check=True)
    assert "wrote /ModelCube" in r.stdout
    r = run_cli("cube", "reconstruct", st.path, check=True)
    assert "skipped" in r.stdout
    with h5py.File(st.path, "r") as f:
        np.testing.assert_array_equal(f["X_global"][:], x)
    r = run_cli("cube", "dashboard", st.path, "--out", "d.png", check=True)
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_cli_errors_exit_2(tmp_path, capsys):
    st = make_store(tmp_path / "c.h5", S=4, C=2, P=2, L=10, S_chunk=2)
    for args, msg in [
        (["cube", "fit", str(tmp_path / "missing.h5")], "no such"),
        (["cube", "fit", str(st.path), "--orbit-weights", "a,b"], "comma-separated"),
        (["cube", "reconstruct", str(st.path)], "X_global"),
        (["cube", "dashboard", str(tmp_path / "missing.h5")], "no such"),
    ]:
        assert main(args) == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cube", "fit", "--help"])
    assert "resumed" in capsys.readouterr().out


def test_bad_fit_arguments_are_refused_before_the_store_changes(tmp_path, small_store, capsys):
    # a NaN tol failed deep in the solver, a negative one ran and replaced /X_global, and a
    # --stats/--out that cannot be written failed only after /X_global was replaced
    before = small_store.read_bytes()
    for extra, msg in [
        (["--tol", "nan"], "tol (--tol) must be finite"),
        (["--tol", "-1"], "tol (--tol) must be > 0"),
        (["--degree", "-5"], "degree (--degree, -1: none) must be >= -1"),
        (["--mdegree", "-1"], "mdegree (--mdegree, 0: none) must be >= 0"),
        (["--stats", str(tmp_path)], "is a folder; give a file name in it"),
        (["--out", str(tmp_path / "no" / "x.npy")], "does not exist; create it first"),
        (["--method", "kaczmarz", "--scheduler", "tcp://h:1"], "kaczmarz runs here: drop"),
    ]:
        assert main(["spectral", "fit", str(small_store), "--no-progress", *extra]) == 2
        assert msg in capsys.readouterr().err
    assert small_store.read_bytes() == before


def test_dashboard_after_the_default_exact_fit(tmp_path, run_cli, small_store):
    run_cli("spectral", "fit", small_store, "--no-progress", check=True)
    r = run_cli("spectral", "dashboard", small_store, "--out", tmp_path / "d.png", check=True)
    assert "weights from X_global" in r.stdout
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_memory_gb_sizes_the_cache_and_not_the_answer(tmp_path, small_store, capsys):
    """0.01 GiB: this process is already past it, so no cache, and the fit prints the budget
    that would hold its working set; with that budget the cache holds it, same weights."""

    def fit(gb: str, run: int) -> tuple[np.ndarray, dict, str]:
        out, st = tmp_path / f"x{run}.npy", tmp_path / f"s{run}.json"
        argv = ["spectral", "fit", str(small_store), "--method", "active-set", "--memory-gb", gb]
        argv += ["--warm-start", "seed", "--out", str(out), "--stats", str(st), "--no-progress"]
        assert main(argv) == 0
        return np.load(out), json.loads(st.read_text()), capsys.readouterr().out

    x0, s0, out0 = fit("0.01", 0)
    hint = re.search(r"--memory-gb (\S+) would keep them all", out0)
    assert hint is not None, out0
    assert float(hint.group(1)) == s0["memory_gb_to_cache_working_set"] > 0.01
    assert f"held 0 of the working set's {s0['working_set_max']} design columns" in out0
    x1, s1, out1 = fit(hint.group(1), 1)
    assert s0["column_cache"] is None and s1["column_cache"]["capacity"] > 0
    assert s1["memory_gb_to_cache_working_set"] is None and "memory:" not in out1
    assert s1["column_cache"]["slots"] >= s1["working_set_max"] == s0["working_set_max"]
    assert s1["columns_built"] < s0["columns_built"] and s0["converged"] and s1["converged"]
    np.testing.assert_array_equal(x1, x0)
    for bad in ("0", "nan", "-1", "inf"):
        assert main(["spectral", "fit", str(small_store), "--memory-gb", bad]) == 2
        assert "--memory-gb must be a finite number of GiB > 0" in capsys.readouterr().err
    for other in (["--per-bin"], ["--method", "kaczmarz"]):
        assert main(["spectral", "fit", str(small_store), "--memory-gb", "8", *other]) == 2
        assert f"drop it with {other[0]}" in capsys.readouterr().err


def test_a_budget_named_after_method_auto_keeps_the_working_set_method(tmp_path, capsys):
    """Where ``auto`` ran the working set, the named budget comes with ``--method active-set``:
    with more memory ``auto`` could take the full Gram instead."""
    from nnfit.spectral.simulate import simulate_cube

    store = simulate_cube(300, 8, 40, n_obs_pix=1000, templates="ssp", seed=2).to_h5(
        tmp_path / "c.h5"
    )
    argv = ["spectral", "fit", str(store), "--memory-gb", "0.01", "--warm-start", "seed"]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fit (active-set): optimum" in out
    assert re.search(r"held 0 of the working set's \d+ design columns", out)
    assert re.search(r"; --method active-set --memory-gb [0-9.]+ would keep them all", out)


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--epochs", "10"], "--epochs is an option of --method kaczmarz, unused by the exact "),
        (
            ["-K", "64", "--lr", "0.5", "--no-nonneg"],
            "-K/--pixels-per-aperture, --lr, --no-nonneg are options of --method kaczmarz",
        ),
        (["--method", "gram", "--seed", "3"], "unused by the exact fit (--method gram)"),
        (["--row-order", "sequential"], "add --method kaczmarz"),
        (["--ratio-prob", "0.1", "--ratio-eta", "0.01"], "or drop them"),
        (["--blas-threads", "1"], "--blas-threads is an option of --method kaczmarz"),
        (["--ckpt-interval", "60", "--metrics-interval", "10"], "--ckpt-interval, --metrics"),
        (["--per-bin", "--epochs", "3"], "--per-bin fits each bin exactly: drop it"),
        (["--per-bin", "--out", "x.npy"], "--out: options of the global fit; --per-bin starts"),
        (
            ["--per-bin", "--stats", "s.json", "--x0", "x0.npy", "--orbit-weights", "1,1"],
            "--stats, --x0, --orbit-weights: options of the global fit",
        ),
        (["--per-bin", "--warm-start", "seed"], "writes its weights and chi2/dof to /BinFit"),
    ],
)
def test_kaczmarz_options_with_an_exact_method_are_refused(small_store, capsys, extra, msg):
    # the exact fit ran and silently dropped them (the help's own example with --epochs did)
    before = small_store.read_bytes()
    assert main(["spectral", "fit", str(small_store), "--no-progress", *extra]) == 2
    assert msg in capsys.readouterr().err
    assert small_store.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--degree", "4"], "--degree is an option of the exact fit, unused by --method kaczmarz"),
        (["--mdegree", "8", "--tol", "1e-8"], "--mdegree, --tol are options of the exact fit"),
        (["--regul", "5", "--regul-order", "1"], "drop them, or drop --method kaczmarz"),
        (["--epochs", "0"], "--epochs is the total number of epochs, >= 1; got 0"),
    ],
)
def test_exact_options_and_no_epochs_with_kaczmarz_are_refused(small_store, capsys, extra, msg):
    # Kaczmarz fits no polynomials and has no regularisation or KKT tolerance: it ignored them
    before = small_store.read_bytes()
    argv = ["spectral", "fit", str(small_store), "--method", "kaczmarz", "--no-progress"]
    assert main([*argv, *extra]) == 2
    assert msg in capsys.readouterr().err
    assert small_store.read_bytes() == before


def test_a_kaczmarz_rerun_with_nothing_to_do_says_so(built_store, capsys):
    argv = ["spectral", "fit", str(built_store), "--method", "kaczmarz", "-K", "20"]
    assert main([*argv, "--epochs", "2", "--no-progress"]) == 0
    assert "2 epoch(s) run from seed" in capsys.readouterr().out
    with h5py.File(built_store, "r") as f:
        x = f["X_global"][()]
    for epochs in ("2", "1"):
        assert main([*argv, "--epochs", epochs, "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("fit: nothing to run: the fit is already at epoch 2 "), out
        assert f"and --epochs is {epochs}; /X_global not written" in out
        assert "nan" not in out and "updated" not in out
    with h5py.File(built_store, "r") as f:
        np.testing.assert_array_equal(f["X_global"][()], x)


def test_the_help_examples_are_accepted_as_written():
    """Each ``spectral fit`` example of the help passes the option checks it would meet."""
    import shlex

    from nnfit.cli import build_parser
    from nnfit.cli.spectral_fit import (
        _FIT_EPILOG,
        _refuse_exact_options,
        _refuse_kaczmarz_options,
    )

    parser = build_parser()
    lines = [ln.split("#")[0] for ln in _FIT_EPILOG.splitlines() if "spectral fit " in ln]
    assert len(lines) >= 6
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        _refuse_kaczmarz_options(args)
        _refuse_exact_options(args)
