"""Signals: build workers die with their parent; SIGTERM cleans up like Ctrl-C; a second
``calcium deconvolve`` into the same folder is refused, naming the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnfit.calcium import simulate_recording

from .._proc import running


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _start(args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.Popen(
        # faulthandler: a command that hangs is made to print its threads' stacks (SIGABRT)
        [sys.executable, "-X", "faulthandler", "-m", "nnfit", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_or_dump(proc, timeout: float) -> int:
    """The exit code, or a failure showing where every thread of the hung command stood."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the command did not exit within {timeout} s of the signal:\n{err}")


def _wait_for_workers(proc, n, timeout=60.0) -> list[int]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        kids = [k for k in _children(proc.pid) if running(k)]
        # spawn start-up: a resource tracker plus the workers
        if len(kids) >= n:
            return kids
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"workers did not start: {proc.communicate()}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_build_workers_die_with_their_parent(tmp_path, sig):
    store = tmp_path / "c.h5"
    sim = _start(
        [
            "spectral",
            "simulate",
            "--out",
            store,
            "--spaxels",
            "48",
            "--populations",
            "48",
            "--tem-pix",
            "4000",
            "--obs-pix",
            "900",
        ],
        tmp_path,
    )
    assert sim.wait(timeout=300) == 0, sim.communicate()
    proc = _start(
        [
            "spectral",
            "build",
            store,
            "--workers",
            "2",
            "--s-chunk",
            "1",
            "--p-chunk",
            "4",
            "--no-progress",
        ],
        tmp_path,
    )
    kids = _wait_for_workers(proc, 3)
    time.sleep(1.0)
    if proc.poll() is not None:
        pytest.skip("the build finished before the signal; machine too fast for this size")
    os.kill(proc.pid, sig)
    _wait_or_dump(proc, 60)
    t0 = time.monotonic()
    while any(running(k) for k in kids) and time.monotonic() - t0 < 20:
        time.sleep(0.1)
    assert not any(running(k) for k in kids), "worker processes outlived their parent"
    # The store is still good and the build resumes to completion.
    done = _start(
        [
            "spectral",
            "build",
            store,
            "--workers",
            "0",
            "--s-chunk",
            "1",
            "--p-chunk",
            "4",
            "--no-progress",
        ],
        tmp_path,
    )
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert "complete" in out


@pytest.mark.parametrize("solver", ["exact", "fista"])
def test_second_deconvolve_into_the_same_folder_is_refused(tmp_path, solver):
    from nnfit.cli import main
    from nnfit.io.lock import run_lock

    np.save(tmp_path / "rec.npy", simulate_recording(2, 300, seed=1).traces)
    out = tmp_path / "res"
    out.mkdir()
    argv = [
        "calcium",
        "deconvolve",
        str(tmp_path / "rec.npy"),
        "--fs",
        "30",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--lam",
        "0.5",
        "--out",
        str(out),
        "--no-progress",
        "--solver",
        solver,
    ]
    with run_lock(out / ".nnfit-run.lock", what=f"output folder {out}"):
        proc = subprocess.run(
            [sys.executable, "-m", "nnfit", *argv], capture_output=True, text=True, timeout=300
        )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "is in use by another nnfit run (pid" in err[0], err
    assert str(os.getpid()) in err[0]
    assert sorted(p.name for p in out.iterdir()) == []
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {"spikes.npy", "reconvolution.npy", "run.json", "summary.csv"} <= names
    assert not [n for n in names if n.startswith(".")]


@pytest.mark.parametrize(
    ("raised", "arrives"), [(KeyboardInterrupt(), KeyboardInterrupt), (SystemExit(143), SystemExit)]
)
def test_a_signal_swallowed_in_a_destructor_reaches_the_main_program(monkeypatch, raised, arrives):
    """Ctrl-C or SIGTERM raised in ``__del__`` is delivered again, outside the hook."""
    from nnfit.cli import _terminate_as_exit, _unraisable

    monkeypatch.setattr(sys, "unraisablehook", _unraisable)
    restore = _terminate_as_exit()

    class Dies:
        def __del__(self):
            raise raised

    try:
        with pytest.raises(arrives):
            Dies()  # collected at once; Python hands its exception to the hook
            for _ in range(200):  # the main program goes on; the signal must reach it
                time.sleep(0.01)
    finally:
        restore()
