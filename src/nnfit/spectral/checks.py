"""Checks at the boundary for the unit mistakes that otherwise run silently.

Each check raises ``ValueError`` (a mistake that cannot be right) or emits a
``UserWarning`` (a symptom with more than one cause), with the fix in the message:

* :func:`check_ln_grid`: a wavelength grid in ``log10(lambda)`` or in Angstrom instead of
  natural ``ln(lambda)`` (refused);
* :func:`check_media`: air templates for vacuum data or the reverse, when both media are known
  (refused; the store records both);
* :func:`check_chi2_dof`: chi^2 per degree of freedom far from 1 (noise passed as a variance,
  or mis-scaled; warned);
* :func:`check_flux_scaling`: LOSVD amplitudes that do not follow the spaxels' flux (warned);
* :func:`check_velocity_frame`: the data's lines sitting far from where the model puts them
  (a spectrum in the observed frame without ``vsyst``, or the wrong velocity convention;
  warned).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

__all__ = [
    "CHI2_DOF_RANGE",
    "MEDIA",
    "check_chi2_dof",
    "check_flux_scaling",
    "check_ln_grid",
    "check_media",
    "check_velocity_frame",
]

log = logging.getLogger(__name__)

MEDIA = ("air", "vacuum")

CHI2_DOF_RANGE = (0.05, 20.0)
"""chi^2/dof outside this range is warned about (a variance for sigma squares the weights)."""

FLUX_RATIO_MAX = 5.0
"""Largest spread (max/min over spaxels) of data flux / LOSVD amplitude accepted silently."""


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)


def check_ln_grid(name: str, pix: Any) -> None:
    """Refuse a wavelength grid that is ``log10(lambda)`` or wavelengths, not ``ln(lambda)``.

    Natural ``ln(lambda / Angstrom)`` of anything from the far UV to the far infrared lies in
    ``[6, 13]``; ``log10`` of optical-NIR wavelengths lies in ``[2.5, 5.5]``; wavelengths in
    Angstrom or nm are above 20.

    Examples
    --------
    >>> check_ln_grid("obs_pix", np.log(10.0) * np.array([3.6, 3.9]))
    >>> check_ln_grid("obs_pix", np.array([3.6, 3.9]))
    Traceback (most recent call last):
    ...
    ValueError: obs_pix looks like log10(lambda) (values 3.6..3.9); nnfit needs natural ln(lambda): pass np.log(10) * obs_pix (e.g. SDSS loglam * ln 10)
    """
    p = np.asarray(pix, dtype=np.float64)
    lo, hi = float(np.min(p)), float(np.max(p))
    if 2.5 <= lo and hi <= 5.5:
        raise ValueError(
            f"{name} looks like log10(lambda) (values {lo:.4g}..{hi:.4g}); nnfit needs natural "
            f"ln(lambda): pass np.log(10) * {name} (e.g. SDSS loglam * ln 10)"
        )
    if lo > 20.0:
        raise ValueError(
            f"{name} looks like wavelengths, not ln(lambda) (values {lo:.6g}..{hi:.6g}); pass "
            f"np.log({name}) (wavelengths in Angstrom, uniform in ln(lambda) for templates)"
        )


def check_media(medium_obs: str | None, medium_templates: str | None) -> None:
    """Refuse air templates for vacuum data (or the reverse) when both media are known.

    At 5000 Angstrom the two differ by 1.4 Angstrom, about 84 km/s: the fit would absorb it
    into the velocities (and, since the offset changes with wavelength, into the continuum).

    Examples
    --------
    >>> check_media("vacuum", None)
    >>> check_media("vacuum", "air")
    Traceback (most recent call last):
    ...
    ValueError: the observed spectra are in vacuum wavelengths but the templates in air (about 84 km/s at 5000 A): convert the templates' wavelengths before log-rebinning them (e.g. ppxf.ppxf_util.air_to_vac), or the data's (vac_to_air)
    """
    for nm, m in (("medium_obs", medium_obs), ("medium_templates", medium_templates)):
        if m is not None and m not in MEDIA:
            raise ValueError(f"{nm} must be one of {MEDIA} or None (unknown); got {m!r}")
    if medium_obs is None or medium_templates is None or medium_obs == medium_templates:
        return
    to = "air_to_vac" if medium_obs == "vacuum" else "vac_to_air"
    back = "vac_to_air" if medium_obs == "vacuum" else "air_to_vac"
    raise ValueError(
        f"the observed spectra are in {medium_obs} wavelengths but the templates in "
        f"{medium_templates} (about 84 km/s at 5000 A): convert the templates' wavelengths "
        f"before log-rebinning them (e.g. ppxf.ppxf_util.{to}), or the data's ({back})"
    )


def check_chi2_dof(chi2_dof: float, bounds: tuple[float, float] = CHI2_DOF_RANGE) -> None:
    """Warn when chi^2 per degree of freedom is far from 1 (only meaningful with noise).

    Examples
    --------
    >>> check_chi2_dof(1.3)
    """
    lo, hi = bounds
    if not np.isfinite(chi2_dof) or lo <= chi2_dof <= hi:
        return
    if chi2_dof > hi:
        hint = (
            "if the noise you passed is a variance, pass its square root (noise is 1-sigma); "
            "otherwise the noise is underestimated or the model misses a continuum (try "
            "degree= / mdegree=)"
        )
    else:
        hint = (
            "the noise is overestimated (or the spectra were smoothed): pass the 1-sigma error "
            "of each pixel, in the data's flux units"
        )
    _warn(f"chi^2/dof = {chi2_dof:.4g}, far from 1: {hint}")


def check_flux_scaling(losvd_amplitude: np.ndarray, data_flux: np.ndarray) -> None:
    """Warn when the LOSVD amplitudes do not follow the spaxels' flux.

    With one global weight array the model's flux in spaxel ``s`` is proportional to the sum
    of its LOSVD (times any ``flux_scale``): unit-normalised LOSVDs in spaxels whose flux
    differs make the fit impossible and the chi^2 silently large.

    Parameters
    ----------
    losvd_amplitude : array (S,)
        Sum of the kernels (LOSVD weights) of each spaxel over components.
    data_flux : array (S,)
        Mean data over fitted pixels.

    Examples
    --------
    >>> check_flux_scaling(np.array([2.0, 1.0]), np.array([20.0, 10.0]))
    """
    a = np.asarray(losvd_amplitude, dtype=np.float64)
    f = np.asarray(data_flux, dtype=np.float64)
    ok = (a > 0) & (f > 0)
    if ok.sum() < 2:
        return
    ratio = f[ok] / a[ok]
    spread = float(ratio.max() / ratio.min())
    if spread > FLUX_RATIO_MAX:
        _warn(
            f"the spaxels' flux / LOSVD amplitude ratio spans a factor {spread:.3g} "
            f"({ratio.min():.3g} to {ratio.max():.3g}): the LOSVDs are not scaled to each "
            "spaxel's flux. Scale LOSVD[s] by the spaxel's flux, or pass flux_scale='data' "
            "(each spaxel's kernels times its mean flux)"
        )


def _highpass(y: np.ndarray, width: int) -> np.ndarray:
    k = np.ones(width) / width
    pad = np.pad(y, width, mode="edge")
    return y - np.convolve(pad, k, mode="same")[width:-width]


def check_velocity_frame(op: Any, max_kms: float = 5000.0) -> float | None:
    """Warn when the data's lines sit far from where the model puts them.

    Cross-correlates the mean fitted spectrum with the model of equal template weights at the
    given kinematics (both high-pass filtered), over lags up to ``max_kms``. A clear peak away
    from zero means the velocity frame is wrong: a spectrum in the observed frame fitted
    without ``vsyst``, a ``cz`` velocity given in pPXF's convention at high redshift, or a
    LOSVD grid centred on the wrong velocity. Returns the offset (km/s) when warned.
    """
    d = op._data
    if op._wy0 is None:
        return None
    S, L = op.data_shape
    w0 = np.ones((S, L)) if op._w0 is None else op._w0
    y = np.zeros((S, L))
    np.divide(op._wy0, w0, out=y, where=w0 > 0)
    fitted = w0 > 0
    n_fit = fitted.sum(axis=0)
    good = n_fit > 0
    if good.sum() < 64:
        return None
    ymean = np.where(good, y.sum(axis=0) / np.maximum(n_fit, 1), 0.0)
    kmean = d.kern.sum(axis=(0, 1))
    model = np.empty(L)
    for pix, Y in d.parts():
        model[pix] = np.einsum("k,pkl->l", kmean, Y) / Y.shape[0]
    step = getattr(op, "obs_step_kms", None)
    if not step:
        return None
    width = max(8, round(1500.0 / step))
    a = _highpass(np.interp(np.arange(L), np.flatnonzero(good), ymean[good]), width)
    b = _highpass(model, width)
    a[~good] = 0.0
    b[~good] = 0.0
    max_lag = min(int(max_kms / step), L // 4)
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.empty(lags.size)
    for i, g in enumerate(lags):
        if g >= 0:
            u, v = a[g:], b[: L - g]
        else:
            u, v = a[:g], b[-g:]
        den = np.sqrt((u @ u) * (v @ v))
        cc[i] = (u @ v) / den if den > 0 else 0.0
    best = int(lags[np.argmax(cc)])
    peak = float(cc.max())
    zero = float(cc[max_lag])
    if abs(best) >= 3 and peak > 0.3 and zero < 0.7 * peak:
        dv = best * step
        _warn(
            f"the data's absorption lines sit {dv:+.0f} km/s from where the model puts them "
            f"(cross-correlation peak {peak:.2f} against {zero:.2f} at zero offset): if the "
            f"spectra are in the observed frame pass vsyst (about {dv:+.0f} km/s more) or "
            "de-redshift obs_pix by ln(1+z); check the velocity convention ('ppxf': "
            "V = c ln(1+z), 'cz': v = c z) of vel_pix / moments"
        )
        return dv
    return None
