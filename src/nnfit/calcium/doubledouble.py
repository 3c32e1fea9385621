"""Double-double arithmetic (about 32 digits from pairs of doubles) for compiled code.

Error-free transformations: Knuth's two-sum and Dekker's product by splitting (no fused
multiply-add, so the compiler must not contract them; tested against exact rationals). The
banded factorisations of the exact calcium solvers use them where the double factor's rounding
swamps the smooth directions of their Newton systems (slow kinetics at high frame rates).

References
----------
Dekker, T. J. (1971). A floating-point technique for extending the available precision.
Numerische Mathematik 18, 224-242. https://doi.org/10.1007/BF01397083
"""

from __future__ import annotations

import numba

__all__ = ["dd_add", "dd_div", "dd_mul", "split", "two_prod", "two_sum"]


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def two_sum(a, b):  # pragma: no cover - compiled
    """``a + b`` as ``(s, e)`` with ``s + e`` exact (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def split(a):  # pragma: no cover - compiled
    """``a`` as two halves of 26 bits each, ``hi + lo = a`` exactly (Dekker)."""
    c = 134217729.0 * a  # 2^27 + 1
    hi = c - (c - a)
    return hi, a - hi


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def two_prod(a, b):  # pragma: no cover - compiled
    """``a b`` as ``(p, e)`` with ``p + e`` exact (Dekker's split; no fused multiply-add)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def dd_add(ah, al, bh, bl):  # pragma: no cover - compiled
    """``(ah, al) + (bh, bl)``, renormalised."""
    s, e = two_sum(ah, bh)
    e += al + bl
    hi = s + e
    return hi, e - (hi - s)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def dd_mul(ah, al, bh, bl):  # pragma: no cover - compiled
    """``(ah, al) (bh, bl)``, renormalised (the ``al bl`` term dropped)."""
    p, e = two_prod(ah, bh)
    e += ah * bl + al * bh
    hi = p + e
    return hi, e - (hi - p)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def dd_div(ah, al, bh, bl):  # pragma: no cover - compiled
    """``(ah, al) / (bh, bl)``: a double quotient and one correction."""
    q1 = ah / bh
    ph, pl = dd_mul(bh, bl, q1, 0.0)
    q2 = dd_add(ah, al, -ph, -pl)[0] / bh
    hi = q1 + q2
    return hi, q2 - (hi - q1)
