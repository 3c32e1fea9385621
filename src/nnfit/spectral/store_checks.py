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

__all__ = [
    "check_fitted_data",
    "check_hypercube_shape",
    "check_inputs",
    "check_tile_finite",
    "check_tiles_layout",
]

INPUTS = ("DataCube", "Templates", "LOSVD", "Noise", "Mask", "TemPix", "ObsPix", "VelPix")
"""The store's input datasets: read whole into memory by every reader."""

# (dataset, axis) pairs that must agree: each row names one length of the problem.
_AXES = {
    "L": (("ObsPix", 0), ("DataCube", 1), ("Mask", 0), ("Noise", 1)),
    "S": (("DataCube", 0), ("LOSVD", 0), ("Noise", 0)),
    "T": (("TemPix", 0), ("Templates", 1)),
    "V": (("VelPix", 0), ("LOSVD", 1)),
}


REQUIRED = ("DataCube", "Templates", "LOSVD", "TemPix", "ObsPix", "VelPix")
"""Inputs every populated store holds."""


def check_inputs(
    f: h5py.File, path: str | os.PathLike[str], *, required: tuple[str, ...] = REQUIRED
) -> None:
    """Before reading a store's inputs: their declared sizes against the file and the memory
    budget (:func:`nnfit.io.hdf5.check_declared`), and their lengths against each other.
    ``required``: the datasets this reader needs (a HyperCube reader needs only
    ``/DataCube``).

    Raises
    ------
    ValueError
        Naming the file and the datasets that disagree.
    """
    from nnfit.io.hdf5 import check_declared

    missing = [n for n in required if not isinstance(f.get(n), h5py.Dataset)]
    if missing:
        raise ValueError(
            f"{path}: not a populated cube store; missing {', '.join('/' + m for m in missing)}. "
            "Create it with 'nnfit spectral init' (or StoreWriter.populate_from_arrays)"
        )
    check_declared(f, path, INPUTS)
    for axis, members in _AXES.items():
        seen = {}
        for name, k in members:
            ds = f.get(name)
            if isinstance(ds, h5py.Dataset):
                if ds.ndim <= k:
                    raise ValueError(f"{path}: /{name} has shape {ds.shape}; too few axes")
                seen[name] = int(ds.shape[k])
        if len(set(seen.values())) > 1:
            found = ", ".join(f"/{n} {v}" for n, v in seen.items())
            raise ValueError(
                f"{path}: the {axis} axis disagrees between datasets ({found}); the store was "
                "changed after it was written; re-create it (nnfit spectral init)"
            )


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


def check_tiles_layout(f: h5py.File, path: str | os.PathLike[str]) -> None:
    """Refuse a ``/HyperCube`` not laid out by a build: shape against the inputs, tile
    chunks, and a ``_done`` grid of one flag per tile."""
    check_hypercube_shape(f, path)
    g = f["HyperCube"]
    m = g["models"]
    done = g.get("_done")
    grid = None
    if m.chunks is not None:
        grid = tuple(-(-n // c) for n, c in zip(m.shape[:3], m.chunks[:3], strict=True))
    if grid is None or not isinstance(done, h5py.Dataset) or tuple(done.shape) != grid:
        raise ValueError(
            f"{path}: /HyperCube was not laid out by a build (tile chunks and /HyperCube/_done "
            "disagree or are missing); rebuild it (nnfit cube build --overwrite)"
        )
