"""Apply a CaTune browser export (``catune-params-*.json``) to whole recordings.

The browser does not solve :func:`~nnfit.calcium.run_deconvolution`'s problem. It solves

.. math:: \\min_{s \\ge 0,\\, b} \\tfrac12 \\lVert y - K s - b \\rVert^2 + \\lambda G \\textstyle\\sum_t s_t,
   \\qquad G = \\textstyle\\sum_k h_k,

i.e. the exported slider value ``lambda`` is scaled by the kernel's DC gain, and a constant
baseline ``b`` is fitted alongside the spikes; for any ``s`` the best ``b`` is
``mean(y - K s)``, so it is profiled out and recomputed at every iteration. With
``filter_enabled`` the trace is first band-passed with a filter derived from the kernel
(:func:`bandpass_filter`). :func:`deconvolve_from_export` reproduces that, so what the user
saw in the browser is what they get for the whole recording.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from nnfit.calcium.fista import _fista_cell, kernel_recursion
from nnfit.calcium.kernel import build_kernel, check_kinetics, compute_lipschitz, tau_to_ar2
from nnfit.calcium.result import DeconvolutionResult
from nnfit.io.jsonfile import read_json_object
from nnfit.validate import as_float_array, check_int, check_real

__all__ = [
    "SUPPORTED_SCHEMAS",
    "ExportParams",
    "bandpass_filter",
    "deconvolve_from_export",
    "load_export_params",
    "solve_with_baseline",
]

SUPPORTED_SCHEMAS = ("1.1.0", "1.2.0")


@dataclass(frozen=True)
class ExportParams:
    """Parameters read from a CaTune browser export.

    Attributes
    ----------
    tau_rise, tau_decay : float
        Kernel time constants in seconds.
    lam : float
        The browser's slider value (before scaling by the kernel's DC gain).
    fs : float
        Sampling rate in Hz.
    filter_enabled : bool
        Whether the browser band-passed the traces before solving.
    schema_version : str
        "1.1.0" or "1.2.0".
    t_peak, fwhm : float or None
        Kernel peak time and width in seconds (schema 1.2.0, optional).
    ar2 : dict
        ``ar2_coefficients`` as exported (may be empty).
    metadata : dict
        ``metadata`` as exported (source file name, cell and sample counts).
    """

    tau_rise: float
    tau_decay: float
    lam: float
    fs: float
    filter_enabled: bool = False
    schema_version: str = "1.2.0"
    t_peak: float | None = None
    fwhm: float | None = None
    ar2: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def _field(container: dict, key: str, where: str, path: Path) -> Any:
    if key not in container:
        raise ValueError(f"{path}: missing field {where}{key}")
    return container[key]


def _real(container: dict, key: str, where: str, path: Path, **bounds: Any) -> float:
    value = _field(container, key, where, path)
    try:
        return check_real(f"{where}{key}", value, **bounds)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_export_params(path: str | os.PathLike[str]) -> ExportParams:
    """Read and check a CaTune browser export, schema 1.1.0 or 1.2.0.

    Required: ``schema_version``, ``parameters.{tau_rise_s, tau_decay_s, lambda,
    sampling_rate_hz}``; optional: ``parameters.filter_enabled`` (default false),
    ``parameters.{t_peak_s, fwhm_s}`` (1.2.0), ``ar2_coefficients.{g1, g2, decayRoot, riseRoot,
    dt}`` (checked against the time constants), ``metadata``. A missing or invalid field
    raises ``ValueError`` naming the file and the field.

    Parameters
    ----------
    path : path-like
        The exported ``catune-params-YYYY-MM-DD.json``.

    Returns
    -------
    ExportParams

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "catune-params-2025-01-01.json"
    >>> _ = p.write_text(json.dumps({"schema_version": "1.1.0", "parameters": {
    ...     "tau_rise_s": 0.05, "tau_decay_s": 0.5, "lambda": 0.01,
    ...     "sampling_rate_hz": 30.0, "filter_enabled": False}}))
    >>> params = load_export_params(p)
    >>> params.tau_decay, params.lam, params.filter_enabled
    (0.5, 0.01, False)
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"export file not found: {p}")
    data = read_json_object(p)
    version = _field(data, "schema_version", "", p)
    if version not in SUPPORTED_SCHEMAS:
        raise ValueError(
            f"{p}: schema_version {version!r} is not supported (expected one of "
            f"{', '.join(SUPPORTED_SCHEMAS)})"
        )
    params = _field(data, "parameters", "", p)
    if not isinstance(params, dict):
        raise ValueError(f"{p}: field parameters must be an object")
    w = "parameters."
    tau_rise = _real(params, "tau_rise_s", w, p, low=0.0, low_inclusive=False)
    tau_decay = _real(params, "tau_decay_s", w, p, low=0.0, low_inclusive=False)
    lam = _real(params, "lambda", w, p, low=0.0)
    fs = _real(params, "sampling_rate_hz", w, p, low=0.0, low_inclusive=False)
    if tau_rise >= tau_decay:
        raise ValueError(
            f"{p}: parameters.tau_rise_s ({tau_rise:g}) must be smaller than "
            f"parameters.tau_decay_s ({tau_decay:g})"
        )
    filter_enabled = params.get("filter_enabled", False)
    if not isinstance(filter_enabled, bool):
        raise ValueError(
            f"{p}: parameters.filter_enabled must be true or false; got {filter_enabled!r}"
        )
    extras: dict[str, float | None] = {"t_peak_s": None, "fwhm_s": None}
    for key in extras:
        if key in params and params[key] is not None:
            extras[key] = _real(params, key, w, p, low=0.0, low_inclusive=False)
    ar2 = data.get("ar2_coefficients") or {}
    if not isinstance(ar2, dict):
        raise ValueError(f"{p}: field ar2_coefficients must be an object")
    if ar2:
        g1, g2, d, r = tau_to_ar2(tau_rise, tau_decay, fs)
        expected = {"g1": g1, "g2": g2, "decayRoot": d, "riseRoot": r, "dt": 1.0 / fs}
        for key, want in expected.items():
            if key in ar2:
                got = _real(ar2, key, "ar2_coefficients.", p)
                if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                    raise ValueError(
                        f"{p}: ar2_coefficients.{key} = {got!r} does not match the time "
                        f"constants and sampling rate in parameters (expected {want!r})"
                    )
    meta = data.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{p}: field metadata must be an object")
    for key in ("num_cells", "num_timepoints"):
        if key in meta:
            try:
                check_int(f"metadata.{key}", meta[key], low=0)
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from exc
    return ExportParams(
        tau_rise=tau_rise,
        tau_decay=tau_decay,
        lam=lam,
        fs=fs,
        filter_enabled=filter_enabled,
        schema_version=version,
        t_peak=extras["t_peak_s"],
        fwhm=extras["fwhm_s"],
        ar2=dict(ar2),
        metadata=dict(meta),
    )


