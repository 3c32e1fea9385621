"""Browser exports: parameter files, the band-pass filter and the browser's solver vs calab."""

from __future__ import annotations

import json

import calab
import numpy as np
import pytest

from nnfit.calcium import (
    bandpass_filter,
    build_kernel,
    deconvolve_from_export,
    load_export_params,
    run_deconvolution,
    simulate_recording,
    solve_with_baseline,
    tau_to_ar2,
)
from nnfit.calcium.ar2 import AR2Convolution


def write_export(
    path,
    *,
    version="1.2.0",
    tau_rise=0.05,
    tau_decay=0.5,
    lam=0.02,
    fs=30.0,
    filter_enabled=False,
    drop=None,
    **extra_params,
):
    try:
        g1, g2, d, r = tau_to_ar2(tau_rise, tau_decay, fs)
        ar2 = {"g1": g1, "g2": g2, "decayRoot": d, "riseRoot": r, "dt": 1 / fs}
    except ValueError:  # deliberately bad parameters: no coefficients to export
        ar2 = {}
    params = {
        "tau_rise_s": tau_rise,
        "tau_decay_s": tau_decay,
        "lambda": lam,
        "sampling_rate_hz": fs,
        "filter_enabled": filter_enabled,
        **extra_params,
    }
    data = {
        "schema_version": version,
        "parameters": params,
        "ar2_coefficients": ar2,
        "metadata": {"source_filename": "rec.npy", "num_cells": 4, "num_timepoints": 3000},
    }
    if drop:
        section, _, key = drop.partition(".")
        if key:
            del data[section][key]
        else:
            del data[section]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("version", ["1.1.0", "1.2.0"])
def test_load_export_params_both_schemas(tmp_path, version):
    extra = {"t_peak_s": 0.12, "fwhm_s": 0.6} if version == "1.2.0" else {}
    p = write_export(tmp_path / "catune-params-2025-01-01.json", version=version, **extra)
    params = load_export_params(p)
    assert (params.tau_rise, params.tau_decay, params.lam, params.fs) == (0.05, 0.5, 0.02, 30.0)
    assert params.filter_enabled is False and params.schema_version == version
    assert params.metadata["num_cells"] == 4
    if version == "1.2.0":
        assert (params.t_peak, params.fwhm) == (0.12, 0.6)
    # calab reads the same file the same way.
    theirs = calab.load_export_params(p)
    assert (theirs["tau_rise"], theirs["lambda_"], theirs["fs"]) == (0.05, 0.02, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": "parameters.tau_decay_s"}, "missing field parameters.tau_decay_s"),
        ({"drop": "parameters.lambda"}, "missing field parameters.lambda"),
        ({"drop": "parameters"}, "missing field parameters"),
        ({"drop": "schema_version"}, "missing field schema_version"),
        ({"version": "1.0.0"}, "schema_version '1.0.0' is not supported"),
        ({"lam": -1.0}, "parameters.lambda must be >= 0"),
        ({"fs": "thirty"}, "parameters.sampling_rate_hz must be a real number"),
        ({"tau_rise": 0.6}, "parameters.tau_rise_s .* must be smaller than"),
        ({"filter_enabled": "yes"}, "parameters.filter_enabled must be true or false"),
        ({"fwhm_s": -2.0}, "parameters.fwhm_s must be > 0"),
    ],
)
def test_bad_export_names_the_field(tmp_path, kwargs, message):
    p = write_export(tmp_path / "params.json", **kwargs)
    with pytest.raises(ValueError, match=message):
        load_export_params(p)


def test_export_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_export_params(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        load_export_params(tmp_path / "bad.json")
    p = write_export(tmp_path / "p.json")
    data = json.loads(p.read_text())
    data["ar2_coefficients"]["g1"] = 1.5
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"ar2_coefficients.g1 = 1.5 does not match"):
        load_export_params(p)


