"""Active-set non-negative least squares on a Gram matrix, with optional equality constraints.

The problem is ``min_x 0.5 x^T G x - b^T x`` subject to ``x >= 0`` (and ``E x = 0`` when
``equality`` is given). With ``G = A^T W^2 A`` and ``b = A^T W^2 y`` this is the weighted
least-squares fit ``min ||W (A x - y)||^2`` without ever forming ``A``: tall problems (many
more rows than unknowns) reduce to an ``n x n`` system once, and the active-set iterations cost
only the free set's size.

The solver is Lawson-Hanson's, run on the Gram matrix in unit-diagonal scaling (``D G D`` with
``D = diag(G)^-1/2``), which makes the stopping tolerance scale-free: a scaled gradient entry
``w_j`` of size ``t`` means moving ``x_j`` alone could lower ``||W(Ax - y)||^2`` by ``t^2``.
Several violating variables enter per outer iteration (a block of the worst ones), which keeps
dense solutions (regularised fits) to a handful of factorisations; when a block makes no
progress the step falls back to the single worst variable, which is Lawson-Hanson's rule and
keeps the finite-termination argument. Subproblems are solved by Cholesky with one step of
iterative refinement, falling back to a symmetric eigendecomposition where the free block is
numerically singular.

Exact linear equality constraints ``E x = 0`` (used for component-mass ratios) are enforced by
the method of multipliers: each outer step solves the bound-constrained problem with
``G + rho E^T E`` and ``b - E^T lam`` exactly, then updates ``lam``; the residual ``|E x|`` is
driven to the stated tolerance and reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

__all__ = ["NNLSResult", "nnls_gram"]


@dataclass
class NNLSResult:
    """What :func:`nnls_gram` returns.

    Attributes
    ----------
    x : ndarray
        The solution, ``x >= 0``.
    iterations : int
        Subproblem solves (factorisations) performed.
    outer_iterations : int
        Times variables were added to the free set.
    kkt_violation : float
        Largest scaled KKT violation ``max_j |w_j|`` over free ``j`` and ``max(w_j, 0)`` over
        ``x_j = 0``, with ``w = D (b - G x - E^T lam)``; squared, it bounds the objective decrease
        available from moving any single variable (in units of ``||W(Ax-y)||^2``).
    equality_residual : float
        ``max |E x|`` relative to ``max |E| * max |x|`` (0 without constraints).
    converged : bool
        Whether the KKT violation reached ``tol`` (and the equality residual ``eq_tol``).
    n_free : int
        Number of strictly positive entries.
    time_s : float
        Wall time.
    multipliers : ndarray or None
        Lagrange multipliers of the equality constraints.
    """

    x: np.ndarray
    iterations: int = 0
    outer_iterations: int = 0
    kkt_violation: float = np.inf
    equality_residual: float = 0.0
    converged: bool = False
    n_free: int = 0
    time_s: float = 0.0
    multipliers: np.ndarray | None = field(default=None, repr=False)


def _solve_spd(M: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Solve ``M z = r`` for symmetric positive semi-definite ``M`` (unit diagonal)."""
    try:
        c = sla.cho_factor(M, lower=True, check_finite=False)
        z = sla.cho_solve(c, r, check_finite=False)
        z += sla.cho_solve(c, r - M @ z, check_finite=False)  # one refinement step
        if np.all(np.isfinite(z)):
            return np.asarray(z)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        pass
    vals, vecs = np.linalg.eigh(M)
    cut = max(vals.max(), 0.0) * M.shape[0] * np.finfo(float).eps
    inv = np.where(vals > cut, 1.0 / np.where(vals > cut, vals, 1.0), 0.0)
    return np.asarray(vecs @ (inv * (vecs.T @ r)))


