"""Progress bars for long work (tqdm), quiet when asked or when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(
    total: int | None = None, *, desc: str = "", unit: str = "it", enabled: bool | None = None
) -> Any:
    """Return a tqdm bar writing to stderr.

    ``enabled=None`` shows the bar only when stderr is a terminal, so logs and CI stay clean;
    ``True`` or ``False`` forces it.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True
    )