def bandpass_gain(n: int, tau_rise: float, tau_decay: float, fs: float) -> np.ndarray | None:
    """Gain of the browser's noise filter on the ``n // 2 + 1`` rfft bins, or None if it is off.

    High-pass corner ``f_hp = 1 / (2 pi 16 tau_decay)``, low-pass corner
    ``f_lp = min(4 / (2 pi tau_rise), fs / 2)``, raised-cosine ramps of half-width
    ``f_hp / 2`` and ``f_lp / 2`` around them. The filter is off (None) unless
    ``f_hp < f_lp`` and ``n >= 8``.

    Examples
    --------
    >>> g = bandpass_gain(1000, 0.05, 0.5, 30.0)
    >>> float(g[0]), float(g[100]), round(float(g[-1]), 3)  # the low-pass ramp reaches Nyquist
    (0.0, 1.0, 0.235)
    """
    f_hp = 1.0 / (2.0 * np.pi * tau_decay * 16.0)
    f_lp = min(4.0 / (2.0 * np.pi * tau_rise), fs / 2.0)
    if not (f_hp < f_lp and n >= 8):
        return None
    f = np.arange(n // 2 + 1) * fs / n
    w_hp, w_lp = f_hp / 2.0, f_lp / 2.0
    u_hp = np.clip((f - (f_hp - w_hp)) / (2.0 * w_hp), 0.0, 1.0)
    u_lp = np.clip((f - (f_lp - w_lp)) / (2.0 * w_lp), 0.0, 1.0)
    return 0.5 * (1.0 - np.cos(np.pi * u_hp)) * 0.5 * (1.0 + np.cos(np.pi * u_lp))


def bandpass_filter(traces: np.ndarray, tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """The browser's kernel-derived band-pass ("noise filter"), on each row of ``traces``.

    The filter multiplies the rfft of the whole trace by :func:`bandpass_gain`. It removes
    the mean and slow drift (below ``f_hp``) and noise faster than the rise (above ``f_lp``).
    Traces shorter than 8 samples, or kinetics with ``f_hp >= f_lp``, come back unchanged.

    Examples
    --------
    >>> y = 5.0 + np.sin(np.arange(600) * 2 * np.pi * 2.0 / 30.0)  # offset + 2 Hz
    >>> out = bandpass_filter(y, 0.05, 0.5, 30.0)
    >>> abs(float(out.mean())) < 1e-12, bool(np.allclose(out, y - 5.0))
    (True, True)
    """
    arr = as_float_array("traces", traces, ndim=(1, 2))
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    n = arr.shape[-1]
    gain = bandpass_gain(n, tau_rise, tau_decay, fs)
    if gain is None:
        return arr.copy()
    return np.fft.irfft(np.fft.rfft(arr, axis=-1) * gain, n=n, axis=-1)


@numba.njit(cache=True, nogil=True, parallel=True)
def _profiled_batch(
    traces,
    out,
    recon,
    iters,
    conv,
    objs,
    base,
    A,
    d,
    r,
    dK,
    rK,
    K,
    step,
    thr,
    lam_eff,
    tol,
    mi,
    profile,
):  # pragma: no cover - compiled
    for c in numba.prange(traces.shape[0]):
        it, cv, ob, b = _fista_cell(
            traces[c], out[c], recon[c], A, d, r, dK, rK, K, step, thr, lam_eff, tol, mi, profile
        )
        iters[c] = it
        conv[c] = cv
        objs[c] = ob
        base[c] = b


def solve_with_baseline(
    traces: np.ndarray,
    fs: float,
    tau_rise: float,
    tau_decay: float,
    lam: float,
    *,
    tol: float = 1e-12,
    max_iter: int = 20000,
    fit_baseline: bool = True,
) -> tuple[np.ndarray, np.ndarray | float, DeconvolutionResult]:
    """Solve the browser's problem: ``min 0.5||y - K s - b||^2 + lam G sum(s)``, ``s >= 0``.

    ``G = sum(h)`` scales ``lam`` (the slider value) by the kernel's DC gain; the constant
    baseline ``b = mean(y - K s)`` is profiled out at every iteration (with
    ``fit_baseline=False`` it is fixed at 0, as the browser does on band-passed traces). FISTA with adaptive
    restart from ``s = 0`` and step ``1 / L``; a cell stops once the relative objective change
    is below ``tol`` (after iteration 5) or at ``max_iter``.

    Returns
    -------
    spikes : numpy.ndarray
        Shape of ``traces``, non-negative.
    baseline : numpy.ndarray or float
        ``b`` per cell (a float for 1-D input).
    info : DeconvolutionResult
        ``reconvolution`` (``K s + b``), per-cell iterations, converged flags, objectives,
        ``lam`` the weight ``lam G`` of ``sum(s)``, ``time_s``; ``params`` holds the kinetics
        used (``filter_enabled=False``).

    Examples
    --------
    >>> h = build_kernel(0.05, 0.5, 30.0)
    >>> s = np.zeros(600); s[[100, 300]] = 1.0
    >>> y = np.convolve(s, h)[:600] + 2.0
    >>> spikes, b, info = solve_with_baseline(y, 30.0, 0.05, 0.5, 1e-4)
    >>> round(float(b), 2), sorted(np.argsort(spikes)[-2:].tolist())
    (2.0, [100, 300])
    """
    start = time.perf_counter()
    arr = as_float_array("traces", traces, ndim=(1, 2))
    tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
    lam = check_real("lam", lam, low=0.0)
    tol = check_real("tol", tol, low=0.0, low_inclusive=False)
    max_iter = check_int("max_iter", max_iter, low=1)
    y = np.ascontiguousarray(np.atleast_2d(arr))
    kernel = build_kernel(tau_rise, tau_decay, fs)
    lam_eff = lam * float(kernel.sum())
    step = 1.0 / compute_lipschitz(kernel)
    A, d, r, K = kernel_recursion(tau_rise, tau_decay, fs)
    c = y.shape[0]
    out, recon = np.zeros_like(y), np.zeros_like(y)
    iters, conv = np.zeros(c, dtype=np.int64), np.zeros(c, dtype=np.bool_)
    objs, base = np.zeros(c), np.zeros(c)
    _profiled_batch(
        y,
        out,
        recon,
        iters,
        conv,
        objs,
        base,
        A,
        d,
        r,
        d**K,
        r**K,
        K,
        step,
        step * lam_eff,
        lam_eff,
        tol,
        max_iter,
        bool(fit_baseline),
    )
    params = ExportParams(tau_rise=tau_rise, tau_decay=tau_decay, lam=lam, fs=fs)
    baseline = np.broadcast_to(base[:, None], y.shape)
    nan = np.full(c, np.nan)
    info = DeconvolutionResult(
        spikes=out[0] if arr.ndim == 1 else out,
        calcium=(recon - baseline)[0] if arr.ndim == 1 else recon - baseline,
        baseline=baseline[0] if arr.ndim == 1 else baseline,
        lam=np.full(c, lam_eff),
        objective=objs,
        gap=nan,
        kkt=nan.copy(),
        iterations=iters,
        converged=conv,
        baseline_kind=["constant" if fit_baseline else "none"] * c,
        tau_rise=tau_rise,
        tau_decay=tau_decay,
        fs=fs,
        noise=nan.copy(),
        time_s=time.perf_counter() - start,
        params=params,
    )
    if arr.ndim == 1:
        return out[0], float(base[0]), info
    return out, base, info


def deconvolve_from_export(
    traces: np.ndarray,
    params_path: str | os.PathLike[str] | ExportParams,
    *,
    tol: float = 1e-12,
    max_iter: int = 20000,
    return_info: bool = False,
) -> (
    tuple[np.ndarray, np.ndarray | float]
    | tuple[np.ndarray, np.ndarray | float, DeconvolutionResult]
):
    """Apply a CaTune browser export to a whole recording, as the browser solves it.

    Differs from :func:`~nnfit.calcium.run_deconvolution` (catune's problem) in three ways:
    the exported ``lambda`` is multiplied by the kernel's DC gain ``G = sum(h)``; a constant
    baseline is fitted with the spikes (so an offset or a non-zero resting fluorescence is
    not explained by spikes); and with ``filter_enabled`` the traces are first band-passed
    by :func:`bandpass_filter`, after which, like the browser's compiled solver, no baseline
    is fitted (the filter has removed the constant; the returned baseline is 0). The iteration runs to a tighter tol than catune's
    default, so the result is the optimum the browser approaches rather than an early stop.

    Parameters
    ----------
    traces : array_like
        ``(n_timepoints,)`` or ``(n_cells, n_timepoints)``, real, finite.
    params_path : path-like or ExportParams
        The browser's ``catune-params-*.json`` (or parameters already loaded).
    tol, max_iter : optional
        Stop rule per cell (relative objective change, iteration limit).
    return_info : bool, optional
        Also return a :class:`~nnfit.calcium.DeconvolutionResult` (``params`` the export
        applied).

    Returns
    -------
    spikes : numpy.ndarray
        Non-negative, the shape of ``traces``.
    baseline : numpy.ndarray or float
        Fitted constant per cell (0 with ``filter_enabled``, see above).
    info : DeconvolutionResult
        Only with ``return_info=True``.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "catune-params.json"
    >>> _ = p.write_text(json.dumps({"schema_version": "1.2.0", "parameters": {
    ...     "tau_rise_s": 0.05, "tau_decay_s": 0.5, "lambda": 1e-4,
    ...     "sampling_rate_hz": 30.0, "filter_enabled": False}}))
    >>> h = build_kernel(0.05, 0.5, 30.0)
    >>> s = np.zeros(600); s[200] = 1.0
    >>> spikes, baseline = deconvolve_from_export(np.convolve(s, h)[:600] + 1.5, p)
    >>> int(np.argmax(spikes)), round(float(baseline), 2)
    (200, 1.5)
    """
    start = time.perf_counter()
    params = (
        params_path if isinstance(params_path, ExportParams) else load_export_params(params_path)
    )
    arr = as_float_array("traces", traces, ndim=(1, 2))
    if params.filter_enabled:
        arr = bandpass_filter(arr, params.tau_rise, params.tau_decay, params.fs)
    # On band-passed traces (no constant left) the browser's solver fits no baseline.
    spikes, baseline, info = solve_with_baseline(
        arr,
        params.fs,
        params.tau_rise,
        params.tau_decay,
        params.lam,
        tol=tol,
        max_iter=max_iter,
        fit_baseline=not params.filter_enabled,
    )
    if return_info:
        info.params = params
        info.time_s = time.perf_counter() - start
        return spikes, baseline, info
    return spikes, baseline


def __getattr__(name: str) -> Any:
    if name == "ExportResult":
        warnings.warn(
            "ExportResult is now DeconvolutionResult (nnfit.calcium.DeconvolutionResult)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DeconvolutionResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
