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

Each cell is 240 s long, 4 cells per recording set. Methods: ``increments`` (decay from the
increment proxy, :func:`nnfit.calcium.increments.decay_from_increments`, rise at short lags)
and the default ``estimate_kinetics_pooled`` (autocovariance, decay refined by residual
whiteness, rise at short lags). Prints the ratio estimate / truth for the decay and the rise,
and the estimation CPU time.

Usage::

    PYTHONPATH=src .venv/bin/python bench/calcium_kinetics.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from nnfit.calcium.ar2 import convolve_kernel
from nnfit.calcium.estimate import estimate_kinetics_pooled, normalized_autocov, rise_at_short_lags
from nnfit.calcium.increments import decay_from_increments

INDICATORS = {
    "GCaMP6f-like": (0.017, 0.66),
    "GCaMP6s-like": (0.12, 2.0),
    "GCaMP8f-like": (0.002, 0.48),
}
CONDITIONS = ("standard", "low SNR", "bursts", "neuropil", "0.1 Hz", "2 Hz")
N_CELLS, DURATION_S = 4, 240.0


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
        others = rng.poisson(0.5 / fs, (20, T)).astype(float)
        slow = ndimage.gaussian_filter1d(rng.standard_normal(T), 2.0 * fs)
        npil = 0.3 * slow / slow.std() + convolve_kernel(others, tr, td, fs).mean(axis=0)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 and 158 Hz only")
    ap.add_argument("--no-default", action="store_true", help="skip the default estimator")
    ap.add_argument(
        "--timing-cells",
        type=int,
        default=0,
        help="only time deconvolve (with estimation) vs OASIS on this many cells",
    )
    ap.add_argument("--timing-frames", type=int, default=30000)
    args = ap.parse_args()
    if args.timing_cells:
        return timing(args.timing_cells, args.timing_frames)
    rates = (30.0, 158.0) if args.quick else (30.0, 60.0, 122.0, 158.0)
    print(
        "| fs | indicator | condition | decay new/true | rise new/true | new s | "
        "decay prev/true | rise prev/true | prev s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    seed = 0
    for fs in rates:
        for ind, (tr, td) in INDICATORS.items():
            for cond in CONDITIONS:
                seed += 1
                y = list(simulate(fs, tr, td, cond, seed))
                t0 = time.process_time()
                tr_n, td_n = from_increments(y, fs)
                t_n = time.process_time() - t0
                row = f"| {fs:g} | {ind} | {cond} | {td_n / td:.2f} | {tr_n / tr:.2f} | {t_n:.1f} |"
                if args.no_default:
                    row += " - | - | - |"
                else:
                    t0 = time.process_time()
                    tr_p, td_p = estimate_kinetics_pooled(y, fs)
                    t_p = time.process_time() - t0
                    row += f" {td_p / td:.2f} | {tr_p / tr:.2f} | {t_p:.1f} |"
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
