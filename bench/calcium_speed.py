"""Speed and agreement of nnfit's calcium solvers against PyPI catune 0.1.0, in one run.

    .venv/bin/python bench/calcium_speed.py                 # 50 cells x 30,000 frames
    .venv/bin/python bench/calcium_speed.py --catune-cells 10   # time catune on a subset
    .venv/bin/python bench/calcium_speed.py --cells 8 --frames 20000 --repeats 7  # the speed target's size

Problem (issue 2): fs 30 Hz, tau 0.05 / 0.5 s, noise 0.2, lam 0.5, Poisson spikes at 0.5 Hz
(seed 0). Every solver in SOLVERS runs on the same traces; results are compared with
catune's on the cells catune ran: max relative difference (max |a - b| / max |b| per cell),
whether assert_allclose(rtol=1e-10, atol=1e-12 max|ref|) holds, and whether the per-cell
iteration counts agree. catune's iteration count is read by counting its np.convolve calls
(exactly three per iteration).

Also on the identical traces, kernel and lam: ``nnfit deconvolve`` (the exact solver,
``baseline="none"``: catune's objective) and OASIS's ``oasisAR2``. OASIS's AR(2) response starts
at h[0] = 1 while catune's kernel has h[0] = 0 and peak 1, i.e. catune's kernel is OASIS's
response delayed one frame and scaled by alpha = 1 / (peak of OASIS's response): OASIS runs on
y[1:] with lam / alpha and its spikes / alpha are scored at the same frame index. Every solver
gets the objective column: (F - F*) / F*, F* the certified optimum (duality gap ~1e-14).
For single-core timings per trace and the 1000 cells x 30,000 frames all-cores table see
``bench/calcium_speed_exact.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import types
from collections.abc import Callable

import numpy as np

from _record import recorded


def run_catune(traces: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """catune.run_deconvolution cell by cell, with its iteration counts."""
    import catune
    import catune._fista

    class Counting(types.ModuleType):
        calls = 0

        def __getattr__(self, name):
            return getattr(np, name)

        def convolve(self, *a, **k):
            Counting.calls += 1
            return np.convolve(*a, **k)

    saved, catune._fista.np = catune._fista.np, Counting("np")
    try:
        out, iters = [], []
        for row in traces:
            Counting.calls = 0
            out.append(catune.run_deconvolution(row, p["fs"], p["tau_r"], p["tau_d"], p["lam"]))
            iters.append(Counting.calls // 3)
    finally:
        catune._fista.np = saved
    return np.asarray(out), np.asarray(iters)


def run_nnfit_fista(traces: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """nnfit.calcium.run_deconvolution: all cells in one call."""
    from nnfit.calcium import run_deconvolution

    spikes, info = run_deconvolution(
        traces, p["fs"], p["tau_r"], p["tau_d"], p["lam"], return_info=True
    )
    return spikes, info.iterations


def run_nnfit_exact(traces: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """nnfit.calcium.deconvolve (certified optimum), catune's objective, all cores."""
    from nnfit.calcium import deconvolve

    res = deconvolve(
        traces, p["fs"], p["tau_r"], p["tau_d"], lam=p["lam"], baseline="none", n_jobs=-1
    )
    return res.spikes, res.iterations


