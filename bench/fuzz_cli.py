"""A bigger run of the command-line fuzz cases (tests/cli/fuzz_cases.py), one capability per
subprocess with a timeout, several seeds. Prints a table of cases, failures and time.

Run: ``PYTHONPATH=src .venv/bin/python bench/fuzz_cli.py --cases 500 --seeds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _record import recorded

CASES = Path(__file__).resolve().parents[1] / "tests" / "cli" / "fuzz_cases.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=500, help="cases per capability and seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--capabilities", default="calcium,ptycho,spectral")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    args = ap.parse_args()
    env = dict(os.environ, MPLBACKEND="Agg")
    print(f"{'capability':<10} {'seed':>5} {'cases':>6} {'failures':>8} {'time s':>8}")
    bad = 0
    for cap in args.capabilities.split(","):
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as work:
                try:
                    proc = subprocess.run(
                        [sys.executable, str(CASES), cap, str(args.cases), str(seed), work],
                        capture_output=True,
                        text=True,
                        timeout=args.timeout,
                        env=env,
                    )
                except subprocess.TimeoutExpired:
                    print(f"{cap:<10} {seed:>5} {'-':>6} {'HANG':>8}")
                    bad += 1
                    continue
            if proc.returncode != 0:
                print(f"{cap:<10} {seed:>5} crashed (exit {proc.returncode}): {proc.stderr[-500:]}")
                bad += 1
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{cap:<10} {seed:>5} {r['cases']:>6} {r['failures']:>8} {r['time_s']:>8.1f}")
            for f in r["first"]:
                print("   ", f.splitlines()[0][:300])
            bad += r["failures"]
    return 1 if bad else 0


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
