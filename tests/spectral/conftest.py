"""Shared spectral fixtures: small simulated cubes and stores (others may use them)."""

from __future__ import annotations

import shutil

import pytest

from nnfit.spectral.hypercube import build_hypercube
from nnfit.spectral.simulate import simulate_cube


@pytest.fixture(scope="session")
def small_sim():
    """A small SSP-like cube: S=12, C=3, P=8 (2 x 4 grid), L=300, T=1500, V=41, 10% masked."""
    return simulate_cube(12, 3, 8, seed=7, mask_fraction=0.1)


@pytest.fixture(scope="session")
def _small_store_master(tmp_path_factory, small_sim):
    path = tmp_path_factory.mktemp("cube") / "small.h5"
    return small_sim.to_h5(path)


@pytest.fixture
def small_store(tmp_path, _small_store_master):
    """A fresh copy of the populated (not built) small store, safe to modify."""
    dst = tmp_path / "small.h5"
    shutil.copyfile(_small_store_master, dst)
    return dst


@pytest.fixture(scope="session")
def _built_store_master(tmp_path_factory, _small_store_master):
    path = tmp_path_factory.mktemp("built") / "built.h5"
    shutil.copyfile(_small_store_master, path)
    build_hypercube(path, S_chunk=5, C_chunk=1, P_chunk=3, n_workers=0)
    return path


@pytest.fixture
def built_store(tmp_path, _built_store_master):
    """A fresh copy of the small store with a complete HyperCube (chunks (5, 1, 3, L))."""
    dst = tmp_path / "built.h5"
    shutil.copyfile(_built_store_master, dst)
    return dst


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved while the test runs, in order (to read their labels)."""
    from matplotlib.figure import Figure

    saved = []
    real_savefig = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved
