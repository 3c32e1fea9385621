"""HyperCube build benchmark: time per (s, c) pair, nnfit vs a plain dense-R_T build.

Both builds compute the same tiles at the real problem's per-pair sizes (P = 360, L = 1247,
T = 7561, V = 201 by default): the LOSVD kernel, the zero-padded FFT convolution of all P
templates, then the rebin. nnfit applies the rebin as a sparse operator; the baseline
multiplies by the dense (T, L) ``R_T`` as the original did. The two must agree to float
rounding (checked). Then a real ``build_hypercube`` (HDF5 writes included) runs serially and
with worker processes, and the measured rate is projected to the real scale (S = 2854,
C = 22, and C = 207) in time and disk.

Run: ``.venv/bin/python bench/cube_build.py`` (about 1-2 minutes). BLAS is pinned to one
thread so the comparison is per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft as sfft  # noqa: E402

from _record import recorded  # noqa: E402
from nnfit.spectral.hypercube import build_hypercube  # noqa: E402
from nnfit.spectral.model import ModelRowComputer  # noqa: E402
from nnfit.spectral.simulate import simulate_cube  # noqa: E402

REAL = {"S": 2854, "C": 22, "P": 360, "L": 1247, "T": 7561, "V": 201}


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--populations", type=int, default=REAL["P"])
    ap.add_argument("--tem-pix", type=int, default=REAL["T"])
    ap.add_argument("--obs-pix", type=int, default=REAL["L"])
    ap.add_argument("--vel", type=int, default=REAL["V"])
    ap.add_argument("--pairs", type=int, default=8, help="(s, c) pairs timed per method")
    ap.add_argument("--dense-pairs", type=int, default=3, help="pairs for the slow dense baseline")
    ap.add_argument("--build-spaxels", type=int, default=64, help="S of the end-to-end build")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    P, T, L, V = args.populations, args.tem_pix, args.obs_pix, args.vel
    n = args.pairs
    sim = simulate_cube(n, 1, P, n_tem_pix=T, n_obs_pix=L, n_vel=V, noise=False, seed=1)
    mc = ModelRowComputer(sim.templates_PT, sim.vel_pix, sim.tem_pix, sim.obs_pix)
    block = sim.losvd  # (n, V, 1): n pairs
    print(f"per-pair sizes: P={P} T={T} L={L} V={V}; kernel {mc.K} taps, FFT length {mc.nfft}")
    print(f"rebin: {mc.rebin.nnz} non-zeros of {L * T} ({100 * mc.rebin.nnz / (L * T):.3f}% dense)")

    # --- nnfit: cached template FFTs, batched kernels, sparse rebin -----------------------
    out = np.empty((n, 1, P, L), np.float32)
    t_nnfit = best_of(lambda: mc.tile(block, out=out), args.repeat) / n

    # split of one pair's cost: FFT part vs rebin part
    kf = sfft.rfft(mc.kernels(block[0, :, 0][None])[0], n=mc.nfft)
    buf = np.empty_like(mc._TF)

    def fft_part():
        np.multiply(mc._TF, kf, out=buf)
        return sfft.irfft(buf, n=mc.nfft, axis=-1, overwrite_x=True)

    full = fft_part()
    conv = full[:, mc.center + mc.t_lo : mc.center + mc.t_hi]
    t_fft = best_of(fft_part, args.repeat)
    t_rebin = best_of(lambda: conv @ mc._R_cols, args.repeat)

    # --- baseline: same convolution, dense R_T (T, L) multiplied densely --------------------
    R_T = mc.rebin.T.toarray()  # (T, L) float64, as /R_T but in float64 math
    nd = min(args.dense_pairs, n)

    def dense_build():
        res = np.empty((nd, P, L), np.float32)
        for i in range(nd):
            k = sfft.rfft(mc.kernels(block[i, :, 0][None])[0], n=mc.nfft)
            full_ = sfft.irfft(mc._TF * k, n=mc.nfft, axis=-1)
            res[i] = full_[:, mc.center : mc.center + T] @ R_T
        return res

    t_dense = best_of(dense_build, max(1, args.repeat - 1)) / nd
    k0 = sfft.rfft(mc.kernels(block[0, :, 0][None])[0], n=mc.nfft)
    dense64 = sfft.irfft(mc._TF * k0, n=mc.nfft, axis=-1)[:, mc.center : mc.center + T] @ R_T
    sparse64 = mc.rows(block[0, :, 0])
    err = float(np.max(np.abs(dense64 - sparse64)) / np.max(np.abs(dense64)))

    # --- end-to-end build (HDF5 writes included), serial and with workers -------------------
    S_b = args.build_spaxels
    simb = simulate_cube(S_b, 2, P, n_tem_pix=T, n_obs_pix=L, n_vel=V, noise=False, seed=2)
    tmp = Path(tempfile.mkdtemp(prefix="nnfit-bench-"))
    try:
        master = simb.to_h5(tmp / "master.h5")
        e2e, steady = {}, {}
        s_chunk = 4
        for nw in sorted({0, args.workers}):
            p = tmp / f"b{nw}.h5"
            shutil.copyfile(master, p)
            t0 = time.perf_counter()
            info = build_hypercube(
                p, S_chunk=s_chunk, C_chunk=1, P_chunk=P, n_workers=nw, progress=False
            )
            e2e[nw] = (time.perf_counter() - t0) / (S_b * 2)
            steady[nw] = 1.0 / (info["steady_tiles_per_s"] * s_chunk)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("time per (s, c) pair, one core (BLAS 1 thread); shared 2-core machine, best of repeats")
    print(f"{'method':<46}{'ms/pair':>10}")
    print(f"{'nnfit tile (FFT conv + sparse rebin)':<46}{t_nnfit * 1e3:>10.1f}")
    print(f"{'  of which multiply + inverse FFT':<46}{t_fft * 1e3:>10.1f}")
    print(f"{'  of which sparse rebin':<46}{t_rebin * 1e3:>10.1f}")
    print(f"{'dense R_T baseline (same FFT conv, dense rebin)':<46}{t_dense * 1e3:>10.1f}")
    print(f"{'speed-up':<46}{t_dense / t_nnfit:>9.1f}x")
    print(f"max |dense - sparse| / max|model| in float64 = {err:.1e} (same operator)")
    for nw, t in e2e.items():
        label = "serial" if nw == 0 else f"{nw} worker processes"
        print(
            f"{'build_hypercube (HDF5 writes incl.), ' + label:<46}{steady[nw] * 1e3:>10.1f}"
            f"   ({t * 1e3:.1f} with start-up)"
        )

    print()
    print("projection to the real scale (NGC 4365, MUSE)")
    best_nw = min(steady, key=steady.get)
    for C in (REAL["C"], 207):
        pairs = REAL["S"] * C
        disk = REAL["S"] * C * P * L * 4
        t_n = pairs * steady[best_nw]
        t_d = pairs * t_dense / max(best_nw, 1)
        print(
            f"  S={REAL['S']} C={C}: {pairs} pairs, HyperCube {disk / 1e9:.0f} GB on disk; "
            f"nnfit {t_n / 3600:.2f} h with {max(best_nw, 1)} process(es) "
            f"(dense R_T baseline {t_d / 3600:.1f} h)"
        )


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
