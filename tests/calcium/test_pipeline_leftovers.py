"""The streamed calcium pipeline leaves nothing behind and repairs what a killed run left."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import simulate_recording
from nnfit.calcium.pipeline import _block_path, deconvolve_recording

KIN = dict(tau_rise=0.05, tau_decay=0.5, lam=0.5, block_cells=2, progress=False)


@pytest.fixture
def rec(tmp_path):
    p = tmp_path / "rec.npy"
    np.save(p, simulate_recording(5, 400, seed=3).traces)
    return p


def test_temp_files_of_a_killed_assembly_are_removed_on_rerun(rec, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".spikes.npy.abc123.tmp.npy", out / ".summary.csv.x9.tmp"]
    for s in stale:
        s.write_bytes(b"\0" * 1000)
    deconvolve_recording(rec, out, 30.0, **KIN)
    assert sorted(p.name for p in out.iterdir()) == [
        "baseline.npy",
        "reconvolution.npy",
        "spikes.npy",
        "summary.csv",
    ]


def test_early_error_leaves_no_partial_state(rec, tmp_path, monkeypatch):
    import nnfit.calcium.pipeline as pipeline

    def boom(*a, **k):
        raise ValueError("solver failed")

    monkeypatch.setattr(pipeline, "_run_block", boom)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="solver failed"):
        deconvolve_recording(rec, out, 30.0, **KIN)
    assert not out.exists()  # created for this run, removed again


@pytest.mark.parametrize("estimated", [False, True])
def test_a_nan_in_a_later_block_is_named_and_leaves_nothing(tmp_path, estimated):
    # blocks of 2 cells: the NaN is in the second block, found after the first was written;
    # the message names the file, the recording's cell and frame, and no .partial stays
    x = simulate_recording(5, 400, seed=3).traces
    x[3, 100] = np.nan
    np.save(tmp_path / "nan.npy", x)
    out = tmp_path / "out"
    kin = {k: v for k, v in KIN.items() if not (estimated and k.startswith("tau"))}
    with pytest.raises(ValueError, match=r"nan\.npy: cell 3 has NaN/Inf at frame 100"):
        deconvolve_recording(tmp_path / "nan.npy", out, 30.0, **kin)
    assert not out.exists()


def test_truncated_block_is_recomputed_not_a_badzipfile(rec, tmp_path, monkeypatch):
    import nnfit.calcium.pipeline as pipeline

    out = tmp_path / "out"
    real = pipeline._run_block
    calls = []

    def second_block_fails(spec, settings):
        calls.append(spec[0])
        if spec[0] == 1:
            raise KeyboardInterrupt
        return real(spec, settings)

    monkeypatch.setattr(pipeline, "_run_block", second_block_fails)
    with pytest.raises(KeyboardInterrupt):
        deconvolve_recording(rec, out, 30.0, **KIN)
    block0 = _block_path(str(out), 0)
    assert block0.is_file()
    block0.write_bytes(block0.read_bytes()[: block0.stat().st_size // 2])  # a damaged block
    monkeypatch.setattr(pipeline, "_run_block", real)
    info = deconvolve_recording(rec, out, 30.0, **KIN)
    assert info["blocks_resumed"] == 0 and info["cells"] == 5
    ref = tmp_path / "ref"
    deconvolve_recording(rec, ref, 30.0, **KIN)
    assert np.array_equal(np.load(out / "spikes.npy"), np.load(ref / "spikes.npy"))
    assert not (out / ".partial").exists()
