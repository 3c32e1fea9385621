"""Which solves the exact solvers certify: slow kinetics at high frame rates.

CaLab 0.3.0's GCaMP6s preset (rise 0.4 s, decay 1.8 s) is simulated at each ``--rates`` rate
(``--cells`` cells x ``--duration`` s, seed 1, as ``bench/calcium_kinetics.py``) and each cell
is deconvolved with given kinetics, ``deconvolve``'s defaults otherwise (lam rule, ``"auto"``
baseline, tol 1e-9), by

- the one-decay exact solver (``deconvolve(y, fs, tau_rise, tau_decay)``, truncated kernel);
- the two-decay solver on the same one decay (``tau_decay2=tau_decay, fraction=1``, the
  untruncated kernel: not the same problem, the same kinetics).

Printed per rate and kinetics: cells certified (relative duality gap <= 1e-9), the worst gap,
the iterations and the wall time on one core. Not part of ``make test``.

Usage::

    PYTHONPATH=src .venv/bin/python bench/calcium_certification.py [--rates 60 120 158]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from _record import recorded
from calcium_kinetics import simulate_calab
from nnfit.calcium import deconvolve

#: (rise, decay) in seconds: the preset, a faster rise, and slower kinetics
KINETICS = ((0.4, 1.8), (0.1, 1.8), (0.8, 3.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[60.0, 120.0, 158.0])
    ap.add_argument("--cells", type=int, default=4)
    ap.add_argument("--duration", type=float, default=240.0)
    args = ap.parse_args()
    print(
        "| rate | rise, decay (s) | one-decay solver: certified, worst gap, iterations, time "
        "| two-decay solver, f = 1: certified, worst gap, iterations, time |"
    )
    print("|---|---|---|---|")
    for fs in args.rates:
        y = simulate_calab(fs, "gcamp6s", args.cells, args.duration, 1)
        for tr, td in KINETICS:
            row = f"| {fs:g} Hz | {tr:g}, {td:g} |"
            for extra in ({}, {"tau_decay2": td, "fraction": 1.0}):
                deconvolve(y[:1, :600], fs, tr, td, **extra)  # compiled before the clock
                t0 = time.perf_counter()
                res = deconvolve(y, fs, tr, td, **extra)
                wall = time.perf_counter() - t0
                ok = int(np.sum(res.gap <= 1e-9))
                its = f"{res.iterations.min()}-{res.iterations.max()}"
                row += f" {ok}/{len(res.gap)}, {res.gap.max():.1e}, {its}, {wall:.1f} s |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    with recorded(peers=("calab",)), threadpool_limits(1):
        raise SystemExit(main())
