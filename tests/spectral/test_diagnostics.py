"""Status, snapshot, edge diagnosis and crash-safe compression."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from nnfit.io import array_sha256
from nnfit.io.hdf5 import open_h5
from nnfit.spectral.diagnostics import hypercube_status, live_prefit_snapshot_from_models
from nnfit.spectral.hypercube import build_hypercube, compress_hypercube_inplace
from nnfit.spectral.manager import H5Manager


def _digest(path):
    with open_h5(path, "r") as f:
        return array_sha256(f["HyperCube/models"][()])


def test_status_before_and_after_build(small_store, capsys):
    assert hypercube_status(small_store)["present"] is False
    H5Manager.print_hypercube_done_status(small_store)
    assert "no /HyperCube (the exact fit needs none" in capsys.readouterr().out
    build_hypercube(small_store, S_chunk=5, P_chunk=4, n_workers=0)
    st = H5Manager.print_hypercube_done_status(small_store)
    out = capsys.readouterr().out
    assert "tiles 18 / 18 done (100.0%)" in out and "chunks (5, 1, 4, 300)" in out
    assert st["complete"] and st["shape"] == (12, 3, 8, 300)


def test_snapshot_without_and_with_models(small_store, built_store, tmp_path):
    a = live_prefit_snapshot_from_models(small_store, tmp_path / "a.png")
    b = H5Manager.live_prefit_snapshot_from_models(built_store, out_png=tmp_path / "sub" / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b.stat().st_size > 20_000


def test_snapshot_panels_name_their_axes_and_keep_the_title_inside(
    built_store, tmp_path, saved_figures
):
    live_prefit_snapshot_from_models(built_store, tmp_path / "s.png")
    (fig,) = saved_figures
    (obs, tpl), (losvd, models) = np.reshape(fig.axes[:4], (2, 2))
    assert obs.get_ylabel() == "flux (/DataCube)"
    assert tpl.get_ylabel() == "template flux (/Templates)"
    assert losvd.get_ylabel() == "density per km/s"
    assert models.get_ylabel() == "model flux (/HyperCube/models)"
    assert all(ax.get_xlabel() for ax in fig.axes[:4])
    # the long title is two lines, so it fits its panel instead of running off the figure
    fig.canvas.draw()
    title = models.title.get_window_extent()
    assert "max relative difference" in models.get_title()
    assert title.x1 <= fig.bbox.x1 and title.width <= models.bbox.width


def test_compress_inplace_keeps_data_and_inputs(built_store):
    before = _digest(built_store)
    size0 = built_store.stat().st_size
    H5Manager.compress_hypercube_inplace(built_store, codec="gzip", level=2, shuffle=True)
    assert _digest(built_store) == before
    with open_h5(built_store, "r") as f:
        m = f["HyperCube/models"]
        assert m.compression == "gzip" and m.shuffle and m.chunks == (5, 1, 3, 300)
        assert bool(f["HyperCube"].attrs["complete"]) and "DataCube" in f and "dims" in f.attrs
    assert built_store.stat().st_size < size0
    with pytest.raises(ValueError, match="codec must be"):
        compress_hypercube_inplace(built_store, codec="zstd")


def test_compress_refuses_incomplete(small_store):
    with pytest.raises(ValueError, match="no /HyperCube/models"):
        compress_hypercube_inplace(small_store)


@pytest.mark.slow
def test_killed_compress_leaves_uncompressed_cube_intact(built_store):
    before = _digest(built_store)
    code = (
        "import sys, time, h5py\n"
        "from nnfit.spectral.hypercube import compress_hypercube_inplace\n"
        "orig = h5py.Dataset.__setitem__\n"
        "def slow(self, k, v):\n"
        "    if self.name == '/HyperCube/models':\n"
        "        print('copying', flush=True); time.sleep(0.5)\n"
        "    orig(self, k, v)\n"
        "h5py.Dataset.__setitem__ = slow\n"
        "compress_hypercube_inplace(sys.argv[1])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(built_store)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "copying"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = list(built_store.parent.glob(f".{built_store.name}.*"))
    assert leftovers  # the half-written compressed copy
    assert _digest(built_store) == before
    with open_h5(built_store, "r") as f:
        assert f["HyperCube/models"].compression is None
    compress_hypercube_inplace(built_store, codec="lzf")  # cleans up and succeeds
    assert not list(built_store.parent.glob(f".{built_store.name}.*.tmp*"))
    assert _digest(built_store) == before


def test_build_on_dask_matches_local(small_store, built_store):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            info = build_hypercube(small_store, S_chunk=5, P_chunk=3, scheduler=client)
    assert info["tiles_built"] == info["tiles_total"] == 27
    assert _digest(small_store) == _digest(built_store)


def test_gzip_during_build(small_store, built_store):
    build_hypercube(small_store, S_chunk=5, P_chunk=3, n_workers=0, compression="gzip")
    with open_h5(small_store, "r") as f:
        assert f["HyperCube/models"].compression == "gzip"
    assert _digest(small_store) == _digest(built_store)
    with pytest.raises(ValueError, match="compression must be None, 'gzip' or 'lzf'"):
        build_hypercube(small_store, compression="zstd")


def test_rebuilt_with_new_inputs_is_refused(built_store, small_sim):
    with open_h5(built_store, "r+") as f:
        f["HyperCube/_done"][0, 0, 0] = 0
        f["HyperCube"].attrs["complete"] = False
        f["LOSVD"][0, 0, 0] = np.float32(f["LOSVD"][0, 0, 0] + 1.0)
    with pytest.raises(ValueError, match=r"inputs .* changed"):
        build_hypercube(built_store, S_chunk=5, P_chunk=3, n_workers=0)


def test_compress_refuses_a_hypercube_not_laid_out_in_tiles(built_store):
    # found by bench/fuzz_cli.py: a contiguous (unchunked) /HyperCube/models was a TypeError
    with h5py.File(built_store, "r+") as f:
        models = f["HyperCube/models"][()]
        del f["HyperCube/models"]
        f["HyperCube/models"] = models
    with pytest.raises(ValueError, match="not laid out by a build"):
        compress_hypercube_inplace(built_store)
