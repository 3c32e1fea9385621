"""Write deconvolution results: arrays, per-cell summary, run record and a figure of a few cells.

Every file is written atomically (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnfit.calcium.result import DeconvolutionResult
from nnfit.io import atomic_path, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "SUMMARY_FIELDS",
    "cells_figure",
    "plot_cells",
    "run_record",
    "summary_csv",
    "summary_lines",
    "write_results",
]


#: One ``summary.csv`` for every calcium solver, one row per cell. ``cell`` is the row in the
#: outputs, ``source_row`` the trace's row in the input's ROI list, ``baseline`` the mean of
#: the baseline under the fit; a column a solver does not report is left empty (the exact
#: solver reports all; catune's FISTA has no baseline, noise, gap or kkt).
SUMMARY_FIELDS = (
    "cell",
    "source_row",
    "baseline_kind",
    "baseline",
    "lam",
    "noise",
    "objective",
    "gap",
    "kkt",
    "iterations",
    "converged",
    "spike_sum",
)


def summary_lines(columns: dict[str, Any], first_cell: int = 0) -> list[str]:
    """``summary.csv`` rows (no header) from per-cell arrays named as in :data:`SUMMARY_FIELDS`.

    ``cell`` counts from ``first_cell`` and ``source_row`` defaults to it; missing columns stay
    empty. Floats are written with ``repr`` (they read back exactly).

    Examples
    --------
    >>> summary_lines({"iterations": np.array([7]), "converged": np.array([True])})
    ['0,0,,,,,,,,7,True,']
    """
    n = len(next(iter(columns.values())))
    rows = []
    for i in range(n):
        row = []
        for name in SUMMARY_FIELDS:
            if name == "cell":
                row.append(str(first_cell + i))
            elif name == "source_row":
                src = columns.get("source_row")
                row.append(str(int(src[i]) if src is not None else first_cell + i))
            elif name not in columns:
                row.append("")
            elif name == "baseline_kind":
                row.append(str(columns[name][i]))
            elif name == "iterations":
                row.append(str(int(columns[name][i])))
            elif name == "converged":
                row.append(str(bool(columns[name][i])))
            else:
                row.append(repr(float(columns[name][i])))
        rows.append(",".join(row))
    return rows


def summary_csv(columns: dict[str, Any]) -> bytes:
    """The whole ``summary.csv`` (header and rows) for one in-memory result."""
    return ("\n".join([",".join(SUMMARY_FIELDS), *summary_lines(columns)]) + "\n").encode()


def run_record(
    command: str,
    input_path: str | os.PathLike[str],
    input_kind: str,
    provenance: dict[str, Any],
    solver: str,
    time_s: float,
    **fields: Any,
) -> dict[str, Any]:
    """The one ``run.json`` header every calcium command writes, then its own ``fields``.

    ``nnfit_version``, ``command``, ``input`` (absolute path), ``input_kind``,
    ``input_sha256`` and ``input_provenance`` (from the reader), ``solver``, ``time_s``.

    Examples
    --------
    >>> rec = run_record("nnfit calcium deconvolve", "rec.npy", "npy", {}, "exact", 1.23456)
    >>> rec["solver"], rec["time_s"]
    ('exact', 1.235)
    """
    from nnfit import __version__

    return {
        "nnfit_version": __version__,
        "command": command,
        "input": str(Path(input_path).resolve()),
        "input_kind": input_kind,
        "input_sha256": provenance.get("input_sha256"),
        "input_provenance": provenance,
        "solver": solver,
        "time_s": round(float(time_s), 3),
        **fields,
    }


def cells_figure(
    traces: np.ndarray,
    spikes: np.ndarray,
    reconvolution: np.ndarray,
    fs: float,
    *,
    n_cells: int = 4,
    truth: np.ndarray | None = None,
    title: str = "",
    window_s: float = 60.0,
) -> Figure:
    """The figure of :func:`plot_cells`: one panel per cell, the first ``window_s`` seconds.

    Each panel's left axis is the trace's fluorescence, in the input's units (the file states
    none that every reader could carry: a.u., dF/F, ...); the inferred spikes stand below the
    trace on the right axis, in the same units (a spike's size is the peak of the transient it
    adds). The title says which part of the recording is drawn.

    Examples
    --------
    >>> z = np.zeros((2, 3000))
    >>> fig = cells_figure(z, z, z, 30.0, title="rec.npy")
    >>> fig.texts[0].get_text()
    'rec.npy (first 60 s of 100 s)'
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    k = max(1, min(n_cells, traces.shape[0]))
    n_frames = traces.shape[1]
    m = max(2, min(n_frames, round(window_s * fs)))
    traces = np.asarray(traces[:k, :m])
    spikes = np.asarray(spikes[:k, :m])
    reconvolution = np.asarray(reconvolution[:k, :m])
    truth = None if truth is None else truth[:k, :m]
    t = np.arange(m) / fs
    fig = Figure(figsize=(11, 2.2 * k + 0.8))
    axes = fig.subplots(k, 1, sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, traces[i], color="0.6", lw=0.6, label="trace")
        ax.plot(t, reconvolution[i], color="C0", lw=0.9, label="reconvolution")
        low = float(min(traces[i].min(), reconvolution[i].min()))
        high = float(max(traces[i].max(), reconvolution[i].max()))
        span = high - low or 1.0
        ax.set_ylim(low - 0.55 * span, low + 1.05 * span)
        # fluorescence ticks over the trace only: below it the panel holds the spikes
        ax.set_yticks([v for v in MaxNLocator(4).tick_values(low, high) if low <= v <= high])
        ax.set_ylabel(f"cell {i}\nfluorescence\n(input units)", fontsize=8)
        # the spikes' own axis: 0 at 0.45 span below the trace, the largest 0.4 span above that
        top = float(spikes[i].max()) or 1.0
        zero, per_unit = low - 0.45 * span, 0.4 * span / top
        bottom, upper = ax.get_ylim()
        sx = ax.twinx()
        sx.set_ylim((bottom - zero) / per_unit, (upper - zero) / per_unit)
        sx.vlines(t, 0.0, spikes[i], color="C3", lw=0.8, label="inferred spikes (right axis)")
        sx.set_yticks([0.0, top], labels=["0", f"{top:.3g}"])
        sx.tick_params(axis="y", colors="C3", labelsize=7)
        sx.set_ylabel("spike size\n(transient peak)", color="C3", fontsize=7)
        if truth is not None:
            hit = truth[i] > 0
            ax.plot(t[hit], np.full(hit.sum(), low - 0.5 * span), "k|", ms=5, label="true spikes")
        if i == 0:
            handles = ax.get_legend_handles_labels()[0] + sx.get_legend_handles_labels()[0]
            ax.legend(handles=handles, loc="upper right", fontsize=7, ncol=4, frameon=False)
    axes[-1, 0].set_xlabel("time (s)")
    duration = n_frames / fs
    shown = f"first {m / fs:.3g} s of {duration:.4g} s" if m < n_frames else f"all {duration:.4g} s"
    fig.suptitle(f"{title} ({shown})" if title else shown, fontsize=9)
    fig.tight_layout()
    return fig


