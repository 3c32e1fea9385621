"""``nnfit calcium``: calcium spike deconvolution (CaTune companion).

Commands: ``deconvolve`` (a recording -> spikes, reconvolution, summary, figure) and
``export`` (a recording -> the files the CaTune browser loads); ``estimate`` and the exact
solver's path are in :mod:`nnfit.cli.calcium_exact`. ``deconvolve`` calls one of three library
functions: :func:`~nnfit.calcium.run_deconvolution` (``--solver fista``, CaTune's problem),
:func:`~nnfit.calcium.deconvolve_from_export` (``--solver browser``, the browser's problem) or
:func:`~nnfit.calcium.deconvolve` / its streamed form (``--solver exact``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.indicators import INDICATORS, indicator_kinetics
from nnfit.cli import calcium_exact as _fast
from nnfit.cli.calcium_formats import add_format_arguments, add_series_argument

# Every file deconvolve may write into --out (both solvers); none may be an input.
RESULT_FILES = (
    "spikes.npy",
    "reconvolution.npy",
    "baseline.npy",
    "summary.csv",
    "run.json",
    "cells.png",
)

_DECONVOLVE_EPILOG = """\
INPUT is one of
  traces.npy          (n_cells, n_timepoints) or (n_timepoints,); needs --fs
  rec  or  rec.npy    a CaTune stem: rec.npy + rec_metadata.json (fs from the sidecar)
  suite2p/plane0/     F.npy - c * Fneu.npy for ROIs in iscell.npy; fs and c (neucoeff, default
                      0.7) from ops.npy or settings.npy, read without unpickling any code
  suite2p/            every plane folder in it (same frame count and fs), ROIs in plane order
  rec.nwb             a RoiResponseSeries in processing/ophys (--series Fluorescence/NAME when
                      the file holds several); fs from its rate or timestamps; streamed
  results.hdf5        CaImAn CNMF.save() results: C + YrA (or --series F_dff), accepted
                      components, fs from params/data/fr
  rec.mat             MATLAB (v5/v7 or v7.3): the matrix --series NAME (or NAME.FIELD),
                      cells x frames as MATLAB shows it; fs from a scalar fs/Fs/framerate
                      beside it, else --fs
  traces.csv          a table, one row per frame: an Inscopix IDPS export (accepted cells,
                      fs from its time column) or plain columns (optional header; a column
                      headed time or Time (s) gives fs); also .tsv and .txt

