"""Write deconvolution results: arrays, per-cell summary, run record and a figure of a few cells.

Every file is written atomically (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.io import atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["SolveResult", "plot_cells", "write_results"]


@dataclass(frozen=True)
class SolveResult:
    """What every calcium solver returns to the CLI and the demo (arrays over cells).

    Attributes
    ----------
    spikes, reconvolution : numpy.ndarray
        ``(n_cells, n_timepoints)``; ``reconvolution`` includes the baseline.
    baseline, objective : numpy.ndarray
        ``(n_cells,)`` float (baseline is 0 for solvers without one).
    iterations : numpy.ndarray
        ``(n_cells,)`` int.
    converged : numpy.ndarray
        ``(n_cells,)`` bool.
    """

    spikes: np.ndarray
    reconvolution: np.ndarray
    baseline: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    objective: np.ndarray


def _summary_csv(result: SolveResult, cell_index: np.ndarray) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["cell", "source_row", "iterations", "converged", "objective", "baseline", "spike_sum"]
    )
    for i in range(result.spikes.shape[0]):
        writer.writerow([
            i, int(cell_index[i]), int(result.iterations[i]), bool(result.converged[i]),
            repr(float(result.objective[i])), repr(float(result.baseline[i])),
            repr(float(result.spikes[i].sum())),
        ])  # fmt: skip
    return buf.getvalue().encode("utf-8")


def plot_cells(path: str | os.PathLike[str], traces: np.ndarray, result: SolveResult, fs: float,
               *, n_cells: int = 4, truth: np.ndarray | None = None, title: str = "",
               window_s: float = 60.0) -> Path:  # fmt: skip
    """Save a PNG of the first ``n_cells``: trace, reconvolution, inferred (and true) spikes.

    Only the first ``window_s`` seconds are drawn, so single events stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, min(n_cells, traces.shape[0]))
    m = max(2, min(traces.shape[1], round(window_s * fs)))
    traces = traces[:k, :m]
    result = SolveResult(result.spikes[:k, :m], result.reconvolution[:k, :m], result.baseline,
                         result.iterations, result.converged, result.objective)  # fmt: skip
    truth = None if truth is None else truth[:k, :m]
    t = np.arange(m) / fs
    fig, axes = plt.subplots(k, 1, figsize=(11, 2.2 * k + 0.6), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, traces[i], color="0.6", lw=0.6, label="trace")
        ax.plot(t, result.reconvolution[i], color="C0", lw=0.9, label="reconvolution")
        low = float(min(traces[i].min(), result.reconvolution[i].min()))
        span = float(max(traces[i].max(), result.reconvolution[i].max())) - low or 1.0
        top = float(result.spikes[i].max()) or 1.0
        ax.vlines(t, low - 0.45 * span, low - 0.45 * span + 0.4 * span * result.spikes[i] / top,
                  color="C3", lw=0.8, label="inferred spikes")  # fmt: skip
        if truth is not None:
            hit = truth[i] > 0
            ax.plot(t[hit], np.full(hit.sum(), low - 0.5 * span), "k|", ms=5, label="true spikes")
        ax.set_ylabel(f"cell {i}")
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4, frameon=False)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def write_results(out_dir: str | os.PathLike[str], traces: np.ndarray, result: SolveResult,
                  fs: float, run: dict[str, Any], *, cell_index: np.ndarray | None = None,
                  n_plot: int = 4, truth: np.ndarray | None = None) -> dict[str, Path]:  # fmt: skip
    """Write ``spikes.npy``, ``reconvolution.npy``, ``summary.csv``, ``run.json``, ``cells.png``.

    Returns the paths by name. ``run`` (settings, input, versions) goes into ``run.json``.

    Examples
    --------
    >>> import tempfile
    >>> r = SolveResult(np.zeros((1, 5)), np.zeros((1, 5)), np.zeros(1), np.array([6]),
    ...                 np.array([True]), np.zeros(1))
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
    for name in ("spikes", "reconvolution"):
        with atomic_path(paths[name], suffix=".npy") as tmp:
            np.save(tmp, np.ascontiguousarray(getattr(result, name), dtype="<f8"))
    atomic_write_bytes(paths["summary"], _summary_csv(result, idx))
    record = dict(run)
    record["outputs"] = {k: p.name for k, p in paths.items()}
    record["n_cells"], record["n_timepoints"] = (int(v) for v in traces.shape)
    record["converged_cells"] = int(np.sum(result.converged))
    if n_plot > 0:
        paths["figure"] = out / "cells.png"
        record["outputs"]["figure"] = "cells.png"
        plot_cells(paths["figure"], traces, result, fs, n_cells=n_plot, truth=truth,
                   title=str(run.get("title", "")))  # fmt: skip
    atomic_write_json(paths["run"], record)
    return paths
