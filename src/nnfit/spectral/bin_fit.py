"""Fit every bin of a cube store on its own (pPXF/GIST style), with the exact cube fit.

Each bin ``s`` is a one-spaxel problem ``y_s = A_s x_s`` (its own LOSVDs and noise) solved by
:func:`nnfit.spectral.fit.fit_cube`; results go to ``/BinFit`` in the store:

    /BinFit/weights (S, C, P)  float64  light of each template in the bin: x_s[c, p] times the
                                        amplitude of the bin's kernels (LOSVD sum times
                                        /FluxScale), in the templates' units
    /BinFit/model   (S, L)     float32  mpoly * (A_s x_s) + apoly (the polynomials when fitted)
    /BinFit/mpoly, /BinFit/apoly (S, L) float32  the continuum polynomials (1 and 0 without)
    /BinFit/chi2    (S,)       float64  sum over fitted pixels of ((y - model) / noise)^2
    /BinFit/dof     (S,)       int64    the bin's fitted pixels (``n_good``) minus non-zero
                                        weights and polynomial coefficients (``fit_cube``'s
                                        ``dof``)
    /BinFit/n_good  (S,)       int64    fitted pixels (``/Mask`` and ``/BinMask``)
    /BinFit/regul   (S,)       float64  the regularisation strength of each bin's fit

``/BinFit`` carries the fit's settings as attributes (``fit`` = "per-bin", ``degree``,
``mdegree``, ``regul`` (a number or "auto"), ``regul_order``) for ``nnfit spectral maps``.
With ``regul="auto"`` each bin gets pPXF's rule: the largest ``regul`` that raises its
``chi^2`` by ``sqrt(2 N)`` over its unregularised fit, noise rescaled to ``chi^2 / N = 1``
(:func:`nnfit.spectral.regul_search.regul_for_chi2_rise`).

pPXF with fixed kinematics reports ``chi2 / (n_good - mdegree)`` (it subtracts only its
non-linear parameters); ``chi2 / dof`` here also counts the weights and additive terms.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from nnfit.spectral.fit_record import WRITTEN, fit_settings, written_now

__all__ = ["fit_bins"]

log = logging.getLogger(__name__)


def fit_bins(
    path: str | os.PathLike[str],
    *,
    regul: float | str = 0.0,
    regul_order: int = 2,
    degree: int = -1,
    mdegree: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **fit_kwargs: Any,
) -> dict[str, np.ndarray]:
    """Fit each bin (spaxel) of a store independently and write ``/BinFit``.

    Parameters
    ----------
    path : path
        A populated store.
    regul : float or "auto"
        pPXF-style regularisation over the store's population grid (0: none); ``"auto"``:
        per bin, pPXF's rule (the module docstring).
    regul_order : {1, 2}
        Order of the regularisation (pPXF's ``reg_ord``).
    degree, mdegree : int
        Additive / multiplicative Legendre degrees (pPXF's; -1 and 0: none).
    progress : callable, optional
        ``progress(done, total)`` after each bin.
    **fit_kwargs
        Passed to :func:`~nnfit.spectral.fit.fit_cube` (``method``, ``tol``, ...).

    Returns
    -------
    dict
        ``weights (S, C, P)``, ``chi2 (S,)``, ``dof (S,)``, ``n_good (S,)``, ``chi2_dof (S,)``,
        ``regul (S,)``, and ``bin_size_check`` (:func:`chi2_against_bin_size` of the bins'
        spaxel counts, logged as a warning when not None).
    """
    from nnfit.io.hdf5 import open_h5
    from nnfit.spectral.cube_operator import CubeOperator
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.regul_search import regul_for_chi2_rise
    from nnfit.spectral.store import load_problem

    if regul != "auto" and (isinstance(regul, str) or not float(regul) >= 0):
        raise ValueError(f"regul must be a number >= 0 or 'auto'; got {regul!r}")

    prob = load_problem(path)
    with open_h5(path, "r") as f:
        bin_mask = f["BinMask"][()] if "BinMask" in f else np.ones((prob.S, prob.L), bool)
        binnum = f["BinNum"][()] if "BinNum" in f else None
    S, C, P, L = prob.S, prob.C, prob.P, prob.L
    weights = np.zeros((S, C, P))
    model = np.zeros((S, L), dtype=np.float32)
    mpoly = np.ones((S, L), dtype=np.float32)
    apoly = np.zeros((S, L), dtype=np.float32)
    chi2 = np.zeros(S)
    dof = np.zeros(S, dtype=np.int64)
    reguls = np.zeros(S)
    fs = prob.model_options.get("flux_scale")
    amp = prob.losvd.sum(axis=1) * (1.0 if fs is None else np.asarray(fs)[:, None])  # (S, C)
    n_good = (bin_mask & prob.mask[None, :]).sum(axis=1)
    whole = CubeOperator.from_problem(prob)  # one dictionary for every bin
    for s in range(S):
        # the bin's own missing pixels weigh zero, so fit_cube's dof counts n_good pixels
        op = whole.spaxels(s, s + 1, keep=bin_mask[s : s + 1])
        op.template_meta = prob.template_meta  # the population grid for ``regul``

        def fit(r: float, op: CubeOperator = op) -> tuple[np.ndarray, dict]:
            kw = dict(regul=r, regul_order=regul_order, degree=degree, mdegree=mdegree)
            return fit_cube(op, checkpoint=False, x0=None, **kw, **fit_kwargs)

        if regul == "auto":
            x, st = fit(0.0)
            found: dict[float, tuple[np.ndarray, dict]] = {0.0: (x, st)}

            def chi2_of(r: float, found: dict = found, fit: Callable = fit) -> float:
                found[r] = fit(r)
                return found[r][1]["chi2"]

            reguls[s], _ = regul_for_chi2_rise(chi2_of, st["chi2"], int(n_good[s]))
            x, st = found[reguls[s]]
        else:
            reguls[s] = float(regul)
            x, st = fit(reguls[s])
        weights[s] = x * amp[s][:, None]
        mp = st["mpoly"][0] if "mpoly" in st else 1.0
        ap = st["apoly"][0] if "apoly" in st else 0.0
        model[s] = mp * op.forward(x)[0] + ap
        mpoly[s], apoly[s] = mp, ap
        chi2[s] = st["chi2"]
        dof[s] = st["dof"]
        if progress is not None:
            progress(s + 1, S)
        log.info("bin %d/%d: chi2/dof %.4g", s + 1, S, chi2[s] / max(dof[s], 1))
    with open_h5(path, "a") as f:
        if "BinFit" in f:
            del f["BinFit"]
        g = f.create_group("BinFit")
        g.create_dataset("weights", data=weights)
        g.create_dataset("model", data=model)
        g.create_dataset("chi2", data=chi2)
        g.create_dataset("mpoly", data=mpoly)
        g.create_dataset("apoly", data=apoly)
        g.create_dataset("dof", data=dof)
        g.create_dataset("n_good", data=n_good.astype(np.int64))
        g.create_dataset("regul", data=reguls)
        g.attrs["definition"] = "each bin fitted alone with fit_cube; chi2/dof = chi2 / dof"
        settings = fit_settings("per-bin", degree, mdegree, regul, regul_order)
        for k, v in settings.items():
            g.attrs[k] = v
        g.attrs[WRITTEN] = written_now()  # maps read the newer of /BinFit and /X_global
        g.attrs["fit_options"] = json.dumps({k: v for k, v in fit_kwargs.items()})
    size_check = None
    if binnum is not None and binnum.size:
        size_check = chi2_against_bin_size(np.bincount(binnum, minlength=S), chi2 / dof)
        if size_check is not None:
            log.warning(
                "%s: chi2/dof rises with the bins' size (Spearman %.2f over %d bins; median %.3g "
                "in the smallest third, %.3g in the largest): the binned noise looks too small, "
                "as spatially correlated noise makes it; see nnfit spectral init --covariance",
                path,
                size_check["spearman"],
                S,
                size_check["small"],
                size_check["large"],
            )
    return {
        "weights": weights,
        "chi2": chi2,
        "dof": dof,
        "n_good": n_good,
        "chi2_dof": chi2 / dof,
        "regul": reguls,
        "bin_size_check": size_check,
    }


def chi2_against_bin_size(
    n_spaxels: np.ndarray, chi2_dof: np.ndarray, *, min_bins: int = 6
) -> dict[str, float] | None:
    """How chi^2/dof of bins fitted alone grows with their spaxel count, when it clearly does.

    At one nominal S/N, template mismatch leaves chi^2/dof about equal in every bin; a rise
    with the number of summed spaxels means the bins' noise was underestimated in proportion
    to their size, as spatially correlated noise (or coherent residuals such as sky) makes
    it. Returned (else None) when there are at least ``min_bins`` bins, the largest at least
    twice the smallest, the Spearman rank correlation of size and chi^2/dof is at least 0.7
    and the median chi^2/dof of the largest third of the bins is at least 1.5 times that of
    the smallest third.

    Examples
    --------
    >>> n = np.array([20, 25, 30, 40, 60, 90, 120, 150])
    >>> chi2_against_bin_size(n, 1 + np.log10(n) ** 2)["spearman"]
    1.0
    >>> chi2_against_bin_size(n, np.full(8, 1.1)) is None
    True
    """
    from scipy.stats import spearmanr

    n = np.asarray(n_spaxels, dtype=np.float64)
    c = np.asarray(chi2_dof, dtype=np.float64)
    ok = np.isfinite(c) & (n > 0)
    n, c = n[ok], c[ok]
    if n.size < min_bins or n.max() < 2 * n.min() or np.ptp(c) == 0:
        return None
    rho = float(spearmanr(n, c).statistic)
    order = np.argsort(n, kind="stable")
    third = max(1, n.size // 3)
    small, large = float(np.median(c[order[:third]])), float(np.median(c[order[-third:]]))
    if rho < 0.7 or large < 1.5 * small:
        return None
    return {"spearman": rho, "small": small, "large": large}
