"""Kinetics estimation on a simulation grid: the decay and rise found, against the truth.

Grid: frame rates 30, 60, 122 and 158 Hz; GCaMP6f-, 6s- and 8f-like double exponentials
(the ground-truth-fitted kernels of CASCADE DS09, DS14 and DS30 rounded: rise / decay
0.017 / 0.66 s, 0.12 / 2.0 s, 0.002 / 0.48 s); conditions

- ``standard``: Poisson 0.5 Hz, noise 0.2 (a spike's peak is 1);
- ``low SNR``: noise 0.5;
- ``bursts``: burst onsets Poisson at 0.2 Hz, 1 + Poisson(2) spikes each within 50 ms;
- ``neuropil``: a slow neuropil trace (Gaussian-filtered noise, 2 s, SD 0.3, plus the mean
  calcium of 20 other cells) added with coefficient 0.7 and subtracted with 1.0;
- ``0.1 Hz`` and ``2 Hz``: firing rates.

plus CaLab 0.3.0's own simulator (``calab.simulate``) with its GCaMP6f and GCaMP6s presets
(rise / decay 0.1 / 0.6 s and 0.4 / 1.8 s, Markov spiking, random-walk drift, per-cell
amplitudes), rows ``CaLab GCaMP6f`` / ``CaLab GCaMP6s``.

Each cell is 240 s long, 4 cells per recording set. Methods: ``increments`` (decay from the
increment proxy, :func:`nnfit.calcium.increments.decay_from_increments`, rise at short lags)
and the default ``estimate_kinetics_pooled`` (autocovariance, decay refined by residual
whiteness, rise at short lags). Prints the ratio estimate / truth for the decay and the rise,
and the estimation CPU time.

``--cap`` prints instead the default estimate's decay / truth with and without the
autocovariance cap on the decay search. ``--search`` prints instead the default estimate's
decay / truth with the decay search's lam multiplier ``z`` (``REFINE_LAM_Z``) set to each of 1,
1.5, 2 and 3. With either, ``--two-decay`` replaces the grid by transients of two decays
(``TWO_DECAY``: bursts of 1 + Poisson(1) spikes at 0.3 events/s, rise 20 ms, 4 cells x 600 s,
``calcium_kernel_references._simulated``), the truth being the issue's reference, the decay
fitted from the true spike times with one amplitude per recording (``fit_kernel``).
``--timing-rates`` times ``estimate_kinetics_pooled`` (CPU, min of 3) on 8 CaLab GCaMP6f
cells, then 8 GCaMP6s cells, at 30 and 120 Hz of the same duration; with ``--two-decay``,
``estimate_two_decay_kernel`` instead (one thread).

Usage::

    PYTHONPATH=src .venv/bin/python bench/calcium_kinetics.py [--quick] [--search | --cap]
    PYTHONPATH=src .venv/bin/python bench/calcium_kinetics.py --cap --two-decay
    PYTHONPATH=src .venv/bin/python bench/calcium_kinetics.py --timing-rates 240
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from scipy import ndimage

from _record import recorded
from nnfit.calcium.ar2 import convolve_kernel
from nnfit.calcium.estimate import (
    REFINE_CAP_SPANS,
    estimate_kinetics_pooled,
    normalized_autocov,
    rise_at_short_lags,
)
from nnfit.calcium.increments import decay_from_increments

INDICATORS = {
    "GCaMP6f-like": (0.017, 0.66),
    "GCaMP6s-like": (0.12, 2.0),
    "GCaMP8f-like": (0.002, 0.48),
}
CONDITIONS = ("standard", "low SNR", "bursts", "neuropil", "0.1 Hz", "2 Hz")
N_CELLS, DURATION_S = 4, 240.0


CALAB = {"CaLab GCaMP6f": ("gcamp6f", 0.1, 0.6), "CaLab GCaMP6s": ("gcamp6s", 0.4, 1.8)}


def simulate_calab(
    fs: float, preset: str, n_cells: int, duration_s: float, seed: int
) -> np.ndarray:
    """Traces from CaLab's simulator with one of its indicator presets.

    Its spikes are drawn on a grid of ``spike_sim_hz`` (300 Hz by default) and binned by a
    whole number of steps per frame, which stretches the kernel by (300 / fs) / round(300 /
    fs) where that is not whole (1.8 s becomes 2.21 s at 122 Hz): the grid here is the
    smallest whole multiple of ``fs`` from 300 Hz, so the preset's kernel is the truth.
    """
    import calab

    cfg = getattr(calab.presets, preset)(
        fs_hz=fs,
        num_timepoints=int(duration_s * fs),
        num_cells=n_cells,
        seed=seed,
        spike_sim_hz=fs * math.ceil(300.0 / fs),
    )
    return np.asarray(calab.simulate(cfg).traces, dtype=float)


def cases(fs: float, seed0: int):
    """(indicator, condition, true rise, true decay, traces) over the grid, then CaLab's presets."""
    seed = seed0
    for ind, (tr, td) in INDICATORS.items():
        for cond in CONDITIONS:
            seed += 1
            yield ind, cond, tr, td, list(simulate(fs, tr, td, cond, seed))
    for name, (preset, tr, td) in CALAB.items():
        yield name, "preset", tr, td, list(simulate_calab(fs, preset, N_CELLS, DURATION_S, 1))


