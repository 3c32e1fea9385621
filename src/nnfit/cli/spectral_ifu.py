"""``nnfit spectral init CUBE.fits ...`` (a store from a FITS IFU cube) and ``nnfit spectral maps``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

INIT_FROM_CUBE_HELP = """\
From a FITS IFU cube (MUSE, MaNGA LOGCUBE/LINCUBE, CALIFA, SAMI, KCWI, JWST s3d, or any cube
with a variance/noise extension), give the cube as the first argument and --templates a
library (pPXF SPS .npz, or a folder of MILES/E-MILES FITS): the cube is read in slabs,
Voronoi-binned to --target-sn (vorbin), log-rebinned to the data's velocity step (or
--velscale), de-redshifted by --redshift, the templates matched to the MUSE line-spread
function or the cube's own (MaNGA's LSFPRE) (or --fwhm), emission and sky lines masked, and the
kinematics
(--kinematics TABLE with V, SIGMA[, H3, H4, BIN_ID] per bin in pPXF's convention; --losvd
histograms; default: measured with pPXF) turned into LOSVDs.

  nnfit spectral init cube.fits --templates miles_models/ --redshift 0.0863 --target-sn 30 \\
      --lam-range 4800 7000 --out store.h5
  nnfit spectral fit store.h5 --per-bin
  nnfit spectral maps store.h5 --out maps/
