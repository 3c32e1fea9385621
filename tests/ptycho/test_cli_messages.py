"""``nnfit ptycho`` errors name the command's flags and say how to fix the input."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.cli import main
from nnfit.ptycho import simulate_dataset, write_npz


def _error(capsys, *argv):
    rc = main(["ptycho", *map(str, argv)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("nnfit: error: ") and err.count("\n") == 1, err
    return err


SIMULATE = {
    "--n-scans": (["--n-scans", "0"], "--n-scans must be >= 1; got 0"),
    "--probe-size": (["--probe-size", "2"], "--probe-size must be >= 4; got 2"),
    "--object-shape": (
        ["--probe-size", "32", "--object-shape", "20", "100"],
        "--object-shape (20, 100) must be at least --probe-size 32 in each axis",
    ),
    "--photons huge": (["--photons", "1e30"], "--photons must be <= 1e+18"),
    "--photons zero": (["--photons", "0"], "--photons must be > 0"),
    "--seed": (["--seed", "-1"], "--seed must be >= 0; got -1"),
}


@pytest.mark.parametrize("case", sorted(SIMULATE))
def test_simulate_names_the_flag(tmp_path, capsys, case):
    argv, message = SIMULATE[case]
    err = _error(capsys, "simulate", "--out", tmp_path / "src.npz", *argv)
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_simulate_into_a_folder_asks_for_a_file_name(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    err = _error(capsys, "simulate", "--out", tmp_path / "data", "--overwrite", "--n-scans", "20")
    assert f"--out {tmp_path / 'data'} is a folder; give a file name" in err
    assert ".tmp" not in err and list((tmp_path / "data").iterdir()) == []


def test_an_ambiguous_layout_asks_for_the_flag(tmp_path, capsys):
    d = simulate_dataset(n_scans=16, probe_size=16, object_shape=(40, 40), seed=1)
    write_npz(tmp_path / "sq.npz", d)
    err = _error(capsys, "make", "--source", tmp_path / "sq.npz", "--output", tmp_path / "fx.npz")
    assert "pass --layout legacy" in err and "--layout canonical" in err
    assert (
        main(
            [
                "ptycho",
                "make",
                "--source",
                str(tmp_path / "sq.npz"),
                "--output",
                str(tmp_path / "fx.npz"),
                "--subset-size",
                "16",
                "--layout",
                "legacy",
            ]
        )
        == 0
    )


def test_integer_counts_are_refused_with_the_conversion(small_data, tmp_path, capsys):
    counts = np.round((small_data["diffraction"] * 1e3) ** 2).astype(np.uint16)
    write_npz(tmp_path / "counts.npz", dict(small_data, diffraction=counts))
    err = _error(
        capsys, "make", "--source", tmp_path / "counts.npz", "--output", tmp_path / "fx.npz"
    )
    assert "diffraction: expected float32 or float64; found <u2" in err
    assert "sqrt(counts) / scale" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.npz"]


def test_make_help_names_the_sidecar_it_writes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ptycho", "make", "--help"])
    assert "--output with .json in place of .npz" in " ".join(capsys.readouterr().out.split())
    src, out = tmp_path / "src.npz", tmp_path / "fx" / "spread.npz"
    argv = ["--n-scans", "40", "--probe-size", "16", "--object-shape", "48", "48"]
    assert main(["ptycho", "simulate", "--out", str(src), *argv]) == 0
    assert (
        main(["ptycho", "make", "--source", str(src), "--output", str(out), "--subset-size", "16"])
        == 0
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["spread.json", "spread.npz"]
