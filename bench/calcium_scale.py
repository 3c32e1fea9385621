"""A 10,000-cell recording through ``nnfit calcium deconvolve``: bounded memory, killed, resumed.

1. Writes a seeded ``(cells, frames)`` float32 recording to ``DIR/recording.npy`` in chunks
   (``simulate_recording``; never held in memory whole).
2. Runs ``nnfit calcium deconvolve`` on it in a real process (kinetics, lam and baselines all
   estimated from the data) and SIGKILLs it once ``--kill-after`` blocks are on disk.
3. Reruns the same command, which resumes from the finished blocks, to the end.

Prints each run's wall time and peak resident memory (the child's ``ru_maxrss``) beside the
sizes of the input and of the outputs, and checks the result: every cell present, the count
of certified cells, and the spikes against an in-process ``deconvolve`` of a few cells with the
same kinetics. Not part of ``make test`` (minutes, gigabytes of disk)::

    .venv/bin/python bench/calcium_scale.py --dir /tmp/nnfit-scale      # 10,000 x 30,000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _record import recorded


def write_recording(path: Path, cells: int, frames: int, fs: float, chunk: int = 250) -> float:
    from nnfit.calcium import simulate_recording

    t0 = time.perf_counter()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(cells, frames))
    for i, c0 in enumerate(range(0, cells, chunk)):
        n = min(chunk, cells - c0)
        rec = simulate_recording(
            n,
            frames,
            fs=fs,
            tau_rise=0.05,
            tau_decay=0.5,
            rate_hz=0.5,
            noise=0.15,
            baseline=1.0,
            seed=1000 + i,
        )
        arr[c0 : c0 + n] = rec.traces
    arr.flush()
    del arr
    return time.perf_counter() - t0


def run(cmd: list[str], kill_after: int | None, partial: Path) -> tuple[float, float, int, int]:
    """(wall s, peak RSS GiB, return code, blocks on disk when killed or finished)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    blocks = 0
    while True:  # wait4, not poll(): it reaps the child and returns its resource usage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.2)
        if kill_after is not None and partial.is_dir():
            blocks = len(list(partial.glob("block_*.npz")))
            if blocks >= kill_after:
                proc.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
    proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode
    if code not in (0, -signal.SIGKILL):
        sys.stderr.write(proc.stderr.read() if proc.stderr else "")
        raise SystemExit(f"nnfit exited with {code}")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20, code, blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/nnfit-scale"))
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=30_000)
    ap.add_argument("--fs", type=float, default=30.0)
    ap.add_argument("--block-cells", type=int, default=256)
    ap.add_argument("--kill-after", type=int, default=10, help="blocks on disk before SIGKILL")
    ap.add_argument("--keep", action="store_true", help="keep DIR afterwards")
    a = ap.parse_args()

    a.dir.mkdir(parents=True, exist_ok=True)
    npy, out = a.dir / "recording.npy", a.dir / "out"
    shutil.rmtree(out, ignore_errors=True)
    t_gen = write_recording(npy, a.cells, a.frames, a.fs)
    print(
        f"wrote {npy} ({npy.stat().st_size / 2**30:.2f} GiB float32) in {t_gen:.0f} s", flush=True
    )
    cmd = [
        sys.executable,
        "-m",
        "nnfit",
        "calcium",
        "deconvolve",
        str(npy),
        "--fs",
        str(a.fs),
        "--out",
        str(out),
        "--block-cells",
        str(a.block_cells),
        "--no-progress",
    ]
    n_blocks = -(-a.cells // a.block_cells)
    first = run(cmd, a.kill_after, out / ".partial")
    print(
        f"run 1: SIGKILL with {first[3]} of {n_blocks} blocks on disk after {first[0]:.0f} s",
        flush=True,
    )
    second = run(cmd, None, out / ".partial")
    meta = json.loads((out / "run.json").read_text())
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    certified = sum(r["converged"] == "True" for r in rows)
    spikes = np.load(out / "spikes.npy", mmap_mode="r")
    assert spikes.shape == (a.cells, a.frames) and len(rows) == a.cells

    # a few cells again in this process, same kinetics and settings
    from nnfit.calcium import deconvolve

    pick = np.linspace(0, a.cells - 1, 5).astype(int)
    y = np.asarray(np.load(npy, mmap_mode="r")[pick], dtype=np.float64)
    ref = deconvolve(y, a.fs, meta["tau_rise"], meta["tau_decay"], baseline="auto")
    diff = float(np.abs(ref.spikes - spikes[pick]).max() / max(ref.spikes.max(), 1e-300))

    out_gib = sum(p.stat().st_size for p in out.glob("*.npy")) / 2**30
    in_gib = npy.stat().st_size / 2**30
    print(
        f"\n{a.cells} cells x {a.frames} frames at {a.fs:g} Hz, blocks of {a.block_cells} cells, "
        f"{os.cpu_count()} cores; kinetics estimated: tau_rise {meta['tau_rise']:.4f} s, "
        f"tau_decay {meta['tau_decay']:.4f} s (simulated 0.05 / 0.5)\n"
    )
    print("| run | wall s | peak RSS GiB | blocks |")
    print("|---|---|---|---|")
    print(f"| 1 (SIGKILLed) | {first[0]:.0f} | {first[1]:.2f} | {first[3]} written |")
    print(
        f"| 2 (resumed) | {second[0]:.0f} | {second[1]:.2f} | "
        f"{meta.get('blocks_resumed', 0)} reused, {n_blocks} total |"
    )
    print(
        f"\ninput {in_gib:.2f} GiB (float32); outputs {out_gib:.2f} GiB (float64: spikes, "
        f"reconvolution, baseline); certified {certified}/{a.cells}; 5 cells re-solved in "
        f"process: max |diff| / max spike {diff:.1e}"
    )
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
