"""The one result type of the spectral fits: :class:`FitResult`.

:func:`~nnfit.spectral.fit_cube`, :func:`~nnfit.spectral.fit_store` and
:meth:`PipelineRunner.solve_all <nnfit.spectral.PipelineRunner.solve_all>` return it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FitResult"]


@dataclass(frozen=True)
class FitResult:
    """The weights of a global fit and how they were found.

    It unpacks and indexes as the pair ``(x, stats)`` these functions returned before, so
    ``x, stats = fit_cube(...)`` and ``fit_cube(...)[1]`` keep working.

    Attributes
    ----------
    x : numpy.ndarray
        The non-negative weights: ``(C, P)`` from the exact fits, ``(C*P,)`` from the
        Kaczmarz runner (CubeFit's ``X_global`` layout).
    stats : dict
        Everything the solver reports (see the function that returned it); always holds
        ``time_s``.

    Examples
    --------
    >>> r = FitResult(np.ones((2, 3)), {"time_s": 0.5, "method": "gram", "chi2": 1.0})
    >>> x, stats = r
    >>> x.shape, r.time_s, r.method, r[1] is r.stats
    ((2, 3), 0.5, 'gram', True)
    """

    x: np.ndarray
    stats: dict[str, Any]

    @property
    def time_s(self) -> float:
        """Wall-clock seconds of the fit (``stats["time_s"]``)."""
        return float(self.stats.get("time_s", math.nan))

    @property
    def method(self) -> str:
        """The solver that ran (``stats["method"]``, ``"kaczmarz"`` for the runner)."""
        return str(self.stats.get("method", "kaczmarz"))

    @property
    def chi2(self) -> float:
        """Weighted chi^2 at ``x`` where the solver computed it, else NaN."""
        return float(self.stats.get("chi2", math.nan))

    @property
    def converged(self) -> bool | None:
        """The solver's convergence flag, or None where it has none (Kaczmarz epochs)."""
        flag = self.stats.get("converged")
        return None if flag is None else bool(flag)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.x, self.stats))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.x, self.stats)[index]
