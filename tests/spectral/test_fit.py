"""fit_cube: the exact optimum (against scipy on the dense matrix), constraints, warm start,
checkpoints, resume after a real SIGKILL, and identical results on a Dask cluster."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy.optimize import nnls

from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import _peak_rss_bytes, fit_cube, read_warm_start


@pytest.fixture(scope="module")
def dense_reference(_small_store_master):
    op = CubeOperator.from_h5(_small_store_master, weighted=True)
    A = op.todense()
    wy = op._data.wy.ravel()
    x, rnorm = nnls(A, wy, maxiter=100 * A.shape[1])
    return x.reshape(op.model_shape), rnorm**2


@pytest.mark.parametrize("method", ["gram", "active-set"])
def test_exact_optimum_matches_scipy_on_dense_matrix(small_store, dense_reference, method):
    _, chi2_ref = dense_reference
    x, st = fit_cube(small_store, method=method, x0=None, batch=4)
    assert st["method"] == method
    assert st["converged"] and st["kkt_violation"] <= st["kkt_tol"]
    assert abs(st["chi2"] - chi2_ref) <= 1e-10 * chi2_ref
    assert np.all(x >= 0)
    for key in ("objective", "iterations", "time_s", "phases", "chi2_zero", "nnz"):
        assert key in st
    # the fit wrote /X_global (C*P,) float64
    with h5py.File(small_store, "r") as f:
        np.testing.assert_array_equal(f["X_global"][()], x.ravel())


def test_active_set_defaults_reach_the_dense_optimum(small_store, dense_reference):
    _, chi2_ref = dense_reference
    # a budget above this test process's peak: whatever ran before in it, the cache is on
    budget = _peak_rss_bytes() / 2**30 + 4.0
    kw = dict(method="active-set", x0=None, checkpoint=False)
    x, st = fit_cube(small_store, memory_gb=budget, **kw)
    assert st["converged"] and st["kkt_violation"] <= st["kkt_tol"]
    assert abs(st["chi2"] - chi2_ref) <= 1e-10 * chi2_ref
    assert st["column_cache"]["capacity"] > 0  # the cache is on by default
    x1, _ = fit_cube(small_store, cache_gb=0.0, **kw)
    np.testing.assert_array_equal(x1, x)


def test_screened_rounds_reach_the_same_certified_optimum(small_store, dense_reference):
    _, chi2_ref = dense_reference
    kw = dict(method="active-set", x0=None, checkpoint=False, batch=4)
    x, st = fit_cube(small_store, **kw)  # screening is on by default, locally
    x64, st64 = fit_cube(small_store, screen=False, **kw)
    assert st["screened_rounds"] > 0 and st64["screened_rounds"] == 0
    for s in (st, st64):
        assert s["converged"] and s["kkt_violation"] <= s["kkt_tol"]
        assert abs(s["chi2"] - chi2_ref) <= 1e-10 * chi2_ref
    np.testing.assert_allclose(x, x64, rtol=0, atol=1e-8 * np.abs(x64).max())


def test_only_a_float64_gradient_stops_the_fit(small_store, monkeypatch):
    """A screen that sees no violator at all cannot end the fit: the float64 pass after it
    finds them, and the fit then runs as it does without screening, to the bit."""
    real = CubeOperator.weighted_residual_gradient

    def blind(self, model, weighted=True, screen=False):
        g, chi2 = real(self, model, weighted)
        return (np.zeros_like(g) if screen else g), chi2

    kw = dict(method="active-set", x0=None, checkpoint=False, batch=4)
    x0, st0 = fit_cube(small_store, screen=False, **kw)
    monkeypatch.setattr(CubeOperator, "weighted_residual_gradient", blind)
    x1, st1 = fit_cube(small_store, screen=True, **kw)
    assert st1["converged"] and st1["screened_rounds"] == 0
    assert st1["rounds"] == st0["rounds"]
    np.testing.assert_array_equal(x1, x0)


def test_the_final_check_is_the_last_float64_pass_at_the_returned_weights(small_store, monkeypatch):
    """After the screened rounds the float64 pass that finds no violator is the operator's
    own gradient at the returned weights, so the final check takes it instead of a second,
    identical pass; its figures are those of a fresh pass there, to the bit."""
    calls = []
    real = CubeOperator.gradient

    def counted(self, x, screen=False):
        calls.append(screen)
        return real(self, x, screen)

    monkeypatch.setattr(CubeOperator, "gradient", counted)
    kw = dict(method="active-set", x0=None, checkpoint=False, batch=4)
    x, st = fit_cube(small_store, **kw)
    assert st["converged"] and st["screened_rounds"] > 0
    assert calls.count(False) == st["rounds"] + 1 - st["screened_rounds"]  # no pass after
    _, chi2 = real(CubeOperator.from_h5(small_store), x)
    assert st["chi2"] == chi2 and st["objective"] == chi2
    monkeypatch.setattr(CubeOperator, "gradient", real)
    _, st0 = fit_cube(small_store, screen=False, **kw)  # the cache's passes: a check after
    assert st0["converged"] and st0["chi2"] == pytest.approx(chi2, rel=1e-10)


def test_a_screen_that_keeps_calling_a_column_a_violator_cannot_make_the_fit_cycle(
    small_store, monkeypatch
):
    """A column that float32 scores call a violator and float64 ones do not would enter,
    stay at zero, leave and come back every round: a round whose candidates all stay out
    ends the screening, and the fit converges to the unscreened optimum."""
    kw = dict(method="active-set", x0=None, checkpoint=False, batch=4)
    x0, st0 = fit_cube(small_store, screen=False, **kw)
    g, _ = CubeOperator.from_h5(small_store).gradient(x0)
    ghost = int(np.argmax(np.where(x0.ravel() == 0, g.ravel(), -np.inf)))  # far from a violator
    real = CubeOperator.weighted_residual_gradient

    def haunted(self, model, weighted=True, screen=False):
        g, chi2 = real(self, model, weighted, screen)
        if screen:
            g = g.copy()
            g.flat[ghost] = -abs(g).max()  # the strongest "violator" every screened round
        return g, chi2

    monkeypatch.setattr(CubeOperator, "weighted_residual_gradient", haunted)
    x1, st1 = fit_cube(small_store, screen=True, **kw)
    assert st1["converged"] and st1["kkt_violation"] <= st1["kkt_tol"]
    assert x1.ravel()[ghost] == 0 and st1["rounds"] < 100
    assert st1["chi2"] == pytest.approx(st0["chi2"], rel=1e-10)


@pytest.mark.parametrize(
    "bad",
    [dict(memory_gb=-1.0), dict(memory_gb=np.inf), dict(cache_gb="2"), dict(cache_gb=np.nan)],
)
def test_a_bad_budget_is_refused_by_name(small_store, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be a finite number of GiB >= 0"):
        fit_cube(small_store, **bad)


def test_the_cache_stays_within_the_memory_budget(small_store):
    """The cache gets what the budget leaves after the process's peak so far: none here."""
    kw = dict(method="active-set", x0=None, checkpoint=False)
    x, st = fit_cube(small_store, memory_gb=0.5 * _peak_rss_bytes() / 2**30, **kw)
    assert st["column_cache"] is None and st["converged"]
    x1, st1 = fit_cube(small_store, memory_gb=_peak_rss_bytes() / 2**30 + 4.0, **kw)
    assert st1["column_cache"]["capacity"] > 0
    np.testing.assert_array_equal(x1, x)  # the budget moves memory and time, never the answer


