"""nnfit on real simultaneous imaging + electrophysiology (CASCADE DS09, GCaMP6f, mouse V1),
read through the hash-checked loader."""

import shutil

import numpy as np
import pytest

from nnfit.calcium import deconvolve
from nnfit.calcium.ground_truth import (
    DATASETS,
    REGISTRY,
    ground_truth_file,
    open_ground_truth,
    read_cascade,
)


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


def _cascade_file(path, recordings):
    """A file laid out as CASCADE's: a 1 x N cell array ``CAttached`` of structs."""
    from scipy.io import savemat

    cells = np.empty((1, len(recordings)), dtype=object)
    for j, rec in enumerate(recordings):
        cells[0, j] = rec
    savemat(path, {"CAttached": cells})


def _recording(t0, n, fs, spikes_s, extra=None):
    t = t0 + np.arange(n) / fs
    rec = {
        "fluo_time": t[None, :],
        "fluo_mean": np.sin(t)[:, None],  # a column, as some datasets store it
        "events_AP": (np.asarray(spikes_s) * 1e4)[:, None],
        "F0": 3.0,
    }
    rec.update(extra or {})
    return rec


def test_read_cascade_gives_the_layout_of_the_converted_files(tmp_path):
    _cascade_file(tmp_path / "b_cell.mat", [_recording(0.0, 50, 30.0, [1.25, 0.5])])
    _cascade_file(
        tmp_path / "a_cell.mat",
        [_recording(0.0, 40, 60.0, [0.1]), _recording(5.0, 30, 60.0, [5.2, np.nan])],
    )
    z = read_cascade(tmp_path)
    assert sorted(z) == sorted(
        ["fs", "cell_id", "segment"]
        + [f"{k}_{i}" for k in ("fluo", "time", "spikes") for i in range(3)]
    )
    np.testing.assert_allclose(z["fs"], [60.0, 60.0, 30.0])
    np.testing.assert_array_equal(z["cell_id"], [0, 0, 1])  # files in name order
    np.testing.assert_array_equal(z["segment"], [0, 1, 0])
    assert z["fluo_1"].dtype == np.float32 and z["fluo_1"].shape == (30,)
    np.testing.assert_array_equal(
        z["fluo_1"], np.sin(5.0 + np.arange(30) / 60.0).astype(np.float32)
    )
    np.testing.assert_array_equal(z["time_2"], np.arange(50) / 30.0)
    np.testing.assert_allclose(z["spikes_2"], [0.5, 1.25], rtol=1e-15)  # seconds, sorted
    np.testing.assert_allclose(z["spikes_1"], [5.2], rtol=1e-15)  # NaN dropped


def test_read_cascade_drops_frames_without_a_time_at_the_ends_only(tmp_path, caplog):
    rec = _recording(0.0, 60, 30.0, [1.0])
    rec["fluo_time"] = rec["fluo_time"].copy()
    rec["fluo_time"][0, :7] = np.nan
    rec["fluo_mean"] = rec["fluo_mean"].copy()
    rec["fluo_mean"][-2:] = np.nan
    _cascade_file(tmp_path / "cell.mat", [rec])
    with caplog.at_level("WARNING", logger="nnfit.calcium.ground_truth"):
        z = read_cascade(tmp_path)
    assert z["time_0"].shape == z["fluo_0"].shape == (51,)
    assert z["time_0"][0] == 7 / 30.0
    assert "dropped 7 leading and 2 trailing frames" in caplog.text
    rec["fluo_mean"][20] = np.nan
    _cascade_file(tmp_path / "cell.mat", [rec])
    with pytest.raises(ValueError, match=r"cell\.mat: CAttached\{1\}: 1 frames inside"):
        read_cascade(tmp_path)


def test_read_cascade_refuses_what_is_not_a_cascade_dataset(tmp_path):
    import h5py
    from scipy.io import savemat

    with pytest.raises(FileNotFoundError, match=r"no \.mat file"):
        read_cascade(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_cascade(tmp_path / "missing")
    rec = _recording(0.0, 20, 30.0, [])
    del rec["events_AP"]
    _cascade_file(tmp_path / "a.mat", [_recording(0.0, 20, 30.0, [0.2]), rec])
    with pytest.raises(ValueError, match=r"a\.mat: CAttached\{2\}: no field events_AP"):
        read_cascade(tmp_path)
    savemat(tmp_path / "a.mat", {"traces": np.zeros(3)})
    with pytest.raises(ValueError, match="no CAttached cell array"):
        read_cascade(tmp_path)
    rec = _recording(0.0, 20, 30.0, [0.2])
    rec["fluo_mean"] = rec["fluo_mean"][:-1]
    _cascade_file(tmp_path / "a.mat", [rec])
    with pytest.raises(ValueError, match="20 frame times but 19 fluorescence values"):
        read_cascade(tmp_path)
    (tmp_path / "a.mat").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable MATLAB file"):
        read_cascade(tmp_path)
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros(3)
    savemat(tmp_path / "a.mat", {"CAttached": cells})
    with pytest.raises(ValueError, match=r"CAttached\{1\}: not one struct"):
        read_cascade(tmp_path)
    (tmp_path / "a.mat").unlink()
    with h5py.File(tmp_path / "b.mat", "w", userblock_size=512) as f:  # MATLAB -v7.3 is HDF5
        f["x"] = 1.0
    with (tmp_path / "b.mat").open("r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file".ljust(124) + b"\x00\x02IM")
    with pytest.raises(ValueError, match=r"MATLAB v7\.3"):
        read_cascade(tmp_path)
