"""Stellar kinematics into LOSVD histograms: pPXF-style tables, orbit-model histograms, pPXF.

The store's LOSVDs live on ``/VelPix`` (km/s, ``cz`` convention, rest frame of the store).
:func:`velocity_grid` builds a grid whose every bin is a whole number of template pixels, so the
model's kernels are exact shifts; Gauss-Hermite moments in pPXF's convention (``V = c ln(1+z)``,
relative to the redshift the spectra were de-redshifted by) are sampled on it with
:func:`nnfit.spectral.losvd.losvd_from_moments`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.parallel import map_blocks, usable_cpus
from nnfit.spectral.model import C_KMS

__all__ = [
    "KinematicsAtBoundError",
    "losvd_from_kinematics",
    "ppxf_kinematics",
    "read_kinematics_table",
    "read_losvd_file",
    "velocity_grid",
]

log = logging.getLogger(__name__)

N_SIGMA = 5.0  # an LOSVD histogram spans |V| + N_SIGMA sigma (losvd_from_kinematics)
PPXF_MAX_DV = 2000.0  # km/s from the start: pPXF's default safety limit on V
PPXF_MAX_SIGMA = 1000.0  # km/s: pPXF's default upper limit on sigma


def velocity_grid(dlog: float, vmax_kms: float) -> tuple[np.ndarray, np.ndarray]:
    """LOSVD bins at whole template-pixel shifts ``k * dlog``, ``|k| <= ceil(vmax / (c dlog))``.

    Returns
    -------
    vel_cz : ndarray (V,)
        Bin centres in the ``cz`` convention, ``c (exp(k dlog) - 1)`` (the store's VelPix).
    vel_ppxf : ndarray (V,)
        The same bins in pPXF's convention, ``c k dlog``.

    Examples
    --------
    >>> cz, lv = velocity_grid(1e-4, 90.0)
    >>> cz.size, np.round(lv, 3).tolist()[:2]
    (9, [-119.917, -89.938])
    """
    if not dlog > 0 or not vmax_kms > 0:
        raise ValueError(f"dlog and vmax_kms must be > 0; got {dlog}, {vmax_kms}")
    k = int(np.ceil(vmax_kms / (C_KMS * dlog)))
    steps = np.arange(-k, k + 1) * dlog
    return C_KMS * np.expm1(steps), C_KMS * steps


def read_kinematics_table(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Per-bin kinematics from a table (``.fits``, ``.ecsv``, ``.csv``, anything astropy reads).

    Columns (case-insensitive): ``V`` and ``SIGMA`` (km/s, pPXF's convention, relative to the
    redshift the spectra are de-redshifted by), optional ``H3``, ``H4`` (0 when absent) and
    ``BIN_ID`` (0..S-1; default the row order). GIST's ``*_kin.fits`` tables have this form.

    Returns
    -------
    dict
        ``bin_id, V, sigma, h3, h4`` as float/int arrays ordered by ``bin_id``.
    """
    from astropy.table import Table

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--kinematics: {p} does not exist")
    try:
        t = Table.read(p, format="ascii.csv" if p.suffix == ".csv" else None)
    except Exception as exc:  # astropy raises many types for unreadable tables
        raise ValueError(f"--kinematics: {p} is not a readable table ({exc})") from None
    cols = {c.upper(): c for c in t.colnames}
    for need in ("V", "SIGMA"):
        if need not in cols:
            raise ValueError(
                f"--kinematics: {p} has no column {need!r} (columns: {', '.join(t.colnames)}); "
                "expected V, SIGMA and optionally H3, H4, BIN_ID"
            )
    n = len(t)
    out = {
        "V": np.asarray(t[cols["V"]], dtype=np.float64),
        "sigma": np.asarray(t[cols["SIGMA"]], dtype=np.float64),
        "h3": np.asarray(t[cols["H3"]], dtype=np.float64) if "H3" in cols else np.zeros(n),
        "h4": np.asarray(t[cols["H4"]], dtype=np.float64) if "H4" in cols else np.zeros(n),
    }
    bid = np.asarray(t[cols["BIN_ID"]], dtype=np.int64) if "BIN_ID" in cols else np.arange(n)
    if not np.array_equal(np.sort(bid), np.arange(n)):
        raise ValueError(f"--kinematics: {p}: BIN_ID must be 0..{n - 1}, each once")
    order = np.argsort(bid)
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"--kinematics: {p}: column {k} has NaN/Inf values")
        out[k] = v[order]
    if np.any(out["sigma"] <= 0):
        raise ValueError(f"--kinematics: {p}: SIGMA must be > 0 km/s")
    out["bin_id"] = bid[order]
    return out