Kinetics and lam come from --tau-rise/--tau-decay/--lam, from the parameters file the CaTune
browser exports (--params catune-params-*.json: the browser's solver, lambda scaled by the
kernel's DC gain, a fitted constant baseline, its optional band-pass), or from the data.

The exact solver (the default unless --params is given or --tau-rise, --tau-decay and --lam
all are; then '--solver exact') estimates from the data whatever is not given and reports it,
and solves to a certified optimum (duality gap) with a baseline (--baseline auto|none|constant|
drift), streaming .npy and .nwb inputs in blocks (resumable after a kill) and spreading them
over Dask with --scheduler. --two-decay estimates a kernel with a rise and two decays instead
(a fast decay for most of each transient, a slow one for its tail; one decay is kept where the
traces show no second), or give it as --tau-rise, --tau-decay (the fast one), --tau-decay2 and
--fraction (the fast decay's weight).

examples:
  nnfit calcium deconvolve rec.npy --fs 30 --out res/                  (all from the data)
  nnfit calcium deconvolve rec.npy --fs 122 --two-decay --out res/     (two decays, from the data)
  nnfit calcium deconvolve rec.npy --fs 30 --tau-rise 0.05 --tau-decay 0.5 --lam 0.5 --out res/
  nnfit calcium deconvolve suite2p/plane0 --params catune-params-2025-01-01.json --out res/
  nnfit calcium deconvolve session1 --tau-rise 0.05 --tau-decay 0.5 --lam 0.5 --out res/
  nnfit calcium deconvolve rec.nwb --series Fluorescence/RoiResponseSeries --out res/ --write-nwb
  nnfit calcium deconvolve caiman_results.hdf5 --out res/
  nnfit calcium deconvolve suite2p/plane0 --out res/ --write-suite2p
  nnfit calcium deconvolve rec.mat --series results.F --fs 30 --out res/
  nnfit calcium deconvolve cell_traces.csv --out res/

writes into --out: spikes.npy, reconvolution.npy (cells x time, float64), summary.csv
(iterations, converged, objective, baseline per cell), run.json (settings, input hash) and
cells.png (trace, reconvolution and spikes of the first cells). --write-nwb adds the spikes to
the NWB input (or a new copy of it) as processing/ophys/Deconvolved/<series>; --write-suite2p
writes them as spks.npy into the plane folder (never over an existing one without --overwrite).
"""

_EXPORT_EPILOG = """\
examples:
  nnfit calcium export traces.npy --fs 30 --out for_catune/session1
  nnfit calcium export suite2p/plane0 --out for_catune/plane0
  nnfit calcium export rec.nwb --series Fluorescence/RoiResponseSeries --out for_catune/rec
  nnfit calcium export caiman_results.hdf5 --out for_catune/session1
  nnfit calcium export rec.mat --series F --fs 30 --out for_catune/rec

writes STEM.npy (cells x time, <f8, the format the browser reads) and STEM_metadata.json.
Load STEM.npy in the CaTune browser, tune the kernel, export the parameters, then run
'nnfit calcium deconvolve INPUT --params catune-params-*.json --out DIR'.
"""


#: ``(tol, max_iter)`` of each solver where --tol/--max-iter are not given: the defaults of its
#: library function (run_deconvolution, deconvolve_from_export, deconvolve), stated in --help and
#: recorded in run.json
STOP_DEFAULTS: dict[str, tuple[float, int]] = {
    "fista": (1e-6, 2000),
    "browser": (1e-12, 20000),
    "exact": _fast.EXACT_STOP,
}


@dataclass(frozen=True)
class Settings:
    """What a solver needs besides the traces."""

    fs: float
    tau_rise: float
    tau_decay: float
    lam: float
    tol: float | None = None
    max_iter: int | None = None
    filter_enabled: bool = False


def solve_fista(traces: np.ndarray, s: Settings):
    """catune's problem (``run_deconvolution``): no baseline, ``lam`` as given."""
    from nnfit.calcium.fista import run_deconvolution

    kw: dict[str, Any] = {}
    if s.tol is not None:  # run_deconvolution keeps catune's argument names
        kw["tolerance"] = s.tol
    if s.max_iter is not None:
        kw["max_iters"] = s.max_iter
    _, result = run_deconvolution(
        traces, s.fs, s.tau_rise, s.tau_decay, s.lam, return_info=True, **kw
    )
    return result


def solve_browser(traces: np.ndarray, s: Settings):
    """The CaTune browser's problem (``deconvolve_from_export``): DC-gain lambda, baseline."""
    from nnfit.calcium.browser_solver import ExportParams, deconvolve_from_export

    params = ExportParams(s.tau_rise, s.tau_decay, s.lam, s.fs, filter_enabled=s.filter_enabled)
    kw: dict[str, Any] = {}
    if s.tol is not None:
        kw["tol"] = s.tol
    if s.max_iter is not None:
        kw["max_iter"] = s.max_iter
    _, _, result = deconvolve_from_export(traces, params, return_info=True, **kw)
    return result


#: the in-memory solvers by ``--solver`` name (``exact`` takes its own, streamed path)
_IN_MEMORY: dict[str, Callable[[np.ndarray, Settings], Any]] = {
    "fista": solve_fista,
    "browser": solve_browser,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calcium`` command group to the top-level parser."""
    parser = subparsers.add_parser(
        "calcium",
        help="calcium spike deconvolution (CaTune companion)",
        description="Calcium spike deconvolution: the CaTune Python companion.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_deconvolve(sub)
    _add_export(sub)
    _fast.add_estimate(sub)


def _add_deconvolve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deconvolve",
        help="infer spikes from calcium traces",
        description="Infer non-negative spike trains from calcium traces, cell by cell, with "
        "the CaTune kernel\nand one of three solvers (--solver picks one; the default follows "
        "from what is given):\n"
        "  exact    certified optimum (duality gap) with a fitted baseline; estimates the "
        "kinetics\n"
        "           and lam that are not given. Default unless --params is given or "
        "--tau-rise,\n"
        "           --tau-decay and --lam all are; and with --baseline, --scheduler or a "
        "kernel\n"
        "           with two decays.\n"
        "  fista    catune 0.1.0's problem and iterations (no baseline), equal to catune. "
        "Default when\n"
        "           --tau-rise, --tau-decay and --lam are all given.\n"
        "  browser  the CaTune browser's problem (DC-gain lambda, constant baseline). Default "
        "with\n"
        "           --params.",
        epilog=_DECONVOLVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help=".npy, CaTune stem, suite2p folder, .nwb, CaImAn .hdf5, .mat or .csv/.tsv/.txt",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--fs", type=float, help="sampling rate in Hz (if INPUT does not record it)")
    p.add_argument("--tau-rise", type=float, metavar="S", help="rise time constant, seconds")
    p.add_argument("--tau-decay", type=float, metavar="S", help="decay time constant, seconds")
    p.add_argument("--lam", type=float, metavar="L", help="L1 penalty (sparsity), >= 0")
    p.add_argument(
        "--indicator",
        metavar="NAME",
        help=f"the recording's indicator ({', '.join(INDICATORS)}): a prior on the estimated "
        "kinetics, whose decay then stays within the preset's decay / or x 5 (the range and "
        "the preset's source go to run.json). For the preset's kinetics as they are, give "
        "them as --tau-rise and --tau-decay",
    )
    p.add_argument("--params", metavar="FILE", help="catune-params-*.json exported by the browser")
    p.add_argument(
        "--solver",
        choices=("fista", "browser", "exact"),
        help="'fista' (catune's problem and iterations; default when --tau-rise, --tau-decay "
        "and --lam are all given), 'browser' (default with --params) or 'exact' (certified "
        "optimum, O(T), streamed; default when kinetics or lam are left to the data, or with "
        "--baseline/--scheduler)",
    )
    p.add_argument(
        "--tol",
        "--tolerance",
        dest="tol",
        type=float,
        help="stop rule: relative objective change (fista, default "
        f"{STOP_DEFAULTS['fista'][0]:g}; browser, {STOP_DEFAULTS['browser'][0]:g}) or duality "
        f"gap (exact, {STOP_DEFAULTS['exact'][0]:g})",
    )
    p.add_argument(
        "--max-iter",
        "--max-iters",
        dest="max_iter",
        type=int,
        help="iteration limit per cell (default: fista "
        f"{STOP_DEFAULTS['fista'][1]}, browser {STOP_DEFAULTS['browser'][1]}, exact "
        f"{STOP_DEFAULTS['exact'][1]})",
    )
    p.add_argument(
        "--plot-cells",
        type=int,
        default=4,
        metavar="N",
        help="cells in cells.png, 0 for none (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _fast.add_deconvolve_arguments(p)
    add_format_arguments(p)
    p.set_defaults(func=deconvolve_command)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write traces in the format the CaTune browser loads",
        description="Write INPUT's traces as STEM.npy (<f8, cells x time) and "
        "STEM_metadata.json for tuning in the CaTune browser.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help=".npy, CaTune stem, suite2p folder, .nwb, CaImAn .hdf5, .mat or .csv/.tsv/.txt",
    )
    p.add_argument("--fs", type=float, help="sampling rate in Hz (if INPUT does not record it)")
    p.add_argument("--out", required=True, metavar="STEM", help="output stem, e.g. dir/session1")
    add_series_argument(p)
    p.set_defaults(func=export_command)


def _settings(args: argparse.Namespace) -> tuple[Settings, str, dict[str, Any]]:
    """Resolve kinetics from flags or --params; return settings, solver name, run record."""
    from nnfit.calcium.browser_solver import load_export_params
    from nnfit.validate import check_int, check_real

    flags = {"--tau-rise": args.tau_rise, "--tau-decay": args.tau_decay, "--lam": args.lam}
    record: dict[str, Any] = {}
    if args.params is not None:
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise ValueError(f"--params sets the kinetics; drop {', '.join(given)}")
        params = load_export_params(args.params)
        kin = (params.tau_rise, params.tau_decay, params.lam, params.filter_enabled, params.fs)
        record["params_file"] = str(Path(args.params).resolve())
        solver = args.solver or "browser"
    else:
        missing = [k for k, v in flags.items() if v is None]
        if missing:
            raise ValueError(
                f"missing {', '.join(missing)}: give --tau-rise, --tau-decay and --lam, "
                "or a browser export with --params"
            )
        kin = (args.tau_rise, args.tau_decay, args.lam, False, None)
        solver = args.solver or "fista"
    tol, iters = STOP_DEFAULTS[solver]
    if args.tol is not None:
        tol = check_real("--tol", args.tol, low=0.0, low_inclusive=False)
    if args.max_iter is not None:
        iters = check_int("--max-iter", args.max_iter, low=1)
    settings = Settings(
        fs=0.0,  # from the recording, once read
        tau_rise=kin[0],
        tau_decay=kin[1],
        lam=kin[2],
        tol=tol,
        max_iter=iters,
        filter_enabled=kin[3],
    )
    return settings, solver, {**record, "params_fs": kin[4]}


def run_solver(traces: np.ndarray, settings: Settings, solver: str, *, progress: bool | None):
    """Run an in-memory solver over blocks of cells, with a progress bar over cells."""
    import numba

    from nnfit.calcium.result import DeconvolutionResult
    from nnfit.progress import progress as bar

    fn = _IN_MEMORY[solver]
    block = max(8, 4 * numba.get_num_threads())
    parts = []
    with bar(traces.shape[0], desc=f"deconvolving ({solver})", unit="cell", enabled=progress) as pb:
        for start in range(0, traces.shape[0], block):
            parts.append(fn(traces[start : start + block], settings))
            pb.update(parts[-1].spikes.shape[0])
    return DeconvolutionResult.concatenate(parts)


def deconvolve_command(args: argparse.Namespace) -> int:
    """``nnfit calcium deconvolve``: one run at a time per output folder, which starts by
    removing what a killed run's writes left there."""
    from nnfit.io.lock import output_folder
    from nnfit.io.paths import input_files, refuse_output_over_input

    refuse_output_over_input([Path(args.out) / n for n in RESULT_FILES], input_files(args.input))
    with output_folder(args.out, outputs=RESULT_FILES):
        before = _outputs_recorded(Path(args.out))
        code = _deconvolve(args)
        # what an earlier run wrote and this one did not (a figure, the exact solver's
        # baseline.npy) belongs to another input or other settings: gone once this run's
        # run.json is written, so the folder holds one run
        for name in before - _outputs_recorded(Path(args.out)):
            if name in RESULT_FILES:
                (Path(args.out) / name).unlink(missing_ok=True)
        return code


def _outputs_recorded(out: Path) -> set[str]:
    """The file names ``out/run.json`` lists as written by its run (none if unreadable)."""
    try:
        outputs = json.loads((out / "run.json").read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return set()
    names = outputs.values() if isinstance(outputs, dict) else outputs
    return {n for n in names if isinstance(n, str)} | {"run.json"}


def _check_indicator(args: argparse.Namespace) -> None:
    """``--indicator`` is a prior on estimated kinetics: it excludes given ones and the
    solvers that take them as given."""
    if args.indicator is None:
        return
    given = [
        flag
        for flag, value in (
            ("--tau-rise", args.tau_rise),
            ("--tau-decay", args.tau_decay),
            ("--params", args.params),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"--indicator is a prior on the estimated kinetics; drop {', '.join(given)}, or "
            "drop --indicator to use the kinetics given"
        )
    if args.solver in ("fista", "browser"):
        raise ValueError(
            f"--indicator estimates the kinetics, which --solver {args.solver} does not; use "
            "--solver exact, or give --tau-rise and --tau-decay instead"
        )
    indicator_kinetics(args.indicator)  # an unknown name is refused before any work


def _deconvolve(args: argparse.Namespace) -> int:
    from nnfit.calcium.fista import check_solver_params
    from nnfit.calcium.recordings import read_input
    from nnfit.calcium.results import run_record, write_results
    from nnfit.cli.calcium_formats import check_write_targets, write_back
    from nnfit.io import atomic_write_json

    _check_indicator(args)
    if _fast.wants_exact(args):
        return _fast.deconvolve_exact_command(args)
    settings, solver, record = _settings(args)
    if getattr(args, "scheduler", None) is not None:
        raise ValueError(
            f"--scheduler spreads the exact solver's blocks over a Dask cluster; --solver "
            f"{solver} runs here: drop --scheduler, or use --solver exact"
        )
    params_fs = record.pop("params_fs")
    if args.fs is not None and params_fs is not None and args.fs != params_fs:
        raise ValueError(
            f"--fs {args.fs:g} Hz contradicts sampling_rate_hz {params_fs:g} Hz in {args.params}"
        )
    fs_hint = args.fs if args.fs is not None else params_fs
    label = (
        "--fs" if args.fs is not None or params_fs is None else f"sampling_rate_hz in {args.params}"
    )
    rec = read_input(args.input, fs=fs_hint, fs_label=label, series=args.series)
    check_write_targets(args, rec)
    traces = rec.load()
    settings = replace(settings, fs=rec.fs)
    # Validate everything before any work or output.
    check_solver_params(
        rec.fs,
        settings.tau_rise,
        settings.tau_decay,
        settings.lam,
        settings.tol,
        settings.max_iter,
    )
    t0 = time.perf_counter()
    result = run_solver(traces, settings, solver, progress=False if args.no_progress else None)
    seconds = time.perf_counter() - t0
    run = run_record(
        "nnfit calcium deconvolve",
        args.input,
        rec.kind,
        rec.provenance,
        solver,
        seconds,
        settings=asdict(settings),
        title=f"{Path(args.input).name}: {solver}, tau {settings.tau_rise:g}/"
        f"{settings.tau_decay:g} s, lam {settings.lam:g}",
        **record,
    )
    paths = write_results(
        args.out,
        traces,
        result,
        rec.fs,
        run,
        cell_index=rec.cell_index,
        n_plot=max(0, args.plot_cells),
    )
    written = write_back(args, rec, Path(args.out), run)
    if written:
        record = json.loads(paths["run"].read_text())
        atomic_write_json(paths["run"], {**record, **written})
    n = traces.shape[0]
    print(
        f"deconvolved {n} cell(s) x {traces.shape[1]} frames at {rec.fs:g} Hz with "
        f"'{solver}' in {seconds:.2f} s; {int(result.converged.sum())}/{n} converged, "
        f"median {int(np.median(result.iterations))} iterations"
    )
    for name, path in paths.items():
        print(f"  {name:14s} {path}")
    for target in written.get("written_back", []):
        print(f"  {'written back':14s} {target}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``nnfit calcium export``."""
    from nnfit.calcium.browser_files import save_for_tuning, tuning_paths
    from nnfit.calcium.recordings import read_input
    from nnfit.io.paths import input_files, refuse_output_over_input

    stem = Path(args.out)
    if args.out.endswith(("/", os.sep)) or stem.is_dir():
        # A folder gets the input's name (without an .nwb/.hdf5/.mat/.csv suffix), never the hidden
        # files "folder/.npy".
        from nnfit.calcium.recordings import FILE_SUFFIXES

        name = Path(args.input).name
        if Path(name).suffix.lower() in FILE_SUFFIXES:
            name = Path(name).stem
        stem = stem / tuning_paths(name)[0].stem
    refuse_output_over_input(tuning_paths(stem), input_files(args.input))
    rec = read_input(args.input, fs=args.fs, fs_label="--fs", series=args.series)
    traces = rec.load()
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"source": str(Path(args.input).resolve()), "source_kind": rec.kind}
    if rec.kind == "suite2p":
        meta["suite2p_rows"] = [int(i) for i in rec.cell_index]
        meta["neuropil_factor"] = rec.provenance["neuropil_factor"]
    elif rec.kind in ("nwb", "caiman", "matlab", "table"):
        meta["source_rows"] = [int(i) for i in rec.cell_index]
        meta["source_series"] = rec.provenance.get("series", rec.provenance.get("traces"))
    npy, sidecar = save_for_tuning(traces, rec.fs, stem, metadata=meta)
    print(f"wrote {traces.shape[0]} cell(s) x {traces.shape[1]} frames at {rec.fs:g} Hz")
    print(f"  traces   {npy}\n  metadata {sidecar}")
    print(f"load {npy.name} in the CaTune browser and set the sampling rate to {rec.fs:g} Hz")
    return 0
