"""``make demo`` for spectral cubes: simulate a small cube, build its HyperCube, snapshot it.

The fit steps (issues 5 and 6) are appended after ``build`` by their own code.
"""

from __future__ import annotations

from pathlib import Path


def run(out_dir: Path, *, seed: int = 0) -> None:
    """Simulate a small SSP-like cube, build its HyperCube and write the snapshot PNG."""
    from nnfit.spectral.diagnostics import live_prefit_snapshot_from_models
    from nnfit.spectral.hypercube import build_hypercube
    from nnfit.spectral.simulate import simulate_cube
    from nnfit.spectral.store import H5Manager

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
        f"{info['seconds']:.1f} s ({info['seconds'] / pairs * 1e3:.1f} ms per (s, c) pair)"
    )
    png = live_prefit_snapshot_from_models(store, out_dir / "prefit_overlay.png", seed=seed)
    print(f"   snapshot: {png}")
