"""nnfit's spectral model against pPXF on a real SDSS spectrum, both run here.

NGC 4636 (SDSS DR12, shipped with ``ppxf``) and E-MILES SSPs (shipped with ``ppxf``), set up
as in pPXF's own SDSS example: templates broadened to the SDSS resolution and log-rebinned to
the galaxy's velocity step, the two grids 0.37 pixel apart. For each dispersion the kinematics
are fixed at pPXF's values and both codes solve the same non-negative least squares:

* ``fourier``: nnfit's exact model (``kernel="fourier"``, Gauss-Hermite moments);
* ``linear``: nnfit's previous model (LOSVD histogram on template-pixel bins, each bin split
  linearly between two pixels, overlap rebin), for reference.

Columns: chi^2 / chi^2_pPXF - 1, the largest |model - pPXF model| over fitted pixels at pPXF's
weights (flux normalised to median 1), and wall times. Then (V, sigma) fitted by minimising
each code's chi^2, and the continuum polynomials.

    python bench/spectral_vs_ppxf.py [--templates 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from _record import recorded
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import fit_cube
from nnfit.spectral.losvd import convert_velocity, losvd_from_moments

_spec = importlib.util.spec_from_file_location(
    "_ppxf_real", Path(__file__).resolve().parents[1] / "tests" / "spectral" / "_ppxf_real.py"
)
_real = importlib.util.module_from_spec(_spec)
sys.modules["_ppxf_real"] = _real  # dataclasses look their module up there
_spec.loader.exec_module(_real)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=12)
    args = ap.parse_args()
    sp = _real.load_sdss(n_templates=args.templates, frac=0.37)
    mask = np.zeros(sp.galaxy.size, bool)
    mask[sp.goodpixels] = True
    print(
        f"NGC4636 SDSS DR12: {sp.galaxy.size} pixels ({mask.sum()} fitted), velscale "
        f"{sp.velscale:.2f} km/s, {sp.templates.shape[1]} E-MILES SSPs x {sp.templates.shape[0]} "
        "pixels, grids 0.37 px apart"
    )

    def chi2_of(model):
        return float(np.sum(((sp.galaxy - model) / sp.noise)[mask] ** 2))

    def op_fourier(V, sig):
        return CubeOperator(
            sp.templates.T,
            None,
            None,
            sp.ln_lam_temp,
            sp.ln_lam_gal,
            mask=mask,
            noise=sp.noise[None],
            datacube=sp.galaxy[None],
            kernel="fourier",
            convention="ppxf",
            moments=np.array([[[V, sig]]]),
        )

    def op_linear(V, sig):
        vcz = convert_velocity(V, "ppxf", "cz")
        vel = np.round(vcz / sp.velscale) * sp.velscale + sp.velscale * np.arange(-40, 41)
        lv = losvd_from_moments(vel, vcz, sig)[None, :, None]
        return CubeOperator(
            sp.templates.T,
            lv,
            vel,
            sp.ln_lam_temp,
            sp.ln_lam_gal,
            mask=mask,
            noise=sp.noise[None],
            datacube=sp.galaxy[None],
            kernel="linear",
        )

    V = 1003.5
    print(
        "\n| sigma (px) | sigma (km/s) | fourier chi2/pPXF-1 | fourier max dmodel | "
        "linear chi2/pPXF-1 | linear max dmodel | pPXF s | nnfit fourier s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for sig_px in (0.5, 0.67, 1.0, 1.6, 3.0, 5.0):
        sig = sig_px * sp.velscale
        t = time.perf_counter()
        pp = _real.run_ppxf(sp, [V, sig], fixed=True)
        t_pp = time.perf_counter() - t
        chi_p = chi2_of(pp.bestfit)
        row = []
        for make in (op_fourier, op_linear):
            t = time.perf_counter()
            op = make(V, sig)
            _, st = fit_cube(op, method="gram", tol=1e-10)
            dt = time.perf_counter() - t
            dm = np.max(np.abs(op.forward(pp.weights[None, :])[0] - pp.bestfit)[mask])
            row.append((st["chi2"] / chi_p - 1, dm, dt))
        print(
            f"| {sig_px} | {sig:.1f} | {row[0][0]:+.1e} | {row[0][1]:.1e} | {row[1][0]:+.1e} "
            f"| {row[1][1]:.1e} | {t_pp:.2f} | {row[0][2]:.2f} |"
        )

    print("\n(V, sigma) fitted by minimising chi^2 (degree=4), Nelder-Mead from (V-20, 180):")
    t = time.perf_counter()
    pp = _real.run_ppxf(sp, [V, 200.0], fixed=False, degree=4)
    t_pp = time.perf_counter() - t
    print("| code | V (km/s) | sigma (km/s) | (V - V_pPXF)/err | (sigma - sigma_pPXF)/err | s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| pPXF | {pp.sol[0]:.2f} +- {pp.error[0]:.2f} | {pp.sol[1]:.2f} +- {pp.error[1]:.2f}"
        f" | 0 | 0 | {t_pp:.2f} |"
    )
    for name, make in (("nnfit fourier", op_fourier), ("nnfit linear", op_linear)):
        t = time.perf_counter()
        res = minimize(
            lambda p, make=make: fit_cube(make(p[0], p[1]), method="gram", tol=1e-9, degree=4)[1][
                "chi2"
            ],
            x0=[V - 20.0, 180.0],
            method="Nelder-Mead",
            options={"xatol": 0.02, "fatol": 1e-4},
        )
        dt = time.perf_counter() - t
        dv = (res.x[0] - pp.sol[0]) / pp.error[0]
        ds = (res.x[1] - pp.sol[1]) / pp.error[1]
        print(f"| {name} | {res.x[0]:.2f} | {res.x[1]:.2f} | {dv:+.3f} | {ds:+.3f} | {dt:.2f} |")

    print("\nContinuum polynomials at pPXF's kinematics (sigma = 216 km/s):")
    print("| degree | mdegree | chi2/pPXF-1 | rounds | extrapolations | KKT | pPXF s | nnfit s |")
    print("|---|---|---|---|---|---|---|---|")
    for degree, mdegree in ((4, 0), (10, 0), (-1, 8), (4, 8), (-1, 12)):
        t = time.perf_counter()
        pp = _real.run_ppxf(sp, [V, 216.0], fixed=True, degree=degree, mdegree=mdegree)
        t_pp = time.perf_counter() - t
        t = time.perf_counter()
        _, st = fit_cube(
            op_fourier(V, 216.0), method="gram", tol=1e-10, degree=degree, mdegree=mdegree
        )
        dt = time.perf_counter() - t
        print(
            f"| {degree} | {mdegree} | {st['chi2'] / chi2_of(pp.bestfit) - 1:+.1e} | "
            f"{st['continuum_rounds']} | {st['extrapolations']} | {st['kkt_violation']:.1e} | "
            f"{t_pp:.2f} | {dt:.2f} |"
        )


if __name__ == "__main__":
    with recorded(peers=("ppxf",)):
        raise SystemExit(main())
