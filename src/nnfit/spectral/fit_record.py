"""The settings a fit ran with, recorded as HDF5 attributes beside its results.

``/X_global`` (global fit, :func:`nnfit.spectral.fit.fit_cube`) and ``/BinFit`` (bins fitted
one by one, :func:`nnfit.spectral.bin_fit.fit_bins`) carry ``fit`` ("global" or "per-bin"),
``degree``, ``mdegree``, ``regul`` (a number, or "auto" for pPXF's per-bin rule) and
``regul_order``, so that the maps rebuild the same model without being told again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["fit_settings", "recorded_settings"]

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