#: transients of two decays: (burst supralinearity, decays in seconds, their weights)
TWO_DECAY = {
    "0.3 s 65 % + 1.5 s 35 %": (0.0, (0.3, 1.5), (0.65, 0.35)),
    "the same, supralinear bursts": (0.5, (0.3, 1.5), (0.65, 0.35)),
    "0.5 s 50 % + 3.0 s 50 %": (0.0, (0.5, 3.0), (0.5, 0.5)),
    "0.15 s 70 % + 1.0 s 30 %": (0.0, (0.15, 1.0), (0.7, 0.3)),
}


def two_decay_cases(fs: float, seed0: int):
    """(family, mix, rise, reference decay, traces) for every mix of :data:`TWO_DECAY`."""
    from calcium_kernel_references import _simulated
    from nnfit.calcium.kernel_fit import fit_kernel

    n = int(600 * fs)
    for i, (label, (gamma, decays, weights)) in enumerate(TWO_DECAY.items()):
        rng = np.random.default_rng(seed0 + i)
        cells = [_simulated(rng, fs, n, gamma, decays, weights) for _ in range(N_CELLS)]
        ref = fit_kernel([(y, t, st, np.ones(len(st))) for y, t, st in cells], fs).tau_decay
        yield "two decays", label, 0.02, ref, [c[0] for c in cells]


def neuropil(rng, n: int, fs: float, respond) -> np.ndarray:
    """A neuropil trace: 20 other cells firing at 0.5 Hz seen through ``respond`` (spikes per
    frame, (20, n) -> responses), averaged, plus slow noise (2 s Gaussian, SD 0.3). The
    "neuropil" condition adds it x0.7 and subtracts it x1.0, as an over-subtraction leaves it."""
    others = rng.poisson(0.5 / fs, (20, n)).astype(float)
    slow = ndimage.gaussian_filter1d(rng.standard_normal(n), 2.0 * fs)
    return 0.3 * slow / slow.std() + respond(others).mean(axis=0)


