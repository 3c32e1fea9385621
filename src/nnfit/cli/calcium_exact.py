"""The exact solver on the command line: ``nnfit calcium deconvolve`` (exact path) and ``estimate``.

``deconvolve`` uses :func:`nnfit.calcium.deconvolve` (certified optimum, O(T) per iteration)
when ``--solver exact`` is given, or when the user leaves kinetics or lam to the data, asks for a
baseline model or a cluster. A ``.npy`` input (plain or a CaTune stem) is streamed in blocks of
cells from a memory map, each block written atomically as it finishes, so 10,000-cell recordings
run in bounded memory and a killed run resumes where it stopped (:mod:`nnfit.calcium.pipeline`);
an NWB series is streamed the same way, a block of ROIs (a hyperslab of its dataset) at a time.
``--scheduler ADDRESS`` spreads blocks over a Dask cluster. Other inputs (suite2p, CaImAn) are
read whole and solved in memory.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnfit.calcium.exact import BASELINES
from nnfit.calcium.kernel import spike_time_offset

if TYPE_CHECKING:
    from nnfit.calcium.indicators import Indicator

__all__ = [
    "EXACT_STOP",
    "add_deconvolve_arguments",
    "add_estimate",
    "deconvolve_exact_command",
    "estimate_command",
    "wants_exact",
]

#: ``(tol, max_iter)`` of the exact solver where --tol/--max-iter are not given: the defaults of
#: :func:`nnfit.calcium.deconvolve`
EXACT_STOP = (1e-9, 100)


def add_deconvolve_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the exact path, added to ``nnfit calcium deconvolve``."""
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        help="baseline model of the exact solver (default: auto = constant, or drift where the "
        "data drift); 'none' is catune's problem",
    )
    p.add_argument(
        "--two-decay",
        action="store_true",
        help="with no kinetics given: estimate a kernel with a rise and two decays (a second "
        "decay only where the traces show one; takes 4-13x the one-decay estimate), exact "
        "solver",
    )
    p.add_argument(
        "--tau-decay2",
        type=float,
        metavar="S",
        help="a second, slower decay (seconds), with --fraction, --tau-rise and --tau-decay "
        "(then the fast decay): a kernel with two decays, exact solver",
    )
    p.add_argument(
        "--fraction",
        type=float,
        metavar="F",
        help="weight of the fast decay (--tau-decay) in a kernel with two decays, 0 to 1",
    )
    p.add_argument(
        "--block-cells",
        type=int,
        default=256,
        metavar="N",
        help="cells per streamed block (default: %(default)s)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786): spread blocks over a cluster "
        "(INPUT and --out on a shared file system)",
    )


def _two_decay(args: argparse.Namespace) -> bool:
    return bool(
        getattr(args, "two_decay", False)
        or getattr(args, "tau_decay2", None) is not None
        or getattr(args, "fraction", None) is not None
    )


def wants_exact(args: argparse.Namespace) -> bool:
    """Whether ``deconvolve`` takes the exact path (see the module docstring)."""
    if getattr(args, "solver", None) == "exact":
        return True
    if _two_decay(args):
        if args.solver is not None or args.params is not None:
            raise ValueError(
                "a kernel with two decays (--two-decay, --tau-decay2, --fraction) is solved by "
                "the exact solver only: drop --solver/--params"
            )
        return True
    if args.params is not None or args.solver is not None:
        return False
    missing = args.tau_rise is None or args.tau_decay is None or args.lam is None
    return missing or args.baseline is not None or args.scheduler is not None


def _npy_source(path: str, fs: float | None) -> tuple[Path, float, str] | None:
    """``(npy, fs, kind)`` when INPUT is a ``.npy`` that can be memory-mapped, else ``None``."""
    from nnfit.calcium.browser_files import read_tuning_metadata, tuning_paths
    from nnfit.calcium.recordings import resolve_fs

    p = Path(path)
    if p.is_dir():
        return None
    npy, sidecar = tuning_paths(p)
    if npy.is_file() and sidecar.is_file():
        from nnfit.io.arrays import read_npy_header

        shape, _, dtype, _ = read_npy_header(npy)
        meta = read_tuning_metadata(npy, shape, dtype)  # the FISTA path's checks, no load
        return npy, resolve_fs(meta["sampling_rate_hz"], fs, str(sidecar), "--fs"), "catune"
    if p.suffix == ".npy" and p.is_file():
        from nnfit.calcium.recordings import warn_if_transposed
        from nnfit.io.arrays import read_npy_header

        fs_ = resolve_fs(None, fs, str(p), "--fs")
        warn_if_transposed(tuple(read_npy_header(p)[0]), p, fs_)
        return p, fs_, "npy"
    return None


