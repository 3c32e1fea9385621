"""Ctrl-C (a real SIGINT) mid-work in ``spectral compress`` and the Kaczmarz ``spectral fit``:
honoured at once (exit 130, "interrupted"), the store intact and usable by the next run.

The bound on the exit time is loose on purpose (the machine may be loaded): the work left
when the signal arrives takes far longer, so an ignored Ctrl-C still fails the test.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from nnfit.io.hdf5 import open_h5, read_superblock

pytestmark = pytest.mark.slow


def _start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "nnfit", *map(str, args)],
        cwd=cwd,
        env=dict(os.environ, MPLBACKEND="Agg"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait(cond, proc, timeout=120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the command never started its work"
        time.sleep(0.02)


def _interrupt(proc) -> tuple[float, str]:
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # an ignored Ctrl-C must not outlive the test
        proc.communicate()
        raise
    return time.monotonic() - t0, err


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ctrl_c_during_compress(tmp_path):
    # A store whose HyperCube (59 MB of incompressible float32) takes seconds to gzip.
    S, C, P, L, T, V = 128, 4, 96, 300, 400, 21
    store = tmp_path / "s.h5"
    rng = np.random.default_rng(0)
    with h5py.File(store, "w", libver=("v110", "v110")) as f:
        f["DataCube"] = rng.random((S, L))
        f["LOSVD"] = rng.random((S, V, C)).astype(np.float32)
        f["Templates"] = rng.random((P, T)).astype(np.float32)
        f["ObsPix"] = np.linspace(8.5, 8.6, L)
        g = f.create_group("HyperCube")
        g.create_dataset(
            "models", data=rng.random((S, C, P, L), dtype=np.float32), chunks=(16, 1, P, L)
        )
        g["_done"] = np.ones((S // 16, C, 1), dtype=np.uint8)
        g.attrs["complete"] = True
    before = _sha(store)
    proc = _start(["spectral", "compress", store], tmp_path)
    _wait(lambda: any(p.name.endswith(".tmp.h5") for p in tmp_path.iterdir()), proc)
    time.sleep(0.3)  # into the copy
    took, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["nnfit: interrupted"]
    assert took < 5.0, f"exited {took:.1f} s after Ctrl-C"
    assert _sha(store) == before
    assert {p.name for p in tmp_path.iterdir()} <= {"s.h5", "s.h5.lock"}


def test_ctrl_c_during_kaczmarz_fit(tmp_path, built_store):
    args = ["spectral", "fit", built_store, "--method", "kaczmarz", "--no-progress"]
    proc = _start([*args, "--epochs", "100000"], tmp_path)
    # the tracker's writer has switched the store to SWMR mode: epochs are running
    _wait(lambda: read_superblock(built_store)["flags"] & 0x04, proc)
    time.sleep(0.5)
    took, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["nnfit: interrupted"]
    assert took < 5.0, f"exited {took:.1f} s after Ctrl-C"
    assert read_superblock(built_store)["flags"] == 0  # closed cleanly
    with open_h5(built_store) as f:
        assert np.isfinite(f["Fit/x_latest"][()]).all()
    r = subprocess.run(
        [sys.executable, "-m", "nnfit", *map(str, args), "--epochs", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
