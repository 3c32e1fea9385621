"""Files for the CaTune browser: ``{stem}.npy`` plus ``{stem}_metadata.json``.

The browser's ``.npy`` parser accepts npy format 1.0/2.0/3.0, little-endian, C order, 2-D
(cells x time) arrays of dtype ``<f8 <f4 <i4 <i2 <i1 <u4 <u2 <u1``. :func:`save_for_tuning`
always writes ``<f8``, C order, format 1.0. The sidecar is for Python (the browser never
reads it; the user types the sampling rate there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.io import atomic_path, atomic_write_bytes
from nnfit.io.arrays import load_npy
from nnfit.io.jsonfile import read_json_object
from nnfit.validate import as_float_array, check_real

__all__ = [
    "BROWSER_DTYPES",
    "SCHEMA_VERSION",
    "load_tuning_data",
    "read_tuning_metadata",
    "save_for_tuning",
    "tuning_paths",
]

SCHEMA_VERSION = "1.0.0"
#: dtypes the browser's .npy parser accepts.
BROWSER_DTYPES = ("<f8", "<f4", "<i4", "<i2", "<i1", "<u4", "<u2", "<u1")
_RESERVED = ("schema_version", "sampling_rate_hz", "num_cells", "num_timepoints", "dtype")


def _json_default(obj: Any) -> Any:
    # numpy scalars and small arrays in user metadata (np.int64 counts, arrays of ids).
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _agrees(key: str, given: Any, written: Any) -> bool:
    if key == "schema_version":
        return str(given).split(".")[0] == str(written).split(".")[0]
    try:
        if key == "dtype":
            return isinstance(given, str) and np.dtype(given) == np.dtype(written)
        return float(given) == float(written)
    except (TypeError, ValueError):
        return False


def tuning_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``(npy, sidecar)`` paths of a stem; a trailing ``.npy`` on the stem is dropped.

    Examples
    --------
    >>> [p.name for p in tuning_paths("rec/session1")]
    ['session1.npy', 'session1_metadata.json']
    >>> [p.name for p in tuning_paths("session1.npy")]
    ['session1.npy', 'session1_metadata.json']
    """
    text = os.fspath(path)
    if text.endswith(".npy"):
        text = text[: -len(".npy")]
    # "dir/" would give the hidden files "dir/.npy" and "dir/_metadata.json"
    if not Path(text).name or text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise ValueError(
            f"path must name a file stem, not a folder; got {os.fspath(path)!r} (e.g. "
            f"{os.path.join(text.rstrip('/' + os.sep) or '.', 'session1')!r})"
        )
    return Path(text + ".npy"), Path(text + "_metadata.json")


