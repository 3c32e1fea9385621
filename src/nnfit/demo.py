"""``make demo``: run each capability's main job on built-in synthetic data."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

_DEMOS = (
    ("calcium", "nnfit.calcium.demo"),
    ("fixtures", "nnfit.fixtures.demo"),
    ("cube", "nnfit.spectral.demo"),
)


def run_all(out: str | Path, *, seed: int = 0) -> int:
    """Run every capability's ``demo.run(out_dir, seed=...)`` and report where results are."""
    root = Path(out)
    for name, module in _DEMOS:
        t0 = time.perf_counter()
        print(f"== {name} demo ==", flush=True)
        importlib.import_module(module).run(root / name, seed=seed)
        print(f"   ({time.perf_counter() - t0:.1f} s)\n", flush=True)
    print(f"All demo outputs are under {root.resolve()}")
    return 0
