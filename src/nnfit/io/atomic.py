"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one.

The pattern is always the same: write to a temporary file in the destination folder
(same filesystem, so the rename is atomic), flush and fsync it, then ``os.replace`` it
over the destination and fsync the folder so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# a new file only (never an existing one or through a symlink), as tempfile.mkstemp opens it
_CREATE = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def _fsync_dir(folder: Path) -> None:
    # Directory fsync makes the rename durable; some filesystems refuse it, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(dest: Path) -> int:
    try:
        return dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    If the body raises, the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent folder must exist.
    suffix : str, optional
        Suffix for the temporary name, for writers that insist on an extension
        (``np.save`` appends ``.npy`` unless the name already ends with it).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> with atomic_path(dest, suffix=".npy") as tmp:
    ...     np.save(tmp, np.arange(3))
    >>> np.load(dest).tolist()
    [0, 1, 2]
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    # The name is known before the file exists, so an interrupt at any point after its
    # creation (Ctrl-C, or SIGTERM turned into SystemExit) removes it; tempfile.mkstemp gives
    # the name only once the file exists, and an interrupt in between would leave it behind.
    # 64 random bits make a clash with another writer's name a refusal that never happens.
    tmp = folder / f".{dest.name}.{secrets.token_hex(8)}.tmp{suffix}"
    ours = True
    try:
        try:
            fd = os.open(tmp, _CREATE, 0o600)
        except FileExistsError:
            ours = False  # another writer's file: not ours to remove
            raise
        os.close(fd)
        yield tmp
        # created 0600; give the result the mode a plain open() would have had
        os.chmod(tmp, _mode_for(dest))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(folder)
    except BaseException:
        if ours:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        if ours:
            # a writer that locks the file it writes (nnfit's HDF5 writers hold
            # ``<file>.lock``) leaves that lock next to the temporary name; no other process
            # can know the random name, so removing it races with nobody
            with contextlib.suppress(FileNotFoundError):
                Path(f"{tmp}.lock").unlink()


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that writes of ``path`` left behind, and return them.

    An atomic write removes its temporary file whenever Python runs its cleanup (an
    exception, Ctrl-C, SIGTERM turned into ``SystemExit``); a SIGKILL or a power cut leaves
    ``.NAME.*.tmp*`` next to ``path``, never a damaged ``path``. Call this only while holding a
    lock that excludes every other writer of ``path``, or it may remove a write in progress.
    A leftover that cannot be removed (another user's, a read-only folder) is logged as a
    warning and left: it is litter, never a reason to refuse the write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> _ = (dest.parent / ".a.npy.0123456789abcdef.tmp.npy").write_bytes(b"torn")
    >>> [q.name for q in remove_stale_temporaries(dest)], list(dest.parent.iterdir())
    (['.a.npy.0123456789abcdef.tmp.npy'], [])
    """
    dest = Path(path)
    removed = []
    for stale in sorted(dest.parent.glob(f".{glob_escape(dest.name)}.*.tmp*")):
        try:
            stale.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("left a stale temporary file %s: %s", stale, exc.strerror or exc)
            continue
        removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (sorted keys, trailing newline) to ``path`` atomically.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "meta.json"
    >>> _ = atomic_write_json(p, {"b": 1, "a": 2})
    >>> json.loads(p.read_text())
    {'a': 2, 'b': 1}
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))
