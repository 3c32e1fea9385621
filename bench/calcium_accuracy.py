"""Spike-inference accuracy on real ground truth, and on simulated drifting baselines.

Part 1, real data (``../shared/datasets/calcium-ground-truth/``: simultaneous imaging and
cell-attached recordings, 4 CASCADE datasets; ``--cascade DIR ...`` adds dataset folders of the
CASCADE repository, ``Ground_truth/<dataset>/*.mat``, read by
``nnfit.calcium.ground_truth.read_cascade``). Per dataset: Pearson r between the inferred and
the true spike rate in 40 ms bins (the spikefinder metric), at lag 0 and at the best lag within
+-2 frames, mean over recordings, for

- ``nnfit (estimated)``: kinetics pooled over the dataset's recordings from their
  autocovariances, the decay refined by deconvolution and the rise at short lags
  (``estimate_kinetics_pooled``, as ``deconvolve`` pools over the cells of a session), lam per
  recording from its noise, baseline ``"auto"``: nothing from the ground truth. Spikes are
  placed at nnfit's own time stamps, ``frame time + result.time_offset`` (a fraction of a
  frame that follows from the kernel alone, see ``nnfit.calcium.spike_time_offset``);
- ``nnfit (estimated), frame times``: the same spikes placed at the frame times, for
  comparison (the other solvers report at the frame);
- ``nnfit (two decays, estimated)`` (``--two-decay``): the kernel of
  ``estimate_two_decay_kernel`` pooled over the dataset's recordings (one decay kept where
  they show no second), each recording through ``deconvolve`` with it (lam from its noise,
  baseline ``"auto"``), spikes at its time stamps, and at the frame times;
- ``nnfit (indicator preset)``: the kinetics preset of the dataset's indicator
  (:mod:`nnfit.calcium.indicators`) given as ``tau_rise`` and ``tau_decay``, lam per recording
  from its noise, baseline ``"auto"``: one fixed kernel from the literature instead of the
  estimate (naming the indicator, ``deconvolve(..., indicator=...)``, makes it a prior on the
  estimate instead);
- ``nnfit (fitted)``: kinetics and the lam multiplier picked per dataset on a 3 x 3 x 3 grid
  around the estimate, by the mean best-lag r on every third recording, then scored on all
  (an upper reference: it uses the ground truth);
- ``OASIS AR(2)``: ``oasis.functions.deconvolve(y, tau_d=None, tau_r=None)`` (its own estimates of g,
  noise and baseline; L1 with the noise constraint). OASIS 0.3.2 draws from numpy's global
  generator when an AR(2) root falls outside [0, 1], so ``np.random.seed(0)`` precedes each call;
- ``ground truth`` kinetics: the double exponential fitted by least squares from the true spike
  times to the fluorescence with a free delay (``nnfit.calcium.kernel_fit.fit_kernel``), printed
  beside the estimate;
- ``AR(1) (suite2p)``: suite2p's problem: maximin baseline (Gaussian 10 frames, min/max over
  60 s), then OASIS AR(1) with ``lam = 0`` and ``tau`` = nnfit's estimated decay.

Part 2, simulated drift (amplitude 0.5, periods 60-300 s, 30 Hz, 20 min, 10 cells, noise 0.15,
0.5 Hz): correlation of inferred and true spikes (40 ms bins) for nnfit with each baseline model
(true kinetics, lam from the noise) and OASIS AR(2) (its own estimates, and the true kinetics).

Usage::

    .venv/bin/python bench/calcium_accuracy.py [--quick] [--two-decay]
        [--datasets NAME ...] [--cascade DIR ...] [--out bench-output/calcium_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from _record import current_record, recorded
from nnfit.calcium import deconvolve, simulate_recording
from nnfit.calcium.estimate import LAM_Z, estimate_kinetics_pooled
from nnfit.calcium.ground_truth import open_ground_truth, read_cascade
from nnfit.calcium.indicators import indicator_kinetics
from nnfit.calcium.kernel_fit import fit_kernel

GT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "calcium-ground-truth"
DATASETS = ["DS09-GCaMP6f-m-V1", "DS14-GCaMP6s-m-V1", "DS06-GCaMP6f-zf-aDp", "DS30-GCaMP8f-m-V1"]
BIN_S = 0.04
LAGS = range(-2, 3)


def load(name: str, quick: bool) -> list[dict]:
    """The recordings of a shared dataset (:func:`recordings`)."""
    return recordings(open_ground_truth(name, GT), quick)


def recordings(z: Mapping[str, np.ndarray], quick: bool) -> list[dict]:
    """The recordings of one dataset in the converted layout (``open_ground_truth``,
    ``read_cascade``); with ``quick`` about a sixth of them."""
    n = len(z["fs"])
    idx = range(n) if not quick else range(0, n, max(1, n // 6))
    recs = []
    for i in idx:
        t = z[f"time_{i}"]
        recs.append(
            {
                "y": z[f"fluo_{i}"].astype(np.float64),
                "t": t,
                "spikes": z[f"spikes_{i}"],
                "fs": float(z["fs"][i]),
                "cell": int(z["cell_id"][i]),
            }
        )
    return recs


def sources(datasets: list[str], cascade: list[Path]) -> list[tuple[str, Callable[[], Mapping]]]:
    """(name, opener) of each dataset: the shared conversions by name, CASCADE folders read
    as they are (named by the folder)."""
    out: list[tuple[str, Callable[[], Mapping]]] = [
        (name, lambda name=name: open_ground_truth(name, GT)) for name in datasets
    ]
    out += [(folder.name, lambda folder=folder: read_cascade(folder)) for folder in cascade]
    return out


def rate_bins(rec: dict) -> tuple[np.ndarray, np.ndarray]:
    """40 ms bin edges over the imaging window and the true spike counts in them."""
    t = rec["t"]
    edges = np.arange(t[0] - 0.5 / rec["fs"], t[-1] + 0.5 / rec["fs"] + BIN_S, BIN_S)
    true, _ = np.histogram(rec["spikes"], edges)
    return edges, true.astype(float)


def score(rec: dict, s: np.ndarray, offset_s: float = 0.0) -> tuple[float, float]:
    """(r at lag 0, best r over lags of +-2 frames) of inferred spikes s (per frame).

    Spike ``s[j]`` is placed at ``t[j] + offset_s``: the solver's own time stamp (OASIS and
    AR(1) report at the frame, 0; nnfit's ``DeconvolutionResult.time_offset`` follows from its
    kernel, see ``nnfit.calcium.spike_time_offset``).
    """
    edges, true = rec["bins"]
    rs = {}
    for lag in LAGS:
        shifted = np.zeros_like(s)
        if lag >= 0:
            shifted[lag:] = s[: len(s) - lag]
        else:
            shifted[:lag] = s[-lag:]
        inferred, _ = np.histogram(rec["t"] + offset_s, edges, weights=shifted)
        if inferred.std() == 0 or true.std() == 0:
            rs[lag] = 0.0
        else:
            rs[lag] = float(np.corrcoef(inferred, true)[0, 1])
    return rs[0], max(rs.values())


def run_nnfit(rec, tau_rise=None, tau_decay=None, z=LAM_Z, baseline="auto"):
    from nnfit.calcium.estimate import estimate_noise, lam_from_noise

    lam = None
    if tau_rise is not None:
        lam = lam_from_noise(estimate_noise(rec["y"], rec["fs"]), tau_rise, tau_decay, rec["fs"], z)
        lam = float(lam[0])
    res = deconvolve(rec["y"], rec["fs"], tau_rise, tau_decay, lam=lam, baseline=baseline)
    return res.spikes, res


def run_nnfit_two_decay(rec, kernel):
    """``deconvolve`` with a kernel of two decays, lam by its rule (``LAM_Z`` noise ``||h||``)."""
    res = deconvolve(
        rec["y"], rec["fs"], kernel.tau_rise, kernel.tau_decay, tau_decay2=kernel.tau_decay2,
        fraction=kernel.fraction,
    )  # fmt: skip
    return res.spikes, res


def run_oasis_ar2(rec):
    from oasis.functions import deconvolve as oasis_deconvolve

    np.random.seed(0)  # noqa: NPY002 - OASIS draws from the global generator (AR(2) roots)
    out = oasis_deconvolve(rec["y"].copy(), tau_d=None, tau_r=None, penalty=1)
    return np.asarray(out[1], dtype=float)


def maximin(y: np.ndarray, fs: float) -> np.ndarray:
    """suite2p's 'maximin' baseline: Gaussian (sigma 10 frames), then min and max over 60 s."""
    win = max(1, int(60.0 * fs))
    f = ndimage.gaussian_filter1d(y, 10.0)
    f = ndimage.minimum_filter1d(f, win)
    return ndimage.maximum_filter1d(f, win)