def deconvolve_exact_command(args: argparse.Namespace) -> int:
    """``nnfit calcium deconvolve`` with the exact solver."""
    from nnfit.calcium.estimate import LAM_Z
    from nnfit.calcium.indicators import indicator_kinetics, indicator_record
    from nnfit.calcium.pipeline import deconvolve_recording, open_traces
    from nnfit.calcium.results import plot_cells, run_record, summary_csv
    from nnfit.cli.calcium_formats import check_write_targets, write_back
    from nnfit.io import atomic_write_bytes, atomic_write_json, file_sha256
    from nnfit.validate import check_int, check_real

    indicator = getattr(args, "indicator", None)
    if args.params is not None:
        raise ValueError("--solver exact takes --tau-rise/--tau-decay/--lam, not --params")
    if (args.tau_rise is None) != (args.tau_decay is None):
        raise ValueError("give both --tau-rise and --tau-decay, or neither (both are estimated)")
    two = _two_decay(args)
    if two:
        kin = {
            "--tau-rise": args.tau_rise,
            "--tau-decay": args.tau_decay,
            "--tau-decay2": args.tau_decay2,
            "--fraction": args.fraction,
        }
        given = [k for k, v in kin.items() if v is not None]
        if given and len(given) < 4:
            missing = [k for k, v in kin.items() if v is None]
            raise ValueError(
                f"a kernel with two decays takes --tau-rise, --tau-decay, --tau-decay2 and "
                f"--fraction together: add {', '.join(missing)}, or give none of them with "
                "--two-decay (then it is estimated)"
            )
        if indicator is not None:
            raise ValueError(
                "--indicator bounds the one-decay estimate: drop it, or drop --two-decay/"
                "--tau-decay2/--fraction"
            )
    kernel2 = (
        {"two_decay": True, "tau_decay2": args.tau_decay2, "fraction": args.fraction} if two else {}
    )
    if args.lam is not None:
        check_real("--lam", args.lam, low=0.0, low_inclusive=False)
    tol, max_iter = EXACT_STOP
    if args.tol is not None:
        tol = check_real("--tol", args.tol, low=0.0, low_inclusive=False)
    if args.max_iter is not None:
        max_iter = check_int("--max-iter", args.max_iter, low=1)
    baseline = args.baseline or "auto"
    out = Path(args.out)
    src = None if args.series is not None else _npy_source(args.input, args.fs)
    r = None
    if src is None:
        from nnfit.calcium.recordings import read_input

        r = read_input(args.input, fs=args.fs, fs_label="--fs", series=args.series, lazy=True)
        check_write_targets(args, r)
        if r.traces is None:
            src = (r.source, r.fs, r.kind)
    elif args.write_nwb is not None or args.write_suite2p:
        raise ValueError("--write-nwb and --write-suite2p need an .nwb or suite2p INPUT")
    t0 = time.perf_counter()
    if src is not None:
        npy, fs, kind = src
        dataset = None if r is None else r.dataset
        rec = deconvolve_recording(
            npy,
            out,
            fs,
            args.tau_rise,
            args.tau_decay,
            args.lam,
            baseline=baseline,
            tol=tol,
            max_iter=max_iter,
            block_cells=args.block_cells,
            scheduler=args.scheduler,
            progress=False if args.no_progress else None,
            dataset=dataset,
            indicator=indicator,
            source_rows=None if r is None else r.cell_index,
            **kernel2,
        )
        if r is None:
            traces = open_traces(npy)
            input_hash = file_sha256(npy)
        else:
            input_hash = r.provenance.get("input_sha256")
    else:
        from nnfit.calcium.pipeline import deconvolve

        if args.scheduler is not None:
            # workers read blocks of rows from the file as it is stored; what nnfit reads
            # whole (other formats, a one-ROI or a scaled NWB series) has no such rows
            raise ValueError(
                f"--scheduler needs traces that workers can read from the shared disk in "
                f"blocks: a .npy, or an NWB series of several ROIs stored in its units; "
                f"{args.input} ({r.kind}) is read whole here: drop --scheduler, or save the "
                "traces as .npy (nnfit calcium export) and give that"
            )
        fs, kind, traces = r.fs, r.kind, r.traces
        res = deconvolve(
            traces,
            fs,
            args.tau_rise,
            args.tau_decay,
            lam=args.lam,
            baseline=baseline,
            tol=tol,
            max_iter=max_iter,
            n_jobs=-1,
            indicator=indicator,
            **kernel2,
        )
        out.mkdir(parents=True, exist_ok=True)
        from nnfit.io import atomic_path

        for name, arr in (
            ("spikes", res.spikes),
            ("reconvolution", res.calcium + res.baseline),
            ("baseline", res.baseline),
        ):
            with atomic_path(out / f"{name}.npy", suffix=".npy") as tmp:
                np.save(tmp, np.ascontiguousarray(arr, dtype="<f8"))
        columns = {
            "source_row": r.cell_index,
            "baseline_kind": res.baseline_kind,
            "baseline": res.baseline.mean(axis=1),
            **{k: getattr(res, k) for k in ("lam", "noise", "objective", "gap", "kkt")},
            "iterations": res.iterations,
            "converged": res.converged,
            "spike_sum": res.spikes.sum(axis=1),
        }
        atomic_write_bytes(out / "summary.csv", summary_csv(columns))
        rec = {
            "cells": traces.shape[0],
            "frames": traces.shape[1],
            "fs": fs,
            "tau_rise": res.tau_rise,
            "tau_decay": res.tau_decay,
            **({} if not two else {"tau_decay2": res.tau_decay2, "fraction": res.fraction}),
            "kinetics_estimated": res.estimated["kinetics"],
            "lam": args.lam,
            "baseline": baseline,
            "tol": tol,
            "max_iter": max_iter,
            "converged": int(res.converged.sum()),
        }
        input_hash = r.provenance.get("input_sha256")
    seconds = time.perf_counter() - t0
    run = run_record(
        "nnfit calcium deconvolve",
        args.input,
        kind,
        {"input_sha256": input_hash} if r is None else r.provenance,
        "exact",
        seconds,
        **rec,
        # where spike j sits in time: frame_time[j] + this (see nnfit.calcium.spike_time_offset)
        spike_time_offset_s=spike_time_offset(
            rec["tau_rise"],
            rec["tau_decay"],
            fs,
            tau_decay2=rec.get("tau_decay2"),
            fraction=rec.get("fraction", 1.0),
        )
        / fs,
        lam_rule=None if args.lam is not None else f"lam = {LAM_Z:g} noise ||h||_2 per cell",
        **({} if indicator is None else indicator_record(indicator)),
        outputs=["spikes.npy", "reconvolution.npy", "baseline.npy", "summary.csv", "run.json"],
    )
    n_plot = max(0, args.plot_cells)
    if n_plot:
        k = min(n_plot, rec["cells"])
        # a streamed run holds no result in memory: its first rows come from the outputs
        spikes = np.load(out / "spikes.npy", mmap_mode="r")[:k]
        recon = np.load(out / "reconvolution.npy", mmap_mode="r")[:k]
        title = (
            f"{Path(args.input).name}: exact, tau {rec['tau_rise']:.3g}/{rec['tau_decay']:.3g} s"
            + ("" if not two else f" ({100 * rec['fraction']:.0f} %) + {rec['tau_decay2']:.3g} s")
        )
        shown = r.read_rows(0, k) if r is not None else np.asarray(traces[:k], dtype=float)
        plot_cells(out / "cells.png", shown, spikes, recon, fs, n_cells=k, title=title)
        run["outputs"].append("cells.png")
    written = write_back(args, r, out, run) if r is not None else {}
    run.update(written)
    atomic_write_json(out / "run.json", run)
    how = "estimated from the data" if rec["kinetics_estimated"] else "given"
    if indicator is not None:
        how += f", the decay within {_prior_range(indicator_kinetics(indicator))}"
    decays = f"tau_decay {rec['tau_decay']:.4g} s"
    if two:
        decays += (
            f" (weight {rec['fraction']:.2f}), tau_decay2 {rec['tau_decay2']:.4g} s"
            if rec["fraction"] < 1.0
            else " (one decay: the traces showed no second)"
        )
    print(f"kinetics ({how}): tau_rise {rec['tau_rise']:.4g} s, {decays}")
    print(
        f"spike times: spikes.npy[:, j] is at frame j's time + {1e3 * run['spike_time_offset_s']:.3g}"
        " ms (spike_time_offset_s in run.json)"
    )
    if args.lam is None:
        print(f"lam: per cell from the noise (lam = {LAM_Z:g} noise ||h||_2); see summary.csv")
    resumed = rec.get("blocks_resumed", 0)
    extra = f", resumed {resumed} of {rec['blocks']} blocks" if resumed else ""
    print(
        f"deconvolved {rec['cells']} cell(s) x {rec['frames']} frames at {fs:g} Hz with 'exact' "
        f"in {seconds:.2f} s; {rec['converged']}/{rec['cells']} certified optimal "
        f"(duality gap <= {tol:g}){extra}"
    )
    for name in run["outputs"]:
        print(f"  {name:18s} {out / name}")
    for target in written.get("written_back", []):
        print(f"  {'written back':18s} {target}")
    return 0


