"""Fixture generator at real scale: timings, sizes and cross-process checksum determinism.

Run: ``.venv/bin/python bench/fixture_speed.py [--repeats 5]``. Simulates the Run1084-like
source (1087 scans, 64x64 patterns, (227, 226) object, legacy (H, W, N) float64), cuts 64-scan
fixtures with each strategy, verifies them, and cuts the same fixture in two fresh processes
to compare checksums. The design's own recipe (``np.savez_compressed`` of the first 64) is
timed alongside as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import recorded
from nnfit.ptycho import generate_fixture, simulate_dataset, verify_fixture, write_npz


def _time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fixture_bench_"))
    t_sim, data = _time(lambda: simulate_dataset(seed=0, layout="legacy"), 1)
    src = tmp / "run1084_like.npz"
    t_write, _ = _time(lambda: write_npz(src, data, compress=False), 1)
    print(
        f"simulate 1087 scans: {t_sim:.2f} s; write source: {t_write:.2f} s, "
        f"{src.stat().st_size / 1e6:.1f} MB"
    )

    for strategy in ("first", "stratified", "random"):
        out = tmp / f"{strategy}.npz"
        t, res = _time(
            lambda out=out, strategy=strategy: generate_fixture(
                src, out, subset_strategy=strategy, overwrite=True
            ),
            args.repeats,
        )
        t_ver, rep = _time(lambda out=out: verify_fixture(out, alignment=True), 1)
        print(
            f"cut 64 ({strategy:<10}): {t:.3f} s median of {args.repeats}; "
            f"{out.stat().st_size / 1e6:.2f} MB; verify+alignment {t_ver:.2f} s ok={rep.ok}; {res[2]}"
        )

    def baseline():
        src_npz = np.load(src)
        d = src_npz["diffraction"].transpose(2, 0, 1)[:64].astype(np.float32)
        np.savez_compressed(
            tmp / "baseline.npz",
            diffraction=d,
            objectGuess=src_npz["objectGuess"].astype(np.complex64),
            probeGuess=src_npz["probeGuess"].astype(np.complex64),
            xcoords=src_npz["xcoords"][:64],
            ycoords=src_npz["ycoords"][:64],
        )

    t_base, _ = _time(baseline, args.repeats)
    print(f"baseline np.savez_compressed recipe of the design: {t_base:.3f} s")

    sums = []
    for k in range(2):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nnfit",
                "fixture",
                "make",
                "--source",
                str(src),
                "--output",
                str(tmp / f"proc{k}.npz"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        sums.append(proc.stdout.split("checksum ")[1].strip())
    print(f"two processes: {sums[0]} {'==' if sums[0] == sums[1] else '!='} {sums[1]}")
    print(f"files under {tmp}")


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
