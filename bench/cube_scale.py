"""Real-scale exact cube fit without a HyperCube (NGC 4365 sizes, simulated).

Two steps, so the fit's peak memory is measured on its own::

    python bench/cube_scale.py simulate --out /tmp/ngc4365.h5            # S=2854, C=22, ...
    /usr/bin/time -v python bench/cube_scale.py fit /tmp/ngc4365.h5      # phases + peak RSS

``compare PATH`` runs ``fit --cold --no-checkpoint`` once per ``--variants`` entry (fit
arguments; default ``"--cache-gb 0 --batch 64 --threads 1"``, the fit's earlier defaults at
C = 22, then today's defaults) in its own process and prints one table (wall, CPU, peak RSS, rounds,
columns built) and the ratios to the first: the before/after in one run. ``--fit-args`` adds
arguments to every run; ``--baseline-src DIR`` runs the first variant on another nnfit source
tree, e.g. the commit before a change::

    git archive 19c44b9 src | tar -x -C /tmp/base
    python bench/cube_scale.py compare /tmp/c22.h5 --baseline-src /tmp/base/src --variants "" ""
 ``--components 207`` gives the C = 207
problem. ``fit --kernel fourier --mdegree 8`` fits the
exact model with per-spaxel multiplicative polynomials. The fit prints every phase's time, the
working-set rounds, chi^2, the KKT violation, wall and CPU seconds (``time.process_time``: all
threads, so on a shared machine it shows the work done when wall time shows the load) and the
peak resident memory (``resource.getrusage``). ``--cache-gb 0`` is the fit without the column
cache (every round rebuilds its columns), ``--memory-gb M`` the fit with a budget of M GiB
(the cache takes what the rest leaves); ``--screen off`` the fit without float32 screening
of its candidates. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from _record import recorded


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cmd_simulate(a: argparse.Namespace) -> None:
    from nnfit.spectral.simulate import simulate_cube

    t = time.perf_counter()
    sim = simulate_cube(
        a.spaxels,
        a.components,
        a.populations,
        n_tem_pix=a.tem_pix,
        n_obs_pix=a.obs_pix,
        n_vel=a.vel,
        templates="ssp",
        snr=50.0,
        mask_fraction=0.15,
        seed=a.seed,
    )
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    sim.to_h5(a.out)
    print(
        f"simulated S={a.spaxels} C={a.components} P={a.populations} T={a.tem_pix} "
        f"L={a.obs_pix} V={a.vel}: {t_sim:.1f} s, written in {time.perf_counter() - t:.1f} s "
        f"({Path(a.out).stat().st_size / 2**20:.0f} MiB); peak {_peak_gb():.2f} GiB"
    )
    np.save(str(a.out) + ".x_true.npy", sim.x_true)


def cmd_fit(a: argparse.Namespace) -> None:
    from nnfit.spectral.fit import fit_cube

    t0 = time.perf_counter()
    c0 = time.process_time()

    def progress(phase: str, info: dict) -> None:
        if phase == "round":
            print(
                f"  [{time.perf_counter() - t0:7.1f} s] round {info['round']}: chi2 "
                f"{info['chi2']:.6f}, working set {info['working_set']}, "
                f"violators {info['violators']}, CPU {time.process_time() - c0:.1f} s, "
                f"peak {_peak_gb():.2f} GiB",
                flush=True,
            )

    source = a.path
    opts = {} if a.threads is None else {"threads": a.threads}
    if a.kernel is None and opts:  # the store's model, blocks run a given number at a time
        from nnfit.spectral.cube_operator import CubeOperator

        source = CubeOperator.from_h5(a.path, scheduler=a.scheduler, **opts)
    if a.kernel is not None:  # override the store's model (checkpoints then stay in memory)
        from nnfit.spectral.cube_operator import CubeOperator

        if a.trim_obs:
            from nnfit.spectral.store import load_problem

            prob = load_problem(a.path)
            cut = slice(a.trim_obs, prob.L - a.trim_obs)
            prob.obs_pix, prob.datacube, prob.mask = (
                prob.obs_pix[cut],
                prob.datacube[:, cut],
                prob.mask[cut],
            )
            prob.noise = None if prob.noise is None else prob.noise[:, cut]
            prob.rebin = prob.rebin[cut]
            source = CubeOperator.from_problem(prob, kernel=a.kernel, scheduler=a.scheduler, **opts)
        else:
            source = CubeOperator.from_h5(a.path, kernel=a.kernel, scheduler=a.scheduler, **opts)
        print(
            f"kernel={a.kernel}: {source.n_taps} dictionary entries per template, setup "
            f"{time.perf_counter() - t0:.1f} s, peak {_peak_gb():.2f} GiB",
            flush=True,
        )
    x, stats = fit_cube(
        source,
        method=a.method,
        degree=a.degree,
        mdegree=a.mdegree,
        x0=None if a.cold else "auto",
        regul=a.regul,
        scheduler=a.scheduler,
        checkpoint=not a.no_checkpoint,
        progress=progress,
        max_iter=a.max_rounds,
        batch=a.batch,
        **({} if a.cache_gb is None else {"cache_gb": a.cache_gb}),
        **({} if a.memory_gb is None else {"memory_gb": a.memory_gb}),
        **({} if a.screen is None else {"screen": a.screen == "on"}),
    )
    total = time.perf_counter() - t0
    out = {k: v for k, v in stats.items() if k not in ("phases", "mpoly", "apoly")}
    if "phases" in stats:
        print("phases (s):", json.dumps({k: round(v, 2) for k, v in stats["phases"].items()}))
    print("stats:", json.dumps(out, default=float))
    cpu = time.process_time() - c0
    print(
        f"end to end {total:.1f} s wall, {cpu:.1f} s CPU (all threads); "
        f"peak RSS {_peak_gb():.2f} GiB; load average {os.getloadavg()[0]:.1f}"
    )
    row = {
        "wall_s": total,
        "cpu_s": cpu,
        "peak_gib": _peak_gb(),
        "load": os.getloadavg()[0],
        "rounds": stats.get("rounds"),
        "candidates": stats.get("candidates"),
        "columns_built": stats.get("columns_built"),
        "chi2": stats["chi2"],
        "kkt": stats["kkt_violation"],
        "converged": stats["converged"],
    }
    if a.save_x is not None:
        np.save(a.save_x, np.asarray(x))
    print("RESULT", json.dumps(row), flush=True)


def cmd_compare(a: argparse.Namespace) -> None:
    """Each variant (fit arguments) in its own process (own peak RSS), one table."""
    import shlex
    import subprocess
    import tempfile

    rows = []
    xs = []
    tmp = tempfile.mkdtemp(prefix="cube_scale_")
    for i, variant in enumerate(a.variants):
        xs.append(Path(tmp) / f"x{i}.npy")
        cmd = [sys.executable, __file__, "fit", str(a.path), "--cold", "--no-checkpoint"]
        cmd += [*shlex.split(variant), *shlex.split(a.fit_args), "--save-x", str(xs[-1])]
        env = dict(os.environ)
        label = variant or "(defaults)"
        if i == 0 and a.baseline_src is not None:  # the first variant on another source tree
            env["PYTHONPATH"] = str(a.baseline_src.resolve())
            label = f"{label} [{a.baseline_src}]"
        print("$", f"PYTHONPATH={env.get('PYTHONPATH', '')}", " ".join(cmd), flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        print(out, flush=True)
        line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
        rows.append((label, json.loads(line[7:])))
    w = max(len(v) for v, _ in rows)
    print(
        f"\n{'fit arguments':<{w}} {'rounds':>6} {'cands':>6} {'built':>6} {'wall s':>8} "
        f"{'CPU s':>8} {'peak GiB':>8} {'load':>5} {'chi2':>18} {'KKT':>9}"
    )
    for v, r in rows:
        print(
            f"{v:<{w}} {r['rounds']:>6} {r['candidates']:>6} {r['columns_built']:>6} "
            f"{r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_gib']:>8.2f} {r['load']:>5.1f} "
            f"{r['chi2']:>18.6f} {r['kkt']:>9.2e}"
        )
    base_v, base = rows[0]
    x0 = np.load(xs[0])
    for (v, r), xp in zip(rows[1:], xs[1:], strict=True):
        x1 = np.load(xp)
        dx = float(np.abs(x1 - x0).max() / np.abs(x0).max())
        same = bool(np.array_equal(x1 > 0, x0 > 0))
        print(
            f"{v} vs {base_v}: wall x{base['wall_s'] / r['wall_s']:.2f}, "
            f"CPU x{base['cpu_s'] / r['cpu_s']:.2f}, chi2 {r['chi2'] / base['chi2'] - 1:+.1e}, "
            f"max|dx|/max|x| {dx:.1e}, same support {same}"
        )
    for xp in xs:
        xp.unlink(missing_ok=True)
    os.rmdir(tmp)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--spaxels", type=int, default=2854)
    s.add_argument("--components", type=int, default=22)
    s.add_argument("--populations", type=int, default=360)
    s.add_argument("--tem-pix", type=int, default=7561)
    s.add_argument("--obs-pix", type=int, default=1247)
    s.add_argument("--vel", type=int, default=201)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_simulate)
    f = sub.add_parser("fit")
    f.add_argument("path", type=Path)
    f.add_argument("--method", default="auto")
    f.add_argument("--regul", type=float, default=0.0)
    f.add_argument("--scheduler", default=None)
    f.add_argument("--cold", action="store_true", help="ignore /X_global")
    f.add_argument("--no-checkpoint", action="store_true")
    f.add_argument(
        "--cache-gb",
        type=float,
        default=None,
        help="memory cap for design columns kept between rounds (default: fit_cube's; "
        "0: recompute every round)",
    )
    f.add_argument(
        "--memory-gb",
        type=float,
        default=None,
        help="the fit's memory budget, which sizes the column cache (default: fit_cube's, 4)",
    )
    f.add_argument("--batch", type=int, default=None, help="candidates per round")
    f.add_argument(
        "--screen",
        choices=["on", "off"],
        default=None,
        help="candidates from a float32 gradient (default: fit_cube's, on where memory allows)",
    )
    f.add_argument("--save-x", type=Path, default=None, help="write the weights (.npy)")
    f.add_argument(
        "--threads",
        type=int,
        default=None,
        help="spaxel blocks at once (default: the operator's; 1: one at a time, BLAS threaded)",
    )
    f.add_argument("--max-rounds", type=int, default=None, help="cap on working-set rounds")
    f.add_argument(
        "--kernel", choices=("linear", "fourier"), default=None, help="model (default: the store's)"
    )
    f.add_argument(
        "--trim-obs",
        type=int,
        default=0,
        help="drop this many observed pixels at each end (room for the exact "
        "kernel's band-limited taps on stores simulated for the linear one)",
    )
    f.add_argument("--degree", type=int, default=-1, help="additive Legendre degree per spaxel")
    f.add_argument("--mdegree", type=int, default=0, help="multiplicative Legendre degree")
    f.set_defaults(func=cmd_fit)
    c = sub.add_parser("compare", help="fit once per variant, one table")
    c.add_argument("path", type=Path)
    c.add_argument(
        "--variants",
        nargs="+",
        default=["--cache-gb 0 --batch 64 --threads 1", ""],
        help="fit arguments per run, each one quoted string; the first is the baseline "
        "(default: the settings before the column cache was the default, then the defaults)",
    )
    c.add_argument(
        "--fit-args", default="", help="more fit arguments, one quoted string ('--batch 16')"
    )
    c.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="run the first variant with this nnfit source tree on PYTHONPATH (e.g. an earlier "
        "commit: git archive COMMIT src | tar -x -C /tmp/base; then /tmp/base/src)",
    )
    c.set_defaults(func=cmd_compare)
    a = p.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