def add_estimate(sub: argparse._SubParsersAction) -> None:
    """Add ``nnfit calcium estimate``."""
    p = sub.add_parser(
        "estimate",
        help="estimate noise, kinetics and lam from the traces",
        description="Estimate noise (high-frequency spectrum), tau_rise and tau_decay "
        "(pooled over cells: the decay whose deconvolution residuals are whitest, searched "
        "over 0.03-5 s; the rise from the autocovariance's first lags; per cell: the "
        "autocovariance fit) and lam (length-invariant rule). With "
        "several INPUTs (recordings of one indicator, same frame rate): kinetics per "
        "recording, each decay moved from the pooled one towards the recording's own as far "
        "as the recordings disagree beyond their noise.",
        epilog="examples:\n  nnfit calcium estimate traces.npy --fs 30\n"
        "  nnfit calcium estimate suite2p/plane0 --json params.json\n"
        "  nnfit calcium estimate rec.nwb --series Fluorescence/RoiResponseSeries\n"
        "  nnfit calcium estimate day1.npy day2.npy day3.npy day4.npy --fs 30\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from nnfit.cli.calcium_formats import add_series_argument

    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help=".npy, CaTune stem, suite2p folder, .nwb, CaImAn .hdf5, .mat or .csv/.tsv/.txt; "
        "several: one per recording",
    )
    p.add_argument("--fs", type=float, help="sampling rate in Hz (if INPUT does not record it)")
    p.add_argument("--json", metavar="FILE", help="also write the estimates as JSON")
    add_series_argument(p)
    p.add_argument(
        "--max-cells",
        type=int,
        default=2000,
        metavar="N",
        help="estimate on at most N cells spread over the recording; with several INPUTs, "
        "N in all, shared between them, at least 8 each (default: %(default)s)",
    )
    p.add_argument(
        "--indicator",
        metavar="NAME",
        help="the recording's indicator: its preset's decay / or x 5 bounds the pooled decay "
        "(with several INPUTs, every recording's), as in 'nnfit calcium deconvolve --indicator'",
    )
    p.add_argument(
        "--two-decay",
        action="store_true",
        help="also estimate a kernel with a rise and two decays, as 'nnfit calcium deconvolve "
        "--two-decay' does (one INPUT; seconds to minutes)",
    )
    p.set_defaults(func=estimate_command)


