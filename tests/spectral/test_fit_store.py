"""fit_store reads the store once and writes /X_global through fit_cube's callback;
FitResult unpacks as the (x, stats) pair the fits returned before."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import nnfit.spectral.fit as fit_mod
import nnfit.spectral.store as store_mod
from nnfit.spectral import FitResult, fit_cube, fit_store, load_problem
from nnfit.spectral.fit import read_warm_start


def _count_opens(monkeypatch) -> list[str]:
    """Every HDF5 open of the fit and the store modules, by mode."""
    modes: list[str] = []
    real = store_mod.open_h5

    def counting(path, mode="r", *args, **kwargs):
        modes.append(mode)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(store_mod, "open_h5", counting)
    monkeypatch.setattr(fit_mod, "open_h5", counting)
    return modes


def test_fit_store_reads_once_and_commits_each_round(small_store, monkeypatch):
    modes = _count_opens(monkeypatch)
    res = fit_store(small_store, method="active-set", x0=None, batch=4)
    assert isinstance(res, FitResult) and res.method == "active-set" and res.converged
    reads = [m for m in modes if m == "r"]
    writes = [m for m in modes if m != "r"]
    assert len(reads) == 1  # load_problem, nothing else
    assert len(writes) == res.stats["rounds"] + 1  # each round and the end
    with h5py.File(small_store, "r") as f:
        np.testing.assert_array_equal(f["X_global"][()], res.x.ravel())
    assert res.stats["phases"]["load"] > 0 and res.time_s >= res.stats["phases"]["load"]


def test_fit_store_equals_fit_cube_on_the_problem_and_the_path(small_store, tmp_path):
    import shutil

    other = tmp_path / "other.h5"
    shutil.copyfile(small_store, other)
    a = fit_store(small_store, method="gram", x0=None, checkpoint=False)
    x_path, st_path = fit_cube(other, method="gram", x0=None, checkpoint=False)
    x_prob, st_prob = fit_cube(load_problem(small_store), method="gram", x0=None)
    np.testing.assert_array_equal(a.x, x_path)
    np.testing.assert_allclose(a.x, x_prob, rtol=1e-12, atol=1e-14)
    assert a.chi2 == st_path["chi2"] and a[1]["chi2"] == pytest.approx(st_prob["chi2"])
    with h5py.File(small_store, "r") as f:
        assert "X_global" not in f  # checkpoint=False: the store is only read


def test_warm_start_comes_from_the_problem(small_store):
    first = fit_store(small_store, method="active-set", x0=None, batch=4)
    prob = load_problem(small_store)
    np.testing.assert_array_equal(prob.warm_start, read_warm_start(small_store, first.x.shape))
    np.testing.assert_array_equal(prob.warm_start, first.x)
    again = fit_cube(prob, method="active-set", batch=4)  # x0="auto": the problem's start
    assert again.stats["rounds"] <= 1 < first.stats["rounds"]
    assert again.chi2 == pytest.approx(first.chi2, rel=1e-12)


def test_callback_replaces_the_commit(small_store):
    seen: list[tuple[np.ndarray, dict]] = []
    res = fit_store(
        small_store,
        method="active-set",
        x0=None,
        batch=4,
        callback=lambda x, i: seen.append((x, i)),
    )
    assert len(seen) == res.stats["rounds"] + 1
    np.testing.assert_array_equal(seen[-1][0], res.x)
    with h5py.File(small_store, "r") as f:
        assert "X_global" not in f
    with pytest.raises(ValueError, match="x0"):
        fit_store(small_store, x0="best")


def test_method_is_checked_before_the_store_is_read(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        fit_store(tmp_path / "absent.h5", method="simplex")


@pytest.mark.slow
def test_kaczmarz_runner_returns_a_fit_result(built_store):
    from nnfit.spectral import PipelineRunner, TrackerConfig

    res = PipelineRunner(built_store).solve_all(
        epochs=1, verbose=False, tracker=TrackerConfig(metrics_interval_sec=0.0)
    )
    assert isinstance(res, FitResult) and res.method == "kaczmarz" and res.converged is None
    x, stats = res
    assert x.shape == (res.x.size,) and res.time_s == stats["time_s"] > 0
