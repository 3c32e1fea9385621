"""``nnfit spectral`` (alias ``cube``): the group, and its commands simulate, init, build,
status, snapshot, compress (fit, reconstruct and dashboard are in :mod:`nnfit.cli.spectral_fit`,
init from a FITS cube and maps in :mod:`nnfit.cli.spectral_ifu`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_F = argparse.RawDescriptionHelpFormatter

#: the arrays ``init`` takes (the first six are required), as ``--tem-pix`` ... flags or .npz keys
_INIT_ARRAYS = (
    "tem_pix",
    "obs_pix",
    "vel_pix",
    "losvd",
    "datacube",
    "templates",
    "mask",
    "noise",
    "xpix",
    "ypix",
    "binnum",
)

_SIMULATE_HELP = """\
Write a synthetic cube store with a known answer: templates with absorption lines on a
continuum over an age x metallicity grid ("ssp", nearly collinear like real libraries) or
random line lists ("random", well conditioned), per-spaxel Gauss-Hermite LOSVDs, an observed
grid uniform in wavelength, noise at the given S/N. The true weights go to /Truth/x_true
(C, P) and the noise-free model to /Truth/model (S, L).

examples:
  nnfit spectral simulate --out cube.h5
  nnfit spectral simulate --out big.h5 --spaxels 256 --components 8 --populations 96 \\
      --tem-pix 4000 --obs-pix 1000 --mask-fraction 0.15
"""

_INIT_HELP = """\
Create a store from your own arrays (.npy files, or one .npz holding them by these names):
  tem_pix    (T,)        natural ln(lambda) of the templates, uniform
  obs_pix    (L,)        natural ln(lambda) of the observed pixels, increasing
  vel_pix    (V,)        LOSVD bin centres, km/s
  losvd      (S, V, C)   non-negative LOSVD histograms
  datacube   (S, L) or (L, S)  observed spectra (--datacube-layout when S == L)
  templates  (T, ...)    templates on tem_pix, e.g. (T, nZ, nAge)
  mask (L,) bool, True = fitted; noise like datacube; xpix, ypix, binnum (nPix,)  optional

Every array is checked (shapes, NaN/Inf on fitted pixels, LOSVD >= 0, template coverage of
the observed range plus the largest LOSVD shift); errors say which array, what was expected
and what was found.

examples:
  nnfit spectral init --npz problem.npz --out cube.h5
  nnfit spectral init --tem-pix tem.npy --obs-pix obs.npy --vel-pix vel.npy --losvd losvd.npy \\
      --datacube cube.npy --templates tpl.npy --mask mask.npy --out cube.h5
"""

_BUILD_HELP = """\
Compute every model spectrum models[s, c, p, :] = Rebin(LOSVD[s, :, c] (*) T_p) into
/HyperCube/models (S, C, P, L) float32, one tile (S_chunk x C_chunk x P_chunk x L) at a time.
Worker processes compute tiles; this process is the only writer and keeps the file readable
(SWMR) for 'nnfit spectral status' and 'nnfit spectral snapshot' meanwhile.

Interrupt it any way you like (Ctrl-C, kill -9, a node failure): running the same command
again finishes only the missing tiles, and the result is identical to an uninterrupted build.
Changing the tile sizes of a partial build is refused unless you pass --overwrite.

examples:
  nnfit spectral build cube.h5
  nnfit spectral build cube.h5 --s-chunk 64 --workers 8
  nnfit spectral build cube.h5 --scheduler tcp://10.0.0.5:8786     # tiles on a Dask cluster