def _estimate_input(
    path: str, args: argparse.Namespace, max_cells: int
) -> tuple[float, tuple[int, int], np.ndarray, np.ndarray]:
    """``(fs, (cells, frames), rows read, traces of those rows)`` of one INPUT: at most
    ``max_cells`` cells spread over it."""
    src = None if args.series is not None else _npy_source(path, args.fs)
    if src is not None:
        from nnfit.calcium.pipeline import open_traces

        npy, fs, _ = src
        traces = open_traces(npy)
        n, T = traces.shape
        take = traces.__getitem__
    else:
        from nnfit.calcium.recordings import read_input

        r = read_input(path, fs=args.fs, fs_label="--fs", series=args.series, lazy=True)
        fs, (n, T), take = r.fs, r.shape, r.take
    rows = np.unique(np.linspace(0, n - 1, min(n, max(1, max_cells))).astype(int))
    return fs, (n, T), rows, np.asarray(take(rows), dtype=float)


def _deconvolve_line(args: argparse.Namespace, kinetics: dict[str, float]) -> str:
    """The ``nnfit calcium deconvolve`` command line that runs ``args.input`` with the estimated
    ``kinetics`` (flag -> seconds or weight, 4 digits), into ``--out DIR``.

    The --fs and --series this estimate read the input with are repeated: the input needs them
    again (a ``.npy`` records no sampling rate), and they agree with it where it has its own.
    """
    words = ["nnfit", "calcium", "deconvolve", args.input]
    if args.fs is not None:
        fs = f"{args.fs:g}"
        words += ["--fs", fs if float(fs) == args.fs else repr(args.fs)]
    if args.series is not None:
        words += ["--series", args.series]
    for flag, value in kinetics.items():
        words += [flag, f"{value:.4g}"]
    return shlex.join([*words, "--out", "DIR"])


