"""The asynchronous fit tracker: one writer process, SWMR readers, nothing dropped."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.tracker import (
    FitTracker,
    TrackerConfig,
    choose_validation_sample,
    read_checkpoints,
)

from ._kaczmarz_fixtures import make_store

NOW = TrackerConfig(metrics_interval_sec=0.0, val_interval_sec=0.0, ckpt_interval_sec=0.0)


def test_tracker_writes_metrics_checkpoints_best_and_is_readable_meanwhile(tmp_path):
    st = make_store(tmp_path / "c.h5", S=6, C=2, P=3, L=20, S_chunk=3)
    cfg = TrackerConfig(
        metrics_interval_sec=0.0, val_interval_sec=0.0, ckpt_interval_sec=0.0, ring_size=3
    )
    trk = FitTracker(st.path, cfg)
    try:
        assert trk.sample_spaxels.size == 6 and trk.val_pixels.size == 10
        w = np.array([2.0, 1.0])
        trk.set_orbit_weights(w)
        rows = np.eye(6)[[0, 1, 2, 3]]
        trk.set_validation(rows, np.array([1.0, 1.0, 1.0, 1.0]), np.ones(4))
        xs = [np.full(6, 0.2), np.full(6, 1.0), np.full(6, 0.7), np.full(6, 3.0)]
        for i, x in enumerate(xs):
            trk.on_batch(0.5)
            sent = trk.maybe_save(x, epoch=i, position=(i, 0))
            assert sent["metrics"] and sent["ckpt"] and sent["val"]
        trk.commit_global(xs[-1], (4, 0))
        # a dashboard may read while the writer works (SWMR)
        with open_h5(st.path, "r") as f:
            assert "Fit/metrics/epoch" in f
        trk.close()
        trk.close()  # idempotent
    finally:
        trk.close()
    with h5py.File(st.path, "r") as f:
        np.testing.assert_array_equal(f["Fit/metrics/epoch"][:], [0, 1, 2, 3])
        val = f["Fit/metrics/val_rmse"][:]
        np.testing.assert_allclose(val, [0.8, 0.0, 0.3, 2.0])
        np.testing.assert_array_equal(f["Fit/x_best"][:], xs[1])  # best by validation RMSE
        np.testing.assert_array_equal(f["Fit/x_latest"][:], xs[-1])
        np.testing.assert_array_equal(f["X_global"][:], xs[-1])
        # ring of 3 slots: the last three checkpoints, oldest overwritten
        assert sorted(f["Fit/ring_epoch"][:].tolist()) == [1.0, 2.0, 3.0]
        assert f["Fit/x_vis_ring"].dtype == np.float32
        np.testing.assert_array_equal(f["Fit/orbit_weights"][:], w)
        # mass errors: fractions (1/2, 1/2) vs targets (2/3, 1/3)
        np.testing.assert_allclose(f["Fit/metrics/mass_err_L1"][:], 1 / 3)
        np.testing.assert_allclose(f["Fit/metrics/mass_err_Linf"][:], 1 / 6)
        np.testing.assert_allclose(f["Fit/metrics/train_rmse_ewma"][:], 0.5)
        np.testing.assert_allclose(f["Fit/metrics/l1_norm"][:], [1.2, 6, 4.2, 18])
        assert math.isnan(f["Fit/metrics/delta_x_rel"][0])
        np.testing.assert_allclose(f["Fit/metrics/delta_x_rel"][1], 0.8)
        ck = read_checkpoints(f)
    assert ck["x_best"]["pos"] == (1, 0) and ck["X_global"]["pos"] == (4, 0)


def test_gating_by_interval(tmp_path):
    st = make_store(tmp_path / "c.h5", S=4, C=1, P=2, L=10, S_chunk=2)
    with FitTracker(st.path, TrackerConfig()) as trk:
        sent = trk.maybe_save(np.ones(2), epoch=0.5)
        assert not any(sent.values())  # intervals of minutes: nothing yet
        sent = trk.maybe_save(np.ones(2), epoch=1, force=True)
        assert sent["metrics"] and sent["ckpt"] and sent["val"]
        assert sent["best"]  # the held-out sample is read from the store: a first best
        sent = trk.maybe_save(np.ones(2), epoch=2, force=True)
        assert sent["val"] and not sent["best"]  # the same x is no better


def test_backpressure_waits_and_never_drops(tmp_path):
    st = make_store(tmp_path / "c.h5", S=4, C=4, P=50, L=10, S_chunk=2)
    cfg = TrackerConfig(metrics_interval_sec=0.0, val_interval_sec=1e9, queue_size=1)
    trk = FitTracker(st.path, cfg)
    x = np.ones(200)
    for i in range(60):
        trk.maybe_save(x, epoch=i, force=True)  # metrics + x_latest + ring each time
    trk.close()
    assert trk.drops == 0
    with h5py.File(st.path, "r") as f:
        assert f["Fit/metrics/epoch"].shape == (60,)  # every row arrived
    assert trk.sent == 3 * 60 + 1  # and one x_best: the first validation (forced)


def test_dead_writer_is_an_error_not_a_silent_drop(tmp_path):
    st = make_store(tmp_path / "c.h5", S=4, C=1, P=2, L=10, S_chunk=2)
    trk = FitTracker(st.path, NOW)
    trk._proc.kill()
    trk._proc.wait()
    with pytest.raises(RuntimeError, match="died"):
        for i in range(20):
            trk.maybe_save(np.ones(2), epoch=i, force=True)
    with pytest.raises(RuntimeError):
        trk.close()


def test_sample_and_config_checks(tmp_path):
    a = choose_validation_sample(50, np.r_[np.zeros(10, bool), np.ones(30, bool)], 5, 8, 3)
    b = choose_validation_sample(50, np.r_[np.zeros(10, bool), np.ones(30, bool)], 5, 8, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1] >= 10).all() and a[0].dtype == np.int32
    with pytest.raises(ValueError, match="ring_size"):
        TrackerConfig(ring_size=0)
    with pytest.raises(FileNotFoundError):
        FitTracker(tmp_path / "missing.h5")
    p = tmp_path / "nocube.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f["DataCube"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="HyperCube"):
        FitTracker(p)
    st = make_store(tmp_path / "c.h5", S=4, C=2, P=2, L=10, S_chunk=2)
    with FitTracker(st.path, NOW) as trk, pytest.raises(ValueError, match="orbit_weights"):
        trk.set_orbit_weights([1.0, 2.0, 3.0])


def test_old_format_store_is_a_clear_error(tmp_path):
    p = tmp_path / "old.h5"
    with h5py.File(p, "w") as f:  # default (earliest) format: no SWMR
        f.create_dataset("HyperCube/models", data=np.ones((2, 1, 2, 5), np.float32))
        f["DataCube"] = np.ones((2, 5))
    with pytest.raises(ValueError, match="h5repack"):
        FitTracker(p, NOW)


_UNCLOSED = """
import sys
import numpy as np
from nnfit.spectral.tracker import FitTracker, TrackerConfig

