"""Read-only diagnostics of a cube store: tile status and the live prefit snapshot.

Everything here opens the store with ``open_h5(path, "r")`` (SWMR read), so it can run while
``build_hypercube`` writes the same file from another process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.store_checks import check_inputs, check_tiles_layout

__all__ = ["describe_hypercube_status", "hypercube_status", "live_prefit_snapshot_from_models"]


def hypercube_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Shape, chunks and tiles done of ``/HyperCube`` (``present`` False if not started)."""
    with open_h5(path, "r") as f:
        if "HyperCube/models" not in f:
            return {"present": False, "tiles_done": 0, "tiles_total": 0, "complete": False}
        g = f["HyperCube"]
        m = g["models"]
        check_tiles_layout(f, path)
        done_ds = g["_done"]
        done_ds.refresh()
        done = np.asarray(done_ds[()], dtype=bool)
        return {
            "present": True,
            "shape": tuple(int(n) for n in m.shape),
            "chunks": tuple(int(n) for n in m.chunks),
            "tile_grid": tuple(int(n) for n in done.shape),
            "tiles_done": int(done.sum()),
            "tiles_total": int(done.size),
            "complete": bool(g.attrs.get("complete", False)) and bool(done.all()),
            "compression": m.compression,
            "nbytes": int(np.prod(m.shape)) * 4,
        }


def describe_hypercube_status(path: str | os.PathLike[str], st: dict[str, Any]) -> str:
    """One line for people: the HyperCube's shape, chunks and ``N_done / N_total`` tiles."""
    if not st["present"]:
        return (
            f"{Path(path)}: no /HyperCube (the exact fit needs none: 'nnfit spectral fit'; the "
            "Kaczmarz path of a 'linear' store builds it with 'nnfit spectral build')"
        )
    pct = 100.0 * st["tiles_done"] / max(st["tiles_total"], 1)
    return (
        f"{Path(path)}: models {st['shape']} float32, chunks {st['chunks']}, "
        f"tiles {st['tiles_done']} / {st['tiles_total']} done ({pct:.1f}%), "
        f"complete={st['complete']}, compression={st['compression']}"
    )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True as (start, stop) index pairs."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist(), strict=True))


