"""MATLAB ``.mat`` files: a numeric matrix of traces, named by the user.

Versions 4 to 7 are read with :func:`scipy.io.loadmat`, which decodes data only (a function
handle or an object comes back as an inert record, never called). Version 7.3 files are HDF5
with a 512-byte header (the userblock), read with h5py: every variable is a dataset at the root
(a struct is a group of its fields) with a ``MATLAB_class`` attribute naming its class, and
MATLAB's arrays are column-major, so HDF5 holds each one with its axes reversed: MATLAB's
``cells x frames`` matrix is an h5py ``(frames, cells)`` dataset. Both are returned here as
MATLAB shows them (``size(X)``).

Orientation: the rows of the matrix are cells (``size(X) = [cells, frames]``), as for ``.npy``
and as suite2p's ``Fall.mat`` (``F``) and CaImAn/CNMF-E's ``C`` keep them; a vector (``1 x T``
or ``T x 1``) is one cell's trace. A matrix with fewer frames than cells is read as it is, with
a warning (:func:`nnfit.calcium.recordings.warn_if_transposed`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.recording import Recording, resolve_fs
from nnfit.io import file_sha256
from nnfit.validate import as_float_array, check_real

__all__ = ["FS_NAMES", "read_matlab"]

logger = logging.getLogger(__name__)

#: Names of a scalar variable (or struct field beside the traces) read as the sampling rate,
#: compared without case and underscores (``fs``, ``Fs``, ``frameRate``, ``frame_rate``, ...).
FS_NAMES = ("fs", "fps", "framerate", "samplingrate", "samplingratehz")

_NUMERIC = {"double", "single", *(f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64))}
#: Why a class that is not a numeric matrix is refused, and what to store instead.
_REFUSED = {
    "cell": "a cell array; store the traces as one numeric matrix (cell2mat)",
    "function": "a function handle; nothing in a file is ever run",
    "function_handle": "a function handle; nothing in a file is ever run",
    "sparse": "a sparse matrix; store it with full()",
    "char": "text, not numbers",
    "logical": "a logical array, not numbers",
    "object": "a MATLAB object; store its numeric data instead",
    "opaque": "a MATLAB object; store its numeric data instead",
}


def _why_refused(cls: str) -> str:
    return _REFUSED.get(cls, f"a MATLAB object of class {cls}; store its numeric data instead")


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


class _V5:
    """A version 4-7 file: variables listed by ``whosmat``, loaded by ``loadmat``."""

    version = "MATLAB 5/7"

    def __init__(self, path: Path) -> None:
        from scipy.io.matlab import whosmat

        self.path = path
        self.top = {
            name: (tuple(int(n) for n in shape), cls)
            for name, shape, cls in whosmat(path)
            if not name.startswith("__")  # scipy's own entries and __function_workspace__
        }
        self._loaded: dict[str, Any] = {}

    def _value(self, parts: list[str]) -> Any:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError

        if parts[0] not in self._loaded:
            try:
                mat = loadmat(self.path, variable_names=[parts[0]], squeeze_me=False)
            except (MatReadError, ValueError, OSError, zlib.error) as exc:
                raise ValueError(f"{self.path}: {parts[0]} cannot be read ({exc})") from None
            self._loaded[parts[0]] = mat[parts[0]]
        value = self._loaded[parts[0]]
        for depth in range(1, len(parts)):
            value = value[parts[depth]][0, 0]
        return value

    @staticmethod
    def _describe(value: Any) -> tuple[tuple[int, ...], str]:
        import scipy.sparse
        from scipy.io.matlab import MatlabFunction, MatlabObject, MatlabOpaque

        if isinstance(value, MatlabFunction):
            return (1, 1), "function_handle"
        if isinstance(value, MatlabObject | MatlabOpaque):
            return (1, 1), str(getattr(value, "classname", "object"))
        if scipy.sparse.issparse(value):
            return tuple(value.shape), "sparse"
        arr = np.asarray(value)
        kind = arr.dtype.kind
        cls = (
            "struct"
            if arr.dtype.names
            else {"O": "cell", "U": "char", "S": "char", "b": "logical"}.get(kind)
        )
        if cls is None:
            cls = {"float64": "double", "float32": "single"}.get(arr.dtype.name, arr.dtype.name)
        return tuple(arr.shape), cls

    def members(self, parts: list[str]) -> dict[str, tuple[tuple[int, ...], str]]:
        if not parts:
            return self.top
        value = self._value(parts)
        return {f: self._describe(value[f][0, 0]) for f in value.dtype.names}

    def array(self, parts: list[str]) -> np.ndarray:
        return np.asarray(self._value(parts))

    def close(self) -> None:
        self._loaded.clear()


class _V73:
    """A version 7.3 (HDF5) file, its arrays seen as MATLAB shows them."""

    version = "MATLAB 7.3 (HDF5)"

    def __init__(self, path: Path) -> None:
        import h5py

        from nnfit.io.hdf5 import ALLOW_EXTERNAL_ENV, check_no_external

        self.path = path
        # h5py directly: nnfit's open_h5 expects the superblock at offset 0, and a v7.3 file
        # keeps MATLAB's 512-byte header there; the same refusal of outside data applies.
        self.f = h5py.File(path, "r")
        try:
            check_no_external(self.f, path, allow=os.environ.get(ALLOW_EXTERNAL_ENV) == "1")
        except BaseException:
            self.f.close()
            raise

    def _node(self, parts: list[str]) -> Any:
        return self.f["/" + "/".join(parts)] if parts else self.f

    @staticmethod
    def _describe(obj: Any) -> tuple[tuple[int, ...], str]:
        import h5py

        cls = obj.attrs.get("MATLAB_class", b"")
        cls = cls.decode() if isinstance(cls, bytes) else str(cls)
        if isinstance(obj, h5py.Group):
            return (1, 1), "sparse" if "MATLAB_sparse" in obj.attrs else cls or "struct"
        shape = tuple(int(n) for n in obj.shape[::-1])
        if obj.attrs.get("MATLAB_empty", 0):
            shape = (0, 0)
        if obj.dtype.kind == "O" and cls in _NUMERIC | {""}:
            cls = "cell"  # references to other objects: a cell array or struct array
        return shape, cls or {"float64": "double", "float32": "single"}.get(
            obj.dtype.name, obj.dtype.name
        )

    def members(self, parts: list[str]) -> dict[str, tuple[tuple[int, ...], str]]:
        node = self._node(parts)
        return {k: self._describe(node[k]) for k in node if not k.startswith("#")}

    def array(self, parts: list[str]) -> np.ndarray:
        ds = self._node(parts)
        if ds.attrs.get("MATLAB_empty", 0):  # the dataset holds the dimensions, not data
            return np.zeros((0, 0))
        return np.asarray(ds[()]).T

    def close(self) -> None:
        self.f.close()


def _open(path: Path) -> _V5 | _V73:
    from scipy.io.matlab import MatReadError, matfile_version

    try:
        major, _ = matfile_version(path)
    except (MatReadError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a MATLAB .mat file ({exc})") from None
    try:
        return _V73(path) if major == 2 else _V5(path)
    except (MatReadError, ValueError, OSError, TypeError) as exc:
        text = str(exc).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({text})") from None


def _listing(members: dict[str, tuple[tuple[int, ...], str]], prefix: str) -> str:
    return ", ".join(f"{prefix}{k} ({_size(s)} {c})" for k, s, c in _sorted(members)) or "none"


def _sorted(members: dict[str, tuple[tuple[int, ...], str]]) -> list[tuple[str, Any, str]]:
    return [(k, *members[k]) for k in sorted(members)]


def _is_matrix(shape: tuple[int, ...], cls: str) -> bool:
    return cls in _NUMERIC and len(shape) == 2 and math.prod(shape) > 1


def _choose(mat: _V5 | _V73, series: str | None, path: Path) -> list[str]:
    """The path (``["results", "F"]``) of the variable to read: ``series``, else the only one."""
    if series is None:
        usable = [k for k, s, c in _sorted(mat.members([])) if _is_matrix(s, c)]
        if len(usable) == 1:
            logger.info("%s: reading %s, its only numeric matrix", path, usable[0])
            return usable
        raise ValueError(
            f"{path} holds {len(usable) or 'no'} numeric matrices; name the traces with "
            f"--series NAME (or STRUCT.FIELD): {_listing(mat.members([]), '')}"
        )
    parts = series.strip().split(".")
    if not all(re.fullmatch(r"[A-Za-z]\w*", p) for p in parts):
        raise ValueError(
            f"{path}: --series {series!r} is not a MATLAB variable name (or NAME.FIELD of a struct)"
        )
    for depth, name in enumerate(parts):
        members = mat.members(parts[:depth])
        inside = f" in struct {'.'.join(parts[:depth])}" if depth else ""
        if name not in members:
            prefix = ".".join(parts[:depth]) + "." if depth else ""
            raise ValueError(
                f"{path}: no variable {'.'.join(parts[: depth + 1])}{inside}; --series is one "
                f"of: {_listing(members, prefix)}"
            )
        shape, cls = members[name]
        where = ".".join(parts[: depth + 1])
        if depth < len(parts) - 1 and cls != "struct":
            if cls in _NUMERIC or (cls in _REFUSED and cls not in ("object", "opaque")):
                raise ValueError(f"{path}: {where} is a {_size(shape)} {cls}, not a struct")
            # a classdef object (CNMF-E's Sources2D) is stored opaque: its properties cannot
            # be read from the file, only saved from MATLAB as plain variables
            field = parts[depth + 1]
            raise ValueError(
                f"{path}: {where} is a MATLAB object ({_size(shape)} {cls}), whose fields cannot "
                f"be read from the file; in MATLAB, save the field as a variable ({field} = "
                f"{where}.{field}; save('traces.mat', '{field}')) and pass --series {field}"
            )
        if cls == "struct" and math.prod(shape) != 1:
            raise ValueError(
                f"{path}: {where} is a {_size(shape)} struct array; nnfit reads one struct's "
                "field (store the traces as one matrix)"
            )
    shape, cls = mat.members(parts[:-1])[parts[-1]]
    if cls == "struct":
        fields = mat.members(parts)
        raise ValueError(
            f"{path}: {series} is a struct; name a numeric field with --series: "
            f"{_listing(fields, series + '.')}"
        )
    if cls not in _NUMERIC:
        raise ValueError(f"{path}: {series} is {_why_refused(cls)} ({_size(shape)} {cls})")
    return parts


def _found_fs(mat: _V5 | _V73, parts: list[str], path: Path) -> tuple[float | None, str | None]:
    """The sampling rate stored beside the traces: in the traces' struct, else the structs
    around it, else the file's top level, else suite2p's ``ops`` struct (``Fall.mat``)."""
    named: dict[str, list[str]] = {}
    containers = [parts[:depth] for depth in range(len(parts) - 1, -1, -1)]
    top = mat.members([])
    if "ops" in top and top["ops"][1] == "struct" and math.prod(top["ops"][0]) == 1:
        containers.append(["ops"])
    for container in containers:
        prefix = "".join(f"{c}." for c in container)
        named = {
            prefix + k: [*container, k]
            for k, s, c in _sorted(mat.members(container))
            if k.lower().replace("_", "") in FS_NAMES and c in _NUMERIC and math.prod(s) == 1
        }
        if named:
            break
    values = {
        k: check_real(f"{k} in {path}", mat.array(v).item(), low=0.0, low_inclusive=False)
        for k, v in named.items()
    }
    if len(set(values.values())) > 1:
        shown = " and ".join(f"{k} = {v:g}" for k, v in values.items())
        raise ValueError(f"{path}: {shown} disagree; which is the sampling rate? fix the file")
    if not values:
        return None, None
    name = next(iter(values))
    return values[name], name


def read_matlab(
    path: str | os.PathLike[str],
    series: str | None = None,
    fs: float | None = None,
    *,
    fs_label: str = "fs",
) -> Recording:
    """Read traces from a MATLAB ``.mat`` file (any version) as a :class:`Recording`.

    Parameters
    ----------
    path : path-like
        The ``.mat`` file.
    series : str, optional
        The variable holding the traces, or a field of a struct as ``NAME.FIELD`` (nested:
        ``NAME.A.B``); optional when the file holds one numeric matrix (2-D, not a scalar).
    fs : float, optional
        Sampling rate in Hz; needed unless a numeric scalar named as in :data:`FS_NAMES`
        (``fs``, ``Fs``, ``framerate``, ...) sits beside the traces (in the same struct, or at
        the top level), and then it must agree with it.
    fs_label : str
        Name of ``fs`` in error messages.

    Returns
    -------
    Recording
        ``(cells, frames)`` as MATLAB shows the matrix (rows are cells; a vector is one
        cell); ``provenance``: ``input_sha256``, ``series`` (the variable read),
        ``matlab_size``, ``matlab_class``, ``mat_version`` and ``fs_from``.

    Raises
    ------
    ValueError
        One line naming the file and the variable: not a ``.mat`` file, no such variable (the
        candidates are listed), several matrices and none chosen, a struct, cell array, object,
        function handle, sparse, text, logical or complex array, more than 2 dimensions,
        NaN/Inf, a sampling rate that is not a positive number.

    Examples
    --------
    >>> import tempfile, pathlib, scipy.io
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rec.mat"
    >>> scipy.io.savemat(p, {"F": np.ones((3, 100)), "fs": 30.0})
    >>> rec = read_matlab(p)
    >>> rec.traces.shape, rec.fs, rec.provenance["series"]
    ((3, 100), 30.0, 'F')
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input not found: {p}")
    mat = _open(p)
    try:
        parts = _choose(mat, series, p)
        name = ".".join(parts)
        shape, cls = mat.members(parts[:-1])[parts[-1]]
        raw = mat.array(parts)
        found, fs_from = _found_fs(mat, parts, p)
        top = mat.members([])
    finally:
        mat.close()
    if raw.dtype.kind == "c" or raw.dtype.names:  # v7.3 keeps complex as (real, imag)
        raise ValueError(f"{p}: {name} holds complex numbers; store its real part")
    if raw.ndim != 2:
        raise ValueError(
            f"{p}: {name} is {_size(shape)}; expected a cells x frames matrix (or one trace)"
        )
    if 1 in raw.shape:
        raw = raw.reshape(1, -1)
    traces = np.ascontiguousarray(as_float_array(f"{name} in {p}", raw, ndim=(2,)))
    fs_ = resolve_fs(found, fs, f"{p}:{fs_from}" if fs_from else str(p), fs_label)
    provenance = {
        "input_sha256": file_sha256(p),
        "series": name,
        "matlab_size": list(shape),
        "matlab_class": cls,
        "mat_version": mat.version,
        "fs_from": fs_from,
    }
    if parts[0] in ("F", "Fneu") and {"F", "Fneu", "iscell", "ops"} <= top.keys():
        logger.warning(
            "%s: %s of suite2p's Fall.mat holds every ROI (cells or not), without neuropil "
            "subtraction; to deconvolve F - neucoeff * Fneu of the cells, pass the plane folder "
            "that holds its F.npy, Fneu.npy, iscell.npy and ops.npy instead",
            p,
            name,
        )
    n, T = traces.shape
    logger.info("MATLAB %s: %s (%s %s), %d cell(s) x %d frames", p, name, _size(shape), cls, n, T)
    return Recording(traces, fs_, "matlab", p, np.arange(traces.shape[0]), provenance=provenance)
