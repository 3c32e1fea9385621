"""Projected randomized Kaczmarz for non-negative least squares, on row blocks in memory.

This module is the array-level core of the spectral cube fit: it takes blocks of rows (one
spaxel's selected pixels at a time, float32 or float64), their right-hand sides and optional
per-row weights, and updates a float64 weight vector in place. It never touches a file; the
HDF5 reading, row selection and checkpointing live in :mod:`nnfit.spectral.kaczmarz_fit`.

The update for row ``i`` (``a_i`` promoted to float64 on the fly, no copy of the block) is the
standard Kaczmarz projection, relaxed by ``lr`` and, when weights are used, by ``rho_i``::

    r_i = y_i - a_i . x
    x  <- x + lr * rho_i * r_i / ||a_i||^2 * a_i
    x  <- max(x, 0)                       (after *every* row when project_nonneg)

With ``rho_i = 1`` this is the textbook step, which is invariant to scaling a row, so noise
weights cannot act through it. With weights ``w_i = 1/sigma_i`` the runner passes
``rho_i = w_i^2 ||a_i||^2 / nu`` (``nu`` one global constant), which makes the expected step
under uniform row sampling proportional to the gradient of the chi^2 ``sum_i w_i^2 r_i^2``.

The optional ratio penalty acts on the component sums ``s_c = sum_p x[c, p]`` and pulls
``s_c - (w_c / w_a) s_a`` towards zero for a random batch of components ``c`` (anchor ``a``);
each step is a Kaczmarz projection onto that linear row with step ``eta`` and uses the sums of
the current ``x`` (recomputed before each step, never cached across steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np

from nnfit.validate import as_float_array, check_int, check_real

__all__ = [
    "RatioPenalty",
    "kaczmarz_nnls",
    "kaczmarz_rows",
]


@numba.njit(cache=True, nogil=True)
def _rows_kernel(  # pragma: no cover
    x: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    wgt: np.ndarray,
    rho: np.ndarray,
    lr: float,
    project: bool,
    norm_weighted: bool,
) -> float:
    n_rows, n = rows.shape
    sse = 0.0
    for i in range(n_rows):
        dot = 0.0
        nrm = 0.0
        for j in range(n):
            aj = np.float64(rows[i, j])
            dot += aj * x[j]
            nrm += aj * aj
        r = y[i] - dot
        wr = wgt[i] * r
        sse += wr * wr
        if nrm <= 0.0:
            continue
        if norm_weighted:
            relax = rho[i] * nrm
            if relax > 1.0:
                relax = 1.0
        else:
            relax = rho[i]
        step = lr * relax * r / nrm
        if step == 0.0:
            continue
        if project:
            for j in range(n):
                v = x[j] + step * np.float64(rows[i, j])
                x[j] = v if v > 0.0 else 0.0
        else:
            for j in range(n):
                x[j] += step * np.float64(rows[i, j])
    return sse


@numba.njit(cache=True, nogil=True)
def _residual_sse(  # pragma: no cover - compiled
    x: np.ndarray, rows: np.ndarray, y: np.ndarray, wgt: np.ndarray
) -> float:
    n_rows, n = rows.shape
    sse = 0.0
    for i in range(n_rows):
        dot = 0.0
        for j in range(n):
            dot += np.float64(rows[i, j]) * x[j]
        wr = wgt[i] * (y[i] - dot)
        sse += wr * wr
    return sse


def kaczmarz_rows(
    x: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    *,
    lr: float = 0.25,
    weights: np.ndarray | None = None,
    rho: np.ndarray | None = None,
    project_nonneg: bool = True,
    norm_weighted: bool = False,
) -> float:
    r"""Apply one projected Kaczmarz step per row, in order, updating ``x`` in place.

    Parameters
    ----------
    x : ndarray, float64, shape (n,)
        Current weights; updated in place (must be C-contiguous float64).
    rows : ndarray, float32 or float64, shape (K, n)
        The rows to visit, in visiting order. Promoted to float64 element by element.
    y : ndarray, shape (K,)
        Right-hand sides.
    lr : float
        Relaxation (step size), ``0 < lr < 2`` for a convergent projection.
    weights : ndarray, shape (K,), optional
        Residual weights ``w_i`` used only for the returned sum of squares (default 1).
    rho : ndarray, shape (K,), optional
        Per-row relaxation factors (default 1: the standard Kaczmarz step).
    project_nonneg : bool
        Clip ``x`` at zero after every row.
    norm_weighted : bool
        Use the relaxation ``min(rho_i * ||a_i||^2, 1)`` instead of ``rho_i``: with
        ``rho_i = w_i^2 / nu`` the expected step is the chi^2 gradient (noise weighting).

    Returns
    -------
    float
        ``sum_i (w_i r_i)^2`` of the a-priori residuals (before each row's own update).

    Notes
    -----
    The rows approach the non-negative least-squares problem

    .. math::

        \min_{x \ge 0} \; \sum_i w_i^2 (y_i - a_i^\top x)^2

    one row at a time. Row :math:`i` projects :math:`x` towards the hyperplane
    :math:`a_i^\top x = y_i`, relaxed by :math:`\text{lr} \, \rho_i`, and then onto the
    orthant:

    .. math::

        x \leftarrow \max\Bigl(x + \text{lr} \, \rho_i \,
        \frac{y_i - a_i^\top x}{\lVert a_i \rVert_2^2} \, a_i, \; 0\Bigr).

    With rows drawn at random this is the randomized Kaczmarz method [1]_ (which samples rows
    with probability proportional to :math:`\lVert a_i \rVert^2` and converges in
    expectation for consistent systems); the caller chooses the order. With a fixed step on
    noisy problems it stalls at a noise horizon rather than at the exact optimum.

    References
    ----------
    .. [1] T. Strohmer and R. Vershynin, "A randomized Kaczmarz algorithm with exponential
       convergence", J. Fourier Anal. Appl. 15, 262-278 (2009).
       https://doi.org/10.1007/s00041-008-9030-4

    Examples
    --------
    >>> A = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> x = np.zeros(2)
    >>> _ = kaczmarz_rows(x, A, np.array([3.0, 4.0]), lr=1.0)
    >>> x.tolist()
    [3.0, 2.0]
    """
    if x.dtype != np.float64 or not x.flags.c_contiguous or x.ndim != 1:
        raise ValueError("x must be a 1-D C-contiguous float64 array (it is updated in place)")
    rows = np.ascontiguousarray(rows)
    if rows.ndim != 2 or rows.shape[1] != x.shape[0]:
        raise ValueError(f"rows must have shape (K, {x.shape[0]}); got {rows.shape}")
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    k = rows.shape[0]
    y = np.ascontiguousarray(y, dtype=np.float64)
    if y.shape != (k,):
        raise ValueError(f"y must have shape ({k},); got {y.shape}")
    w = np.ones(k) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    r = np.ones(k) if rho is None else np.ascontiguousarray(rho, dtype=np.float64)
    return float(
        _rows_kernel(x, rows, y, w, r, float(lr), bool(project_nonneg), bool(norm_weighted))
    )


def warm_up() -> None:
    """Load (or compile) the kernels for float32 and float64 rows now, not on first use.

    Examples
    --------
    >>> warm_up()
    """
    x = np.zeros(1)
    for dt in (np.float32, np.float64):
        kaczmarz_rows(x, np.ones((1, 1), dtype=dt), np.zeros(1))
        residual_sse(x, np.ones((1, 1), dtype=dt), np.zeros(1))


def residual_sse(
    x: np.ndarray, rows: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Return ``sum_i (w_i (y_i - a_i . x))^2`` without changing ``x`` (float64 accumulation).

    Examples
    --------
    >>> residual_sse(np.ones(2), np.eye(2, dtype=np.float32), np.array([1.0, 3.0]))
    4.0
    """
    rows = np.ascontiguousarray(rows)
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    k = rows.shape[0]
    w = np.ones(k) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    return float(
        _residual_sse(
            np.ascontiguousarray(x, dtype=np.float64),
            rows,
            np.ascontiguousarray(y, dtype=np.float64),
            w,
        )
    )


@dataclass
class RatioPenalty:
    """Scale-invariant pull of the component sums towards the ratios of ``orbit_weights``.

    Parameters
    ----------
    orbit_weights : array, shape (C,)
        Non-negative target weights per component (not normalised; only ratios matter).
    n_populations : int
        ``P``; ``x`` is viewed as ``(C, P)``.
    eta : float
        Step of each ratio projection (the runner's default is ``0.1 * lr``).
    anchor : "auto" or int
        Anchor component ``a``; ``"auto"`` takes the largest weight.
    min_weight : float
        Components with ``w_c < min_weight * max(w)`` are left free.
    batch : int
        Components constrained per event.
    prob : float
        Probability per data row of a ratio event (the runner draws the number of events per
        block of rows from a binomial).

    Examples
    --------
    >>> pen = RatioPenalty(np.array([2.0, 1.0]), n_populations=1, eta=1.0, batch=1)
    >>> x = np.array([1.0, 1.0])
    >>> pen.step(x, np.array([1]), project_nonneg=True)
    >>> round(float(x[1] / x[0]), 12)
    0.5
    """

    orbit_weights: np.ndarray
    n_populations: int
    eta: float
    anchor: str | int = "auto"
    min_weight: float = 1e-3
    batch: int = 2
    prob: float = 0.02

    def __post_init__(self) -> None:
        w = as_float_array("orbit_weights", self.orbit_weights, ndim=(1,))
        if (w < 0).any() or not (w > 0).any():
            raise ValueError("orbit_weights must be non-negative with at least one positive value")
        self.orbit_weights = w
        self.eta = check_real("ratio_eta", self.eta, low=0, low_inclusive=False, high=2)
        self.prob = check_real("ratio_prob", self.prob, low=0, high=1)
        self.batch = check_int("ratio_batch", self.batch, low=1)
        self.min_weight = check_real("ratio_min_weight", self.min_weight, low=0, high=1)
        n_comp = w.shape[0]
        if self.anchor == "auto":
            self.anchor_index = int(np.argmax(w))
        else:
            self.anchor_index = check_int("ratio_anchor", self.anchor, low=0, high=n_comp - 1)
            if w[self.anchor_index] <= 0:
                raise ValueError(
                    f"ratio_anchor {self.anchor_index} has weight 0; pick a component with w > 0"
                )
        a = self.anchor_index
        keep = w >= self.min_weight * w.max()
        keep[a] = False
        self.candidates = np.flatnonzero(keep)
        self.targets = w / w[a]

    def draw(self, rng: np.random.Generator, n_rows: int) -> np.ndarray:
        """Components to constrain after ``n_rows`` data rows (possibly empty, may repeat)."""
        if self.candidates.size == 0 or self.prob == 0.0:
            return np.empty(0, dtype=np.intp)
        events = int(rng.binomial(n_rows, self.prob))
        if events == 0:
            return np.empty(0, dtype=np.intp)
        return rng.choice(self.candidates, size=events * self.batch, replace=True)

    def step(self, x: np.ndarray, comps: np.ndarray, *, project_nonneg: bool) -> None:
        """Project ``x`` (flat, (C*P,)) towards ``s_c = (w_c/w_a) s_a`` for each ``c`` in turn."""
        xcp = x.reshape(-1, self.n_populations)
        a = self.anchor_index
        n_pop = self.n_populations
        for c in comps:
            t = self.targets[c]
            # current sums, recomputed for every step (never stale)
            g = xcp[c].sum() - t * xcp[a].sum()
            if g == 0.0:
                continue
            scale = self.eta * g / (n_pop * (1.0 + t * t))
            xcp[c] -= scale
            xcp[a] += scale * t
            if project_nonneg:
                np.maximum(xcp[c], 0.0, out=xcp[c])
                np.maximum(xcp[a], 0.0, out=xcp[a])


def kaczmarz_nnls(
    A: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 10,
    lr: float = 1.0,
    block_rows: int | None = None,
    x0: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    project_nonneg: bool = True,
    seed: int = 0,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Randomized projected Kaczmarz on a dense matrix (reference driver for small problems).

    Each epoch visits every row once in a fresh random order (``block_rows`` rows per call of
    the compiled kernel). Used by the tests and the benchmark as the in-memory twin of the
    HyperCube fit; the cube fit itself is :class:`nnfit.spectral.kaczmarz_fit.PipelineRunner`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> A = rng.random((60, 4)); xt = np.array([1.0, 0.0, 2.0, 0.5])
    >>> x = kaczmarz_nnls(A, A @ xt, epochs=200)
    >>> bool(np.allclose(x, xt, atol=1e-6))
    True
    """
    A = as_float_array("A", A, ndim=(2,))
    y = as_float_array("y", y, ndim=(1,))
    m, n = A.shape
    if y.shape[0] != m:
        raise ValueError(f"y must have length {m} (rows of A); got {y.shape[0]}")
    check_int("epochs", epochs, low=0)
    check_real("lr", lr, low=0, low_inclusive=False, high=2, high_inclusive=False)
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64).reshape(n)
    block = m if block_rows is None else check_int("block_rows", block_rows, low=1)
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        order = rng.permutation(m)
        for b0 in range(0, m, block):
            idx = order[b0 : b0 + block]
            kaczmarz_rows(
                x,
                A[idx],
                y[idx],
                lr=lr,
                weights=None if weights is None else weights[idx],
                project_nonneg=project_nonneg,
            )
        if callback is not None:
            callback(ep, x)
    return x


def visit_blocks(
    x: np.ndarray,
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    lr: float,
    project_nonneg: bool = True,
    on_block: Callable[[int, float, int], None] | None = None,
) -> float:
    """Run :func:`kaczmarz_rows` over an iterable of ``(rows, y)`` blocks; return the total SSE.

    ``on_block(i, sse, n_rows)`` is called after each block (progress, tracking).

    Examples
    --------
    >>> x = np.zeros(1)
    >>> visit_blocks(x, [(np.ones((1, 1)), np.array([2.0]))], lr=1.0)
    4.0
    >>> x.tolist()
    [2.0]
    """
    total = 0.0
    for i, (rows, y) in enumerate(blocks):
        sse = kaczmarz_rows(x, rows, y, lr=lr, project_nonneg=project_nonneg)
        total += sse
        if on_block is not None:
            on_block(i, sse, rows.shape[0])
    return total
