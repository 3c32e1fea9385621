"""How close can any fit get to the mean lg age and [M/H] of a bin at a given S/N?

For the synthetic MUSE cubes of ``tests/spectral/_muse_synth.py`` (real E-MILES SSPs on the
real minicube's grid with its STAT variance, Voronoi bins at ``--target-sn``): the bins of the
noisy cube (``--seed``), their noise-free spectra from a noise-free twin on the same bins, and
then, per bin:

* analytic bounds: the Cramer-Rao bound of the light-weighted mean lg age and [M/H]
  (``g(x) = q.x / 1.x``, variance ``grad g^T F^-1 grad g`` with ``F = A^T Cov^+ A``) for an
  unbiased estimator that knows the true support (the oracle) and for one over the full grid
  (every unbiased fit of the store's templates); ``Cov`` is the exact covariance of the bin's
  log-rebinned noise (the summed STAT variance pushed through the rebinning matrix; singular
  where log pixels share a linear pixel, hence the pseudo-inverse);
* Monte Carlo over ``--draws`` noise draws of exactly that noise, each bin fitted by the
  dense equivalent of ``fit_bins`` (``nnls:REGUL[:ORDER]``: NNLS on the store's model columns
  weighted by the store's noise, with pPXF's ``regul^2 ||D x||^2`` rows), by the same NNLS
  whitened with the exact covariance (``gls:REGUL[:ORDER]``) and, as oracles, by least squares
  and NNLS restricted to the true support (``ls-support``, ``nnls-support``). On the cube's
  own draw the dense NNLS gives ``fit_bins``' figures (printed).

Printed per cube: the worst bin's error (median and 90th percentile over draws, how often it
is under 0.05 dex, rms, largest per-bin bias), the same for Gaussian errors of the bounds'
widths, and the S/N at which each bound's median worst bin is 0.05 dex (the bounds scale as
1 / S/N); ``--per-bin`` adds each bin's bias and spread. The Monte Carlo depends on the bins,
not on ``--seeds`` beyond them (the same bins give the same draws).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ifu_information_limit.py [--mix test]
        [--seeds 13] [--draws 100] [--estimators ...] [--sn-factor 1] [--pattern ...]
        [--target-sn 60] [--per-bin]

``--mix`` is ``test`` (the end-to-end test's two SSPs), ``bench`` (the four mixes of
bench/ifu_regul_rule.py) or some of those by their first word (``old+young``, ``three``,
``extended``, ``single``). ``--sn-factor k`` divides the noise of the same bins by ``k``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls

from _record import recorded
from nnfit.spectral.binning import bin_spectra
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.ifu_cube import read_ifu_cube
from nnfit.spectral.logrebin import linear_pixel_edges, log_grid, log_rebin_matrix
from nnfit.spectral.regularization import difference_operator
from nnfit.spectral.store import load_problem

_ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_synth = _load("_muse_synth", _ROOT / "tests" / "spectral" / "_muse_synth.py")
LAM_RANGE = (4800, 7000)


@dataclasses.dataclass
class Bin:
    A: np.ndarray  # (n, P) model columns on the fitted pixels (the store's x units)
    y0: np.ndarray  # (n,) noise-free data
    sigma: np.ndarray  # (n,) the store's noise (what the fit weights by)
    R: sp.csr_matrix  # (n, L_lin) noise map: log-rebinned noise = R @ (sd_lin * N(0, 1))
    support: np.ndarray  # true template indices
    x_true: np.ndarray  # (P,) the truth in x units (light fractions times the bin's scale)
    y_seed: np.ndarray  # (n,) the noisy cube's own data (its seed's noise draw)


def mixes() -> dict:
    rule = _load("ifu_regul_rule", _ROOT / "bench" / "ifu_regul_rule.py")
    out = {"test": ([_synth.OLD, _synth.YOUNG], _synth.old_young)}
    for name, mix in rule.MIXES.items():
        out[name.split()[0]] = mix
    return out


def setup(
    ssps, fractions, seed: int, target_sn: float, tmp: Path, pattern: str = _synth.PATTERN
) -> tuple[list[Bin], dict]:
    """The noisy cube's bins, the noise-free twin's spectra on them, and their noise maps."""
    sim = _synth.synthetic_store(tmp / "noisy", ssps, fractions, seed=seed, target_sn=target_sn)
    free = _synth.synthetic_store(
        tmp / "free",
        ssps,
        fractions,
        seed=seed,
        noisy=False,
        bin_map=sim["bins"].bin_map,
        pattern=pattern,
    )
    prob = load_problem(free["store"])
    import h5py

    with h5py.File(free["store"], "r") as f:
        bin_mask = f["BinMask"][()]
    with h5py.File(sim["store"], "r") as f:
        y_noisy = f["DataCube"][()].astype(float)
    meta = prob.template_meta
    ages = np.asarray(meta["axis_values"]["age"], dtype=float)
    metals = np.asarray(meta["axis_values"]["metal"], dtype=float)
    lg_q = np.repeat(np.log10(ages) + 9.0, metals.size)
    mh_q = np.tile(metals, ages.size)
    support = np.array(
        [np.argmin(np.abs(lg_q - np.log10(a) - 9) + np.abs(mh_q - m)) for a, m in ssps]
    )
    cube = read_ifu_cube(free["cube"], lam_range=LAM_RANGE)
    _, var_lin = bin_spectra(cube, free["bins"])
    edges = linear_pixel_edges(cube.wave)
    vs = 299792.458 * np.log(edges[-1] / edges[0]) / cube.wave.size
    ln_edges, _ = log_grid(edges[0], edges[-1], vs)
    M = log_rebin_matrix(edges, ln_edges).tocsr()
    if M.shape[0] != prob.L:
        raise AssertionError(f"rebinning gives {M.shape[0]} pixels, the store {prob.L}")
    bins = []
    P = prob.P
    for s in range(prob.S):
        op = CubeOperator.from_problem(prob.spaxel(s))
        good = np.flatnonzero(bin_mask[s] & prob.mask)
        cols = np.stack([op.unweighted_forward(np.eye(P)[p][None])[0] for p in range(P)], 1)
        A = cols[good]
        y0 = prob.datacube[s, good].astype(float)
        xs, _ = nnls(A[:, support], y0)  # the noise-free truth in x units (exact model)
        x_true = np.zeros(P)
        x_true[support] = xs
        sd = np.sqrt(np.nan_to_num(var_lin[s], nan=0.0))
        bins.append(
            Bin(
                A,
                y0,
                prob.noise[s, good].astype(float),
                M[good] @ sp.diags(sd),
                support,
                x_true,
                y_noisy[s, good],
            )
        )
    info = {
        "S": prob.S,
        "lg_q": lg_q,
        "mh_q": mh_q,
        "grid": (ages.size, metals.size),
        "lg_age": sim["lg_age"],
        "metal": sim["metal"],
    }
    return bins, info


def whitening(b: Bin) -> np.ndarray:
    """``W^T`` with ``W^T Cov W = I`` on the range of ``Cov = R R^T``.

    ``Cov`` is singular: where log pixels are narrower than the linear ones (the blue end),
    several lie inside one linear pixel and carry the same noise. Its pseudo-inverse gives the
    information of the data about ``x`` through the linear pixels' noise (never more than the
    linear pixels hold)."""
    lam, V = np.linalg.eigh((b.R @ b.R.T).toarray())
    keep = lam > 1e-10 * lam.max()
    return (V[:, keep] / np.sqrt(lam[keep])).T


def crb(b: Bin, Aw: np.ndarray, q: np.ndarray, cols: np.ndarray) -> float:
    """Cramer-Rao bound (standard deviation) of q.x / 1.x at the truth, unbiased estimators
    over the columns ``cols`` (``Aw``: the whitened columns)."""
    x = b.x_true[cols]
    A = Aw[:, cols]
    F = A.T @ A
    g = q[cols] @ x / x.sum()
    grad = (q[cols] - g) / x.sum()
    return float(np.sqrt(grad @ np.linalg.solve(F, grad)))


def fit(
    b: Bin, y: np.ndarray, how: str, D: np.ndarray, regul: float, Wt: np.ndarray | None = None
) -> np.ndarray:
    """``how``: "ls-support", "nnls-support", "nnls" (the store's diagonal noise, as
    ``fit_bins``) or "gls" (NNLS whitened by the exact covariance ``Wt``)."""
    if how == "gls":
        Aw, yw = Wt @ b.A, Wt @ y
    else:
        Aw, yw = b.A / b.sigma[:, None], y / b.sigma
    x = np.zeros(b.A.shape[1])
    if how == "ls-support":
        x[b.support] = np.linalg.lstsq(Aw[:, b.support], yw, rcond=None)[0]
    elif how == "nnls-support":
        x[b.support] = nnls(Aw[:, b.support], yw)[0]
    else:
        if regul > 0:
            Aw = np.vstack([Aw, regul * D])
            yw = np.concatenate([yw, np.zeros(D.shape[0])])
        x = nnls(Aw, yw, maxiter=50 * b.A.shape[1])[0]
    return x


def worst_stats(err: np.ndarray) -> str:
    """err (draws, S): the worst bin's |error| per draw -> median, 90th pct, P(< 0.05)."""
    w = np.abs(err).max(axis=1)
    return f"{np.median(w):7.3f} {np.percentile(w, 90):7.3f} {np.mean(w < 0.05):7.2f}"