def simulate(fs: float, tr: float, td: float, cond: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = int(DURATION_S * fs)
    rate = {"0.1 Hz": 0.1, "2 Hz": 2.0}.get(cond, 0.5)
    if cond == "bursts":
        onsets = rng.poisson(0.2 / fs, (N_CELLS, T))
        s = np.zeros((N_CELLS, T))
        for c, j in zip(*np.nonzero(onsets), strict=True):
            for _ in range(1 + rng.poisson(2.0)):
                k = j + int(rng.uniform(0, 0.05 * fs))
                if k < T:
                    s[c, k] += 1.0
    else:
        s = rng.poisson(rate / fs, (N_CELLS, T)).astype(float)
    y = convolve_kernel(s, tr, td, fs)
    noise = 0.5 if cond == "low SNR" else 0.2
    if cond == "neuropil":
        npil = neuropil(rng, T, fs, lambda s: convolve_kernel(s, tr, td, fs))
        y = y + 0.7 * npil - 1.0 * npil
    return y + noise * rng.standard_normal(y.shape)


def from_increments(traces: list[np.ndarray], fs: float) -> tuple[float, float]:
    n_lags = round(2.0 * fs)
    acs = [normalized_autocov(t, fs, n_lags)[0] for t in traces]
    ac = np.mean([a[: min(len(b) for b in acs)] for a in acs], axis=0)
    _, td = decay_from_increments(traces, fs)
    return rise_at_short_lags(ac, fs, td), td


def timing(n_cells: int, n_frames: int) -> int:
    """Wall time of ``deconvolve`` with kinetics and lam estimated, beside OASIS AR(2)."""
    from oasis.functions import deconvolve as oasis_deconvolve

    from nnfit.calcium import deconvolve, simulate_recording

    fs = 30.0
    rec = simulate_recording(n_cells, n_frames, fs=fs, tau_rise=0.05, tau_decay=0.66, seed=7)
    t0, c0 = time.perf_counter(), time.process_time()
    res = deconvolve(rec.traces, fs, n_jobs=-1)
    t_nn, c_nn = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    for y in rec.traces:
        np.random.seed(0)  # noqa: NPY002 - OASIS draws from the global generator (AR(2) roots)
        oasis_deconvolve(y.copy(), tau_d=None, tau_r=None, penalty=1)
    t_oa, c_oa = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"{n_cells} cells x {n_frames} frames at {fs:g} Hz, load {os.getloadavg()[0]:.1f}: "
        f"nnfit deconvolve (kinetics and lam estimated, n_jobs=-1) {t_nn:.1f} s wall, "
        f"{c_nn:.1f} s CPU (tau {res.tau_rise:.3f}/{res.tau_decay:.3f} s); OASIS AR(2) (own "
        f"estimates, one process) {t_oa:.1f} s wall, {c_oa:.1f} s CPU; CPU ratio "
        f"{c_nn / c_oa:.2f}"
    )
    return 0


def vary_setting(
    rates: tuple[float, ...],
    seeds: dict[float, int],
    name: str,
    settings: dict[str, float],
    source=cases,
) -> int:
    """Default estimate's decay / truth with the estimator's constant ``name`` set to each of
    ``settings`` (label -> value) in turn, and how many cases each keeps within 15 %, over the
    cases of ``source(fs, seed)`` (the grid, or :func:`two_decay_cases`)."""
    from nnfit.calcium import estimate

    default = getattr(estimate, name)
    within = dict.fromkeys(settings, 0)
    n = 0
    print("| fs | indicator | condition | " + " | ".join(settings) + " |")
    print("|---|---|---|" + "---|" * len(settings))
    try:
        for fs in rates:
            for ind, cond, _, td, y in source(fs, seeds.get(fs, 0)):
                out = []
                for label, value in settings.items():
                    setattr(estimate, name, value)
                    ratio = estimate_kinetics_pooled(y, fs)[1] / td
                    within[label] += abs(ratio - 1.0) <= 0.15
                    out.append(f"{ratio:.2f}")
                n += 1
                print(f"| {fs:g} | {ind} | {cond} | " + " | ".join(out) + " |", flush=True)
    finally:
        setattr(estimate, name, default)
    print("within 15 %: " + ", ".join(f"{label} {k}/{n}" for label, k in within.items()))
    return 0


