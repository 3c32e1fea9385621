"""Read pickled ``.npy`` files (``np.save`` of a dict) without running code from the file.

``np.load(..., allow_pickle=True)`` hands the file's bytes to :mod:`pickle`, which calls
whatever callable the file names: a crafted file runs any command. Data written by
``np.save(path, some_dict)`` only ever names a handful of constructors (numpy's array and
scalar reconstructors, ``numpy.dtype``, a few standard-library value types), so
:class:`RestrictedUnpickler` resolves exactly those and refuses everything else before it is
called.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "Refused", "RestrictedUnpickler", "load_object_npy"]

_NUMPY_RECONSTRUCT = {"_reconstruct", "scalar"}
_PATHS = {
    "PurePosixPath": PurePosixPath,
    "PosixPath": PurePosixPath,
    "PureWindowsPath": PureWindowsPath,
    "WindowsPath": PureWindowsPath,
}

#: ``(module, name)`` pairs a pickle may name. What ``np.save`` of a dict of Python scalars,
#: strings, lists, tuples, sets, dates and numpy arrays/scalars pickles (protocols 2-5, numpy
#: 1.x module names and 2.x ones; protocol 2 spells ``bytes`` as ``_codecs.encode(text,
#: "latin1")``, the only encoding allowed), plus the path types pipelines keep in settings.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype")}
    | {
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in _NUMPY_RECONSTRUCT
    }
    | {("builtins", n) for n in ("complex", "set", "frozenset", "bytearray", "slice", "range")}
    | {("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")}
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {(m, n) for m in ("pathlib", "pathlib._local") for n in _PATHS}
)


class Refused(pickle.UnpicklingError):
    """A pickle names something :class:`RestrictedUnpickler` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :data:`ALLOWED_GLOBALS`.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a user class) is
    refused with :class:`Refused` (a :class:`pickle.UnpicklingError`) *before* it is looked up, so nothing the file
    names is ever called. Concrete path classes come back as their pure counterparts (they
    never touch the file system).
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise Refused(f"refusing to load {module}.{name}")
        if module.startswith("pathlib"):
            return _PATHS[name]
        if module == "_codecs":
            return _latin1_bytes
        if module.endswith("core.multiarray"):
            return getattr(_multiarray(), name)
        return super().find_class(module, name)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``, and nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise Refused(f"refusing to load _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _multiarray() -> Any:
    # numpy 2 moved numpy.core to numpy._core (the old name still imports, with a warning)
    import importlib

    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def load_object_npy(path: str | os.PathLike[str]) -> Any:
    """Return the object stored in a pickled ``.npy`` (``np.save(path, obj)``), safely.

    A 0-d object array (how ``np.save`` stores a dict) gives back the object itself, like
    ``np.load(path, allow_pickle=True).item()``; other object arrays come back as arrays.
    Arrays without objects are read with ``allow_pickle=False``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file, e.g. suite2p's ``ops.npy``.

    Returns
    -------
    object
        The stored object (a dict for ``ops.npy``) or array.

    Raises
    ------
    ValueError
        The file is not a ``.npy``, or its pickle names anything outside
        :data:`ALLOWED_GLOBALS` (the message names the file and the refused global) or is
        corrupt.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ops.npy"
    >>> np.save(p, {"fs": 30.0, "meanImg": np.zeros((2, 2), np.float32)})
    >>> sorted(load_object_npy(p))
    ['fs', 'meanImg']
    """
    p = Path(path)
    with open(p, "rb") as f:
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        try:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = readers[version](f)
        except ValueError as exc:
            raise ValueError(f"{p}: not a readable .npy file ({exc})") from None
        if not dtype.hasobject:
            return np.load(p, allow_pickle=False)
        try:
            arr = RestrictedUnpickler(f).load()
        except Refused as exc:
            raise ValueError(
                f"{p}: {exc}; this file holds more than plain data and is not loaded "
                "(nnfit never runs code from a data file). Re-save it from a trusted session "
                "with plain values only"
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            AttributeError,
            TypeError,
            IndexError,
            KeyError,
            ValueError,
        ) as exc:
            raise ValueError(f"{p}: corrupt pickled .npy ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{p}: expected a pickled numpy array; found {type(arr).__name__}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{p}: header says shape {shape}, pickle holds {arr.shape}")
    return arr.item() if arr.shape == () else arr
