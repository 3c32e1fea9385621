"""``nnfit ptycho``: ptychography dataset fixtures (simulate, import, make, verify)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

_MAKE_EPILOG = """\
examples:
  # the default 64-scan fixture (first 64 scans), sidecar next to it
  nnfit ptycho make --source datasets/Run1084_recon3_postPC_shrunk_3.npz \\
      --output tests/fixtures/pytorch_integration/minimal_dataset_v1.npz

  # 128 scans spread over the scanned area, explicit sidecar path
  nnfit ptycho make --source big.npz --output fx/spread.npz --subset-size 128 \\
      --strategy stratified --metadata-out fx/spread.json

  # a seeded random subset, replacing an earlier one
  nnfit ptycho make --source big.npz --output fx/rand.npz --strategy random --seed 7 --overwrite

  # a stack whose layout is ambiguous (N == H): say which it is
  nnfit ptycho make --source square.npz --output fx/sq.npz --layout legacy
"""

_SIMULATE_EPILOG = """\
examples:
  nnfit ptycho simulate --out run1084_like.npz                 # 1087 scans, (H, W, N) legacy
  nnfit ptycho simulate --out small.npz --n-scans 200 --layout canonical --seed 3
"""

_IMPORT_EPILOG = """\
examples:
  # a ptychodus product and the patterns saved from ptychodus (NPZ)
  nnfit ptycho import --product scan42_product.h5 --patterns scan42_patterns.npz \\
      --out data/scan42_source.npz
  nnfit ptycho make --source data/scan42_source.npz --output fx/scan42.npz

  # ptychodus's HDF5 training-data file (patterns, probe, object, positions in one)
  nnfit ptycho import --product scan42_training.h5 --out data/scan42_source.npz

  # patterns in an HDF5 stack nnfit does not know by name
  nnfit ptycho import --product p.h5 --patterns frames.h5 --patterns-path /entry/detector/frames \\
      --out data/source.npz

What it does: pairs each position with the pattern of the same index; coordinates from
metres to object pixels as ptychodus maps them; the probe's first mode at unit power; the
object's first layer; diffraction = sqrt(counts) / sqrt(mean counts per pattern). The
sidecar (--out with .json) lists every conversion and both inputs' SHA-256.
"""

_VERIFY_EPILOG = """\
examples:
  nnfit ptycho verify tests/fixtures/pytorch_integration/minimal_dataset_v1.npz
  nnfit ptycho verify fx/spread.npz --metadata fx/spread.json --alignment
  nnfit ptycho verify fx/spread.npz --figure fx/spread.png      # and draw what it holds

