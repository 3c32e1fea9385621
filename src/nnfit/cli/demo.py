"""``nnfit demo`` (``make demo``): each capability's main job on built-in synthetic data.

Each ``run_<capability>(out_dir, seed=...)`` simulates data, runs the job, writes results and
figures under ``out_dir`` and prints a short report (this module is command-line code, so it
prints).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.browser_files import save_for_tuning
from nnfit.calcium.results import write_results
from nnfit.calcium.simulate import simulate_recording
from nnfit.cli.calcium import Settings, run_solver
from nnfit.io import atomic_path


def run_all(out: str | Path, *, seed: int = 0) -> int:
    """Run every capability's demo under ``out/<capability>`` and report where results are."""
    root = Path(out)
    demos = (
        ("calcium", run_calcium),
        ("ptycho", run_ptycho),
        ("spectral", run_spectral),
        ("spectral: FITS cube to maps", run_spectral_ifu),
    )
    for name, run in demos:
        t0 = time.perf_counter()
        print(f"== {name} demo ==", flush=True)
        run(root / name.split(":")[0], seed=seed)
        print(f"   ({time.perf_counter() - t0:.1f} s)\n", flush=True)
    print(f"All demo outputs are under {root.resolve()}")
    return 0


# -- calcium ---------------------------------------------------------------------------------

# 40 cells x 5 minutes at 30 Hz, GCaMP6f-like kinetics, the benchmark's noise level.
N_CELLS, N_FRAMES, FS, TAU_RISE, TAU_DECAY, NOISE, LAM = 40, 9000, 30.0, 0.05, 0.5, 0.2, 0.5


def spike_correlation(inferred: np.ndarray, true: np.ndarray, fs: float, *, window_s: float = 0.1):
    """Mean over cells of the Pearson correlation of spike trains, both smoothed by a
    Gaussian of standard deviation ``window_s`` (a spike inferred one frame off still counts).

    Examples
    --------
    >>> x = np.zeros((1, 100)); x[0, 50] = 1.0
    >>> round(spike_correlation(x, x, 30.0), 6)
    1.0
    """
    sigma = window_s * fs
    half = int(np.ceil(4 * sigma))
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    corr = []
    for a, b in zip(inferred, true, strict=True):
        sa, sb = np.convolve(a, g, "same"), np.convolve(b, g, "same")
        if sa.std() > 0 and sb.std() > 0:
            corr.append(np.corrcoef(sa, sb)[0, 1])
    return float(np.mean(corr)) if corr else float("nan")


