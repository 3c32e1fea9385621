"""What a kernel with two decays would buy, measured with the kernel fitted to the true spikes.

The estimator's short decay (``docs/calcium/ground-truth.rst``) was reproduced on simulations
only by transients with a fast and a slow decay. Before anyone builds a two-decay model (a
solver for that kernel and a search over three time constants), this script measures its
ceiling on the four ground-truth datasets, with the kernel fitted from the true spike times
(an oracle: nothing here is available to a user).

Per dataset, on the recordings it scores (all, or every 4th where there are more than 40), all
frames:

- the double exponential fitted from the true spike times (``fit_kernel``: one amplitude and
  one slow baseline per recording), and its R^2;
- a kernel with one rise and two decays,
  ``h(u) ~ f exp(-u/tau_1) + (1 - f) exp(-u/tau_2) - exp(-u/tau_rise)`` (peak 1), fitted the
  same way (variable projection; ``tau_rise``, ``tau_1``, ``tau_2``, ``f`` and the delay
  shared), and its R^2;
- r of the true spikes (as ``bench/calcium_accuracy.py``: 40 ms bins, lag 0 / best lag within
  +-2 frames, mean over recordings) against the spikes deconvolved with each kernel: nnfit's
  estimate (``estimate_kinetics_pooled`` on all recordings), the fitted single kernel and the
  fitted two-decay kernel.

One solver for the three kernels, so that only the kernel differs:
``min 0.5 ||P (y - K s)||^2 + lam sum(s)`` over ``s >= 0``, ``K`` the kernel's convolution
(untruncated), ``P`` removing the slow cosines of ``fit_kernel``'s baseline, ``lam = LAM_Z sigma
||h||`` (nnfit's rule), solved to a certified optimum by
:func:`nnfit.calcium.deconvolve_two_decay` (the slow cosines as its baseline basis; the worst
relative duality gap is printed). Spikes are scored at the frame and at nnfit's time stamp for
each kernel's rise (``spike_time_offset``; for two decays with the slow one). A self-check
first: a simulated two-decay kernel is recovered by the fit.

Usage::

    .venv/bin/python bench/calcium_two_decay.py [--datasets NAME ...]
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from _record import recorded
from calcium_accuracy import DATASETS, load, rate_bins, score
from nnfit.calcium import TwoDecayKernel, deconvolve_two_decay
from nnfit.calcium.estimate import LAM_Z, estimate_kinetics_pooled, estimate_noise
from nnfit.calcium.kernel import spike_time_offset
from nnfit.calcium.kernel_fit import SLOW_S, _one_pole, _slow_basis, fit_kernel

MAX_RECORDINGS = 40  # more than this: every 4th recording is scored


def one_decay(tau_rise: float, tau_decay: float, fs: float) -> TwoDecayKernel:
    """The double exponential as a two-decay kernel (``f = 1``), untruncated."""
    return TwoDecayKernel(tau_rise, tau_decay, tau_decay, 1.0, fs)


def slow_projection(n: int, fs: float):
    """``v -> v - QQ'v`` (columns too), ``Q`` a basis of ``fit_kernel``'s slow baseline."""
    Q, _ = np.linalg.qr(_slow_basis(n, fs, SLOW_S))
    return lambda v: v - Q @ (Q.T @ v)


def deconvolve_one(args):
    """(r at the frame, r at the time stamp, relative gap) of one recording and kernel."""
    rec, kernel, offset = args
    y, fs = rec["y"], rec["fs"]
    h = kernel.samples(int(60 * fs))
    lam = LAM_Z * float(np.atleast_1d(estimate_noise(y, fs))[0]) * float(np.sqrt(h @ h))
    res = deconvolve_two_decay(y, kernel, lam, baseline=_slow_basis(y.size, fs, SLOW_S))
    return score(rec, res.spikes), score(rec, res.spikes, offset / fs), float(res.gap[0])


def fit_two_decay(recs: list[dict], fs: float, tau_rise: float, tau_decay: float) -> dict:
    """Two decays and a rise from the true spikes (shared shape, one amplitude per recording)."""
    data = []
    for r in recs:
        project = slow_projection(r["y"].size, fs)
        data.append((project(r["y"]), r["t"], r["spikes"], project))
    total = sum(float(d[0] @ d[0]) for d in data)

    def unpack(p):
        tr, t1, t2 = np.exp(p[:3])
        return tr, t1, t2, 1 / (1 + np.exp(-p[3])), p[4]

    def resid(p):
        tr, t1, t2, f, dl = unpack(p)
        out = []
        for yr, t, st, project in data:
            one = np.ones(st.size)
            x = (
                f * _one_pole(t, fs, st + dl, one, t1)
                + (1 - f) * _one_pole(t, fs, st + dl, one, t2)
                - _one_pole(t, fs, st + dl, one, tr)
            )
            x = project(x)
            xx = float(x @ x)  # 0 for a recording without spikes: nothing to scale
            out.append(yr - (x @ yr) / xx * x if xx > 0 else yr)
        return np.concatenate(out)

    starts = [
        np.array([np.log(max(tau_rise, 0.0011)), np.log(a * tau_decay), np.log(b * tau_decay),
                  np.log(f / (1 - f)), 0.0])
        for a in (0.3, 0.5) for b in (1.5, 3.0) for f in (0.5, 0.8)
    ]  # fmt: skip
    p0 = min(starts, key=lambda p: float(np.sum(resid(p) ** 2)))
    lo = [np.log(0.001), np.log(0.01), np.log(0.01), -8.0, -3 / fs]
    hi = [np.log(1.0), np.log(20.0), np.log(20.0), 8.0, 6 / fs]
    p0 = np.clip(p0, np.add(lo, 1e-6), np.subtract(hi, 1e-6))
    sol = optimize.least_squares(
        resid, p0, bounds=(lo, hi), diff_step=1e-3, max_nfev=80, x_scale=[1, 1, 1, 1, 1 / fs]
    )
    r = resid(sol.x)
    tr, t1, t2, f, dl = unpack(sol.x)
    if t1 > t2:
        t1, t2, f = t2, t1, 1 - f
    return {
        "tau_rise": tr,
        "tau_1": t1,
        "tau_2": t2,
        "f": f,
        "delay": dl,
        "r2": 1 - (r @ r) / total,
    }


def self_check(seed: int = 0) -> None:
    """The two-decay fit recovers a simulated kernel (the solver is tested in the suite)."""
    rng = np.random.default_rng(seed)
    fs, T = 60.0, 36_000
    truth = {"tau_rise": 0.02, "tau_1": 0.15, "tau_2": 1.2, "f": 0.7}
    t = np.arange(T) / fs
    spikes = np.sort(rng.uniform(0, T / fs, 1500))
    kernel = TwoDecayKernel(*truth.values(), fs)
    counts = np.bincount(np.searchsorted(t, spikes), minlength=T)[:T].astype(float)
    y = 1.0 + kernel.forward(counts) + 0.1 * rng.standard_normal(T)
    rec = {"y": y, "t": t, "spikes": np.ceil(spikes * fs) / fs}
    fit = fit_two_decay([rec], fs, 0.03, 0.5)
    err = max(abs(np.log(fit[k] / v)) for k, v in truth.items())
    print(f"# self-check: two-decay fit of a simulated kernel within {err:.1%} (log)")
    if err > 0.05:
        raise SystemExit(f"two-decay fit failed its simulation: {fit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS, metavar="NAME")
    a = ap.parse_args()
    self_check()
    rows = []
    # one BLAS thread per worker: threaded products of forked workers oversubscribe the cores
    with Pool(2, initializer=threadpool_limits, initargs=(1,)) as pool:
        for name in a.datasets:
            t0 = time.perf_counter()
            every = load(name, False)
            fs = float(np.median([r["fs"] for r in every]))
            tr_est, td_est = estimate_kinetics_pooled([r["y"] for r in every], fs)
            recs = every if len(every) <= MAX_RECORDINGS else every[::4]
            for r in recs:
                r["bins"] = rate_bins(r)
            one = fit_kernel(
                [(r["y"], r["t"], r["spikes"], np.ones(r["spikes"].size)) for r in recs], fs
            )
            two = fit_two_decay(recs, fs, one.tau_rise, one.tau_decay)
            kernels = {
                "estimate": one_decay(tr_est, td_est, fs),
                "fitted, one decay": one_decay(one.tau_rise, one.tau_decay, fs),
                "fitted, two decays": TwoDecayKernel(
                    two["tau_rise"], two["tau_1"], two["tau_2"], two["f"], fs
                ),
            }
            print(
                f"{name}: fitted one decay {one.tau_rise:.4f} / {one.tau_decay:.3f} s, R^2 "
                f"{one.r2:.3f}; two decays {two['tau_rise']:.4f} / {two['tau_1']:.3f} s "
                f"({two['f']:.0%}) + {two['tau_2']:.3f} s, delay {two['delay'] * 1e3:+.0f} ms, "
                f"R^2 {two['r2']:.3f}; estimate {tr_est:.4f} / {td_est:.3f} s",
                flush=True,
            )
            scores = {}
            for label, kernel in kernels.items():
                off = spike_time_offset(kernel.tau_rise, kernel.tau_decay2, fs)
                out = pool.map(deconvolve_one, [(r, kernel, off) for r in recs])
                frame = np.mean([o[0] for o in out], axis=0)
                stamped = np.mean([o[1] for o in out], axis=0)
                scores[label] = (frame, stamped)
                print(
                    f"{name} {label}: frame {frame[0]:.3f} / {frame[1]:.3f}, time stamps "
                    f"{stamped[0]:.3f} / {stamped[1]:.3f} (worst relative gap "
                    f"{max(o[2] for o in out):.1e})",
                    flush=True,
                )
            rows.append((name, len(recs), len(every), (tr_est, td_est), one, two, scores))
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(
        "\n| dataset | recordings | estimate | fitted, one decay (R^2) | fitted, two decays (R^2)"
        " | r: estimate | r: one decay | r: two decays |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, n, n_all, est, one, two, sc in rows:
        r = [f"{sc[k][1][0]:.3f} / {sc[k][1][1]:.3f}" for k in sc]
        print(
            f"| {name} | {n} of {n_all} | {est[0]:.4f} / {est[1]:.3f} s | "
            f"{one.tau_rise:.4f} / {one.tau_decay:.3f} s ({one.r2:.3f}) | "
            f"{two['tau_rise']:.4f} / {two['tau_1']:.3f} s ({two['f']:.0%}) + {two['tau_2']:.3f} s "
            f"({two['r2']:.3f}) | " + " | ".join(r) + " |"
        )
    return 0


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