def _nnls_scaled(
    G: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    tol: float,
    max_iter: int,
    block: int,
) -> tuple[np.ndarray, int, int, float]:
    """Lawson-Hanson on unit-diagonal ``G``; returns (x, solves, outer, kkt violation)."""
    n = b.size
    free = x > 0
    solves = 0
    outer = 0
    w = b - G @ x
    # Start from the given support: make x optimal on it first.
    if free.any():
        x, s = _inner(G, b, x, free, np.zeros(n, bool), max_iter)
        solves += s
        free = x > 0
        w = b - G @ x
    while solves < max_iter:
        viol = np.where(~free, w, 0.0)
        kkt = max(float(viol.max(initial=0.0)), float(np.abs(w[free]).max(initial=0.0)))
        if float(viol.max(initial=0.0)) <= tol:
            if np.abs(w[free]).max(initial=0.0) <= tol or not free.any():
                return x, solves, outer, kkt
            # free set not yet optimal (can happen after a refinement drift): re-solve it
            x, s = _inner(G, b, x, free, np.zeros(n, bool), max_iter - solves)
            solves += s
            free = x > 0
            w = b - G @ x
            viol = np.where(~free, w, 0.0)
            kkt = max(float(viol.max(initial=0.0)), float(np.abs(w[free]).max(initial=0.0)))
            if float(viol.max(initial=0.0)) <= tol:
                return x, solves, outer, kkt
        outer += 1
        cand = np.flatnonzero(viol > tol)
        k = min(block, cand.size)
        order = cand[np.argsort(viol[cand])[::-1][:k]]
        new = np.zeros(n, bool)
        new[order] = True
        x_prev_obj = 0.5 * x @ (G @ x) - b @ x
        x2, s = _inner(G, b, x, free | new, new, max_iter - solves)
        solves += s
        obj = 0.5 * x2 @ (G @ x2) - b @ x2
        if not (x2 > 0)[new].any() or obj >= x_prev_obj:
            # block made no progress: Lawson-Hanson's single worst variable
            new = np.zeros(n, bool)
            new[order[0]] = True
            x2, s = _inner(G, b, x, free | new, new, max_iter - solves)
            solves += s
            if not x2[order[0]] > 0:
                # degenerate: the best candidate cannot enter; stop and report honestly
                w = b - G @ x
                return x, solves, outer, kkt
        x = x2
        free = x > 0
        w = b - G @ x
        block = min(2 * block, n) if k == block else block
    viol = np.where(~free, w, 0.0)
    kkt = max(float(viol.max(initial=0.0)), float(np.abs(w[free]).max(initial=0.0)))
    return x, solves, outer, kkt


def _inner(
    G: np.ndarray, b: np.ndarray, x: np.ndarray, P: np.ndarray, new: np.ndarray, budget: int
) -> tuple[np.ndarray, int]:
    """Lawson-Hanson inner loop: optimum on the free set ``P``, stepping back to stay >= 0."""
    x = x.copy()
    P = P.copy()
    solves = 0
    while P.any() and solves < max(budget, 1):
        idx = np.flatnonzero(P)
        z = np.zeros_like(x)
        z[idx] = _solve_spd(G[np.ix_(idx, idx)], b[idx])
        solves += 1
        bad = P & (z <= 0)
        if not bad.any():
            return z, solves
        # step from x towards z until the first free variable hits zero
        bi = np.flatnonzero(bad)
        denom = x[bi] - z[bi]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(denom > 0, x[bi] / denom, 0.0)
        alpha = float(np.clip(ratios.min(), 0.0, 1.0))
        x = x + alpha * (z - x)
        x[~P] = 0.0
        hit = P & ((x <= 0) | (bad & (x <= np.finfo(float).eps * np.abs(x).max(initial=1.0))))
        hit |= new & bad & (x <= 0)
        P &= ~hit
        x[~P] = 0.0
        np.maximum(x, 0.0, out=x)
    return x, solves


