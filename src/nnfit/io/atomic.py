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
import shutil
import stat
from collections.abc import Iterator, Sequence
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


def replace_together(files: Sequence[tuple[Path, bytes]]) -> None:
    """Replace every ``(path, data)`` with its new bytes: all of them, or none.

    Each new file is written to ``.NAME.<hex>.tmp<suffix>`` beside its destination and
    fsynced; each existing destination is kept as ``.NAME.<hex>.tmp.old`` (a hard link, so the
    destination never goes missing); only then are the new files renamed into place, in the
    order given. Any exception on the way (a full disk, a failed write, fsync
    or rename, Ctrl-C) puts the kept files back, removes new files that had no predecessor
    and re-raises, so the old files (or none, where there were none) are left, never a mix of
    old and new. On success the kept files are removed.

    A SIGKILL or power cut skips that cleanup: between two renames it leaves some files new
    and the others old (a ptychography fixture beside its old sidecar, which ``nnfit ptycho
    verify`` reports); anywhere else the old set or the new set is whole. Either way it may
    leave ``.NAME.<hex>.tmp*`` files (new files not yet renamed, kept old ones), which
    :func:`remove_stale_temporaries` removes; the caller holds a lock that excludes other
    writers of these paths.
    """
    token = secrets.token_hex(8)
    staged: list[tuple[Path, Path]] = []  # (temporary, destination)
    kept: dict[Path, Path] = {}  # destination -> its old file under a temporary name
    placed: list[Path] = []
    try:
        for dest, data in files:
            tmp = dest.parent / f".{dest.name}.{token}.tmp{dest.suffix}"
            with open(tmp, "xb") as fh:
                staged.append((tmp, dest))
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileNotFoundError):  # an overwrite keeps the file's mode
                os.chmod(tmp, stat.S_IMODE(dest.stat().st_mode))
        for _, dest in staged:
            if os.path.lexists(dest):
                old = dest.parent / f".{dest.name}.{token}.tmp.old"
                try:
                    os.link(dest, old, follow_symlinks=False)
                except (OSError, NotImplementedError):  # no hard links here: copy instead
                    shutil.copy2(dest, old, follow_symlinks=False)
                kept[dest] = old
        for tmp, dest in staged:
            os.replace(tmp, dest)
            placed.append(dest)
        for folder in dict.fromkeys(dest.parent for _, dest in staged):
            _fsync_dir(folder)
    except BaseException:
        for dest in reversed(placed):
            previous = kept.pop(dest, None)
            try:
                if previous is not None:
                    os.replace(previous, dest)
                else:
                    dest.unlink()
            except OSError as exc:  # the old file stays under its temporary name
                logger.warning(
                    "could not put back %s%s: %s",
                    dest,
                    f" from {previous}" if previous is not None else "",
                    exc.strerror or exc,
                )
        raise
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for old in kept.values():  # the destination holds the same file, or the new one
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
