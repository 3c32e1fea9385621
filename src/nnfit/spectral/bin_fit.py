"""Fit every bin of a cube store on its own (pPXF/GIST style), with the exact cube fit.

Each bin ``s`` is a one-spaxel problem ``y_s = A_s x_s`` (its own LOSVDs and noise) solved by
:func:`nnfit.spectral.fit.fit_cube`; results go to ``/BinFit`` in the store:

    /BinFit/weights (S, C, P)  float64  the bin's template weights x_s (template units)
    /BinFit/model   (S, L)     float32  A_s x_s
    /BinFit/chi2    (S,)       float64  sum over fitted pixels of ((y - model) / noise)^2
    /BinFit/n_good  (S,)       int64    fitted pixels (``/Mask`` and ``/BinMask``)

``chi2 / n_good`` is chi^2 per degree of freedom as pPXF reports it with fixed kinematics
(pPXF subtracts only free non-linear parameters from the pixel count).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["fit_bins"]

log = logging.getLogger(__name__)


def fit_bins(
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    **fit_kwargs: Any,
) -> dict[str, np.ndarray]:
    """Fit each bin (spaxel) of a store independently and write ``/BinFit``.

    Parameters
    ----------
    path : path
        A populated store.
    progress : callable, optional
        ``progress(done, total)`` after each bin.
    **fit_kwargs
        Passed to :func:`~nnfit.spectral.fit.fit_cube` (``method``, ``tol``, ``regul``, ...).

    Returns
    -------
    dict
        ``weights (S, C, P)``, ``chi2 (S,)``, ``n_good (S,)``, ``chi2_dof (S,)``.
    """
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.operator import CubeOperator
    from nnfit.spectral.store import load_problem, open_h5

    prob = load_problem(path)
    with open_h5(path, "r") as f:
        bin_mask = f["BinMask"][()] if "BinMask" in f else np.ones((prob.S, prob.L), bool)
    S, C, P, L = prob.S, prob.C, prob.P, prob.L
    weights = np.zeros((S, C, P))
    model = np.zeros((S, L), dtype=np.float32)
    chi2 = np.zeros(S)
    n_good = (bin_mask & prob.mask[None, :]).sum(axis=1)
    for s in range(S):
        sub = dataclasses.replace(
            prob,
            datacube=prob.datacube[s : s + 1],
            noise=None if prob.noise is None else prob.noise[s : s + 1],
            losvd=prob.losvd[s : s + 1],
            path=None,
        )
        op = CubeOperator.from_problem(sub)
        x, st = fit_cube(op, checkpoint=False, x0=None, **fit_kwargs)
        weights[s] = x
        model[s] = op.forward(x)[0]
        chi2[s] = st["chi2"]
        if progress is not None:
            progress(s + 1, S)
        log.info("bin %d/%d: chi2/dof %.4g", s + 1, S, chi2[s] / max(n_good[s], 1))
    with open_h5(path, "a") as f:
        if "BinFit" in f:
            del f["BinFit"]
        g = f.create_group("BinFit")
        g.create_dataset("weights", data=weights)
        g.create_dataset("model", data=model)
        g.create_dataset("chi2", data=chi2)
        g.create_dataset("n_good", data=n_good.astype(np.int64))
        g.attrs["definition"] = (
            "each bin fitted alone; chi2/dof = chi2 / n_good (pPXF, fixed LOSVD)"
        )
    return {"weights": weights, "chi2": chi2, "n_good": n_good, "chi2_dof": chi2 / n_good}
