"""``nnfit cube``: spectral cube fitting (CubeFit)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cube`` command group to the top-level parser."""
    parser = subparsers.add_parser(
        "cube",
        help="spectral cube fitting (CubeFit)",
        description="Spectral cube fitting (CubeFit): LOSVD-convolved templates, HyperCube, global NNLS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
