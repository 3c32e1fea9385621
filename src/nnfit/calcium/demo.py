"""Demo of this capability for ``make demo`` (filled in by its issue)."""

from __future__ import annotations

from pathlib import Path


def run(out_dir: Path, *, seed: int = 0) -> None:
    """Run the capability's main job on synthetic data and write results under ``out_dir``."""
    print(f"   (calcium demo not built yet; nothing written to {out_dir})")
