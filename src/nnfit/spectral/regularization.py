"""pPXF-style linear regularisation and component-mass constraints for cube fits.

Regularisation adds ``regul^2 * sum_c ||D x[c, :]||^2`` to ``chi^2`` over the population grid
(for example age x metallicity x alpha), with ``D`` the rows of pPXF's ``regul`` (Cappellari
2017, eq. 25): order 1 stacks the first differences ``x[i+1] - x[i]`` along every axis; order 2
has one row per grid point, the discrete Laplacian ``sum_axes (x[i-1] - 2 x[i] + x[i+1])`` over
the axes along which the point is interior (in one dimension the second differences). Larger ``regul`` means smoother weights; as in pPXF it assumes weights of
order unity (normalise the templates so), and the usual recipe is to raise ``regul`` until
``chi^2`` has grown by ``sqrt(2 * N_pixels)`` over the unregularised fit.

Mass constraints ``sum_p x[c, p] = alpha * w_c`` with ``alpha`` free are the linear equalities
``w_a * sum_p x[c, p] - w_c * sum_p x[a, p] = 0`` for every ``c != a`` (``a`` the component with
the largest ``w``), handed to the solver as a matrix ``E`` with ``E x = 0``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["difference_operator", "grid_shape_from_meta", "mass_constraints", "regularizer"]


def grid_shape_from_meta(meta: Any, n_populations: int) -> tuple[int, ...]:
    """The population grid shape recorded in ``template_meta`` (JSON string or mapping).

    Accepts a mapping with ``"shape"``, ``"grid_shape"`` or ``"sizes"`` (the leading template
    pixel axis, if present and not matching, is dropped), or a list of axis records with
    ``"size"``. Falls back to one axis of length ``n_populations``.

    Examples
    --------
    >>> grid_shape_from_meta({"shape": [7561, 6, 60]}, 360)
    (6, 60)
    >>> grid_shape_from_meta({"grid_axes": ["Z", "age"],
    ...                       "axis_values": {"Z": [0, 1], "age": [1, 2, 3]}}, 6)
    (2, 3)
    >>> grid_shape_from_meta(None, 5)
    (5,)
    """
    if isinstance(meta, (str, bytes)):
        meta = json.loads(meta)
    shape: Sequence[int] | None = None
    if isinstance(meta, Mapping) and "grid_axes" in meta and "axis_values" in meta:
        shape = [len(meta["axis_values"][a]) for a in meta["grid_axes"]]
    if shape is None and isinstance(meta, Mapping):
        for key in ("grid_shape", "population_shape", "shape", "sizes", "original_shape"):
            if key in meta:
                shape = [int(v) for v in meta[key]]
                break
        if shape is None and "axes" in meta and not isinstance(meta["axes"][0], str):
            meta = meta["axes"]
    if shape is None and isinstance(meta, Sequence) and not isinstance(meta, (str, bytes)):
        sizes = []
        for ax in meta:
            if isinstance(ax, Mapping) and "size" in ax:
                sizes.append(int(ax["size"]))
            elif isinstance(ax, Mapping) and "values" in ax:
                sizes.append(len(ax["values"]))
        shape = sizes or None
    if not shape:
        return (int(n_populations),)
    shape = list(shape)
    if int(np.prod(shape)) != n_populations and len(shape) > 1:
        shape = shape[1:]  # drop the template-pixel axis of (T, nZ, nAge, ...)
    if int(np.prod(shape)) != n_populations:
        raise ValueError(
            f"template_meta grid {tuple(shape)} does not have P = {n_populations} populations"
        )
    return tuple(s for s in shape)


def difference_operator(grid_shape: Sequence[int], order: int = 2) -> sp.csr_matrix:
    """pPXF's regularisation rows over a C-ordered grid: first differences or the Laplacian.

    Order 1: the first differences along every axis, stacked. Order 2: one row per grid point
    with an interior index along some axis, the sum over those axes of the second differences
    (pPXF's ``reg_ord=2``: the squared Laplacian, not the sum of squared second differences).

    Examples
    --------
    >>> difference_operator((4,), order=2).toarray().astype(int).tolist()
    [[1, -2, 1, 0], [0, 1, -2, 1]]
    >>> difference_operator((2, 3), order=1).shape
    (7, 6)
    >>> difference_operator((3, 3), order=2).toarray()[2].astype(int).tolist()
    [0, 1, 0, 1, -4, 1, 0, 1, 0]
    """
    if order not in (1, 2):
        raise ValueError(f"regul_order must be 1 or 2; got {order}")
    shape = tuple(int(s) for s in grid_shape)
    P = int(np.prod(shape))
    stencil = [-1.0, 1.0] if order == 1 else [1.0, -2.0, 1.0]
    blocks = []
    for ax, n in enumerate(shape):
        if n <= order:
            continue
        d1 = sp.diags(stencil, list(range(order + 1)), shape=(n - order, n))
        if order == 2:  # rows at every point: zero where the point is on this axis' edge
            d1 = sp.vstack([sp.csr_matrix((1, n)), d1, sp.csr_matrix((1, n))])
        mats = [sp.identity(s, format="csr") for s in shape]
        mats[ax] = d1
        M = mats[0]
        for m in mats[1:]:
            M = sp.kron(M, m, format="csr")
        blocks.append(M)
    if not blocks:
        return sp.csr_matrix((0, P))
    if order == 1:
        return sp.vstack(blocks, format="csr")
    lap = sum(blocks[1:], blocks[0]).tocsr()
    keep = np.flatnonzero(np.diff(lap.indptr) > 0)  # drop the rows of corner points (all zero)
    return lap[keep]


def regularizer(
    n_components: int, grid_shape: Sequence[int], regul: float, order: int = 2
) -> np.ndarray:
    """Dense ``regul^2 * D^T D`` (P, P); the penalty on ``x`` is ``sum_c x_c^T H x_c``."""
    D = difference_operator(grid_shape, order)
    return float(regul) ** 2 * np.asarray((D.T @ D).toarray())


def mass_constraints(weights: Sequence[float], n_populations: int) -> np.ndarray:
    """``E`` (C-1, C*P) with ``E x = 0`` iff ``sum_p x[c, p] = alpha * w_c`` for one ``alpha``.

    Examples
    --------
    >>> E = mass_constraints([2.0, 1.0], 2)
    >>> E.tolist()
    [[-0.5, -0.5, 1.0, 1.0]]
    >>> x = np.array([0.5, 1.5, 0.25, 0.75])   # masses 2 and 1
    >>> (E @ x).tolist()
    [0.0]
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    if np.any(w < 0) or not np.any(w > 0) or not np.all(np.isfinite(w)):
        raise ValueError("component weights must be finite, >= 0 and not all zero")
    C, P = w.size, int(n_populations)
    a = int(np.argmax(w))
    rows = []
    for c in range(C):
        if c == a:
            continue
        r = np.zeros((C, P))
        r[c] = w[a]
        r[a] = -w[c]
        rows.append((r / max(w[a], w[c])).ravel())
    return np.array(rows).reshape(len(rows), C * P)
