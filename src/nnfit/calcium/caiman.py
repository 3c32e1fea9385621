"""CaImAn results: the HDF5 file ``CNMF.save('results.hdf5')`` writes.

``CNMF.save`` hands the object's ``__dict__`` to ``caiman.utils.utils.save_dict_to_hdf5``,
which writes one group per nested object and one dataset per array or number (strings are
attributes; ``None`` is the string dataset ``'NoneType'``). What is read here:

``/estimates/C``
    ``(components, frames)`` denoised calcium traces.
``/estimates/YrA``
    ``(components, frames)`` residuals: ``C + YrA`` is the raw trace of each component (what
    CaImAn's own deconvolution and ``detrend_df_f`` start from).
``/estimates/F_dff``
    ``(components, frames)`` dF/F, present once ``estimates.detrend_df_f()`` has run.
``/estimates/idx_components``
    indices of the accepted components (after ``evaluate_components``); absent or ``'NoneType'``
    when none were evaluated, then every component is read.
``/params/data/fr``
    frame rate in Hz.

(Layout read from CaImAn's ``cnmf.py`` ``CNMF.save`` and ``utils.py``
``recursively_save_dict_contents_to_group``, flatironinstitute/CaImAn at 881e627.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.recording import Recording, resolve_fs
from nnfit.io import file_sha256
from nnfit.io.hdf5 import open_h5
from nnfit.validate import as_float_array, check_real

__all__ = ["CAIMAN_TRACES", "read_caiman"]

logger = logging.getLogger(__name__)

#: What ``traces=`` may select: raw (C + YrA, the default), denoised C, or dF/F.
CAIMAN_TRACES = ("C+YrA", "C", "F_dff")


def _dataset(f: Any, key: str) -> Any:
    """The dataset at ``key``, or ``None`` when it is absent or CaImAn's ``'NoneType'``."""
    import h5py

    item = f.get(key)
    if item is None:
        return None
    if not isinstance(item, h5py.Dataset):
        raise ValueError(f"{f.filename}: /{key} is a group, expected a dataset")
    if item.dtype.kind in "SOU" and item.shape == ():
        value = item[()]
        if value in (b"NoneType", "NoneType"):
            return None
    return item


def _traces(f: Any, key: str, path: Path) -> np.ndarray:
    item = _dataset(f, key)
    if item is None:
        raise ValueError(f"{path}: /{key} is missing (not CaImAn results, or not computed)")
    if item.dtype.kind not in "fiu":
        raise ValueError(f"{path}: /{key} has dtype {item.dtype}; expected numbers")
    if item.ndim not in (1, 2):
        raise ValueError(f"{path}: /{key} has shape {item.shape}; expected (components, frames)")
    return as_float_array(f"/{key} in {path}", np.atleast_2d(item[()]), ndim=(2,))


def read_caiman(
    path: str | os.PathLike[str],
    fs: float | None = None,
    *,
    fs_label: str = "fs",
    traces: str = "C+YrA",
) -> Recording:
    """Read CaImAn ``CNMF.save`` results as a :class:`Recording`.

    Parameters
    ----------
    path : path-like
        The ``.hdf5`` file.
    fs : float, optional
        Sampling rate in Hz; must agree with ``/params/data/fr`` when the file has it.
    fs_label : str
        Name of ``fs`` in error messages.
    traces : {"C+YrA", "C", "F_dff"}
        Raw traces (denoised plus residual; the default), the denoised ``C`` alone, or dF/F.

    Returns
    -------
    Recording
        The accepted components (``/estimates/idx_components``) when the file lists them,
        else all; ``cell_index`` holds the component indices.

    Raises
    ------
    ValueError
        One line naming the file and the dataset: not CaImAn results, a missing or mis-shaped
        array, a frame rate that is not a positive number, component indices out of range.
    """
    import h5py

    p = Path(path)
    if traces not in CAIMAN_TRACES:
        raise ValueError(
            f"{p} is CaImAn results: its traces are one of {', '.join(CAIMAN_TRACES)} "
            f"(--series); got {traces!r}"
        )
    try:
        f = open_h5(p, "r")
    except (OSError, ValueError) as exc:
        why = str(exc).removeprefix(f"{p}: ")
        raise ValueError(f"{p}: not a readable HDF5 file ({why})") from None
    with f:
        if not isinstance(f.get("estimates"), h5py.Group):
            raise ValueError(
                f"{p}: no /estimates group; expected the HDF5 file CaImAn's CNMF.save() writes"
            )
        if traces == "C+YrA":
            c = _traces(f, "estimates/C", p)
            yra = _traces(f, "estimates/YrA", p)
            if yra.shape != c.shape:
                raise ValueError(
                    f"{p}: /estimates/YrA has shape {yra.shape}, /estimates/C {c.shape}"
                )
            data = c + yra
        else:
            key = f"estimates/{traces}"
            if traces == "F_dff" and _dataset(f, key) is None:
                raise ValueError(
                    f"{p}: /{key} is missing (CaImAn writes it after estimates.detrend_df_f()); "
                    "use --series C+YrA for the raw traces"
                )
            data = _traces(f, key, p)
        n = data.shape[0]
        keep = np.arange(n)
        idx = _dataset(f, "estimates/idx_components")
        if idx is not None:
            raw = np.asarray(idx[()])
            if raw.dtype.kind not in "iu" or raw.ndim != 1:
                raise ValueError(
                    f"{p}: /estimates/idx_components has dtype {raw.dtype} shape {raw.shape}; "
                    "expected a list of component indices"
                )
            if raw.size and (raw.min() < 0 or raw.max() >= n):
                raise ValueError(
                    f"{p}: /estimates/idx_components lists component {int(raw.max())} but "
                    f"/estimates/{traces.split('+')[0]} has {n} components"
                )
            keep = np.unique(raw.astype(np.int64))
            if keep.size == 0:
                raise ValueError(f"{p}: /estimates/idx_components accepts no component")
        fr = _dataset(f, "params/data/fr")
        found = None
        if fr is not None:
            found = check_real(
                f"/params/data/fr in {p}", np.asarray(fr[()]).item(), low=0.0, low_inclusive=False
            )
    fs_ = resolve_fs(found, fs, f"{p}:/params/data/fr" if found is not None else str(p), fs_label)
    provenance = {
        "input_sha256": file_sha256(p),
        "traces": traces,
        "n_components": int(n),
        "accepted_from": "estimates/idx_components" if idx is not None else "all components",
    }
    logger.info("CaImAn %s: %s of %d of %d components at %g Hz", p, traces, keep.size, n, fs_)
    return Recording(
        np.ascontiguousarray(data[keep]), fs_, "caiman", p, keep, provenance=provenance
    )
