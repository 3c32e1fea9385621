"""Streamed normal equations ``A^T W^2 A`` and ``A^T W^2 y`` of a cube, spaxel block by block.

The columns of a spaxel's weighted design matrix come from the operator's dictionary of
shifted, rebinned templates (see :mod:`nnfit.spectral.cube_operator`)::

    B[s, :, (c, p)] = W[s] * sum_k kern[s, c, k] * Y[p, k, :]

one ``(S_block x K) @ (K x L)`` product per column and block, then a symmetric rank-``S_block*L``
update ``G += B^T B`` (BLAS ``dsyrk``). The cost is ``S*K*L*m + S*L*m^2`` for ``m`` columns,
so the full Gram (``m = C*P``) is only worth it for moderate ``n``; the working-set solver in
:mod:`nnfit.spectral.fit` asks for the columns of its current working set only.

Blocks run through :func:`nnfit.parallel.map_blocks`: on a cluster each worker returns its
``(m, m)`` and ``(m,)`` accumulators, summed here in block order (so a local run and a cluster
run with the same blocks give the same bits up to BLAS threading).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg.blas import dsyrk

from nnfit.spectral.continuum import project_out
from nnfit.spectral.cube_operator import CubeOperator, _add, _block_data, reduce_blocks

__all__ = ["block_columns", "cube_gram"]


def block_columns(d: Any, columns: np.ndarray, C: int, P: int) -> np.ndarray:
    """Weighted design columns ``B`` (m, S_block, L) of one block for flat indices ``columns``."""
    Sb = d.kern.shape[0]
    L = d.Y.shape[2]
    cols = np.asarray(columns, dtype=np.int64)
    out = np.empty((cols.size, Sb, L))
    cc, pp = np.divmod(cols, P)
    # one (S_block * n_c, K) @ (K, L) product per population present
    order = np.argsort(pp, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pp[order]) != 0])
    ends = np.r_[starts[1:], order.size]
    for a, e in zip(starts, ends, strict=True):
        idx = order[a:e]
        p = pp[idx[0]]
        kc = d.kern[:, cc[idx], :]  # (Sb, m_p, K)
        prod = kc.reshape(-1, kc.shape[2]) @ d.Y[p]  # (Sb*m_p, L)
        out[idx] = prod.reshape(Sb, idx.size, L).transpose(1, 0, 2)
    if d.w is not None:
        out *= d.w[None, :, :]
    return out


def _task_gram(
    block: tuple, columns: np.ndarray, C: int, P: int, new_from: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    source, s0, s1, _ = block
    d = _block_data(source, s0, s1).fitted()  # masked pixels weigh zero
    m = columns.size
    G = np.zeros((m, m - new_from))
    b = np.zeros(m - new_from)
    # keep the design block near 256 MB
    step = max(1, int(32e6 // max(1, m * d.Y.shape[2])))
    for a in range(0, s1 - s0, step):
        sub = d.rows(a, a + step)
        B = project_out(sub.q, block_columns(sub, columns, C, P)).reshape(m, -1)  # (m, Sb*L)
        if B.shape[1] == 0:
            continue
        if new_from == 0:
            # G += B B^T on the upper triangle (B is C-contiguous (m, k) = Fortran (k, m))
            G = dsyrk(1.0, B.T, c=G, beta=1.0, trans=1, lower=0, overwrite_c=1)
        else:
            G += B @ B[new_from:].T
        if sub.wy is not None:
            b += B[new_from:] @ sub.wy.ravel()
    return G, b


def cube_gram(
    op: CubeOperator,
    columns: np.ndarray | None = None,
    *,
    new_from: int = 0,
    on_block: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``G = (W A)^T (W A)`` and ``b = (W A)^T (W y)`` restricted to ``columns``.

    Parameters
    ----------
    op : CubeOperator
        The cube (with its weights and data).
    columns : int array, optional
        Flat indices ``c * P + p`` of the columns wanted (default: all ``C * P``).
    new_from : int
        When > 0, only the columns ``columns[new_from:]`` are new: return ``G[:, new_from:]``
        (m, m - new_from) and ``b[new_from:]`` (extending a known Gram block costs
        ``S*L*m*(m - new_from)`` instead of ``S*L*m^2``).
    on_block : callable, optional
        ``on_block(i, result)`` as each spaxel block finishes (progress).

    Returns
    -------
    G : ndarray (m, m)
        Symmetric Gram block.
    b : ndarray (m,)
        Right-hand side (zeros when the operator has no data).

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(60)
    >>> rng = np.random.default_rng(1)
    >>> op = CubeOperator(rng.random((2, 60)), rng.random((3, 3, 2)), [-100.0, 0.0, 100.0],
    ...                   tem, tem[15:45:3], datacube=rng.random((3, 10)))
    >>> G, b = cube_gram(op)
    >>> A = op.todense()
    >>> bool(np.allclose(G, A.T @ A) and np.allclose(b, A.T @ op._data.wy.ravel()))
    True
    """
    C, P = op.model_shape
    cols = np.arange(C * P) if columns is None else np.asarray(columns, dtype=np.int64)
    G, b = reduce_blocks(
        _task_gram,
        op.blocks(weighted=True),
        (cols, C, P, int(new_from)),
        op.scheduler,
        _add,
        on_block=on_block,
    )
    if new_from:
        return G, b
    m = cols.size
    for i0 in range(0, m, 512):  # mirror the upper triangle, a row band at a time
        i1 = min(m, i0 + 512)
        G[i0:i1, :i0] = G[:i0, i0:i1].T
        blk = G[i0:i1, i0:i1]
        G[i0:i1, i0:i1] = np.triu(blk) + np.triu(blk, 1).T
    return G, b
