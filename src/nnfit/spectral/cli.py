"""``nnfit cube``: spectral cube fitting (CubeFit).

Commands are added by two modules so each stays small: ``cli_build`` (simulate, init, build,
status, snapshot, compress), ``cli_fit`` (fit, reconstruct, dashboard) and ``cli_ifu``
(init from a FITS cube, maps).
"""

from __future__ import annotations

import argparse

from nnfit.spectral import cli_build, cli_fit, cli_ifu


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cube`` command group to the top-level parser."""
    parser = subparsers.add_parser(
        "cube",
        help="spectral cube fitting (CubeFit)",
        description="Spectral cube fitting (CubeFit): stellar templates convolved with per-spaxel "
        "LOSVDs, rebinned to the observed grid, and one global non-negative weight vector "
        "fitted to every spaxel.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cli_build.register(sub)
    cli_fit.register(sub)
    cli_ifu.register(sub)