def save_for_tuning(
    traces: np.ndarray,
    fs: float,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Save traces for the CaTune browser: ``{path}.npy`` and ``{path}_metadata.json``.

    The array is written as 2-D (cells x time) ``<f8``, C order, npy format 1.0; the sidecar
    holds ``schema_version`` "1.0.0", ``sampling_rate_hz``, ``num_cells``, ``num_timepoints``,
    ``dtype`` and the user's ``metadata`` (whose keys may not clash with those). Each file is
    written atomically (temporary file, fsync, rename), and everything is validated first,
    so rejected input writes nothing.

    Parameters
    ----------
    traces : array_like
        ``(n_timepoints,)`` or ``(n_cells, n_timepoints)``, real and finite.
    fs : float
        Sampling rate in Hz, > 0.
    path : path-like
        Output stem, e.g. ``"data/session1"``; the folder must exist.
    metadata : dict, optional
        Extra JSON-serialisable fields for the sidecar (``indicator``, ``source``, ...).

    Returns
    -------
    tuple of Path
        The ``.npy`` and the sidecar paths.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> stem = pathlib.Path(tempfile.mkdtemp()) / "session1"
    >>> npy, meta = save_for_tuning(np.ones((2, 5)), 30.0, stem, {"indicator": "GCaMP6f"})
    >>> traces, info = load_tuning_data(stem)
    >>> traces.shape, info["sampling_rate_hz"], info["indicator"]
    ((2, 5), 30.0, 'GCaMP6f')
    """
    arr = as_float_array("traces", traces, ndim=(1, 2))
    fs_ = check_real("fs", fs, low=0.0, low_inclusive=False)
    arr = np.ascontiguousarray(arr.reshape(1, -1) if arr.ndim == 1 else arr, dtype="<f8")
    if arr.shape[1] == 0:
        raise ValueError(f"traces has no time points (shape {arr.shape})")
    extra = {} if metadata is None else metadata
    if not isinstance(extra, dict):
        raise ValueError(f"metadata must be a dict or None; got {type(extra).__name__}")
    own = {
        "schema_version": SCHEMA_VERSION,
        "sampling_rate_hz": fs_,
        "num_cells": int(arr.shape[0]),
        "num_timepoints": int(arr.shape[1]),
        "dtype": "<f8",
    }
    # The metadata load_tuning_data returned may come back unchanged (as catune allows):
    # reserved fields are refused only when they contradict what is written.
    clash = sorted(k for k in set(extra) & set(_RESERVED) if not _agrees(k, extra[k], own[k]))
    if clash:
        raise ValueError(
            f"metadata may not set {', '.join(f'{k}={extra[k]!r}' for k in clash)}: "
            f"save_for_tuning writes these itself ({', '.join(f'{k}={own[k]!r}' for k in clash)})"
        )
    meta = {**extra, **own}
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
        text += "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable without NaN/Inf: {exc}") from exc
    npy_path, meta_path = tuning_paths(path)
    if not npy_path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {npy_path.parent}")
    with atomic_path(npy_path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, arr, version=(1, 0), allow_pickle=False)
    atomic_write_bytes(meta_path, text.encode("utf-8"))
    return npy_path, meta_path


def load_tuning_data(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Load traces and sidecar written by :func:`save_for_tuning` (or by ``catune``).

    The sidecar is checked against the array (schema version, shape, dtype, sampling rate);
    a mismatch raises ``ValueError`` naming the file that is wrong.

    Parameters
    ----------
    path : path-like
        The stem given to :func:`save_for_tuning` (a trailing ``.npy`` is accepted).

    Returns
    -------
    traces : numpy.ndarray
        ``(n_cells, n_timepoints)`` float64.
    metadata : dict
        The sidecar's contents.

    Raises
    ------
    FileNotFoundError
        If the ``.npy`` or the sidecar is missing (the message names its path).

    Examples
    --------
    >>> load_tuning_data("no/such/stem")
    Traceback (most recent call last):
    ...
    FileNotFoundError: trace file not found: no/such/stem.npy
    """
    npy_path, meta_path = tuning_paths(path)
    if not npy_path.is_file():
        raise FileNotFoundError(f"trace file not found: {npy_path}")
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"metadata sidecar not found: {meta_path} (written by save_for_tuning next to "
            f"{npy_path.name})"
        )
    try:
        raw = load_npy(npy_path)
    except ValueError as exc:
        raise ValueError(f"{npy_path}: not a readable .npy array ({exc})") from exc
    meta = read_tuning_metadata(npy_path, raw.shape, raw.dtype)
    traces = as_float_array(f"traces in {npy_path}", raw, ndim=(2,))
    return np.ascontiguousarray(traces), meta


def read_tuning_metadata(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype
) -> dict[str, Any]:
    """Read a CaTune sidecar and check it against its array's ``shape`` and ``dtype``.

    For readers that do not load the array (a memory map, or only the ``.npy`` header): the
    same checks as :func:`load_tuning_data` (fields, schema version, sampling rate, shape,
    dtype), so a sidecar from another recording is refused on every path.

    Parameters
    ----------
    path : path-like
        The stem (or its ``.npy``).
    shape, dtype
        Of the ``.npy`` array, e.g. from its header.

    Returns
    -------
    dict
        The sidecar's contents.

    Raises
    ------
    ValueError
        Naming the sidecar, what it says and what the array holds.
    """
    npy_path, meta_path = tuning_paths(path)
    meta = read_json_object(meta_path)
    for key in _RESERVED:
        if key not in meta:
            raise ValueError(f"{meta_path}: missing field {key!r}")
    major = str(meta["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(
            f"{meta_path}: schema_version {meta['schema_version']!r} is not supported "
            f"(this version reads {SCHEMA_VERSION.split('.')[0]}.x)"
        )
    try:
        check_real("sampling_rate_hz", meta["sampling_rate_hz"], low=0.0, low_inclusive=False)
    except ValueError as exc:
        raise ValueError(f"{meta_path}: {exc}") from exc
    if len(shape) != 2:
        raise ValueError(f"{npy_path}: expected a 2-D (cells x time) array, got shape {shape}")
    expected = (meta["num_cells"], meta["num_timepoints"])
    if tuple(shape) != expected:
        raise ValueError(
            f"{meta_path} says num_cells x num_timepoints = {expected[0]} x {expected[1]}, "
            f"but {npy_path} holds {shape[0]} x {shape[1]}: one of the two files is "
            "from another recording"
        )
    if np.dtype(dtype).str != meta["dtype"]:
        raise ValueError(
            f"{meta_path} says dtype {meta['dtype']!r} but {npy_path} holds {np.dtype(dtype).str!r}"
        )
    return meta
