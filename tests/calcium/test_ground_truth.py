"""nnfit on real simultaneous imaging + electrophysiology (CASCADE DS09, GCaMP6f, mouse V1),
read through the hash-checked loader."""

import shutil

import numpy as np
import pytest

from nnfit.calcium import deconvolve
from nnfit.calcium.ground_truth import DATASETS, REGISTRY, ground_truth_file, open_ground_truth


def _best_lag_r(t, fs, inferred, spikes):
    """Spikefinder metric: Pearson r of rates in 40 ms bins, best over lags of +-2 frames."""
    edges = np.arange(t[0] - 0.5 / fs, t[-1] + 0.5 / fs + 0.04, 0.04)
    true, _ = np.histogram(spikes, edges)
    best = -1.0
    for lag in range(-2, 3):
        shifted = np.zeros_like(inferred)
        if lag >= 0:
            shifted[lag:] = inferred[: len(inferred) - lag]
        else:
            shifted[:lag] = inferred[-lag:]
        rate, _ = np.histogram(t, edges, weights=shifted)
        best = max(best, float(np.corrcoef(rate, true)[0, 1]))
    return best


@pytest.mark.slow
@pytest.mark.parametrize("recording", [0, 1, 2, 3])
def test_inferred_spikes_follow_real_electrophysiology(ground_truth_dir, recording):
    z = open_ground_truth("DS09-GCaMP6f-m-V1", ground_truth_dir)
    t = z[f"time_{recording}"]
    y = z[f"fluo_{recording}"].astype(np.float64)
    fs = float(z["fs"][recording])
    res = deconvolve(y, fs)  # kinetics, lam and baseline all estimated from this one trace
    assert np.all(res.spikes >= 0)
    assert np.all(res.gap <= 1e-8)  # the optimum of the estimated problem, certified
    # A shuffled-spike control sits near 0 (the dataset README reports |r| < 0.07).
    assert _best_lag_r(t, fs, res.spikes, z[f"spikes_{recording}"]) > 0.35


def test_registry_covers_the_folder_and_every_file_verifies(ground_truth_dir):
    assert sorted(p.name for p in ground_truth_dir.glob("*.npz")) == sorted(REGISTRY)
    for name in DATASETS:
        with open_ground_truth(name, ground_truth_dir) as z:
            n = len(z["fs"])
            assert z["cell_id"].shape == (n,) and f"fluo_{n - 1}" in z.files


def test_a_changed_file_is_refused_in_one_line(ground_truth_dir, tmp_path):
    shutil.copyfile(
        ground_truth_dir / "DS06-GCaMP6f-zf-aDp.npz", tmp_path / "DS06-GCaMP6f-zf-aDp.npz"
    )
    assert ground_truth_file("DS06-GCaMP6f-zf-aDp", tmp_path).exists()
    with (tmp_path / "DS06-GCaMP6f-zf-aDp.npz").open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="does not match the registry") as err:
        ground_truth_file("DS06-GCaMP6f-zf-aDp", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"DS09-GCaMP6f-m-V1\.npz"):
        ground_truth_file("DS09-GCaMP6f-m-V1", tmp_path)