"""


def _add(sub, name, help_, desc, func):
    p = sub.add_parser(name, help=help_, description=desc, formatter_class=_F)
    p.set_defaults(func=func)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``spectral`` command group (alias ``cube``) to the top-level parser."""
    from nnfit.cli import spectral_fit, spectral_ifu

    parser = subparsers.add_parser(
        "spectral",
        aliases=["cube"],
        help="spectral cube fitting (CubeFit); alias: cube",
        description="Spectral cube fitting (CubeFit): stellar templates convolved with per-spaxel "
        "LOSVDs, rebinned to the observed grid, and one global non-negative weight vector "
        "fitted to every spaxel.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_commands(sub)
    spectral_fit.add_commands(sub)
    spectral_ifu.add_commands(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--allow-external",
            action="store_true",
            help="follow HDF5 external links, virtual datasets and external raw storage in the "
            "store (refused by default: a store's data must live inside it)",
        )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``spectral`` group."""
    p = _add(
        sub,
        "simulate",
        "write a synthetic cube store with a known answer",
        _SIMULATE_HELP,
        _simulate,
    )
    p.add_argument("--out", required=True, help="store to write (.h5)")
    p.add_argument("--spaxels", type=int, default=16, help="S spaxels (default: %(default)s)")
    p.add_argument(
        "--components",
        type=int,
        default=2,
        help="C LOSVD components per spaxel (default: %(default)s)",
    )
    p.add_argument(
        "--populations", type=int, default=12, help="P template populations (default: %(default)s)"
    )
    p.add_argument(
        "--tem-pix", type=int, default=1500, help="T template pixels (default: %(default)s)"
    )
    p.add_argument(
        "--obs-pix", type=int, default=300, help="L observed pixels (default: %(default)s)"
    )
    p.add_argument("--vel", type=int, default=41, help="V LOSVD bins (default: %(default)s)")
    p.add_argument(
        "--templates",
        choices=("ssp", "random"),
        default="ssp",
        help="template kind (default: %(default)s)",
    )
    p.add_argument(
        "--snr", type=float, default=50.0, help="median S/N per pixel (default: %(default)s)"
    )
    p.add_argument(
        "--mask-fraction",
        type=float,
        default=0.0,
        help="fraction of pixels masked (default: %(default)s)",
    )
    p.add_argument("--no-noise", action="store_true", help="data = noise-free model")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    from nnfit.cli import spectral_ifu as cli_ifu

    p = _add(
        sub,
        "init",
        "create a store from a FITS IFU cube or from your own arrays",
        cli_ifu.INIT_FROM_CUBE_HELP + "\n" + _INIT_HELP,
        _init,
    )
    p.add_argument("--out", required=True, help="store to write (.h5)")
    cli_ifu.add_init_arguments(p)
    p.add_argument("--npz", help="one .npz holding the arrays by the names above")
    for name in _INIT_ARRAYS:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            help={
                "templates": "template library (.npz or folder) with a FITS cube; else .npy",
                "losvd": "losvd as .npy; with a FITS cube also .npz (losvd, vel_pix) or .h5 "
                "(/LOSVD, /VelPix)",
            }.get(name, f"{name} as a .npy file"),
        )
    p.add_argument(
        "--datacube-layout",
        choices=("SL", "LS"),
        help="orientation of datacube/noise; needed when S == L",
    )
    # Array-path options default to None so that the FITS path can tell a given flag (refused
    # there: nothing would read it) from an absent one; _ARRAY_DEFAULTS fills them in.
    p.add_argument(
        "--safety-pad-px",
        type=int,
        help="template pixels required beyond the largest LOSVD shift (default: 2)",
    )
    p.add_argument(
        "--template-meta", help="JSON with template axis names/values, stored in template_meta_json"
    )
    p.add_argument(
        "--kernel",
        choices=("linear", "fourier"),
        help="model: 'fourier' = exact band-limited placement (pPXF's); 'linear' = the "
        "HyperCube builder's (default: linear)",
    )
    p.add_argument(
        "--convention",
        choices=("cz", "ppxf"),
        help="velocity convention of vel_pix and --vsyst: 'cz' (v = c z) or 'ppxf' "
        "(V = c ln(1+z)) (default: cz)",
    )
    p.add_argument("--vsyst", type=float, help="systemic velocity, km/s (fourier; default 0)")
    p.add_argument(
        "--flux-scale",
        choices=("data",),
        default=None,
        help="'data': scale each spaxel's LOSVD by its mean flux (unit-normalised LOSVDs)",
    )
    p.add_argument(
        "--medium-obs",
        choices=("air", "vacuum"),
        help="wavelength medium of the data (with a FITS cube: needed only when CTYPE3 is "
        "neither AWAV nor WAVE)",
    )
    p.add_argument(
        "--medium-templates",
        choices=("air", "vacuum"),
        help="wavelength medium of the templates (--tem-pix), recorded in the store: one other "
        "than --medium-obs is refused (default: unknown, not checked); arrays only: with a "
        "FITS cube the library's own medium is used",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = _add(sub, "build", "build (or resume) the HyperCube of a store", _BUILD_HELP, _build)
    p.add_argument("store", help="cube store (.h5)")
    p.add_argument(
        "--s-chunk", type=int, default=128, help="spaxels per tile (default: %(default)s)"
    )
    p.add_argument(
        "--c-chunk", type=int, default=1, help="components per tile (default: %(default)s)"
    )
    p.add_argument(
        "--p-chunk", type=int, default=360, help="populations per tile (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: all CPUs; 0 = this process)",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf"),
        default=None,
        help="compress while building (slower; default: none, use 'nnfit spectral compress' after)",
    )
    p.add_argument(
        "--scheduler", default=None, help="Dask scheduler address for the tiles (default: local)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard a partial HyperCube built with other tile sizes or inputs",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(
        sub,
        "status",
        "tiles done and template-coverage margins of a store",
        "Print the HyperCube's shape, chunks and tiles done, and the template coverage report "
        "(safe, margins on both sides). Safe to run while a build writes the file.\n\n"
        "example:\n  nnfit spectral status cube.h5",
        _status,
    )
    p.add_argument("store", help="cube store (.h5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")

    p = _add(
        sub,
        "snapshot",
        "four-panel sanity figure (works during a build)",
        "Write a PNG with: observed spectra (masked pixels shaded), templates rebinned before "
        "convolution, LOSVDs with their kernels on ln(lambda) offsets, and stored models of "
        "finished tiles overlaid with the same rows recomputed from the inputs. Reads the file "
        "in SWMR mode, so it works while 'nnfit spectral build' runs.\n\n"
        "example:\n  nnfit spectral snapshot cube.h5 --out prefit_overlay.png",
        _snapshot,
    )
    p.add_argument("store", help="cube store (.h5)")
    p.add_argument(
        "--out", default="prefit_overlay.png", help="PNG to write (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="which spaxels/tiles to show (default: %(default)s)"
    )

    p = _add(
        sub,
        "compress",
        "compress a finished HyperCube, crash-safely",
        "Rewrite the store with /HyperCube/models compressed. The compressed copy is written "
        "next to the store and moved over it at the end, so an interruption leaves the "
        "uncompressed store intact (needs free space for the copy).\n\n"
        "example:\n  nnfit spectral compress cube.h5 --codec gzip --level 2",
        _compress,
    )
    p.add_argument("store", help="cube store (.h5)")
    p.add_argument(
        "--codec",
        choices=("gzip", "lzf"),
        default="gzip",
        help="HDF5 compression filter: gzip (smaller) or lzf (faster) (default: %(default)s)",
    )
    p.add_argument("--level", type=int, default=2, help="gzip level 0-9 (default: %(default)s)")
    p.add_argument("--no-shuffle", action="store_true", help="disable the byte-shuffle filter")


def _simulate(args: argparse.Namespace) -> int:
    from nnfit.io.hdf5 import create_h5, staged_h5
    from nnfit.spectral.simulate import simulate_cube

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    sim = simulate_cube(
        args.spaxels,
        args.components,
        args.populations,
        n_tem_pix=args.tem_pix,
        n_obs_pix=args.obs_pix,
        n_vel=args.vel,
        templates=args.templates,
        snr=args.snr,
        mask_fraction=args.mask_fraction,
        noise=not args.no_noise,
        seed=args.seed,
    )
    with staged_h5(out) as tmp:
        sim.to_h5(tmp)
        with create_h5(tmp, "r+") as f:
            g = f.create_group("Truth")
            g.create_dataset("x_true", data=sim.x_true)
            g.create_dataset("model", data=sim.model)
    sh = sim.shape
    print(
        f"wrote {out}: S={sh['S']} C={sh['C']} P={sh['P']} L={sh['L']} T={sh['T']} V={sh['V']}, "
        f"{int((~sim.mask).sum())} pixels masked; truth in /Truth/x_true"
    )
    print(_next_steps(out, "linear"))
    return 0


def _next_steps(store: Path, kernel: str) -> str:
    """The commands after a store is written: the exact fit, and the HyperCube route of
    ``--method kaczmarz`` where the builder supports the store's model (``kernel="linear"``)."""
    hint = f"next: nnfit spectral fit {store} (the exact fit; no HyperCube needed)"
    if kernel == "linear":
        hint += f"; for --method kaczmarz first nnfit spectral build {store}"
    return hint


def _load_array(path: str | None, name: str):
    if path is None:
        return None
    from nnfit.io.arrays import load_npy

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--{name.replace('_', '-')}: {p} does not exist")
    return load_npy(p)


def _read_template_meta(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"--template-meta: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"--template-meta must be a JSON object; got {type(meta).__name__}")
    return meta


_ARRAY_DEFAULTS = {"safety_pad_px": 2, "kernel": "linear", "convention": "cz", "vsyst": 0.0}


def _init(args: argparse.Namespace) -> int:
    from nnfit.io.hdf5 import staged_h5
    from nnfit.io.paths import refuse_output_over_input
    from nnfit.spectral.manager import H5Manager

    if args.cube is not None:
        from nnfit.cli.spectral_ifu import init_from_cube

        return init_from_cube(args)

    from nnfit.cli.spectral_ifu import refuse_cube_options_without_cube

    refuse_cube_options_without_cube(args)
    for dest, default in _ARRAY_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    names = _INIT_ARRAYS
    out = Path(args.out)
    refuse_output_over_input(
        [out], [v for n in ("npz", *names) if (v := getattr(args, n)) is not None]
    )
    arrays = {}
    if args.npz:
        if not Path(args.npz).exists():
            raise FileNotFoundError(f"--npz: {args.npz} does not exist")
        from nnfit.io.npz import read_npz

        arrays = {k: v for k, v in read_npz(args.npz).items() if k in names}
    for name in names:
        arr = _load_array(getattr(args, name), name)
        if arr is not None:
            arrays[name] = arr
    missing = [n for n in names[:6] if n not in arrays]
    if missing:
        where = f" (--npz {args.npz} holds {', '.join(sorted(arrays)) or 'none of them'})"
        raise ValueError(
            f"missing required arrays: {', '.join(missing)}{where if args.npz else ''}; give "
            f"them in the .npz or as --{missing[0].replace('_', '-')} etc."
        )
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    meta = _read_template_meta(args.template_meta)
    # Staged: a rejected array or an interruption leaves the old store (or none), never a stub.
    with staged_h5(out) as tmp:
        mgr = H5Manager(tmp, arrays["tem_pix"], arrays["obs_pix"])
        mgr.set_velocity_grid(arrays["vel_pix"])
        mask = arrays.get("mask")
        mgr.populate_from_arrays(
            arrays["losvd"],
            arrays["datacube"],
            arrays["templates"],
            mask=mask,
            xpix=arrays.get("xpix"),
            ypix=arrays.get("ypix"),
            binnum=arrays.get("binnum"),
            noise=arrays.get("noise"),
            datacube_layout=args.datacube_layout,
            template_meta=meta,
            safety_pad_px=args.safety_pad_px,
            kernel=args.kernel,
            convention=args.convention,
            vsyst=args.vsyst,
            flux_scale=args.flux_scale,
            medium_obs=args.medium_obs,
            medium_templates=args.medium_templates,
        )
        mgr.ensure_rebin_and_resample()
    rep = H5Manager.diagnose_rebin_edges(out, verbose=False)
    print(
        f"wrote {out} (kernel={args.kernel}); template margins {rep['left_margin_px']} / "
        f"{rep['right_margin_px']} px (safe)"
    )
    print(_next_steps(out, args.kernel))
    return 0


def _build(args: argparse.Namespace) -> int:
    from nnfit.spectral.hypercube import build_hypercube

    try:
        info = build_hypercube(
            args.store,
            S_chunk=args.s_chunk,
            C_chunk=args.c_chunk,
            P_chunk=args.p_chunk,
            n_workers=args.workers,
            compression=args.compression,
            overwrite=args.overwrite,
            scheduler=args.scheduler,
            progress=False if args.no_progress else None,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished tiles are kept. Resume with: nnfit spectral build {args.store}"
        )
        return 130
    S, C, P, L = info["shape"]
    sS, sC, sP = info["chunks"]
    rate = ""
    if "steady_tiles_per_s" in info:  # without start-up; a tile holds sS*sC pairs x sP pops
        ms = 1e3 / (info["steady_tiles_per_s"] * sS * sC) * (P / sP)
        rate = f", {ms:.1f} ms per (s, c) pair once running"
    print(
        f"{args.store}: HyperCube ({S}, {C}, {P}, {L}) complete; {info['tiles_built']} tiles built, "
        f"{info['tiles_skipped']} already done, {info['time_s']:.1f} s{rate}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from nnfit.spectral.diagnostics import describe_hypercube_status, hypercube_status
    from nnfit.spectral.store import StoreWriter, describe_rebin_edges

    if args.json:
        st = hypercube_status(args.store)
        st["edges"] = StoreWriter.diagnose_rebin_edges(args.store)
        print(json.dumps(st, default=list))
        return 0
    print(describe_hypercube_status(args.store, hypercube_status(args.store)))
    print(describe_rebin_edges(StoreWriter.diagnose_rebin_edges(args.store)))
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from nnfit.io.paths import refuse_output_over_input
    from nnfit.spectral.diagnostics import live_prefit_snapshot_from_models

    refuse_output_over_input([args.out], [args.store], what="--out")
    out = live_prefit_snapshot_from_models(args.store, out_png=args.out, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from nnfit.spectral.hypercube import compress_hypercube_inplace

    size0 = Path(args.store).stat().st_size
    compress_hypercube_inplace(
        args.store, codec=args.codec, level=args.level, shuffle=not args.no_shuffle
    )
    size1 = Path(args.store).stat().st_size
    print(f"{args.store}: {size0 / 1e6:.1f} MB -> {size1 / 1e6:.1f} MB ({args.codec})")
    return 0
