"""One result type for every calcium solver: fields agree with independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.calcium import (
    DeconvolutionResult,
    ExportParams,
    build_kernel,
    deconvolve,
    deconvolve_from_export,
    run_deconvolution,
    simulate_recording,
)

FS, TR, TD = 30.0, 0.05, 0.5


def _dense(spikes: np.ndarray) -> np.ndarray:
    """``K s`` by direct convolution with the truncated kernel (row by row)."""
    h = build_kernel(TR, TD, FS)
    s2 = np.atleast_2d(spikes)
    out = np.stack([np.convolve(row, h)[: s2.shape[1]] for row in s2])
    return out[0] if spikes.ndim == 1 else out


@pytest.fixture(scope="module")
def traces() -> np.ndarray:
    return simulate_recording(3, 800, noise=0.05, baseline=1.5, seed=4).traces


def _check(res: DeconvolutionResult, spikes: np.ndarray, n_cells: int) -> None:
    assert isinstance(res, DeconvolutionResult)
    assert res.spikes is spikes or np.array_equal(res.spikes, spikes)
    np.testing.assert_allclose(res.calcium, _dense(spikes), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.reconvolution, res.calcium + res.baseline, rtol=0, atol=0)
    for name in ("lam", "objective", "gap", "kkt", "iterations", "converged", "noise"):
        assert getattr(res, name).shape == (n_cells,), name
    assert len(res.baseline_kind) == n_cells
    assert (res.tau_rise, res.tau_decay, res.fs) == (TR, TD, FS)
    assert res.time_s > 0


def test_fista_info_is_a_deconvolution_result(traces):
    spikes, res = run_deconvolution(traces, FS, TR, TD, 0.1, return_info=True)
    _check(res, spikes, 3)
    assert np.all(res.baseline == 0) and res.baseline_kind == ["none"] * 3
    # the objective it reports is catune's, recomputed here from the returned spikes
    obj = 0.5 * ((_dense(spikes) - traces) ** 2).sum(axis=1) + 0.1 * spikes.sum(axis=1)
    np.testing.assert_allclose(res.objective, obj, rtol=1e-10)
    assert np.all(np.isnan(res.gap)) and res.params is None
    one, res1 = run_deconvolution(traces[1], FS, TR, TD, 0.1, return_info=True)
    _check(res1, one, 1)
    np.testing.assert_array_equal(one, spikes[1])


def test_export_info_is_a_deconvolution_result(traces):
    params = ExportParams(TR, TD, 0.01, FS)
    spikes, base, res = deconvolve_from_export(traces, params, return_info=True)
    _check(res, spikes, 3)
    np.testing.assert_allclose(res.baseline, np.broadcast_to(base[:, None], traces.shape))
    assert res.params == params and res.baseline_kind == ["constant"] * 3
    # lam is the weight of sum(s) in the browser's objective: the slider value times sum(h)
    np.testing.assert_allclose(res.lam, 0.01 * build_kernel(TR, TD, FS).sum())


def test_exact_result_and_blocks_concatenate(traces):
    res = deconvolve(traces, FS, TR, TD, lam=0.1, baseline="constant")
    _check(res, res.spikes, 3)
    parts = [
        deconvolve(traces[i : i + 1], FS, TR, TD, lam=0.1, baseline="constant") for i in (0, 1, 2)
    ]
    joined = DeconvolutionResult.concatenate(parts)
    np.testing.assert_allclose(joined.spikes, res.spikes, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(joined.iterations, res.iterations)
    assert joined.baseline_kind == res.baseline_kind
    assert joined.time_s == pytest.approx(sum(p.time_s for p in parts))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("nnfit.calcium", "DeconvolutionInfo"),
        ("nnfit.calcium", "ExportResult"),
        ("nnfit.calcium.fista", "DeconvolutionInfo"),
        ("nnfit.calcium.browser_solver", "ExportResult"),
    ],
)
def test_merged_names_still_import_with_a_warning(module, name):
    import importlib

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match="DeconvolutionResult"):
        assert getattr(mod, name) is DeconvolutionResult
