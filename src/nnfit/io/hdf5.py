"""Safe HDF5 files: SWMR readers, one locked writer, repair after a killed writer.

Every HDF5 file nnfit opens goes through :func:`open_h5`. It never waits forever: a writer
holds an advisory ``fcntl`` lock on a sidecar lock file, readers open in SWMR mode, and a file
left behind by a writer killed in SWMR mode has its superblock's status flags cleared and its
end-of-file address extended before it is opened again (what ``h5clear -s --increment`` does).
Nothing here knows what the file holds.

One module, though long: the writer lock, the SWMR reader and the superblock repair are the
three parts :func:`open_h5` composes, and none is used apart from it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from nnfit.io.atomic import remove_stale_temporaries

__all__ = [
    "ALLOW_EXTERNAL_ENV",
    "LIBVER",
    "H5File",
    "check_complete",
    "check_declared",
    "check_no_external",
    "clear_swmr_status",
    "create_h5",
    "open_h5",
    "open_locked",
    "read_superblock",
    "staged_h5",
    "writer_lock",
]

ALLOW_EXTERNAL_ENV = "NNFIT_HDF5_ALLOW_EXTERNAL"
"""Environment variable: ``1`` makes :func:`open_h5` follow external links, virtual datasets
and external raw storage by default (the command line's ``--allow-external`` sets it)."""

LIBVER = ("v110", "v110")
"""HDF5 format bounds for files we create: SWMR-capable, readable by HDF5 >= 1.10."""

_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    M = 0xFFFFFFFF
    for x, y, z, k in (
        (0, 2, 1, 4),
        (1, 0, 2, 6),
        (2, 1, 0, 8),
        (0, 2, 1, 16),
        (1, 0, 2, 19),
        (2, 1, 0, 4),
    ):
        v = [a, b, c]
        # v[x] -= v[y]; v[x] ^= rot(v[y], k); v[y] += v[z]
        v[x] = (v[x] - v[y]) & M
        v[x] ^= _rot(v[y], k)
        v[y] = (v[y] + v[z]) & M
        a, b, c = v
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    M = 0xFFFFFFFF
    for x, y, k in (
        (2, 1, 14),
        (0, 2, 11),
        (1, 0, 25),
        (2, 1, 16),
        (0, 2, 4),
        (1, 0, 14),
        (2, 1, 24),
    ):
        v = [a, b, c]
        # v[x] ^= v[y]; v[x] -= rot(v[y], k)
        v[x] ^= v[y]
        v[x] = (v[x] - _rot(v[y], k)) & M
        a, b, c = v
    return a, b, c


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 puts on its metadata."""
    M = 0xFFFFFFFF
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & M
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & M
        a, b, c = _mix(a, b, c)
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:] + b"\0" * (12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & M
    b = (b + int.from_bytes(tail[4:8], "little")) & M
    c = (c + int.from_bytes(tail[8:12], "little")) & M
    return _final(a, b, c)[2]


def read_superblock(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read the fields of a version 2/3 HDF5 superblock that matter for recovery.

    Returns a dict with ``version``, ``flags`` (file consistency flags; non-zero while a
    writer has the file open, or after one was killed), ``eoa`` (end-of-allocation address),
    ``eof`` (actual file size) and ``checksum_ok``.
    """
    with open(path, "rb") as fh:
        head = fh.read(48)
        eof = os.fstat(fh.fileno()).st_size
    if head[:8] != _SIGNATURE:
        raise ValueError(f"{path}: not an HDF5 file with a superblock at offset 0")
    version = head[8] if len(head) > 8 else -1
    if 0 <= version < 2:
        return {"version": version, "flags": 0, "eoa": eof, "eof": eof, "checksum_ok": True}
    if len(head) < 48:
        raise ValueError(
            f"{path}: truncated HDF5 file ({eof} bytes, shorter than its superblock); "
            "restore it from the original or re-create it"
        )
    if head[9] != 8:
        raise ValueError(f"{path}: only 8-byte file offsets are supported; found {head[9]}")
    eoa = struct.unpack_from("<Q", head, 28)[0]
    stored = struct.unpack_from("<I", head, 44)[0]
    return {
        "version": version,
        "flags": head[11],
        "eoa": eoa,
        "eof": eof,
        "checksum_ok": stored == _lookup3(head[:44]),
    }


def clear_swmr_status(path: str | os.PathLike[str], *, increment: int = 1 << 20) -> bool:
    """Repair a file left by a killed (SWMR) writer, as ``h5clear -s --increment`` does.

    Clears the superblock's file consistency flags and moves the end-of-allocation address to
    ``max(EOA, EOF) + increment`` (extending the file to match), so new allocations can never
    land on data the killed writer had already placed beyond its last recorded EOA. Only call
    this when no process has the file open for writing. Returns whether anything changed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.h5"
    >>> with h5py.File(p, "w", libver=LIBVER) as f:
    ...     _ = f.create_dataset("x", data=[1, 2, 3])
    >>> clear_swmr_status(p)     # a cleanly closed file needs nothing
    False
    """
    info = read_superblock(path)
    if info["version"] < 2 or info["flags"] == 0:
        return False
    if not info["checksum_ok"]:
        raise ValueError(f"{path}: superblock checksum mismatch; the file is damaged beyond repair")
    new_eoa = max(info["eoa"], info["eof"]) + int(increment)
    with open(path, "r+b") as fh:
        head = bytearray(fh.read(48))
        head[11] = 0
        struct.pack_into("<Q", head, 28, new_eoa)
        struct.pack_into("<I", head, 44, _lookup3(bytes(head[:44])))
        fh.seek(0)
        fh.write(head)
        fh.truncate(new_eoa)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def check_complete(path: str | os.PathLike[str]) -> None:
    """Refuse an HDF5 file that is shorter than its superblock says (a cut-short copy).

    HDF5 itself notices a truncated file only outside SWMR mode; an SWMR reader keeps
    retrying reads past the end of the file for a very long time. A cleanly closed file
    (status flags 0) whose end-of-allocation address lies beyond its size was cut short.

    Raises
    ------
    ValueError
        Naming the file, its size and the size it declares.
    """
    info = read_superblock(path)
    if info["version"] >= 2 and info["flags"] == 0 and info["eoa"] > info["eof"]:
        raise ValueError(
            f"{path}: truncated HDF5 file ({info['eof']} of {info['eoa']} bytes; an interrupted "
            "copy or a full disk?); restore it from the original or re-create it"
        )


def check_declared(
    f: h5py.File,
    path: str | os.PathLike[str],
    names: tuple[str, ...],
    *,
    itemsize: int = 8,
    budget: int | None = None,
) -> None:
    """Check the declared shapes of datasets against what the file stores and a memory budget.

    A dataset can declare any shape in a few bytes (its chunks never written, read back as
    fill values). Before datasets ``names`` (those present) are read into memory as
    ``itemsize``-byte values: an unfiltered dataset must store all its bytes, and the total
    must fit :func:`nnfit.io.arrays.memory_budget`.

    Raises
    ------
    ValueError
        Naming the file, the dataset, its declared shape and what it stores.
    """
    from nnfit.io.arrays import check_memory

    total = 0
    for name in names:
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            continue
        stored = ds.id.get_storage_size()
        if ds.size and not ds.compression and stored < ds.size * ds.dtype.itemsize:
            raise ValueError(
                f"{path}: /{name} declares shape {ds.shape} ({ds.size * ds.dtype.itemsize} "
                f"bytes) but stores {stored} bytes (never written, or a lying header); "
                "re-create the store"
            )
        total += ds.size * max(itemsize, ds.dtype.itemsize)
    check_memory(total, f"{path}: reading /{', /'.join(n for n in names if n in f)}", budget=budget)


def _allow_external_default() -> bool:
    return os.environ.get(ALLOW_EXTERNAL_ENV, "") == "1"


def check_no_external(f: h5py.File, path: str | os.PathLike[str], *, allow: bool) -> None:
    """Refuse data that lives outside the file: external links, virtual datasets, external storage.

    A store is one file; anything it pulls in from other files is read without the user
    seeing it (a mask could come from any file's bytes), so it is refused unless ``allow``.
    With ``allow``, an external link whose target cannot be opened is still an error here,
    naming the link, rather than a ``KeyError`` later.

    Raises
    ------
    ValueError
        Naming the file, the object inside it and how to opt in.
    """
    problems: list[str] = []
    links: list[tuple[str, str]] = []

    def visit(name: str, link: Any) -> None:
        # No exceptions in here: h5py cannot unwind them through the C visitor.
        if isinstance(link, h5py.ExternalLink):
            links.append((name, f"/{name} is an external link to {link.filename}:{link.path}"))
        elif isinstance(link, h5py.HardLink) and not allow:
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    problems.append(f"/{name} is a virtual dataset (data from other files)")
                elif obj.external:
                    problems.append(f"/{name} keeps its data in external file(s)")

    try:
        f.visititems_links(visit)
    except (KeyError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: damaged HDF5 file; its groups cannot be listed ({exc})"
        ) from None
    for name, where in links:
        if not allow:
            problems.append(where)
            continue
        try:
            f[name]
        except (KeyError, OSError):
            raise ValueError(
                f"{path}: {where}, which cannot be opened (missing file or object)"
            ) from None
    if problems:
        raise ValueError(
            f"{path}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; nnfit reads only data inside the file unless you opt in "
            f"(--allow-external, allow_external=True or {ALLOW_EXTERNAL_ENV}=1)"
        )


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` starts with the HDF5 signature (as h5py writes files).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.npz"
    >>> _ = p.write_bytes(b"PK")
    >>> is_hdf5(p)
    False
    """
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == _SIGNATURE
    except OSError:
        return False


#: The HDF5 filters (registered ids) hdf5plugin brings: Blosc, Blosc2, bitshuffle, BZip2,
#: LZ4, Zstd, Zfp, SZ, SZ3, FCIDECOMP.
_HDF5PLUGIN_FILTERS = frozenset(
    {307, 32001, 32004, 32008, 32013, 32015, 32017, 32018, 32024, 32026}
)


def check_filters(data: Any, where: str) -> None:
    """Refuse, naming the filter and what to install, a dataset this HDF5 cannot decompress.

    ``where`` names the dataset in the message (e.g. ``"file.nwb: /acquisition/x/data"``).

    hdf5plugin registers its filters with HDF5 when imported, so it is imported (where it is
    installed) before a filter is declared missing; HDF5's own error would only say that no
    plugin directory was found, at the first block read. A filter is missing only where a
    chunk went through it: writers mark such filters optional and skip them for chunks they
    do not shrink (bit ``i`` of a chunk's filter mask), and those chunks read without it.
    """
    plist = data.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    missing = [i for i, f in enumerate(filters) if not h5py.h5z.filter_avail(f[0])]
    if not missing:
        return
    try:
        import hdf5plugin  # type: ignore[import-not-found]  # noqa: F401  (registers its filters on import)
    except ImportError:
        pass
    n_chunks = data.id.get_num_chunks()
    for i in missing:
        code, name = filters[i][0], filters[i][3]
        if h5py.h5z.filter_avail(code) or all(
            data.id.get_chunk_info(k).filter_mask >> i & 1 for k in range(n_chunks)
        ):
            continue
        label = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        fix = (
            "pip install hdf5plugin (nnfit imports it when installed)"
            if code in _HDF5PLUGIN_FILTERS
            else "install that filter's HDF5 plugin and point HDF5_PLUGIN_PATH at it"
        )
        raise ValueError(
            f"{where} is compressed with the HDF5 filter {label!r} (id {code}), which "
            f"this HDF5 cannot decompress; {fix}, or rewrite the file with gzip"
        )


class _WriterLock:
    """An exclusive advisory lock on ``<file>.lock`` held by the one nnfit writer.

    HDF5 releases its own file lock once a writer switches to SWMR mode (so readers can open),
    which means the HDF5 lock cannot tell a live SWMR writer from a killed one. This lock can:
    the kernel drops it when its process dies, however it dies.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(str(path) + ".lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise FileExistsError(
                    f"{self.path.with_suffix('')}: another process is writing this file "
                    f"(lock {self.path} held); wait for it or stop it first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _discard_writes(f: h5py.File) -> bool:
    """Point the descriptor HDF5 writes ``f`` through at an anonymous in-memory file.

    After a write failed (a full disk), HDF5 still holds dirty cache entries it must write
    before it can close the file's datasets and the file itself; every retry fails the same
    way, and objects it could not close are closed again at interpreter exit, after their file
    was torn down: a segmentation fault. Discarding the pending writes lets every close
    succeed; the file on disk stays as the last successful write left it (what a writer killed
    at that moment leaves, which the next writer repairs). Returns whether it could.
    """
    try:
        fd = f.id.get_vfd_handle()
    except Exception:  # any failure means: not a plain POSIX file driver
        return False
    if not isinstance(fd, int) or fd < 0 or not hasattr(os, "memfd_create"):
        return False
    size = os.fstat(fd).st_size
    sink = os.memfd_create("nnfit-discarded-writes")
    try:
        os.ftruncate(sink, size)  # sparse: HDF5 sees the size it expects, no memory is used
        os.dup2(sink, fd)
    finally:
        os.close(sink)
    return True


def _write_error(path: str, exc: BaseException) -> OSError:
    """HDF5 reports a failed write as OSError or RuntimeError with the system's errno only in
    its text; one OSError carrying that errno (ENOSPC: "disk full") and naming the file."""
    code = getattr(exc, "errno", None)
    if not code:
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else errno.EIO
    text = " ".join(str(exc).split())
    return OSError(code, f"{path}: writing failed ({os.strerror(code)}; {text})")


class H5File(h5py.File):  # type: ignore[misc]  # h5py ships no type hints
    """An ``h5py.File`` that releases nnfit's writer lock when it closes, and closes cleanly
    even when its last writes fail (a full disk): the failure is raised, and the writes that
    HDF5 could not make are discarded so that no half-closed object outlives the call."""

    _nnfit_lock: _WriterLock | None = None
    _nnfit_sink: _DiscardWhenFull | None = None
    _nnfit_reserved = False

    def reserve(self, nbytes: int) -> None:
        """Allocate the next ``nbytes`` of file growth on disk now, or raise ``OSError(ENOSPC)``.

        For changes outside SWMR mode (new groups and datasets): HDF5 writes their metadata in
        no particular order, so a full disk half-way leaves a file that cannot be read. With the
        space reserved first, a full disk is refused before anything is written. The unused
        part is given back when the file closes.
        """
        fd = self.id.get_vfd_handle()
        end = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, end, max(int(nbytes), 1))
        except OSError as exc:
            os.ftruncate(fd, end)  # a partial allocation is given back
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                return  # a filesystem that cannot preallocate: written as before
            raise OSError(
                exc.errno,
                f"{self.filename}: cannot reserve {nbytes / 1e6:.1f} MB to update it "
                f"({os.strerror(exc.errno)}); nothing was changed",
            ) from None
        self._nnfit_reserved = True

    def close(self) -> None:
        try:
            failed: BaseException | None = None
            if self.id.valid and self.mode == "r+":
                # Flushed first, while every object is intact: a failure here can still be
                # handled, where a failed close leaves HDF5 half torn down.
                try:
                    self.flush()
                except (OSError, RuntimeError, KeyboardInterrupt) as exc:
                    failed = exc
                    sink = self._nnfit_sink
                    if sink is not None:
                        sink.drop = True  # a write that raised (Ctrl-C in the callback)
                    if sink is not None or _discard_writes(self):
                        # The failed flush left HDF5's metadata cache half-way; the next flush
                        # reports that ("slist already enabled?") and resets it, the one after
                        # writes everything (into the sink), so the close below succeeds.
                        for _ in range(3):
                            with contextlib.suppress(OSError, RuntimeError):
                                self.flush()
                                break
            name = self.filename if failed is not None or self._nnfit_reserved else ""
            super().close()
            if self._nnfit_reserved and failed is None:
                self._nnfit_reserved = False
                info = read_superblock(name)
                if info["version"] >= 2 and info["flags"] == 0 and info["eof"] > info["eoa"]:
                    os.truncate(name, info["eoa"])  # the reservation's unused part
            if isinstance(failed, KeyboardInterrupt):
                raise failed
            if failed is not None:
                raise _write_error(name, failed) from None
            if self._nnfit_sink is not None and self._nnfit_sink.error is not None:
                raise self._nnfit_sink.error
        finally:
            sink, self._nnfit_sink = self._nnfit_sink, None
            if sink is not None:
                sink.close()
            lock = self._nnfit_lock
            self._nnfit_lock = None
            if lock is not None:
                lock.release()


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold nnfit's writer lock on ``path`` (and repair it after a killed writer) meanwhile.

    For maintenance that rewrites the whole file (copy to a temporary file, then
    ``os.replace``): no other nnfit writer can start until the block ends. Temporary files
    left next to ``path`` by a killed rewrite are removed.
    """
    p = Path(path)
    lock = _WriterLock(p)
    lock.acquire()
    try:
        remove_stale_temporaries(p)
        if p.exists() and p.stat().st_size > 0:
            clear_swmr_status(p)
            check_complete(p)
        yield p
    finally:
        lock.release()


def open_locked(path: str | os.PathLike[str], mode: str = "r+", **kwargs: Any) -> H5File:
    """Open for writing inside a :func:`writer_lock` block (which already holds the lock).

    Repairs a killed writer's leftovers first, like :func:`open_h5`.
    """
    p = Path(path)
    if mode in ("r+", "a") and p.exists() and p.stat().st_size > 0:
        clear_swmr_status(p)
    return _open_retrying(p, mode, kwargs.pop("lock_timeout", 60.0), libver=LIBVER, **kwargs)


_READ_MODES = {"r", "reader"}
_WRITE_MODES = {"r+", "writer", "a", "w", "w-", "x"}


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc)


def _open_retrying(p: Path, mode: str, lock_timeout: float, **kwargs: Any) -> H5File:
    """Open, retrying while another process holds HDF5's lock (a reader or writer in between
    phases); give up after ``lock_timeout`` seconds with a clear error."""
    deadline = time.monotonic() + lock_timeout
    delay = 0.01
    while True:
        try:
            return H5File(p, mode, **kwargs)
        except OSError as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                raise FileExistsError(
                    f"{p}: still locked by another process after {lock_timeout:g} s (HDF5 file "
                    f"lock; opening with mode {mode!r}). Wait for it to finish, or stop it"
                ) from exc
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


def _checked(f: H5File, p: Path, allow_external: bool | None) -> H5File:
    try:
        check_no_external(
            f, p, allow=_allow_external_default() if allow_external is None else allow_external
        )
    except BaseException:
        f.close()
        raise
    return f


_SWMR_WRITE_ACCESS = 0x04  # superblock status flag: a writer opened the file in SWMR mode


def _repair_for_reading(p: Path, info: dict[str, int]) -> dict[str, int]:
    """A file whose superblock says a (non-SWMR) writer has it open: if no nnfit writer holds
    it, that writer died (killed, or its last writes failed on a full disk), and HDF5 refuses
    every open until the flags are cleared; clear them as the next writer would."""
    lock = _WriterLock(p)
    try:
        lock.acquire()
    except (FileExistsError, PermissionError):
        return info  # a live writer (HDF5's own lock keeps us waiting) or a read-only folder
    try:
        with open(p, "rb") as fh:  # HDF5's own lock: another program writing it right now
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return info
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        clear_swmr_status(p)
    except PermissionError:
        raise PermissionError(
            f"{p}: left open by a writer that stopped, and this user cannot repair it; run "
            "any nnfit write command on it (or `h5clear -s` it) with write permission"
        ) from None
    finally:
        lock.release()
    return read_superblock(p)


def _not_hdf5(p: Path, exc: OSError) -> OSError:
    """HDF5's open errors do not name the file; this one does, on one line."""
    msg = str(exc).replace("Unable to synchronously open file", "").strip(" ()")
    return OSError(f"{p}: cannot open as an HDF5 file ({msg or type(exc).__name__})")


def open_h5(
    path: str | os.PathLike[str],
    mode: str = "r",
    *,
    lock_timeout: float = 60.0,
    allow_external: bool | None = None,
    **kwargs: Any,
) -> H5File:
    """Open an HDF5 file: SWMR-safe for readers, exclusive and self-repairing for the writer.

    Parameters
    ----------
    path : path-like
    mode : {"r", "reader", "r+", "writer", "a", "w", "w-", "x"}
        ``"r"``/``"reader"`` opens read-only, with ``swmr=True`` while a writer has the file
        open (its superblock status flags are set), so it is safe while a SWMR writer works. Write modes take
        nnfit's writer lock (``<path>.lock``; a second writer gets ``FileExistsError``), then
        repair a file left by a killed writer (:func:`clear_swmr_status`) and open it with the
        SWMR-capable format bounds :data:`LIBVER`.
    lock_timeout : float
        Seconds to keep retrying while another process holds HDF5's own file lock (a reader
        keeps a writer out and vice versa, except in SWMR mode).
    allow_external : bool, optional
        Follow external links, virtual datasets and external raw storage in an existing file.
        Default (``None``): refused unless the environment variable
        :data:`ALLOW_EXTERNAL_ENV` is ``1`` (see :func:`check_no_external`).
    **kwargs
        Passed to ``h5py.File`` (e.g. ``rdcc_nbytes`` for a larger chunk cache).

    Returns
    -------
    H5File
        An ``h5py.File``; use it as a context manager.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.h5"
    >>> with open_h5(p, "w") as f:
    ...     _ = f.create_dataset("x", data=np.arange(3.0))
    >>> with open_h5(p, "r") as f:
    ...     f["x"][:].tolist()
    [0.0, 1.0, 2.0]
    """
    p = Path(path)
    if mode in _READ_MODES:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such HDF5 file")
        if p.is_dir():
            raise IsADirectoryError(f"{p}: is a folder, not an HDF5 file")
        check_complete(p)
        info = read_superblock(p)
        if info["version"] >= 3 and info["flags"] and not info["flags"] & _SWMR_WRITE_ACCESS:
            info = _repair_for_reading(p, info)
        # SWMR reading only while a writer has the file open (status flags set): an SWMR
        # reader retries every metadata read that fails its checksum, for minutes on a
        # damaged file, where a plain reader reports the damage at once.
        swmr = info["version"] >= 3 and info["flags"] != 0
        try:
            f = _open_retrying(p, "r", lock_timeout, **({"swmr": True} if swmr else {}), **kwargs)
        except FileExistsError:
            raise
        except OSError as exc:
            raise _not_hdf5(p, exc) from None
        return _checked(f, p, allow_external)
    if mode not in _WRITE_MODES:
        raise ValueError(f"mode must be one of {sorted(_READ_MODES | _WRITE_MODES)}; got {mode!r}")
    h5mode = {"writer": "r+"}.get(mode, mode)
    if h5mode in ("w-", "x") and p.exists():
        raise FileExistsError(f"{p} exists; pass overwrite=True or choose another path")
    lock = _WriterLock(p)
    lock.acquire()
    try:
        if h5mode in ("r+", "a") and p.exists() and p.stat().st_size > 0:
            clear_swmr_status(p)
        if h5mode == "r+" and not p.exists():
            raise FileNotFoundError(f"{p}: no such HDF5 file")
        existing = h5mode in ("r+", "a") and p.exists() and p.stat().st_size > 0
        if existing:
            check_complete(p)
        try:
            f = _open_retrying(p, h5mode, lock_timeout, libver=LIBVER, **kwargs)
        except FileExistsError:
            raise
        except OSError as exc:
            raise _not_hdf5(p, exc) from None
    except BaseException:
        lock.release()
        raise
    f._nnfit_lock = lock
    return _checked(f, p, allow_external) if existing else f


class _DiscardWhenFull:
    """A file object for h5py's ``fileobj`` driver that never lets HDF5 see a full disk.

    HDF5 cannot recover from a failed write: a dataset whose close fails is freed but its
    identifier stays, and the library touches it again at interpreter exit (a segmentation
    fault). Through this object the first ``ENOSPC``/``EDQUOT`` is recorded and every later
    write is accepted and dropped, so HDF5 closes cleanly and :class:`H5File` raises the
    recorded error afterwards. Only for files that are abandoned when a write fails (a
    staged or temporary file).
    """

    def __init__(self, path: Path, mode: str) -> None:
        self.path = path
        self.name = str(path)
        self.raw = open(path, "w+b" if mode == "w" else "r+b", buffering=0)
        self.pos = 0
        self.error: OSError | None = None
        self.drop = False  # set when the file is being abandoned: writes are dropped

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = self.raw.seek(pos, whence) if whence else pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        self.raw.seek(self.pos)
        n = self.raw.readinto(buf) or 0
        self.pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        self.raw.seek(self.pos)
        data = self.raw.read(size)
        self.pos += len(data)
        return data

    def write(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        if self.error is None and not self.drop:
            self.raw.seek(self.pos)
            done = 0
            try:
                while done < len(view):
                    done += self.raw.write(view[done:]) or 0
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                self.error = OSError(
                    exc.errno, f"{self.path}: writing failed ({os.strerror(exc.errno)})"
                )
        self.pos += len(view)
        return len(view)

    def truncate(self, size: int) -> int:
        if self.error is None:
            try:
                self.raw.truncate(size)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                self.error = OSError(exc.errno, f"{self.path}: {os.strerror(exc.errno)}")
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.raw.close()


def create_h5(path: str | os.PathLike[str], mode: str = "w") -> H5File:
    """Open a staged or temporary HDF5 file for writing so that a full disk is one clean error.

    The file is written through h5py's ``fileobj`` driver: on a full disk the rest of the
    writes are dropped and closing the file raises ``OSError(ENOSPC)`` naming it, where HDF5's
    own driver would leave half-closed objects behind (a crash at exit). Use it only for files
    that are discarded when writing fails (:func:`staged_h5`, ``atomic_path``); no SWMR.

    Parameters
    ----------
    path : path-like
    mode : {"w", "r+"}
        Create (truncate) the file, or add to one this process is staging.
    """
    if mode not in ("w", "r+"):
        raise ValueError(f"mode must be 'w' or 'r+'; got {mode!r}")
    sink = _DiscardWhenFull(Path(path), mode)
    try:
        f = H5File(sink, mode, libver=LIBVER)
    except BaseException:
        sink.close()
        raise
    f._nnfit_sink = sink
    return f


@contextlib.contextmanager
def staged_h5(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a whole new HDF5 file at a temporary path; replace ``path`` only on success.

    Holds nnfit's writer lock on ``path`` meanwhile. The body gets a temporary path (not yet
    created) in the same folder and writes the file there, through any writer; when it
    returns, the file is moved over ``path`` atomically. If it raises (a rejected input, a
    full disk, Ctrl-C), the temporary file and its lock file are removed and ``path`` is
    untouched, so a refused or interrupted run leaves no stub behind. Temporary files left by
    a killed run are removed on the next one.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.h5"
    >>> with staged_h5(p) as tmp:
    ...     with open_h5(tmp, "w") as f:
    ...         _ = f.create_dataset("x", data=[1.0])
    >>> sorted(q.name for q in p.parent.iterdir())
    ['s.h5', 's.h5.lock']
    """
    p = Path(path)
    lock = _WriterLock(p)
    lock.acquire()
    tmp = p.with_name(f".{p.name}.{os.getpid()}.staged.tmp.h5")
    try:
        remove_stale_temporaries(p)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
        with contextlib.suppress(OSError):
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        leftovers = [tmp, Path(str(tmp) + ".lock")]
        if not p.exists():
            leftovers.append(lock.path)  # nothing was written: no lock file for a missing store
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        lock.release()
