"""The live fit dashboard renders before, during and after a fit."""

from __future__ import annotations

import numpy as np

from nnfit.spectral.kaczmarz_fit import PipelineRunner
from nnfit.spectral.plots import live_fit_dashboard
from nnfit.spectral.tracker import FitTracker, TrackerConfig

from ._kaczmarz_fixtures import make_store


def _is_png(p):
    return p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000


def test_dashboard_before_during_and_after_a_fit(tmp_path):
    st = make_store(tmp_path / "c.h5", S=8, C=3, P=4, L=40, S_chunk=4, mask_fraction=0.1)
    info = live_fit_dashboard(st.path, tmp_path / "empty.png")
    assert info["x_source"] is None and info["n_metrics"] == 0
    assert _is_png(tmp_path / "empty.png")
    cfg = TrackerConfig(metrics_interval_sec=0.0, val_interval_sec=0.0, ckpt_interval_sec=0.0)
    with FitTracker(st.path, cfg) as trk:  # while the writer holds the file (SWMR)
        trk.maybe_save(np.ones(12), epoch=0.5, position=(0, 4))
        trk.close()
        info = live_fit_dashboard(st.path, tmp_path / "during.png")
    w = st.x_true.reshape(3, 4).sum(axis=1)
    PipelineRunner(st.path).solve_all(
        epochs=3, pixels_per_aperture=20, orbit_weights=w, verbose=False, tracker=cfg
    )
    info = live_fit_dashboard(st.path, tmp_path / "out" / "after.png", n_spaxels=2)
    assert info["x_source"] in ("x_best", "X_global") and info["n_metrics"] >= 4
    assert len(info["spaxels"]) == 2
    assert _is_png(tmp_path / "out" / "after.png")


def test_run_fit_demo_fits_reconstructs_and_draws(built_store, tmp_path, capsys):
    import h5py

    from nnfit.cli.demo import run_fit_demo

    out = run_fit_demo(built_store, tmp_path / "demo", epochs=2, pixels_per_aperture=32)
    assert _is_png(out["dashboard"]) and out["stats"]["epochs_run"] == 2
    with h5py.File(built_store, "r") as f:
        assert f["ModelCube"].shape == f["DataCube"].shape
    assert (tmp_path / "demo" / "x_fit.npy").exists()
    assert f"weights {tmp_path / 'demo' / 'x_fit.npy'}" in capsys.readouterr().out


def test_dashboard_after_the_exact_fit_without_a_hypercube(small_store, built_store, tmp_path):
    from nnfit.spectral.fit import fit_cube, write_solution

    x, _ = fit_cube(small_store)
    write_solution(small_store, x)
    info = live_fit_dashboard(small_store, tmp_path / "exact.png")
    assert info["x_source"] == "X_global" and _is_png(tmp_path / "exact.png")
    # the same x drawn from the HyperCube's rows: the same model spectra
    write_solution(built_store, x)
    ref = live_fit_dashboard(built_store, tmp_path / "cube.png")
    assert info["spaxels"] == ref["spaxels"]
    for s in info["spaxels"]:
        np.testing.assert_allclose(info["model"][s], ref["model"][s], rtol=1e-5, atol=1e-6)


def _labels(fig):
    return {ax.get_title(): (ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes}


def test_dashboard_panels_name_their_axes(built_store, small_sim, tmp_path, saved_figures):
    cfg = TrackerConfig(metrics_interval_sec=0.0, val_interval_sec=0.0, ckpt_interval_sec=0.0)
    PipelineRunner(built_store).solve_all(
        epochs=2,
        pixels_per_aperture=20,
        orbit_weights=small_sim.x_true.sum(axis=1),
        verbose=False,
        tracker=cfg,
    )
    live_fit_dashboard(built_store, tmp_path / "d.png")
    (fig,) = saved_figures
    labels = _labels(fig)
    assert labels["component mass fractions"][1].startswith("mass fraction")
    assert labels["mass errors and step size"][1] == "mass-fraction error, relative step"
    spectra = next(t for t in labels if t.startswith("observed (grey) vs model"))
    assert labels[spectra][0] == "wavelength [Å]"
    colorbar = next(ax for ax in fig.axes if not ax.get_title() and ax.get_ylabel())
    assert colorbar.get_ylabel() == "weight x[c, p]"
    bars = next(ax for ax in fig.axes if ax.get_title() == "component mass fractions")
    legend = [t.get_text() for t in bars.get_legend().get_texts()]
    assert legend == ["fit", "target (orbit_weights)"]