def nnls_gram(
    G: np.ndarray,
    b: np.ndarray,
    *,
    x0: np.ndarray | None = None,
    tol: float = 1e-12,
    atol: float | None = None,
    max_iter: int | None = None,
    block: int = 16,
    equality: np.ndarray | None = None,
    eq_tol: float = 1e-12,
    rho: float | None = None,
) -> NNLSResult:
    r"""Minimise ``0.5 x^T G x - b^T x`` over ``x >= 0`` (and ``E x = 0``) exactly.

    Parameters
    ----------
    G : ndarray, shape (n, n)
        Symmetric positive semi-definite Gram matrix ``A^T W^2 A`` (plus any regulariser).
    b : ndarray, shape (n,)
        ``A^T W^2 y``.
    x0 : ndarray, optional
        Warm start (its support seeds the free set); negative entries are clipped.
    tol : float
        Relative KKT tolerance: stop when every scaled gradient violation is below
        ``tol * max_j |b_j| / sqrt(G_jj)``.
    atol : float, optional
        Absolute scaled tolerance instead (for ``G = A^T W^2 A`` with ``W = 1/sigma`` it is in
        units of ``sqrt(chi^2)``: no single variable can lower ``chi^2`` by more than
        ``atol^2``).
    max_iter : int, optional
        Cap on subproblem solves (default ``10 n + 100``).
    block : int
        Initial number of variables entering per outer iteration (doubles while useful).
    equality : ndarray, shape (m, n), optional
        Exact linear constraints ``E x = 0``.
    eq_tol : float
        Relative tolerance on ``max |E x|``.
    rho : float, optional
        Augmented-Lagrangian penalty (default: scaled to ``G``).

    Returns
    -------
    NNLSResult

    Notes
    -----
    The problem is

    .. math::

        \min_{x \ge 0} \; \tfrac12 x^\top G x - b^\top x
        \quad (\text{and } E x = 0 \text{ when } \texttt{equality} \text{ is given}),

    which for :math:`G = A^\top W^2 A`, :math:`b = A^\top W^2 y` is
    :math:`\min_{x \ge 0} \tfrac12 \lVert W (A x - y) \rVert_2^2` up to a constant. The
    optimum satisfies the KKT conditions

    .. math::

        x \ge 0, \qquad w = b - G x \le 0 \text{ where } x_j = 0, \qquad
        w_j = 0 \text{ where } x_j > 0.

    The active-set method of Lawson and Hanson [1]_ moves variables with :math:`w_j > 0` into
    the free set, solves the unconstrained subproblem on it, and steps back to the boundary
    when a free variable would turn negative; working on :math:`G` and :math:`b` instead of
    :math:`A` is the fast NNLS of Bro and De Jong [2]_. Here the Gram is scaled to unit
    diagonal and a block of the worst violators enters per iteration (one, Lawson and Hanson's
    rule, when a block makes no progress). Equality constraints are enforced by the method of
    multipliers around this exact solve.

    References
    ----------
    .. [1] C. L. Lawson and R. J. Hanson, "Solving Least Squares Problems", Prentice-Hall
       (1974), ch. 23; SIAM Classics in Applied Mathematics 15 (1995).
       https://doi.org/10.1137/1.9781611971217
    .. [2] R. Bro and S. De Jong, "A fast non-negativity-constrained least squares
       algorithm", J. Chemometrics 11(5), 393-401 (1997).
       https://doi.org/10.1002/(SICI)1099-128X(199709/10)11:5<393::AID-CEM483>3.0.CO;2-L

    Examples
    --------
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> y = np.array([2.0, -1.0, 1.0])
    >>> res = nnls_gram(A.T @ A, A.T @ y)
    >>> np.round(res.x, 12).tolist(), res.converged
    ([1.5, 0.0], True)
    """
    t0 = time.perf_counter()
    G = np.asarray(G, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).ravel()
    n = b.size
    if G.shape != (n, n):
        raise ValueError(f"G must be ({n}, {n}) to match b; got {G.shape}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(b))):
        raise ValueError("G and b must be finite")
    if max_iter is None:
        max_iter = 10 * n + 100
    d = np.sqrt(np.clip(np.diag(G), 0.0, None))
    live = d > 0
    dinv = np.where(live, 1.0 / np.where(live, d, 1.0), 0.0)
    Gs = G * dinv[:, None] * dinv[None, :]
    bs = b * dinv
    np.fill_diagonal(Gs, np.where(live, 1.0, 1.0))
    scale = float(np.abs(bs).max(initial=0.0)) or 1.0
    atol = tol * scale if atol is None else float(atol)
    xs = np.zeros(n) if x0 is None else np.clip(np.asarray(x0, float).ravel(), 0.0, None) * d
    xs[~live] = 0.0

    if equality is None:
        xs, solves, outer, kkt = _nnls_scaled(Gs, bs, xs, atol, max_iter, block)
        xs[~live] = 0.0
        x = xs * dinv
        return NNLSResult(
            x=x,
            iterations=solves,
            outer_iterations=outer,
            kkt_violation=kkt,
            converged=kkt <= atol,
            n_free=int(np.count_nonzero(x > 0)),
            time_s=time.perf_counter() - t0,
        )

    E = np.atleast_2d(np.asarray(equality, dtype=np.float64))
    if E.shape[1] != n:
        raise ValueError(f"equality must have {n} columns; got shape {E.shape}")
    Es = E * dinv[None, :]
    rn = np.linalg.norm(Es, axis=1)
    rn[rn == 0] = 1.0
    Es = Es / rn[:, None]
    EtE = Es.T @ Es
    if rho is None:
        rho = 1e4
    lam = np.zeros(E.shape[0])
    solves_total = 0
    outer_total = 0
    kkt = np.inf
    eq_res = np.inf
    for _ in range(200):
        H = Gs + rho * EtE
        r = bs - Es.T @ lam
        xs, solves, outer, _ = _nnls_scaled(H, r, xs, atol * 1e-2, max_iter, block)
        solves_total += solves
        outer_total += outer
        ex = Es @ xs
        lam = lam + rho * ex
        xmax = float(np.abs(xs).max(initial=0.0)) or 1.0
        eq_res = float(np.abs(ex).max(initial=0.0)) / xmax
        w = bs - Gs @ xs - Es.T @ lam
        free = xs > 0
        kkt = max(
            float(np.where(~free, w, 0.0).max(initial=0.0)),
            float(np.abs(w[free]).max(initial=0.0)),
        )
        if eq_res <= eq_tol and kkt <= atol:
            break
        if solves_total >= max_iter:
            break
    x = xs * dinv
    return NNLSResult(
        x=x,
        iterations=solves_total,
        outer_iterations=outer_total,
        kkt_violation=kkt,
        equality_residual=eq_res,
        converged=bool(eq_res <= eq_tol and kkt <= atol),
        n_free=int(np.count_nonzero(x > 0)),
        time_s=time.perf_counter() - t0,
        multipliers=lam / rn,
    )
