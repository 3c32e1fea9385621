"""``nnfit calcium``: calcium spike deconvolution (CaTune companion)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calcium`` command group to the top-level parser."""
    parser = subparsers.add_parser(
        "calcium",
        help="calcium spike deconvolution (CaTune companion)",
        description="Calcium spike deconvolution: the CaTune Python companion.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
