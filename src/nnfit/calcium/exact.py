"""The certified solve behind ``deconvolve``: CaTune's objective to the optimum, O(T) per iteration.

For each trace ``y`` this minimises exactly ``run_deconvolution``'s objective ::

    0.5 || y - b - K s ||^2 + lam ||s||_1,   s >= 0

with ``K`` the truncated kernel of :func:`build_kernel` and a baseline ``b``:

- ``"none"``: ``b = 0`` (CaTune's own problem);
- ``"constant"``: one offset per trace, estimated jointly (exactly, inside the optimisation);
- ``"drift"``: a slow curve plus a joint offset. The curve starts from a robust running estimate
  (:func:`nnfit.calcium.baseline.running_baseline`) and is refined by alternating with the solver
  (``b <- smooth(y - K s)``, a Gaussian of ``max(4 tau_decay, 1 s)``); the final solve is exact for
  the final curve;
- ``"auto"``: solves with ``"constant"``, and switches to ``"drift"`` where the smoothed residual
  holds clearly more than noise (variance ratio above ``AUTO_DRIFT_RATIO``, or above three standard
  errors of the variance estimate) on a trace long enough to tell (``AUTO_MIN_SAMPLES``).

The solver is a primal-dual interior-point method (Mehrotra predictor-corrector). Its Newton
systems are solved in O(T) through the kernel's AR(2) structure (see :mod:`nnfit.calcium._ipm`),
its residuals use the exact truncated kernel (:mod:`nnfit.calcium.ar2`), and it stops on a
certificate: the relative duality gap ``(F(s) - D(u)) / F(s) <= tol`` with ``u`` a feasible dual
point built from the residual, which proves ``F(s) - F* <= tol F(s)``. The gap and the largest
violation of the optimality conditions (``kkt``, in units of ``lam``) are reported per cell.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from nnfit.calcium._ipm import ipm_traces
from nnfit.calcium.ar2 import AR2Coefficients, AR2Convolution, _forward
from nnfit.calcium.baseline import running_baseline
from nnfit.calcium.result import DeconvolutionResult

BASELINES = ("auto", "none", "constant", "drift")
#: "auto" picks "drift" when the variance of the smoothed residual of the constant-baseline fit
#: exceeds this many times what white noise of the estimated level would give (flat simulated
#: baselines give 0.3-1.5, a drift of amplitude 0.5 gives 4-30; see README.md, "The exact optimum at OASIS speed")
AUTO_DRIFT_RATIO = 3.0
#: ... and only on traces long enough for that variance to mean something (about 18 smoothing
#: widths; a drift slower than the trace is a constant to it anyway)
AUTO_MIN_SAMPLES = 5.0
#: smoothing of the drift refinement: Gaussian sigma = max(DRIFT_SMOOTH_TAU tau_decay, 1 s)
DRIFT_SMOOTH_TAU = 4.0


def _solve_rows(Y, coef, lams, hsq, centre, tol, max_iter):
    """Solve the rows of ``Y`` (one or two traces, side by side); one
    (s, baseline, iterations, primal, gap, kkt) per row."""
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    S = np.zeros_like(Y)
    info = np.empty((Y.shape[0], 5))
    # polish (exact Newton on the support) once the interior point is certified to tol:
    # earlier attempts were measured to fail and cost more than the last iteration they save
    ipm_traces(
        Y,
        coef.params(),
        np.asarray(lams, dtype=np.float64),
        hsq,
        bool(centre),
        float(tol),
        int(max_iter),
        S,
        info,
        float(tol),
    )
    out = []
    for k in range(Y.shape[0]):
        it, primal, gap, kkt, base = info[k]
        rel = gap / primal if primal > 0 else 0.0
        out.append((S[k], float(base), int(it), float(primal), float(max(rel, 0.0)), float(kkt)))
    return out


def _solve_one(y, coef, lam, hsq, centre, tol, max_iter):
    return _solve_rows(y[None, :], coef, [lam], hsq, centre, tol, max_iter)[0]


def _cell(y, kind, lam, noise, coef, hsq, fs, tol, max_iter, drift_rounds):
    """Deconvolve one trace; returns (s, baseline array, kind, it, obj, gap, kkt)."""
    T = y.shape[0]
    sigma = max(DRIFT_SMOOTH_TAU * coef.tau_decay, 1.0) * fs
    if kind == "auto":
        # constant first; drift if the slow part of the residual is more than noise
        s, b0, it, obj, gap, kkt = _solve_one(y, coef, lam, hsq, True, tol, max_iter)
        Ks = np.empty(T)
        _forward(s, *coef.params(), Ks)
        slow = ndimage.gaussian_filter1d(y - Ks - b0, sigma, mode="nearest")
        expected = noise**2 / (2.0 * np.sqrt(np.pi) * sigma)
        n_eff = T / (2.0 * np.sqrt(np.pi) * sigma)  # independent samples of the smoothed residual
        ratio = max(AUTO_DRIFT_RATIO, 1.0 + 3.0 * np.sqrt(2.0 / max(n_eff, 1e-9)))
        if n_eff < AUTO_MIN_SAMPLES or float(np.var(slow)) <= ratio * expected:
            return s, np.full(T, b0), "constant", it, obj, gap, kkt
        kind = "drift"
    if kind == "none":
        s, b0, it, obj, gap, kkt = _solve_one(y, coef, lam, hsq, False, tol, max_iter)
        return s, np.zeros(T), kind, it, obj, gap, kkt
    if kind == "constant":
        s, b0, it, obj, gap, kkt = _solve_one(y, coef, lam, hsq, True, tol, max_iter)
        return s, np.full(T, b0), kind, it, obj, gap, kkt
    # drift
    slow = running_baseline(y, fs, coef.tau_decay)
    op_params = coef.params()
    Ks = np.empty(T)
    for _ in range(drift_rounds):
        s, b0, *_ = _solve_one(y - slow, coef, lam, hsq, True, max(tol, 1e-6), max_iter)
        _forward(s, *op_params, Ks)
        slow = ndimage.gaussian_filter1d(y - Ks, sigma, mode="nearest")
    s, b0, it, obj, gap, kkt = _solve_one(y - slow, coef, lam, hsq, True, tol, max_iter)
    return s, slow + b0, kind, it, obj, gap, kkt


def solve_exact(
    traces: np.ndarray,
    fs: float,
    tau_rise: float,
    tau_decay: float,
    lam: np.ndarray,
    baseline: str = "constant",
    *,
    noise: np.ndarray | None = None,
    tol: float = 1e-9,
    max_iter: int = 100,
    n_jobs: int = 1,
    drift_rounds: int = 2,
) -> DeconvolutionResult:
    """The certified solve for given kinetics and ``lam``: what :func:`nnfit.calcium.deconvolve`
    runs once it has every parameter.

    Parameters
    ----------
    traces : numpy.ndarray
        ``(cells, T)`` float64, finite, ``T >= 8``.
    fs, tau_rise, tau_decay : float
        Checked kinetics (:func:`nnfit.calcium.kernel.check_kinetics`).
    lam : numpy.ndarray
        ``(cells,)`` sparsity weights, > 0.
    baseline : {"auto", "none", "constant", "drift"}
        Baseline model (module docstring).
    noise : numpy.ndarray, optional
        ``(cells,)`` noise levels; needed by ``"auto"``, reported otherwise (NaN if absent).
    tol, max_iter, n_jobs, drift_rounds
        As in :func:`nnfit.calcium.deconvolve`.

    Returns
    -------
    DeconvolutionResult
        Per-cell arrays; 2-D spikes, calcium and baseline.
    """
    start = time.perf_counter()
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
    x2 = np.ascontiguousarray(traces, dtype=np.float64)
    n_cells, T = x2.shape
    if noise is None:
        if baseline == "auto":
            raise ValueError("baseline='auto' needs the noise level of each trace")
        noise = np.full(n_cells, np.nan)
    coef = AR2Coefficients(tau_rise, tau_decay, fs)
    h = coef.kernel()
    hsq = float(h @ h)
    lams = np.maximum(np.asarray(lam, dtype=float), 1e-12)

    def work(i: int):
        return _cell(x2[i], baseline, lams[i], noise[i], coef, hsq, fs, tol, max_iter, drift_rounds)

    workers = (os.cpu_count() or 1) if n_jobs == -1 else max(n_jobs, 1)
    if workers > 1 and n_cells > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(work, range(n_cells)))
    else:
        out = [work(i) for i in range(n_cells)]
    spikes = np.stack([o[0] for o in out])
    gap = np.array([o[5] for o in out])
    return DeconvolutionResult(
        spikes=spikes,
        calcium=AR2Convolution(T, tau_rise, tau_decay, fs, n_cells=n_cells).forward(spikes),
        baseline=np.stack([o[1] for o in out]),
        lam=lams,
        objective=np.array([o[4] for o in out]),
        gap=gap,
        kkt=np.array([o[6] for o in out]),
        iterations=np.array([o[3] for o in out]),
        converged=gap <= tol,
        baseline_kind=[o[2] for o in out],
        tau_rise=tau_rise,
        tau_decay=tau_decay,
        fs=fs,
        noise=noise,
        time_s=time.perf_counter() - start,
    )
