"""One run at a time on an output: an advisory lock that names the run holding it.

The lock is ``fcntl.flock`` on a small file, so the kernel releases it when its process
ends, however it ends (no stale locks after ``kill -9``). The file holds the holder's pid,
start time and command line, which a refused second run quotes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from nnfit.io.atomic import remove_stale_temporaries

__all__ = ["output_folder", "run_lock"]

_HELD: set[Path] = set()  # locks this process holds: taking one again nests harmlessly


@contextlib.contextmanager
def run_lock(
    lock_path: str | os.PathLike[str], *, what: str, remove: bool = True
) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_path`` for the body, or refuse at once.

    Parameters
    ----------
    lock_path : path-like
        The lock file (created; its folder must exist).
    what : str
        What the lock protects, for the message (e.g. ``"output folder res/"``).
    remove : bool
        Remove the lock file when the body ends (while still holding it).

    Raises
    ------
    FileExistsError
        If another process holds the lock; the message names that run.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with run_lock(p, what="demo"):  # the same process may take it again
    ...     with run_lock(p, what="demo"):
    ...         p.exists()
    True

    Another process gets ``FileExistsError: demo is in use by another nnfit run (pid ...);
    wait for it to finish or stop it`` (``tests/cli/test_signals.py``).
    """
    p = Path(lock_path).resolve()
    if p in _HELD:
        yield p
        return
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        try:
            holder = p.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise FileExistsError(
            f"{what} is in use by another nnfit run ({holder}); wait for it to finish or stop it"
        ) from None
    try:
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.write(fd, f"pid {os.getpid()}, started {started}: {' '.join(sys.argv)}".encode())
        _HELD.add(p)
        yield p
    finally:
        _HELD.discard(p)
        if remove:
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike[str], outputs: Iterable[str] = ()) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its run lock (``.nnfit-run.lock``) for the body.

    A second run on the same folder is refused, naming the first; if the body fails and the
    folder was created for it and is still empty, it is removed again (no stub folder). Once
    the lock is held, the temporary files that a killed run's atomic writes of ``outputs``
    (file names in the folder) left behind are removed
    (:func:`~nnfit.io.atomic.remove_stale_temporaries`: safe here, no other run writes).
    """
    p = Path(folder)
    created = not p.exists()
    p.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(p / ".nnfit-run.lock", what=f"output folder {p}"):
            for name in outputs:
                remove_stale_temporaries(p / name)
            yield p
    except BaseException:
        if created and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
        raise
