"""Reading ``.npy`` files without believing them, and a memory budget for declared sizes.

A ``.npy`` header declares a shape; a file can declare terabytes in a few bytes, be cut
short, be empty, or be an ``.npz`` under another name. :func:`load_npy` checks the header
against the file and against :func:`memory_budget` before anything is allocated, and says
what is wrong on one line, naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["MEMORY_BUDGET_ENV", "check_memory", "load_npy", "memory_budget", "read_npy_header"]

MEMORY_BUDGET_ENV = "NNFIT_MEMORY_BUDGET"
"""Environment variable: the most bytes one array read may allocate (e.g. ``8e9``)."""

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def memory_budget() -> int:
    """Bytes one allocation driven by a file's declared sizes may take.

    ``NNFIT_MEMORY_BUDGET`` if set, else half the machine's physical memory.
    """
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{MEMORY_BUDGET_ENV}={text!r} is not a number of bytes") from None
        if not value > 0:
            raise ValueError(f"{MEMORY_BUDGET_ENV} must be > 0 bytes; got {text!r}")
        return int(value)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_memory(nbytes: float, what: str, *, budget: int | None = None) -> None:
    """Raise ``ValueError`` if ``what`` would need more than the memory budget.

    Examples
    --------
    >>> check_memory(1e3, "x")
    >>> check_memory(1e18, "/DataCube (1e9, 1e9) float64", budget=10**9)
    Traceback (most recent call last):
    ...
    ValueError: /DataCube (1e9, 1e9) float64 needs 1e+09 GB, more than the memory budget of 1 GB (set NNFIT_MEMORY_BUDGET in bytes to allow more)
    """
    limit = memory_budget() if budget is None else int(budget)
    if nbytes > limit:
        raise ValueError(
            f"{what} needs {_gb(nbytes)}, more than the memory budget of {_gb(limit)} "
            f"(set {MEMORY_BUDGET_ENV} in bytes to allow more)"
        )


def read_npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of a ``.npy`` file, checked against it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, an ``.npz`` archive, not ``.npy`` at all, holds object
        (pickled) data, or is shorter than its header declares.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, not a .npy file")
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{p}: empty file (0 bytes), not a .npy array")
    with open(p, "rb") as fh:
        head = fh.read(6)
        if head[:4] == _ZIP_MAGIC:
            raise ValueError(f"{p}: is an .npz archive (zip), not a .npy array; pass its members")
        if head != _NPY_MAGIC:
            raise ValueError(f"{p}: not a .npy file (no NUMPY header)")
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            reader = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
                (3, 0): getattr(np.lib.format, "read_array_header_2_0", None),
            }.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = reader(fh, max_header_size=1 << 16)
        except Exception as exc:
            # and can raise almost anything on garbage; all of it means the same here.
            raise ValueError(f"{p}: damaged .npy header ({exc})") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{p}: holds object (pickled) data, which nnfit never loads")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset + nbytes > size:
        raise ValueError(
            f"{p}: header declares {dtype} {tuple(shape)} ({nbytes} bytes) but the file holds "
            f"{size - offset} bytes of data (cut short, or a lying header)"
        )
    return tuple(int(v) for v in shape), bool(fortran), dtype, offset


def load_npy(
    path: str | os.PathLike[str],
    *,
    mmap_mode: Literal["r+", "r", "w+", "c"] | None = None,
    budget: int | None = None,
) -> np.ndarray:
    """Load a ``.npy`` array after checking its header against the file and the budget.

    Parameters
    ----------
    path : path-like
    mmap_mode : {None, "r"}
        ``"r"``: a read-only memory map (no budget check: nothing is allocated).
    budget : int, optional
        Bytes the array may take in memory (default :func:`memory_budget`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(p, np.arange(3))
    >>> load_npy(p).tolist()
    [0, 1, 2]
    """
    shape, _fortran, dtype, _offset = read_npy_header(path)
    if mmap_mode is None:
        check_memory(int(np.prod(shape, dtype=object)) * dtype.itemsize, f"{path}", budget=budget)
    arr: np.ndarray = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    return arr
