"""Replacing a fixture: the NPZ and its sidecar change together or not at all."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nnfit.ptycho import generate_fixture, verify_fixture


@pytest.fixture
def old_pair(small_source, tmp_path):
    out, meta, _ = generate_fixture(small_source, tmp_path / "fx.npz", n_subset=16)
    return out, meta, out.read_bytes(), meta.read_bytes()


def _fail_once(monkeypatch, name, when, exc):
    """Make ``os.<name>`` raise ``exc`` at the first call for which ``when(args)`` is true."""
    real = getattr(os, name)
    fired = []

    def fake(*args, **kwargs):
        if not fired and when(args):
            fired.append(args)
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return fired


def _nth(n):
    seen = []
    return lambda args: seen.append(args) or len(seen) == n


FULL = OSError(errno.ENOSPC, "No space left on device")
FAILURES = {
    "fixture rename": ("replace", lambda a: str(a[1]).endswith("fx.npz"), FULL),
    "sidecar rename": ("replace", lambda a: str(a[1]).endswith("fx.json"), FULL),
    "Ctrl-C at the sidecar rename": (
        "replace",
        lambda a: str(a[1]).endswith("fx.json"),
        KeyboardInterrupt(),
    ),
    "first fsync": ("fsync", _nth(1), FULL),
    "second fsync": ("fsync", _nth(2), FULL),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_failed_overwrite_leaves_the_old_pair(old_pair, small_source, monkeypatch, case):
    out, meta, old_npz, old_json = old_pair
    fired = _fail_once(monkeypatch, *FAILURES[case])
    with pytest.raises((OSError, KeyboardInterrupt)):
        generate_fixture(small_source, out, n_subset=32, overwrite=True)
    assert fired
    monkeypatch.undo()
    assert (out.read_bytes(), meta.read_bytes()) == (old_npz, old_json)
    assert verify_fixture(out).ok
    assert sorted(p.name for p in out.parent.iterdir()) == ["fx.json", "fx.npz"]


def test_without_hard_links_the_old_pair_is_copied_and_restored(
    old_pair, small_source, monkeypatch
):
    out, meta, old_npz, old_json = old_pair
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "")))
    _fail_once(monkeypatch, "replace", lambda a: str(a[1]).endswith("fx.json"), FULL)
    with pytest.raises(OSError, match="No space"):
        generate_fixture(small_source, out, n_subset=32, overwrite=True)
    assert (out.read_bytes(), meta.read_bytes()) == (old_npz, old_json)
    monkeypatch.undo()
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "")))
    generate_fixture(small_source, out, n_subset=32, overwrite=True)
    assert verify_fixture(out).ok and out.read_bytes() != old_npz
    assert sorted(p.name for p in out.parent.iterdir()) == ["fx.json", "fx.npz"]


@pytest.mark.parametrize("case", ["fixture rename", "sidecar rename"])
def test_a_failed_first_write_leaves_nothing(small_source, tmp_path, monkeypatch, case):
    _fail_once(monkeypatch, *FAILURES[case])
    with pytest.raises(OSError, match="No space"):
        generate_fixture(small_source, tmp_path / "fx.npz", n_subset=16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_killed_between_the_renames_is_reported_and_repaired_by_the_next_make(
    old_pair, small_source
):
    """SIGKILL right after the fixture's rename: verify fails, the next make cleans up."""
    out, meta, old_npz, old_json = old_pair
    script = textwrap.dedent(
        f"""
        import os, signal
        from nnfit.ptycho import generate_fixture
        real = os.replace
        def replace(src, dst, *a, **k):
            if str(dst).endswith(".json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **k)
        os.replace = replace
        generate_fixture({str(small_source)!r}, {str(out)!r}, n_subset=32, overwrite=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert out.read_bytes() != old_npz and meta.read_bytes() == old_json
    leftovers = sorted(p.name for p in out.parent.iterdir() if ".tmp" in p.name)
    assert leftovers and all(n.startswith((".fx.npz.", ".fx.json.")) for n in leftovers)
    failed = {c.name: c.detail for c in verify_fixture(out).checks if not c.ok}
    assert "an interrupted nnfit ptycho make left" in failed["file checksum"]
    assert "again with --overwrite" in failed["file checksum"]

    generate_fixture(small_source, out, n_subset=32, overwrite=True)
    assert verify_fixture(out).ok
    assert sorted(p.name for p in out.parent.iterdir()) == ["fx.json", "fx.npz"]
