"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test is reproducible."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def ground_truth_dir() -> Path:
    """The CASCADE calcium ground truth beside the checkout (never copied into the repo)."""
    folder = SHARED / "datasets" / "calcium-ground-truth"
    if not (folder / "DS09-GCaMP6f-m-V1.npz").exists():
        pytest.skip(f"real calcium ground truth not found at {folder} (it lives in ../shared)")
    return folder


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m nnfit ARGS`` in a real subprocess; return the CompletedProcess."""

    def _run(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        proc = subprocess.run(
            [sys.executable, "-m", "nnfit", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"nnfit {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    return _run
