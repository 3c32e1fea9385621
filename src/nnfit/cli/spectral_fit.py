"""``nnfit spectral`` commands: fit, reconstruct, dashboard."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

_FIT_EPILOG = """\
examples:
  nnfit spectral fit cube.h5                      # exact optimum, no HyperCube needed (auto)
  nnfit spectral fit cube.h5 --regul 30           # pPXF-style smooth weights
  nnfit spectral fit cube.h5 --scheduler tcp://head:8786   # spaxel blocks on a Dask cluster
  nnfit spectral fit cube.h5 --memory-gb 8        # more design columns kept: faster, same x
  nnfit spectral fit cube.h5 --method kaczmarz --epochs 5 -K 256 --lr 0.25
  nnfit spectral fit cube.h5 --method kaczmarz --epochs 10 --orbit-weights 0.5,0.3,0.2 --out x.npy
  nnfit spectral reconstruct cube.h5              # A x with x from /X_global
  nnfit spectral dashboard cube.h5 --out fit.png  # safe while a fit runs

A killed fit is resumed by running the same command again: it continues from the last
checkpoint stored in the file (/Fit/x_best, /X_global, /Fit/x_latest).
"""


# The options only --method kaczmarz reads, with their defaults: the parser's default is None,
# so that one given with an exact method is told apart from its default and refused.
_KACZMARZ_ONLY: dict[str, tuple[str, Any]] = {
    "epochs": ("--epochs", 1),
    "pixels_per_aperture": ("-K/--pixels-per-aperture", 256),
    "lr": ("--lr", 0.25),
    "row_order": ("--row-order", "random"),
    "no_nonneg": ("--no-nonneg", False),
    "ratio_prob": ("--ratio-prob", 0.02),
    "ratio_eta": ("--ratio-eta", None),
    "seed": ("--seed", 0),
    "blas_threads": ("--blas-threads", None),
    "ckpt_interval": ("--ckpt-interval", 1800.0),
    "metrics_interval": ("--metrics-interval", 300.0),
}


def _kaczmarz_default(dest: str) -> Any:
    return _KACZMARZ_ONLY[dest][1]


def _load_vector(text: str | None, name: str) -> np.ndarray | None:
    if text is None:
        return None
    p = Path(text)
    if p.suffix == ".npy":
        from nnfit.io.arrays import load_npy

        if not p.exists():
            raise FileNotFoundError(f"{name}: no such file {p}")
        return load_npy(p)
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(
            f"{name} must be a .npy file or comma-separated numbers; got {text!r}"
        ) from None


def _regul_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a number >= 0 or 'auto'; got {text!r}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``spectral`` group."""
    fit = sub.add_parser(
        "fit",
        help="global non-negative fit of x[C*P] to every spaxel (exact by default, resumable)",
        description="Fit one non-negative weight vector to every spaxel. The exact methods "
        "(auto, gram, active-set, matrix-free) need no HyperCube: they apply the model "
        "matrix-free and report the KKT conditions of the optimum; kaczmarz reads the "
        "HyperCube with live tracking in /Fit/*. /X_global is committed either way.",
        epilog=_FIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("store", help="HDF5 cube store (kaczmarz also needs its HyperCube)")
    fit.add_argument(
        "--method",
        default="auto",
        choices=("auto", "gram", "active-set", "matrix-free", "kaczmarz"),
        help="solver: gram and active-set reach the exact optimum, matrix-free (projected "
        "gradient) stops on a chi2 plateau, and all three report the KKT conditions at the "
        "weights they return; kaczmarz iterates on the HyperCube of nnfit spectral build "
        "(default: %(default)s = gram when the n x n Gram is cheap, else active-set)",
    )
    fit.add_argument(
        "--regul",
        type=_regul_arg,
        default=0.0,
        help="pPXF-style regularisation strength R (exact methods): R^2 ||D x||^2 is added to "
        "chi2, D the differences of each component's weights over the population grid "
        "(default: %(default)s, none); with --per-bin also 'auto': per bin the largest regul "
        "that raises chi2 by sqrt(2 N) (pPXF's rule)",
    )
    fit.add_argument(
        "--regul-order",
        type=int,
        choices=(1, 2),
        default=2,
        help="the differences D of --regul, pPXF's reg_ord: 1 = first differences along each "
        "grid axis, 2 = the Laplacian (default: %(default)s)",
    )
    fit.add_argument(
        "--degree",
        type=int,
        default=-1,
        help="additive Legendre polynomial degree per spaxel, pPXF's degree (default: "
        "%(default)s, none)",
    )
    fit.add_argument(
        "--mdegree",
        type=int,
        default=0,
        help="multiplicative Legendre polynomial degree per spaxel, pPXF's mdegree (default: "
        "%(default)s, none)",
    )
    fit.add_argument(
        "--tol",
        type=float,
        default=1e-6,
        help="KKT tolerance in sqrt(chi^2) units (exact methods; default: %(default)s)",
    )
    fit.add_argument(
        "--memory-gb",
        type=float,
        default=None,
        help="memory budget of the exact global fit in GiB (default: 4): --method auto takes "
        "the full Gram where it fits, and the active-set fit keeps design columns between "
        "rounds in what the model leaves of it (more memory: the same weights, sooner; where "
        "the working set did not fit, the fit prints the budget that would hold it)",
    )
    fit.add_argument("--scheduler", default=None, help="Dask scheduler address (default: run here)")
    fit.add_argument(
        "--epochs",
        type=int,
        help="kaczmarz: total epochs of this fit, a rerun runs only those still missing "
        f"(default: {_kaczmarz_default('epochs')})",
    )
    fit.add_argument(
        "-K",
        "--pixels-per-aperture",
        type=int,
        help="kaczmarz: pixel rows per spaxel per epoch "
        f"(default: {_kaczmarz_default('pixels_per_aperture')})",
    )
    fit.add_argument(
        "--lr",
        type=float,
        help=f"kaczmarz: relaxation, 0 < lr < 2 (default: {_kaczmarz_default('lr')})",
    )
    fit.add_argument(
        "--row-order",
        choices=("random", "sequential"),
        help="kaczmarz: order of the pixel rows in each spaxel visit "
        f"(default: {_kaczmarz_default('row_order')})",
    )
    fit.add_argument(
        "--no-nonneg",
        action="store_true",
        default=None,
        help="kaczmarz: do not project onto x >= 0 after each row update",
    )
    fit.add_argument(
        "--orbit-weights",
        help="per-component weights: .npy or 'w1,w2,...' (kaczmarz: ratio targets; exact "
        "methods: exact constraints sum_p x[c,p] = alpha * w_c)",
    )
    fit.add_argument(
        "--ratio-prob",
        type=float,
        help="kaczmarz with --orbit-weights: probability per pixel row of a step pulling the "
        "component sums towards the --orbit-weights ratios "
        f"(default: {_kaczmarz_default('ratio_prob')})",
    )
    fit.add_argument(
        "--ratio-eta",
        type=float,
        help="kaczmarz with --orbit-weights: size of each of those steps (default: 0.1 * lr)",
    )
    fit.add_argument("--x0", help="starting weights (.npy)")
    fit.add_argument(
        "--warm-start",
        choices=("auto", "x0", "seed"),
        default="auto",
        help="auto: resume from the store, else --x0, else a Jacobi seed (default: auto)",
    )
    fit.add_argument(
        "--seed",
        type=int,
        help=f"kaczmarz: seed of its random draws (default: {_kaczmarz_default('seed')})",
    )
    fit.add_argument(
        "--blas-threads",
        type=int,
        help="kaczmarz: BLAS threads, N >= 1 (default: the BLAS library's own setting)",
    )
    fit.add_argument(
        "--ckpt-interval",
        type=float,
        help="kaczmarz: least seconds between two /Fit/x_latest checkpoints within an epoch; "
        f"every epoch end writes one (default: {_kaczmarz_default('ckpt_interval'):g})",
    )
    fit.add_argument(
        "--metrics-interval",
        type=float,
        help="kaczmarz: least seconds between two rows of /Fit/metrics within an epoch; every "
        f"epoch end writes one (default: {_kaczmarz_default('metrics_interval'):g})",
    )
    fit.add_argument(
        "--per-bin",
        action="store_true",
        help="fit every bin on its own (pPXF/GIST style; exact methods) into /BinFit",
    )
    fit.add_argument("--out", help="also save x as .npy here")
    fit.add_argument("--stats", help="save the fit statistics as JSON here")
    fit.add_argument(
        "--no-progress", "--quiet", action="store_true", help="no progress bar or epoch lines"
    )
    fit.set_defaults(func=_cmd_fit)

    rec = sub.add_parser(
        "reconstruct",
        help="write the model cube A x to the store (memory-bounded)",
        description="Write /ModelCube (S, L) = A x from the HyperCube in tiles within a "
        "memory budget; skipped when the stored digest of x matches.",
    )
    rec.add_argument("store", help="fitted HDF5 cube store")
    rec.add_argument("--x", help="weights (.npy); default /X_global from the store")
    rec.add_argument(
        "--array-name",
        default="ModelCube",
        help="dataset written in the store, /NAME (default: %(default)s)",
    )
    rec.add_argument(
        "--max-bytes-per-slab",
        type=float,
        default=6e9,
        help="with a HyperCube: bytes of the HyperCube slab read at once, which bounds the "
        "memory used (default: %(default)g)",
    )
    rec.add_argument(
        "--S-tile",
        type=int,
        default=None,
        help="with a HyperCube: spaxels per tile (default: the HyperCube's spaxel chunk)",
    )
    rec.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="with a HyperCube: BLAS threads, N >= 1 (default: the BLAS library's own setting)",
    )
    rec.add_argument(
        "--overwrite", "--force", action="store_true", help="recompute even if up to date"
    )
    rec.set_defaults(func=_cmd_reconstruct)

    dash = sub.add_parser(
        "dashboard",
        help="draw the live fit dashboard PNG (safe while a fit runs)",
        description="Convergence, weights, mass errors, observed vs model spectra and "
        "component usage, read from /Fit/* with SWMR.",
    )
    dash.add_argument("store", help="HDF5 cube store, during or after a fit")
    dash.add_argument(
        "--out", default="fit_dashboard.png", help="output PNG file (default: %(default)s)"
    )
    dash.set_defaults(func=_cmd_dashboard)


