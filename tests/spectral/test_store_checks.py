"""Stores changed by other tools: lying sizes, NaN data, NaN or mis-shaped HyperCubes are
refused by the commands that read them, naming the file and the dataset."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nnfit.cli import main


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error: "), err
    return err[0]


def _redeclare(path, name, n_first):
    with h5py.File(path, "a") as f:
        d = f[name]
        shape, dtype = d.shape, d.dtype
        del f[name]
        f.create_dataset(name, shape=(n_first, *shape[1:]), dtype=dtype, chunks=(1, *shape[1:]))


@pytest.mark.parametrize("cmd", [["build", "--workers", "0"], ["fit"]])
def test_store_declaring_ten_million_spaxels_is_refused_before_allocating(small_store, capsys, cmd):
    _redeclare(small_store, "DataCube", 10**7)
    _redeclare(small_store, "LOSVD", 10**7)
    assert small_store.stat().st_size < 5e6
    assert main(["spectral", cmd[0], str(small_store), *cmd[1:]]) == 2
    msg = _err(capsys)
    assert "/DataCube declares shape (10000000," in msg and "small.h5" in msg


@pytest.mark.parametrize("cmd", [["fit"], ["fit", "--method", "kaczmarz", "--no-progress"]])
def test_nan_written_into_datacube_by_another_tool_is_refused(built_store, capsys, cmd):
    with h5py.File(built_store, "a") as f:
        mask = f["Mask"][()].astype(bool) if "Mask" in f else None
        col = int(np.flatnonzero(mask)[3]) if mask is not None else 3
        f["DataCube"][2, col] = np.nan
    assert main(["spectral", *cmd[:1], str(built_store), *cmd[1:]]) == 2
    msg = _err(capsys)
    assert "/DataCube holds 1 NaN/Inf" in msg and f"(s, l) = (2, {col})" in msg
    with h5py.File(built_store) as f:
        assert "X_global" not in f


@pytest.mark.parametrize(
    "cmd", [["fit", "--method", "kaczmarz", "--no-progress"], ["reconstruct", "--x", "{x}"]]
)
def test_hypercube_with_nan_tile_is_refused(built_store, tmp_path, capsys, cmd):
    with h5py.File(built_store, "a") as f:
        m = f["HyperCube/models"]
        m[6, 1, 4, :] = np.nan
        n = m.shape[1] * m.shape[2]
    np.save(tmp_path / "x.npy", np.ones(n))
    argv = [
        "spectral",
        cmd[0],
        str(built_store),
        *(a.format(x=tmp_path / "x.npy") for a in cmd[1:]),
    ]
    assert main(argv) == 2
    msg = _err(capsys)
    assert "built.h5: /HyperCube/models[5:10, " in msg and "holds NaN/Inf" in msg


@pytest.mark.parametrize(
    "cmd", [["fit", "--method", "kaczmarz", "--no-progress"], ["reconstruct", "--x", "{x}"]]
)
def test_mis_shaped_hypercube_is_refused(built_store, tmp_path, capsys, cmd):
    with h5py.File(built_store, "a") as f:
        m = f["HyperCube/models"][()]
        del f["HyperCube/models"]
        f.create_dataset("HyperCube/models", data=m[:-2], chunks=(5, 1, 3, m.shape[3]))
        n = m.shape[1] * m.shape[2]
    np.save(tmp_path / "x.npy", np.ones(n))
    argv = [
        "spectral",
        cmd[0],
        str(built_store),
        *(a.format(x=tmp_path / "x.npy") for a in cmd[1:]),
    ]
    assert main(argv) == 2
    assert "does not match /DataCube" in _err(capsys)
    with h5py.File(built_store) as f:
        assert "ModelCube" not in f


@pytest.mark.parametrize("field, value", [("indices", 10**6), ("indptr", -5), ("data", np.nan)])
def test_a_damaged_rebin_matrix_is_refused_not_a_crash(small_store, field, value):
    # found by bench/fuzz_cli.py: an out-of-range index made scipy read out of bounds (SIGSEGV)
    from nnfit.spectral.store import load_problem

    with h5py.File(small_store, "r+") as f:
        f["RebinCSR"][field][3] = value
    with pytest.raises(ValueError, match="/RebinCSR"):
        load_problem(small_store)
