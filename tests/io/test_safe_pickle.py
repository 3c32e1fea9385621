"""Pickled .npy files are read without running anything the file names (io/safe_pickle.py)."""

from __future__ import annotations

import datetime
import os
import pathlib
import pickle

import numpy as np
import pytest

from nnfit.io import load_object_npy


class _WritesAFile:
    """What an attacker pickles: unpickling it calls ``write_text`` on a path of its choice."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


class _RunsAShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Evals:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.target)!r}).write_text('x')",))


EVIL = {"write_text": _WritesAFile, "os.system": _RunsAShell, "eval": _Evals}


def save_evil(path, kind, marker):
    """An ops.npy as a crafted suite2p folder holds it: a dict with one hostile value."""
    np.save(
        path,
        np.array({"fs": 30.0, "neucoeff": 0.7, "x": EVIL[kind](marker)}, dtype=object),
        allow_pickle=True,
    )
    assert not marker.exists()


def suite2p_ops(now=None):
    """The kinds of values suite2p 0.14 keeps in ops.npy (default_ops + run outputs)."""
    return {
        "suite2p_version": "0.14.6",
        "fs": 15.0,
        "nframes": 1500,
        "Ly": 64,
        "Lx": 48,
        "neucoeff": 0.8,
        "tau": 1.0,
        "nplanes": 1,
        "nchannels": 1,
        "save_path0": "/data/m1",
        "data_path": ["/data/m1/tiffs"],
        "filelist": ["/data/m1/a.tif", "/data/m1/b.tif"],
        "fast_disk": [],
        "yrange": [0, 64],
        "xrange": [0, 48],
        "do_registration": True,
        "meanImg": np.ones((64, 48), np.float32),
        "refImg": np.zeros((64, 48), np.int16),
        "xoff": np.zeros(1500, np.int32),
        "corrXY": np.ones(1500, np.float32),
        "badframes": np.zeros(1500, bool),
        "frames_per_file": np.array([750, 750]),
        "timing": {"registration": 12.5, "detection": 3.25},
        "snr_thresh": np.float64(1.2),
        "date_proc": now or datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
        "ignore_flyback": [],
        "diameter": (12, 12),
        "classes": {1, 2},
        "none": None,
        "path": pathlib.PurePosixPath("/data/m1"),
        "c": 1 + 2j,
        "raw": b"\x00\x01",
        "objects": np.array(["a", None, 3], dtype=object),
    }


@pytest.mark.parametrize("kind", sorted(EVIL))
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    save_evil(tmp_path / "ops.npy", kind, marker)
    with pytest.raises(ValueError, match=r"ops\.npy: refusing to load .*nnfit never runs code"):
        load_object_npy(tmp_path / "ops.npy")
    assert not marker.exists()
    # the same file through numpy's own loader would have run it: the test is meaningful
    np.load(tmp_path / "ops.npy", allow_pickle=True)
    if kind != "os.system" or os.name == "posix":
        assert marker.exists()


def test_real_suite2p_ops_load_equal_to_numpy(tmp_path):
    ops = suite2p_ops(datetime.datetime.now().astimezone())
    np.save(tmp_path / "ops.npy", ops, allow_pickle=True)
    got = load_object_npy(tmp_path / "ops.npy")
    ref = np.load(tmp_path / "ops.npy", allow_pickle=True).item()
    assert got.keys() == ref.keys() == ops.keys()
    for key, value in ref.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
        else:
            assert got[key] == value and type(got[key]) is type(value), key


def test_old_protocol_and_numpy1_module_names(tmp_path):
    """A file written by numpy 1.x names ``numpy.core.multiarray``; protocol 2 uses GLOBAL."""
    arr = np.array({"fs": 30.0, "meanImg": np.arange(4.0).reshape(2, 2)}, dtype=object)
    body = pickle.dumps(arr, protocol=2).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )
    path = tmp_path / "ops.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        f.write(body)
    got = load_object_npy(path)
    assert got["fs"] == 30.0 and got["meanImg"].tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_plain_arrays_and_garbage(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    assert load_object_npy(tmp_path / "a.npy").tolist() == [0, 1, 2]
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"not a readable \.npy"):
        load_object_npy(tmp_path / "b.npy")
    good = tmp_path / "c.npy"
    np.save(good, {"fs": 1.0}, allow_pickle=True)
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"corrupt pickled \.npy"):
        load_object_npy(good)
