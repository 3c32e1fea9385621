"""Indicator kinetics presets: equal to the peer's presets, used as a prior on the estimate."""

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


def test_an_indicator_whose_range_holds_the_estimate_changes_nothing():
    rec = simulate_recording(3, 9000, tau_rise=0.05, tau_decay=1.5, seed=2)
    res = deconvolve(rec.traces, 30.0, indicator="GCaMP6s")
    ref = deconvolve(rec.traces, 30.0)
    lo, hi = indicator_kinetics("GCaMP6s").decay_range
    assert lo < ref.tau_decay < hi
    assert (res.tau_rise, res.tau_decay) == (ref.tau_rise, ref.tau_decay)
    assert np.array_equal(res.spikes, ref.spikes)
    assert res.indicator == "GCaMP6s" and ref.indicator is None
    assert res.estimated == {"kinetics": True, "lam": True}
    with pytest.raises(ValueError, match="not both"):
        deconvolve(rec.traces, 30.0, tau_rise=0.4, tau_decay=1.8, indicator="GCaMP6s")


def test_the_estimated_decay_stays_in_the_indicator_range(caplog):
    """A 0.15 s decay named GCaMP6s (0.36-9 s) stops at the range's lower end, with a warning;
    the unbounded estimate finds the simulated decay."""
    rec = simulate_recording(3, 9000, tau_rise=0.02, tau_decay=0.15, seed=4)
    free = deconvolve(rec.traces, 30.0)
    assert abs(free.tau_decay / 0.15 - 1) < 0.2
    with caplog.at_level("WARNING", logger="nnfit.calcium.pipeline"):
        res = deconvolve(rec.traces, 30.0, indicator="GCaMP6s")
    assert res.tau_decay == pytest.approx(indicator_kinetics("GCaMP6s").decay_range[0])
    assert res.tau_rise <= 0.5 * res.tau_decay
    assert "GCaMP6s prior's bound" in caplog.text


def test_a_bad_decay_range_is_refused_by_name():
    from nnfit.calcium.estimate import estimate_kinetics_pooled

    y = list(simulate_recording(2, 3000, seed=1).traces)
    with pytest.raises(ValueError, match="decay_range"):
        estimate_kinetics_pooled(y, 30.0, decay_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="decay_range"):
        estimate_kinetics_pooled(y, 30.0, decay_range=(0.0, 1.0))


@pytest.mark.parametrize("kin", [[], ["--lam", "0.3"]], ids=["lam-rule", "lam-given"])
def test_cli_records_the_prior(run_cli, tmp_path, kin):
    rec = simulate_recording(2, 900, seed=5)
    np.save(tmp_path / "rec.npy", rec.traces)
    args = ("calcium", "deconvolve", "rec.npy", "--fs", "30", "--indicator", "gcamp6f")
    proc = run_cli(*args, *kin, "--out", "res", "--plot-cells", "0", check=True)
    run = json.loads((tmp_path / "res" / "run.json").read_text())
    assert run["indicator"] == indicator_record("GCaMP6f")["indicator"]
    lo, hi = run["indicator"]["decay_range_s"]
    assert run["solver"] == "exact" and run["kinetics_estimated"] is True
    assert lo <= run["tau_decay"] <= hi
    assert "GCaMP6f prior's" in proc.stdout


def test_cli_refuses_indicator_with_kinetics(run_cli, tmp_path):
    np.save(tmp_path / "rec.npy", simulate_recording(1, 300, seed=1).traces)
    args = ("calcium", "deconvolve", "rec.npy", "--fs", "30", "--indicator", "GCaMP6s")
    proc = run_cli(*args, "--tau-decay", "1.0", "--out", "res")
    assert proc.returncode == 2 and "drop --tau-decay" in proc.stderr
    proc = run_cli(*args, "--solver", "fista", "--lam", "0.3", "--out", "res")
    assert proc.returncode == 2 and "--solver exact" in proc.stderr
    assert not (tmp_path / "res").exists()


def test_cli_estimate_takes_the_indicator_as_a_prior(run_cli, tmp_path):
    """A 0.15 s decay named GCaMP6s: the pooled decay stops at 0.36 s and the CLI says so."""
    np.save(
        tmp_path / "rec.npy",
        simulate_recording(3, 9000, tau_rise=0.02, tau_decay=0.15, seed=4).traces,
    )
    args = ("calcium", "estimate", "rec.npy", "--fs", "30", "--json", "p.json")
    proc = run_cli(*args, "--indicator", "GCaMP6s", check=True)
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["pooled"]["tau_decay"] == pytest.approx(0.36)
    assert p["indicator"] == indicator_record("GCaMP6s")["indicator"]
    assert "at a bound of the prior" in proc.stdout
    run_cli(*args, check=True)
    assert json.loads((tmp_path / "p.json").read_text())["pooled"]["tau_decay"] < 0.3