def _round_bar(quiet: bool) -> tuple[Any, Any]:
    """A progress bar over working-set rounds on a terminal; (None, None) elsewhere.

    Off a terminal, ``fit_cube``'s own one-line-per-round log is the better record.
    """
    import sys

    from nnfit.progress import progress

    if quiet or not sys.stderr.isatty():
        return None, None
    bar = progress(desc="fit_cube", unit="round", enabled=True)

    def on_phase(phase: str, info: dict) -> None:
        if phase == "round":
            bar.set_description_str("fit_cube")
            bar.update(1)
            bar.set_postfix(
                chi2=f"{info['chi2']:.8g}",
                working_set=info["working_set"],
                violators=info["violators"],
                refresh=True,
            )
        elif phase != "done":
            bar.set_description_str(f"fit_cube ({phase})")

    return bar, on_phase


def _cmd_fit_exact(args: argparse.Namespace) -> int:
    from nnfit.spectral.fit import fit_store

    if not Path(args.store).exists():
        raise FileNotFoundError(f"{args.store}: no such file")
    _refuse_outputs_over_store(args)
    x0 = _load_vector(args.x0, "--x0")
    if x0 is None:
        x0 = None if args.warm_start == "seed" else "auto"
    if args.regul == "auto":
        raise ValueError("--regul auto is pPXF's rule per bin: add --per-bin, or give a number")
    budget = {}
    if args.memory_gb is not None:
        if not 0 < args.memory_gb < float("inf"):  # also NaN
            raise ValueError(
                f"--memory-gb must be a finite number of GiB > 0; got {args.memory_gb}"
            )
        budget["memory_gb"] = args.memory_gb
    bar, on_phase = _round_bar(args.no_progress)
    x, stats = fit_store(
        args.store,
        method=args.method,
        tol=args.tol,
        regul=args.regul,
        regul_order=args.regul_order,
        constraints=_load_vector(args.orbit_weights, "--orbit-weights"),
        x0=x0,
        scheduler=args.scheduler,
        progress=on_phase,
        verbose=not args.no_progress,
        degree=args.degree,
        mdegree=args.mdegree,
        **budget,
    )
    if bar is not None:
        bar.close()
    if args.out:
        from nnfit.io import atomic_path

        with atomic_path(args.out, suffix=".npy") as tmp:
            np.save(tmp, x.ravel())
    if args.stats:
        from nnfit.io import atomic_write_json

        kept = {k: v for k, v in stats.items() if k not in ("mpoly", "apoly")}
        atomic_write_json(args.stats, _jsonable(kept))
    state = "optimum" if stats["converged"] else "NOT converged"
    print(
        f"fit ({stats['method']}): {state}, chi2 {stats['chi2']:.10g} "
        f"(chi2/dof {stats['chi2_dof']:.4g}), KKT violation "
        f"{stats['kkt_violation']:.2e} (tol {stats['kkt_tol']:.0e}), {stats['nnz']} non-zero "
        f"weights, {stats['time_s']:.2f} s; /X_global updated"
    )
    keep_gb = stats.get("memory_gb_to_cache_working_set")
    if keep_gb is not None:
        held = (stats.get("column_cache") or {}).get("slots", 0)
        # with more memory --method auto may take the full Gram, a method this advice is not for
        method = "" if args.method == "active-set" else "--method active-set "
        print(
            f"memory: the column cache held {held} of the working set's "
            f"{stats['working_set_max']} design columns, the others were rebuilt every round; "
            f"{method}--memory-gb {keep_gb:g} would keep them all (faster)"
        )
    return 0


