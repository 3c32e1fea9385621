"""``nnfit calcium deconvolve`` and ``export`` in real subprocesses, and the input readers."""

from __future__ import annotations

import csv
import json

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
