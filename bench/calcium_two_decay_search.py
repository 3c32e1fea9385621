"""Can a kernel with two decays be found from the fluorescence alone? Whiteness, on simulations.

``bench/calcium_two_decay.py`` measured what a kernel with a rise and two decays could buy with
the kernel fitted to the true spikes (an oracle). This script asks the next question, on
simulations first, before anything is built: does the estimator's own criterion, minimised over
two-decay kernels, find the simulated kernel, and do that kernel's spikes score above those of
the one-decay kernel the same criterion picks? Then (``--datasets``) the rule so fixed runs
once on ground-truth recordings.

Cases: ``calcium_kernel_references._simulated`` (bursts of ``1 + Poisson(1)`` spikes within
60 ms at 0.3 events/s, noise 0.15 of one spike's peak), 4 cells x 240 s each, one draw (seed
7) per case: at 60 Hz, rise 20 ms, the two-decay mixes 0.3 s (65 %) + 1.5 s and 0.15 s (70 %) +
1.0 s and one decay of 0.6 s (the control: the criterion must not invent a second decay); at
122 Hz, rise 2 ms, a mix like the one fitted to DS30's true spikes (0.1 s, 81 %, + 1.0 s) and
one decay of 0.36 s (DS30's estimate). ``--neuropil`` leaves in every cell what an
over-subtracted neuropil leaves (``calcium_kinetics.neuropil``, added x0.7, subtracted x1.0,
the other cells through the simulated kernel), after the same cells are drawn: there the
one-decay search errs long without its cap, and a second, slow decay might take the neuropil.

For every kernel of a grid (one decay, or two decays ``tau_1 < tau_2`` with the weight ``f`` of
the fast one; all peak-normalised, the rise fixed; decays not longer than the rise left out),
the criterion is :func:`nnfit.calcium.two_decay.two_decay_criteria` (each cell deconvolved by
:func:`nnfit.calcium.deconvolve_two_decay`, a constant baseline fitted jointly, ``lam = 2 sigma
||h||`` with the simulated noise as the decay search's ``REFINE_LAM_Z``; the sum of the squared
autocorrelations of the residual at lags 1 .. 1 s, as ``residual_whiteness``), summed over the
cells. The rise is the simulated one (``--rise
truth``) or nnfit's estimate (``--rise estimate``; a rise estimated long moves lag-0 r by more
than any decay does, so the two are kept apart).

``--datasets NAME ...`` runs the rule so fixed, once, on ground-truth datasets instead: the
kernel of :func:`nnfit.calcium.estimate_two_decay_kernel` (the criterion's minimum over
``two_decay_grid``, fixed before any recording was looked at, with nnfit's estimated rise and
each trace's estimated noise, on the traces the pooled estimator reads); it is scored beside nnfit's estimate and the criterion's one-decay
pick as ``bench/calcium_two_decay.py`` scores its kernels (the same recordings and solver, the
slow baseline projected out, time stamps), so its table sits beside that oracle's.

Printed per case (r as ``bench/calcium_accuracy.py`` scores: 40 ms bins, lag 0 / best lag
within +-2 frames, spikes at the frame, mean over cells): the simulated kernel, the
criterion's best one-decay kernel and its best kernel overall, each with its criterion and r,
and nnfit's own estimate (``estimate_kinetics_pooled``: rise and one decay) deconvolved by the
same solver. Not part of ``make test``.

Usage::

    .venv/bin/python bench/calcium_two_decay_search.py [--rates 60 122] [--rise truth|estimate]
        [--neuropil]
    .venv/bin/python bench/calcium_two_decay_search.py --datasets DS30-GCaMP8f-m-V1 ...
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool

import numpy as np
from threadpoolctl import threadpool_limits

from _record import recorded
from calcium_accuracy import DATASETS, load, rate_bins, score
from calcium_kernel_references import _simulated
from calcium_kinetics import neuropil
from calcium_two_decay import MAX_RECORDINGS, deconvolve_one
from nnfit.calcium import TwoDecayKernel, deconvolve_two_decay
from nnfit.calcium.estimate import (
    REFINE_LAM_Z,
    estimate_kinetics_pooled,
    estimate_noise,
    search_traces,
)
from nnfit.calcium.kernel import spike_time_offset
from nnfit.calcium.two_decay import two_decay_criteria, two_decay_grid

NOISE = 0.15
N_CELLS = 4
DURATION_S = 240.0

#: per frame rate: the rise, the cases (decays, weights) and the grid of tau_1, tau_2, f
SETUPS = {
    60.0: (
        0.02,
        {
            "0.3 s (65 %) + 1.5 s": ((0.3, 1.5), (0.65, 0.35)),
            "0.15 s (70 %) + 1.0 s": ((0.15, 1.0), (0.7, 0.3)),
            "one decay 0.6 s": ((0.6,), (1.0,)),
        },
        ([0.08, 0.12, 0.18, 0.27, 0.4, 0.6, 0.9], [0.6, 0.9, 1.35, 2.0, 3.0], [0.5, 0.7, 0.85]),
    ),
    122.0: (
        0.002,
        {
            "DS30-like 0.1 s (81 %) + 1.0 s": ((0.1, 1.0), (0.81, 0.19)),
            "one decay 0.36 s": ((0.36,), (1.0,)),
        },
        ([0.05, 0.075, 0.1, 0.15, 0.22, 0.33, 0.5], [0.5, 0.75, 1.1, 1.6, 2.4], [0.6, 0.75, 0.9]),
    ),
}

Kernel = tuple[float, float, float, float]  # (tau_rise, tau_1, tau_2, f); f = 1: one decay


def two_decay_kernel(kernel: Kernel, fs: float) -> TwoDecayKernel:
    """``f exp(-u/tau_1) + (1 - f) exp(-u/tau_2) - exp(-u/tau_rise)``, peak 1."""
    tr, t1, t2, f = kernel
    return TwoDecayKernel(tr, t1, t2 if f < 1.0 else t1, f, fs)


def spikes(y: np.ndarray, fs: float, kernel: Kernel, noise: float) -> np.ndarray:
    """The spikes of one trace with one kernel, deconvolved as the criterion deconvolves."""
    k = two_decay_kernel(kernel, fs)
    return deconvolve_two_decay(y, k, REFINE_LAM_Z * noise * k.norm, "constant").spikes


def run_case(
    fs: float, rise_mode: str, with_neuropil: bool, label: str, decays, weights, axes
) -> None:
    t0 = time.perf_counter()
    rise0 = SETUPS[fs][0]
    rng = np.random.default_rng(7)
    n = int(DURATION_S * fs)
    cells = [_simulated(rng, fs, n, 0.0, decays, weights, rise0) for _ in range(N_CELLS)]
    if with_neuropil:
        k0 = two_decay_kernel((rise0, decays[0], decays[-1], weights[0]), fs)
        for i, (y, t, st) in enumerate(cells):
            npil = neuropil(rng, n, fs, lambda s: np.array([k0.forward(row) for row in s]))
            cells[i] = (y + 0.7 * npil - 1.0 * npil, t, st)
    recs = [{"t": t, "fs": fs, "spikes": st} for _, t, st in cells]
    for r in recs:
        r["bins"] = rate_bins(r)
    tr_est, td_est = estimate_kinetics_pooled([c[0] for c in cells], fs)
    rise = tr_est if rise_mode == "estimate" else rise0
    truth = (rise, decays[0], decays[-1], weights[0])
    estimate = (tr_est, td_est, td_est, 1.0)
    kernels = [(rise, *k) for k in two_decay_grid(rise, *axes)]
    ys = [c[0] for c in cells]
    noise = [NOISE] * N_CELLS
    crit = dict(
        zip(
            kernels,
            two_decay_criteria(ys, fs, rise, [k[1:] for k in kernels], noise=noise, n_jobs=2),
            strict=True,
        )
    )
    crit[truth] = float(two_decay_criteria(ys, fs, rise, [truth[1:]], noise=noise)[0])
    crit[estimate] = float(two_decay_criteria(ys, fs, tr_est, [estimate[1:]], noise=noise)[0])
    one = min((k for k in kernels if k[3] == 1.0), key=crit.get)
    best = min(kernels, key=crit.get)
    res = {}
    for k in (truth, one, best, estimate):
        sc = np.array([score(r, spikes(y, fs, k, NOISE)) for r, y in zip(recs, ys, strict=True)])
        res[k] = (crit[k], sc[:, 0].mean(), sc[:, 1].mean())

    def row(name: str, k: Kernel) -> str:
        tr, t1, t2, f = k
        shape = f"{t1:g} s" if f == 1.0 else f"{t1:g} s ({100 * f:.0f} %) + {t2:g} s"
        w, r0, rb = res[k]
        return f"| {label} | {name} | {tr:.4f} s, {shape} | {w:.4f} | {r0:.3f} / {rb:.3f} |"

    print(row("simulated kernel", truth))
    print(row("criterion's best, one decay", one))
    print(row("criterion's best, all", best))
    print(row("nnfit estimate", estimate))
    print(f"<!-- {label}: {len(kernels)} kernels, {time.perf_counter() - t0:.0f} s -->", flush=True)


def run_dataset(pool, name: str, every_recording: bool = False) -> None:
    """The rule fixed on the simulations, run once on a ground-truth dataset.

    The kernel: that of ``estimate_two_decay_kernel``, the minimum of the criterion over
    ``two_decay_grid`` with nnfit's estimated rise, on the traces the pooled estimator reads
    (``search_traces``; the noise from ``estimate_noise``). Scored against nnfit's
    estimate by ``calcium_two_decay.deconvolve_one`` (exact, the slow baseline projected out,
    nnfit's lam rule, spikes at the frame and at the time stamp of the rise and the slow decay)
    on the recordings ``calcium_two_decay.py`` scores (``every_recording``: on all of them, as
    ``bench/calcium_accuracy.py`` scores OASIS).
    """
    t0 = time.perf_counter()
    every = load(name, False)
    fs = float(np.median([r["fs"] for r in every]))
    t1 = time.perf_counter()
    tr_est, td_est = estimate_kinetics_pooled([r["y"] for r in every], fs)
    t_one = time.perf_counter() - t1
    t1 = time.perf_counter()
    sub = search_traces([r["y"] for r in every], fs)
    noise = [float(estimate_noise(y, fs)[0]) for y in sub]
    kernels = [(tr_est, *k) for k in two_decay_grid(tr_est)]
    values = two_decay_criteria(sub, fs, tr_est, [k[1:] for k in kernels], noise=noise, n_jobs=2)
    t_two = time.perf_counter() - t1
    crit = dict(zip(kernels, values, strict=True))
    m = len(sub)
    one = min((k for k in kernels if k[3] == 1.0), key=crit.get)
    best = min(kernels, key=crit.get)
    worst = 0.0
    recs = every if every_recording or len(every) <= MAX_RECORDINGS else every[::4]
    for r in recs:
        r["bins"] = rate_bins(r)
    chosen = {
        "nnfit estimate": ((tr_est, td_est, td_est, 1.0), None),
        "criterion's best, one decay": (one, crit[one]),
        "criterion's best, all": (best, crit[best]),
    }
    for label, (k, w) in chosen.items():
        off = spike_time_offset(k[0], k[2], fs)
        res = pool.map(deconvolve_one, [(r, two_decay_kernel(k, fs), off) for r in recs])
        frame = np.mean([o[0] for o in res], axis=0)
        stamped = np.mean([o[1] for o in res], axis=0)
        tr, t1, t2, f = k
        shape = f"{t1:.3g} s" if f == 1.0 else f"{t1:.3g} s ({100 * f:.0f} %) + {t2:.3g} s"
        crit_s = "-" if w is None else f"{w / m:.4f}"
        print(
            f"| {name} ({len(recs)} of {len(every)}) | {label} | {tr:.4f} s, {shape} | {crit_s} | "
            f"{frame[0]:.3f} / {frame[1]:.3f} | {stamped[0]:.3f} / {stamped[1]:.3f} |",
            flush=True,
        )
        worst = max(worst, max(o[2] for o in res))
    print(
        f"<!-- {name}: {len(kernels)} kernels, {time.perf_counter() - t0:.0f} s, worst relative "
        f"gap of the scored solves {worst:.1e}; estimate_kinetics_pooled {t_one:.1f} s, the "
        f"two-decay search after it {t_two:.1f} s on both cores -->",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", choices=sorted(SETUPS), default=[60.0, 122.0])
    ap.add_argument("--rise", choices=("truth", "estimate"), default="truth")
    ap.add_argument(
        "--neuropil",
        action="store_true",
        help="leave an over-subtracted neuropil in every cell (calcium_kinetics' condition)",
    )
    ap.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASETS,
        metavar="NAME",
        help="instead of the simulations, run the rule once on these ground-truth datasets",
    )
    ap.add_argument(
        "--every-recording",
        action="store_true",
        help="with --datasets: score every recording, not every 4th of a dataset of more than 40",
    )
    args = ap.parse_args()
    if args.datasets is None and args.every_recording:
        ap.error("--every-recording scores real recordings: give it with --datasets NAME ...")
    if args.datasets and (
        args.neuropil or args.rise != "truth" or args.rates != ap.get_default("rates")
    ):
        ap.error(
            "--datasets runs the rule on real recordings (nnfit's estimated rise, their own "
            "frame rate); --rates, --rise and --neuropil choose simulations: drop them"
        )
    # one BLAS thread per worker: threaded dot products of forked workers oversubscribe the cores
    with recorded(), Pool(2, initializer=threadpool_limits, initargs=(1,)) as pool:
        if args.datasets:
            print(
                "\n| dataset (recordings scored) | kernel | rise, decays | whiteness (mean) "
                "| r at the frame | r at the time stamps |"
            )
            print("|---|---|---|---|---|---|")
            for name in args.datasets:
                run_dataset(pool, name, args.every_recording)
            return 0
        print("\n| case | kernel | rise, decays | whiteness (4 cells) | r lag 0 / best |")
        print("|---|---|---|---|---|")
        for fs in args.rates:
            _, cases, axes = SETUPS[fs]
            for label, (decays, weights) in cases.items():
                name = f"{fs:g} Hz {label}" + (" + neuropil" if args.neuropil else "")
                run_case(fs, args.rise, args.neuropil, name, decays, weights, axes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