@pytest.mark.parametrize(("tr", "td", "fs", "n"), [(0.05, 0.5, 30.0, 3000), (0.01, 0.2, 100.0, 97)])
def test_bandpass_matches_calab(tr, td, fs, n, rng):
    y = rng.standard_normal((2, n)).cumsum(axis=1) + 3.0
    ours = bandpass_filter(y, tr, td, fs)
    for i in range(2):
        ref = calab.bandpass_filter(y[i], tr, td, fs)  # calab filters in float32
        np.testing.assert_allclose(ours[i], ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    assert np.array_equal(bandpass_filter(y[:, :7], tr, td, fs), y[:, :7])  # n < 8: off


def test_baseline_solver_recovers_offset_and_scales_lambda():
    rec = simulate_recording(3, 2000, noise=0.05, baseline=4.0, seed=2)
    spikes, base, info = solve_with_baseline(rec.traces, 30.0, 0.05, 0.5, 0.01)
    assert np.all(np.abs(base - 4.0) < 0.05) and np.all(info.converged)
    np.testing.assert_allclose(
        info.reconvolution,
        AR2Convolution(2000, 0.05, 0.5, 30.0, n_cells=3).forward(spikes) + base[:, None],
        rtol=1e-12,
    )
    # Optimality (KKT) of the profiled problem: gradient >= -lam G everywhere, = on the support.
    g = float(build_kernel(0.05, 0.5, 30.0).sum())
    op = AR2Convolution(2000, 0.05, 0.5, 30.0, n_cells=3)
    grad = op.adjoint(info.reconvolution - rec.traces)
    assert np.all(grad >= -0.01 * g * (1 + 1e-3))  # to the stop rule's accuracy
    on = spikes > 1e-3
    np.testing.assert_allclose(grad[on], -0.01 * g, rtol=1e-3)
    # Without the baseline term (catune's problem) the offset is explained by spikes instead.
    plain = run_deconvolution(rec.traces, 30.0, 0.05, 0.5, 0.01)
    assert plain.sum() > 2 * spikes.sum()


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def calab_browser_solver(trace, tau_rise, tau_decay, lam, fs, filter_enabled):
    """calab's compiled solver class, the browser's solver, driven the way the browser does."""
    from calab._native import _solver

    solver = _solver.PySolver()
    solver.set_params(tau_rise, tau_decay, lam, fs)
    solver.set_trace(np.ascontiguousarray(trace, dtype=np.float32))
    if filter_enabled:
        solver.set_filter_enabled(True)
        assert solver.apply_filter()
    while not solver.step_batch(100) and solver.iteration_count() < 20000:
        pass
    return np.asarray(solver.get_solution(), dtype=np.float64), float(solver.get_baseline())


@pytest.mark.parametrize(
    ("lam", "filter_enabled"), [(0.005, False), (0.05, False), (0.2, False), (0.02, True)]
)
def test_export_solver_matches_calab_compiled_browser_solver(tmp_path, lam, filter_enabled):
    rec = simulate_recording(3, 3000, noise=0.1, rate_hz=0.6, seed=8)
    traces = rec.traces + np.array([[0.0], [2.0], [-1.0]])  # constant baselines
    p = write_export(tmp_path / "params.json", lam=lam, filter_enabled=filter_enabled)
    spikes, base = deconvolve_from_export(traces, p)
    for i in range(3):
        ref, ref_base = calab_browser_solver(traces[i], 0.05, 0.5, lam, 30.0, filter_enabled)
        assert _corr(spikes[i], ref) >= 0.998
        if not filter_enabled:
            assert abs(base[i] - ref_base) < 0.01
        else:
            assert base[i] == 0.0


# calab's Python-level deconvolve_from_export goes through its deconvolve_single wrapper,
# which is not exactly the browser's solver: with filter_enabled it band-passes and then still
# fits a baseline (the compiled solver with its filter flag fits none, which is what we do;
# see the test above), and for larger lambda its stop rule leaves it further from the
# optimum. The API-level agreement is therefore checked without the filter, lambda <= 0.05.
@pytest.mark.parametrize(("lam", "filter_enabled"), [(0.01, False), (0.05, False)])
def test_deconvolve_from_export_agrees_with_calab(tmp_path, lam, filter_enabled):
    rec = simulate_recording(4, 3000, noise=0.1, rate_hz=0.6, seed=7)
    traces = rec.traces + np.array([[0.0], [1.0], [5.0], [-2.0]])  # constant baselines
    p = write_export(tmp_path / "params.json", lam=lam, filter_enabled=filter_enabled)
    spikes, base, _info = deconvolve_from_export(traces, p, return_info=True)
    ref = calab.deconvolve_from_export(traces, p, return_full=True)
    corr = [_corr(spikes[i], ref.activity[i]) for i in range(4)]
    assert min(corr) >= 0.99, corr
    if not filter_enabled:
        np.testing.assert_allclose(base, ref.baseline, atol=0.05)
        np.testing.assert_allclose(base, [0.0, 1.0, 5.0, -2.0], atol=0.1)
    # 1-D input gives the same as the corresponding row.
    s1, b1 = deconvolve_from_export(traces[2], p)
    np.testing.assert_allclose(s1, spikes[2], rtol=0, atol=1e-12 * spikes[2].max())
    assert isinstance(b1, float)


def test_deconvolve_from_export_bad_traces(tmp_path):
    p = write_export(tmp_path / "params.json")
    with pytest.raises(ValueError, match="traces contains 1 NaN/Inf"):
        deconvolve_from_export(np.array([1.0, np.nan, 2.0]), p)
    with pytest.raises(ValueError, match="traces must be 1-D or 2-D"):
        deconvolve_from_export(np.zeros((2, 2, 2)), p)