def _cmd_fit_bins(args: argparse.Namespace) -> int:
    from nnfit.spectral.bin_fit import fit_bins

    if not Path(args.store).exists():
        raise FileNotFoundError(f"{args.store}: no such file")
    if args.method == "kaczmarz":
        raise ValueError("--per-bin uses the exact methods; drop --method kaczmarz")
    if args.scheduler is not None:
        raise ValueError("--per-bin fits the bins here, one by one: drop --scheduler")
    # the global fit's inputs and outputs; the bins' weights and chi2/dof go to /BinFit
    unused = [
        flag
        for flag, given in (
            ("--out", args.out),
            ("--stats", args.stats),
            ("--x0", args.x0),
            ("--orbit-weights", args.orbit_weights),
            ("--warm-start", args.warm_start != "auto"),
        )
        if given
    ]
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: options of the global fit; --per-bin starts every bin "
            "afresh and writes its weights and chi2/dof to /BinFit in the store (read them "
            "with nnfit spectral maps): drop " + _options_named(unused)[1]
        )
    res = fit_bins(
        args.store,
        method=args.method,
        tol=args.tol,
        regul=args.regul,
        regul_order=args.regul_order,
        degree=args.degree,
        mdegree=args.mdegree,
    )
    chi = res["chi2_dof"]
    reg = res["regul"]
    print(
        f"fit: {chi.size} bins fitted one by one; chi2/dof median {np.median(chi):.4g} "
        f"(range {chi.min():.4g}-{chi.max():.4g})"
        + (f"; regul {reg.min():.3g}-{reg.max():.3g}" if reg.any() else "")
        + "; /BinFit written"
    )
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    if not args.no_progress:  # the fits log their rounds and epochs at INFO
        logging.getLogger("nnfit.spectral").setLevel(logging.INFO)
    if args.memory_gb is not None and (args.per_bin or args.method == "kaczmarz"):
        raise ValueError(
            "--memory-gb is the budget of the exact global fit; drop it with "
            + ("--per-bin" if args.per_bin else "--method kaczmarz")
        )
    _refuse_kaczmarz_options(args)
    _refuse_exact_options(args)
    if args.per_bin:
        return _cmd_fit_bins(args)
    if args.method != "kaczmarz":
        return _cmd_fit_exact(args)
    if args.scheduler is not None:
        raise ValueError("--method kaczmarz runs here: drop --scheduler (the exact fit uses it)")
    for dest, (_, default) in _KACZMARZ_ONLY.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if args.epochs < 1:
        # no epoch would run, yet a store never fitted would get a zero /X_global
        raise ValueError(f"--epochs is the total number of epochs, >= 1; got {args.epochs}")
    from nnfit.spectral.kaczmarz_fit import PipelineRunner
    from nnfit.spectral.tracker import TrackerConfig

    _refuse_outputs_over_store(args)
    cfg = TrackerConfig(
        ckpt_interval_sec=args.ckpt_interval, metrics_interval_sec=args.metrics_interval
    )
    x, stats = PipelineRunner(args.store).solve_all(
        method="kaczmarz",
        epochs=args.epochs,
        pixels_per_aperture=args.pixels_per_aperture,
        lr=args.lr,
        project_nonneg=not args.no_nonneg,
        row_order=args.row_order,
        orbit_weights=_load_vector(args.orbit_weights, "--orbit-weights"),
        ratio_prob=args.ratio_prob,
        ratio_eta=args.ratio_eta,
        x0=_load_vector(args.x0, "--x0"),
        warm_start=None if args.warm_start == "auto" else args.warm_start,
        seed=args.seed,
        blas_threads=args.blas_threads,
        verbose=not args.no_progress,
        tracker=cfg,
    )
    if args.out:
        from nnfit.io import atomic_path

        with atomic_path(args.out, suffix=".npy") as tmp:
            np.save(tmp, x)
    if args.stats:
        from nnfit.io import atomic_write_json

        kept = {k: v for k, v in stats.items() if k not in ("mpoly", "apoly")}
        atomic_write_json(args.stats, _jsonable(kept))
    start = stats.get("start", {})
    if not stats.get("epochs_run"):
        # /X_global is committed at epoch ends only: with none run it was not written
        print(
            f"fit: nothing to run: the fit is already at epoch {start.get('epoch')} (from "
            f"{start.get('source')}) and --epochs is {args.epochs}; /X_global not written "
            "(raise --epochs to continue the fit)"
        )
        return 0
    rmse = stats.get("rmse", math.nan)
    kept = stats.get("kept", {})
    result = "/X_global updated"
    if kept.get("kept") == "start":
        result = (
            f"kept the start ({kept['start_source']}, chi2 {kept['sse_start']:.10g}) in "
            f"/X_global: the epochs ended worse (chi2 {kept['sse_fit']:.10g})"
        )
    print(
        f"fit: {stats.get('epochs_run', 0)} epoch(s) run from {start.get('source')} "
        f"(epoch {start.get('epoch')}), train RMSE {rmse:.6g}, "
        f"{stats.get('time_s', 0.0):.2f} s; {result}"
    )
    return 0