cfg = TrackerConfig(metrics_interval_sec=0.0, val_interval_sec=0.0, ckpt_interval_sec=0.0)
trk = FitTracker(sys.argv[1], cfg)
n = trk.C * trk.P
for i in range(20):
    trk.on_batch(1.0)
    trk.maybe_save(np.full(n, 0.01 * (i + 1)), epoch=i, position=(i, 0))
trk.commit_global(np.full(n, 0.5), (20, 0))
# the program ends without trk.close(), as CubeFit's scripts may
"""


def test_a_tracker_never_closed_still_writes_everything(tmp_path):
    import subprocess
    import sys

    st = make_store(tmp_path / "c.h5", S=6, C=2, P=3, L=40, S_chunk=3, noise_sigma=0.1)
    r = subprocess.run(
        [sys.executable, "-c", _UNCLOSED, str(st.path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    with open_h5(st.path) as f:
        assert f["Fit/metrics/epoch"][()].tolist() == [float(i) for i in range(20)]
        assert np.isfinite(f["Fit/metrics/val_rmse"][()]).all()
        ck = read_checkpoints(f)  # only vectors whose digests verify
    np.testing.assert_array_equal(ck["X_global"]["x"], np.full(6, 0.5))
    assert ck["X_global"]["pos"] == (20, 0) and ck["x_latest"]["pos"] == (19, 0)


def test_validation_rmse_is_read_from_the_store_without_set_validation(tmp_path):
    st = make_store(tmp_path / "c.h5", S=8, C=2, P=3, L=40, S_chunk=4, noise_sigma=0.2)
    x = np.random.default_rng(1).random(6)
    with FitTracker(st.path, NOW) as trk:
        got = trk.validation_rmse(x)
        spax, pix = trk.sample_spaxels, trk.val_pixels
    with h5py.File(st.path, "r") as f:
        A = f["HyperCube/models"][()].astype(np.float64)  # (S, C, P, L)
        y, sigma = f["DataCube"][()], f["Noise"][()]
    # dense reference: every held-out (spaxel, pixel) residual, weighted by 1 / sigma
    res = [
        (y[s, pix] - np.einsum("cpl,cp->l", A[s][:, :, pix], x.reshape(2, 3))) / sigma[s, pix]
        for s in spax
    ]
    want = math.sqrt(np.mean(np.concatenate(res) ** 2))
    assert spax.size and pix.size
    assert got == pytest.approx(want, rel=1e-6)


class _RacingStore:
    """A store whose writer makes one more update (x, pos, fp, then the digest, its order)
    while ``read_checkpoints`` reads: after each of the reader's reads the writer takes the
    number of steps the schedule says."""

    def __init__(self, schedule):
        from nnfit.spectral.tracker import _sha

        xs = [np.full(4, 1.0), np.full(4, 2.0)]
        self.cur = {"x": xs[0], "pos": np.array([7, 0]), "fp": b"f", "sha": _sha(xs[0])}
        self.steps = [
            ("x", xs[1]),
            ("pos", np.array([7, 1])),
            ("fp", b"f"),
            ("sha", _sha(xs[1])),
        ]
        self.schedule = list(schedule)
        self.pairs = {_sha(xs[0]): (7, 0), _sha(xs[1]): (7, 1)}

    def _read(self, key):
        value = self.cur[key]
        for _ in range(self.schedule.pop(0) if self.schedule else 0):
            if self.steps:
                k, v = self.steps.pop(0)
                self.cur[k] = v
        return value

    def get(self, name):
        return self if name == "Fit/state" else None

    def __contains__(self, name):
        return name in ("Fit/x_latest", "x_latest_sha", "x_latest_pos", "x_latest_fp")

    def __getitem__(self, name):
        key = {"Fit/x_latest": "x", "x_latest_sha": "sha", "x_latest_pos": "pos"}.get(name, "fp")
        store = self

        class _Dataset:
            def __getitem__(self, _):  # ds[0] for the digest and fingerprint, ds[:] for pos
                return store._read(key)

            def __array__(self, dtype=None, copy=None):
                return np.asarray(store._read(key), dtype=dtype)

        return _Dataset()


def test_checkpoints_read_while_a_writer_updates_them_never_mix_two_updates():
    """Every interleaving of the reader's four reads with the writer's four steps: a vector
    is returned only with its own position (a mixed pair resumed a fit from the wrong place)."""
    from itertools import product

    from nnfit.spectral.tracker import _sha

    for schedule in product(range(5), repeat=4):
        if sum(schedule) > 4:
            continue
        store = _RacingStore(schedule)
        ck = read_checkpoints(store)
        if "x_latest" in ck:
            got = ck["x_latest"]
            assert store.pairs[_sha(got["x"])] == got["pos"], schedule
