"""Kill ``build_hypercube`` with SIGKILL at random moments, resume, compare with a clean build.

Each cycle starts ``build_hypercube`` in a fresh process group (serial, or with 2 worker
processes) and SIGKILLs the whole group either at a random time (often during start-up or
preparation) or a random number of tiles later plus a random fraction of a tile (during tile
computation and writes). After the cycles a final in-process build resumes,
and the models are compared (SHA-256 of the array) with an uninterrupted build of the same
store.

Run: ``.venv/bin/python bench/cube_kill_resume.py --cycles 30`` (a few minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import recorded
from nnfit.io import array_sha256
from nnfit.io.hdf5 import open_h5, read_superblock
from nnfit.spectral.diagnostics import hypercube_status
from nnfit.spectral.hypercube import build_hypercube
from nnfit.spectral.simulate import simulate_cube

_CHILD = (
    "import sys; from nnfit.spectral.hypercube import build_hypercube; "
    "build_hypercube(sys.argv[1], S_chunk=4, P_chunk=40, n_workers=int(sys.argv[2]), "
    "progress=False)"
)


def digest(path: Path) -> tuple[str, bool]:
    with open_h5(path, "r") as f:
        return array_sha256(f["HyperCube/models"][()]), bool(f["HyperCube"].attrs["complete"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nnfit-kill-"))
    try:
        sim = simulate_cube(320, 3, 120, n_tem_pix=4000, n_obs_pix=800, n_vel=81, seed=5)
        master = sim.to_h5(tmp / "master.h5")
        ref = tmp / "ref.h5"
        shutil.copyfile(master, ref)
        t0 = time.perf_counter()
        build_hypercube(ref, S_chunk=4, P_chunk=40, n_workers=0, progress=False)
        print(f"uninterrupted build: {time.perf_counter() - t0:.1f} s")
        want = digest(ref)
        path = tmp / "cube.h5"
        shutil.copyfile(master, path)
        rng = np.random.default_rng(args.seed)
        rows = []
        for i in range(args.cycles):
            nw = int(rng.choice([0, 2]))
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), str(nw)], start_new_session=True
            )
            t_start = time.monotonic()
            if rng.uniform() < 0.3:
                # at a random time: often during start-up or preparation
                time.sleep(float(rng.uniform(0.05, 1.5)))
            else:
                # a few tiles further on, then a random sub-tile moment
                goal = hypercube_status(path)["tiles_done"] + int(rng.integers(1, 12))
                while proc.poll() is None and time.monotonic() - t_start < 120:
                    if hypercube_status(path)["tiles_done"] >= goal:
                        break
                    time.sleep(0.01)
                time.sleep(float(rng.uniform(0.0, 0.03)))
            delay = time.monotonic() - t_start
            finished = proc.poll() is not None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            st = hypercube_status(path)
            rows.append((nw, delay, st["tiles_done"], read_superblock(path)["flags"], finished))
            print(
                f"cycle {i:2d}: workers={nw} killed after {delay:.2f} s, tiles done "
                f"{st['tiles_done']}/{st['tiles_total']}, superblock flags {rows[-1][3]}"
                + (" (had finished)" if finished else ""),
                flush=True,
            )
            if st["complete"]:
                break
        info = build_hypercube(path, S_chunk=4, P_chunk=40, n_workers=0, progress=False)
        got = digest(path)
        print(
            f"{len(rows)} kills ({sum(r[0] == 0 for r in rows)} serial, "
            f"{sum(r[0] == 2 for r in rows)} with 2 workers); final resume built "
            f"{info['tiles_built']} tiles, skipped {info['tiles_skipped']}"
        )
        print(f"models identical to the uninterrupted build: {got == want}")
        if got != want:
            raise SystemExit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