def run_calcium(out_dir: Path, *, seed: int = 0) -> None:
    """Simulate, deconvolve (catune's problem, compiled), write outputs and figure to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec = simulate_recording(
        N_CELLS,
        N_FRAMES,
        fs=FS,
        tau_rise=TAU_RISE,
        tau_decay=TAU_DECAY,
        noise=NOISE,
        rate_hz=0.5,
        seed=seed,
    )
    save_for_tuning(rec.traces, FS, out / "simulated", metadata={"seed": seed, "simulated": True})
    with atomic_path(out / "true_spikes.npy", suffix=".npy") as tmp:
        np.save(tmp, rec.spikes)
    settings = Settings(FS, TAU_RISE, TAU_DECAY, LAM)
    t0 = time.perf_counter()
    result = run_solver(rec.traces, settings, "fista", progress=False)
    seconds = time.perf_counter() - t0
    corr = spike_correlation(result.spikes, rec.spikes, FS)
    frame_corr = float(
        np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(result.spikes, rec.spikes, strict=True)])
    )
    run_record = {
        "command": "nnfit demo (calcium)",
        "seed": seed,
        "solver": "fista",
        "settings": {"fs": FS, "tau_rise": TAU_RISE, "tau_decay": TAU_DECAY, "lam": LAM},
        "noise": NOISE,
        "spike_correlation_smoothed_100ms": corr,
        "spike_correlation_per_frame": frame_corr,
        "title": f"simulated (seed {seed}): inferred vs true spikes, correlation {corr:.3f}",
    }
    paths = write_results(out, rec.traces, result, FS, run_record, truth=rec.spikes)
    print(
        f"   simulated {N_CELLS} cells x {N_FRAMES} frames ({N_FRAMES / FS / 60:.0f} min at "
        f"{FS:g} Hz, noise {NOISE}), seed {seed}"
    )
    print(f"   deconvolved in {seconds:.2f} s; {int(result.converged.sum())}/{N_CELLS} converged")
    print(
        f"   correlation of inferred with simulated spikes: {corr:.3f} (both smoothed by a "
        f"100 ms Gaussian), {frame_corr:.3f} frame by frame"
    )
    print(f"   figure:  {paths['figure']}")
    print(f"   results: {out} (spikes.npy, reconvolution.npy, summary.csv, run.json,")
    print("            simulated.npy + simulated_metadata.json for the CaTune browser,")
    print("            true_spikes.npy: the simulated spikes)")


# -- ptycho ----------------------------------------------------------------------------------


def run_ptycho(out_dir: Path, *, seed: int = 0) -> None:
    """Simulate a 1087-scan legacy (H, W, N) dataset, cut and verify a 64-scan fixture.

    Writes ``source_legacy.npz``, ``minimal_dataset_v1.npz``, ``minimal_dataset_v1.json`` and
    the figure ``minimal_dataset_v1.png`` under ``out_dir`` (replacing earlier demo files) and
    prints the checksum.
    """
    from nnfit.io.npz import read_npz, write_npz
    from nnfit.ptycho.plots import fixture_figure
    from nnfit.ptycho.simulate import simulate_dataset
    from nnfit.ptycho.subset import generate_fixture
    from nnfit.ptycho.verify import verify_fixture

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / "source_legacy.npz"
    data = simulate_dataset(seed=seed, layout="legacy")
    write_npz(source, data, compress=False)
    d = data["diffraction"]
    print(
        f"   simulated {source.name}: diffraction {d.shape} {d.dtype} (H, W, N), "
        f"{source.stat().st_size / 1e6:.1f} MB"
    )
    t0 = time.perf_counter()
    fixture, meta, checksum = generate_fixture(
        source, out_dir / "minimal_dataset_v1.npz", n_subset=64, overwrite=True
    )
    dt = time.perf_counter() - t0
    print(f"   cut 64 of {d.shape[2]} scans in {dt:.2f} s: {fixture.stat().st_size / 1e6:.2f} MB")
    report = verify_fixture(fixture, meta, alignment=True)
    for line in str(report).splitlines()[2:]:  # the paths are printed below
        print(f"   {line}")
    if not report.ok:
        raise RuntimeError("the demo fixture failed verification")
    png = fixture_figure(read_npz(fixture), fixture.with_suffix(".png"), title=fixture.name)
    print(f"   checksum {checksum}")
    print(f"   fixture  {fixture.resolve()}")
    print(f"   sidecar  {meta.resolve()}")
    print(f"   figure   {png['path'].resolve()}")


# -- spectral --------------------------------------------------------------------------------


def run_spectral(out_dir: Path, *, seed: int = 0) -> None:
    """Simulate a small SSP-like cube, build its HyperCube, fit it and write the figures."""
    from nnfit.spectral.cube_operator import CubeOperator
    from nnfit.spectral.diagnostics import live_prefit_snapshot_from_models
    from nnfit.spectral.fit import fit_store
    from nnfit.spectral.hypercube import build_hypercube
    from nnfit.spectral.manager import H5Manager
    from nnfit.spectral.simulate import simulate_cube

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = simulate_cube(
        64, 4, 48, n_tem_pix=3000, n_obs_pix=600, n_vel=61, mask_fraction=0.1, snr=50.0, seed=seed
    )
    store = sim.to_h5(out_dir / "cube.h5")
    sh = sim.shape
    print(
        f"   simulated S={sh['S']} C={sh['C']} P={sh['P']} L={sh['L']} T={sh['T']} V={sh['V']} "
        f"-> {store}"
    )
    rep = H5Manager.diagnose_rebin_edges(store, verbose=False)
    print(
        f"   template coverage safe={rep['safe']} (margins {rep['left_margin_px']} / "
        f"{rep['right_margin_px']} px)"
    )
    info = build_hypercube(store, S_chunk=16, C_chunk=1, P_chunk=48, n_workers=0, progress=False)
    pairs = sh["S"] * sh["C"]
    print(
        f"   HyperCube {info['shape']} float32 built: {info['tiles_built']} tiles in "
        f"{info['time_s']:.1f} s ({info['time_s'] / pairs * 1e3:.1f} ms per (s, c) pair)"
    )
    png = live_prefit_snapshot_from_models(store, out_dir / "prefit_overlay.png", seed=seed)
    print(f"   snapshot: {png}")
    kz = run_fit_demo(store, out_dir, orbit_weights=sim.x_true.sum(axis=1), seed=seed)
    # The exact optimum needs no HyperCube; its chi^2 is the floor the Kaczmarz fit approaches.
    _, st = fit_store(store)
    _, chi2_kz = CubeOperator.from_h5(store).gradient(kz["x"])
    print(
        f"   exact fit ({st['method']}, no HyperCube): chi2 {st['chi2']:.6g} "
        f"(Kaczmarz: {chi2_kz:.6g}), KKT violation {st['kkt_violation']:.1e}, "
        f"{st['time_s']:.2f} s"
    )


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
        A store with a complete HyperCube (``nnfit spectral simulate`` + ``nnfit spectral build``).
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
    from nnfit.spectral.kaczmarz_fit import PipelineRunner
    from nnfit.spectral.plots import live_fit_dashboard
    from nnfit.spectral.reconstruct import reconstruct_model_cube_single
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
            f"{stats['train_rmse'][-1]:.4g}, {sum(stats['epoch_time_s']):.2f} s; "
            f"model cube in /ModelCube; weights {out / 'x_fit.npy'}; dashboard {png}"
        )
    return {"x": x, "stats": stats, "reconstruct": rec, "dashboard": png}


def run_spectral_ifu(out_dir: Path, *, seed: int = 0) -> None:
    """The astronomer's path on a simulated IFU cube written as real files: FITS cube ->
    ``nnfit spectral init`` -> ``fit`` -> ``maps`` (each command run as from the shell)."""
    import shutil

    from nnfit.cli import main
    from nnfit.spectral.simulate_ifu import write_ifu_demo

    out = Path(out_dir)
    folder = out / "ifu"
    for old in (folder, out / "ifu_store.h5", out / "maps"):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    info = write_ifu_demo(folder, n_side=5, n_components=2, seed=seed)
    print(f"   wrote a simulated 5 x 5 spaxel FITS cube {info['cube']} with its template")
    print(f"   library {info['templates']} (pPXF's npz format), LOSVDs {info['losvd']}")
    print(f"   and the true weights {info['truth']}")
    store = out / "ifu_store.h5"
    steps = (
        [
            "spectral",
            "init",
            str(info["cube"]),
            "--templates",
            str(info["templates"]),
            "--losvd",
            str(info["losvd"]),
            "--fwhm",
            "none",
            "--no-line-mask",
            "--min-sn",
            "0",
            "--out",
            str(store),
        ],
        ["spectral", "fit", str(store), "--no-progress"],
        ["spectral", "maps", str(store), "--out", str(out / "maps")],
    )
    for argv in steps:
        if argv[1] == "fit":
            # init suggests both fits; the simulation has one answer for the whole cube
            print("   # without --per-bin: the global fit, as the simulated bins share one weight")
            print("   # array (truth.npz's x_true); --per-bin would fit each bin on its own")
        print(f"   $ nnfit {' '.join(argv)}", flush=True)
        code = main(argv)
        if code == 130:  # Ctrl-C in the step (it said so): the demo stops as interrupted too
            raise KeyboardInterrupt
        if code != 0:
            raise RuntimeError(f"the demo step 'nnfit {' '.join(argv)}' failed")
