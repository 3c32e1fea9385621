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
#: the smallest lam solved with: a trace without noise (a constant ROI) gets lam = 0 from the
#: rule, and the interior point needs lam > 0 (its spikes are 0 either way)
LAM_FLOOR = 1e-12
#: smoothing of the drift refinement: Gaussian sigma = max(DRIFT_SMOOTH_TAU tau_decay, 1 s)
DRIFT_SMOOTH_TAU = 4.0


def _solve_rows(Y, coef, lams, hsq, centre, tol, max_iter, polish=True):
    """Solve the rows of ``Y`` (one or two traces, side by side: see
    :func:`nnfit.calcium._ipm.ipm_traces`); one (s, baseline, iterations, primal, gap, kkt) per
    row. ``polish=False``: no exact Newton step on the support (the certified iterate)."""
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    S = np.zeros_like(Y)
    info = np.empty((Y.shape[0], 5))
    # polish (exact Newton on the support) once the interior point is certified to tol:
    # earlier attempts were measured to fail and cost more than the last iteration they save
    ipm_traces(
        Y, coef.params(), np.asarray(lams, dtype=np.float64), hsq, bool(centre), float(tol),
        int(max_iter), S, info, float(tol) if polish else 0.0,
    )  # fmt: skip
    out = []
    for k in range(Y.shape[0]):
        it, primal, gap, kkt, base = info[k]
        rel = gap / primal if primal > 0 else 0.0
        out.append((S[k], float(base), int(it), float(primal), float(max(rel, 0.0)), float(kkt)))
    return out


def baseline_models(Y, kind, lams, noise, solve_rows, forward, tau_decay, fs, tol, drift_rounds):
    """The baseline models of ``kind`` around a solver: one (s, baseline array, kind, it, obj,
    gap, kkt) per row of ``Y``.

    ``solve_rows(Y, lams, centre, tol)`` gives one (s, b0, it, obj, gap, kkt) per row (``centre``:
    a constant fitted jointly), ``forward(s)`` the calcium ``K s``; ``tau_decay`` (the kernel's
    slowest decay) sets the drift's smoothing. ``"auto"`` solves with a constant and switches a
    row to ``"drift"`` where the slow part of its residual is more than noise; ``"drift"``
    alternates the solver with the smoothed residual, the final solve exact for the final curve.
    """
    L, T = Y.shape
    sigma = max(DRIFT_SMOOTH_TAU * tau_decay, 1.0) * fs
    out: list = [None] * L
    if kind != "drift":
        # Where the offset is fitted, each trace is solved about its mean: raw fluorescence
        # sits at 1e3-1e6 over transients of ~1, and the solver's sums over the trace (the
        # dual value, the residual) would lose that many digits, enough to stop the gap short
        # of 1e-9 or to certify a point that is not within it. The drift's rows below are
        # solved about their running baseline, which takes the offset out already.
        offset = Y.mean(axis=1) if kind != "none" else np.zeros(L)
        sols = solve_rows(Y - offset[:, None], lams, kind != "none", tol)
        for k, (s, b0, it, obj, gap, kkt) in enumerate(sols):
            b0 = b0 + offset[k]
            if kind == "auto":
                slow = ndimage.gaussian_filter1d(Y[k] - forward(s) - b0, sigma, mode="nearest")
                expected = noise[k] ** 2 / (2.0 * np.sqrt(np.pi) * sigma)
                # independent samples of the smoothed residual
                n_eff = T / (2.0 * np.sqrt(np.pi) * sigma)
                ratio = max(AUTO_DRIFT_RATIO, 1.0 + 3.0 * np.sqrt(2.0 / max(n_eff, 1e-9)))
                if not (n_eff < AUTO_MIN_SAMPLES or float(np.var(slow)) <= ratio * expected):
                    continue  # drift, below
            base = np.zeros(T) if kind == "none" else np.full(T, b0)
            out[k] = (s, base, "none" if kind == "none" else "constant", it, obj, gap, kkt)
    rows = [k for k in range(L) if out[k] is None]
    if not rows:
        return out
    D = Y[rows]
    slow = np.stack([running_baseline(D[j], fs, tau_decay) for j in range(len(rows))])
    for _ in range(drift_rounds):
        sols = solve_rows(D - slow, lams[rows], True, max(tol, 1e-6))
        for j, sol in enumerate(sols):
            slow[j] = ndimage.gaussian_filter1d(D[j] - forward(sol[0]), sigma, mode="nearest")
    sols = solve_rows(D - slow, lams[rows], True, tol)
    for j, (s, b0, it, obj, gap, kkt) in enumerate(sols):
        out[rows[j]] = (s, slow[j] + b0, "drift", it, obj, gap, kkt)
    return out


def _cells(Y, kind, lams, noise, coef, hsq, fs, tol, max_iter, drift_rounds, polish=True):
    """Deconvolve the rows of ``Y`` (one or two traces, each solve of the two side by side);
    returns one (s, baseline array, kind, it, obj, gap, kkt) per row."""
    T = Y.shape[1]

    def solve_rows(Yr, lr, centre, tol_r):
        return _solve_rows(Yr, coef, lr, hsq, centre, tol_r, max_iter, polish)

    def forward(s):
        Ks = np.empty(T)
        _forward(s, *coef.params(), Ks)
        return Ks

    return baseline_models(
        Y, kind, lams, noise, solve_rows, forward, coef.tau_decay, fs, tol, drift_rounds
    )


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
    polish: bool = True,
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
    polish : bool
        End with the exact Newton step on the support where it certifies (the optimum to
        rounding). ``False`` skips it: the answer is the interior-point iterate certified to
        ``tol``, cheaper where the step fails to certify (most of the decay search's solves at
        120 Hz, where its conjugate-gradient rounds cost more than the iterations).

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
    lams = np.maximum(np.asarray(lam, dtype=float), LAM_FLOOR)

    # traces in pairs where every worker still gets one: a pair's sweeps run interleaved on
    # one core (the answers are those of one trace alone, bit for bit), but a pair takes longer
    # than one trace, so with cells for fewer than two per worker each goes alone
    workers = (os.cpu_count() or 1) if n_jobs == -1 else max(n_jobs, 1)
    size = 2 if n_cells >= 2 * workers else 1

    def work(i: int):
        rows = slice(i, min(i + size, n_cells))
        return _cells(
            x2[rows], baseline, lams[rows], noise[rows], coef, hsq, fs, tol, max_iter, drift_rounds,
            polish,
        )  # fmt: skip

    starts = range(0, n_cells, size)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            out = [o for part in pool.map(work, starts) for o in part]
    else:
        out = [o for i in starts for o in work(i)]
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