def _shrunk(own: float, weight: float | None) -> str:
    """How a recording's decay relates to its own estimate (``own``, NaN where it was too short
    to compare) and the pooled one, for ``estimate`` with several INPUTs."""
    if np.isnan(own):
        return " (the pooled: too short to compare)" if weight is not None else ""
    if weight == 0.0:
        return f" (the pooled; its own {own:.4g} s)"
    if weight == 1.0:
        return " (its own)"
    return f" (shrunk towards the pooled from its own {own:.4g} s)"


def _prior_range(prior: Indicator) -> str:
    """``the GCaMP6s prior's 0.36-9 s``: the decays a named indicator allows."""
    lo, hi = prior.decay_range
    return f"the {prior.name} prior's {lo:.3g}-{hi:.3g} s"


def _at_bound(prior: Indicator | None, tau_decay: float) -> str:
    """A remark where a decay stopped at the prior's bound: the data and the name disagree."""
    if prior is None or not prior.at_bound(tau_decay):
        return ""
    return ": at a bound of the prior (check the indicator)"


def _estimate_per_recording(args: argparse.Namespace, prior: Indicator | None) -> int:
    """``nnfit calcium estimate`` with several INPUTs: kinetics per recording."""
    from nnfit.calcium.estimate import (
        REFINE_MAX_TRACES,
        SHRINK_MIN_RECORDINGS,
        estimate_kinetics_per_recording,
    )
    from nnfit.calcium.indicators import indicator_record
    from nnfit.io import atomic_write_json

    # the cells read stay near --max-cells in all, however many recordings there are; each
    # recording's own decay search reads at most REFINE_MAX_TRACES of them
    each = max(REFINE_MAX_TRACES, args.max_cells // len(args.inputs))
    read = []
    for path in args.inputs:
        args.input = path  # an error while reading names this input
        read.append(_estimate_input(path, args, each))
    rates = {fs for fs, *_ in read}
    if len(rates) > 1:
        listed = ", ".join(
            f"{path}: {fs:g} Hz" for path, (fs, *_) in zip(args.inputs, read, strict=True)
        )
        raise ValueError(
            f"the INPUTs must share one frame rate to be compared ({listed}); estimate each "
            "rate's recordings on their own"
        )
    fs = rates.pop()
    tr, td, info = estimate_kinetics_per_recording(
        [traces for *_, traces in read],
        fs,
        decay_range=None if prior is None else prior.decay_range,
        return_info=True,
    )
    pooled, weight, own = info["pooled"], info["weight"], info["own_tau_decay"]
    print(
        f"{len(read)} recordings at {fs:g} Hz; pooled: tau_rise {pooled['tau_rise']:.4g} s, "
        f"tau_decay {pooled['tau_decay']:.4g} s{_at_bound(prior, pooled['tau_decay'])}"
    )
    width = max(len(path) for path in args.inputs)
    for path, (_, (n, T), rows, _), a, b, c in zip(args.inputs, read, tr, td, own, strict=True):
        print(
            f"  {path:{width}s}  {len(rows)} of {n} cell(s) x {T} frames: "
            f"tau_rise {a:.4g} s, tau_decay {b:.4g} s{_at_bound(prior, b)}"
            f"{_shrunk(c, weight)}"
        )
    if prior is not None:
        print(f"  the decays held within {_prior_range(prior)}")
    if weight is None:
        print(
            f"  one decay for all, the pooled: fewer than {SHRINK_MIN_RECORDINGS} recordings "
            "long enough to compare"
        )
    elif weight == 0.0:
        print("  one decay for all, the pooled: the recordings do not disagree beyond their noise")
    else:
        print(
            f"  each decay moved {100 * weight:.0f} % of the way (in log) from the pooled one "
            "towards the recording's own, as far as the recordings disagree beyond their noise"
        )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "fs": fs,
                "pooled": pooled,
                # how far each decay moved from the pooled towards its own (null: not compared)
                "shrinkage_weight": weight,
                "recordings": [
                    {
                        "input": path,
                        "cells": [int(i) for i in rows],
                        "tau_rise": a,
                        "tau_decay": b,
                        "own_tau_decay": None if np.isnan(c) else c,
                    }
                    for path, (_, _, rows, _), a, b, c in zip(
                        args.inputs, read, tr.tolist(), td.tolist(), own.tolist(), strict=True
                    )
                ],
                **({} if prior is None else indicator_record(prior.name)),
            },
        )
        print(f"  wrote {args.json}")
    return 0