"""


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``nnfit spectral init`` for the FITS-cube path (the array path keeps its own)."""
    p.add_argument("cube", nargs="?", help="FITS IFU cube (omit to build from arrays)")
    g = p.add_argument_group("from a FITS cube")
    g.add_argument("--redshift", type=float, default=0.0, help="de-redshift by 1+z (default 0)")
    g.add_argument(
        "--target-sn", type=float, help="Voronoi target S/N per pixel (default: no binning)"
    )
    g.add_argument(
        "--min-sn", type=float, default=1.0, help="drop spaxels below this S/N (default 1)"
    )
    g.add_argument("--bin-map", help="your own bins: .npy (ny, nx) of 0..S-1, -1 unused")
    g.add_argument(
        "--covariance",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="spatially correlated noise: a bin of n spaxels has 1 + ALPHA log10(n) times the "
        "noise of its summed variances, in the Voronoi S/N and the bin's variance (GIST's "
        "COVARIANCE; e.g. 1.07 CALIFA, 1.62 MaNGA; see the IFU docs). Default 0: independent",
    )
    g.add_argument(
        "--lam-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="observed wavelengths to keep (Angstrom)",
    )
    g.add_argument("--x-range", type=int, nargs=2, metavar=("X0", "X1"), help="spaxel columns")
    g.add_argument("--y-range", type=int, nargs=2, metavar=("Y0", "Y1"), help="spaxel rows")
    g.add_argument(
        "--velscale", type=float, help="log-rebinned pixel in km/s (default: the data's)"
    )
    g.add_argument(
        "--velscale-ratio", type=int, default=2, help="template pixels per pixel (default 2)"
    )
    g.add_argument(
        "--fwhm",
        default="auto",
        help="instrument FWHM in Angstrom, 'muse' (Bacon+17 LSF), an LSF file (text or FITS "
        "table of wavelength and FWHM in Angstrom) or 'none' (default: muse when INSTRUME = "
        "MUSE, else the cube's own LSF extension (MaNGA: LSFPRE, median over spaxels), else "
        "required)",
    )
    g.add_argument(
        "--fwhm-templates",
        metavar="FWHM",
        help="the library's FWHM in A, or an LSF file (text or FITS table of the library's "
        "wavelength and FWHM in A) for a library whose resolution varies, e.g. E-MILES beyond "
        "the MILES range (default: the library file's, else 2.51, MILES)",
    )
    g.add_argument(
        "--normalise",
        choices=("light", "mass"),
        default="light",
        help="template normalisation: light in --norm-range or mass (default light)",
    )
    g.add_argument(
        "--norm-range",
        type=float,
        nargs=2,
        default=(5070.0, 5950.0),
        metavar=("LAM0", "LAM1"),
        help="with --normalise light: the rest-frame band in Angstrom over which each template "
        "is divided by its mean flux, so the weights are light fractions there (default: "
        "5070 5950, the V band's FWHM as in pPXF's examples)",
    )
    g.add_argument(
        "--age-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="keep the templates with ages in [MIN, MAX] Gyr (default: all)",
    )
    g.add_argument(
        "--metal-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="keep the templates with [M/H] in [MIN, MAX] dex (default: all)",
    )
    g.add_argument(
        "--template-pattern",
        default="*.fits",
        help="glob of the FITS files to read in a --templates folder (default: %(default)s)",
    )
    g.add_argument("--kinematics", help="per-bin table (fits/ecsv/csv) or 'ppxf' (default)")
    g.add_argument(
        "--ppxf-moments",
        type=int,
        choices=(2, 4),
        help="with --kinematics ppxf: pPXF's moments, 2 (V, sigma) or 4 (+ h3, h4) (default 2)",
    )
    g.add_argument(
        "--ppxf-degree",
        type=int,
        help="with --kinematics ppxf: pPXF's additive polynomial degree (default 4; -1 none)",
    )
    g.add_argument(
        "--template-margin",
        type=float,
        default=2000.0,
        metavar="KMS",
        help="template coverage beyond the data on each side, km/s: at least |V| + 5 sigma "
        "of the broadest bin (default 2000; raise it for sigma above ~400 km/s)",
    )
    g.add_argument("--mask-lines", help="line list: name wavelength_A half_width_kms rest|observed")
    g.add_argument("--no-line-mask", action="store_true", help="mask no lines")
    g.add_argument(
        "--data-ext", help="data extension (default DATA/FLUX/SCI, else the first image HDU)"
    )
    g.add_argument("--var-ext", help="variance extension (default ERRDATA/STAT/VAR/VARIANCE)")
    g.add_argument(
        "--ivar-ext",
        help="inverse-variance extension instead of a variance (default: IVAR/INVVAR when the "
        "file has no variance); 0 marks a bad pixel",
    )
    g.add_argument(
        "--noise-ext",
        help="1-sigma noise extension instead of a variance (default: UNCERT by its UTYPE, "
        "else ERR/ERROR/NOISE/SIGMA when the file has no variance)",
    )
    g.add_argument(
        "--dq-ext",
        default="auto",
        help="data-quality extension, non-zero = bad pixel (excluded), but MaNGA MASK: "
        "FORESTAR or DONOTUSE set, JWST DQ: DO_NOT_USE set; 'none' reads none (default: "
        "QUALDATA, DQ, BADPIX or MASK when the file has one)",
    )
    g.add_argument(
        "--scheduler",
        help="Dask scheduler address for pPXF's per-bin kinematics, the long step (default: "
        "here, one bin per CPU at a time; ~0.7 s per bin and core with 150 E-MILES templates)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar over the bins")
    p.set_defaults(_cube_only={a.dest: a.default for a in g._group_actions})


def refuse_cube_options_without_cube(args: argparse.Namespace) -> None:
    """Refuse the FITS path's options on the array path, where nothing would read them."""
    given = [
        f"--{dest.replace('_', '-')}"
        for dest, default in args._cube_only.items()
        if getattr(args, dest) != default
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)}: these apply to a FITS cube (give it as the first argument); "
            "arrays are stored as given"
        )


