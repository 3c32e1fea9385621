"""Kinetics per recording: pooled, each recording's own, and shrunk towards the pooled decay.

``nnfit.calcium.estimate_kinetics_per_recording`` gives each recording a decay between the
pooled one and its own, by how much the recordings disagree beyond what their split halves
show of the estimator's noise. Three ways of giving recordings their kinetics, each scored by
the correlation of inferred and true spikes:

- ``pooled``: ``estimate_kinetics_pooled`` over all recordings, every recording the same;
- ``own``: each recording's own decay (``estimate_kinetics_pooled([y])``), the pooled rise;
- ``shrunk``: ``estimate_kinetics_per_recording`` (the pooled rise, each decay shrunk).

Part 1 (``--simulate``), simulations: 8 recordings of one double exponential (GCaMP6f-like
0.017 / 0.66 s, 6s-like 0.12 / 2.0 s), every recording's decay the same or drawn log-normal
with SD 0.3 in log; 30 Hz x 240 s at noise 0.2 and 0.5, and 158 Hz x 60 s at noise 0.2;
Poisson spikes at 0.5 Hz; two seeds. r of Gaussian-smoothed (33 ms) inferred and true spikes,
mean over recordings, as a difference from ``pooled``.

Part 2 (default), the four CASCADE ground-truth datasets, scored as
``bench/calcium_accuracy.py`` scores ``nnfit (estimated)`` (r in 40 ms bins at lag 0 / best lag
within +-2 frames, time stamps, lam per recording from its noise).

Usage::

    PYTHONPATH=src:bench .venv/bin/python bench/calcium_per_recording.py [--simulate]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from _record import recorded
from nnfit.calcium import (
    deconvolve,
    estimate_kinetics_per_recording,
    estimate_kinetics_pooled,
)
from nnfit.calcium.ar2 import convolve_kernel

KERNELS = {"GCaMP6f-like": (0.017, 0.66), "GCaMP6s-like": (0.12, 2.0)}
CONDITIONS = ((30.0, 240.0, 0.2), (30.0, 240.0, 0.5), (158.0, 60.0, 0.2))
N_RECORDINGS = 8


def ways(ys: list[np.ndarray], fs: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(tau_rise, tau_decay)`` per recording for each way of pooling."""
    n = len(ys)
    tr_p, td_p = estimate_kinetics_pooled(ys, fs)
    own = np.array([estimate_kinetics_pooled([y], fs)[1] for y in ys])
    return {
        "pooled": (np.full(n, tr_p), np.full(n, td_p)),
        "own": (np.minimum(tr_p, 0.5 * own), own),
        "shrunk": estimate_kinetics_per_recording(ys, fs),
    }


def simulated() -> None:
    def r(s_hat: np.ndarray, s: np.ndarray, fs: float) -> float:
        w = max(1.0, 0.033 * fs)
        a, b = (ndimage.gaussian_filter1d(v, w) for v in (s_hat, s))
        return float(np.corrcoef(a, b)[0, 1])

    print("fs, duration, noise | kernel | decay spread | r pooled | own - pooled | shrunk - pooled")
    diffs: dict[tuple[float, str], list[float]] = {}
    for k, (fs, dur, noise) in enumerate(CONDITIONS):
        for j, (name, (tr, td)) in enumerate(KERNELS.items()):
            for sig in (0.0, 0.3):
                for seed in (0, 1):
                    rng = np.random.default_rng([k, j, int(10 * sig), seed])
                    T = int(dur * fs)
                    tds = td * np.exp(sig * rng.standard_normal(N_RECORDINGS))
                    ss = [rng.poisson(0.5 / fs, T).astype(float) for _ in tds]
                    ys = [
                        convolve_kernel(s[None], tr, d, fs)[0] + noise * rng.standard_normal(T)
                        for s, d in zip(ss, tds, strict=True)
                    ]
                    score = {}
                    for way, (trs, tdw) in ways(ys, fs).items():
                        score[way] = np.mean(
                            [
                                r(deconvolve(y[None], fs, a, b).spikes[0], s, fs)
                                for y, s, a, b in zip(ys, ss, trs, tdw, strict=True)
                            ]
                        )
                    for way in ("own", "shrunk"):
                        diffs.setdefault((sig, way), []).append(score[way] - score["pooled"])
                    print(
                        f"{fs:.0f} Hz, {dur:.0f} s, {noise} | {name} | {sig} (seed {seed}) | "
                        f"{score['pooled']:.4f} | {score['own'] - score['pooled']:+.4f} | "
                        f"{score['shrunk'] - score['pooled']:+.4f}",
                        flush=True,
                    )
    for (sig, way), d in sorted(diffs.items()):
        a = np.array(d)
        print(
            f"decay spread {sig}: {way} - pooled mean {a.mean():+.4f}, min {a.min():+.4f}, "
            f"max {a.max():+.4f}, higher in {int((a > 0).sum())} of {a.size}"
        )


def real() -> None:
    from calcium_accuracy import DATASETS, load, mean_scores, rate_bins, run_nnfit

    print("dataset | recordings | pooled decay | shrunk decays | r pooled | r own | r shrunk | s")
    for name in DATASETS:
        t0 = time.perf_counter()
        recs = load(name, False)
        for rec in recs:
            rec["bins"] = rate_bins(rec)
        fs = float(np.median([rec["fs"] for rec in recs]))
        kin = ways([rec["y"] for rec in recs], fs)
        scores = {}
        for way, (trs, tds) in kin.items():
            out = [run_nnfit(rec, a, b) for rec, a, b in zip(recs, trs, tds, strict=True)]
            scores[way] = mean_scores(recs, [o[0] for o in out], [o[1].time_offset for o in out])
        td = kin["shrunk"][1]
        print(
            f"{name} | {len(recs)} | {kin['pooled'][1][0]:.3f} s | {td.min():.3f}-{td.max():.3f} s"
            + "".join(f" | {scores[w][0]:.3f} / {scores[w][1]:.3f}" for w in kin)
            + f" | {time.perf_counter() - t0:.0f}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulate", action="store_true", help="the simulations instead of the data")
    args = ap.parse_args()
    with recorded():
        if args.simulate:
            simulated()
        else:
            real()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