def run_oasis_ar2(traces: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """oasis-deconv's oasisAR2 on y[1:] with lam / alpha (see the module docstring), one core."""
    from oasis.oasis_methods import oasisAR2

    from nnfit.calcium.ar2 import AR2Coefficients

    c = AR2Coefficients(p["tau_r"], p["tau_d"], p["fs"])
    out = np.zeros_like(traces)
    for i, y in enumerate(traces):
        _, s = oasisAR2(np.ascontiguousarray(y[1:]), c.g1, c.g2, lam=p["lam"] / c.alpha)
        out[i, :-1] = np.maximum(np.asarray(s), 0.0) / c.alpha
    return out, np.zeros(len(traces), dtype=int)


def objectives(traces: np.ndarray, spikes: np.ndarray, p: dict) -> np.ndarray:
    """catune's objective per cell, with its truncated kernel."""
    from nnfit.calcium.ar2 import AR2Convolution

    r = traces - AR2Convolution(
        traces.shape[1], p["tau_r"], p["tau_d"], p["fs"], n_cells=traces.shape[0]
    ).forward(spikes)
    return 0.5 * np.sum(r * r, axis=1) + p["lam"] * spikes.sum(axis=1)


#: name -> (function(traces, params) -> (spikes, iterations), solves catune's problem?)
SOLVERS: dict[str, tuple[Callable[[np.ndarray, dict], tuple[np.ndarray, np.ndarray]], bool]] = {
    "nnfit run_deconvolution": (run_nnfit_fista, True),
    "nnfit deconvolve (exact)": (run_nnfit_exact, False),
    "OASIS oasisAR2 (1 core)": (run_oasis_ar2, False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--frames", type=int, default=30_000)
    ap.add_argument(
        "--catune-cells",
        type=int,
        default=None,
        help="time catune on only the first N cells (default: all)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="nnfit timings: best of N")
    args = ap.parse_args()

    from nnfit.calcium import simulate_recording

    p = {"fs": 30.0, "tau_r": 0.05, "tau_d": 0.5, "lam": 0.5}
    rec = simulate_recording(
        args.cells,
        args.frames,
        fs=p["fs"],
        tau_rise=p["tau_r"],
        tau_decay=p["tau_d"],
        noise=0.2,
        rate_hz=0.5,
        seed=0,
    )
    traces = rec.traces
    n_cat = args.cells if args.catune_cells is None else min(args.catune_cells, args.cells)
    print(
        f"{args.cells} cells x {args.frames} frames, fs {p['fs']:g} Hz, tau "
        f"{p['tau_r']:g}/{p['tau_d']:g} s, noise 0.2, lam {p['lam']:g}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}"
    )

    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    t0, c0 = time.perf_counter(), time.process_time()
    ref, ref_iters = run_catune(traces[:n_cat], p)
    t_cat = time.perf_counter() - t0
    cpu_cat = (time.process_time() - c0) * args.cells / n_cat
    per_cell_cat = t_cat / n_cat
    t_cat_full = per_cell_cat * args.cells
    note = "" if n_cat == args.cells else f" (timed on {n_cat} cells, scaled to {args.cells})"
    rows = [("catune 0.1.0", t_cat_full, 1.0, "-", "-", f"median {int(np.median(ref_iters))}")]
    cpu = {"catune 0.1.0": cpu_cat}
    from nnfit.calcium import deconvolve

    f_star = deconvolve(
        traces, p["fs"], p["tau_r"], p["tau_d"], lam=p["lam"], baseline="none", n_jobs=-1
    ).objective
    gaps = {"catune 0.1.0": (objectives(traces[:n_cat], ref, p) - f_star[:n_cat]) / f_star[:n_cat]}

    for name, (fn, same_problem) in SOLVERS.items():
        fn(traces[:2], p)  # compile / warm up
        best = best_cpu = np.inf
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            spikes, iters = fn(traces, p)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        cpu[name] = best_cpu
        gaps[name] = (objectives(traces, spikes, p) - f_star) / f_star
        if same_problem:
            sub = spikes[:n_cat]
            scale = np.abs(ref).max(axis=1)
            rel = float(np.max(np.abs(sub - ref).max(axis=1) / np.where(scale > 0, scale, 1)))
            ok = np.all(np.abs(sub - ref) <= 1e-12 * np.abs(ref).max() + 1e-10 * np.abs(ref))
            agree = f"{int(np.sum(iters[:n_cat] == ref_iters))}/{n_cat}"
            rows.append((name, best, t_cat_full / best, f"{rel:.1e}", str(bool(ok)), agree))
        else:
            rows.append((name, best, t_cat_full / best, "other problem", "-", "-"))

    print(f"\ncatune: {t_cat:.1f} s for {n_cat} cells, {per_cell_cat:.2f} s per cell{note}")
    print(
        "OASIS: run on y[1:] with lam / alpha (its h[0] = 1, catune's h[0] = 0; alpha = 1 / peak "
        "of its response), spikes / alpha; objective on catune's truncated kernel"
    )
    head = (
        "solver",
        "seconds",
        "speed-up",
        "max rel diff",
        "allclose 1e-10",
        "iterations",
        "(F-F*)/F* median",
        "max",
        "CPU s",
        "CPU ratio",
    )
    widths = (26, 9, 9, 13, 15, 12, 17, 9, 9, 9)
    print(
        f"wall: nnfit best of {args.repeats}, catune one run; CPU: all threads of this process; "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(" ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for name, sec, ratio, rel, ok, agree in rows:
        g = gaps[name]
        cells = (
            name,
            f"{sec:.2f}",
            f"{ratio:.1f}x",
            rel,
            ok,
            agree,
            f"{np.median(g):.1e}",
            f"{np.max(g):.1e}",
            f"{cpu[name]:.2f}",
            f"{cpu_cat / cpu[name]:.1f}x",
        )
        print(" ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    with recorded(peers=("catune",)):
        raise SystemExit(main())
