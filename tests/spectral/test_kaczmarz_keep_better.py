"""Kaczmarz warm starts never make a stored solution worse; a dead tracker writer is
reported, never followed by "/X_global updated"."""

from __future__ import annotations

import json

import h5py
import numpy as np

from nnfit.cli import main
from nnfit.spectral.kaczmarz_fit import evaluate_objective


def test_exact_x_global_is_kept_when_epochs_make_it_worse(built_store, tmp_path, capsys):
    assert main(["spectral", "fit", str(built_store), "--no-progress"]) == 0
    with h5py.File(built_store) as f:
        exact = f["X_global"][()]
    capsys.readouterr()
    argv = [
        "spectral",
        "fit",
        str(built_store),
        "--method",
        "kaczmarz",
        "--epochs",
        "1",
        "--lr",
        "1.0",
        "--no-progress",
        "--stats",
        str(tmp_path / "s.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "kept the start (X_global" in out and "/X_global updated" not in out
    with h5py.File(built_store) as f:
        np.testing.assert_array_equal(f["X_global"][()], exact)
    kept = json.loads((tmp_path / "s.json").read_text())["kept"]
    assert kept["kept"] == "start" and kept["sse_start"] < kept["sse_fit"]
    assert kept["sse_start"] == evaluate_objective(built_store, exact)["sse"]


def test_improving_fit_from_seed_is_committed(built_store, capsys):
    argv = [
        "spectral",
        "fit",
        str(built_store),
        "--method",
        "kaczmarz",
        "--epochs",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "/X_global updated" in capsys.readouterr().out


def test_dead_tracker_writer_is_one_line_error_without_updated(built_store, capsys, monkeypatch):
    from nnfit.spectral import tracker

    real_close = tracker.FitTracker.close

    def close_after_crash(self, *a, **k):
        self._proc.kill()
        self._proc.wait()
        return real_close(self, *a, **k)

    monkeypatch.setattr(tracker.FitTracker, "close", close_after_crash)
    argv = [
        "spectral",
        "fit",
        str(built_store),
        "--method",
        "kaczmarz",
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "/X_global updated" not in out
    lines = err.strip().splitlines()
    assert lines[-1].startswith("nnfit: error:") and "tracker" in lines[-1], lines
    assert "Traceback" not in err