Exit status: 0 when every check passes, 1 when any fails, 2 for unusable input.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ptycho`` command group (alias ``fixture``) to the top-level parser."""
    parser = subparsers.add_parser(
        "ptycho",
        aliases=["fixture"],
        help="ptychography dataset fixtures; alias: fixture",
        description="Ptychography dataset fixtures: deterministic, contract-checked NPZ subsets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sim = sub.add_parser(
        "simulate",
        help="write a synthetic ptychography dataset (a realistic fixture source)",
        description="Simulate a ptychography dataset with the real key names (diffraction, "
        "objectGuess, probeGuess, xcoords, ycoords, xcoords_start, ycoords_start): a smooth "
        "probe scanning a textured object, far-field Poisson counts, amplitude = "
        "sqrt(counts)/scale.",
        epilog=_SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("--out", required=True, type=Path, help="output NPZ file")
    sim.add_argument(
        "--n-scans", type=int, default=1087, help="scan positions (default: %(default)s)"
    )
    sim.add_argument(
        "--probe-size", type=int, default=64, help="probe/pattern side (default: %(default)s)"
    )
    sim.add_argument(
        "--object-shape",
        type=int,
        nargs=2,
        default=(227, 226),
        metavar=("ROWS", "COLS"),
        help="object shape (default: 227 226)",
    )
    sim.add_argument(
        "--photons", type=float, default=1e6, help="photons per exposure (default: %(default)g)"
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sim.add_argument(
        "--layout",
        choices=("legacy", "canonical"),
        default="legacy",
        help="diffraction as (H, W, N) legacy or (N, H, W) canonical (default: %(default)s)",
    )
    sim.add_argument(
        "--overwrite", "--force", action="store_true", help="replace an existing output file"
    )
    sim.set_defaults(func=_simulate)

    make = sub.add_parser(
        "make",
        help="cut a deterministic fixture (NPZ + JSON sidecar) from a large dataset",
        description="Cut a small DATA-001 fixture from a ptychography NPZ: one subset of scans "
        "for every per-scan array, diffraction as (N, H, W) float32, complex64 probe and "
        "object, float64 coordinates. The NPZ is byte-identical for the same source and "
        "arguments; provenance goes to the JSON sidecar.",
        epilog=_MAKE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument("--source", required=True, type=Path, help="source NPZ dataset")
    make.add_argument(
        "--output", required=True, type=Path, help="fixture NPZ (parent folders are created)"
    )
    make.add_argument(
        "--subset-size", type=int, default=64, help="scan positions to keep, >= 16 (default: 64)"
    )
    make.add_argument(
        "--metadata-out",
        type=Path,
        default=None,
        help="sidecar JSON (default: --output with .json in place of .npz, e.g. fx/spread.json "
        "for fx/spread.npz)",
    )
    make.add_argument(
        "--strategy",
        choices=("first", "stratified", "random"),
        default="first",
        help="first N scans; spread over the scanned area; or a seeded random draw "
        "(default: %(default)s)",
    )
    make.add_argument(
        "--seed", type=int, default=None, help="seed of --strategy random (default: 0)"
    )
    make.add_argument(
        "--layout",
        choices=("legacy", "canonical"),
        default=None,
        help="source diffraction layout, needed only when ambiguous (N == H)",
    )
    make.add_argument(
        "--overwrite", "--force", action="store_true", help="replace existing output files"
    )
    make.set_defaults(func=_make)

    imp = sub.add_parser(
        "import",
        help="turn a ptychodus product and its diffraction patterns into a fixture source",
        description="Read a ptychodus product (.h5, .hdf5 or .npz: positions in metres, "
        "probe, object) and its diffraction patterns in counts (ptychodus NPZ, or an HDF5 "
        "stack: /dp, CXI /entry_1/data_1/data, /exchange/data, /entry/data/data), or "
        "ptychodus's HDF5 training-data file alone, and write a DATA-001 source NPZ that "
        "`nnfit ptycho make` cuts fixtures from.",
        epilog=_IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("--product", required=True, type=Path, help="ptychodus product file")
    imp.add_argument(
        "--patterns",
        type=Path,
        default=None,
        help="diffraction patterns (detector counts); omit when --product is ptychodus's HDF5 "
        "training-data file, which holds both",
    )
    imp.add_argument(
        "--patterns-path",
        default=None,
        metavar="DATASET",
        help="the (N, H, W) dataset in an HDF5 --patterns file, when not one nnfit knows",
    )
    imp.add_argument("--out", required=True, type=Path, help="source NPZ to write")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing source")
    imp.add_argument(
        "--allow-external",
        action="store_true",
        help="follow HDF5 external links and virtual datasets (a detector master file's data "
        "in other files; refused by default)",
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(func=_import)

    ver = sub.add_parser(
        "verify",
        help="recheck a fixture's hashes, contract and sidecar",
        description="Recompute the fixture's file and array hashes and check them, the "
        "DATA-001 contract and the sidecar's fields; print a report.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ver.add_argument("path", type=Path, help="fixture NPZ")
    ver.add_argument(
        "--metadata",
        type=Path,
        default=None,
        help="sidecar (default: the fixture's path with .json in place of .npz)",
    )
    ver.add_argument(
        "--alignment",
        action="store_true",
        help="also check that every pattern fits the forward model best at its own coordinates",
    )
    ver.add_argument(
        "--figure",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the fixture: object phase and amplitude with the probe centres, probe "
        "amplitude and phase, mean pattern (log), each pattern's misfit against the model",
    )
    ver.set_defaults(func=_verify)


# simulate_dataset's arguments as this command spells them, for its messages
_SIMULATE_FLAGS = {
    "n_scans": "--n-scans",
    "probe_size": "--probe-size",
    "object_shape": "--object-shape",
    "photons": "--photons",
    "seed": "--seed",
    "layout": "--layout",
}


def _simulate(args: argparse.Namespace) -> int:
    from nnfit.io.npz import write_npz
    from nnfit.ptycho.simulate import check_simulation_args, simulate_dataset

    if args.out.is_dir():
        raise ValueError(
            f"--out {args.out} is a folder; give a file name, e.g. --out {args.out / 'source.npz'}"
        )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    n_scans, probe_size, object_shape, photons, seed, layout = check_simulation_args(
        args.n_scans,
        args.probe_size,
        tuple(args.object_shape),
        args.photons,
        args.seed,
        args.layout,
        names=_SIMULATE_FLAGS,
    )
    data = simulate_dataset(n_scans, probe_size, object_shape, photons, seed, layout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, data, compress=False)
    d = data["diffraction"]
    print(
        f"wrote {args.out}: diffraction {d.shape} {d.dtype} ({args.layout}), {args.n_scans} scans"
    )
    return 0


def _command(default: str) -> str:
    from nnfit import __version__

    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("nnfit", "__main__.py")) else []
    return f"{f'nnfit {shlex.join(argv)}' if argv else default} (nnfit {__version__})"


def _import(args: argparse.Namespace) -> int:
    from nnfit.progress import progress
    from nnfit.ptycho.ptychodus import import_ptychodus, open_ptychodus

    if args.out.is_dir():
        raise ValueError(
            f"--out {args.out} is a folder; give a file name, e.g. {args.out / 'source.npz'}"
        )
    prod, pats = open_ptychodus(args.product, args.patterns, args.patterns_path)
    enabled = False if args.no_progress else None
    total = 2 * pats.shape[0]  # two passes; patterns without a position are not read
    with progress(total, desc="patterns (2 passes)", unit="pattern", enabled=enabled) as bar:
        out, meta_path, meta = import_ptychodus(
            prod,
            pats,
            args.out,
            overwrite=args.overwrite,
            on_block=bar.update,
            command=_command("nnfit ptycho import"),
        )
    print(f"source   {out} ({meta['scans']} scans, {out.stat().st_size} bytes)")
    print(f"sidecar  {meta_path}")
    for note in meta["transformations"]:
        print(f"  {note}")
    print(f"next: nnfit ptycho make --source {out} --output FIXTURE.npz")
    return 0


def _make(args: argparse.Namespace) -> int:
    from nnfit.ptycho.subset import _generate

    out, meta, checksum = _generate(
        args.source,
        args.output,
        args.subset_size,
        args.strategy,
        args.seed,
        args.metadata_out,
        args.layout,
        overwrite=args.overwrite,
        command=_command("nnfit ptycho make"),
    )
    print(f"fixture  {out} ({out.stat().st_size} bytes, {args.subset_size} scans, {args.strategy})")
    print(f"sidecar  {meta}")
    print(f"checksum {checksum}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from nnfit.ptycho.verify import verify_fixture

    report = verify_fixture(args.path, args.metadata, alignment=args.alignment)
    print(report)
    if args.figure is not None:
        from nnfit.io.npz import read_npz
        from nnfit.ptycho.plots import fixture_figure

        drawn = fixture_figure(read_npz(args.path), args.figure, title=args.path.name)
        print(f"figure   {drawn['path']}")
    return 0 if report.ok else 1
