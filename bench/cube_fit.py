"""Spectral cube fit benchmark: per-epoch objective gap to the exact NNLS optimum, time per epoch.

A simulated cube small enough for a dense matrix is built (store + HyperCube), the exact optimum
is computed with ``scipy.optimize.nnls`` on the dense (weighted, masked) matrix, and each method
in ``METHODS`` is run and scored against it after every epoch / iteration it reports.

    python bench/cube_fit.py                       # noise-free, consistent (gap -> 0)
    python bench/cube_fit.py --noise --templates ssp --epochs 20
    python bench/cube_fit.py --S 256 --C 8 --P 96 --L 1000 --T 4000 --noise --templates ssp \
        --epochs 10                                # the issue-6 side-by-side problem

Besides Kaczmarz (HyperCube build + epochs), ``fit_cube`` runs with each exact method
(``gram``, ``active-set``; ``matrix-free`` with ``--with-pgd``) straight from the store, with
no HyperCube. The closing table gives per method: wall time (including the HyperCube build for
Kaczmarz and the dense matrix for scipy), disk it needs, peak traced memory (``tracemalloc``:
numpy buffers included), final gap and time to a gap of 1e-6.

Gap: ``(f(x) - f*) / ||W y||^2`` with ``f(x) = ||W (A x - y)||^2`` (W = 1/sigma when the store
has /Noise), i.e. the excess objective as a fraction of the data energy, so that it stays
meaningful when ``f* = 0`` (a consistent problem).

Adding a method: append ``Method(name, run)`` to ``METHODS``; ``run(ctx)`` returns a list of
``(label, x, seconds)`` per epoch or iteration. The table gets one gap column per method.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from _record import recorded


@dataclass
class Context:
    path: Path
    A: np.ndarray  # dense weighted rows (n_rows, C*P), float64 from the float32 HyperCube
    y: np.ndarray
    args: argparse.Namespace
    f_opt: float = 0.0
    x_opt: np.ndarray | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Method:
    name: str
    run: Callable[[Context], list[tuple[str, np.ndarray, float]]]


def _kaczmarz(ctx: Context) -> list[tuple[str, np.ndarray, float]]:
    from nnfit.spectral.kaczmarz_fit import PipelineRunner
    from nnfit.spectral.tracker import TrackerConfig

    path = ctx.path.with_name("kaczmarz.h5")
    shutil.copyfile(ctx.path, path)
    out: list[tuple[str, np.ndarray, float]] = []
    last = [time.perf_counter()]

    def on_epoch_end(ep, x, stats):
        out.append((f"epoch {ep + 1}", x, stats["epoch_time_s"][-1]))

    t0 = time.perf_counter()
    _, stats = PipelineRunner(path).solve_all(
        epochs=ctx.args.epochs,
        pixels_per_aperture=ctx.args.K,
        lr=ctx.args.lr,
        verbose=False,
        tracker=TrackerConfig(),
        on_epoch_end=on_epoch_end,
    )
    last[0] = time.perf_counter() - t0
    ctx.info["kaczmarz"] = {
        "total_sec": last[0],
        "setup_sec": last[0] - sum(stats["epoch_time_s"]),
        "chunk_reads_per_epoch": stats["chunk_reads"][0] if stats["chunk_reads"] else 0,
        "start": stats["start"]["source"],
    }
    return out


def _fit_cube(method: str) -> Callable[[Context], list[tuple[str, np.ndarray, float]]]:
    def run(ctx: Context) -> list[tuple[str, np.ndarray, float]]:
        from nnfit.spectral.fit import fit_cube

        path = ctx.path.with_name(f"fit_cube_{method}.h5")
        _copy_without_hypercube(ctx.path, path)
        t0 = time.perf_counter()
        x, st = fit_cube(path, method=method, x0=None, checkpoint=False)
        sec = time.perf_counter() - t0
        ctx.info[f"fit_cube[{method}]"] = {
            "method": st["method"],
            "converged": st["converged"],
            "kkt_violation": f"{st['kkt_violation']:.2e}",
            "rounds": st["rounds"],
            "nnz": st["nnz"],
            "phases_s": {k: round(v, 3) for k, v in st["phases"].items()},
        }
        ctx.info.setdefault("_disk", {})[f"fit_cube[{method}]"] = path.stat().st_size
        return [("final", x.ravel(), sec)]

    return run


def _copy_without_hypercube(src: Path, dst: Path) -> None:
    import h5py

    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        for k, v in fi.attrs.items():
            fo.attrs[k] = v
        for name in fi:
            if name not in ("HyperCube", "Fit", "X_global"):
                fi.copy(fi[name], fo, name=name)


METHODS: list[Method] = [
    Method("kaczmarz", _kaczmarz),
    Method("fit_cube[gram]", _fit_cube("gram")),
    Method("fit_cube[active-set]", _fit_cube("active-set")),
]


def _dense(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from nnfit.io.hdf5 import open_h5

    with open_h5(path, "r") as f:
        M = np.asarray(f["HyperCube/models"], dtype=np.float64)
        S, C, P, L = M.shape
        y = np.asarray(f["DataCube"], dtype=np.float64)
        mask = np.asarray(f["Mask"], bool) if "Mask" in f else np.ones(L, bool)
        w = 1.0 / np.asarray(f["Noise"], dtype=np.float64) if "Noise" in f else np.ones((S, L))
    fit = np.flatnonzero(mask)
    A = M[:, :, :, fit].transpose(0, 3, 1, 2).reshape(-1, C * P)
    ww = w[:, fit].reshape(-1)
    return A * ww[:, None], y[:, fit].reshape(-1) * ww


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--S", type=int, default=32)
    ap.add_argument("--C", type=int, default=4)
    ap.add_argument("--P", type=int, default=24)
    ap.add_argument("--L", type=int, default=400)
    ap.add_argument("--T", type=int, default=2000)
    ap.add_argument("--templates", choices=("random", "ssp"), default="random")
    ap.add_argument("--noise", action="store_true", help="S/N 50 noise and /Noise weights")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--K", type=int, default=256, help="pixels per spaxel per epoch")
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--S-chunk", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--with-pgd", action="store_true", help="also fit_cube[matrix-free]")
    args = ap.parse_args(argv)
    if args.with_pgd:
        METHODS.append(Method("fit_cube[matrix-free]", _fit_cube("matrix-free")))
    import tracemalloc

    from nnfit.spectral.hypercube import build_hypercube
    from nnfit.spectral.simulate import simulate_cube

    tmp = Path(tempfile.mkdtemp(prefix="nnfit-bench-cube-fit-"))
    try:
        t = time.perf_counter()
        tracemalloc.start()
        sim = simulate_cube(
            args.S,
            args.C,
            args.P,
            n_tem_pix=args.T,
            n_obs_pix=args.L,
            templates=args.templates,
            noise=args.noise,
            seed=args.seed,
        )
        path = sim.to_h5(tmp / "cube.h5", with_noise=args.noise)
        size_store = path.stat().st_size
        tracemalloc.reset_peak()
        t = time.perf_counter()
        build_hypercube(path, S_chunk=args.S_chunk, C_chunk=1, P_chunk=args.P, n_workers=0)
        t_build = time.perf_counter() - t
        peak_build = tracemalloc.get_traced_memory()[1]
        size_built = path.stat().st_size
        tracemalloc.reset_peak()
        t = time.perf_counter()
        A, y = _dense(path)
        t_dense = time.perf_counter() - t
        ctx = Context(path=path, A=A, y=y, args=args)
        t = time.perf_counter()
        ctx.x_opt, rnorm = nnls(A, y, maxiter=50 * A.shape[1])
        t_nnls = time.perf_counter() - t
        peak_nnls = tracemalloc.get_traced_memory()[1]
        ctx.f_opt = float(rnorm**2)
        energy = float(y @ y)
        print(
            f"cube S={args.S} C={args.C} P={args.P} (n={args.C * args.P}) L={args.L} "
            f"T={args.T}, {args.templates} templates, "
            f"{'S/N 50 noise, weighted' if args.noise else 'noise-free (consistent)'}; "
            f"dense A {A.shape[0]} x {A.shape[1]}, cond {np.linalg.cond(A):.2e}"
        )
        print(
            f"store + HyperCube build {t_build:.2f} s; scipy.optimize.nnls (dense) {t_nnls:.2f} s"
        )
        print(f"f* = {ctx.f_opt:.6e}, ||W y||^2 = {energy:.6e}\n")

        results = {}
        peaks = {}
        walls = {}
        for m in METHODS:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t = time.perf_counter()
            results[m.name] = m.run(ctx)
            walls[m.name] = time.perf_counter() - t
            peaks[m.name] = tracemalloc.get_traced_memory()[1] - base

        def gap(x):
            r = A @ x - y
            return (float(r @ r) - ctx.f_opt) / energy

        n_rows = max(len(v) for v in results.values())
        head = f"{'step':>10} | " + " | ".join(
            f"{m.name + ' gap':>16} {m.name + ' s':>12}" for m in METHODS
        )
        print(head)
        print("-" * len(head))
        for i in range(n_rows):
            cells = []
            label = ""
            for m in METHODS:
                rows = results[m.name]
                if i < len(rows):
                    label, x, sec = rows[i]
                    cells.append(f"{gap(x):16.3e} {sec:12.4f}")
                else:
                    cells.append(f"{'':16} {'':12}")
            print(f"{label:>10} | " + " | ".join(cells))
        print()
        for m in METHODS:
            rows = results[m.name]
            secs = np.array([r[2] for r in rows])
            gaps = np.array([gap(r[1]) for r in rows])
            x_last = rows[-1][1]
            rel = np.abs(x_last - ctx.x_opt).max() / max(np.abs(ctx.x_opt).max(), 1e-300)
            line = (
                f"{m.name}: {len(rows)} steps, median {np.median(secs):.4f} s per step, "
                f"final gap {gaps[-1]:.3e}, max|x - x*|/max|x*| {rel:.3e}"
            )
            if ctx.f_opt > 1e-12 * energy:
                line += f", (f - f*)/f* {gaps[-1] * energy / ctx.f_opt:.3e}"
            for target in (1e-3, 1e-6):
                hit = np.flatnonzero(gaps <= target)
                line += (
                    f"; gap {target:g} after {hit[0] + 1} steps ({secs[: hit[0] + 1].sum():.3f} s)"
                    if hit.size
                    else f"; gap {target:g} not reached"
                )
            print(line)
            if m.name in ctx.info:
                print(f"  {m.name} details: {ctx.info[m.name]}")

        # side by side: wall time, disk, peak memory, final gap, time to 1e-6
        print()
        head = (
            f"{'method':<22} {'wall s':>9} {'disk MB':>9} {'peak MB':>9} {'final gap':>11} "
            f"{'to 1e-6 s':>10}"
        )
        print(head)
        print("-" * len(head))
        print(
            f"{'scipy nnls (dense A)':<22} {t_dense + t_nnls:9.2f} {size_built / 1e6:9.1f} "
            f"{peak_nnls / 1e6:9.1f} {0.0:11.1e} {t_dense + t_nnls:10.2f}"
            "   (needs the HyperCube for A)"
        )
        disk = ctx.info.get("_disk", {})
        for m in METHODS:
            rows = results[m.name]
            gaps = np.array([gap(r[1]) for r in rows])
            secs = np.cumsum([r[2] for r in rows])
            hit = np.flatnonzero(gaps <= 1e-6)
            extra = t_build if m.name == "kaczmarz" else 0.0
            wall = walls[m.name] + extra
            to6 = f"{secs[hit[0]] + extra:10.2f}" if hit.size else f"{'never':>10}"
            dsk = size_built if m.name == "kaczmarz" else disk.get(m.name, size_store)
            peak = max(peaks[m.name], peak_build) if m.name == "kaczmarz" else peaks[m.name]
            print(
                f"{m.name:<22} {wall:9.2f} {dsk / 1e6:9.1f} {peak / 1e6:9.1f} "
                f"{gaps[-1]:11.1e} {to6}"
            )
        print(f"(kaczmarz wall and time-to-gap include the HyperCube build, {t_build:.2f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with recorded():
        raise SystemExit(main())
