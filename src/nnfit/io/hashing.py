"""Content hashes as pooch-style strings: ``sha256:<hex>``."""

from __future__ import annotations

import hashlib
import os

import numpy as np

_PREFIX = "sha256:"


def bytes_sha256(data: bytes) -> str:
    """Return ``sha256:<hex>`` of a byte string."""
    return _PREFIX + hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Return ``sha256:<hex>`` of a file's bytes, read in chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:15]
    'sha256:ba7816bf'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return _PREFIX + h.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """Hash an array's content independent of memory order and byte order.

    The digest covers the canonical dtype string (little-endian), the shape and the
    C-ordered little-endian bytes, so equal arrays hash equal however they are stored.

    Examples
    --------
    >>> a = np.arange(6, dtype=">f8").reshape(2, 3)
    >>> array_sha256(a) == array_sha256(np.asfortranarray(a.astype("<f8")))
    True
    """
    arr = np.asarray(array)
    if arr.dtype.hasobject:
        raise ValueError("array_sha256: object arrays have no stable byte content; convert first")
    canon = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    h = hashlib.sha256()
    h.update(canon.dtype.str.encode("ascii"))
    h.update(repr(canon.shape).encode("ascii"))
    h.update(canon.tobytes(order="C"))
    return _PREFIX + h.hexdigest()
