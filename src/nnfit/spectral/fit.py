"""``fit_cube``: the exact global non-negative fit of a spectral cube, with no HyperCube;
``fit_store``: the same fit on a store, which it reads once and writes ``/X_global`` to.

Minimises ``chi2(x) = ||W (A x - y)||^2 + regul^2 sum_c ||D x[c]||^2`` over ``x >= 0`` (and the
component-mass equalities when ``constraints`` is given), where ``A`` is the matrix-free
:class:`~nnfit.spectral.cube_operator.CubeOperator` and ``W = mask / sigma``.

Methods (``method=``):

``"gram"``
    Stream the exact normal equations ``A^T W^2 A`` (n x n, ``n = C*P``) and ``A^T W^2 y`` over
    spaxel blocks, then the active-set solver :func:`nnfit.solvers.nnls.nnls_gram`. Exact; costs
    ``S*L*n^2`` flops and ``8 n^2`` bytes.
``"active-set"``
    Working-set active set: matrix-free gradients over the whole cube decide which variables
    may enter, exact Gram columns are streamed only for the working set (support plus the worst
    KKT violators), and the subproblem is solved exactly by ``nnls_gram``; repeat until no
    variable outside the set violates the KKT conditions. Costs ``S*L*m^2`` for a working set
    of ``m`` columns (the support of an NNLS solution is a few hundred), memory ``8 m^2``.
``"matrix-free"``
    Preconditioned accelerated projected gradient (:func:`nnfit.solvers.pgd.pgd`); no ``n^2``
    anything, but thousands of iterations on SSP-like libraries; stops on a chi^2 plateau.
``"auto"`` (default)
    ``"gram"`` when ``S*L*n^2`` is small (under ~2e10 flops), or for regularised or
    constrained fits (dense solutions) when the Gram fits the memory budget; otherwise
    ``"active-set"``.

Exactness is measured, not assumed: ``stats`` reports the scaled KKT violation over all ``n``
variables (with the operator's float64 gradient at the returned ``x``, matrix-free), the
objective, chi^2, iterations and time per phase.

One module, though long (about 700 lines): the three methods share the objective, the KKT
check and the working-set candidate rule, and are chosen among by one function; splitting them
apart would export those private parts.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnfit.io.hdf5 import open_h5
from nnfit.solvers.nnls import nnls_gram
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit_record import WRITTEN, fit_settings, written_now
from nnfit.spectral.gram import cube_gram
from nnfit.spectral.regularization import grid_shape_from_meta, mass_constraints, regularizer
from nnfit.spectral.result import FitResult
from nnfit.spectral.store import load_problem, read_warm_start_from, solution_sha
from nnfit.validate import check_int, check_real

logger = logging.getLogger(__name__)

__all__ = ["MAX_BATCH", "METHODS", "fit_cube", "fit_store", "read_warm_start", "write_solution"]

METHODS = ("auto", "gram", "active-set", "matrix-free")

#: most candidates a working-set round takes by default (one per component up to this): at
#: C = 207, 52 / 104 / 207 a round took 31 / 19 / 21 rounds and 251 / 218 / 330 s
#: (docs/spectral/exact-fit.rst); at C = 22 one per component stays the default
MAX_BATCH = 100


# ----------------------------------------------------------------------------- HDF5 glue
def read_warm_start(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray | None:
    """``/X_global`` (else ``/Fit/x_best``) of a cube file reshaped to ``shape``, or ``None``.

    Vectors with a digest record (``/Fit/state/<name>_sha``, the Kaczmarz tracker's
    convention) are used only when the digest verifies, so a torn write is skipped
    (:func:`nnfit.spectral.store.read_warm_start_from`).
    """
    try:
        with open_h5(path, "r") as f:
            return read_warm_start_from(f, shape)
    except OSError:
        return None


def write_solution(path: str | os.PathLike, x: np.ndarray, attrs: dict | None = None) -> None:
    """Commit ``x`` (C*P,) float64 to ``/X_global`` through the store's single-writer lock.

    On a store the Kaczmarz tracker has initialised (``/Fit/state``), the vector is written in
    place, flushed, and only then its SHA-256 digest and fingerprint (``fit_cube:<method>``)
    are recorded, the tracker's crash-consistency convention: a kill in between leaves a digest
    that does not verify and the vector is skipped on resume. Otherwise it is written under a
    temporary name and moved into place, so a kill leaves the old or the new one.
    """
    flat = np.asarray(x, dtype=np.float64).ravel()
    attrs = attrs or {}
    with open_h5(path, "a") as f:
        st = f.get("Fit/state")
        if (
            st is not None
            and "X_global_sha" in st
            and "X_global" in f
            and f["X_global"].shape == flat.shape
        ):
            f["X_global"][...] = flat
            for k, v in attrs.items():
                f["X_global"].attrs[k] = v
            f.flush()
            if "X_global_pos" in st:
                st["X_global_pos"][...] = -1
            if "X_global_fp" in st:
                st["X_global_fp"][0] = f"fit_cube:{attrs.get('method', '')}".encode()
            st["X_global_sha"][0] = solution_sha(flat)
            f.flush()
            return
        # A new dataset is metadata written outside SWMR mode: a full disk half-way would
        # leave a store that cannot be read, so its space is taken first.
        f.reserve(2 * flat.nbytes + (1 << 20))
        tmp = "X_global__tmp"
        if tmp in f:
            del f[tmp]
        ds = f.create_dataset(tmp, data=flat)
        for k, v in attrs.items():
            ds.attrs[k] = v
        f.flush()
        if "X_global" in f:
            del f["X_global"]
        f.move(tmp, "X_global")
        f.flush()


# ----------------------------------------------------------------------------- helpers
def _as_operator(source: Any, scheduler: Any, block_size: int | None) -> CubeOperator:
    if isinstance(source, CubeOperator):
        if scheduler is not None:
            source.scheduler = scheduler
        return source
    return CubeOperator.from_problem(source, scheduler=scheduler, block_size=block_size)


class _Objective:
    """chi^2 + regularisation, its half-gradient, and KKT measures, matrix-free."""

    def __init__(self, op: CubeOperator, H: np.ndarray | None) -> None:
        self.op = op
        self.H = H  # (P, P) regul^2 D^T D, or None

    def half_grad(
        self, x: np.ndarray, gradient: Callable | None = None
    ) -> tuple[np.ndarray, float, float]:
        """(half-gradient (C, P), objective, chi2); ``gradient`` replaces ``op.gradient``."""
        g, chi2 = (self.op.gradient if gradient is None else gradient)(x)
        obj = chi2
        if self.H is not None:
            xh = x @ self.H
            g = g + xh
            obj += float(np.vdot(x, xh))
        return g, obj, chi2


def _kkt(x: np.ndarray, gh: np.ndarray, norms2: np.ndarray) -> float:
    """Max scaled KKT violation: |g_j| on x_j > 0 and max(-g_j, 0) on x_j = 0, per unit column."""
    s = gh / np.sqrt(np.where(norms2 > 0, norms2, 1.0))
    s = np.where(norms2 > 0, s, 0.0)
    free = x > 0
    v_free = float(np.abs(s[free]).max(initial=0.0))
    v_zero = float((-s[~free]).max(initial=0.0))
    return max(v_free, v_zero)


def _pick_candidates(viol: np.ndarray, score: np.ndarray, k: int, P: int) -> np.ndarray:
    """Up to ``k`` violators: the best few of every component first, then the best overall.

    Columns of one component are nearly collinear (same LOSVDs, similar templates), so the
    global top-``k`` tends to be ``k`` near-copies of one direction of which the exact
    subproblem keeps one; a per-component quota finds several independent directions per round.
    """
    order = viol[np.argsort(score[viol])[::-1]]
    if order.size <= k:
        return order
    comp = order // P
    quota = max(1, k // (2 * max(1, np.unique(comp).size)))
    rank_in_comp = np.zeros(order.size, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(comp):
        rank_in_comp[i] = seen.get(int(c), 0)
        seen[int(c)] = rank_in_comp[i] + 1
    first = order[rank_in_comp < quota]
    rest = order[rank_in_comp >= quota]
    return np.concatenate([first, rest[: max(0, k - first.size)]])[:k]


def _choose(op: CubeOperator, method: str, memory_bytes: float, regularised: bool) -> str:
    """``auto``: the full Gram when it is cheap, or when a regularised (dense) solution makes a
    working set pointless and the Gram fits in memory; the working set otherwise.

    Measured (bench/cube_fit.py, S=256, C=8, P=96, L=1000, SSP, S/N 50): Gram 89 s,
    working set 39 s for the same optimum; the unregularised support was 24 of 768 weights.
    """
    if method != "auto":
        return method
    S, L = op.data_shape
    n = int(np.prod(op.model_shape))
    flops = S * L * float(n) ** 2
    fits = 8.0 * n * n * 3 < memory_bytes
    if fits and (flops < 2e10 or regularised):
        return "gram"
    return "active-set"


# ----------------------------------------------------------------------------- fit
def fit_cube(
    source: Any,
    method: str = "auto",
    *,
    tol: float = 1e-6,
    regul: float = 0.0,
    regul_order: int = 2,
    constraints: Sequence[float] | None = None,
    x0: np.ndarray | str | None = "auto",
    scheduler: Any = None,
    block_size: int | None = None,
    max_iter: int | None = None,
    memory_gb: float = 4.0,
    cache_gb: float | None = None,
    batch: int | None = None,
    screen: bool | None = None,
    checkpoint: bool = True,
    callback: Callable[[np.ndarray, dict], None] | None = None,
    progress: Callable[[str, dict], None] | None = None,
    verbose: bool = False,
    degree: int = -1,
    mdegree: int = 0,
    continuum_tol: float = 1e-7,
) -> FitResult:
    r"""Fit one global non-negative weight array ``x (C, P)`` to every spaxel, exactly.

    Parameters
    ----------
    source : CubeOperator, CubeProblem or path
        The cube: an operator built with ``datacube=``, a loaded problem, or (kept for
        existing callers) the path of a store, which is handed to :func:`fit_store`.
    method : {"auto", "gram", "active-set", "matrix-free"}
        See the module docstring.
    tol : float
        KKT tolerance in units of ``sqrt(chi^2)``: at return no single weight can lower the
        objective by more than about ``tol^2`` (``stats["kkt_violation"] <= tol``; the column
        norms are exact for the Gram's / working set's columns and the cheap one-tap estimate
        of :meth:`CubeOperator.approx_column_norms2` for weights never in the working set, whose
        gradient sign is exact). The active-set methods reach it; it is far below statistical
        convergence (chi^2 excess < 1).
    regul : float
        pPXF-style regularisation strength (0: none), see :mod:`nnfit.spectral.regularization`.
    regul_order : {1, 2}
        Order of the finite differences over the population grid.
    constraints : sequence of C floats, optional
        Component mass weights ``w_c``: enforce ``sum_p x[c, p] = alpha * w_c``, ``alpha`` free.
    x0 : array (C, P), "auto" or None
        Warm start; ``"auto"``: a problem's ``warm_start`` (the store's verified
        ``/X_global``), none for an operator.
    scheduler : None, str or dask Client
        Where spaxel blocks run (:mod:`nnfit.parallel`).
    block_size : int, optional
        Spaxels per block.
    max_iter : int, optional
        Cap on working-set rounds (active-set) or iterations (matrix-free).
    memory_gb : float
        Memory budget of the fit in GiB: ``"auto"`` takes the full Gram only if it fits, and
        the column cache gets at most what is left of it once the first gradient pass has run
        (this process's peak resident memory so far counts against it, so the cache never
        takes a fit past the budget; at C = 207 in :doc:`/spectral/exact-fit` little is left).
    cache_gb : float, optional
        Memory cap for the working set's weighted design columns kept between rounds
        (``"active-set"`` on the local scheduler,
        :class:`~nnfit.spectral.column_cache.ColumnCache`; ``S * L * 8`` bytes per column, the
        support first), within ``memory_gb`` (default: all that the budget leaves). 0
        recomputes every column every round. The Gram entries are the same bits with or
        without the cache and on a cluster (:mod:`nnfit.spectral.column_cache`), so the cap
        bounds memory and time, never the result.
    batch : int, optional
        Candidates added to the working set per round (default ``max(16, min(C,
        MAX_BATCH))``: one per component, the components with the largest violations first,
        at most :data:`MAX_BATCH`). Each candidate costs a design column and a row of Gram
        entries, and more per round rarely save rounds, as the exact subproblem keeps few of
        many near-collinear columns (measured at C = 22 and C = 207 in
        :doc:`/spectral/exact-fit`).
    screen : bool, optional
        Choose each round's candidates from a float32 gradient (``"active-set"`` on the local
        scheduler): its adjoint product takes about half the time of the float64 one. Only a
        float64 gradient may stop the fit, so the result is certified as without it (the
        rounds may differ); the rounds are float64 from the first screened round that sees no
        violator or whose candidates all stay out of the support. Its float32 copies of the
        kernel and dictionary (:meth:`~nnfit.spectral.cube_operator.CubeOperator.screening_bytes`)
        count against ``memory_gb`` (the column cache gets that much less). Default: on with the
        local scheduler; ``True`` with a cluster is refused.
    checkpoint : bool
        For a path ``source`` only (see :func:`fit_store`): without ``callback``, commit
        ``/X_global`` to the store after each working-set round and at the end.
    callback : callable, optional
        ``callback(x, info)`` with the weights ``x`` (C*P values) after each working-set
        round and at the end (``info``: ``method`` and ``round`` or ``chi2``): how the
        solution leaves the solver.
    progress : callable, optional
        ``progress(phase, info)`` after each phase/round.
    verbose : bool
        One line per phase/round on stderr (when no ``progress`` is given).
    degree : int
        Additive Legendre polynomial degree per spaxel (pPXF's ``degree``; -1: none),
        eliminated exactly (:mod:`nnfit.spectral.continuum`).
    mdegree : int
        Multiplicative Legendre polynomial degree per spaxel (pPXF's ``mdegree``; 0: none),
        fitted by alternating exact steps.
    continuum_tol : float
        Stop the alternation when a round lowers chi^2 by less than this, relative.

    Returns
    -------
    FitResult
        ``x`` (C, P) and ``stats``; it unpacks as ``x, stats = fit_cube(...)``. ``stats``:
        ``method``, ``objective``, ``chi2``, ``chi2_zero`` (zero model), ``kkt_violation``,
        ``kkt_tol``, ``converged``, ``iterations``, ``rounds``, ``working_set``, ``nnz``,
        ``equality_residual``, ``time_s``, ``phases`` (seconds per phase), ``dof`` and
        ``chi2_dof`` (chi^2 per degree of freedom: fitted pixels minus non-zero weights and
        polynomial coefficients). With ``degree``/``mdegree`` also ``mpoly`` and ``apoly``
        (S, L), ``continuum_rounds``, ``chi2_history`` and ``continuum_converged``. With
        ``"active-set"`` also ``candidates``, ``columns_built``, ``column_cache`` (its
        ``capacity`` and the ``slots`` written, in columns; None without a cache),
        ``working_set_max`` (the largest working set a round extended) and
        ``memory_gb_to_cache_working_set``: the ``memory_gb`` at which the cache would have
        held that working set's columns instead of rebuilding some every round (this run's
        peak memory plus the missing columns and a round's design steps, over the 95 % the
        cache may fill, rounded up to half a GiB; with ``method="active-set"``, as ``"auto"``
        may take the full Gram with more memory), None where it held them, where
        ``cache_gb``, a cluster or no cache decided instead of the budget, or where the
        process's peak memory cannot be read.

    Notes
    -----
    With ``A_s`` the model of spaxel ``s`` (templates ``T_p`` convolved with the spaxel's
    LOSVD of component ``c`` and rebinned to the observed pixels), ``W_s`` its inverse-noise
    weights on the fitted pixels and ``D`` the finite differences over the population grid,
    the problem is

    .. math::

        \min_{x \ge 0} \; \sum_s \lVert W_s (y_s - A_s x) \rVert_2^2
        + \mathrm{regul}^2 \lVert D x \rVert_2^2
        \quad \text{s.t.} \quad \textstyle\sum_p x_{cp} = \alpha w_c

    (the constraint only with ``constraints``). ``"gram"`` and ``"active-set"`` solve it with
    a Lawson-Hanson active-set NNLS [1]_ on the normal equations, the latter on a working set
    of columns grown by the gradient's largest violators; every round is checked against the
    KKT conditions over all ``C P`` weights, computed matrix-free. The model, its
    regularisation and its polynomials follow pPXF [2]_ [3]_.

    References
    ----------
    .. [1] C. L. Lawson, R. J. Hanson, *Solving Least Squares Problems*, SIAM (1995),
       chapter 23. https://doi.org/10.1137/1.9781611971217
    .. [2] M. Cappellari, E. Emsellem, "Parametric recovery of line-of-sight velocity
       distributions from absorption-line spectra of galaxies via penalized likelihood",
       PASP 116, 138-147 (2004). https://doi.org/10.1086/381875
    .. [3] M. Cappellari, "Improving the full spectrum fitting method: accurate convolution
       with Gauss-Hermite functions", MNRAS 466, 798-811 (2017). https://doi.org/10.1093/mnras/stw3020

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(120)
    >>> rng = np.random.default_rng(0)
    >>> args = (rng.random((4, 120)), rng.random((6, 5, 2)), np.linspace(-200, 200, 5),
    ...         tem, tem[30:90:2])
    >>> y = CubeOperator(*args).forward(rng.random((2, 4)))
    >>> x, stats = fit_cube(CubeOperator(*args, datacube=y), method="gram")
    >>> stats["converged"], stats["chi2"] < 1e-20 * stats["chi2_zero"]
    (True, True)
    """
    for name, gib in (("memory_gb", memory_gb), ("cache_gb", cache_gb)):
        if gib is None and name == "cache_gb":
            continue
        if not isinstance(gib, numbers.Real) or not 0 <= gib < np.inf:
            raise ValueError(f"{name} must be a finite number of GiB >= 0; got {gib!r}")
    if screen not in (None, True, False):
        raise ValueError(f"screen must be True, False or None (the default); got {screen!r}")
    # checked before anything is loaded or written (a NaN tol failed deep in the solver; a
    # negative one ran to the iteration cap and still replaced /X_global)
    check_real("tol (--tol)", tol, low=0.0, low_inclusive=False)
    check_int("degree (--degree, -1: none)", degree, low=-1)
    check_int("mdegree (--mdegree, 0: none)", mdegree, low=0)
    # the solver's options: passed on unchanged to fit_store (a path) and to the inner fits
    solver = dict(
        tol=tol,
        regul=regul,
        regul_order=regul_order,
        constraints=constraints,
        max_iter=max_iter,
        memory_gb=memory_gb,
        cache_gb=cache_gb,
        batch=batch,
        screen=screen,
        progress=progress,
        verbose=verbose,
    )
    if isinstance(source, (str, os.PathLike)):
        return fit_store(
            source,
            method,
            x0=x0,
            checkpoint=checkpoint,
            callback=callback,
            scheduler=scheduler,
            block_size=block_size,
            degree=degree,
            mdegree=mdegree,
            continuum_tol=continuum_tol,
            **solver,
        )
    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if isinstance(x0, str):
        if x0 != "auto":
            raise ValueError(f"x0 must be an array, 'auto' or None; got {x0!r}")
        x0 = getattr(source, "warm_start", None)
    t = time.perf_counter()
    op = _as_operator(source, scheduler, block_size)
    phases["setup"] = time.perf_counter() - t
    if screen and op.scheduler is not None:
        raise ValueError(
            "screen=True works on the local scheduler only (scheduler=None); with a cluster "
            "leave screen=None (the default) or pass screen=False"
        )
    commit = callback
    if op._wy0 is not None and not getattr(op, "_checked", False):
        from nnfit.spectral.checks import check_flux_scaling, check_velocity_frame
        from nnfit.spectral.model import mean_flux

        S, L = op.data_shape
        w0 = op._w0
        y = np.zeros((S, L))
        if w0 is None:
            y = op._wy0
        else:
            np.divide(op._wy0, w0, out=y, where=w0 > 0)
        fitted = None if w0 is None else (w0 > 0).any(axis=0)
        check_flux_scaling(op.kernel_amplitude, mean_flux(y, fitted))
        check_velocity_frame(op)
        op._checked = True
    if degree >= 0 or mdegree > 0:
        from nnfit.spectral.continuum import fit_continuum

        inner = dict(solver, checkpoint=False, callback=None)

        def fit_once(x_init):
            start = x0 if x_init is None else x_init
            return fit_cube(op, method, x0=start, **inner)

        op._in_continuum = True  # the inner fits are steps: check chi^2/dof once, at the end
        try:
            x, stats, mpoly, apoly = fit_continuum(
                op, fit_once, int(degree), int(mdegree), continuum_tol=continuum_tol
            )
        finally:
            op._in_continuum = False
        stats.update(_dof_stats(op, x, stats["chi2"], degree, mdegree), mpoly=mpoly, apoly=apoly)
        if commit is not None:
            commit(x, {"method": stats["method"], "chi2": stats["chi2"]})
        stats["time_s"] = time.perf_counter() - t_start
        return FitResult(x, stats)
    C, P = op.model_shape
    n = C * P
    H = None
    if regul:
        shape = grid_shape_from_meta(getattr(op, "template_meta", None), P)
        H = regularizer(C, shape, regul, regul_order)
    E = None
    if constraints is not None:
        w = np.asarray(constraints, dtype=np.float64).ravel()
        if w.size != C:
            raise ValueError(f"constraints must give {C} component weights; got {w.size}")
        E = mass_constraints(w, P)
    if x0 is not None:
        x0 = np.clip(np.asarray(x0, dtype=np.float64).reshape(C, P), 0.0, None)
    chosen = _choose(op, method, memory_gb * 2**30, bool(regul) or constraints is not None)
    obj = _Objective(op, H)
    norms2 = op.approx_column_norms2()
    if H is not None:
        norms2 = norms2 + np.diag(H)[None, :]

    def report(phase: str, **info: Any) -> None:
        if progress is not None:
            progress(phase, info)
        elif verbose:
            logger.info(
                "[fit_cube %8.1f s] %s", time.perf_counter() - t_start, _describe(phase, info)
            )

    stats: dict[str, Any] = {"method": chosen, "kkt_tol": tol, "n": n}
    if chosen == "gram":
        x, st = _fit_gram(op, H, E, x0, tol, phases, report)
    elif chosen == "active-set":
        x, st = _fit_working_set(
            op,
            obj,
            H,
            E,
            x0,
            tol,
            norms2,
            phases,
            report,
            max_iter=max_iter,
            batch=batch,
            commit=commit,
            cache_bytes=(memory_gb if cache_gb is None else min(cache_gb, memory_gb)) * 2**30,
            budget=memory_gb * 2**30,
            screen=screen,
        )
    else:
        x, st = _fit_pgd(op, obj, x0, norms2, phases, report, max_iter)
    stats.update(st)

    # Verify at the returned x, matrix-free over all n variables: the operator's float64
    # gradient there, unless the working set's last pass computed exactly that
    t = time.perf_counter()
    last = stats.pop("_last_pass", None)
    if last is not None and np.array_equal(last[0], x.ravel()):
        gh, objective, chi2 = last[1:]
    else:
        gh, objective, chi2 = obj.half_grad(x)
    if E is not None and stats.get("multipliers") is not None:
        gh = gh + (E.T @ stats["multipliers"]).reshape(C, P)
    exact_n2 = stats.pop("_exact_norms2", None)
    nn2 = norms2.ravel().copy()
    if exact_n2 is not None:
        idx, vals = exact_n2
        nn2[idx] = vals
    stats["kkt_violation"] = _kkt(x.ravel(), gh.ravel(), nn2)
    phases["verify"] = time.perf_counter() - t
    stats.pop("multipliers", None)
    stats.update(
        objective=float(objective),
        chi2=float(chi2),
        chi2_zero=op.data_norm2(),
        nnz=int(np.count_nonzero(x)),
        converged=bool(stats["kkt_violation"] <= tol and stats.get("solver_converged", True)),
        equality_residual=(
            0.0
            if E is None
            else float(np.abs(E @ x.ravel()).max() / max(np.abs(x).max(), np.finfo(float).tiny))
        ),
    )
    if commit is not None:
        t = time.perf_counter()
        commit(x, {"method": chosen, "chi2": float(chi2)})
        phases["write"] = time.perf_counter() - t
    stats["phases"] = phases
    stats.update(_dof_stats(op, x, stats["chi2"], -1, 0))
    stats["time_s"] = time.perf_counter() - t_start
    report("done", **{k: v for k, v in stats.items() if k != "phases"})
    return FitResult(x, stats)


def _describe(phase: str, info: dict[str, Any]) -> str:
    """One log line for a phase of :func:`fit_cube`, e.g. ``gram 3.7 ms``.

    Examples
    --------
    >>> _describe("gram", {"time_s": 0.00366724})
    'gram 3.7 ms'
    >>> _describe("round", {"round": 3, "chi2": 19674.378, "working_set": 192, "violators": 5})
    'round 3: chi2 19674.4, working set 192, 5 violators'
    >>> _describe("done", {"chi2": 19674.378, "kkt_violation": 8.8e-11, "time_s": 1.18})
    'done: chi2 19674.4, KKT violation 8.80e-11, 1.18 s'
    """
    parts = []
    if "chi2" in info:
        parts.append(f"chi2 {info['chi2']:.6g}")
    if "kkt_violation" in info:
        parts.append(f"KKT violation {info['kkt_violation']:.2e}")
    if "working_set" in info:
        parts.append(f"working set {info['working_set']}")
    if "violators" in info:
        n = info["violators"]
        parts.append(f"{n} violator{'' if n == 1 else 's'}")
    head = f"round {info['round']}" if phase == "round" and "round" in info else phase
    if "time_s" in info:
        t = float(info["time_s"])
        took = f"{t * 1e3:.2g} ms" if t < 0.1 else f"{t:.2f} s"
        if not parts:
            return f"{head} {took}"
        parts.append(took)
    return f"{head}: {', '.join(parts)}" if parts else head


def fit_store(
    path: str | os.PathLike,
    method: str = "auto",
    *,
    x0: np.ndarray | str | None = "auto",
    checkpoint: bool = True,
    callback: Callable[[np.ndarray, dict], None] | None = None,
    scheduler: Any = None,
    block_size: int | None = None,
    **kwargs: Any,
) -> FitResult:
    """:func:`fit_cube` on a cube store: load it once, warm-start from it, commit to it.

    The store is read once (:func:`~nnfit.spectral.store.load_problem`: data, templates,
    LOSVDs, population grid and the stored solution); the fit itself is :func:`fit_cube` on
    the operator built from that problem, and the solution leaves it through ``callback``,
    by default :func:`write_solution` of ``/X_global`` after each working-set round and at
    the end.

    Parameters
    ----------
    path : path-like
        A populated store (:class:`nnfit.spectral.store.StoreWriter`, ``nnfit spectral
        init``).
    method : {"auto", "gram", "active-set", "matrix-free"}
        As in :func:`fit_cube`.
    x0 : array (C, P), "auto" or None
        Warm start; ``"auto"`` takes the store's verified ``/X_global`` (else
        ``/Fit/x_best``) when there is one.
    checkpoint : bool
        Without ``callback``: commit ``/X_global`` to the store after each round and at the
        end. ``False``: the store is only read.
    callback : callable, optional
        ``callback(x, info)`` instead of the commit to ``/X_global``.
    scheduler, block_size
        As in :func:`fit_cube`; cluster workers re-read their own spaxel blocks of ``path``.
    **kwargs
        Every other keyword of :func:`fit_cube` (``tol``, ``regul``, ``constraints``,
        ``degree``, ``mdegree``, ``max_iter``, ``progress``...).

    Returns
    -------
    FitResult
        As :func:`fit_cube`'s; ``stats["phases"]["load"]`` is the time reading the store and
        ``time_s`` includes it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.spectral.simulate import simulate_cube
    >>> p = simulate_cube(6, 2, 3, seed=1).to_h5(pathlib.Path(tempfile.mkdtemp()) / "c.h5")
    >>> res = fit_store(p, method="gram", x0=None)
    >>> res.converged, read_warm_start(p, res.x.shape) is not None
    (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    t = time.perf_counter()
    problem = load_problem(path)
    op = CubeOperator.from_h5(path, problem=problem, scheduler=scheduler, block_size=block_size)
    if isinstance(x0, str):
        if x0 != "auto":
            raise ValueError(f"x0 must be an array, 'auto' or None; got {x0!r}")
        x0 = problem.warm_start
    # the operator holds what the fit needs; the problem's LOSVDs (S * V * C float64, 0.95 GB
    # at C = 207) would otherwise stay resident through the fit and shrink the column cache
    del problem
    if callback is None and checkpoint:
        settings = fit_settings(
            "global",
            kwargs.get("degree", -1),
            kwargs.get("mdegree", 0),
            kwargs.get("regul", 0.0),
            kwargs.get("regul_order", 2),
        )

        def callback(x: np.ndarray, info: dict) -> None:
            write_solution(path, x, {**info, **settings, WRITTEN: written_now()})

    load_s = time.perf_counter() - t
    result = fit_cube(op, method, x0=x0, callback=callback, **kwargs)
    result.stats.setdefault("phases", {})["load"] = load_s
    result.stats["time_s"] += load_s
    return result


def _dof_stats(op: CubeOperator, x: np.ndarray, chi2: float, degree: int, mdegree: int) -> dict:
    """``dof`` and ``chi2_dof``; checks chi^2/dof when the noise was given (see ``checks``)."""
    from nnfit.spectral.checks import check_chi2_dof

    S, _ = op.data_shape
    w0 = op._w0
    n_fit = int(np.count_nonzero(w0)) if w0 is not None else int(np.prod(op.data_shape))
    dof = n_fit - int(np.count_nonzero(x)) - S * (max(degree, -1) + 1) - S * max(mdegree, 0)
    chi2_dof = float(chi2) / dof if dof > 0 else float("nan")
    if getattr(op, "has_noise", False) and not getattr(op, "_in_continuum", False):
        check_chi2_dof(chi2_dof)
    return {"dof": dof, "chi2_dof": chi2_dof}


def _fit_gram(op, H, E, x0, tol, phases, report):
    C, P = op.model_shape
    t = time.perf_counter()
    G, b = cube_gram(op)
    phases["gram"] = time.perf_counter() - t
    report("gram", time_s=phases["gram"])
    if H is not None:
        for c in range(C):
            G[c * P : (c + 1) * P, c * P : (c + 1) * P] += H
    t = time.perf_counter()
    res = nnls_gram(
        G, b, x0=None if x0 is None else x0.ravel(), atol=tol * 1e-2, equality=E, eq_tol=1e-12
    )
    phases["solve"] = time.perf_counter() - t
    report("solve", time_s=phases["solve"], iterations=res.iterations)
    return res.x.reshape(C, P), {
        "iterations": res.iterations,
        "rounds": 1,
        "working_set": C * P,
        "solver_converged": res.converged,
        "multipliers": res.multipliers,
        "_exact_norms2": (np.arange(C * P), np.diag(G).copy()),
    }


def _peak_rss_bytes() -> float:
    """This process's peak resident memory so far, in bytes (0 where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) * (1.0 if sys.platform == "darwin" else 1024.0)  # macOS: bytes


def _fit_working_set(
    op,
    obj,
    H,
    E,
    x0,
    tol,
    norms2,
    phases,
    report,
    *,
    max_iter,
    batch,
    commit,
    cache_bytes,
    budget,
    screen,
):
    from nnfit.spectral.column_cache import STEP, ColumnCache, gram_extend

    C, P = op.model_shape
    n = C * P
    x = np.zeros(n) if x0 is None else x0.ravel().copy()
    pending = np.flatnonzero(x > 0)  # warm-start support: enters the set in the first round
    J = np.zeros(0, dtype=np.int64)
    G = np.zeros((0, 0))
    b = np.zeros(0)
    mu = None
    rounds = 0
    solves = 0
    tried = entered = built = 0  # candidate columns brought in / kept; design columns built
    widest = steps_max = 0  # the largest working set before its round's candidates; the
    # largest round's design-step buffers (one (columns, STEP, L) array per thread)
    sizes = ColumnCache(op, 0)  # holds nothing: the size of a column and its pixels L
    max_rounds = 100 if max_iter is None else int(max_iter)
    phases.setdefault("gradient", 0.0)
    phases.setdefault("gram", 0.0)
    phases.setdefault("solve", 0.0)
    nn2 = norms2.ravel()
    last_kkt = np.inf
    converged = False
    cache = None
    # sized after the first gradient pass, whose peak the cache must not add to past budget
    sized = op.scheduler is not None or cache_bytes <= 0
    inJ = np.zeros(n, bool)
    last = None  # (x, half-gradient, objective, chi2) of the last float64 operator pass
    screened = 0  # rounds whose candidates came from a float32 gradient
    if screen is None:
        screen = op.scheduler is None
    ends_screening = bool(screen)  # float64 passes come at the end only

    def scores(screen: bool) -> tuple[np.ndarray, float, float]:
        nonlocal last
        t = time.perf_counter()
        # the support's columns in memory give its model without a forward pass; after the
        # screened rounds a float64 pass is likely the last, so it is the operator's own,
        # which the final check then reuses
        final = ends_screening and not screen
        grad = None
        if cache is not None and not final:
            grad = functools.partial(cache.gradient, screen=screen)
        elif screen:
            grad = functools.partial(op.gradient, screen=True)
        gh, objective, chi2 = obj.half_grad(x.reshape(C, P), grad)
        if final:
            last = (x.copy(), gh, objective, chi2)
        gh = gh.ravel()
        if mu is not None and E is not None:
            gh = gh + E.T @ mu
        phases["gradient"] += time.perf_counter() - t
        score = -gh / np.sqrt(np.where(nn2 > 0, nn2, 1.0))
        score[nn2 <= 0] = 0.0
        score[inJ] = -np.inf
        return score, objective, chi2

    while rounds < max_rounds:
        inJ[:] = False
        inJ[J] = True
        score, objective, chi2 = scores(screen)
        viol = np.flatnonzero(score > tol)
        if screen and viol.size == 0 and pending.size == 0:
            # float32 scores choose candidates; only float64 ones may stop the fit. The fit
            # is then near its end, where each screen would need a float64 pass after it:
            # the rounds left are float64 alone.
            screen = False
            score, objective, chi2 = scores(False)
            viol = np.flatnonzero(score > tol)
        screened += int(screen)
        last_kkt = float(score.max(initial=0.0)) if (~inJ).any() else 0.0
        report(
            "round",
            round=rounds,
            chi2=chi2,
            objective=objective,
            working_set=J.size,
            violators=viol.size,
        )
        if viol.size == 0 and pending.size == 0:
            converged = True
            break
        k = batch if batch is not None else max(16, min(C, MAX_BATCH))
        new = _pick_candidates(viol, score, k, P)
        if pending.size:
            new = np.concatenate([pending, np.setdiff1d(new, pending)])
            pending = pending[:0]
        # extend the Gram block with the new columns (only S*L*m*m_new work)
        t = time.perf_counter()
        if not sized:
            sized = True
            room = min(cache_bytes, budget - _peak_rss_bytes())
            if room > 0:
                cache = ColumnCache(op, room)
        cols = np.concatenate([J, new])
        steps = op.threads * cols.size * STEP * sizes.L * 8
        widest, steps_max = max(widest, J.size), max(steps_max, steps)
        if cache is not None:
            # fresh slots only while the peak so far, this round's design steps and the new
            # slots stay within 95 % of the budget; slots already written are reused without
            # new memory
            spare = 0.95 * budget - _peak_rss_bytes() - steps
            cache.grow_limit = cache.touched + max(0, int(spare // cache.col_bytes))
        Gc, bn = gram_extend(op, J, new, cache)
        built = built + cols.size if cache is None else cache.computed
        m, m0 = cols.size, J.size
        G2 = np.empty((m, m))
        G2[:m0, :m0] = G
        G2[:, m0:] = Gc
        G2[m0:, :m0] = Gc[:m0].T
        b2 = np.concatenate([b, bn])
        G, b, J = G2, b2, cols
        phases["gram"] += time.perf_counter() - t
        t = time.perf_counter()
        GJ = G
        if H is not None:
            GJ = G.copy()
            cJ, pJ = np.divmod(J, P)
            same = cJ[:, None] == cJ[None, :]
            GJ += np.where(same, H[pJ[:, None], pJ[None, :]], 0.0)
        res = nnls_gram(
            GJ,
            b,
            x0=x[J],
            atol=tol * 1e-2,
            equality=None if E is None else E[:, J],
            eq_tol=1e-12,
        )
        solves += res.iterations
        tried += new.size
        kept = int(np.count_nonzero(res.x[m0:]))
        entered += kept
        if screen and kept == 0:
            # float32 scores can call a column a violator that float64 ones do not; were it
            # to come back round after round the fit would cycle, so such a round ends
            # the screening
            screen = False
        mu = res.multipliers
        x = np.zeros(n)
        x[J] = res.x
        # keep the working set to the support: zeros re-enter if their gradient asks again
        keep = res.x > 0
        if E is None and not keep.all():
            J, G, b = J[keep], G[np.ix_(keep, keep)], b[keep]
        phases["solve"] += time.perf_counter() - t
        rounds += 1
        if commit is not None:
            commit(x, {"method": "active-set", "round": rounds})
    held = 0 if cache is None else cache.touched
    peak = _peak_rss_bytes()  # 0 where it cannot be read: then no estimate is made
    keep_gb = None
    if op.scheduler is None and cache_bytes >= budget and held < widest and peak > 0:
        # the cache was the budget's to size and held less than the widest working set
        keep = (peak + (widest - held) * sizes.col_bytes + steps_max) / 0.95
        keep_gb = math.ceil(keep / 2**29) / 2  # GiB, rounded up to a half
        logger.info(
            "the column cache held %d of the working set's %d design columns (the rest were "
            "rebuilt every round); memory_gb=%g would hold them all",
            held,
            widest,
            keep_gb,
        )
    exact_idx = J
    exact_vals = np.diag(G).copy() if J.size else np.zeros(0)
    if H is not None and J.size:
        exact_vals = exact_vals + np.diag(H)[J % P]
    return x.reshape(C, P), {
        "iterations": solves,
        "rounds": rounds,
        "candidates": tried,
        "candidates_kept": entered,
        "columns_built": built,
        "working_set": int(J.size),
        "working_set_max": widest,
        "memory_gb_to_cache_working_set": keep_gb,
        "screened_rounds": screened,
        "solver_converged": converged,
        "multipliers": mu,
        "kkt_outside_working_set": last_kkt,
        "column_cache": None
        if cache is None
        else {
            "capacity": cache.capacity,
            "slots": cache.touched,
            "computed": cache.computed,
            "bytes": cache.nbytes,
        },
        "_exact_norms2": (exact_idx, exact_vals),
        "_last_pass": last,
    }


def _fit_pgd(op, obj, x0, norms2, phases, report, max_iter):
    from nnfit.solvers.pgd import pgd

    C, P = op.model_shape
    scale = 1.0 / np.sqrt(np.where(norms2 > 0, norms2, np.inf))

    def fun_grad(x):
        g, f, _ = obj.half_grad(x)
        return f, 2.0 * g

    g0, _ = op.gradient(np.zeros((C, P)))

    def hess_vec(v):
        g1, _ = op.gradient(v)
        h = 2.0 * (g1 - g0)
        if obj.H is not None:
            h += 2.0 * v @ obj.H
        return h

    t = time.perf_counter()
    res = pgd(
        fun_grad,
        np.zeros((C, P)) if x0 is None else x0,
        hess_vec=hess_vec,
        scale=scale,
        max_iter=5000 if max_iter is None else int(max_iter),
        ftol=1e-3,
    )
    phases["solve"] = time.perf_counter() - t
    return res.x, {
        "iterations": res.iterations,
        "rounds": res.iterations,
        "working_set": C * P,
        "solver_converged": res.converged,
        "multipliers": None,
    }
