"""Boundary checks shared by every public entry point.

Each failure is a ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message
names the argument, the value found and what is allowed, so the user knows the fix.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def _fmt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float inside the given range, else raise ``ValueError``.

    Examples
    --------
    >>> check_real("fs", 30, low=0, low_inclusive=False)
    30.0
    >>> check_real("fs", -1, low=0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: fs must be > 0; got -1
    """
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise ValueError(f"{name} must be a real number; got {_fmt(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite; got {_fmt(value)}")
    if low is not None and (out < low or (out == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low:g}; got {_fmt(value)}")
    if high is not None and (out > high or (out == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high:g}; got {_fmt(value)}")
    return out


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int inside ``[low, high]``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Integral | np.integer):
        raise ValueError(f"{name} must be an integer; got {_fmt(value)}")
    out = int(value)
    if low is not None and out < low:
        raise ValueError(f"{name} must be >= {low}; got {out}")
    if high is not None and out > high:
        raise ValueError(f"{name} must be <= {high}; got {out}")
    return out


def as_float_array(
    name: str,
    value: object,
    *,
    ndim: tuple[int, ...] | None = None,
    dtype: np.dtype | type = np.float64,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Convert ``value`` to a real floating array and check it, naming ``name`` on failure.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    value : array-like
        Input data. Booleans, complex numbers, strings and objects are rejected.
    ndim : tuple of int, optional
        Allowed numbers of dimensions.
    dtype : dtype, optional
        Output dtype, float64 by default.
    allow_empty : bool, optional
        Whether a zero-size array is acceptable.
    finite : bool, optional
        Reject NaN and Inf (the default), reporting how many and the first position.

    Examples
    --------
    >>> as_float_array("traces", [[1, 2], [3, 4]], ndim=(1, 2)).dtype
    dtype('float64')
    >>> as_float_array("traces", [1.0, float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: traces contains 1 NaN/Inf value(s), first at index (1,); clean or interpolate them first
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ValueError(
            f"{name} must be a real numeric array (float or integer); got dtype {arr.dtype}"
        )
    if ndim is not None and arr.ndim not in ndim:
        allowed = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {allowed}; got {arr.ndim}-D with shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    out = np.asarray(arr, dtype=dtype)
    if finite and out.size:
        bad = ~np.isfinite(out)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN/Inf value(s), first at index {first}; "
                "clean or interpolate them first"
            )
    return out


class NonFiniteValues(ValueError):
    """Values read from a file hold NaN or Inf: the input must be cleaned first."""


def check_finite_rows(values: np.ndarray, rows: np.ndarray, where: str, what: str = "cell") -> None:
    """Refuse NaN/Inf in rows read from a file, naming the file, the row and the frame.

    ``rows``: each row's index in the whole input (a streamed block, or the cells a reader
    keeps, is a part of it, so its own row numbers would mislead); ``what`` names such a row.

    Examples
    --------
    >>> check_finite_rows(np.array([[0.0, np.nan]]), np.array([7]), "rec.npy")
    Traceback (most recent call last):
    ...
    nnfit.validate.NonFiniteValues: rec.npy: cell 7 has NaN/Inf at frame 1 (1 such value(s) in cells 7-7); clean or interpolate them first
    """
    bad = ~np.isfinite(values)
    if bad.any():
        r, t = (int(v) for v in np.argwhere(bad)[0])
        raise NonFiniteValues(
            f"{where}: {what} {int(rows[r])} has NaN/Inf at frame {t} ({int(bad.sum())} such "
            f"value(s) in {what}s {int(rows[0])}-{int(rows[-1])}); clean or interpolate them "
            "first"
        )
