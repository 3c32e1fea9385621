"""Real-scale exact cube fit without a HyperCube (NGC 4365 sizes, simulated).

Two steps, so the fit's peak memory is measured on its own::

    python bench/cube_scale.py simulate --out /tmp/ngc4365.h5            # S=2854, C=22, ...
    /usr/bin/time -v python bench/cube_scale.py fit /tmp/ngc4365.h5      # phases + peak RSS

``--components 207`` gives the C = 207 problem. ``fit --kernel fourier --mdegree 8`` fits the
exact model with per-spaxel multiplicative polynomials. The fit prints every phase's time, the
working-set rounds, chi^2, the KKT violation and the peak resident memory
(``resource.getrusage``). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


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

    def progress(phase: str, info: dict) -> None:
        if phase == "round":
            print(
                f"  [{time.perf_counter() - t0:7.1f} s] round {info['round']}: chi2 "
                f"{info['chi2']:.6f}, working set {info['working_set']}, "
                f"violators {info['violators']}, peak {_peak_gb():.2f} GiB",
                flush=True,
            )

    source = a.path
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
            source = CubeOperator.from_problem(prob, kernel=a.kernel, scheduler=a.scheduler)
        else:
            source = CubeOperator.from_h5(a.path, kernel=a.kernel, scheduler=a.scheduler)
        print(
            f"kernel={a.kernel}: {source.n_taps} dictionary entries per template, setup "
            f"{time.perf_counter() - t0:.1f} s, peak {_peak_gb():.2f} GiB",
            flush=True,
        )
    _, stats = fit_cube(
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
    )
    total = time.perf_counter() - t0
    out = {k: v for k, v in stats.items() if k not in ("phases", "mpoly", "apoly")}
    if "phases" in stats:
        print("phases (s):", json.dumps({k: round(v, 2) for k, v in stats["phases"].items()}))
    print("stats:", json.dumps(out, default=float))
    print(f"end to end {total:.1f} s; peak RSS {_peak_gb():.2f} GiB")


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
    a = p.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    sys.exit(main())
