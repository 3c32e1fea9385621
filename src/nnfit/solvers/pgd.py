"""Accelerated projected gradient (FISTA) for ``min f(x)`` over ``x >= 0`` on any operator.

For ``f(x) = ||W (A x - y)||^2`` the solver needs only products with ``A`` and ``A^T`` (one
fused pass per iteration through :func:`operator_objective`), so it runs where the Gram does
not fit. Two things make it usable on ill-conditioned problems:

* Diagonal preconditioning ``x = D z`` with ``D = 1 / ||W A e_j||`` (or any positive scaling):
  a positive diagonal keeps the feasible set an orthant, so the projection stays a clip.
* Adaptive restart (O'Donoghue & Candes, gradient scheme): momentum is reset whenever it
  points uphill, which restores linear convergence on strongly convex pieces.

It is not an exact solver on SSP-like libraries (condition ~1e12 needs thousands of
iterations); :func:`nnfit.solvers.nnls.nnls_gram` is. Use it for statistical convergence at
sizes no Gram fits, or as a warm start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nnfit.operators import LinearOperator

__all__ = ["PGDResult", "operator_objective", "pgd"]


@dataclass
class PGDResult:
    """What :func:`pgd` returns: ``x``, ``f`` (objective), ``iterations``, ``converged``,
    ``restarts``, ``time_s`` and ``history`` (objective per iteration)."""

    x: np.ndarray
    f: float
    iterations: int
    converged: bool
    restarts: int = 0
    time_s: float = 0.0
    history: list[float] = field(default_factory=list, repr=False)


def operator_objective(
    op: LinearOperator, y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], Callable[[np.ndarray], np.ndarray]]:
    """``fun_grad(x) -> (f, grad)`` and ``hess_vec(v)`` for ``f = ||W (A x - y)||^2``.

    Examples
    --------
    >>> from nnfit.operators import MatrixOperator
    >>> fg, hv = operator_objective(MatrixOperator(np.eye(2)), np.array([1.0, 2.0]))
    >>> f, g = fg(np.zeros(2))
    >>> f, g.tolist()
    (5.0, [-2.0, -4.0])
    """
    w2 = None if weights is None else np.asarray(weights, dtype=np.float64) ** 2
    y = np.asarray(y, dtype=np.float64)

    def fun_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        r = op.forward(x) - y
        wr = r if w2 is None else w2 * r
        return float(np.vdot(r, wr)), 2.0 * op.adjoint(wr)

    def hess_vec(v: np.ndarray) -> np.ndarray:
        a = op.forward(v)
        return 2.0 * op.adjoint(a if w2 is None else w2 * a)

    return fun_grad, hess_vec


def _power_lipschitz(
    hess_vec: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, ...],
    scale: np.ndarray,
    n_iter: int = 30,
) -> float:
    rng = np.random.default_rng(0)
    v = rng.random(shape)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(n_iter):
        u = scale * hess_vec(scale * v)
        lam_new = float(np.linalg.norm(u))
        if lam_new == 0:
            return 1.0
        v = u / lam_new
        if abs(lam_new - lam) <= 1e-4 * lam_new:
            lam = lam_new
            break
        lam = lam_new
    return 1.05 * lam


def pgd(
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    hess_vec: Callable[[np.ndarray], np.ndarray] | None = None,
    lipschitz: float | None = None,
    scale: np.ndarray | None = None,
    max_iter: int = 1000,
    ftol: float = 0.0,
    restart: bool = True,
    stop: Callable[[int, np.ndarray, float, np.ndarray], bool] | None = None,
) -> PGDResult:
    r"""Minimise a smooth convex ``f`` over ``x >= 0`` with preconditioned FISTA.

    Parameters
    ----------
    fun_grad : callable
        ``x -> (f(x), grad f(x))``.
    x0 : ndarray
        Start (clipped to ``>= 0``).
    hess_vec : callable, optional
        ``v -> H v``; used to estimate the Lipschitz constant when ``lipschitz`` is omitted.
    lipschitz : float, optional
        Lipschitz constant of the (scaled) gradient.
    scale : ndarray, optional
        Positive diagonal preconditioner ``D`` (``x = D z``), shaped like ``x``.
    max_iter : int
        Iteration cap.
    ftol : float
        Stop when the objective decreases by less than ``ftol`` (absolute) over 10 iterations.
    restart : bool
        Adaptive (gradient) restart of the momentum.
    stop : callable, optional
        ``stop(it, x, f, g) -> bool`` for custom stopping (e.g. a chi^2 target).

    Returns
    -------
    PGDResult

    Notes
    -----
    With the diagonal preconditioner :math:`D` (``scale``) the solver works on
    :math:`x = D z`,

    .. math::

        \min_{z \ge 0} \; f(D z),

    which has the same feasible orthant, so the projection stays a clip. For
    :func:`operator_objective`, :math:`f(x) = \lVert W (A x - y) \rVert_2^2`. FISTA [1]_ steps
    with :math:`1/L`, :math:`L` the Lipschitz constant of :math:`z \mapsto D \nabla f(D z)`
    (given, or estimated by power iteration on ``hess_vec``):

    .. math::

        z_k = \max\bigl(v_k - \tfrac1L D \nabla f(D v_k), 0\bigr), \quad
        t_{k+1} = \tfrac12 \bigl(1 + \sqrt{1 + 4 t_k^2}\bigr), \quad
        v_{k+1} = z_k + \tfrac{t_k - 1}{t_{k+1}} (z_k - z_{k-1}).

    With ``restart`` the momentum is reset (:math:`t \leftarrow 1`, :math:`v \leftarrow z`)
    whenever :math:`\langle D \nabla f(D v_k), z_k - z_{k-1} \rangle > 0`, the gradient scheme
    of adaptive restart [2]_, which restores linear convergence on strongly convex pieces.

    References
    ----------
    .. [1] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for
       linear inverse problems", SIAM J. Imaging Sci. 2(1), 183-202 (2009).
       https://doi.org/10.1137/080716542
    .. [2] B. O'Donoghue and E. Candes, "Adaptive restart for accelerated gradient schemes",
       Found. Comput. Math. 15, 715-732 (2015). https://doi.org/10.1007/s10208-013-9150-3

    Examples
    --------
    >>> from nnfit.operators import MatrixOperator
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> fg, hv = operator_objective(MatrixOperator(A), np.array([2.0, -1.0, 1.0]))
    >>> res = pgd(fg, np.zeros(2), hess_vec=hv, max_iter=500)
    >>> np.round(res.x, 6).tolist()
    [1.5, 0.0]
    """
    t0 = time.perf_counter()
    x = np.clip(np.asarray(x0, dtype=np.float64), 0.0, None)
    d = np.ones_like(x) if scale is None else np.asarray(scale, dtype=np.float64)
    if lipschitz is None:
        if hess_vec is None:
            raise ValueError("give lipschitz or hess_vec")
        lipschitz = _power_lipschitz(hess_vec, x.shape, d)
    step = 1.0 / lipschitz
    z = x / np.where(d > 0, d, 1.0)
    z_prev = z.copy()
    v = z.copy()
    t = 1.0
    history: list[float] = []
    restarts = 0
    f = np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        fv, gv = fun_grad(d * v)
        gz = d * gv
        z_new = np.maximum(v - step * gz, 0.0)
        if restart and np.vdot(gz, z_new - z) > 0:  # momentum points uphill: restart
            restarts += 1
            t = 1.0
            v = z.copy()
            fv, gv = fun_grad(d * v)
            gz = d * gv
            z_new = np.maximum(v - step * gz, 0.0)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        v = z_new + ((t - 1.0) / t_new) * (z_new - z)
        z_prev, z = z, z_new
        t = t_new
        f = fv
        history.append(f)
        if stop is not None and stop(it, d * v, fv, gv):
            converged = True
            break
        if ftol > 0 and len(history) > 10 and history[-11] - history[-1] < ftol:
            converged = True
            break
    del z_prev
    x = d * z
    f_final, _ = fun_grad(x)
    return PGDResult(
        x=x,
        f=float(f_final),
        iterations=it,
        converged=converged,
        restarts=restarts,
        time_s=time.perf_counter() - t0,
        history=history,
    )
