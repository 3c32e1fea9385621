"""Shared synthetic sources for the fixture tests (simulated once per session)."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.ptycho import simulate_dataset, write_npz

SMALL = dict(n_scans=300, probe_size=32, object_shape=(120, 118), seed=3)


@pytest.fixture(scope="session")
def small_data() -> dict[str, np.ndarray]:
    """A 300-scan legacy-layout dataset, 32x32 patterns (arrays; copy before changing)."""
    return simulate_dataset(**SMALL, layout="legacy")


@pytest.fixture(scope="session")
def small_source(tmp_path_factory, small_data):
    """``small_data`` written as an NPZ source file."""
    path = tmp_path_factory.mktemp("src") / "small_legacy.npz"
    write_npz(path, small_data, compress=False)
    return path


@pytest.fixture(scope="session")
def big_data() -> dict[str, np.ndarray]:
    """The real-scale source: 1087 scans, 64x64 patterns, (227, 226) object, legacy layout."""
    return simulate_dataset(seed=0, layout="legacy")


@pytest.fixture(scope="session")
def big_source(tmp_path_factory, big_data):
    """``big_data`` written as an NPZ source file (uncompressed, like the original)."""
    path = tmp_path_factory.mktemp("big") / "run1084_like.npz"
    write_npz(path, big_data, compress=False)
    return path
