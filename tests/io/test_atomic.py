import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nnfit.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "out.json"
    atomic_write_json(dest, {"a": 1})
    atomic_write_json(dest, {"a": 2})
    assert json.loads(dest.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("fail", [False, True])
def test_an_hdf5_written_through_it_leaves_no_lock_file(tmp_path, fail):
    # nnfit's HDF5 writers lock <file>.lock; at a temporary name nobody else locks, so that
    # lock goes with the temporary (before, one hidden lock file stayed per write)
    from nnfit.io.hdf5 import open_h5

    dest = tmp_path / "store.h5"
    for _ in range(2):
        with contextlib.suppress(RuntimeError), atomic_path(dest, suffix=".h5") as tmp:
            with open_h5(tmp, "w") as f:
                f.create_dataset("x", data=[1.0])
            assert (tmp_path / f"{tmp.name}.lock").exists()
            if fail:
                raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if fail else ["store.h5"])


def test_new_file_gets_umask_mode_and_old_mode_is_kept(tmp_path):
    dest = tmp_path / "shared.json"
    atomic_write_json(dest, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    dest.chmod(0o640)
    atomic_write_json(dest, {"a": 2})
    assert dest.stat().st_mode & 0o777 == 0o640


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    dest = tmp_path / "data.bin"
    atomic_write_bytes(dest, b"old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_interrupt_the_moment_the_temp_file_exists_removes_it(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM as SystemExit) right after the temporary file is created, before
    the writer gets it: nothing is left behind, the old file stays."""
    from nnfit.io import atomic

    dest = tmp_path / "out.npy"
    dest.write_bytes(b"old")
    real_close = os.close

    def interrupted(fd):
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "close", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_path(dest, suffix=".npy"):
        pytest.fail("the body must not run")
    monkeypatch.setattr(atomic.os, "close", real_close)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]
    assert dest.read_bytes() == b"old"


def test_a_temp_name_taken_by_another_writer_is_refused_and_left_alone(tmp_path, monkeypatch):
    from nnfit.io import atomic

    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "0" * (2 * n))
    theirs = tmp_path / f".out.json.{'0' * 16}.tmp"
    theirs.write_bytes(b"another writer's")
    with pytest.raises(FileExistsError):
        atomic_write_json(tmp_path / "out.json", {"a": 1})
    assert theirs.read_bytes() == b"another writer's"
    assert not (tmp_path / "out.json").exists()


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


_WRITER = """
import sys
from nnfit.io import atomic_write_bytes
dest = sys.argv[1]
i = 0
while True:
    i += 1
    payload = (b"%08d" % i) * (1 << 18)  # 2 MiB, every byte tied to the version number
    atomic_write_bytes(dest, payload)
"""


@pytest.mark.slow
def test_sigkill_never_leaves_a_torn_file(tmp_path):
    """Kill a real writer process at arbitrary moments: the file is always one whole version."""
    dest = tmp_path / "blob.bin"
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(dest)])
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if dest.exists():
            data = dest.read_bytes()
            assert len(data) == 8 * (1 << 18)
            assert data == data[:8] * (1 << 18)


def test_remove_stale_temporaries_takes_only_that_files_leftovers(tmp_path):
    dest = tmp_path / "a[1].npy"  # glob characters in the name are literal
    ours = [
        tmp_path / f".a[1].npy.{h}.tmp{sfx}" for h, sfx in (("0" * 16, ".npy"), ("ab12cd34", ""))
    ]
    others = [
        tmp_path / n for n in (".a1.npy.0123.tmp", ".b.npy.0123.tmp", "a[1].npy", ".a[1].npy.lock")
    ]
    for p in ours + others:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(dest)) == sorted(ours)
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert remove_stale_temporaries(dest) == []


def test_a_stale_temporary_that_cannot_be_removed_is_logged_and_left(tmp_path, caplog, monkeypatch):
    import pathlib

    mine, theirs = (tmp_path / f".a.npy.{h}.tmp" for h in ("0" * 16, "f" * 16))
    for p in (mine, theirs):
        p.write_bytes(b"x")
    unlink = pathlib.Path.unlink

    def refuse(self, *args, **kwargs):  # another user's file in a shared folder
        if self == theirs:
            raise PermissionError(13, "Permission denied")
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", refuse)
    with caplog.at_level("WARNING", logger="nnfit.io.atomic"):
        assert remove_stale_temporaries(tmp_path / "a.npy") == [mine]
    assert theirs.exists() and not mine.exists()
    assert str(theirs) in caplog.text and "Permission denied" in caplog.text
