"""Which regularisation rule recovers mean lg age and [M/H] per bin: decided here, on simulations.

Synthetic MUSE cubes of real E-MILES SSPs on the real minicube's grid and STAT variance
(``tests/spectral/_muse_synth.py``), Voronoi-binned to S/N 60 (the issue's case), with mixes
and noise seeds that are NOT those of ``test_ifu_end_to_end.py`` (two SSPs 10 Gyr/+0.22 and
2 Gyr/-0.40, seed 13). Every bin is fitted one by one (``fit_bins``) with each rule: no
regularisation, fixed ``regul`` values, and pPXF's rule (``regul="auto"``: per bin the largest
``regul`` raising chi^2 by sqrt(2 N)). Printed: the worst and RMS error of the light-weighted
<lg age> and <[M/H]> over the bins, per cube and over all cubes.

    PYTHONPATH=src python bench/ifu_regul_rule.py [--seeds 1 2] [--target-sn 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import recorded
from nnfit.spectral.bin_fit import fit_bins
from nnfit.spectral.maps import population_maps

_spec = importlib.util.spec_from_file_location(
    "_muse_synth", Path(__file__).resolve().parents[1] / "tests" / "spectral" / "_muse_synth.py"
)
_synth = importlib.util.module_from_spec(_spec)
sys.modules["_muse_synth"] = _synth
_spec.loader.exec_module(_synth)


def _r(yy, xx):
    return np.hypot(xx - 20.0, yy - 19.0) / 28.0


def _gauss_sfh(centre_of, ages, width=0.15):
    """Light fractions over ``ages`` Gaussian in lg age, centred per spaxel."""

    def fractions(yy, xx):
        c = centre_of(yy, xx)
        lg = np.log10(ages)[:, None, None] + 9.0  # ages in Gyr, centres in lg yr
        w = np.exp(-0.5 * ((lg - c[None]) / width) ** 2)
        return w / w.sum(axis=0)

    return fractions


AGES = [1.0, 1.2589, 1.5849, 1.9953, 2.5119, 3.1623, 3.9811, 5.0119, 6.3096, 7.9433, 10.0,
        12.5893, 15.8489]  # fmt: skip

MIXES = {
    "old+young (12.6/0.00, 1.0/+0.22), radial": (
        [(12.5893, 0.0), (1.0, 0.22)],
        lambda yy, xx: (
            np.stack([np.clip(0.85 - 0.6 * _r(yy, xx), 0.3, 0.85)] * 2)
            * np.array([1, -1])[:, None, None]
            + np.array([0, 1])[:, None, None]
        ),
    ),
    "three SSPs (4/-0.40, 7.9/0.00, 15.8/+0.22), x/y": (
        [(3.9811, -0.4), (7.9433, 0.0), (15.8489, 0.22)],
        lambda yy, xx: np.stack(
            [
                0.2 + 0.3 * xx / xx.max(),
                0.5 - 0.3 * yy / yy.max(),
                0.3 - 0.3 * xx / xx.max() + 0.3 * yy / yy.max(),
            ]
        ),
    ),
    "extended SFH (Gaussian in lg age, [M/H] 0.00)": (
        [(a, 0.0) for a in AGES],
        _gauss_sfh(lambda yy, xx: 9.4 + 0.5 * np.clip(1 - _r(yy, xx), 0, 1), AGES),
    ),
    "single SSP 6.3 Gyr/-0.40": ([(6.3096, -0.4)], lambda yy, xx: np.ones((1, *yy.shape))),
}

RULES: list[float | str] = [0.0, 1.0, 3.0, 10.0, 30.0, 100.0, "auto"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--target-sn", type=float, default=60.0)
    args = ap.parse_args()
    worst = {r: [0.0, 0.0] for r in RULES}
    sq = {r: [0.0, 0.0, 0] for r in RULES}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ssps, fractions) in MIXES.items():
            for seed in args.seeds:
                sim = _synth.synthetic_store(
                    Path(tmp) / "c", ssps, fractions, seed=seed, target_sn=args.target_sn
                )
                print(f"\n{name}, seed {seed}: {sim['S']} bins")
                print(f"{'regul':>8} {'max|d lg age|':>14} {'rms':>7} {'max|d [M/H]|':>13} "
                      f"{'rms':>7} {'regul range':>16} {'time s':>7}")  # fmt: skip
                for rule in RULES:
                    t = time.perf_counter()
                    fb = fit_bins(sim["store"], regul=rule)
                    dt = time.perf_counter() - t
                    res = population_maps(sim["store"])
                    da = res["lg_age_light"] - sim["lg_age"]
                    dm = res["metal_light"] - sim["metal"]
                    worst[rule][0] = max(worst[rule][0], np.abs(da).max())
                    worst[rule][1] = max(worst[rule][1], np.abs(dm).max())
                    sq[rule][0] += (da**2).sum()
                    sq[rule][1] += (dm**2).sum()
                    sq[rule][2] += da.size
                    rr = fb["regul"]
                    print(
                        f"{rule!s:>8} {np.abs(da).max():14.3f} {np.sqrt((da**2).mean()):7.3f} "
                        f"{np.abs(dm).max():13.3f} {np.sqrt((dm**2).mean()):7.3f} "
                        f"{rr.min():7.3g}-{rr.max():<8.3g} {dt:7.1f}"
                    )
    print("\nall cubes:")
    print(f"{'regul':>8} {'max|d lg age|':>14} {'rms':>7} {'max|d [M/H]|':>13} {'rms':>7}")
    for rule in RULES:
        n = sq[rule][2]
        print(
            f"{rule!s:>8} {worst[rule][0]:14.3f} {np.sqrt(sq[rule][0] / n):7.3f} "
            f"{worst[rule][1]:13.3f} {np.sqrt(sq[rule][1] / n):7.3f}"
        )


if __name__ == "__main__":
    with recorded(peers=("astropy", "vorbin", "ppxf")):
        raise SystemExit(main())
