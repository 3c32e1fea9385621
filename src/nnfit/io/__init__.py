"""Storage helpers shared by every capability: atomic writes, JSON, hashing, safe unpickling."""

from nnfit.io.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
    replace_together,
)
from nnfit.io.hashing import array_sha256, bytes_sha256, file_sha256
from nnfit.io.safe_pickle import load_object_npy

__all__ = [
    "array_sha256",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "bytes_sha256",
    "file_sha256",
    "load_object_npy",
    "remove_stale_temporaries",
    "replace_together",
]
