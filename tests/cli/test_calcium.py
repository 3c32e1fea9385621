"""``nnfit calcium deconvolve`` and ``export`` in real subprocesses, and the input readers."""

from __future__ import annotations

import argparse
import csv
import json
import shlex

import numpy as np
import pytest

from nnfit.calcium import load_tuning_data, run_deconvolution, save_for_tuning, simulate_recording
from nnfit.calcium.recordings import read_input
from nnfit.cli import main

KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5"]


@pytest.fixture
def rec():
    return simulate_recording(6, 1500, seed=4)


def make_suite2p(folder, rec, *, fs=30.0):
    folder.mkdir(parents=True)
    f = (rec.traces + 2.0).astype(np.float32)
    fneu = np.full_like(f, 1.0)
    f = np.concatenate([f, f[:1] * 0 + 9.0])  # an extra ROI that is not a cell
    fneu = np.concatenate([fneu, fneu[:1]])
    np.save(folder / "F.npy", f)
    np.save(folder / "Fneu.npy", fneu)
    iscell = np.array([[1.0, 0.9]] * rec.traces.shape[0] + [[0.0, 0.1]])
    np.save(folder / "iscell.npy", iscell)
    np.save(folder / "ops.npy", np.array({"fs": fs, "nframes": f.shape[1]}, dtype=object))
    return f[:-1].astype(np.float64) - 0.7 * fneu[:-1].astype(np.float64)


def test_help_teaches(run_cli):
    proc = run_cli("calcium", "deconvolve", "--help", check=True)
    assert "examples:" in proc.stdout and "suite2p" in proc.stdout and "--params" in proc.stdout
    # the three solvers, and when each is the default
    text = " ".join(proc.stdout.split())
    assert "one of three solvers" in text
    assert "exact certified optimum" in text and "Default unless --params is given or" in text
    assert "fista catune 0.1.0's problem" in text and "are all given" in text
    assert "browser the CaTune browser's problem" in text and "Default with --params" in text
    # each solver's stop rule where none is given
    assert "fista, default 1e-06; browser, 1e-12) or duality gap (exact, 1e-09)" in text
    assert "(default: fista 2000, browser 20000, exact 100)" in text
    proc = run_cli("calcium", "export", "--help", check=True)
    assert "CaTune browser" in proc.stdout


