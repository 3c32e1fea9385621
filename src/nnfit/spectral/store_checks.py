"""Checks on what a store holds when it is read back, whoever wrote it.

The writer (:class:`nnfit.spectral.store.StoreWriter`) validates its inputs, but a store can
be changed afterwards by another tool. Readers therefore refuse non-finite data on fitted
pixels, non-finite model tiles and a HyperCube whose shape disagrees with the inputs,
naming the file and the place inside it, instead of returning a NaN or wrong-size answer.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

__all__ = ["check_fitted_data", "check_hypercube_shape", "check_tile_finite"]


def check_fitted_data(
    path: str | os.PathLike[str],
    datacube: np.ndarray,
    mask: np.ndarray,
    noise: np.ndarray | None = None,
) -> None:
    """Refuse NaN/Inf in ``/DataCube`` (and zero, negative or non-finite ``/Noise``) on
    fitted pixels; ``datacube`` is (S, L) and ``mask`` (L,) with True = fitted.

    Examples
    --------
    >>> check_fitted_data("c.h5", np.array([[1.0, np.nan]]), np.array([True, False]))
    >>> check_fitted_data("c.h5", np.array([[1.0, np.nan]]), np.array([True, True]))
    Traceback (most recent call last):
    ...
    ValueError: c.h5: /DataCube holds 1 NaN/Inf value(s) on fitted pixels, first at (s, l) = (0, 1); fix the data or mask those pixels (/Mask False)
    """
    fitted = np.asarray(mask, dtype=bool)
    bad = ~np.isfinite(datacube[:, fitted])
    if bad.any():
        s, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}: /DataCube holds {int(bad.sum())} NaN/Inf value(s) on fitted pixels, first "
            f"at (s, l) = ({s}, {int(np.flatnonzero(fitted)[j])}); fix the data or mask those "
            "pixels (/Mask False)"
        )
    if noise is not None:
        nz = noise[:, fitted]
        bad = ~(np.isfinite(nz) & (nz > 0))
        if bad.any():
            s, j = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"{path}: /Noise must be finite and > 0 on fitted pixels; {int(bad.sum())} "
                f"value(s) are not, first at (s, l) = ({s}, {int(np.flatnonzero(fitted)[j])})"
            )


def check_hypercube_shape(f: h5py.File, path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Return ``/HyperCube/models``' shape (S, C, P, L) after checking it against the inputs
    (``/DataCube`` (S, L), ``/LOSVD`` (S, V, C), ``/Templates`` (P, T)) present in ``f``."""
    models = f["HyperCube/models"]
    shape = tuple(int(v) for v in models.shape)
    if len(shape) != 4:
        raise ValueError(f"{path}: /HyperCube/models must be 4-D (S, C, P, L); got {shape}")
    S, C, P, L = shape
    expected = {
        "DataCube": ((0, S), (1, L)),
        "LOSVD": ((0, S), (2, C)),
        "Templates": ((0, P),),
        "ObsPix": ((0, L),),
    }
    for name, axes in expected.items():
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            continue
        for axis, n in axes:
            if ds.ndim <= axis or ds.shape[axis] != n:
                raise ValueError(
                    f"{path}: /HyperCube/models has shape (S, C, P, L) = {shape}, which does not "
                    f"match /{name} {ds.shape}; rebuild it (nnfit cube build --overwrite)"
                )
    return shape


def check_tile_finite(path: str | os.PathLike[str], tile: np.ndarray, sel: tuple) -> None:
    """Refuse a HyperCube tile holding NaN/Inf; ``sel`` is its (s, c, p) slices."""
    if not np.isfinite(tile).all():
        where = ", ".join(f"{s.start}:{s.stop}" for s in sel)
        raise ValueError(
            f"{path}: /HyperCube/models[{where}] holds NaN/Inf values; rebuild it "
            "(nnfit cube build --overwrite)"
        )
