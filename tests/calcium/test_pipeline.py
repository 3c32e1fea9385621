"""Streamed, resumable, distributed deconvolution of whole recordings (calcium/pipeline.py, cli/calcium_exact.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from nnfit.calcium import deconvolve, simulate_recording
from nnfit.calcium.pipeline import deconvolve_recording
from nnfit.calcium.results import SUMMARY_FIELDS

KIN = (0.05, 0.5)


@pytest.fixture
def recording(tmp_path):
    rec = simulate_recording(24, 3000, rate_hz=1.0, noise=0.15, baseline=0.4, seed=6)
    path = tmp_path / "rec.npy"
    np.save(path, rec.traces.astype(np.float32))
    return path, rec


def test_blocks_equal_one_call_in_memory(recording, tmp_path):
    path, _ = recording
    out = tmp_path / "out"
    info = deconvolve_recording(path, out, 30.0, *KIN, lam=0.4, block_cells=5, progress=False)
    ref = deconvolve(np.load(path).astype(float), 30.0, *KIN, lam=0.4)
    np.testing.assert_array_equal(np.load(out / "spikes.npy"), ref.spikes)
    np.testing.assert_array_equal(np.load(out / "baseline.npy"), ref.baseline)
    np.testing.assert_array_equal(np.load(out / "reconvolution.npy"), ref.calcium + ref.baseline)
    assert info["blocks"] == 5 and info["converged"] == 24 and not (out / ".partial").exists()
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0] == ",".join(SUMMARY_FIELDS) and len(rows) == 25
    table = list(csv.DictReader((out / "summary.csv").open()))
    np.testing.assert_array_equal([float(r["spike_sum"]) for r in table], ref.spikes.sum(axis=1))
    np.testing.assert_array_equal([float(r["baseline"]) for r in table], ref.baseline.mean(axis=1))
    np.testing.assert_array_equal([float(r["gap"]) for r in table], ref.gap)


def test_bounded_memory(tmp_path):
    rec = simulate_recording(200, 2000, seed=1)
    path = tmp_path / "big.npy"
    np.save(path, rec.traces)
    kw = {"baseline": "constant", "block_cells": 10, "progress": False}
    deconvolve_recording(path, tmp_path / "warm", 30.0, *KIN, 0.3, **kw)
    tracemalloc.start()
    deconvolve_recording(path, tmp_path / "o", 30.0, *KIN, 0.3, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # all of it would be 200 x 2000 x 8 B = 3.2 MB per array (x3 outputs + input): 12.8 MB
    assert peak < 0.15 * 4 * rec.traces.nbytes, peak


def test_resume_skips_finished_blocks_and_restarts_on_new_settings(recording, tmp_path):
    path, _ = recording
    out = tmp_path / "out"
    deconvolve_recording(path, out, 30.0, *KIN, 0.4, block_cells=6, progress=False)
    first = np.load(out / "spikes.npy")
    # fake an interrupted run: state + two finished blocks are on disk
    from nnfit.calcium import pipeline as blocks

    calls = []
    orig = blocks._run_block

    def spy(spec, settings):
        calls.append(spec[0])
        return orig(spec, settings)

    blocks._run_block = spy
    try:
        info = deconvolve_recording(path, out, 30.0, *KIN, 0.4, block_cells=6, progress=False)
        assert info["blocks_resumed"] == 0 and len(calls) == 4  # .partial was removed when done
    finally:
        blocks._run_block = orig
    np.testing.assert_array_equal(np.load(out / "spikes.npy"), first)


@pytest.mark.slow
def test_cli_survives_a_kill_and_resumes(tmp_path):
    rec = simulate_recording(120, 3000, rate_hz=1.0, noise=0.15, seed=3)
    path = tmp_path / "rec.npy"
    np.save(path, rec.traces)
    args = [
        sys.executable,
        "-m",
        "nnfit",
        "calcium",
        "deconvolve",
        str(path),
        "--fs",
        "30",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--baseline",
        "constant",
        "--block-cells",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--plot-cells",
        "0",
    ]
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = tmp_path / "out" / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline:
        if partial.is_dir() and len(list(partial.glob("block_*.npz"))) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(partial.glob("block_*.npz"))
    assert 3 <= len(done) < 40, "the run finished before it could be killed; make it longer"
    assert not (tmp_path / "out" / "spikes.npy").exists()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout
    ref = deconvolve(rec.traces, 30.0, *KIN, baseline="constant")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "spikes.npy"), ref.spikes)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["blocks_resumed"] >= 3 and run["solver"] == "exact"


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_output(recording, tmp_path):
    from dask.distributed import Client, LocalCluster

    path, _ = recording
    deconvolve_recording(path, tmp_path / "local", 30.0, *KIN, block_cells=6, progress=False)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cl,
        Client(cl) as client,
    ):
        deconvolve_recording(
            path,
            tmp_path / "dask",
            30.0,
            *KIN,
            block_cells=6,
            scheduler=client,
            n_jobs=1,
            progress=False,
        )
    for name in ("spikes.npy", "baseline.npy", "reconvolution.npy", "summary.csv"):
        a, b = tmp_path / "local" / name, tmp_path / "dask" / name
        assert a.read_bytes() == b.read_bytes(), name


def test_cli_estimates_and_reports_kinetics(run_cli, tmp_path):
    rec = simulate_recording(4, 9000, tau_rise=0.05, tau_decay=0.6, rate_hz=0.5, noise=0.1, seed=2)
    np.save(tmp_path / "rec.npy", rec.traces)
    proc = run_cli("calcium", "estimate", "rec.npy", "--fs", "30", "--json", "p.json", check=True)
    assert "pooled: tau_rise" in proc.stdout
    p = json.loads((tmp_path / "p.json").read_text())
    assert abs(p["pooled"]["tau_decay"] - 0.6) < 0.1 and len(p["noise"]) == 4
    proc = run_cli(
        "calcium",
        "deconvolve",
        "rec.npy",
        "--fs",
        "30",
        "--out",
        "o",
        "--plot-cells",
        "1",
        check=True,
    )
    assert "estimated from the data" in proc.stdout and "4/4 certified" in proc.stdout
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["kinetics_estimated"] and abs(run["tau_decay"] - p["pooled"]["tau_decay"]) < 1e-12
    from nnfit.calcium import spike_time_offset

    off = spike_time_offset(run["tau_rise"], run["tau_decay"], 30.0) / 30.0
    assert run["spike_time_offset_s"] == pytest.approx(off)
    assert (tmp_path / "o" / "cells.png").is_file()


def test_cli_exact_refuses_half_kinetics(run_cli, tmp_path):
    np.save(tmp_path / "rec.npy", np.zeros((2, 100)))
    proc = run_cli(
        "calcium", "deconvolve", "rec.npy", "--fs", "30", "--tau-rise", "0.05", "--out", "o"
    )
    assert proc.returncode != 0 and "tau" in proc.stderr


def test_cli_exact_on_a_suite2p_folder_runs_in_memory(run_cli, tmp_path):
    rec = simulate_recording(3, 3000, rate_hz=1.0, noise=0.1, seed=5)
    folder = tmp_path / "plane0"
    folder.mkdir()
    np.save(folder / "F.npy", (rec.traces + 2.0).astype(np.float32))
    np.save(folder / "Fneu.npy", np.ones_like(rec.traces, dtype=np.float32))
    np.save(folder / "iscell.npy", np.array([[1.0, 0.9]] * 3))
    np.save(folder / "ops.npy", np.array({"fs": 30.0, "nframes": 3000}, dtype=object))
    proc = run_cli(
        "calcium",
        "deconvolve",
        "plane0",
        "--solver",
        "exact",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--lam",
        "0.3",
        "--baseline",
        "constant",
        "--out",
        "o",
        "--plot-cells",
        "0",
        check=True,
    )
    assert "3/3 certified" in proc.stdout and "kinetics (given)" in proc.stdout
    y = (rec.traces + 2.0).astype(np.float32).astype(float) - 0.7
    ref = deconvolve(y, 30.0, *KIN, lam=0.3, baseline="constant")
    np.testing.assert_allclose(np.load(tmp_path / "o" / "spikes.npy"), ref.spikes, atol=1e-9)


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2", "<f8"])
@pytest.mark.parametrize("layout", ["C", "F", "1d", "v2"])
def test_read_rows_equals_the_memory_map(tmp_path, dtype, layout):
    from nnfit.calcium.pipeline import open_traces, read_rows

    a = (np.random.default_rng(0).standard_normal((7, 50)) * 100).astype(dtype)
    path = tmp_path / "x.npy"
    if layout == "1d":
        a = a[0]
    if layout == "F":
        a = np.asfortranarray(a)
    if layout == "v2":
        with open(path, "wb") as f:
            np.lib.format.write_array(f, a, version=(2, 0))
    else:
        np.save(path, a)
    ref = np.asarray(open_traces(path), dtype=np.float64)
    for start, stop in [(0, 1), (0, ref.shape[0]), (ref.shape[0] - 1, ref.shape[0]), (2, 5)]:
        if stop > ref.shape[0] or start >= stop:
            continue
        got = read_rows(path, start, stop)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, ref[start:stop])


def test_cli_estimates_kinetics_per_recording_from_several_inputs(tmp_path, monkeypatch, capsys):
    from nnfit.cli import main

    monkeypatch.chdir(tmp_path)
    truth = [0.4, 0.4, 0.4, 1.6, 1.6, 1.6]
    names = []
    for i, td in enumerate(truth):
        names.append(f"day{i}.npy")
        np.save(names[-1], simulate_recording(3, 3600, tau_decay=td, seed=20 + i).traces)
    assert main(["calcium", "estimate", *names, "--fs", "30", "--json", "p.json"]) == 0
    out = capsys.readouterr().out
    assert "6 recordings at 30 Hz; pooled: tau_rise" in out
    assert out.count("tau_decay") == 7  # the pooled and each recording's
    p = json.loads((tmp_path / "p.json").read_text())
    assert [r["input"] for r in p["recordings"]] == names
    td = np.array([r["tau_decay"] for r in p["recordings"]])
    assert td[:3].max() < td[3:].min()
    # a named indicator bounds every recording's decay, and the CLI marks those at a bound
    assert main(["calcium", "estimate", *names, "--fs", "30", "--indicator", "jGCaMP8f"]) == 0
    out = capsys.readouterr().out
    assert "within the jGCaMP8f prior's 0.06-1.5 s" in out
    assert out.count("tau_decay 1.5 s: at a bound of the prior") == 3  # the 1.6 s recordings
    # two recordings are too few to compare: the pooled kinetics for both, and said so
    assert main(["calcium", "estimate", *names[:2], "--fs", "30"]) == 0
    assert "fewer than 4 recordings long enough to compare" in capsys.readouterr().out
    # --max-cells is shared between the recordings, at least 8 cells each
    np.save("big.npy", simulate_recording(20, 3600, seed=9).traces)
    assert (
        main(["calcium", "estimate", "big.npy", *names[:3], "--fs", "30", "--max-cells", "40"]) == 0
    )
    assert "10 of 20 cell(s)" in capsys.readouterr().out
    assert (
        main(["calcium", "estimate", "big.npy", *names[:3], "--fs", "30", "--max-cells", "4"]) == 0
    )
    assert "8 of 20 cell(s)" in capsys.readouterr().out


def test_cli_per_recording_refuses_inputs_at_different_frame_rates(tmp_path, monkeypatch, capsys):
    from nnfit.calcium import save_for_tuning
    from nnfit.cli import main

    monkeypatch.chdir(tmp_path)
    rec = simulate_recording(2, 900, seed=1)
    for name, fs in (("a", 30.0), ("b", 60.0)):
        save_for_tuning(rec.traces, fs, name)
    assert main(["calcium", "estimate", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert "must share one frame rate" in err and "a: 30 Hz" in err and "b: 60 Hz" in err


def _two_decay_recording(tmp_path, n_cells=6, T=7200):
    from nnfit.calcium import TwoDecayKernel

    k = TwoDecayKernel(0.02, 0.15, 1.0, 0.7, 60.0)
    rng = np.random.default_rng(7)
    s = (rng.random((n_cells, T)) < 0.01) * (1 + rng.poisson(1, (n_cells, T)))
    y = np.stack([k.forward(r) for r in s]) + 0.5 + 0.15 * rng.standard_normal((n_cells, T))
    np.save(tmp_path / "rec.npy", y)
    return k, y


def test_deconvolve_takes_a_kernel_with_two_decays(tmp_path):
    from nnfit.calcium import deconvolve_two_decay

    k, y = _two_decay_recording(tmp_path, n_cells=3, T=3600)
    res = deconvolve(y, 60.0, 0.02, 0.15, tau_decay2=1.0, fraction=0.7, baseline="constant")
    ref = deconvolve_two_decay(y, k, baseline="constant")
    np.testing.assert_array_equal(res.spikes, ref.spikes)
    assert (res.tau_decay2, res.fraction) == (1.0, 0.7) and res.estimated["lam"]
    assert not res.estimated["kinetics"] and np.all(res.converged)
    one = deconvolve(y[0], 60.0, 0.02, 0.15, tau_decay2=1.0, fraction=0.7, lam=0.3)
    assert one.spikes.shape == (3600,)
    est = deconvolve(y, 60.0, two_decay=True, n_jobs=2)
    assert est.estimated["kinetics"] and est.fraction < 1.0 and est.tau_decay2 > 0.6
    with pytest.raises(ValueError, match="together"):
        deconvolve(y, 60.0, 0.02, 0.15, fraction=0.7)
    with pytest.raises(ValueError, match="takes no indicator"):
        deconvolve(y, 60.0, two_decay=True, indicator="GCaMP6f")


def test_blocks_with_two_decays_equal_one_call_in_memory(tmp_path):
    _, y = _two_decay_recording(tmp_path, n_cells=5, T=3000)
    out = tmp_path / "out"
    kin = {"tau_decay2": 1.0, "fraction": 0.7}
    info = deconvolve_recording(
        tmp_path / "rec.npy", out, 60.0, 0.02, 0.15, 0.3, block_cells=2, progress=False, **kin
    )
    ref = deconvolve(y, 60.0, 0.02, 0.15, lam=0.3, **kin)
    np.testing.assert_array_equal(np.load(out / "spikes.npy"), ref.spikes)
    np.testing.assert_array_equal(np.load(out / "baseline.npy"), ref.baseline)
    assert (info["tau_decay2"], info["fraction"]) == (1.0, 0.7) and info["converged"] == 5


def test_cli_two_decay_estimated_and_given(run_cli, tmp_path):
    from nnfit.calcium import spike_time_offset

    _two_decay_recording(tmp_path)
    proc = run_cli(
        "calcium", "deconvolve", "rec.npy", "--fs", "60", "--two-decay", "--out", "o",
        "--plot-cells", "1", check=True,
    )  # fmt: skip
    assert "estimated from the data" in proc.stdout and "tau_decay2" in proc.stdout
    assert "6/6 certified" in proc.stdout
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["kinetics_estimated"] and run["fraction"] < 1.0 and run["tau_decay2"] > 0.6
    off = spike_time_offset(
        run["tau_rise"], run["tau_decay"], 60.0, tau_decay2=run["tau_decay2"],
        fraction=run["fraction"],
    )  # fmt: skip
    assert run["spike_time_offset_s"] == pytest.approx(off / 60.0)
    given = ["--tau-rise", "0.02", "--tau-decay", "0.15", "--tau-decay2", "1.0", "--fraction"]
    proc = run_cli(
        "calcium", "deconvolve", "rec.npy", "--fs", "60", *given, "0.7", "--lam", "0.3",
        "--out", "g", "--plot-cells", "0", check=True,
    )  # fmt: skip
    assert "kinetics (given)" in proc.stdout
    ref = deconvolve(np.load(tmp_path / "rec.npy"), 60.0, 0.02, 0.15, lam=0.3, tau_decay2=1.0,
                     fraction=0.7)  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "g" / "spikes.npy"), ref.spikes)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--tau-rise", "0.02", "--tau-decay", "0.15", "--fraction", "0.7"], "add --tau-decay2"),
        (["--two-decay", "--solver", "fista"], "exact solver only"),
        (["--two-decay", "--indicator", "GCaMP6f"], "--indicator bounds"),
        (["--tau-rise", "0.02", "--tau-decay", "0.15", "--tau-decay2", "0.1", "--fraction",
          "0.5"], "tau_decay2 must be"),
    ],
)  # fmt: skip
def test_cli_two_decay_refuses_what_does_not_fit(run_cli, tmp_path, flags, match):
    np.save(tmp_path / "rec.npy", np.zeros((2, 100)))
    proc = run_cli("calcium", "deconvolve", "rec.npy", "--fs", "60", *flags, "--out", "o")
    assert proc.returncode != 0 and match in proc.stderr
    assert not (tmp_path / "o" / "spikes.npy").exists()


def test_cli_two_decay_on_a_suite2p_folder_runs_in_memory(run_cli, tmp_path):
    _, y = _two_decay_recording(tmp_path, n_cells=3, T=3000)
    folder = tmp_path / "plane0"
    folder.mkdir()
    np.save(folder / "F.npy", (y + 2.0).astype(np.float32))
    np.save(folder / "Fneu.npy", np.ones_like(y, dtype=np.float32))
    np.save(folder / "iscell.npy", np.array([[1.0, 0.9]] * 3))
    np.save(folder / "ops.npy", np.array({"fs": 60.0, "nframes": 3000}, dtype=object))
    given = ["--tau-rise", "0.02", "--tau-decay", "0.15", "--tau-decay2", "1.0", "--fraction"]
    proc = run_cli(
        "calcium", "deconvolve", "plane0", *given, "0.7", "--lam", "0.3", "--baseline",
        "constant", "--out", "o", "--plot-cells", "0", check=True,
    )  # fmt: skip
    assert "3/3 certified" in proc.stdout
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert (run["tau_decay2"], run["fraction"]) == (1.0, 0.7)
    f = (y + 2.0).astype(np.float32).astype(float) - 0.7
    ref = deconvolve(f, 60.0, 0.02, 0.15, lam=0.3, baseline="constant", tau_decay2=1.0,
                     fraction=0.7)  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "o" / "spikes.npy"), ref.spikes, atol=1e-9)


def test_cli_estimate_two_decay_reports_the_kernel_deconvolve_uses(run_cli, tmp_path):
    from nnfit.calcium import estimate_two_decay_kernel

    _, y = _two_decay_recording(tmp_path, n_cells=4, T=3600)
    proc = run_cli(
        "calcium", "estimate", "rec.npy", "--fs", "60", "--two-decay", "--json", "e.json",
        check=True,
    )  # fmt: skip
    two = json.loads((tmp_path / "e.json").read_text())["two_decay"]
    k = estimate_two_decay_kernel(list(y), 60.0)
    assert two == {
        "tau_rise": k.tau_rise,
        "tau_decay": k.tau_decay,
        "tau_decay2": k.tau_decay2,
        "fraction": k.fraction,
    }
    assert "--tau-decay2" in proc.stdout and "--fraction" in proc.stdout
    proc = run_cli("calcium", "estimate", "rec.npy", "rec.npy", "--fs", "60", "--two-decay")
    assert proc.returncode != 0 and "one INPUT" in proc.stderr