def _require(*modules: str) -> None:
    """Refuse, with the install command, when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"this command needs {', '.join(missing)}: pip install 'nnfit[spectral]'")


def _bin_bar(enabled: bool | None) -> Callable[[int, int], None]:
    """``progress(done, total)`` for pPXF's bins: a bar on a terminal, made at the first bin."""
    from nnfit.progress import progress

    state: dict[str, Any] = {}

    def on_bin(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = progress(total, desc="pPXF kinematics", unit="bin", enabled=enabled)
        bar = state["bar"]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return on_bin


def init_from_cube(args: argparse.Namespace) -> int:
    """Run ``nnfit spectral init CUBE.fits ...``."""
    _require("astropy", *(["vorbin"] if args.target_sn is not None else []))
    from nnfit.spectral.ifu_store import store_from_ifu_cube
    from nnfit.spectral.kinematics import read_kinematics_table, read_losvd_file
    from nnfit.spectral.linemask import read_line_list

    # what the store was built from is logged at INFO: the LSF the templates were matched to
    # (and where they are already broader than it), the DQ pixels excluded, the flux unit
    logging.getLogger("nnfit.spectral").setLevel(logging.INFO)

    if not args.templates:
        raise ValueError("--templates: give the template library (.npz or a folder of FITS)")
    mixed = [
        f"--{n.replace('_', '-')}"
        for n in (
            "npz",
            "tem_pix",
            "obs_pix",
            "datacube",
            "mask",
            "noise",
            "xpix",
            "ypix",
            "binnum",
            "template_meta",
            "datacube_layout",
            "flux_scale",
            "medium_templates",
        )
        if getattr(args, n, None)
    ]
    if mixed:
        raise ValueError(
            f"{', '.join(mixed)}: these build a store from arrays; with a FITS cube the cube, "
            "--templates and --kinematics/--losvd say everything"
        )
    # None unless given (the array path fills in its defaults): a given value would be ignored
    model = [
        f"--{n.replace('_', '-')}"
        for n in ("kernel", "convention", "vsyst", "safety_pad_px")
        if getattr(args, n, None) is not None
    ]
    if model:
        raise ValueError(
            f"{', '.join(model)}: these set up a store built from arrays; with a FITS cube the "
            "store's model is the exact 'fourier' one in pPXF's velocity convention, its "
            "systemic velocity follows from --redshift and the template grid, and its template "
            "margin is --template-margin; drop them (a 'linear' store from a cube: "
            "nnfit.spectral.store_from_ifu_cube(kernel='linear') in Python)"
        )
    if args.kinematics and args.losvd:
        raise ValueError("give --kinematics or --losvd, not both")
    ppxf_opts = {
        k: v
        for k, v in (("ppxf_moments", args.ppxf_moments), ("ppxf_degree", args.ppxf_degree))
        if v is not None
    }
    if ppxf_opts and (args.losvd or args.kinematics not in (None, "ppxf")):
        raise ValueError(
            "--ppxf-moments/--ppxf-degree set up pPXF's kinematics; drop them with a "
            "kinematics table or --losvd"
        )
    if args.scheduler is not None and (args.losvd or args.kinematics not in (None, "ppxf")):
        raise ValueError(
            "--scheduler spreads pPXF's per-bin kinematics over a Dask cluster; with a "
            "kinematics table or --losvd there are none to fit: drop --scheduler"
        )
    kin = None
    if args.kinematics:
        kin = "ppxf" if args.kinematics == "ppxf" else read_kinematics_table(args.kinematics)
    losvd = (
        read_losvd_file(args.losvd, args.vel_pix and np.load(args.vel_pix)) if args.losvd else None
    )
    lines = (
        [] if args.no_line_mask else (read_line_list(args.mask_lines) if args.mask_lines else None)
    )
    bin_map = None
    if args.bin_map:
        if not Path(args.bin_map).exists():
            raise FileNotFoundError(f"--bin-map: {args.bin_map} does not exist")
        bin_map = np.load(args.bin_map, allow_pickle=False)
    fwhm = args.fwhm
    if fwhm == "none":
        fwhm = None
    elif fwhm not in ("muse", "auto"):
        try:
            fwhm = float(fwhm)
        except ValueError:
            if not Path(fwhm).is_file():
                raise ValueError(
                    f"--fwhm must be a number (A), 'muse', 'auto', 'none' or an LSF file; "
                    f"{fwhm!r} is none of these"
                ) from None
            fwhm = Path(fwhm)
    fwhm_tem: float | Path | None = None
    if args.fwhm_templates is not None:
        try:
            fwhm_tem = float(args.fwhm_templates)
        except ValueError:
            fwhm_tem = Path(args.fwhm_templates)
            if not fwhm_tem.is_file():
                raise ValueError(
                    f"--fwhm-templates must be a number (A) or an LSF file; "
                    f"{args.fwhm_templates!r} is neither"
                ) from None
        if isinstance(fwhm_tem, float) and not 0 < fwhm_tem < float("inf"):
            raise ValueError(f"--fwhm-templates must be > 0 A; got {args.fwhm_templates}")
    info = store_from_ifu_cube(
        args.cube,
        args.templates,
        args.out,
        redshift=args.redshift,
        target_sn=args.target_sn,
        bin_map=bin_map,
        min_sn=args.min_sn,
        covariance=args.covariance,
        lam_range=args.lam_range,
        x_range=args.x_range,
        y_range=args.y_range,
        velscale=args.velscale,
        velscale_ratio=args.velscale_ratio,
        fwhm_gal=fwhm,
        fwhm_tem=fwhm_tem,
        normalisation=args.normalise,
        norm_range=tuple(args.norm_range),
        age_range=args.age_range,
        metal_range=args.metal_range,
        template_pattern=args.template_pattern,
        lines=lines,
        kinematics=kin,
        losvd=losvd,
        **ppxf_opts,
        data_ext=args.data_ext,
        var_ext=args.var_ext,
        noise_ext=args.noise_ext,
        ivar_ext=args.ivar_ext,
        medium=args.medium_obs,
        margin_kms=args.template_margin,
        dq_ext=None if args.dq_ext.lower() == "none" else args.dq_ext,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        progress=_bin_bar(enabled=False if args.no_progress else None),
    )
    print(
        f"wrote {info['path']}: {info['S']} bins from {info['spaxels']} spaxels, L={info['L']} "
        f"pixels at {info['velscale']:.2f} km/s ({info['n_masked']} masked), P={info['P']} "
        f"templates, V={info['V']} LOSVD bins; kinematics from {info['kinematics']}"
    )
    if info["dq_ext"]:
        print(
            f"data quality: extension {info['dq_ext']} flags {info['dq_flagged']} pixels of the "
            "selection bad: excluded (--dq-ext none keeps them)"
        )
    print(
        f"next: nnfit spectral fit {info['path']} --per-bin (each bin on its own, pPXF style) "
        f"or without --per-bin (the global fit: one weight array for all bins), then nnfit "
        f"spectral maps {info['path']}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``maps`` to the ``cube`` group."""
    p = sub.add_parser(
        "maps",
        help="population maps (FITS with WCS + PNG) of a fitted store",
        description="Per-bin and per-spaxel maps of chi^2/dof, light- and mass-weighted age "
        "and [M/H], component mass fractions and the bin map (maps.fits, with the cube's "
        "celestial WCS), the age x [M/H] weight grid of each component, and residual spectra "
        "of the worst and a typical bin. Reads /BinFit (nnfit spectral fit --per-bin) or "
        "/X_global.\n\nexample:\n  nnfit spectral maps store.h5 --out maps/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="fitted cube store (.h5)")
    p.add_argument("--out", default="maps", help="output folder (default: %(default)s)")
    p.add_argument(
        "--degree",
        type=int,
        help="additive polynomial degree of the fit: read from the fit's record; needed only "
        "for a global fit stored without one (default then -1)",
    )
    p.add_argument(
        "--mdegree",
        type=int,
        help="multiplicative polynomial degree of the fit: as --degree (default then 0)",
    )
    p.add_argument(
        "--fit",
        choices=("per-bin", "global"),
        help="which fit to map where the store holds both (default: the one written last)",
    )
    p.set_defaults(func=_maps)


def _maps(args: argparse.Namespace) -> int:
    from nnfit.spectral.maps import write_maps

    _require("astropy")
    if not Path(args.store).exists():
        raise FileNotFoundError(f"{args.store}: no such file")
    res = write_maps(args.store, args.out, degree=args.degree, mdegree=args.mdegree, fit=args.fit)
    chi = res["chi2_dof"]
    st = res["settings"]
    print(
        f"wrote {len(res['files'])} files to {args.out} ({res['source']} fit, {chi.size} bins, "
        f"degree {st['degree']}, mdegree {st['mdegree']}, regul {st['regul']}; "
        f"chi2/dof median {np.median(chi):.3f}, max {chi.max():.3f})"
    )
    return 0
