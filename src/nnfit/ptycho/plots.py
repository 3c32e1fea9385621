"""One PNG that shows what a fixture holds: object, probe, scan positions and patterns."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke

from nnfit.io import atomic_path
from nnfit.ptycho.simulate import alignment_residuals

__all__ = ["fixture_figure"]


def fixture_figure(
    arrays: Mapping[str, np.ndarray], out_png: str | os.PathLike[str], *, title: str = ""
) -> dict[str, Any]:
    """Draw a DATA-001 fixture (or source) to ``out_png`` and return what was drawn.

    Panels: the object's phase with every scan's probe centre (numbered by ``scan_index``
    up to 24 scans) and the extent of their patches, and its amplitude; the probe's amplitude and phase (phase shown where the
    amplitude exceeds 5 % of its peak); the mean diffraction amplitude on a log scale; and
    each scan's misfit against the forward model at its own coordinates and at the best
    other scan's (:func:`~nnfit.ptycho.simulate.alignment_residuals` with the scale fitted),
    the check ``nnfit ptycho verify --alignment`` makes. Axes are in object and detector
    pixels (DATA-001 carries no physical pixel size). The PNG is replaced atomically.

    Parameters
    ----------
    arrays : mapping
        ``diffraction`` (N, H, W), ``objectGuess``, ``probeGuess``, ``xcoords``, ``ycoords``
        and optionally ``scan_index``, as a fixture holds them.
    out_png : path-like
        The PNG to write (its folder is created).
    title : str
        Shown above the panels (e.g. the fixture's file name).

    Returns
    -------
    dict
        ``path``, ``n_scans``, ``own`` (each scan's misfit at its coordinates) and ``other``
        (its smallest misfit elsewhere).
    """
    d = np.asarray(arrays["diffraction"], dtype=np.float64)
    obj = np.asarray(arrays["objectGuess"])
    probe = np.asarray(arrays["probeGuess"])
    x = np.asarray(arrays["xcoords"], dtype=np.float64)
    y = np.asarray(arrays["ycoords"], dtype=np.float64)
    if d.ndim != 3 or d.shape[0] != x.size:
        raise ValueError(
            f"diffraction must be (N, H, W) with N = len(xcoords) = {x.size}; got {d.shape}"
        )
    r = alignment_residuals(d, probe, obj, x, y, fit_scale=True)
    own = np.diag(r).copy()
    other = np.where(np.eye(x.size, dtype=bool), np.inf, r).min(axis=1)
    label = np.asarray(arrays.get("scan_index", np.arange(x.size)))

    fig = Figure(figsize=(13.5, 8.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    if title:
        fig.suptitle(title)

    def image(ax, data, cmap, cbar, **kw):
        im = ax.imshow(data, origin="upper", cmap=cmap, interpolation="nearest", **kw)
        fig.colorbar(im, ax=ax, shrink=0.85, label=cbar)
        return im

    ax = axes[0, 0]
    image(ax, np.angle(obj), "twilight", "phase (rad)", vmin=-np.pi, vmax=np.pi)
    h, w = probe.shape
    # a patch covers columns x - W // 2 .. x - W // 2 + W - 1: its centre and its extent
    cx, cy = x - w // 2 + (w - 1) / 2, y - h // 2 + (h - 1) / 2
    ax.plot(cx, cy, "o", ms=3.5, mfc="w", mec="k", mew=0.6)
    x0, y0 = (x - w // 2).min() - 0.5, (y - h // 2).min() - 0.5
    x1, y1 = (x - w // 2).max() + w - 0.5, (y - h // 2).max() + h - 0.5
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], "--", color="w", lw=1)
    if x.size <= 24:
        for xi, yi, k in zip(cx, cy, label, strict=True):
            ax.annotate(
                str(int(k)), (xi, yi), fontsize=7, color="w", xytext=(3, 3),
                textcoords="offset points", path_effects=[withStroke(linewidth=1.5, foreground="k")],
            )  # fmt: skip
    ax.set(
        title=f"objectGuess phase\n{x.size} probe centres, patch extent dashed",
        xlabel="x (object px)",
        ylabel="y (object px)",
    )

    ax = axes[0, 1]
    image(ax, np.abs(obj), "gray", "|objectGuess|")
    ax.set(title="objectGuess amplitude", xlabel="x (object px)", ylabel="y (object px)")

    ax = axes[0, 2]
    mean = d.mean(axis=0)
    positive = mean[mean > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    image(ax, np.where(mean > 0, mean, np.nan), "magma", "mean amplitude", norm=norm)
    ax.set(title="mean diffraction amplitude (log)", xlabel="detector px", ylabel="detector px")

    ax = axes[1, 0]
    amp = np.abs(probe)
    image(ax, amp, "viridis", "|probeGuess|")
    ax.set(title="probeGuess amplitude", xlabel="x (px)", ylabel="y (px)")

    ax = axes[1, 1]
    phase = np.where(amp > 0.05 * amp.max(), np.angle(probe), np.nan)
    image(ax, phase, "twilight", "phase (rad)", vmin=-np.pi, vmax=np.pi)
    ax.set(title="probeGuess phase (|p| > 5 % of peak)", xlabel="x (px)", ylabel="y (px)")

    ax = axes[1, 2]
    k = np.arange(x.size)
    ax.semilogy(k, own, "o", ms=3, label="at its own coordinates")
    ax.semilogy(k, other, "x", ms=3, label="best other scan's")
    ax.set(
        title="each pattern against the forward model",
        xlabel="pattern (row of the fixture)",
        ylabel="relative misfit, scale fitted",
    )
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="both", alpha=0.3)

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return {"path": out, "n_scans": int(x.size), "own": own, "other": other}