def test_deconvolve_npy_writes_everything(run_cli, tmp_path, rec):
    np.save(tmp_path / "rec.npy", rec.traces)
    proc = run_cli(
        "calcium", "deconvolve", "rec.npy", "--fs", "30", *KIN, "--out", "res", check=True
    )
    assert "6/6 converged" in proc.stdout
    out = tmp_path / "res"
    assert sorted(p.name for p in out.iterdir()) == [
        "cells.png",
        "reconvolution.npy",
        "run.json",
        "spikes.npy",
        "summary.csv",
    ]  # (no temporary files left behind)
    spikes = np.load(out / "spikes.npy")
    ref, info = run_deconvolution(rec.traces, 30.0, 0.05, 0.5, 0.5, return_info=True)
    assert np.array_equal(spikes, ref)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [int(r["iterations"]) for r in rows] == info.iterations.tolist()
    assert all(r["converged"] == "True" for r in rows)
    assert all(r["lam"] == "0.5" and r["baseline_kind"] == "none" for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["solver"] == "fista" and run["settings"]["lam"] == 0.5
    assert run["input_sha256"].startswith("sha256:")
    assert (out / "cells.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("solver", ["fista", "exact"])  # in memory, and streamed
def test_deconvolve_removes_what_a_killed_run_left(tmp_path, rec, solver, capsys):
    np.save(tmp_path / "rec.npy", rec.traces)
    out = tmp_path / "res"
    out.mkdir()
    # what SIGKILL leaves in the middle of atomic writes, and a file that is not ours
    left = [".spikes.npy.0123456789abcdef.tmp.npy", ".summary.csv.fedcba9876543210.tmp"]
    for name in [*left, ".notes.tmp"]:
        (out / name).write_bytes(b"torn")
    argv = ["calcium", "deconvolve", str(tmp_path / "rec.npy"), "--fs", "30", *KIN]
    assert main([*argv, "--solver", solver, "--no-progress", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert not set(left) & set(names) and ".notes.tmp" in names
    assert np.load(out / "spikes.npy").shape == rec.traces.shape


def test_deconvolve_catune_stem_and_suite2p(run_cli, tmp_path, rec):
    save_for_tuning(rec.traces, 30.0, tmp_path / "session1")
    run_cli(
        "calcium", "deconvolve", "session1", *KIN, "--out", "a", "--plot-cells", "0", check=True
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "spikes.npy"), run_deconvolution(rec.traces, 30, 0.05, 0.5, 0.5)
    )
    expected = make_suite2p(tmp_path / "plane0", rec)
    proc = run_cli("calcium", "deconvolve", "plane0", *KIN, "--out", "b", check=True)
    assert "6 cell(s) x 1500 frames at 30 Hz" in proc.stdout
    np.testing.assert_array_equal(
        np.load(tmp_path / "b" / "spikes.npy"), run_deconvolution(expected, 30, 0.05, 0.5, 0.5)
    )
    rows = list(csv.DictReader((tmp_path / "b" / "summary.csv").open()))
    assert [int(r["source_row"]) for r in rows] == list(range(6))


def test_deconvolve_with_browser_params(run_cli, tmp_path, rec):
    np.save(tmp_path / "rec.npy", rec.traces + 3.0)
    params = {
        "schema_version": "1.2.0",
        "parameters": {
            "tau_rise_s": 0.05,
            "tau_decay_s": 0.5,
            "lambda": 0.02,
            "sampling_rate_hz": 30.0,
            "filter_enabled": False,
        },
    }
    (tmp_path / "catune-params.json").write_text(json.dumps(params))
    run_cli(
        "calcium",
        "deconvolve",
        "rec.npy",
        "--params",
        "catune-params.json",
        "--out",
        "r",
        check=True,
    )
    rows = list(csv.DictReader((tmp_path / "r" / "summary.csv").open()))
    assert all(abs(float(r["baseline"]) - 3.0) < 0.1 for r in rows)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["solver"] == "browser"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rec.npy", *KIN, "--out", "x"], "does not record a sampling rate: pass --fs"),
        # no kinetics at all means "estimate them"; half of them is still an error
        (["rec.npy", "--fs", "30", "--tau-rise", "0.05", "--out", "x"], "give both --tau-rise"),
        (["rec.npy", "--fs", "0", *KIN, "--out", "x"], "--fs must be > 0"),
        (
            [
                "rec.npy",
                "--fs",
                "30",
                "--tau-rise",
                "0.5",
                "--tau-decay",
                "0.05",
                "--lam",
                "1",
                "--out",
                "x",
            ],
            "tau_r must be smaller than tau_d",
        ),
        (["rec.npy", "--fs", "30", *KIN[:4], "--lam", "-1", "--out", "x"], "lam must be >= 0"),
        (["rec.npy", "--fs", "30", *KIN, "--max-iter", "0", "--out", "x"], "--max-iter must"),
        (["rec.npy", "--fs", "30", *KIN, "--tolerance", "0", "--out", "x"], "--tol must"),
        (["nan.npy", "--fs", "30", *KIN, "--out", "x"], "NaN/Inf"),
        (["cube.npy", "--fs", "30", *KIN, "--out", "x"], "must be 1-D or 2-D"),
        (["missing.npy", "--fs", "30", *KIN, "--out", "x"], "input not found: missing.npy"),
        # a missing file is missing, whatever --series asks of it
        (
            ["missing.nwb", "--series", "Fluorescence/RoiResponseSeries", "--out", "x"],
            "input not found: missing.nwb",
        ),
        (["missing.mat", "--series", "F", "--fs", "30", *KIN, "--out", "x"], "input not found"),
        (["rec.npy", "--params", "p.json", "--lam", "1", "--out", "x"], "drop --lam"),
    ],
)
def test_deconvolve_bad_input_exits_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, args, message
):
    # In-process through the same main() the console script runs (a subprocess each would
    # cost ~2 s of interpreter start); test_bad_input_in_a_real_process covers the process.
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rec.npy", np.ones((2, 50)))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    assert main(["calcium", "deconvolve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnfit: error:") and message in err, err
    assert not (tmp_path / "x").exists()


