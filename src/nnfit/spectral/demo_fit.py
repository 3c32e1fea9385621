"""The fit half of the cube demo: fit a built demo cube, reconstruct it, draw the dashboard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def run_fit_demo(
    h5_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    epochs: int = 5,
    pixels_per_aperture: int = 128,
    lr: float = 0.5,
    seed: int = 0,
    orbit_weights: Any = None,
) -> dict[str, Any]:
    """Fit the demo store (HyperCube built), write ``/ModelCube`` and ``fit_dashboard.png``.

    Parameters
    ----------
    h5_path : path-like
        A store with a complete HyperCube (``nnfit cube simulate`` + ``nnfit cube build``).
    out_dir : path-like
        Folder for ``fit_dashboard.png`` and ``x_fit.npy``.
    epochs, pixels_per_aperture, lr, seed, orbit_weights
        Passed to :meth:`PipelineRunner.solve_all` (``orbit_weights``, e.g. the simulated
        ``x_true.sum(axis=1)``, turns on the ratio penalty and the mass-error panel).

    Returns
    -------
    dict
        ``x``, ``stats``, ``reconstruct`` (its info) and ``dashboard`` (the PNG path).
    """
    from nnfit.io import atomic_path
    from nnfit.spectral.dashboard import live_fit_dashboard
    from nnfit.spectral.reconstruct import reconstruct_model_cube_single
    from nnfit.spectral.runner import PipelineRunner
    from nnfit.spectral.tracker import TrackerConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, stats = PipelineRunner(h5_path).solve_all(
        epochs=epochs,
        pixels_per_aperture=pixels_per_aperture,
        lr=lr,
        seed=seed,
        orbit_weights=orbit_weights,
        verbose=False,
        tracker=TrackerConfig(metrics_interval_sec=0.0, ckpt_interval_sec=60.0),
    )
    with atomic_path(out / "x_fit.npy", suffix=".npy") as tmp:
        np.save(tmp, x)
    rec = reconstruct_model_cube_single(h5_path, x)
    png = out / "fit_dashboard.png"
    live_fit_dashboard(h5_path, png)
    if stats["train_rmse"]:
        print(
            f"   fit: {stats['epochs_run']} epochs, train RMSE {stats['train_rmse'][0]:.4g} -> "
            f"{stats['train_rmse'][-1]:.4g}, {sum(stats['epoch_time_sec']):.2f} s; "
            f"model cube in /ModelCube; dashboard {png}"
        )
    return {"x": x, "stats": stats, "reconstruct": rec, "dashboard": png}
