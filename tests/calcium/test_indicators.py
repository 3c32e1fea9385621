"""Indicator kinetics presets: equal to the peer's presets, used as given kinetics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnfit.calcium import deconvolve, simulate_recording
from nnfit.calcium.indicators import INDICATORS, indicator_kinetics, indicator_record

# CaLab's preset method for each of nnfit's presets
CALAB_NAMES = {
    "GCaMP6f": "gcamp6f",
    "GCaMP6m": "gcamp6m",
    "GCaMP6s": "gcamp6s",
    "jGCaMP8f": "jgcamp8f",
    "OGB-1": "ogb1",
}


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_presets_equal_calab(name):
    calab = pytest.importorskip("calab", reason="CaLab (test extra) is the presets' source")
    kernel = getattr(calab.presets, CALAB_NAMES[name])().kernel
    ind = INDICATORS[name]
    assert (ind.tau_rise, ind.tau_decay) == (kernel.tau_rise_s, kernel.tau_decay_s)
    assert "https://doi.org/10." in ind.reference


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("gcamp6s", "GCaMP6s"), ("GCaMP8f", "jGCaMP8f"), ("jgcamp8f", "jGCaMP8f"), ("OGB1", "OGB-1")],
)
def test_spellings(spelling, name):
    assert indicator_kinetics(spelling).name == name


@pytest.mark.parametrize(("bad", "message"), [("GCaMP7f", "presets: GCaMP6f"), (6, "a name")])
def test_unknown_indicator_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        indicator_kinetics(bad)


def test_deconvolve_with_indicator_is_deconvolve_with_its_kinetics():
    rec = simulate_recording(2, 1200, tau_rise=0.4, tau_decay=1.8, seed=2)
    res = deconvolve(rec.traces, 30.0, indicator="GCaMP6s", lam=0.2)
    ref = deconvolve(rec.traces, 30.0, 0.4, 1.8, lam=0.2)
    assert np.array_equal(res.spikes, ref.spikes)
    assert res.indicator == "GCaMP6s" and ref.indicator is None
    assert (res.tau_rise, res.tau_decay) == (0.4, 1.8)
    assert res.estimated == {"kinetics": False, "lam": False}
    with pytest.raises(ValueError, match="not both"):
        deconvolve(rec.traces, 30.0, tau_rise=0.4, tau_decay=1.8, indicator="GCaMP6s")


@pytest.mark.parametrize("kin", [[], ["--lam", "0.3"]], ids=["exact", "fista"])
def test_cli_records_the_preset(run_cli, tmp_path, kin):
    rec = simulate_recording(2, 900, seed=5)
    np.save(tmp_path / "rec.npy", rec.traces)
    args = ("calcium", "deconvolve", "rec.npy", "--fs", "30", "--indicator", "gcamp6f")
    run_cli(*args, *kin, "--out", "res", "--plot-cells", "0", check=True)
    run = json.loads((tmp_path / "res" / "run.json").read_text())
    assert run["indicator"] == indicator_record("GCaMP6f")["indicator"]
    kinetics = run["settings"] if kin else run
    assert (kinetics["tau_rise"], kinetics["tau_decay"]) == (0.1, 0.6)


def test_cli_refuses_indicator_with_kinetics(run_cli, tmp_path):
    np.save(tmp_path / "rec.npy", simulate_recording(1, 300, seed=1).traces)
    args = ("calcium", "deconvolve", "rec.npy", "--fs", "30", "--indicator", "GCaMP6s")
    proc = run_cli(*args, "--tau-decay", "1.0", "--out", "res")
    assert proc.returncode == 2 and "drop --tau-decay" in proc.stderr
    assert not (tmp_path / "res").exists()
