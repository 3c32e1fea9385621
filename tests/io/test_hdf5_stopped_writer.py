"""A file left open by a writer that stopped outside SWMR mode (killed, or its last writes
dropped on a full disk) is repaired before it is read; one another program is writing is not
touched."""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from nnfit.io.hdf5 import LIBVER, create_h5, open_h5, read_superblock

_WRITER = """
import os, sys, time, h5py
f = h5py.File(sys.argv[1], "r+")
f["y"] = [1.0]
f.flush()
print("open", flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # no close: the superblock still says a writer has the file
time.sleep(60)
"""


def _writer(path, how):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "open"
    return proc


@pytest.fixture
def store(tmp_path):
    p = tmp_path / "s.h5"
    with h5py.File(p, "w", libver=LIBVER) as f:
        f["x"] = np.arange(3.0)
    return p


def test_a_stopped_writer_is_repaired_before_reading(store):
    _writer(store, "die").wait()
    assert read_superblock(store)["flags"] == 1
    with pytest.raises(OSError):  # what plain HDF5 says
        h5py.File(store, "r")
    with open_h5(store) as f:
        assert f["x"][()].tolist() == [0.0, 1.0, 2.0]
    assert read_superblock(store)["flags"] == 0


def test_a_file_another_program_is_writing_is_left_alone(store):
    proc = _writer(store, "live")
    try:
        t0 = time.monotonic()
        with pytest.raises((FileExistsError, OSError)):
            open_h5(store, lock_timeout=0.5)
        assert time.monotonic() - t0 < 30
        assert read_superblock(store)["flags"] == 1  # not cleared under a live writer
    finally:
        proc.kill()
        proc.wait()


def test_create_h5_on_a_full_disk_is_one_oserror(tmp_path, monkeypatch):
    """The staged writer's file object: the first ENOSPC is recorded, later writes dropped,
    and closing raises it (a real full disk is tested in tests/cli/test_disk_full*.py)."""
    import errno

    import nnfit.io.hdf5 as hdf5

    real_open = open

    class Full:
        def __init__(self, raw):
            self.raw, self.n = raw, 0

        def __getattr__(self, name):
            return getattr(self.raw, name)

        def write(self, b):
            self.n += 1
            if self.n > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.raw.write(b)

    monkeypatch.setattr(hdf5, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left on device") as exc:
        with create_h5(tmp_path / "t.h5") as f:
            for i in range(20):
                f[f"d{i}"] = np.arange(1000.0)
    assert exc.value.errno == errno.ENOSPC and "t.h5" in str(exc.value)
