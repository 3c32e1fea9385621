"""Full disk on a real 2 MB tmpfs: "disk full" in the error, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def _nnfit(*args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "nnfit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_spectral_simulate_on_a_full_disk(tiny_disk, tmp_path):
    out = tiny_disk / "c.h5"
    r = _nnfit(
        "spectral",
        "simulate",
        "--out",
        out,
        "--spaxels",
        "64",
        "--tem-pix",
        "3000",
        "--obs-pix",
        "600",
        cwd=tmp_path,
    )
    assert r.stderr.strip().splitlines()[-1].startswith("nnfit: error: disk full")
    assert list(tiny_disk.iterdir()) == []  # no stub store, no temporary file, no lock file
    assert r.returncode == 2


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["exact", "fista"])
def test_calcium_deconvolve_on_a_full_disk(tiny_disk, tmp_path, solver):
    np.save(tmp_path / "rec.npy", np.random.default_rng(0).normal(size=(200, 3000)))
    r = _nnfit(
        "calcium",
        "deconvolve",
        tmp_path / "rec.npy",
        "--fs",
        "30",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--lam",
        "0.5",
        "--solver",
        solver,
        "--no-progress",
        "--out",
        tiny_disk / "res",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error: disk full"), err
    assert list(tiny_disk.iterdir()) == []