def estimate_command(args: argparse.Namespace) -> int:
    """``nnfit calcium estimate``."""
    from nnfit.calcium.estimate import estimate_parameters
    from nnfit.calcium.indicators import indicator_kinetics, indicator_record
    from nnfit.io import atomic_write_json

    prior = None if args.indicator is None else indicator_kinetics(args.indicator)
    if args.two_decay and (len(args.inputs) > 1 or prior is not None):
        drop = [
            what
            for what, given in (
                ("--indicator", prior is not None),
                (f"all INPUTs but one (got {len(args.inputs)})", len(args.inputs) > 1),
            )
            if given
        ]
        raise ValueError(
            "--two-decay estimates one kernel from one INPUT, without an indicator prior: drop "
            + " and ".join(drop)
        )
    if len(args.inputs) > 1:
        return _estimate_per_recording(args, prior)
    args.input = args.inputs[0]
    fs, (n, T), rows, traces = _estimate_input(args.input, args, args.max_cells)
    p = estimate_parameters(traces, fs, decay_range=None if prior is None else prior.decay_range)
    pooled = p["pooled"]
    print(f"{len(rows)} of {n} cell(s) x {T} frames at {fs:g} Hz")
    print(
        f"pooled: tau_rise {pooled['tau_rise']:.4g} s, tau_decay {pooled['tau_decay']:.4g} s, "
        f"noise {pooled['noise']:.4g}, lam {pooled['lam']:.4g}"
    )
    if prior is not None:
        print(
            f"  the decay held within {_prior_range(prior)}{_at_bound(prior, pooled['tau_decay'])}"
        )
    q = np.percentile
    for key in ("noise", "tau_rise", "tau_decay", "lam"):
        v = p[key]
        print(
            f"  {key:9s} per cell: median {np.median(v):.4g}  (5-95 %: {q(v, 5):.4g} - {q(v, 95):.4g})"
        )
    kinetics = {"--tau-rise": pooled["tau_rise"], "--tau-decay": pooled["tau_decay"]}
    print(f"use: {_deconvolve_line(args, kinetics)}   (lam per cell from the noise)")
    two = None
    if args.two_decay:
        from nnfit.calcium.two_decay import estimate_two_decay_kernel

        k = estimate_two_decay_kernel(list(traces), fs, n_jobs=-1)
        two = {
            "tau_rise": k.tau_rise,
            "tau_decay": k.tau_decay,
            "tau_decay2": k.tau_decay2,
            "fraction": k.fraction,
        }
        if k.fraction < 1.0:
            print(
                f"two decays: tau_rise {k.tau_rise:.4g} s, tau_decay {k.tau_decay:.4g} s "
                f"(weight {k.fraction:.2f}), tau_decay2 {k.tau_decay2:.4g} s"
            )
        else:
            print(f"two decays: the traces show one, tau_decay {k.tau_decay:.4g} s")
        kinetics = {
            "--tau-rise": k.tau_rise,
            "--tau-decay": k.tau_decay,
            "--tau-decay2": k.tau_decay2,
            "--fraction": k.fraction,
        }
        print(f"use: {_deconvolve_line(args, kinetics)}")
    if args.json:
        atomic_write_json(
            args.json,
            {
                "cells": [int(i) for i in rows],
                "fs": fs,
                "pooled": pooled,
                **{k: [float(x) for x in p[k]] for k in ("noise", "tau_rise", "tau_decay", "lam")},
                **({} if prior is None else indicator_record(prior.name)),
                **({} if two is None else {"two_decay": two}),
            },
        )
        print(f"  wrote {args.json}")
    return 0
