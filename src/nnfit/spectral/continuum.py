"""pPXF-style continuum polynomials per spaxel, fitted with the one global weight array.

The model of spaxel ``s`` (``L`` observed pixels, ``x_l = -1 + 2 l / (L - 1)`` over *all*
pixels, masked ones included, as pPXF does)::

    model_s = mpoly_s * (A x)_s + sum_{j=0}^{degree} a_sj P_j(x_l)
    mpoly_s = 1 + sum_{k=1}^{mdegree} c_sk P_k(x_l)

with Legendre polynomials ``P_j``. As in pPXF, the multiplicative polynomial's constant term
is 1 (the weights carry the scale) and the additive coefficients are unconstrained.

* **Additive** terms are linear and free: for fixed ``x`` the best ``a_s`` is a least-squares
  projection, so they are eliminated exactly. With ``Q_s`` an orthonormal basis of
  ``W_s P`` the objective in ``x`` alone is ``sum_s ||(I - Q_s Q_s^T) W_s (A_s x - y_s)||^2``:
  the operator projects its weighted model and data (:meth:`CubeOperator.set_continuum`)
  and every method (Gram, working set, matrix-free) solves the projected problem.
* **Multiplicative** terms make the problem biconvex. :func:`fit_continuum` alternates two
  exact steps: the global NNLS in ``x`` for fixed ``mpoly`` (``mpoly`` multiplies the model's
  weights), and per spaxel the linear least squares in ``(c_s, a_s)`` for fixed ``x``. Each
  step minimises chi^2 exactly over its block, so chi^2 never increases; the loop stops when
  a round lowers chi^2 by less than ``continuum_tol`` relative, then ends with one more
  ``x`` step so that the returned ``x`` satisfies the KKT conditions for the returned
  ``mpoly`` (``stats["kkt_violation"]``); the continuum coefficients are then one exact step
  from optimal. Rounds are accelerated by a safeguarded extrapolation (see
  :func:`fit_continuum`). Biconvex alternation reaches a stationary point,
  not necessarily the global minimum (pPXF's nonlinear optimiser has the same property).

pPXF clips ``mpoly`` at 0.1; this model does not.

References
----------
Cappellari M., 2017, MNRAS, 466, 798, doi:10.1093/mnras/stw3020 (Sec. 3.3 and eq. 30).
Bro R., 1998, PhD thesis, University of Amsterdam (line search in alternating least squares).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.polynomial import legendre

__all__ = ["fit_continuum", "legendre_basis", "mpoly_step", "weighted_basis", "with_continuum"]

log = logging.getLogger(__name__)


def legendre_basis(n_pix: int, degree: int) -> np.ndarray:
    """Legendre polynomials ``P_0..P_degree`` on ``linspace(-1, 1, n_pix)``: (n_pix, degree+1).

    Examples
    --------
    >>> legendre_basis(3, 1).tolist()
    [[1.0, -1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    return legendre.legvander(np.linspace(-1.0, 1.0, int(n_pix)), int(degree))


def weighted_basis(w: np.ndarray, degree: int) -> np.ndarray:
    """Orthonormal basis (S, L, degree+1) of ``w[s, :, None] * legendre_basis(L, degree)``.

    Examples
    --------
    >>> q = weighted_basis(np.ones((2, 5)), 1)
    >>> q.shape, bool(np.allclose(q[0].T @ q[0], np.eye(2)))
    ((2, 5, 2), True)
    """
    w = np.asarray(w, dtype=np.float64)
    L = w.shape[1]
    B = w[:, :, None] * legendre_basis(L, degree)[None]
    q, _ = np.linalg.qr(B)
    return q


def project_out(q: np.ndarray | None, r: np.ndarray) -> np.ndarray:
    """``r - q (q^T r)`` per spaxel: remove the additive polynomials' span from ``r``.

    ``q`` (S, L, d+1) has orthonormal columns per spaxel; ``r`` is (S, L) or (m, S, L).
    """
    if q is None:
        return r
    if r.ndim == 2:
        return r - np.einsum("sld,sd->sl", q, np.einsum("sld,sl->sd", q, r))
    return r - np.einsum("msd,sld->msl", np.einsum("msl,sld->msd", r, q), q)


def with_continuum(
    u: np.ndarray, y: np.ndarray, w: np.ndarray, degree: int, mdegree: int
) -> np.ndarray:
    """``u`` (S, L) with each spaxel's continuum polynomials at their optimum for it:
    ``u (1 + mpoly) + apoly``, the model a fit with ``degree``/``mdegree`` compares with the
    data (:func:`mpoly_step`; ``u`` itself where there are none).

    Examples
    --------
    >>> L = 50; x = np.linspace(-1, 1, L); u = np.ones((1, L)) * (2 + np.sin(5 * x))
    >>> bool(np.allclose(with_continuum(u, u + 0.3, np.ones((1, L)), 0, 0), u + 0.3))
    True
    """
    if degree < 0 and mdegree <= 0:
        return u
    coef, apoly, _ = mpoly_step(u, y, w, degree, mdegree)
    return u * (1.0 + coef @ legendre_basis(u.shape[1], mdegree)[:, 1:].T) + apoly


def mpoly_step(
    u: np.ndarray, y: np.ndarray, w: np.ndarray, degree: int, mdegree: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact per-spaxel least squares for the continua, the template model ``u = A x`` fixed.

    Minimises ``||w_s ((1 + sum_k c_sk P_k) u_s + sum_j a_sj P_j - y_s)||^2`` over
    ``c_s`` (mdegree,) and ``a_s`` (degree+1,) for every spaxel.

    Returns
    -------
    coef : ndarray (S, mdegree)
        ``c_sk``; ``mpoly_s = 1 + legendre_basis(L, mdegree)[:, 1:] @ coef[s]``.
    apoly : ndarray (S, L)
    chi2 : float
        The minimum, summed over spaxels.

    Examples
    --------
    >>> L = 50; x = np.linspace(-1, 1, L); u = np.ones((1, L)) * (2 + np.sin(5 * x))
    >>> y = u * (1 + 0.1 * x) + 0.3
    >>> c, a, chi2 = mpoly_step(u, y, np.ones((1, L)), 0, 1)
    >>> bool(np.allclose(c, 0.1) and np.allclose(a, 0.3)), chi2 < 1e-20
    (True, True)
    """
    S, L = u.shape
    Pm = legendre_basis(L, max(mdegree, 0))[:, 1:]  # (L, mdegree)
    Pa = legendre_basis(L, degree) if degree >= 0 else np.zeros((L, 0))
    coefs = np.zeros((S, Pm.shape[1]))
    apoly = np.zeros((S, L))
    chi2 = 0.0
    for s in range(S):
        ws = w[s]
        D = np.concatenate([Pm * u[s][:, None], Pa], axis=1) * ws[:, None]
        t = ws * (y[s] - u[s])
        coef, *_ = np.linalg.lstsq(D, t, rcond=None)
        coefs[s] = coef[: Pm.shape[1]]
        apoly[s] = Pa @ coef[Pm.shape[1] :]
        r = t - D @ coef
        chi2 += float(r @ r)
    return coefs, apoly, chi2


def _mpoly(coef: np.ndarray, L: int) -> np.ndarray:
    return 1.0 + coef @ legendre_basis(L, coef.shape[1])[:, 1:].T


def _chi2(op: Any, x: np.ndarray, coef: np.ndarray, y: np.ndarray, w0: np.ndarray) -> float:
    """chi^2 at ``(x, mpoly(coef))`` with the additive terms at their optimum."""
    r = w0 * (_mpoly(coef, y.shape[1]) * op.unweighted_forward(x) - y)
    r = project_out(op._data.q, r)
    return float(np.einsum("ij,ij->", r, r))


def fit_continuum(
    op: Any,
    fit_once: Any,
    degree: int,
    mdegree: int,
    *,
    continuum_tol: float = 1e-7,
    max_rounds: int = 200,
) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
    """Alternate the exact ``x`` and continuum steps (see the module docstring).

    Parameters
    ----------
    op : CubeOperator
        With data; its continuum is set here.
    fit_once : callable
        ``fit_once(x0) -> (x, stats)``: the exact global fit for the operator's current
        continuum (``fit_cube`` on ``op``).
    degree, mdegree : int
    continuum_tol : float
        Stop when a round lowers chi^2 by less than this, relative.
    max_rounds : int

    Returns
    -------
    x : ndarray (C, P)
    stats : dict
        The last ``x`` step's stats plus ``continuum_rounds``, ``chi2_history`` (after every
        round, non-increasing), ``continuum_converged``, ``extrapolations`` (accepted).
    mpoly, apoly : ndarray (S, L)

    Notes
    -----
    Alternating exact steps converge linearly, slowly when the template mix and the
    polynomial's tilt trade off. After each round the pair is extrapolated along its last
    step, ``(x, c) + delta (step)`` with ``x`` clipped at 0, starting from ``delta = k^(1/3)``
    (the line search of alternating least squares, Bro 1998) and doubling ``delta`` while chi^2
    keeps falling (one forward pass per trial); the best extrapolated pair is kept only if its
    chi^2 is lower than the round's: chi^2 stays non-increasing. On NGC 4636 with
    ``mdegree=8`` and no additive polynomial this took the rounds from 67 to 39. The loop always ends
    with an exact ``x`` step.
    """
    S, L = op.data_shape
    w0 = np.ones((S, L)) if op._w0 is None else op._w0
    y = np.zeros((S, L))
    if op._wy0 is not None:
        np.divide(op._wy0, w0, out=y, where=w0 > 0)
    md = max(int(mdegree), 0)
    coef = np.zeros((S, md))
    op.set_continuum(degree, _mpoly(coef, L) if md else None)
    x, st = fit_once(None)
    history = [float(st["chi2"])]
    converged = md == 0
    rounds = accepted = 0
    while not converged and rounds < max_rounds:
        coef_new, _, _ = mpoly_step(op.unweighted_forward(x), y, w0, degree, md)
        op.set_continuum(degree, _mpoly(coef_new, L))
        x_new, st = fit_once(x)
        chi2 = float(st["chi2"])
        rounds += 1
        if rounds > 1:
            dx, dc = x_new - x, coef_new - coef
            delta = rounds ** (1.0 / 3.0)
            best = None
            for _ in range(8):  # grow the step while chi^2 keeps falling (forward passes only)
                x_e = np.clip(x_new + delta * dx, 0.0, None)
                c_e = coef_new + delta * dc
                chi2_e = _chi2(op, x_e, c_e, y, w0)
                if chi2_e >= (chi2 if best is None else best[2]):
                    break
                best = (x_e, c_e, chi2_e)
                delta *= 2.0
            if best is not None:
                x_new, coef_new, chi2 = best
                accepted += 1
        x, coef = x_new, coef_new
        history.append(chi2)
        log.info("continuum round %d: chi2 %.9g", rounds, chi2)
        if history[-2] - chi2 <= continuum_tol * max(chi2, np.finfo(float).tiny):
            converged = True
    mpoly = _mpoly(coef, L)
    op.set_continuum(degree, mpoly if md else None)
    if rounds:
        x, st = fit_once(x)
        history.append(float(st["chi2"]))
    apoly = np.zeros((S, L))
    if degree >= 0:
        u = op.unweighted_forward(x) * mpoly
        _, apoly, _ = mpoly_step(u, y, w0, degree, 0)
    st = dict(st)
    st.update(
        continuum_rounds=rounds,
        chi2_history=history,
        continuum_converged=bool(converged),
        extrapolations=accepted,
        degree=int(degree),
        mdegree=md,
    )
    return x, st, mpoly, apoly
