"""What the two-decay solver costs: ``deconvolve_two_decay`` beside the one-decay solvers.

Per kernel, ``--cells`` traces of ``--frames`` frames are simulated with a kernel of two decays
(Poisson spikes at 0.5 Hz, amplitudes 1 + Poisson(1), noise 0.2 of a spike's peak) and solved,
one trace per call on one core, with no baseline and ``lam = 1.5 sigma ||h||``:

- ``deconvolve_two_decay`` with the simulated kernel (certified; its worst relative gap and
  iteration count are printed);
- nnfit's one-decay exact solver (``deconvolve`` with ``baseline="none"``) and OASIS AR(2)
  (``oasisAR2``, its kernel delayed by a frame as in ``bench/calcium_speed_exact.py``), both
  with the one-decay kernel of the same rise and the slow decay: what a user pays today for
  the simpler model, not the same problem.

The minimum over ``--repeat`` runs of each solve is summed over the traces. Not part of
``make test``.

Usage::

    .venv/bin/python bench/calcium_two_decay_speed.py [--cells 8] [--frames 30000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from _record import recorded
from nnfit.calcium import TwoDecayKernel, deconvolve, deconvolve_two_decay
from nnfit.calcium.ar2 import AR2Coefficients
from nnfit.calcium.estimate import LAM_Z

NOISE = 0.2
#: (label, tau_rise, tau_decay, tau_decay2, fraction, fs)
KERNELS = [
    ("DS30's pick, 122 Hz", 0.002, 0.05, 0.5, 0.7, 122.0),
    ("60 Hz, 0.15 s (70 %) + 1 s", 0.02, 0.15, 1.0, 0.7, 60.0),
    ("DS14's pick, 60 Hz", 0.117, 0.8, 1.41, 0.85, 60.0),
    ("30 Hz, 0.6 s (50 %) + 4 s", 0.05, 0.6, 4.0, 0.5, 30.0),
]


def best_of(repeat: int, fn, *args, **kwargs) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def oasis_ar2(y: np.ndarray, tau_rise: float, tau_decay: float, fs: float, lam: float) -> None:
    from oasis.oasis_methods import oasisAR2

    c = AR2Coefficients(tau_rise, tau_decay, fs)
    oasisAR2(np.ascontiguousarray(y[1:]), c.g1, c.g2, lam=lam / c.alpha)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--frames", type=int, default=30_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(
        "\n| kernel | two decays, ms/trace (iterations, worst gap) | one decay (rise, slow decay):"
        " nnfit exact ms/trace | OASIS AR(2) ms/trace | two decays / OASIS |"
    )
    print("|---|---|---|---|---|")
    for label, tr, t1, t2, f, fs in KERNELS:
        k = TwoDecayKernel(tr, t1, t2, f, fs)
        rng = np.random.default_rng(0)
        T = a.frames
        s = (rng.random((a.cells, T)) < 0.5 / fs) * (1 + rng.poisson(1, (a.cells, T)))
        Y = np.stack([k.forward(row) for row in s]) + NOISE * rng.standard_normal((a.cells, T))
        lam2 = LAM_Z * NOISE * k.norm
        deconvolve_two_decay(Y[0], k, lam2, "none")
        deconvolve(Y[0], fs, tr, t2, lam=lam2, baseline="none")
        res = [deconvolve_two_decay(y, k, lam2, "none") for y in Y]
        r = a.repeat
        t_two = sum(best_of(r, deconvolve_two_decay, y, k, lam2, "none") for y in Y)
        t_one = sum(best_of(r, deconvolve, y, fs, tr, t2, lam=lam2, baseline="none") for y in Y)
        t_oasis = sum(best_of(r, oasis_ar2, y, tr, t2, fs, lam2) for y in Y)
        its = [int(x.iterations[0]) for x in res]
        gap = max(float(x.gap[0]) for x in res)
        n = a.cells
        print(
            f"| {label} | {1e3 * t_two / n:.1f} ({min(its)}-{max(its)}, {gap:.1e}) | "
            f"{1e3 * t_one / n:.1f} | {1e3 * t_oasis / n:.1f} | {t_two / t_oasis:.1f}x |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    with recorded(), threadpool_limits(1):
        raise SystemExit(main())
