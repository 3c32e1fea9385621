"""Spectral commands never destroy their inputs, never hang on a cut-short store, and leave
no stub behind when they refuse."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nnfit.cli import main
from nnfit.io.hdf5 import open_h5


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("nnfit: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["spectral", "snapshot", "{store}", "--out", "{store}"],
        ["spectral", "dashboard", "{store}", "--out", "{store}"],
        ["spectral", "fit", "{store}", "--out", "{store}"],
        ["spectral", "fit", "{store}", "--stats", "{store}"],
        ["spectral", "fit", "{store}", "--method", "kaczmarz", "--out", "{store}"],
        ["spectral", "reconstruct", "{store}", "--x", "{x}", "--array-name", "DataCube"],
        ["spectral", "reconstruct", "{store}", "--x", "{x}", "--array-name", "HyperCube"],
    ],
)
def test_output_that_is_the_store_is_refused_up_front(argv, built_store, tmp_path, capsys):
    x = tmp_path / "x.npy"
    with open_h5(built_store) as f:
        n = int(np.prod(f["HyperCube/models"].shape[1:3]))
    np.save(x, np.ones(n))
    before = _digest(built_store)
    assert main([a.format(store=built_store, x=x) for a in argv]) == 2
    msg = _one_line_error(capsys)
    assert "input" in msg and ("--out" in msg or "--stats" in msg or "array_name" in msg)
    assert _digest(built_store) == before


def test_reconstruct_may_replace_its_own_model_cube(built_store, tmp_path, capsys):
    with open_h5(built_store) as f:
        n = int(np.prod(f["HyperCube/models"].shape[1:3]))
    for value in (1.0, 2.0):
        np.save(tmp_path / "x.npy", np.full(n, value))
        args = ["spectral", "reconstruct", str(built_store), "--x", str(tmp_path / "x.npy")]
        assert main([*args, "--array-name", "Mine"]) == 0
    with open_h5(built_store) as f:
        assert f["Mine"].attrs["complete"]


def _init_arrays(sim, folder):
    arrays = dict(
        tem_pix=sim.tem_pix,
        obs_pix=sim.obs_pix,
        vel_pix=sim.vel_pix,
        losvd=sim.losvd,
        datacube=sim.datacube,
        templates=sim.templates,
    )
    np.savez(folder / "good.npz", **arrays)
    bad = dict(arrays, losvd=-arrays["losvd"])
    np.savez(folder / "bad.npz", **bad)


def test_rejected_init_overwrite_keeps_the_good_store_and_leaves_no_stub(
    small_sim, tmp_path, capsys
):
    _init_arrays(small_sim, tmp_path)
    store = tmp_path / "cube.h5"
    # A rejected first init leaves nothing, so the rerun is not refused as "exists".
    assert main(["spectral", "init", "--npz", str(tmp_path / "bad.npz"), "--out", str(store)]) == 2
    assert "losvd must be >= 0" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "good.npz"]
    assert main(["spectral", "init", "--npz", str(tmp_path / "good.npz"), "--out", str(store)]) == 0
    before = _digest(store)
    bad = ["spectral", "init", "--npz", str(tmp_path / "bad.npz"), "--out", str(store)]
    assert main([*bad, "--overwrite"]) == 2
    _one_line_error(capsys)
    assert _digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.npz",
        "cube.h5",
        "cube.h5.lock",
        "good.npz",
    ]
    # --out naming an input array is refused before anything is read or written.
    assert main(["spectral", "init", "--npz", str(store), "--out", str(store), "--overwrite"]) == 2
    assert "is an input" in _one_line_error(capsys)
    assert _digest(store) == before


def test_template_meta_that_is_not_a_json_object_is_a_clear_error(small_sim, tmp_path, capsys):
    _init_arrays(small_sim, tmp_path)
    base = [
        "spectral",
        "init",
        "--npz",
        str(tmp_path / "good.npz"),
        "--out",
        str(tmp_path / "c.h5"),
    ]
    for meta in ("[" * 100000, "[1, 2]", "{"):
        assert main([*base, "--template-meta", meta]) == 2
        assert "--template-meta" in _one_line_error(capsys)
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.slow
def test_truncated_store_is_refused_within_seconds_by_every_command(built_store, tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(built_store.read_bytes()[: built_store.stat().st_size // 3])
    script = textwrap.dedent(
        f"""
        import sys
        from nnfit.cli import main
        for cmd in ("status", "build", "fit", "reconstruct", "dashboard", "snapshot",
                    "compress"):
            extra = ["--out", {str(tmp_path / "o.png")!r}] if cmd in ("dashboard", "snapshot") else []
            rc = main(["spectral", cmd, {str(cut)!r}, *extra])
            print(cmd, rc, flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    lines = proc.stdout.split()
    assert proc.returncode == 0, proc.stderr
    assert lines[1::2] == ["2"] * 7, proc.stdout
    errors = [e for e in proc.stderr.splitlines() if e.startswith("nnfit: error")]
    assert len(errors) == 7 and all("truncated HDF5 file" in e and "cut.h5" in e for e in errors)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_init_from_an_empty_npz_is_one_line_and_writes_nothing(small_sim, tmp_path, capsys):
    np.savez(tmp_path / "empty.npz")
    store = tmp_path / "cube.h5"
    argv = ["spectral", "init", "--npz", str(tmp_path / "empty.npz"), "--out", str(store)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "missing required arrays: tem_pix" in err and "empty.npz holds none of them" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npz"]
    # over an existing store (--overwrite): refused before anything is touched
    _init_arrays(small_sim, tmp_path)
    assert main(["spectral", "init", "--npz", str(tmp_path / "good.npz"), "--out", str(store)]) == 0
    before = _digest(store)
    assert main([*argv, "--overwrite"]) == 2
    _one_line_error(capsys)
    assert _digest(store) == before


def test_damaged_attribute_metadata_is_one_line_not_a_traceback(small_store, capsys):
    # found by bench/fuzz_cli.py: h5py raised RuntimeError ("incorrect metadata checksum")
    # reading the attributes of a store with one flipped byte
    data = small_store.read_bytes()
    blocks = [i for i in range(len(data) - 4) if data[i : i + 4] == b"FHDB"]
    assert blocks
    damaged = 0
    for at in blocks:
        small_store.write_bytes(data[: at + 20] + bytes([data[at + 20] ^ 0xFF]) + data[at + 21 :])
        rc = main(["spectral", "fit", str(small_store), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc in (0, 2) and len(err) <= 1
        if rc == 2 and "damaged HDF5 file" in err[0]:
            assert str(small_store) in err[0]
            damaged += 1
    assert damaged


def test_cube_options_on_the_array_path_are_refused_naming_them(small_sim, tmp_path, capsys):
    """--redshift or --target-sn with arrays: nothing would read them, so they are refused
    (were silently ignored), and nothing is written; without them the store is written."""
    _init_arrays(small_sim, tmp_path)
    store = tmp_path / "cube.h5"
    args = ["spectral", "init", "--npz", str(tmp_path / "good.npz"), "--out", str(store)]
    assert main([*args, "--redshift", "0.1", "--target-sn", "20"]) == 2
    err = _one_line_error(capsys)
    assert "--redshift, --target-sn: these apply to a FITS cube" in err
    assert not store.exists()
    assert main(args) == 0


@pytest.mark.parametrize(
    "flags",
    [
        ["--kernel", "linear"],
        ["--kernel", "fourier", "--vsyst", "0"],
        ["--safety-pad-px", "50"],
        ["--convention", "ppxf"],
        ["--flux-scale", "data"],
        ["--medium-templates", "air"],
    ],
)
def test_array_options_with_a_fits_cube_are_refused_naming_them(tmp_path, capsys, flags):
    """The array path's model options would be ignored with a FITS cube (the store was
    'fourier', vsyst 0, pad 2 whatever was given): refused, even at their array defaults."""
    pytest.importorskip("astropy")
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    info = write_ifu_demo(tmp_path / "demo", n_side=2, n_components=1, seed=6)
    store = tmp_path / "s.h5"
    argv = ["spectral", "init", str(info["cube"]), "--templates", str(info["templates"])]
    assert main([*argv, "--losvd", str(info["losvd"]), *flags, "--out", str(store)]) == 2
    err = _one_line_error(capsys)
    named = [f for f in flags if f.startswith("--")]
    assert err.startswith(f"nnfit: error: {', '.join(named)}: these ")
    assert not store.exists()