def timing_rates(duration_s: float, two_decay: bool = False) -> int:
    """CPU time of estimate_kinetics_pooled (or, ``two_decay``, estimate_two_decay_kernel, one
    thread) at 30 and 120 Hz, same duration (min of 3)."""
    from nnfit.calcium import estimate_two_decay_kernel

    def estimate(y: list, fs: float) -> tuple[float, float]:
        if not two_decay:
            return estimate_kinetics_pooled(y, fs)
        k = estimate_two_decay_kernel(y, fs)
        return k.tau_rise, k.tau_decay2 if k.fraction < 1.0 else k.tau_decay

    for preset in ("gcamp6f", "gcamp6s"):
        cpu = {}
        for fs in (30.0, 120.0):
            y = list(simulate_calab(fs, preset, 8, duration_s, 1))
            runs = []
            for _ in range(3):
                t0 = time.process_time()
                tr, td = estimate(y, fs)
                runs.append(time.process_time() - t0)
            cpu[fs] = min(runs)
            print(
                f"{fs:g} Hz, 8 CaLab {preset} cells x {duration_s:g} s: {cpu[fs]:.2f} s CPU (min of "
                f"3; runs {', '.join(f'{r:.2f}' for r in runs)}), tau {tr:.3f} / {td:.3f} s"
                f"{' (slow decay)' if two_decay else ''}, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(f"{preset}: ratio 120 / 30 Hz: {cpu[120.0] / cpu[30.0]:.2f}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 and 158 Hz only")
    ap.add_argument("--rates", type=float, nargs="+", help="only these frame rates of the grid")
    ap.add_argument(
        "--seed-base",
        type=int,
        default=None,
        help="simulate every rate from this seed base (default: 18 x the rate's place in the "
        "grid, so --quick and the full grid give 158 Hz different seeds)",
    )
    ap.add_argument("--no-default", action="store_true", help="skip the default estimator")
    ap.add_argument("--no-increments", action="store_true", help="skip the increment estimator")
    ap.add_argument(
        "--timing-cells",
        type=int,
        default=0,
        help="only time deconvolve (with estimation) vs OASIS on this many cells",
    )
    ap.add_argument("--timing-frames", type=int, default=30000)
    ap.add_argument(
        "--search", action="store_true", help="decay / truth for the decay search's z in 1-3"
    )
    ap.add_argument(
        "--cap",
        action="store_true",
        help="decay / truth with and without the autocovariance cap on the decay search",
    )
    ap.add_argument(
        "--two-decay",
        action="store_true",
        help="with --cap or --search: transients of two decays instead of the grid; with "
        "--timing-rates: time the two-decay estimate",
    )
    ap.add_argument(
        "--timing-rates",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only time the estimation at 30 and 120 Hz on recordings of this duration",
    )
    args = ap.parse_args()
    if args.timing_cells:
        return timing(args.timing_cells, args.timing_frames)
    if args.timing_rates:
        return timing_rates(args.timing_rates, args.two_decay)
    rates = (30.0, 158.0) if args.quick else (30.0, 60.0, 122.0, 158.0)
    seeds = {fs: 18 * i for i, fs in enumerate(rates)}
    if args.rates:
        rates = tuple(args.rates)
    if args.seed_base is not None:
        seeds = {fs: args.seed_base for fs in rates}
    source = two_decay_cases if args.two_decay else cases
    if args.two_decay and not (args.search or args.cap):
        ap.error("--two-decay goes with --cap or --search")
    if args.search:
        zs = {f"z = {z:g}": z for z in (1.0, 1.5, 2.0, 3.0)}
        return vary_setting(rates, seeds, "REFINE_LAM_Z", zs, source)
    if args.cap:
        caps = {"with the cap": REFINE_CAP_SPANS, "without": np.inf}
        return vary_setting(rates, seeds, "REFINE_CAP_SPANS", caps, source)
    print(
        "| fs | indicator | condition | decay incr./true | rise incr./true | incr. s | "
        "decay default/true | rise default/true | default s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fs in rates:
        for ind, cond, tr, td, y in cases(fs, seeds.get(fs, 0)):
            row = f"| {fs:g} | {ind} | {cond} |"
            for skip, estimate in (
                (args.no_increments, from_increments),
                (args.no_default, estimate_kinetics_pooled),
            ):
                if skip:
                    row += " - | - | - |"
                    continue
                t0 = time.process_time()
                tr_e, td_e = estimate(y, fs)
                row += f" {td_e / td:.2f} | {tr_e / tr:.2f} | {time.process_time() - t0:.1f} |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    with recorded(peers=("oasis-deconv", "calab")):
        raise SystemExit(main())