def plot_cells(
    path: str | os.PathLike[str],
    traces: np.ndarray,
    spikes: np.ndarray,
    reconvolution: np.ndarray,
    fs: float,
    *,
    n_cells: int = 4,
    truth: np.ndarray | None = None,
    title: str = "",
    window_s: float = 60.0,
) -> Path:
    """Save a PNG of the first ``n_cells``: trace, reconvolution, inferred (and true) spikes.

    Only the first ``window_s`` seconds are drawn, so single events stay visible; the figure
    is :func:`cells_figure`'s.
    """
    fig = cells_figure(
        traces,
        spikes,
        reconvolution,
        fs,
        n_cells=n_cells,
        truth=truth,
        title=title,
        window_s=window_s,
    )
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def write_results(
    out_dir: str | os.PathLike[str],
    traces: np.ndarray,
    result: DeconvolutionResult,
    fs: float,
    run: dict[str, Any],
    *,
    cell_index: np.ndarray | None = None,
    n_plot: int = 4,
    truth: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write ``spikes.npy``, ``reconvolution.npy``, ``summary.csv``, ``run.json``, ``cells.png``.

    Returns the paths by name. ``run`` (settings, input, versions) goes into ``run.json``.

    Examples
    --------
    >>> import tempfile
    >>> z, nan = np.zeros((1, 5)), np.full(1, np.nan)
    >>> r = DeconvolutionResult(z, z, z, np.ones(1), np.zeros(1), nan, nan, np.array([6]),
    ...                         np.array([True]), ["none"], 0.05, 0.5, 30.0, nan)
    >>> paths = write_results(tempfile.mkdtemp(), np.zeros((1, 5)), r, 30.0, {}, n_plot=0)
    >>> sorted(paths)
    ['reconvolution', 'run', 'spikes', 'summary']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = np.arange(traces.shape[0]) if cell_index is None else np.asarray(cell_index)
    paths = {
        "spikes": out / "spikes.npy",
        "reconvolution": out / "reconvolution.npy",
        "summary": out / "summary.csv",
        "run": out / "run.json",
    }
    reconvolution = result.reconvolution
    for name, values in (("spikes", result.spikes), ("reconvolution", reconvolution)):
        with atomic_path(paths[name], suffix=".npy") as tmp:
            np.save(tmp, np.ascontiguousarray(values, dtype="<f8"))
    columns = {
        "source_row": idx,
        "baseline_kind": result.baseline_kind,
        "baseline": result.baseline.mean(axis=1),
        "lam": result.lam,
        "objective": result.objective,
        "iterations": result.iterations,
        "converged": result.converged,
        "spike_sum": result.spikes.sum(axis=1),
    }
    atomic_write_bytes(paths["summary"], summary_csv(columns))
    record = dict(run)
    record["outputs"] = {k: p.name for k, p in paths.items()}
    record["n_cells"], record["n_timepoints"] = (int(v) for v in traces.shape)
    record["converged_cells"] = int(np.sum(result.converged))
    if n_plot > 0:
        paths["figure"] = out / "cells.png"
        record["outputs"]["figure"] = "cells.png"
        plot_cells(
            paths["figure"],
            traces,
            result.spikes,
            reconvolution,
            fs,
            n_cells=n_plot,
            truth=truth,
            title=str(run.get("title", "")),
        )
    atomic_write_json(paths["run"], record)
    return paths