def run_cube(args, mix: str, seed: int, tmp: Path) -> dict:
    """Bounds and Monte Carlo errors of one synthetic cube; prints its tables."""
    ssps, fractions = mixes()[mix]
    t0 = time.perf_counter()
    bins, info = setup(ssps, fractions, seed, args.target_sn, tmp, args.pattern)
    if args.sn_factor != 1.0:
        bins = [
            dataclasses.replace(b, R=b.R / args.sn_factor, sigma=b.sigma / args.sn_factor)
            for b in bins
        ]
    S = info["S"]
    print(f"\n=== mix {mix!r}, seed {seed}, Voronoi S/N {args.target_sn:g}, noise / "
          f"{args.sn_factor:g} (S/N {args.target_sn * args.sn_factor:g}), grid {info['grid']}: "
          f"{S} bins (setup {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    q = {"lg age": info["lg_q"], "[M/H]": info["mh_q"]}
    truth = {"lg age": info["lg_age"], "[M/H]": info["metal"]}
    for k in q:  # the store's x_true reproduces the generator's truth (the model is exact)
        g = np.array([q[k] @ b.x_true / b.x_true.sum() for b in bins])
        print(f"  truth from x_true vs generator, {k}: max |diff| {np.abs(g - truth[k]).max():.4f}")
    P = bins[0].A.shape[1]
    if args.sn_factor == 1.0:  # the dense fit on the cube's own draw: fit_bins' numbers
        for e in ("nnls:0", "nnls:3"):
            D = difference_operator(info["grid"], 2).toarray()
            xs = [fit(b, b.y_seed, "nnls", D, float(e[5:])) for b in bins]
            errs = [max(abs(q[k] @ x / x.sum() - truth[k][s]) for s, x in enumerate(xs)) for k in q]
            print(f"  the cube's own noise (seed {seed}), {e}: worst lg age {errs[0]:.3f}, "
                  f"[M/H] {errs[1]:.3f}")  # fmt: skip
    Wt = [whitening(b) for b in bins]
    bound = {
        (k, w): np.array(
            [
                crb(b, wt @ b.A, q[k], b.support if w == "support" else np.arange(P))
                for b, wt in zip(bins, Wt, strict=True)
            ]
        )
        for k in q
        for w in ("support", "full grid")
    }
    specs = {}
    for e in args.estimators:
        how, *rest = e.split(":")
        regul = float(rest[0]) if rest else 0.0
        order = int(rest[1]) if len(rest) > 1 else 2
        specs[e] = (how, regul, difference_operator(info["grid"], order).toarray())
    err = {(e, k): np.zeros((args.draws, S)) for e in specs for k in q}
    rng = np.random.default_rng(12345)
    for d in range(args.draws):
        for s, b in enumerate(bins):
            y = b.y0 + b.R @ rng.normal(size=b.R.shape[1])
            for e, (how, regul, D) in specs.items():
                x = fit(b, y, how, D, regul, Wt[s])
                for k in q:
                    err[e, k][d, s] = q[k] @ x / x.sum() - truth[k][s]
    print(f"  ({args.draws} draws, {time.perf_counter() - t0:.0f} s; loaded 2-core machine)")
    for k in q:
        if args.per_bin:
            print(f"\n{k}: per bin, dex (bias and sd over the draws)")
            head = " ".join(f"{e:>19}" for e in specs)
            print(f"{'bin':>3} {'truth':>6} {'CRB supp':>8} {'CRB full':>8}  {head}")
            for s in range(S):
                cells = " ".join(
                    f"{err[e, k][:, s].mean():+9.3f} {err[e, k][:, s].std():9.3f}" for e in specs
                )
                print(
                    f"{s:3d} {truth[k][s]:6.2f} {bound[k, 'support'][s]:8.4f} "
                    f"{bound[k, 'full grid'][s]:8.3f}  {cells}"
                )
        print(f"\n  {k}: worst of {S} bins      median   90th%  P(<0.05)   rms  |bias| max")
        for w in ("support", "full grid"):
            z = rng.normal(size=(2000, S)) * bound[k, w]
            print(f"    CRB {w:<18} {worst_stats(z)} {np.sqrt((z**2).mean()):7.3f}")
        for e in specs:
            a = err[e, k]
            print(
                f"    {e:<22} {worst_stats(a)} {np.sqrt((a**2).mean()):7.3f} "
                f"{np.abs(a.mean(axis=0)).max():7.3f}"
            )
        for w in ("support", "full grid"):
            z = np.abs(rng.normal(size=(2000, S)) * bound[k, w]).max(axis=1)
            need = args.target_sn * args.sn_factor * np.median(z) / 0.05
            print(f"    S/N at which the {w} CRB's median worst bin is 0.05 dex: {need:.0f}")
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", nargs="+", default=["test"], help="'bench': the bench's four")
    ap.add_argument("--seeds", type=int, nargs="+", default=[_synth.TEST_SEED])
    ap.add_argument("--target-sn", type=float, default=60.0)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument(
        "--estimators",
        nargs="+",
        default=["ls-support", "nnls-support", "nnls:0", "nnls:3"],
        help="ls-support, nnls-support, nnls:REGUL[:ORDER], gls:REGUL[:ORDER]",
    )
    ap.add_argument("--pattern", default=_synth.PATTERN, help="the store's E-MILES files")
    ap.add_argument(
        "--sn-factor",
        type=float,
        default=1.0,
        help="divide the noise (and the fit's noise) by this: the same bins at this times the S/N",
    )
    ap.add_argument("--per-bin", action="store_true")
    args = ap.parse_args()
    names = [m for m in mixes() if m != "test"] if args.mix == ["bench"] else args.mix
    pooled: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mix in names:
            for seed in args.seeds:
                err = run_cube(args, mix, seed, Path(tmp) / f"{mix}-{seed}")
                for key, a in err.items():
                    pooled.setdefault(key, []).append(a)
    if len(names) * len(args.seeds) > 1:
        print("\n=== all cubes: the worst bin of each cube per draw; P: all cubes under 0.05")
        for k in ("lg age", "[M/H]"):
            print(f"  {k:<28} median   90th%  P(<0.05)   rms")
            for e in args.estimators:
                a = np.concatenate(pooled[e, k], axis=1)
                w = np.stack([np.abs(c).max(axis=1) for c in pooled[e, k]])  # (cubes, draws)
                print(
                    f"    {e:<22} {np.median(w):7.3f} {np.percentile(w, 90):7.3f} "
                    f"{np.mean((w < 0.05).all(axis=0)):7.2f} {np.sqrt((a**2).mean()):7.3f}"
                )


if __name__ == "__main__":
    with recorded(peers=("astropy", "vorbin")):
        raise SystemExit(main())