def test_bad_input_in_a_real_process(run_cli, tmp_path):
    np.save(tmp_path / "rec.npy", np.array([[1.0, np.inf]]))
    proc = run_cli("calcium", "deconvolve", "rec.npy", "--fs", "30", *KIN, "--out", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("nnfit: error: traces in rec.npy contains 1 NaN/Inf")
    assert not (tmp_path / "x").exists()


def test_export_writes_browser_files(run_cli, tmp_path, rec):
    np.save(tmp_path / "rec.npy", rec.traces.astype(np.float32))
    proc = run_cli("calcium", "export", "rec.npy", "--fs", "30", "--out", "out/s1", check=True)
    assert "CaTune browser" in proc.stdout
    traces, meta = load_tuning_data(tmp_path / "out" / "s1")
    np.testing.assert_array_equal(traces, rec.traces.astype(np.float32).astype(np.float64))
    assert meta["sampling_rate_hz"] == 30.0 and meta["source_kind"] == "npy"
    make_suite2p(tmp_path / "plane0", rec, fs=15.0)
    run_cli("calcium", "export", "plane0", "--out", "p0", check=True)
    traces, meta = load_tuning_data(tmp_path / "p0")
    assert traces.shape == (6, 1500) and meta["sampling_rate_hz"] == 15.0
    assert meta["suite2p_rows"] == list(range(6)) and meta["neuropil_factor"] == 0.7
    proc = run_cli("calcium", "export", "rec.npy", "--out", "nofs")
    assert proc.returncode == 2 and "pass --fs" in proc.stderr
    assert not list(tmp_path.glob("nofs*"))


@pytest.mark.parametrize("solver", [KIN, []])  # fista (kinetics given), exact (estimated)
def test_a_file_of_fewer_frames_than_cells_is_flagged(run_cli, tmp_path, solver):
    # a (frames, cells) .npy reads as many short cells: said on stderr, once, with the fix
    traces = simulate_recording(20, 300, seed=4).traces
    np.save(tmp_path / "rec.npy", traces.T.copy())
    proc = run_cli(
        "calcium", "deconvolve", "rec.npy", "--fs", "30", *solver, "--out", "o", check=True
    )
    assert proc.stderr.count("is read as (cells, frames) = (300, 20)") == 1
    assert "save its transpose" in proc.stderr
    np.save(tmp_path / "ok.npy", traces)
    proc = run_cli("calcium", "deconvolve", "ok.npy", "--fs", "30", *solver, "--out", "p")
    assert "is read as" not in proc.stderr


def test_a_reused_output_folder_keeps_only_the_last_run(tmp_path, rec, monkeypatch, capsys):
    # the exact solver writes baseline.npy and a figure; a later run with other settings that
    # writes neither must not leave the earlier run's beside its own
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rec.npy", rec.traces)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert main(["calcium", "deconvolve", "rec.npy", "--fs", "30", "--out", "o"]) == 0
    assert {"baseline.npy", "cells.png"} <= {p.name for p in (tmp_path / "o").iterdir()}
    args = ["calcium", "deconvolve", "rec.npy", "--fs", "30", *KIN, "--plot-cells", "0"]
    assert main([*args, "--out", "o"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == [
        "notes.txt",  # not nnfit's: kept
        "reconvolution.npy",
        "run.json",
        "spikes.npy",
        "summary.csv",
    ]
    capsys.readouterr()


def test_scheduler_with_a_solver_that_runs_here_is_refused(tmp_path, rec, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rec.npy", rec.traces)
    args = ["calcium", "deconvolve", "rec.npy", "--fs", "30", *KIN, "--out", "o"]
    assert main([*args, "--solver", "fista", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "--solver fista runs here: drop --scheduler" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_scheduler_with_an_input_read_whole_is_refused(tmp_path, rec, monkeypatch, capsys):
    import scipy.io

    monkeypatch.chdir(tmp_path)
    scipy.io.savemat(tmp_path / "rec.mat", {"F": rec.traces, "fs": 30.0})
    args = ["calcium", "deconvolve", "rec.mat", "--out", "o", "--scheduler", "tcp://127.0.0.1:9"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--scheduler needs traces that workers can read from the shared disk in blocks" in err
    assert "rec.mat (matlab) is read whole here: drop --scheduler, or save the traces" in err
    assert not (tmp_path / "o").exists()


def test_read_input_rules(tmp_path, rec):
    save_for_tuning(rec.traces, 20.0, tmp_path / "s")
    assert read_input(tmp_path / "s").fs == 20.0
    assert read_input(tmp_path / "s.npy", fs=20).kind == "catune"
    with pytest.raises(ValueError, match="fs = 30 Hz contradicts the sampling rate 20 Hz"):
        read_input(tmp_path / "s", fs=30.0)
    make_suite2p(tmp_path / "p", rec)
    (tmp_path / "p" / "ops.npy").unlink()
    with pytest.raises(ValueError, match="pass fs"):
        read_input(tmp_path / "p")
    assert read_input(tmp_path / "p", fs=30).traces.shape == (6, 1500)
    (tmp_path / "p" / "Fneu.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no Fneu\.npy"):
        read_input(tmp_path / "p", fs=30)
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match=r"not a \.npy file"):
        read_input(tmp_path / "notes.md", fs=30)
    (tmp_path / "notes.txt").write_text("x")  # a .txt is read as a table of traces
    with pytest.raises(ValueError, match=r"notes\.txt: a header but no rows of values"):
        read_input(tmp_path / "notes.txt", fs=30)


def test_demo_runs(tmp_path, capsys, monkeypatch):
    from nnfit.cli import demo

    monkeypatch.setattr(demo, "N_CELLS", 6)  # a smaller run of the same code path
    monkeypatch.setattr(demo, "N_FRAMES", 1200)
    demo.run_calcium(tmp_path / "calcium", seed=1)
    out = capsys.readouterr().out
    assert "correlation of inferred with simulated spikes" in out
    corr = json.loads((tmp_path / "calcium" / "run.json").read_text())[
        "spike_correlation_smoothed_100ms"
    ]
    assert corr > 0.8
    assert (tmp_path / "calcium" / "cells.png").is_file()
    assert load_tuning_data(tmp_path / "calcium" / "simulated")[0].shape == (6, 1200)


@pytest.mark.parametrize(
    ("extra", "drop"),
    [
        (["b.npy"], "drop all INPUTs but one (got 2)"),
        (["--indicator", "GCaMP6f"], "drop --indicator"),
        (["b.npy", "--indicator", "GCaMP6f"], "drop --indicator and all INPUTs but one"),
    ],
)
def test_two_decay_estimate_names_what_to_drop(tmp_path, rec, monkeypatch, capsys, extra, drop):
    monkeypatch.chdir(tmp_path)
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, rec.traces)
    assert main(["calcium", "estimate", "a.npy", *extra, "--fs", "30", "--two-decay"]) == 2
    assert drop in capsys.readouterr().err


def test_stop_defaults_are_the_library_defaults():
    import inspect

    from nnfit.calcium import deconvolve, deconvolve_from_export
    from nnfit.cli.calcium import STOP_DEFAULTS

    def defaults(fn, tol, max_iter):
        params = inspect.signature(fn).parameters
        return params[tol].default, params[max_iter].default

    assert STOP_DEFAULTS == {
        "fista": defaults(run_deconvolution, "tolerance", "max_iters"),
        "browser": defaults(deconvolve_from_export, "tol", "max_iter"),
        "exact": defaults(deconvolve, "tol", "max_iter"),
    }


@pytest.mark.parametrize(
    ("solver", "extra", "stop"),
    [
        ("fista", KIN, {"tol": 1e-6, "max_iter": 2000}),
        ("browser", ["--params", "p.json"], {"tol": 1e-12, "max_iter": 20000}),
        ("exact", [], {"tol": 1e-9, "max_iter": 100}),
        ("exact", ["--max-iter", "1", "--tol", "1e-3"], {"tol": 1e-3, "max_iter": 1}),
    ],
)
def test_run_json_records_the_stop_rule_applied(tmp_path, rec, monkeypatch, solver, extra, stop):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rec.npy", rec.traces)
    params = {"tau_rise_s": 0.05, "tau_decay_s": 0.5, "lambda": 0.02, "sampling_rate_hz": 30.0}
    (tmp_path / "p.json").write_text(json.dumps({"schema_version": "1.2.0", "parameters": params}))
    fs = [] if "--params" in extra else ["--fs", "30"]
    argv = ["calcium", "deconvolve", "rec.npy", *fs, *extra, "--plot-cells", "0", "--out", "o"]
    assert main(argv) == 0
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["solver"] == solver
    assert {k: run.get("settings", run)[k] for k in stop} == stop
    if stop["max_iter"] == 1:  # the limit reaches the exact solver
        rows = list(csv.DictReader((tmp_path / "o" / "summary.csv").open()))
        assert {r["iterations"] for r in rows} == {"1"}


def test_a_decay_in_ms_is_flagged_once(tmp_path, monkeypatch, caplog):
    from nnfit.calcium import kernel

    monkeypatch.setattr(kernel, "_WARNED_DECAYS", set())
    monkeypatch.chdir(tmp_path)
    # more cells than one block: the browser's solver builds the kernel for each
    np.save(tmp_path / "rec.npy", simulate_recording(40, 300, seed=4).traces)
    params = {"tau_rise_s": 0.05, "tau_decay_s": 50.0, "lambda": 0.02, "sampling_rate_hz": 30.0}
    (tmp_path / "p.json").write_text(json.dumps({"schema_version": "1.2.0", "parameters": params}))
    argv = ["calcium", "deconvolve", "rec.npy", "--params", "p.json", "--plot-cells", "0"]
    with caplog.at_level("WARNING", logger="nnfit"):
        assert main([*argv, "--out", "o"]) == 0
    assert caplog.text.count("=50 s: calcium indicators decay within seconds") == 1


@pytest.mark.parametrize("two_decay", [False, True])
def test_estimate_prints_a_command_that_runs(tmp_path, rec, monkeypatch, capsys, two_decay):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "my rec.npy", rec.traces)
    extra = ["--two-decay"] if two_decay else []
    assert main(["calcium", "estimate", "my rec.npy", "--fs", "30", *extra]) == 0
    uses = [line for line in capsys.readouterr().out.splitlines() if line.startswith("use: ")]
    assert len(uses) == 1 + two_decay
    words = shlex.split(uses[-1].removeprefix("use: ").split("   (")[0])
    assert words[:4] == ["nnfit", "calcium", "deconvolve", "my rec.npy"]
    assert words[words.index("--fs") + 1] == "30"  # a .npy records no sampling rate
    if two_decay:
        assert {"--tau-decay2", "--fraction"} <= set(words)
    words[words.index("DIR")] = "o"
    assert main([*words[1:], "--plot-cells", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "o" / "run.json").read_text())["kinetics_estimated"] is False


def test_estimate_repeats_series():
    from nnfit.cli.calcium_exact import _deconvolve_line

    args = argparse.Namespace(input="rec.nwb", fs=None, series="Fluorescence/Roi Series")
    line = _deconvolve_line(args, {"--tau-rise": 0.05, "--tau-decay": 0.5})
    assert shlex.split(line) == [
        *("nnfit", "calcium", "deconvolve", "rec.nwb"),
        *("--series", "Fluorescence/Roi Series", "--tau-rise", "0.05", "--tau-decay", "0.5"),
        *("--out", "DIR"),
    ]
    args = argparse.Namespace(input="rec.npy", fs=30.000001234, series=None)
    assert "--fs 30.000001234 " in _deconvolve_line(args, {})


def test_estimate_of_several_recordings_reports_the_pooled_decay(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = []
    for i, td in enumerate([0.4, 0.4, 0.4, 1.6, 1.6, 1.6]):
        names.append(f"day{i}.npy")
        np.save(tmp_path / names[-1], simulate_recording(3, 7200, tau_decay=td, seed=i).traces)
    assert main(["calcium", "estimate", *names, "--fs", "30", "--json", "k.json"]) == 0
    out = capsys.readouterr().out
    k = json.loads((tmp_path / "k.json").read_text())
    pooled = k["pooled"]
    assert (
        f"pooled: tau_rise {pooled['tau_rise']:.4g} s, tau_decay {pooled['tau_decay']:.4g} s" in out
    )
    assert 0.0 < k["shrinkage_weight"] <= 1.0
    assert f"each decay moved {100 * k['shrinkage_weight']:.0f} % of the way" in out
    for r in k["recordings"]:
        assert f"shrunk towards the pooled from its own {r['own_tau_decay']:.4g} s" in out
    assert [r["tau_decay"] < pooled["tau_decay"] for r in k["recordings"]] == [True] * 3 + [
        False
    ] * 3