def losvd_from_kinematics(
    kin: dict[str, np.ndarray], dlog: float, *, n_sigma: float = N_SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """LOSVD histograms ``(S, V, 1)`` and VelPix (cz) from per-bin Gauss-Hermite moments.

    The grid spans ``max(|V| + n_sigma * sigma)``; Gauss-Hermite wings that go negative
    (``h3, h4 != 0``) are set to 0 and each histogram renormalised to unit sum, as a LOSVD of
    light must be non-negative.

    Examples
    --------
    >>> kin = {"V": np.array([0.0, 50.0]), "sigma": np.array([150.0, 200.0]),
    ...        "h3": np.zeros(2), "h4": np.zeros(2)}
    >>> L, vel = losvd_from_kinematics(kin, 5e-5)
    >>> L.shape[0], L.shape[2], bool(np.allclose(L.sum(axis=1), 1.0))
    (2, 1, True)
    """
    from nnfit.spectral.losvd import losvd_from_moments

    vmax = float(np.max(np.abs(kin["V"]) + n_sigma * kin["sigma"]))
    vel_cz, vel_ppxf = velocity_grid(dlog, vmax)
    L = losvd_from_moments(vel_ppxf, kin["V"], kin["sigma"], kin["h3"], kin["h4"])
    if np.any(L < 0):
        log.info("clipped negative Gauss-Hermite wings in %d LOSVDs", int((L < 0).any(1).sum()))
        L = np.clip(L, 0.0, None)
        L /= L.sum(axis=1, keepdims=True)
    return L[:, :, None], vel_cz


def read_losvd_file(
    path: str | os.PathLike[str], vel_pix: Any = None, *, dataset: str = "LOSVD"
) -> tuple[np.ndarray, np.ndarray]:
    """LOSVD histograms ``(S, V, C)`` and their velocity bins from ``.npy``, ``.npz`` or HDF5.

    * ``.npy``: the (S, V, C) array; ``vel_pix`` (km/s, cz) must be given.
    * ``.npz``: arrays ``losvd`` and ``vel_pix``.
    * ``.h5``/``.hdf5``: dataset ``dataset`` (default ``/LOSVD``) and ``/VelPix`` (or the
      dataset's ``vel_pix`` attribute), as an orbit model writes them.
    """

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--losvd: {p} does not exist")
    if p.suffix == ".npy":
        L = np.load(p, allow_pickle=False)
        if vel_pix is None:
            raise ValueError(f"--losvd {p}: a .npy holds no velocity bins; give --vel-pix")
        v = np.asarray(vel_pix, dtype=np.float64)
    elif p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "losvd" not in z.files or "vel_pix" not in z.files:
                raise ValueError(f"--losvd {p}: needs arrays 'losvd' and 'vel_pix'")
            L, v = z["losvd"], z["vel_pix"]
    elif p.suffix in (".h5", ".hdf5"):
        from nnfit.io.hdf5 import open_h5

        with open_h5(p, "r") as f:
            if dataset not in f:
                raise ValueError(f"--losvd {p}: no dataset /{dataset.lstrip('/')}")
            d = f[dataset]
            L = d[()]
            if "vel_pix" in d.attrs:
                v = np.asarray(d.attrs["vel_pix"])
            elif "VelPix" in f:
                v = f["VelPix"][()]
            else:
                raise ValueError(f"--losvd {p}: no /VelPix dataset or vel_pix attribute")
    else:
        raise ValueError(f"--losvd {p}: expected .npy, .npz, .h5 or .hdf5")
    L = np.asarray(L, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if L.ndim == 2:
        L = L[:, :, None]
    if L.ndim != 3 or L.shape[1] != v.size:
        raise ValueError(
            f"--losvd {p}: expected (S, V, C) with V = {v.size} velocity bins; got {L.shape}"
        )
    return L, v


def ppxf_kinematics(
    spectra: np.ndarray,
    noise: np.ndarray,
    templates: np.ndarray,
    velscale: float,
    mask: np.ndarray,
    *,
    velscale_ratio: int = 1,
    vsyst: float = 0.0,
    moments: int = 2,
    degree: int = 4,
    start: tuple[float, float] = (0.0, 200.0),
    vmax: float | None = None,
    threads: int | None = None,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-bin kinematics by running pPXF (``pip install ppxf``) on each spectrum.

    Parameters
    ----------
    spectra, noise : arrays (S, L)
        De-redshifted, log-rebinned spectra and their 1-sigma noise.
    templates : array (T, P)
        Templates on a grid ``velscale_ratio`` times finer than the spectra's.
    velscale : float
        The spectra's pixel (km/s).
    mask : bool array (L,)
        True = fitted pixel.
    vsyst : float
        pPXF's ``vsyst`` (km/s) between the template and galaxy grids.
    moments, degree : int
        pPXF's ``moments`` (2 or 4) and additive polynomial ``degree``.
    vmax : float, optional
        The widest LOSVD the caller can model (km/s): a bin whose ``|V| + 5 sigma`` (the
        extent of its histogram, :func:`losvd_from_kinematics`) reaches beyond it is refused
        as soon as it is fitted.
    threads : int, optional
        Bins fitted at a time in this process (default: the CPUs it may use), each with one
        BLAS thread; the result does not depend on it. pPXF spends most of a fit in NumPy's
        FFTs and matrix products, which release the GIL: two threads fitted 8 MUSE bins in
        3.4 s against 5.4 s on one.
    scheduler : optional
        A ``dask.distributed`` scheduler address or client (:mod:`nnfit.parallel`): the bins
        are fitted on its workers instead (``threads`` is then unused).
    progress : callable, optional
        ``progress(done, total)`` after each bin (at about 0.7 s a bin with 150 E-MILES
        templates, a cube of 1558 spaxels takes about 17 minutes on one core).

    Returns
    -------
    dict
        ``bin_id, V, sigma, h3, h4, chi2`` (pPXF convention, km/s).

    Raises
    ------
    KinematicsAtBoundError
        (a ``ValueError``) at the first bin whose fit ends on pPXF's safety limits (``V``
        2000 km/s from the start, or ``sigma`` 1000 km/s: no kinematics within them match the
        templates to that spectrum, i.e. a wrong redshift or a bin of noise) or reaches beyond
        ``vmax``.
    """
    try:  # here, not in each bin: a missing package is refused before any work, naming the fix
        import ppxf.ppxf  # noqa: F401
    except ImportError:
        raise ValueError(
            "--kinematics ppxf needs the optional package ppxf (pip install ppxf); or give a "
            "kinematics table"
        ) from None
    S = spectra.shape[0]
    opts = {
        "velscale": velscale,
        "start": list(start),
        "moments": moments,
        "degree": degree,
        "goodpixels": np.flatnonzero(mask),
        "vsyst": vsyst,
        "velscale_ratio": velscale_ratio,
    }
    res = {k: np.zeros(S) for k in ("V", "sigma", "h3", "h4", "chi2")}
    done = 0  # bins finished: a cluster's come back in completion order

    def store(s: int, fit: np.ndarray) -> None:
        nonlocal done
        res["V"][s], res["sigma"][s], res["h3"][s], res["h4"][s], res["chi2"][s] = fit
        if abs(fit[0] - start[0]) >= PPXF_MAX_DV - 1.0 or fit[1] >= PPXF_MAX_SIGMA - 1.0:
            raise KinematicsAtBoundError(s, float(fit[0]), float(fit[1]))
        if vmax is not None and abs(fit[0]) + N_SIGMA * fit[1] > vmax:
            raise KinematicsAtBoundError(s, float(fit[0]), float(fit[1]), vmax)
        done += 1
        if progress is not None:
            progress(done, S)

    map_blocks(
        _ppxf_bin,
        [(spectra[s], noise[s]) for s in range(S)],
        scheduler=scheduler,
        broadcast=(templates, opts),
        on_result=store,
        threads=usable_cpus() if threads is None else max(1, int(threads)),
    )
    res["bin_id"] = np.arange(S)
    return res


class KinematicsAtBoundError(ValueError):
    """A bin's pPXF fit ended on pPXF's safety limits, or beyond ``vmax`` (see
    :func:`ppxf_kinematics`)."""

    def __init__(self, bin_id: int, V: float, sigma: float, vmax: float | None = None) -> None:
        self.bin_id, self.V, self.sigma, self.vmax = bin_id, V, sigma, vmax
        if vmax is None:
            why = (
                f"pPXF's fit ended on its safety limits (V {V:.0f} km/s, sigma {sigma:.0f} "
                f"km/s; it allows V within {PPXF_MAX_DV:.0f} km/s of the start and sigma up to "
                f"{PPXF_MAX_SIGMA:.0f} km/s): no kinematics within them match the templates to "
                "this spectrum"
            )
        else:
            why = (
                f"pPXF found V {V:.0f} km/s, sigma {sigma:.0f} km/s, an LOSVD reaching "
                f"{abs(V) + N_SIGMA * sigma:.0f} km/s (|V| + {N_SIGMA:g} sigma), beyond the "
                f"{vmax:.0f} km/s the templates are kept for"
            )
        super().__init__(f"bin {bin_id}: {why}")


def _ppxf_bin(
    bin_spectrum: tuple[np.ndarray, np.ndarray], templates: np.ndarray, opts: dict
) -> np.ndarray:
    """pPXF on one bin's ``(spectrum, noise)``: ``[V, sigma, h3, h4, chi2]`` (h3, h4 zero
    unless ``moments`` is 4)."""
    from ppxf.ppxf import ppxf

    spectrum, noise = bin_spectrum
    o = dict(opts)
    # pPXF's capfit takes the ratio of actual to predicted chi^2 reduction, 0 / 0 when a step
    # (h = 0, e.g. on a bound) changes nothing, and checks convergence without it; NumPy would
    # print a RuntimeWarning for it. np.errstate is thread-local, as the bins' threads need.
    with np.errstate(divide="ignore", invalid="ignore"):
        pp = ppxf(templates, spectrum, noise, o.pop("velscale"), o.pop("start"), quiet=True, **o)
    sol = np.asarray(pp.sol, dtype=np.float64)
    out = np.zeros(5)
    out[: min(4, sol.size)] = sol[:4]
    out[4] = pp.chi2
    return out
