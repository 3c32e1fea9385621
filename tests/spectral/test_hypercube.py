"""HyperCube build: stored rows against the direct reference, resume, chunk checks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.hypercube import build_hypercube
from nnfit.spectral.model import C_KMS, grid_step
from nnfit.spectral.store import load_problem

from .._proc import running


def _direct_row(prob, s, c, p):
    dlog = grid_step(prob.tem_pix)
    T = prob.T
    tpl = prob.templates_PT[p]
    padded = np.concatenate([[0.0], tpl, [0.0]])
    pos = np.arange(-1, T + 1, dtype=float)
    conv = np.zeros(T)
    for w, v in zip(prob.losvd[s, :, c], prob.vel_pix, strict=True):
        d = np.log1p(v / C_KMS) / dlog
        conv += w * np.interp(np.arange(T) - d, pos, padded, left=0.0, right=0.0)
    return prob.rebin @ conv


def test_stored_rows_equal_direct_convolution_then_rebin(built_store, rng):
    prob = load_problem(built_store)
    with open_h5(built_store, "r") as f:
        M = f["HyperCube/models"]
        assert M.dtype == np.float32
        assert M.chunks == (5, 1, 3, prob.L)
        assert bool(f["HyperCube"].attrs["complete"])
        for _ in range(12):
            s, c, p = (
                int(rng.integers(prob.S)),
                int(rng.integers(prob.C)),
                int(rng.integers(prob.P)),
            )
            ref = _direct_row(prob, s, c, p)
            row = M[s, c, p, :].astype(np.float64)
            np.testing.assert_allclose(row, ref, rtol=0, atol=2e-7 * np.abs(ref).max())


def test_model_cube_reproduces_simulated_model(built_store, small_sim):
    with open_h5(built_store, "r") as f:
        M = f["HyperCube/models"][()].astype(np.float64)
    y = np.einsum("scpl,cp->sl", M, small_sim.x_true)
    np.testing.assert_allclose(
        y, small_sim.model, rtol=0, atol=1e-6 * np.abs(small_sim.model).max()
    )


def test_zero_losvd_gives_zero_models(tmp_path):
    from nnfit.spectral.simulate import simulate_cube

    sim = simulate_cube(3, 2, 4, seed=2)
    sim.losvd[1] = 0.0
    sim.losvd[:, :, 1] = 0.0
    p = sim.to_h5(tmp_path / "z.h5")
    build_hypercube(p, S_chunk=2, n_workers=0)
    with open_h5(p, "r") as f:
        M = f["HyperCube/models"][()]
    assert not M[1].any() and not M[:, 1].any()
    assert M[0, 0].any()


def test_rerun_is_noop_and_chunk_mismatch_is_an_error(built_store):
    assert (
        build_hypercube(built_store, S_chunk=5, C_chunk=1, P_chunk=3, n_workers=0)["tiles_built"]
        == 0
    )
    with open_h5(built_store, "r+") as f:  # pretend the build was cut short
        f["HyperCube/_done"][0, 0, 0] = 0
        f["HyperCube"].attrs["complete"] = False
    with pytest.raises(ValueError, match="partial HyperCube"):
        build_hypercube(built_store, S_chunk=4, P_chunk=3, n_workers=0)
    info = build_hypercube(built_store, S_chunk=4, P_chunk=3, n_workers=0, overwrite=True)
    assert info["tiles_built"] == info["tiles_total"]
    with open_h5(built_store, "r") as f:
        assert f["HyperCube/models"].chunks[:3] == (4, 1, 3)


# ---------------------------------------------------------------------------------------------
# Kill and resume with real processes
# ---------------------------------------------------------------------------------------------

# The builder in a subprocess, throttled (40 ms per tile written, in the parent writer) so the
# test can kill it part-way on any machine; workers compute at full speed.
_BUILD = """
import sys, time
import nnfit.spectral.hypercube as hc
_slices = hc._slices
def slow_slices(*a):
    time.sleep(0.04)
    return _slices(*a)
hc._slices = slow_slices
hc.build_hypercube(sys.argv[1], S_chunk=2, C_chunk=1, P_chunk=20, n_workers=int(sys.argv[2]),
                   progress=False)
