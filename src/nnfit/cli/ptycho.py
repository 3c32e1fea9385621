"""``nnfit ptycho``: ptychography dataset fixtures (simulate, make, verify)."""

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

_VERIFY_EPILOG = """\
examples:
  nnfit ptycho verify tests/fixtures/pytorch_integration/minimal_dataset_v1.npz
  nnfit ptycho verify fx/spread.npz --metadata fx/spread.json --alignment

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


def _make(args: argparse.Namespace) -> int:
    from nnfit import __version__
    from nnfit.ptycho.subset import _generate

    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("nnfit", "__main__.py")) else []
    command = f"nnfit {shlex.join(argv)}" if argv else "nnfit ptycho make"
    out, meta, checksum = _generate(
        args.source,
        args.output,
        args.subset_size,
        args.strategy,
        args.seed,
        args.metadata_out,
        args.layout,
        overwrite=args.overwrite,
        command=f"{command} (nnfit {__version__})",
    )
    print(f"fixture  {out} ({out.stat().st_size} bytes, {args.subset_size} scans, {args.strategy})")
    print(f"sidecar  {meta}")
    print(f"checksum {checksum}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from nnfit.ptycho.verify import verify_fixture

    report = verify_fixture(args.path, args.metadata, alignment=args.alignment)
    print(report)
    return 0 if report.ok else 1
