"""pPXF's rule for the regularisation strength: the largest ``regul`` the data allow.

With the noise rescaled so that the unregularised fit has ``chi^2 = N`` (``N`` fitted pixels),
``regul`` is raised until ``chi^2`` has grown by ``sqrt(2 N)``, the standard deviation of a
``chi^2`` with ``N`` degrees of freedom (Cappellari 2017; pPXF's documentation of ``regul``).
Without rescaling, the target is ``chi2_0 * (1 + sqrt(2 N) / N)``, which is the same rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

__all__ = ["regul_for_chi2_rise"]

log = logging.getLogger(__name__)


def regul_for_chi2_rise(
    chi2_of: Callable[[float], float],
    chi2_0: float,
    n_good: int,
    *,
    start: float = 10.0,
    rtol: float = 0.05,
    bounds: tuple[float, float] = (1e-3, 1e6),
    max_fits: int = 40,
) -> tuple[float, float]:
    r"""The ``regul`` at which ``chi^2`` exceeds the unregularised one by ``sqrt(2 N)`` sigma.

    Parameters
    ----------
    chi2_of : callable
        ``chi2_of(regul)``: the data ``chi^2`` (without the penalty) of the fit at ``regul``;
        non-decreasing in ``regul``, as for any quadratic penalty.
    chi2_0 : float
        ``chi^2`` of the unregularised fit.
    n_good : int
        Fitted pixels ``N``.
    start : float
        First ``regul`` tried.
    rtol : float
        Stop when ``chi^2`` is within ``rtol`` of the target rise (relative to the rise).
    bounds : (float, float)
        ``regul`` is searched in this range; at a bound the bound is returned.
    max_fits : int
        Cap on calls of ``chi2_of``.

    Returns
    -------
    regul, chi2 : float
        The strength found and the ``chi^2`` of its fit.

    Notes
    -----
    The unregularised fit defines the noise scale ``s^2 = chi^2_0 / N``; in rescaled units the
    target is ``chi^2 = N + sqrt(2 N)``, so in the data's units
    ``chi^2(regul) = chi^2_0 (1 + sqrt(2 N) / N)``. The search brackets the target by factors
    of 4 and bisects in ``log regul``. The ``regul`` returned is in the data's noise units (the
    rescaled-noise strength of pPXF's recipe is ``regul * s``).

    References
    ----------
    .. [1] M. Cappellari, "Improving the full spectrum fitting method: accurate convolution
       with Gauss-Hermite functions", MNRAS 466, 798-811 (2017), section 3.5.
       https://doi.org/10.1093/mnras/stw3020

    Examples
    --------
    >>> r, c = regul_for_chi2_rise(lambda r: 100.0 + r**2, 100.0, 100)
    >>> abs(c - (100.0 + 200**0.5)) < 0.05 * 200**0.5  # the rise sqrt(2 N), within 5 %
    True
    """
    if n_good < 1 or not chi2_0 > 0:
        raise ValueError(f"need n_good >= 1 and chi2_0 > 0; got {n_good}, {chi2_0}")
    rise = chi2_0 * math.sqrt(2.0 * n_good) / n_good
    target = chi2_0 + rise
    lo_b, hi_b = bounds
    fits = 0

    def chi2(r: float) -> float:
        nonlocal fits
        fits += 1
        return float(chi2_of(r))

    r = min(max(start, lo_b), hi_b)
    c = chi2(r)
    lo, hi = (None, (r, c)) if c > target else ((r, c), None)
    while lo is None or hi is None:  # bracket by factors of 4
        if fits >= max_fits:
            break
        if hi is None:
            if lo[0] >= hi_b:
                return lo
            r = min(lo[0] * 4.0, hi_b)
        else:
            if hi[0] <= lo_b:
                return hi
            r = max(hi[0] / 4.0, lo_b)
        c = chi2(r)
        if c > target:
            hi = (r, c)
        else:
            lo = (r, c)
    if lo is None or hi is None:
        found = lo if hi is None else hi
        log.warning("regul search: no bracket after %d fits; regul %.4g", fits, found[0])
        return found
    best = min((lo, hi), key=lambda rc: abs(rc[1] - target))
    while abs(best[1] - target) > rtol * rise and fits < max_fits and hi[0] / lo[0] > 1.001:
        r = math.sqrt(lo[0] * hi[0])
        c = chi2(r)
        if c > target:
            hi = (r, c)
        else:
            lo = (r, c)
        best = min((best, (r, c)), key=lambda rc: abs(rc[1] - target))
    return best