def run_ar1_suite2p(rec, tau_decay):
    from oasis.oasis_methods import oasisAR1

    y = rec["y"] - maximin(rec["y"], rec["fs"])
    g = float(np.exp(-1.0 / (tau_decay * rec["fs"])))
    _, s = oasisAR1(y.copy(), g, lam=0.0)
    return np.asarray(s, dtype=float)


def mean_scores(recs, spikes_list, offsets=None):
    offsets = [0.0] * len(recs) if offsets is None else offsets
    sc = np.array([score(r, s, o) for r, s, o in zip(recs, spikes_list, offsets, strict=True)])
    return float(sc[:, 0].mean()), float(sc[:, 1].mean())


def part_real(
    quick: bool, fit: bool, datasets: list[tuple[str, Callable[[], Mapping]]], two_decay: bool
) -> dict:
    results = {}
    for name, opener in datasets:
        t0 = time.perf_counter()
        recs = recordings(opener(), quick)
        for r in recs:
            r["bins"] = rate_bins(r)
        row = {}
        fs0 = float(np.median([r["fs"] for r in recs]))
        gt = fit_kernel(
            [(r["y"], r["t"], r["spikes"], np.ones(len(r["spikes"]))) for r in recs], fs0
        )
        t1 = time.perf_counter()
        tr0, td0 = estimate_kinetics_pooled([r["y"] for r in recs], fs0)
        est_s = time.perf_counter() - t1
        est = [run_nnfit(r, tr0, td0) for r in recs]
        row["nnfit (estimated)"] = mean_scores(
            recs, [e[0] for e in est], [e[1].time_offset for e in est]
        )
        row["nnfit (estimated), frame times"] = mean_scores(recs, [e[0] for e in est])
        kernel2 = None
        if two_decay:
            from nnfit.calcium import estimate_two_decay_kernel

            t1 = time.perf_counter()
            k2 = estimate_two_decay_kernel([r["y"] for r in recs], fs0, n_jobs=-1)
            kernel2 = {
                "tau_rise": k2.tau_rise,
                "tau_decay": k2.tau_decay,
                "tau_decay2": k2.tau_decay2,
                "fraction": k2.fraction,
                "estimation_seconds": round(time.perf_counter() - t1, 1),
            }
            two = [run_nnfit_two_decay(r, k2) for r in recs]
            row["nnfit (two decays, estimated)"] = mean_scores(
                recs, [e[0] for e in two], [e[1].time_offset for e in two]
            )
            row["nnfit (two decays), frame times"] = mean_scores(recs, [e[0] for e in two])
        try:
            preset = indicator_kinetics(name.split("-")[1])
        except ValueError:  # an indicator without a preset (jGCaMP7f, jGCaMP8m/s, ...)
            preset = None
        if preset is not None:
            pre = [run_nnfit(r, preset.tau_rise, preset.tau_decay) for r in recs]
            row["nnfit (indicator preset)"] = mean_scores(
                recs, [p[0] for p in pre], [p[1].time_offset for p in pre]
            )
        taus = np.array([[e[1].tau_rise, e[1].tau_decay] for e in est])
        kinds = [e[1].baseline_kind[0] for e in est]
        row["OASIS AR(2)"] = mean_scores(recs, [run_oasis_ar2(r) for r in recs])
        row["AR(1) (suite2p)"] = mean_scores(
            recs, [run_ar1_suite2p(r, e[1].tau_decay) for r, e in zip(recs, est, strict=True)]
        )
        fitted = None
        if fit:
            # grid around the pooled estimate, chosen on every third recording
            sub = recs[::3]
            best = (-np.inf, None)
            for td in td0 * np.array([0.5, 0.75, 1.0]):
                for tr in (max(0.25 / fs0, tr0 * 0.5), tr0, tr0 * 2.0):
                    tr = min(tr, 0.5 * td)
                    for z in (0.5, 1.0, 2.0):
                        fits = [run_nnfit(r, tr, td, z) for r in sub]
                        m = mean_scores(sub, [f[0] for f in fits], [f[1].time_offset for f in fits])
                        if m[1] > best[0]:
                            best = (m[1], (tr, td, z))
            tr_f, td_f, z_f = best[1]
            fitted = {"tau_rise": tr_f, "tau_decay": td_f, "z": z_f}
            fits = [run_nnfit(r, tr_f, td_f, z_f) for r in recs]
            row["nnfit (fitted)"] = mean_scores(
                recs, [f[0] for f in fits], [f[1].time_offset for f in fits]
            )
        results[name] = {
            "recordings": len(recs),
            "indicator_preset": None
            if preset is None
            else {"name": preset.name, "tau_rise": preset.tau_rise, "tau_decay": preset.tau_decay},
            "scores": row,
            "estimated_tau_rise": float(taus[0, 0]),
            "estimated_tau_decay": float(taus[0, 1]),
            "estimation_seconds": round(est_s, 1),
            "ground_truth_fit": {
                "tau_rise": gt.tau_rise,
                "tau_decay": gt.tau_decay,
                "delay": gt.delay,
                "r2": gt.r2,
            },
            "baseline_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
            "fitted": fitted,
            "two_decay_kernel": kernel2,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{name}: {len(recs)} recordings, {results[name]['seconds']} s", flush=True)
    return results


def part_drift(quick: bool) -> dict:
    from oasis.functions import deconvolve as oasis_deconvolve

    fs, T = 30.0, int(1200 * 30.0)
    n = 4 if quick else 10
    rows = {}
    for period in (60.0, 120.0, 300.0):
        rec = simulate_recording(n, T, rate_hz=0.5, noise=0.15, baseline=1.0, seed=int(period))
        t = np.arange(T) / fs
        phase = np.random.default_rng(int(period)).uniform(0, 2 * np.pi, n)[:, None]
        y = rec.traces + 0.5 * np.sin(2 * np.pi * t / period + phase)
        edges = np.arange(0, T / fs + BIN_S, BIN_S)

        def r40(s, truth, edges=edges, t=t):
            a, _ = np.histogram(t, edges, weights=s)
            b, _ = np.histogram(t, edges, weights=truth)
            return float(np.corrcoef(a, b)[0, 1])

        row = {}
        for kind in ("constant", "drift", "auto"):
            res = deconvolve(y, fs, 0.05, 0.5, baseline=kind, n_jobs=-1)
            row[f"nnfit {kind}"] = float(
                np.mean([r40(res.spikes[i], rec.spikes[i]) for i in range(n)])
            )
            if kind == "auto":
                row["auto chose drift"] = res.baseline_kind.count("drift") / n
        flat = deconvolve(rec.traces, fs, 0.05, 0.5, baseline="auto", n_jobs=-1)
        row["nnfit auto, same cells without drift"] = float(
            np.mean([r40(flat.spikes[i], rec.spikes[i]) for i in range(n)])
        )
        row["auto chose drift without drift"] = flat.baseline_kind.count("drift") / n
        oas = [
            np.asarray(oasis_deconvolve(y[i].copy(), tau_d=None, tau_r=None, penalty=1)[1])
            for i in range(n)
        ]
        row["OASIS AR(2)"] = float(np.mean([r40(oas[i], rec.spikes[i]) for i in range(n)]))
        oas_true = [
            np.asarray(
                oasis_deconvolve(y[i].copy(), tau_d=0.5, tau_r=0.05, framerate=fs, penalty=1)[1]
            )
            for i in range(n)
        ]
        row["OASIS AR(2), true kinetics"] = float(
            np.mean([r40(oas_true[i], rec.spikes[i]) for i in range(n)])
        )
        rows[f"{period:g} s"] = row
        print(f"drift period {period:g} s: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a sixth of the recordings, fewer cells")
    ap.add_argument("--no-fit", action="store_true", help="skip the per-dataset grid")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=DATASETS,
        metavar="NAME",
        help="shared datasets to score (default: all four, none if --cascade is given)",
    )
    ap.add_argument(
        "--cascade",
        nargs="+",
        default=[],
        type=Path,
        metavar="DIR",
        help="score these CASCADE dataset folders (Ground_truth/<dataset>/*.mat), read as they "
        "are, beside any --datasets; the indicator is the second part of the folder name",
    )
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument(
        "--two-decay",
        action="store_true",
        help="also score nnfit with a kernel of two decays estimated from the fluorescence",
    )
    ap.add_argument("--out", default="bench-output/calcium_accuracy.json")
    args = ap.parse_args()
    report: dict = {"machine": f"{os.cpu_count()} cores", "quick": args.quick}
    if not args.skip_real:
        shared = args.datasets if args.datasets is not None else [] if args.cascade else DATASETS
        if shared and not GT.is_dir():
            print(f"ground truth not found at {GT}; skipping the shared datasets")
            shared = []
        names = [*shared, *(folder.name for folder in args.cascade)]
        if len(set(names)) < len(names):
            ap.error(f"each dataset once: {', '.join(names)} repeats a name")
        if shared or args.cascade:
            report["real"] = part_real(
                args.quick, not args.no_fit, sources(shared, args.cascade), args.two_decay
            )
            methods = [
                "nnfit (estimated)",
                "nnfit (estimated), frame times",
                *(
                    ["nnfit (two decays, estimated)", "nnfit (two decays), frame times"]
                    if args.two_decay
                    else []
                ),
                "nnfit (indicator preset)",
                "nnfit (fitted)",
                "OASIS AR(2)",
                "AR(1) (suite2p)",
            ]
            print("\nPearson r, inferred vs true spike rate, 40 ms bins, mean over recordings")
            print("(lag 0 / best lag within +-2 frames)\n")
            print("| dataset | recs | " + " | ".join(methods) + " |")
            print("|---|---|" + "---|" * len(methods))
            for name, d in report["real"].items():
                cells = []
                for m in methods:
                    v = d["scores"].get(m)
                    cells.append("-" if v is None else f"{v[0]:.3f} / {v[1]:.3f}")
                print(f"| {name} | {d['recordings']} | " + " | ".join(cells) + " |")
            print(
                "\nKinetics: ground-truth fit (least squares from true spikes, free delay) vs "
                "estimate (nothing from the ground truth)\n"
            )
            print(
                "| dataset | GT tau_rise | GT tau_decay | GT delay | est. tau_rise | "
                "est. tau_decay | decay est/GT | estimation s |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for name, d in report["real"].items():
                g = d["ground_truth_fit"]
                print(
                    f"| {name} | {g['tau_rise']:.4f} | {g['tau_decay']:.3f} | "
                    f"{1e3 * g['delay']:.1f} ms | {d['estimated_tau_rise']:.4f} | "
                    f"{d['estimated_tau_decay']:.3f} | "
                    f"{d['estimated_tau_decay'] / g['tau_decay']:.2f} | "
                    f"{d['estimation_seconds']} |"
                )
            if args.two_decay:
                print("\nTwo-decay kernels estimated from the fluorescence\n")
                print("| dataset | tau_rise | fast decay (weight) | slow decay | estimation s |")
                print("|---|---|---|---|---|")
                for name, d in report["real"].items():
                    k = d["two_decay_kernel"]
                    print(
                        f"| {name} | {k['tau_rise']:.4f} | {k['tau_decay']:.3f} "
                        f"({k['fraction']:.2f}) | {k['tau_decay2']:.3f} | "
                        f"{k['estimation_seconds']} |"
                    )
    if not args.skip_drift:
        report["drift"] = part_drift(args.quick)
    report["record"] = current_record()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    with recorded(peers=("oasis-deconv",)):
        raise SystemExit(main())
