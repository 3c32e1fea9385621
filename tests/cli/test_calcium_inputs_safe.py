"""``nnfit calcium`` never writes over its input, and ``export --out DIR/`` names the files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from nnfit.calcium import simulate_recording
from nnfit.cli import main

KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5", "--no-progress"]


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("solver", [[], ["--solver", "fista"]])
def test_deconvolve_into_folder_holding_the_input_is_refused(tmp_path, capsys, solver):
    src = tmp_path / "spikes.npy"
    np.save(src, simulate_recording(3, 300, seed=1).traces)
    before = _sha(src)
    argv = ["calcium", "deconvolve", str(src), "--fs", "30", *KIN, *solver, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an input of this command" in err[0] and "spikes.npy" in err[0]
    assert _sha(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spikes.npy"]
    # A folder holding an input with another name is fine.
    other = tmp_path / "rec.npy"
    src.rename(other)
    argv[2] = str(other)
    assert main(argv) == 0
    assert (tmp_path / "spikes.npy").is_file() and _sha(other) == before


@pytest.mark.parametrize("out", ["dir/", "dir"])
def test_export_into_a_folder_uses_the_input_name(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    np.save("rec.npy", simulate_recording(2, 200, seed=2).traces)
    (tmp_path / "dir").mkdir()
    assert main(["calcium", "export", "rec.npy", "--fs", "30", "--out", out]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["rec.npy", "rec_metadata.json"]


def test_export_over_its_own_input_is_refused(tmp_path, capsys):
    stem = tmp_path / "rec"
    np.save(tmp_path / "rec.npy", simulate_recording(2, 200, seed=2).traces)
    before = _sha(tmp_path / "rec.npy")
    assert main(["calcium", "export", str(stem) + ".npy", "--fs", "30", "--out", str(stem)]) == 2
    assert "is an input" in capsys.readouterr().err
    assert _sha(tmp_path / "rec.npy") == before


@pytest.mark.parametrize("solver", [["--solver", "exact"], ["--solver", "fista"]])
@pytest.mark.parametrize(
    "lie, said",
    [
        ({"num_timepoints": 299}, "3 x 299"),
        ({"num_cells": 4}, "4 x 300"),
        ({"dtype": "<f4"}, "'<f4'"),
        ({"sampling_rate_hz": 0}, "sampling_rate_hz"),
    ],
)
def test_a_catune_sidecar_contradicting_its_array_is_refused(tmp_path, capsys, solver, lie, said):
    import json

    from nnfit.calcium import save_for_tuning

    _, sidecar = save_for_tuning(simulate_recording(3, 300, seed=1).traces, 30.0, tmp_path / "r")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **lie}))
    out = tmp_path / "res"
    argv = ["calcium", "deconvolve", str(tmp_path / "r"), *KIN, *solver, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(sidecar) in err[0] and said in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("solver", [["--solver", "exact"], ["--solver", "fista"]])
def test_fs_contradicting_the_catune_sidecar_is_refused(tmp_path, capsys, solver):
    from nnfit.calcium import save_for_tuning

    save_for_tuning(simulate_recording(3, 300, seed=1).traces, 30.0, tmp_path / "r")
    out = tmp_path / "res"
    argv = ["calcium", "deconvolve", str(tmp_path / "r"), "--fs", "20", *KIN, *solver]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "20 Hz contradicts the sampling rate 30 Hz" in err[0], err
    assert not out.exists()