"""


def _models_digest(path):
    from nnfit.io import array_sha256

    with open_h5(path, "r") as f:
        return (
            array_sha256(f["HyperCube/models"][()]),
            array_sha256(f["HyperCube/_done"][()]),
            bool(f["HyperCube"].attrs["complete"]),
        )


def _start_build(path, n_workers):
    import os
    import subprocess
    import sys

    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.Popen(
        [sys.executable, "-c", _BUILD, str(path), str(n_workers)],
        start_new_session=True,  # its own process group: the kill takes its workers too
        env=env,
    )


def _tiles_done(path):
    from nnfit.spectral.diagnostics import hypercube_status

    try:
        return hypercube_status(path)["tiles_done"]
    except (OSError, KeyError):
        return 0


@pytest.fixture(scope="module")
def kill_problem(tmp_path_factory):
    from nnfit.spectral.simulate import simulate_cube

    d = tmp_path_factory.mktemp("kill")
    sim = simulate_cube(24, 2, 60, n_tem_pix=3000, n_obs_pix=600, n_vel=61, seed=11)
    master = sim.to_h5(d / "master.h5")
    ref = d / "reference.h5"
    import shutil

    shutil.copyfile(master, ref)
    build_hypercube(ref, S_chunk=2, C_chunk=1, P_chunk=20, n_workers=0, progress=False)
    return master, _models_digest(ref)


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [0, 2])
def test_sigkill_then_resume_is_byte_identical(tmp_path, kill_problem, n_workers):
    import os
    import shutil
    import signal
    import time

    from nnfit.io.hdf5 import read_superblock
    from nnfit.spectral.diagnostics import live_prefit_snapshot_from_models

    master, ref_digest = kill_problem
    path = tmp_path / "cube.h5"
    shutil.copyfile(master, path)
    total = 12 * 2 * 3
    import matplotlib.figure  # noqa: F401  (imported before the race starts)

    killed_at = []
    flags_seen = []
    snapshot_done = False
    delays = np.random.default_rng(n_workers).uniform(0.2, 2.0, 3)
    for round_ in range(3):
        # Round 0: once tiles appear, read a live snapshot (SWMR) and kill. Round 1: kill at a
        # random moment (start-up, preparation or tiles). Round 2: kill half-way through.
        proc = _start_build(path, n_workers)
        t_start = time.monotonic()
        n = 0
        while time.monotonic() - t_start < 120 and proc.poll() is None:
            n = _tiles_done(path)
            if round_ == 0 and n >= 1:
                # Freeze the live writer (file open, SWMR flags set) while the snapshot reads
                # it, so a fast build cannot finish during the plot and void the kill.
                os.killpg(proc.pid, signal.SIGSTOP)
                png = live_prefit_snapshot_from_models(path, tmp_path / "live.png")
                assert png.stat().st_size > 10_000
                snapshot_done = True
                break
            if round_ == 1 and (
                time.monotonic() - t_start >= delays[round_] or n >= 3 * total // 4
            ):
                break
            if round_ == 2 and n >= total // 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"build finished before the kill (round {round_}, n={n})"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at.append(_tiles_done(path))
        flags_seen.append(read_superblock(path)["flags"])
    assert flags_seen[0] != 0 and flags_seen[2] != 0  # as a killed SWMR writer leaves a file
    assert snapshot_done
    assert 0 < killed_at[0] <= killed_at[1] <= killed_at[2] < total
    info = build_hypercube(path, S_chunk=2, C_chunk=1, P_chunk=20, n_workers=0, progress=False)
    assert info["tiles_skipped"] == killed_at[-1]
    assert info["tiles_built"] == total - killed_at[-1]
    assert _models_digest(path) == ref_digest


@pytest.mark.slow
def test_unguarded_script_with_workers_fails_with_a_hint(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from nnfit.spectral import build_hypercube, simulate_cube\n"
        "p = simulate_cube(6, 2, 4, seed=0).to_h5('cube.h5')\n"
        "build_hypercube(p, S_chunk=2, n_workers=2, progress=False)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr and "n_workers=0" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_interrupted_pool_build_leaves_no_worker_running(small_store):
    import multiprocessing as mp

    from nnfit.spectral.hypercube import _run_pool

    prob = load_problem(small_store)
    todo = [(s, c, p) for s in range(prob.S) for c in range(prob.C) for p in range(prob.P)]
    workers: list = []
    before = {p.pid for p in mp.active_children()}  # other tests' processes, if any

    def write(key, tile):
        workers.extend(p for p in mp.active_children() if p.pid not in before)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run_pool(todo, (1, 1, 1), small_store, 2, write)
    assert len(workers) >= 2
    assert not [w.pid for w in workers if running(w.pid)], "workers still computing queued tiles"
