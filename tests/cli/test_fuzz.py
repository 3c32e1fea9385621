"""Malformed files and arguments for every capability (seeded, see ``fuzz_cases.py``): exit 0
with a valid result or exit 2 with one line; never a traceback, a hang or a leftover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("fuzz_cases.py")


@pytest.mark.slow
@pytest.mark.parametrize(("capability", "n"), [("calcium", 150), ("ptycho", 120), ("spectral", 60)])
def test_fuzz_capability(tmp_path, capability, n):
    env = dict(os.environ, MPLBACKEND="Agg")
    # A subprocess with a timeout: a hang inside HDF5's C code never returns to Python.
    proc = subprocess.run(
        [sys.executable, str(CASES), capability, str(n), "20261206", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cases"] == n
    assert result["failures"] == 0, "\n\n".join(result["first"])