def _options_named(flags: list[str]) -> tuple[str, str]:
    """("--a is an option" | "--a, --b are options", "it" | "them") for a refusal."""
    if len(flags) == 1:
        return f"{flags[0]} is an option", "it"
    return f"{', '.join(flags)} are options", "them"


def _refuse_kaczmarz_options(args: argparse.Namespace) -> None:
    """Refuse the options only ``--method kaczmarz`` reads when an exact fit runs."""
    given = [flag for dest, (flag, _) in _KACZMARZ_ONLY.items() if getattr(args, dest) is not None]
    if not given or args.method == "kaczmarz":  # --per-bin refuses kaczmarz itself
        return
    what, them = _options_named(given)
    if args.per_bin:
        raise ValueError(
            f"{what} of --method kaczmarz; --per-bin fits each bin exactly: drop {them}"
        )
    raise ValueError(
        f"{what} of --method kaczmarz, unused by the exact fit (--method {args.method}): add "
        f"--method kaczmarz (it reads the HyperCube of nnfit spectral build) or drop {them}"
    )


# The options only the exact methods (and --per-bin) read, with their parser defaults: with
# --method kaczmarz a value other than the default would be silently ignored.
_EXACT_ONLY = {
    "regul": ("--regul", 0.0),
    "regul_order": ("--regul-order", 2),
    "degree": ("--degree", -1),
    "mdegree": ("--mdegree", 0),
    "tol": ("--tol", 1e-6),
}


