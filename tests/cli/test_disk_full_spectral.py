"""Full disk during spectral init, build, compress and fit, on a real 16 MB tmpfs.

Each case: one "disk full" line, exit 2, the store untouched (same bytes) or repaired by the
next run (which then ends where an uninterrupted run ends), no temporary file left.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.simulate import simulate_cube

pytestmark = pytest.mark.slow


@pytest.fixture
def disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def _fill(mnt, leave: int) -> None:
    """Fill the disk but ``leave`` bytes with one file, ``filler``."""
    st = os.statvfs(mnt)
    with open(mnt / "filler", "wb") as fh:
        fh.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))


def _nnfit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "nnfit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, MPLBACKEND="Agg"),
        timeout=300,
    )


def _disk_full(r) -> None:
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(err) == 1 and err[0].startswith("nnfit: error: disk full"), err


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(mnt) -> set[str]:
    return {p.name for p in mnt.iterdir()}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A 3.3 MB store whose HyperCube takes 7.4 MB, and a built copy (the reference build)."""
    d = tmp_path_factory.mktemp("full")
    sim = simulate_cube(64, 2, 48, n_tem_pix=1500, n_obs_pix=300, seed=0)
    base = sim.to_h5(d / "base.h5")
    np.savez(
        d / "arrays.npz",
        tem_pix=sim.tem_pix,
        obs_pix=sim.obs_pix,
        vel_pix=sim.vel_pix,
        losvd=sim.losvd,
        datacube=sim.datacube.T,
        templates=sim.templates,
    )
    built = d / "built.h5"
    shutil.copyfile(base, built)
    r = _nnfit("spectral", "build", built, "--workers", "1", "--s-chunk", "4", cwd=d)
    assert r.returncode == 0, r.stderr
    return {"base": base, "built": built, "npz": d / "arrays.npz"}


@pytest.mark.parametrize("existing", [False, True])
def test_init_on_a_full_disk(disk, tmp_path, stores, existing):
    out = disk / "s.h5"
    if existing:
        shutil.copyfile(stores["base"], out)
        before = _sha(out)
    _fill(disk, 100_000)
    r = _nnfit(
        "spectral", "init", "--npz", stores["npz"], "--out", out, "--overwrite", cwd=tmp_path
    )
    _disk_full(r)
    if existing:
        assert _sha(out) == before
        assert _names(disk) <= {"filler", "s.h5", "s.h5.lock"}
    else:
        assert _names(disk) == {"filler"}


@pytest.mark.parametrize("leave", [100_000, 4_000_000], ids=["copy", "tiles"])
def test_build_on_a_full_disk_then_rerun(disk, tmp_path, stores, leave):
    store = disk / "s.h5"
    shutil.copyfile(stores["base"], store)
    before = _sha(store)
    _fill(disk, leave)
    args = ("spectral", "build", store, "--workers", "1", "--s-chunk", "4", "--no-progress")
    _disk_full(_nnfit(*args, cwd=tmp_path))
    assert _names(disk) <= {"filler", "s.h5", "s.h5.lock"}
    if leave == 100_000:
        assert _sha(store) == before  # the staged copy with the new HyperCube did not fit
    (disk / "filler").unlink()
    r = _nnfit(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open_h5(store) as f, open_h5(stores["built"]) as g:
        assert f["HyperCube"].attrs["complete"]
        np.testing.assert_array_equal(f["HyperCube/models"][()], g["HyperCube/models"][()])


def test_compress_on_a_full_disk(disk, tmp_path, stores):
    store = disk / "s.h5"
    shutil.copyfile(stores["built"], store)
    before = _sha(store)
    _fill(disk, 100_000)
    _disk_full(_nnfit("spectral", "compress", store, cwd=tmp_path))
    assert _sha(store) == before
    assert _names(disk) <= {"filler", "s.h5", "s.h5.lock"}


@pytest.mark.parametrize(
    "method", [("--method", "gram"), ("--method", "kaczmarz", "--epochs", "2", "--seed", "3")]
)
def test_fit_on_a_full_disk_then_rerun(disk, tmp_path, stores, method):
    ref = tmp_path / "ref.h5"
    shutil.copyfile(stores["built"], ref)
    r = _nnfit("spectral", "fit", ref, *method, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    store = disk / "s.h5"
    shutil.copyfile(stores["built"], store)
    before = _sha(store)
    _fill(disk, 20_000)
    _disk_full(_nnfit("spectral", "fit", store, *method, "--no-progress", cwd=tmp_path))
    assert _sha(store) == before  # the space for the new datasets is reserved first
    assert _names(disk) <= {"filler", "s.h5", "s.h5.lock"}
    (disk / "filler").unlink()
    r = _nnfit("spectral", "fit", store, *method, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open_h5(store) as f, open_h5(ref) as g:
        np.testing.assert_array_equal(f["X_global"][()], g["X_global"][()])