def live_prefit_snapshot_from_models(
    path: str | os.PathLike[str],
    out_png: str | os.PathLike[str] = "prefit_overlay.png",
    *,
    n_spectra: int = 4,
    seed: int = 0,
) -> Path:
    """Four-panel sanity figure of a store, safe to run while the HyperCube is being built.

    Panels: top left, observed spectra of a few spaxels (masked pixels shaded; the y-limits
    come from fitted pixels only); top right, a few templates rebinned to the observed grid
    before convolution; bottom left, LOSVDs of a few (s, c) pairs with their kernels sampled
    on the template ln(lambda) offsets (both as densities per km/s); bottom right, stored
    models of several diverse (s, c) pairs from finished tiles, each overlaid with the same
    row recomputed from the inputs (the title gives the largest relative difference).

    The PNG is written atomically. Returns its path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.spectral.simulate import simulate_cube
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = simulate_cube(3, 2, 4).to_h5(d / "c.h5")
    >>> live_prefit_snapshot_from_models(p, d / "snap.png").stat().st_size > 0
    True
    """
    from matplotlib.figure import Figure

    from nnfit.io import atomic_path
    from nnfit.spectral.model import (
        C_KMS,
        grid_step,
        losvd_to_kernel,
        model_rows,
    )
    from nnfit.spectral.store import read_rebin

    rng = np.random.default_rng(seed)
    with open_h5(path, "r") as f:
        check_inputs(f, path)
        obs = f["ObsPix"][()]
        tem = f["TemPix"][()]
        vel = f["VelPix"][()]
        mask = f["Mask"][()].astype(bool) if "Mask" in f else np.ones(obs.size, bool)
        S, L = f["DataCube"].shape
        P = f["Templates"].shape[0]
        C = f["LOSVD"].shape[2]
        spax = np.unique(np.linspace(0, S - 1, min(n_spectra, S)).round().astype(int))
        data = f["DataCube"][spax.tolist(), :]
        pops = np.unique(np.linspace(0, P - 1, min(n_spectra, P)).round().astype(int))
        tpl = f["Templates"][pops.tolist(), :].astype(np.float64)
        R = read_rebin(f, tem.size, obs.size)
        pairs: list[tuple[int, int]] = []
        stored: list[np.ndarray] = []
        have_cube = "HyperCube/models" in f
        if have_cube:
            check_tiles_layout(f, path)
            models = f["HyperCube/models"]
            done_ds = f["HyperCube/_done"]
            models.refresh()
            done_ds.refresh()
            done = np.asarray(done_ds[()], dtype=bool)
            cS, cC, cP = models.chunks[:3]
            tiles = np.argwhere(done[:, :, 0]) if done.shape[2] else np.zeros((0, 2), int)
            if tiles.size:
                pick = tiles[rng.choice(len(tiles), size=min(n_spectra, len(tiles)), replace=False)]
                for ti, tj in pick:
                    s = int(min(ti * cS + rng.integers(cS), S - 1))
                    c = int(min(tj * cC + rng.integers(cC), C - 1))
                    pairs.append((s, c))
                    # All populations of this tile's first P block: average over them.
                    stored.append(models[s, c, : min(cP, P), :].astype(np.float64))
        lo_pairs = pairs or [(int(s), int(rng.integers(C))) for s in spax[:n_spectra]]
        losvds = np.stack([f["LOSVD"][s, :, c].astype(np.float64) for s, c in lo_pairs])
        tpl_for_check = f["Templates"][: min(stored[0].shape[0], P) if stored else 1, :].astype(
            np.float64
        )

    lam = np.exp(obs)
    dlog = grid_step(tem)
    fig = Figure(figsize=(13, 8.5), constrained_layout=True)
    axs = fig.subplots(2, 2)
    title = f"{Path(path).name}: S={S} C={C} P={P} L={L} T={tem.size} V={vel.size}"
    fig.suptitle(title)

    ax = axs[0, 0]
    for i, s in enumerate(spax):
        ax.plot(lam, data[i], lw=0.8, label=f"spaxel {s}")
    for a, b in _runs(~mask):
        ax.axvspan(lam[a], lam[min(b, L - 1)], color="0.85", lw=0)
    used = data[:, mask]
    if used.size:
        lo, hi = float(np.min(used)), float(np.max(used))
        pad = 0.05 * (hi - lo if hi > lo else abs(hi) + 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title("observed spectra (grey: masked)")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("flux (/DataCube)")
    ax.legend(fontsize=7)

    ax = axs[0, 1]
    for i, p in enumerate(pops):
        ax.plot(lam, R @ tpl[i], lw=0.8, label=f"template {p}")
    ax.set_title("templates rebinned to the observed grid (before convolution)")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("template flux (/Templates)")
    ax.legend(fontsize=7)

    ax = axs[1, 0]
    dv = np.gradient(vel) if vel.size > 1 else np.ones(1)
    for i, (s, c) in enumerate(lo_pairs):
        (line,) = ax.plot(vel, losvds[i] / dv, lw=1.0, label=f"LOSVD s={s} c={c}")
        k, center = losvd_to_kernel(losvds[i], vel, dlog)
        off = np.arange(k.size) - center
        vk = C_KMS * np.expm1(off * dlog)
        dvk = C_KMS * np.expm1(dlog)
        ax.plot(vk, k / dvk, "o", ms=2.5, color=line.get_color(), alpha=0.7)
    ax.set_title("LOSVD (lines) and kernel taps on ln(λ) offsets (dots), per km/s")
    ax.set_xlabel("velocity [km/s]")
    ax.set_ylabel("density per km/s")
    ax.legend(fontsize=7)

    ax = axs[1, 1]
    if stored:
        worst = 0.0
        for (s, c), rows in zip(pairs, stored, strict=True):
            mean_row = rows.mean(axis=0)
            ref = model_rows(
                tpl_for_check[: rows.shape[0]], losvds[pairs.index((s, c))], vel, tem, obs, R
            )
            ref_mean = ref.mean(axis=0)
            scale = float(np.max(np.abs(ref))) or 1.0
            worst = max(worst, float(np.max(np.abs(rows - ref))) / scale)
            (line,) = ax.plot(lam, mean_row, lw=0.9, label=f"stored s={s} c={c}")
            ax.plot(lam, ref_mean, "--", lw=0.8, color=line.get_color())
        ax.set_title(
            f"stored models, mean over p (dashed: recomputed)\nmax relative difference {worst:.1e}"
        )
        ax.legend(fontsize=7)
    else:
        msg = "no HyperCube yet" if not have_cube else "no finished tiles yet"
        ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes)
        ax.set_title("stored models")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("model flux (/HyperCube/models)")

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return out
