"""Data from outside the file (external links, virtual datasets, external raw storage) is
refused unless the user opts in; a truncated file is refused at once, naming it."""

from __future__ import annotations

import shutil
import time

import h5py
import numpy as np
import pytest

from nnfit.cli import main
from nnfit.io.hdf5 import ALLOW_EXTERNAL_ENV, open_h5


@pytest.fixture
def other(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["mask"] = np.ones(4, bool)
    return p


def _external_link(path, other):
    with h5py.File(path, "a") as f:
        f["Mask"] = h5py.ExternalLink(str(other), "/mask")


def _virtual(path, other):
    layout = h5py.VirtualLayout(shape=(4,), dtype=bool)
    layout[:] = h5py.VirtualSource(str(other), "mask", shape=(4,))
    with h5py.File(path, "a") as f:
        f.create_virtual_dataset("Mask", layout)


def _external_raw(path, other):
    raw = other.with_suffix(".bin")
    raw.write_bytes(bytes(range(4)))
    with h5py.File(path, "a") as f:
        f.create_dataset("Mask", shape=(4,), dtype="u1", external=[(str(raw), 0, 4)])


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (_external_link, "external link"),
        (_virtual, "virtual dataset"),
        (_external_raw, "external file"),
    ],
)
@pytest.mark.parametrize("mode", ["r", "a"])
def test_foreign_data_refused_unless_allowed(tmp_path, other, make, what, mode, monkeypatch):
    monkeypatch.delenv(ALLOW_EXTERNAL_ENV, raising=False)
    p = tmp_path / "store.h5"
    with open_h5(p, "w") as f:
        f["x"] = np.arange(3.0)
    make(p, other)
    with pytest.raises(ValueError, match=f"/Mask .*{what}.*--allow-external") as exc:
        open_h5(p, mode)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)
    with open_h5(p, mode, allow_external=True) as f:
        assert f["Mask"].shape == (4,)
    monkeypatch.setenv(ALLOW_EXTERNAL_ENV, "1")
    with open_h5(p, mode) as f:
        assert f["Mask"].shape == (4,)


def test_external_link_to_missing_file_is_a_clear_error_even_when_allowed(tmp_path, other):
    p = tmp_path / "store.h5"
    with open_h5(p, "w") as f:
        f["x"] = np.arange(3.0)
    _external_link(p, other)
    other.unlink()
    with pytest.raises(ValueError, match=r"external link to .*other\.h5:/mask, which cannot be"):
        open_h5(p, allow_external=True)


def test_cli_refuses_linked_store_and_opts_in_with_flag(small_store, tmp_path, other, capsys):
    with h5py.File(small_store, "a") as f:
        del f["Mask"]
        f["Mask"] = h5py.ExternalLink(str(other), "/mask")
    assert main(["spectral", "status", str(small_store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/Mask is an external link" in err[0] and "--allow-external" in err[0]
    # Opted in, the link is followed (and then judged like any other mask: wrong length here).
    main(["spectral", "status", str(small_store), "--allow-external"])
    assert "external link" not in capsys.readouterr().err
    assert ALLOW_EXTERNAL_ENV not in __import__("os").environ


@pytest.mark.parametrize("keep", [0.5, 0.05, 30 / 1e9])
def test_truncated_store_refused_at_once_naming_it(small_store, tmp_path, keep):
    cut = tmp_path / "cut.h5"
    data = small_store.read_bytes()
    cut.write_bytes(data[: max(20, int(len(data) * keep))])
    t0 = time.monotonic()
    for mode in ("r", "a"):
        with pytest.raises(ValueError, match=r"cut\.h5: truncated HDF5 file"):
            open_h5(cut, mode)
    assert time.monotonic() - t0 < 30  # generous: the bug was an endless SWMR retry
    shutil.copyfile(small_store, cut)
    with open_h5(cut) as f:
        assert "DataCube" in f
