"""``nnfit cube`` commands: simulate, init, build, status, snapshot, compress."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``cube`` group."""