_BUDGET_RUN = """
import json, sys
import numpy as np
from nnfit.spectral.fit import _peak_rss_bytes, fit_cube
x, st = fit_cube(sys.argv[1], "active-set", x0=None, checkpoint=False, memory_gb=float(sys.argv[2]))
np.save(sys.argv[3], x)
keys = ("column_cache", "columns_built", "working_set_max", "memory_gb_to_cache_working_set")
print(json.dumps({"peak": _peak_rss_bytes(), **{k: st[k] for k in keys}}))
"""


def test_the_budget_a_fit_names_holds_its_working_set_in_a_fresh_process(tmp_path):
    """Each fit in a process of its own, as from the shell: one with memory to spare; one whose
    budget leaves its cache two columns past that run's footprint, which names a budget; a
    third with that budget holds the widest working set (no hint) and gives the same bits."""
    from nnfit.spectral.simulate import simulate_cube

    path = simulate_cube(400, 3, 24, n_obs_pix=1000, templates="ssp", seed=2).to_h5(
        tmp_path / "c.h5"
    )

    def run(gb: float, name: str) -> tuple[np.ndarray, dict]:
        out = tmp_path / f"{name}.npy"
        argv = [sys.executable, "-c", _BUDGET_RUN, str(path), repr(gb), str(out)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
        return np.load(out), json.loads(done.stdout.splitlines()[-1])

    x_a, a = run(8.0, "spare")
    cache = a["column_cache"]
    assert a["memory_gb_to_cache_working_set"] is None and cache["slots"] >= a["working_set_max"]
    col = cache["bytes"] / cache["slots"]
    x_b, b = run((a["peak"] - cache["bytes"] + 2 * col) / 2**30, "tight")
    held = (b["column_cache"] or {}).get("slots", 0)
    assert held < b["working_set_max"] and b["columns_built"] > a["columns_built"]
    assert b["memory_gb_to_cache_working_set"] is not None
    x_c, c = run(b["memory_gb_to_cache_working_set"], "named")
    assert c["memory_gb_to_cache_working_set"] is None
    assert c["column_cache"]["slots"] >= c["working_set_max"] == b["working_set_max"]
    assert c["columns_built"] < b["columns_built"]
    np.testing.assert_array_equal(x_b, x_a)
    np.testing.assert_array_equal(x_c, x_a)


def test_fit_store_does_not_keep_the_loaded_problem_through_the_fit(small_store, monkeypatch):
    """The operator holds what the fit needs; the problem (its LOSVDs are S * V * C float64,
    0.95 GB at C = 207) is released before the first round, so the cache gets that memory."""
    import gc
    import weakref

    from nnfit.spectral import fit as fit_module

    refs = []
    real_load = fit_module.load_problem

    def load(path):
        problem = real_load(path)
        refs.append(weakref.ref(problem))
        return problem

    monkeypatch.setattr(fit_module, "load_problem", load)
    alive = []

    def progress(phase, info):
        gc.collect()
        alive.append(refs[0]() is not None)

    res = fit_module.fit_store(
        small_store, "active-set", x0=None, checkpoint=False, progress=progress
    )
    assert res.converged and alive and not any(alive)


def test_the_default_batch_is_one_per_component_up_to_max_batch(tmp_path, monkeypatch):
    """20 components, MAX_BATCH lowered to 17: no round takes more than 17 candidates, the
    first one per component, and the fit still reaches scipy's NNLS optimum."""
    from nnfit.spectral import fit as fit_module
    from nnfit.spectral.simulate import simulate_cube

    path = simulate_cube(8, 20, 4, seed=3, mask_fraction=0.1).to_h5(tmp_path / "c20.h5")
    op = CubeOperator.from_h5(path, weighted=True)
    A = op.todense()
    _, rnorm = nnls(A, op._data.wy.ravel(), maxiter=100 * A.shape[1])
    picked = []
    real_pick = fit_module._pick_candidates

    def pick(viol, score, k, P):
        new = real_pick(viol, score, k, P)
        picked.append((k, np.unique(new // P).size, new.size))
        return new

    monkeypatch.setattr(fit_module, "MAX_BATCH", 17)
    monkeypatch.setattr(fit_module, "_pick_candidates", pick)
    res = fit_cube(path, method="active-set", x0=None, checkpoint=False)
    assert res.converged and abs(res.stats["chi2"] - rnorm**2) <= 1e-10 * rnorm**2
    assert picked and all(k == 17 and n <= 17 for k, _, n in picked)
    assert picked[0] == (17, 17, 17)  # from a cold start every component violates: one each


def test_auto_picks_gram_for_small_problems(small_store):
    _, st = fit_cube(small_store, x0=None, checkpoint=False)
    assert st["method"] == "gram"


@pytest.mark.parametrize("method", ["gram", "active-set"])
def test_the_phase_log_reads_as_text(small_store, caplog, method):
    """Each phase is one line of numbers with their names and units, not a dict's repr with
    numbers as strings (``gram {'time_s': '0.00366724'}``)."""
    import re

    with caplog.at_level("INFO", logger="nnfit.spectral"):
        fit_cube(small_store, method=method, x0=None, verbose=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[fit_cube")]
    assert lines and not any("{" in line or "'" in line for line in lines), lines
    done = lines[-1]
    assert re.search(r"\] done: chi2 [0-9.e+]+, KKT violation [0-9.]+e[-+]\d+, ", done), done
    assert re.search(r"(\d ms|\d s)$", done), done
    if method == "gram":
        assert any(re.search(r"\] gram [0-9.]+ (ms|s)$", line) for line in lines), lines
    else:
        assert any(re.search(r"\] round 1: chi2 \S+, working set \d+, ", ln) for ln in lines)


def test_matrix_free_is_close_in_chi2(small_store, dense_reference):
    _, chi2_ref = dense_reference
    _, st = fit_cube(small_store, method="matrix-free", x0=None, checkpoint=False, max_iter=600)
    assert st["chi2"] >= chi2_ref * (1 - 1e-12)
    assert st["chi2"] - chi2_ref < 0.05 * chi2_ref


def test_mass_constraints_exact(small_store):
    w = np.array([1.0, 2.0, 0.5])
    x, st = fit_cube(small_store, method="gram", constraints=w, x0=None, checkpoint=False)
    masses = x.sum(axis=1)
    alpha = masses[1] / w[1]
    np.testing.assert_allclose(masses, alpha * w, rtol=1e-10)
    assert st["equality_residual"] <= 1e-10
    # constrained optimum is no better than the unconstrained one, and feasible-optimal:
    # active-set with the same constraints agrees
    _, st2 = fit_cube(
        small_store, method="active-set", constraints=w, x0=None, checkpoint=False, batch=8
    )
    assert abs(st2["chi2"] - st["chi2"]) <= 1e-8 * st["chi2"]


def test_warm_start_from_x_global(small_store):
    x1, st1 = fit_cube(small_store, method="active-set", x0=None, batch=4)
    assert read_warm_start(small_store, x1.shape) is not None
    _, st2 = fit_cube(small_store, method="active-set")  # x0="auto" reads /X_global
    assert st2["rounds"] <= 1 < st1["rounds"]
    assert abs(st2["chi2"] - st1["chi2"]) <= 1e-12 * st1["chi2"]


def test_validation(small_store):
    with pytest.raises(ValueError, match="method"):
        fit_cube(small_store, method="simplex")
    with pytest.raises(ValueError, match="component weights"):
        fit_cube(small_store, constraints=[1.0, 2.0], checkpoint=False)
    with pytest.raises(ValueError, match="screen must be True, False or None"):
        fit_cube(small_store, screen="yes")


@pytest.mark.slow
def test_dask_cluster_gives_identical_x(small_store):
    from dask.distributed import Client, LocalCluster

    x_local, _ = fit_cube(small_store, method="gram", x0=None, checkpoint=False, block_size=4)
    xa_local, _ = fit_cube(
        small_store, method="active-set", x0=None, checkpoint=False, block_size=4, batch=4
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        x_dask, _ = fit_cube(
            small_store, method="gram", x0=None, checkpoint=False, block_size=4, scheduler=client
        )
        xa_dask, _ = fit_cube(
            small_store,
            method="active-set",
            x0=None,
            checkpoint=False,
            block_size=4,
            batch=4,
            scheduler=client,
        )
        for method in ("active-set", "gram"):  # refused before any work, whatever the method
            with pytest.raises(ValueError, match="screen=True works on the local scheduler only"):
                fit_cube(small_store, method=method, screen=True, scheduler=client)
    scale = np.abs(x_local).max()
    assert np.abs(x_dask - x_local).max() <= 1e-12 * scale
    assert np.abs(xa_dask - xa_local).max() <= 1e-12 * np.abs(xa_local).max()


def test_cli_and_runner_route_to_fit_cube(built_store, run_cli, tmp_path):
    import json

    from nnfit.spectral.kaczmarz_fit import PipelineRunner

    r = run_cli(
        "cube",
        "fit",
        built_store,
        "--method",
        "gram",
        "--regul",
        "10",
        "--stats",
        "s.json",
        "--out",
        "x.npy",
        "--quiet",
        check=True,
    )
    assert "fit (gram): optimum" in r.stdout
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["converged"] and stats["kkt_violation"] <= stats["kkt_tol"]
    x_cli = np.load(tmp_path / "x.npy")
    with h5py.File(built_store, "r") as f:
        np.testing.assert_array_equal(f["X_global"][()], x_cli)
    _, st = PipelineRunner(built_store).solve_all(method="auto", verbose=False)
    assert st["method"] == "gram" and st["converged"]


_KILLED_FIT = """
import sys, time
from nnfit.spectral.fit import fit_cube

def progress(phase, info):
    if phase == "round":
        print("round", info["round"], flush=True)
        if info["round"] == 2:  # round 1's checkpoint is on disk: wait here for the kill
            time.sleep(120)

fit_cube(sys.argv[1], method="active-set", x0=None, batch=4, progress=progress)
"""


def test_sigkill_mid_fit_then_resume(small_store, tmp_path):
    """A real process is SIGKILLed between working-set rounds; the store stays readable, its
    checkpoint verifies, and the resumed fit reaches the cold optimum in fewer rounds."""
    script = tmp_path / "fit.py"
    script.write_text(_KILLED_FIT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(small_store)], stdout=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stdout:
            if line.strip() == "round 2":
                break
        else:
            pytest.fail(f"the fit ended before round 2 (exit {proc.wait()})")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    C, P = CubeOperator.from_h5(small_store).model_shape
    x_ckpt = read_warm_start(small_store, (C, P))
    assert x_ckpt is not None and np.all(x_ckpt >= 0)
    cold_copy = tmp_path / "cold.h5"
    shutil.copyfile(small_store, cold_copy)
    _, cold = fit_cube(cold_copy, method="active-set", x0=None, batch=4, checkpoint=False)
    _, resumed = fit_cube(small_store, method="active-set", batch=4)  # x0="auto"
    assert resumed["converged"]
    assert abs(resumed["chi2"] - cold["chi2"]) <= 1e-10 * cold["chi2"]
    assert resumed["rounds"] < cold["rounds"]


def test_callback_receives_each_round_and_replaces_the_file_commit(small_store):
    with h5py.File(small_store, "r") as f:
        before = f["X_global"][()].copy() if "X_global" in f else None
    seen = []
    x, _ = fit_cube(
        small_store, method="active-set", x0=None, callback=lambda x, info: seen.append((x, info))
    )
    assert len(seen) >= 2 and seen[-1][1]["method"] == "active-set"
    np.testing.assert_array_equal(np.ravel(seen[-1][0]), x.ravel())  # the last call is the result
    assert all(np.all(np.ravel(v) >= 0) for v, _ in seen)
    with h5py.File(small_store, "r") as f:  # the callback replaced the commit to the file
        after = f["X_global"][()] if "X_global" in f else None
    assert (before is None and after is None) or np.array_equal(before, after)
