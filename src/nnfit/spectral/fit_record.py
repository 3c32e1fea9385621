"""The settings a fit ran with, recorded as HDF5 attributes beside its results.

``/X_global`` (global fit, :func:`nnfit.spectral.fit.fit_cube`) and ``/BinFit`` (bins fitted
one by one, :func:`nnfit.spectral.bin_fit.fit_bins`) carry ``fit`` ("global" or "per-bin"),
``degree``, ``mdegree``, ``regul`` (a number, or "auto" for pPXF's per-bin rule) and
``regul_order``, so that the maps rebuild the same model without being told again.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

__all__ = ["WRITTEN", "fit_settings", "latest_result", "recorded_settings", "written_now"]

#: attribute with the UTC time (ISO 8601) a fit wrote its results
WRITTEN = "written_utc"

_KEYS = ("fit", "degree", "mdegree", "regul", "regul_order")


def fit_settings(
    fit: str, degree: int, mdegree: int, regul: float | str, regul_order: int
) -> dict[str, Any]:
    """The attribute record of a fit.

    Examples
    --------
    >>> fit_settings("global", 4, 0, 0.0, 2)
    {'fit': 'global', 'degree': 4, 'mdegree': 0, 'regul': 0.0, 'regul_order': 2}
    """
    return {
        "fit": str(fit),
        "degree": int(degree),
        "mdegree": int(mdegree),
        "regul": regul if isinstance(regul, str) else float(regul),
        "regul_order": int(regul_order),
    }


def recorded_settings(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record read back from an attribute mapping (``None`` when a fit did not write one).

    Examples
    --------
    >>> recorded_settings({"fit": "per-bin", "degree": 4, "mdegree": 0, "regul": "auto",
    ...                    "regul_order": 2, "method": "gram"})["regul"]
    'auto'
    >>> recorded_settings({"method": "gram"}) is None
    True
    """
    if not all(k in attrs for k in _KEYS):
        return None
    out = {k: attrs[k] for k in _KEYS}
    out = {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}
    out["fit"] = str(out["fit"])
    out["degree"], out["mdegree"] = int(out["degree"]), int(out["mdegree"])
    out["regul_order"] = int(out["regul_order"])
    out["regul"] = out["regul"] if isinstance(out["regul"], str) else float(out["regul"])
    return out


def written_now() -> str:
    """The value of :data:`WRITTEN` for results written now (ISO 8601, UTC, sortable)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def latest_result(f: Any, choice: str | None = None) -> str:
    """Which fit result of an open store to read: ``"BinFit"`` or ``"X_global"``.

    ``choice`` ("per-bin" or "global") names one; otherwise, where the store holds both, the
    one written last (:data:`WRITTEN`; a result without the stamp counts as older, and of two
    without it the per-bin one is taken).

    Raises
    ------
    ValueError
        Where the chosen result, or any, is missing.
    """
    names = {"per-bin": "BinFit", "global": "X_global"}
    if choice is not None:
        if choice not in names:
            raise ValueError(f"fit must be 'per-bin' or 'global'; got {choice!r}")
        if names[choice] not in f:
            raise ValueError(
                f"{f.filename}: no /{names[choice]}: run 'nnfit spectral fit"
                f"{' --per-bin' if choice == 'per-bin' else ''}' first"
            )
        return names[choice]
    have = [n for n in ("BinFit", "X_global") if n in f]
    if not have:
        raise ValueError(
            f"{f.filename}: no fit results (/BinFit or /X_global); run 'nnfit spectral fit'"
        )
    return max(have, key=lambda n: (str(f[n].attrs.get(WRITTEN, "")), n == "BinFit"))
