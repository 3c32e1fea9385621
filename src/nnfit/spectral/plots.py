"""Live fit dashboard: one PNG from ``/Fit/*`` of a store, readable while the fit runs (SWMR)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from nnfit.io import atomic_path
from nnfit.io.hdf5 import open_h5
from nnfit.spectral.store_checks import check_hypercube_shape, check_inputs
from nnfit.spectral.tracker import METRIC_NAMES, read_checkpoints

__all__ = ["live_fit_dashboard"]


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def live_fit_dashboard(
    path: str | os.PathLike[str], out_png: str | os.PathLike[str], *, n_spaxels: int = 3
) -> dict[str, Any]:
    """Draw the fit's state to ``out_png`` and return what was drawn.

    Panels: convergence (training RMSE EWMA and validation RMSE per epoch), the weights
    ``x[c, p]`` as an image, mass errors and relative change of ``x``, observed vs model
    spectra for a few validation spaxels (masked pixels shaded), and the component mass
    fractions against ``orbit_weights``. Opens the store read-only with SWMR, so it can run at
    any time during a fit, from another process; the PNG is replaced atomically. A store
    without a HyperCube is drawn too (see Notes).

    Parameters
    ----------
    path : path-like
        The store.
    out_png : path-like
        Output image.
    n_spaxels : int
        Spectra shown in the observed-vs-model panel.

    Returns
    -------
    dict
        ``x_source`` (which stored vector was drawn), ``n_metrics`` (rows), ``spaxels``,
        ``model`` (the model spectrum drawn for each of them).

    Notes
    -----
    Without a HyperCube (after the exact ``nnfit spectral fit``) the model spectra are
    computed matrix-free from the templates and LOSVDs, as
    :func:`~nnfit.spectral.reconstruct.reconstruct_model_cube_single` does.

    Examples
    --------
    See ``tests/spectral/test_dashboard.py``; from the shell: ``nnfit spectral dashboard cube.h5``.
    """
    path = Path(path)
    with open_h5(path, "r") as f:
        has_cube = "HyperCube/models" in f
    op = None
    if not has_cube:
        # After the exact fit (no HyperCube): the model from the templates and LOSVDs, as
        # `nnfit spectral reconstruct` computes it.
        from nnfit.spectral.cube_operator import CubeOperator

        op = CubeOperator.from_h5(path)
    with open_h5(path, "r") as f:
        check_inputs(f, path, required=())
        if op is None:
            S, C, P, L = check_hypercube_shape(f, path)
            models = f["HyperCube/models"]
        else:
            (S, L), (C, P) = op.data_shape, op.model_shape
        met = {}
        if "Fit/metrics" in f:
            for name in METRIC_NAMES:
                if name in f["Fit/metrics"]:
                    ds = f["Fit/metrics"][name]
                    ds.refresh()
                    met[name] = np.asarray(ds, dtype=np.float64)
        n_met = min((v.size for v in met.values()), default=0)
        met = {k: v[:n_met] for k, v in met.items()}
        ck = read_checkpoints(f)
        src = next((k for k in ("x_best", "X_global", "x_latest") if k in ck), None)
        x = ck[src]["x"] if src else None
        w = None
        if "Fit/orbit_weights" in f:
            w = np.asarray(f["Fit/orbit_weights"], dtype=np.float64)
            if not np.all(np.isfinite(w)):
                w = None
        mask = np.asarray(f["Mask"], bool) if "Mask" in f else np.ones(L, bool)
        if "Fit/sample/spaxels" in f:
            spax = np.asarray(f["Fit/sample/spaxels"], dtype=np.int64)
        else:
            spax = np.arange(S)
        pick = spax[np.linspace(0, spax.size - 1, min(n_spaxels, spax.size)).astype(int)]
        obs = {int(s): np.asarray(f["DataCube"][int(s)], dtype=np.float64) for s in pick}
        mod = {}
        if x is not None:
            xcp = x.reshape(C, P)
            full = op.unweighted_forward(xcp) if op is not None else None
            for s in pick:
                if full is not None:
                    mod[int(s)] = full[int(s)]
                else:
                    slab = np.asarray(models[int(s)], dtype=np.float32)
                    mod[int(s)] = np.einsum("cpl,cp->l", slab, xcp, dtype=np.float64)
        wave = np.exp(np.asarray(f["ObsPix"], dtype=np.float64)) if "ObsPix" in f else None

    fig = Figure(figsize=(15, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(2, 3)
    fig.suptitle(f"nnfit spectral fit: {path.name}  (S={S}, C={C}, P={P}, L={L})")

    ax = axs[0, 0]
    ax.set_title("convergence")
    if n_met:
        ep = met["epoch"]
        ax.semilogy(ep, met["train_rmse_ewma"], ".-", label="train RMSE (EWMA)")
        ok = np.isfinite(met["val_rmse"])
        ax.semilogy(ep[ok], met["val_rmse"][ok], "o-", label="validation RMSE")
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMSE (w = 1/sigma when /Noise)")
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.legend(fontsize=8)
    else:
        _note(ax, "no metrics yet")

    ax = axs[0, 1]
    ax.set_title(f"weights x[c, p] ({src or 'none'})")
    if x is not None:
        im = ax.imshow(x.reshape(C, P), aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_xlabel("population p")
        ax.set_ylabel("component c")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, shrink=0.8, label="weight x[c, p]")
    else:
        _note(ax, "no stored weights yet")

    ax = axs[0, 2]
    ax.set_title("mass errors and step size")
    if n_met:
        ep = met["epoch"]
        any_line = False
        # f: the fit's component mass fractions, w: those of orbit_weights
        for name, style, what in (
            ("mass_err_L1", "o-", "sum |f - w|"),
            ("mass_err_Linf", "s--", "max |f - w|"),
            ("delta_x_rel", ".:", "|x - x_prev| / |x|"),
        ):
            v = met[name]
            ok = np.isfinite(v) & (v > 0)
            if ok.any():
                ax.semilogy(ep[ok], v[ok], style, label=f"{name}: {what}")
                any_line = True
        ax.set_xlabel("epoch")
        ax.set_ylabel("mass-fraction error, relative step")
        if any_line:
            ax.legend(fontsize=8)
        else:
            _note(ax, "set orbit_weights for mass errors")
    else:
        _note(ax, "no metrics yet")

    gs = axs[1, 0].get_gridspec()
    for a in axs[1, :2]:
        a.remove()
    ax = fig.add_subplot(gs[1, :2])
    ax.set_title("observed (grey) vs model (colour), normalised and offset; masked pixels shaded")
    xs = wave if wave is not None else np.arange(L)
    # each spectrum divided by the median of its fitted pixels, then stacked
    norm = {}
    for s in pick:
        s = int(s)
        med = float(np.median(obs[s][mask])) if mask.any() else 1.0
        norm[s] = med if med != 0 and np.isfinite(med) else 1.0
    spans = [float(np.ptp(obs[int(s)][mask] / norm[int(s)])) for s in pick if mask.any()]
    step = 1.15 * max([*spans, 1e-12])
    for i, s in enumerate(pick):
        s = int(s)
        off = i * step
        ax.plot(xs, obs[s] / norm[s] + off, color="0.55", lw=0.8)
        if s in mod:
            ax.plot(xs, mod[s] / norm[s] + off, color=f"C{i}", lw=1.0, label=f"spaxel {s}")
    ax.set_ylabel("flux / median (offset)")
    if (~mask).any():
        edges = np.flatnonzero(np.diff(np.r_[0, (~mask).astype(int), 0]))
        for a0, a1 in zip(edges[::2], edges[1::2], strict=True):
            ax.axvspan(xs[a0], xs[min(a1, L) - 1], color="0.9", zorder=0)
    ax.set_xlabel("wavelength [Å]" if wave is not None else "pixel")
    if mod:
        ax.legend(fontsize=8, loc="upper right")

    ax = axs[1, 2]
    ax.set_title("component mass fractions")
    if x is not None and x.sum() > 0:
        frac = x.reshape(C, P).sum(axis=1) / x.sum()
        idx = np.arange(C)
        ax.bar(idx - 0.2, frac, width=0.4, label="fit")
        if w is not None:
            ax.bar(idx + 0.2, w / w.sum(), width=0.4, label="target (orbit_weights)")
        ax.set_xlabel("component c")
        ax.set_ylabel("mass fraction, sum_p x[c, p] / sum x")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    else:
        _note(ax, "no stored weights yet")

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return {
        "x_source": src,
        "n_metrics": int(n_met),
        "spaxels": [int(s) for s in pick],
        "model": mod,
    }