def _refuse_exact_options(args: argparse.Namespace) -> None:
    """Refuse the exact fit's options, given other than their defaults, with Kaczmarz."""
    if args.method != "kaczmarz" or args.per_bin:
        return
    given = [flag for dest, (flag, d) in _EXACT_ONLY.items() if getattr(args, dest) != d]
    if given:
        what, them = _options_named(given)
        raise ValueError(
            f"{what} of the exact fit, unused by --method kaczmarz (no polynomials, "
            f"regularisation or KKT tolerance there): drop {them}, or drop --method kaczmarz"
        )


def _refuse_outputs_over_store(args: argparse.Namespace) -> None:
    from nnfit.io.paths import refuse_output_over_input

    inputs = [args.store] + [v for v in (args.x0, args.orbit_weights) if v and v.endswith(".npy")]
    for flag, value in (("--out", args.out), ("--stats", args.stats)):
        if value:
            refuse_output_over_input([value], inputs, what=flag)
            # checked before the fit, which replaces /X_global: a failure to write these
            # afterwards would leave the store changed and the command failed
            where = Path(value)
            if where.is_dir():
                raise ValueError(f"{flag} {value} is a folder; give a file name in it")
            if not where.resolve().parent.is_dir():
                raise ValueError(
                    f"{flag} {value}: the folder {where.resolve().parent} does not exist; "
                    "create it first"
                )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, bytes):
        return obj.decode()
    return obj


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from nnfit.io.hdf5 import open_h5
    from nnfit.spectral.fit_record import recorded_settings
    from nnfit.spectral.reconstruct import reconstruct_model_cube_single

    x = _load_vector(args.x, "--x")
    continuum = (-1, 0)
    if x is None:
        with open_h5(args.store, "r") as f:
            if "X_global" not in f:
                raise ValueError(
                    f"{args.store} has no /X_global; run `nnfit spectral fit` or pass --x"
                )
            x = np.asarray(f["X_global"], dtype=np.float64)
            settings = recorded_settings(f["X_global"].attrs)
        if settings is not None:  # the fit's continuum belongs to its model
            continuum = (settings["degree"], settings["mdegree"])
    info = reconstruct_model_cube_single(
        args.store,
        x,
        array_name=args.array_name,
        blas_threads=args.blas_threads,
        S_tile=args.S_tile,
        max_bytes_per_slab=int(args.max_bytes_per_slab),
        force=args.overwrite,
        continuum=continuum,
    )
    with_poly = (
        ""
        if continuum == (-1, 0)
        else f", with the fit's continuum (degree {continuum[0]}, mdegree {continuum[1]})"
    )
    if info["skipped"]:
        print(f"/{args.array_name} is up to date for this x ({info['x_sha256'][:19]}...); skipped")
    elif info.get("matrix_free"):
        print(
            f"wrote /{args.array_name}: no HyperCube, so the model was applied matrix-free "
            f"from the templates and LOSVDs{with_poly} in {info['time_s']:.2f} s"
        )
    else:
        print(
            f"wrote /{args.array_name}: {info['tiles']} slab(s) of {info['tile']} "
            f"(max {info['slab_bytes_max'] / 1e6:.1f} MB){with_poly} in {info['time_s']:.2f} s"
        )
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from nnfit.io.paths import refuse_output_over_input
    from nnfit.spectral.plots import live_fit_dashboard

    refuse_output_over_input([args.out], [args.store], what="--out")
    info = live_fit_dashboard(args.store, args.out)
    print(f"wrote {args.out} ({info['n_metrics']} metric rows, weights from {info['x_source']})")
    return 0


def stats_json(stats: dict) -> str:
    """Stats as JSON text (NaN as null), for logs."""
    return json.dumps(_jsonable(stats), sort_keys=True)
