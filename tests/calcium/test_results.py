"""The figure of a few cells (``cells.png``): axes with scales, and what part is drawn."""

from __future__ import annotations

import numpy as np

from nnfit.calcium import simulate_recording
from nnfit.calcium.results import cells_figure, plot_cells


def test_cells_figure_has_a_fluorescence_and_a_spike_scale():
    rec = simulate_recording(3, 3000, baseline=1.0, seed=2)  # 100 s at 30 Hz
    spikes = 2.5 * rec.spikes
    fig = cells_figure(rec.traces, spikes, rec.calcium + 1.0, 30.0, n_cells=2, title="rec.npy")
    assert fig.texts[0].get_text() == "rec.npy (first 60 s of 100 s)"
    panels = [ax for ax in fig.axes if ax.get_ylabel().startswith("cell ")]
    scales = [ax for ax in fig.axes if ax.get_ylabel().startswith("spike size")]
    assert len(panels) == len(scales) == 2
    for i, (ax, sx) in enumerate(zip(panels, scales, strict=True)):
        assert ax.get_ylabel() == f"cell {i}\nfluorescence\n(input units)"
        ticks = ax.get_yticks()
        # the fluorescence scale spans the trace (its baseline near 1), in its units
        assert len(ticks) >= 2 and ticks.min() >= rec.traces[i, :1800].min()
        assert ticks.max() <= rec.traces[i, :1800].max()
        top = spikes[i, :1800].max()
        assert list(sx.get_yticks()) == [0.0, top]
        assert [t.get_text() for t in sx.get_yticklabels()] == ["0", f"{top:.3g}"]
    assert panels[-1].get_xlabel() == "time (s)"
    assert panels[0].get_xlim()[1] < 63.0


def test_cells_figure_of_a_short_recording_says_all_of_it(tmp_path):
    rec = simulate_recording(1, 900, seed=2)
    fig = cells_figure(rec.traces, rec.spikes, rec.calcium, 30.0)
    assert fig.texts[0].get_text() == "all 30 s"
    path = plot_cells(tmp_path / "c.png", rec.traces, rec.spikes, rec.calcium, 30.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]
    assert np.isfinite(fig.axes[0].get_ylim()).all()
