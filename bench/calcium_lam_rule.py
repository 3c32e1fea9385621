"""The lam rule's multiplier ``z`` (``lam = z noise ||h||_2``): simulations, then leave one out.

1. Simulations with spikes in continuous time (``calcium_timestamps.simulate``): 30, 60 and
   122 Hz x GCaMP6f/6s/8f-like kernels x noise 0.1 and 0.3, 4 cells x 300 s; kinetics
   estimated (``estimate_kinetics_pooled``), then ``deconvolve`` with each ``z``; r in 40 ms
   bins at lag 0 against the true spike times (time stamps applied).
2. The four ground-truth datasets (as ``calcium_accuracy.py`` scores them, kinetics pooled per
   dataset): mean r at lag 0 / best lag for each ``z``; then leave one dataset out: the ``z``
   with the highest mean best-lag r on three, scored on the fourth.

Usage::

    PYTHONPATH=src:bench .venv/bin/python bench/calcium_lam_rule.py [--real-only]
"""

from __future__ import annotations

import argparse

import numpy as np

import calcium_accuracy as accuracy
import calcium_timestamps as timestamps
from _record import recorded
from nnfit.calcium import deconvolve
from nnfit.calcium.estimate import estimate_kinetics_pooled, estimate_noise, lam_from_noise

Z_SIM = (0.5, 0.75, 1.0, 1.5, 2.0)
Z_REAL = (0.75, 1.0, 1.5, 2.0)


def simulations() -> None:
    rng = np.random.default_rng(7)
    scores = {z: [] for z in Z_SIM}
    for fs in (30.0, 60.0, 122.0):
        for name, (tr, td) in timestamps.KINETICS.items():
            for noise in (0.1, 0.3):
                y, times = timestamps.simulate(fs, tr, td, noise, 300.0, 4, rng)
                tre, tde = estimate_kinetics_pooled(list(y), fs)
                ft = np.arange(y.shape[1]) / fs
                row = []
                for z in Z_SIM:
                    lam = lam_from_noise(estimate_noise(y, fs), tre, tde, fs, z)
                    res = deconvolve(y, fs, tre, tde, lam=lam, n_jobs=-1)
                    r = np.mean(
                        [
                            timestamps.r_lag0(s, ft, res.time_offset, tt, 300.0)
                            for s, tt in zip(res.spikes, times, strict=True)
                        ]
                    )
                    scores[z].append(r)
                    row.append(f"{r:.3f}")
                print(f"| {fs:g} | {name} | {noise:g} | " + " | ".join(row) + " |", flush=True)
    print("| mean | | | " + " | ".join(f"{np.mean(scores[z]):.4f}" for z in Z_SIM) + " |")


def real() -> None:
    out: dict[str, dict[float, tuple[float, float]]] = {}
    for name in accuracy.DATASETS:
        recs = accuracy.load(name, False)
        for r in recs:
            r["bins"] = accuracy.rate_bins(r)
        fs0 = float(np.median([r["fs"] for r in recs]))
        tr, td = estimate_kinetics_pooled([r["y"] for r in recs], fs0)
        out[name] = {}
        for z in Z_REAL:
            runs = [accuracy.run_nnfit(r, tr, td, z) for r in recs]
            out[name][z] = accuracy.mean_scores(
                recs, [x[0] for x in runs], [x[1].time_offset for x in runs]
            )
        cells = " | ".join(f"{out[name][z][0]:.3f} / {out[name][z][1]:.3f}" for z in Z_REAL)
        print(f"| {name} | {cells} |", flush=True)
    print("\nleave one dataset out (z by mean best-lag r on the other three):")
    for held in accuracy.DATASETS:
        train = [d for d in accuracy.DATASETS if d != held]
        best = max(Z_REAL, key=lambda z: np.mean([out[d][z][1] for d in train]))
        print(f"  {held}: z = {best}: {out[held][best][0]:.3f} / {out[held][best][1]:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--real-only", action="store_true", help="skip the simulations: the datasets part only"
    )
    a = p.parse_args(argv)
    if not a.real_only:
        print("| fs | kinetics | noise | " + " | ".join(f"z = {z}" for z in Z_SIM) + " |")
        simulations()
    print("\n| dataset | " + " | ".join(f"z = {z}" for z in Z_REAL) + " |")
    real()
    return 0


if __name__ == "__main__":
    with recorded(peers=("oasis-deconv",)):
        raise SystemExit(main())
