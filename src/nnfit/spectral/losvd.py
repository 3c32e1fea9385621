"""Line-of-sight velocity distributions: Gauss-Hermite moments, histograms, velocity conventions.

Two velocity conventions are in use and they differ in the observed frame:

``"ppxf"``
    pPXF's ``V = c ln(1 + z)``: a velocity is a shift in natural log-wavelength,
    ``ln lambda_obs = ln lambda_rest + V / c``. Velocities add: a LOSVD bin ``v`` on top of a
    systemic ``vsyst`` is a shift of ``(vsyst + v) / c``.
``"cz"``
    ``v = c z`` (``lambda_obs = lambda_rest (1 + v/c)``), CubeFit's ``VelPix`` and what most
    catalogues quote. The shift is ``ln(1 + v/c)``; a bin ``v`` on top of ``vsyst`` composes as
    redshifts do, ``(1 + z_tot) = (1 + vsyst/c)(1 + v/c)``.

At ``z = 0.088`` the two differ by about 1100 km/s; for a de-redshifted spectrum with
``|v| <~ 1000 km/s`` they differ by ``v^2 / 2c`` (under 2 km/s).

The Gauss-Hermite LOSVD is pPXF's (van der Marel & Franx 1993)::

    L(v) = exp(-y^2/2) / (sigma sqrt(2 pi)) * [1 + h3 H3(y) + h4 H4(y)],   y = (v - V) / sigma
    H3(y) = (2 sqrt(2) y^3 - 3 sqrt(2) y) / sqrt(6),   H4(y) = (4 y^4 - 12 y^2 + 3) / sqrt(24)

and its Fourier transform is analytic (Cappellari 2017, eq. 38), which is how
:func:`gauss_hermite_rfft` applies it without sampling.

Examples
--------
>>> v = np.linspace(-300.0, 300.0, 7)
>>> np.round(losvd_from_moments(v, 0.0, 100.0), 4).tolist()
[0.0044, 0.054, 0.242, 0.3991, 0.242, 0.054, 0.0044]
>>> round(velocity_from_redshift(0.1, "ppxf") - velocity_from_redshift(0.1, "cz"), 1)
-1406.0
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import hermite

from nnfit.spectral.model import C_KMS

__all__ = [
    "VELOCITY_CONVENTIONS",
    "convert_velocity",
    "gauss_hermite_rfft",
    "ln_shift",
    "losvd_from_moments",
    "redshift_from_velocity",
    "velocity_from_redshift",
    "vsyst_from_grids",
]

VELOCITY_CONVENTIONS = ("ppxf", "cz")
"""``"ppxf"``: ``V = c ln(1+z)``; ``"cz"``: ``v = c z``."""


def _check_convention(convention: str) -> str:
    if convention not in VELOCITY_CONVENTIONS:
        raise ValueError(
            f"convention must be one of {VELOCITY_CONVENTIONS} ('ppxf': V = c ln(1+z), "
            f"'cz': v = c z); got {convention!r}"
        )
    return convention


def ln_shift(v_kms, convention: str = "cz", vsyst_kms: float = 0.0):
    """Shift in natural log-wavelength of velocity ``v`` on top of a systemic ``vsyst``.

    ``"ppxf"``: ``(vsyst + v) / c``; ``"cz"``: ``ln(1 + vsyst/c) + ln(1 + v/c)``.

    Examples
    --------
    >>> round(float(ln_shift(299.792458, "ppxf")), 12), round(float(ln_shift(0.0, "cz")), 12)
    (0.001, 0.0)
    """
    _check_convention(convention)
    v = np.asarray(v_kms, dtype=np.float64)
    if convention == "ppxf":
        out = (v + float(vsyst_kms)) / C_KMS
    else:
        if np.any(v <= -C_KMS) or vsyst_kms <= -C_KMS:
            raise ValueError(f"cz velocities must be > -c = -{C_KMS} km/s")
        out = np.log1p(v / C_KMS) + np.log1p(float(vsyst_kms) / C_KMS)
    return float(out) if out.ndim == 0 else out


def velocity_from_redshift(z, convention: str = "ppxf"):
    """Velocity (km/s) of redshift ``z``: ``c ln(1+z)`` (``"ppxf"``) or ``c z`` (``"cz"``).

    Examples
    --------
    >>> round(velocity_from_redshift(0.01, "cz"), 6)
    2997.92458
    """
    _check_convention(convention)
    z = np.asarray(z, dtype=np.float64)
    out = C_KMS * np.log1p(z) if convention == "ppxf" else C_KMS * z
    return float(out) if out.ndim == 0 else out


def redshift_from_velocity(v_kms, convention: str = "ppxf"):
    """Inverse of :func:`velocity_from_redshift`.

    Examples
    --------
    >>> round(redshift_from_velocity(velocity_from_redshift(0.088, "ppxf"), "ppxf"), 12)
    0.088
    """
    _check_convention(convention)
    v = np.asarray(v_kms, dtype=np.float64)
    out = np.expm1(v / C_KMS) if convention == "ppxf" else v / C_KMS
    return float(out) if out.ndim == 0 else out


def convert_velocity(v_kms, from_convention: str, to_convention: str):
    """The same Doppler shift expressed in another convention (``"ppxf"`` <-> ``"cz"``).

    Examples
    --------
    >>> round(convert_velocity(26383.0, "cz", "ppxf"), 1)
    25286.0
    """
    return velocity_from_redshift(redshift_from_velocity(v_kms, from_convention), to_convention)


def vsyst_from_grids(ln_lam_temp0: float, ln_lam_gal0: float) -> float:
    """pPXF's ``vsyst = c ln(lambda_temp[0] / lambda_gal[0])`` (km/s) from two grid starts.

    Examples
    --------
    >>> round(vsyst_from_grids(np.log(3500.0), np.log(3600.0)), 3)
    -8445.416
    """
    return float(C_KMS * (float(ln_lam_temp0) - float(ln_lam_gal0)))


def _gh_poly_real(y, h3, h4):
    """``1 + h3 H3(y) + h4 H4(y)`` with van der Marel & Franx's normalised polynomials."""
    s2 = np.sqrt(2.0)
    H3 = (2.0 * s2 * y**3 - 3.0 * s2 * y) / np.sqrt(6.0)
    H4 = (4.0 * y**4 - 12.0 * y**2 + 3.0) / np.sqrt(24.0)
    return 1.0 + h3 * H3 + h4 * H4


def losvd_from_moments(velocity_kms, V, sigma, h3=0.0, h4=0.0) -> np.ndarray:
    """Gauss-Hermite LOSVD (pPXF's definition) on velocity bins, normalised to unit sum.

    Parameters
    ----------
    velocity_kms : array (N,)
        Bin-centre velocities (km/s), in the same convention and frame as ``V``.
    V, sigma, h3, h4 : float or arrays broadcasting to a common shape ``B``
        Mean velocity (km/s), dispersion (km/s, > 0) and Gauss-Hermite moments.

    Returns
    -------
    ndarray ``(*B, N)``
        ``L(v_n)`` sampled at the bin centres and divided by its sum. Gauss-Hermite profiles
        with ``h3, h4 != 0`` go slightly negative in the wings; the values are kept (pPXF keeps
        them too).

    Notes
    -----
    The histogram is the density *sampled at the bin centres* (times the bin width), not its
    integral over each bin. With the model's delta-per-bin kernel
    (:mod:`nnfit.spectral.placement`), sampling reproduces the analytic Gauss-Hermite kernel of
    pPXF up to aliasing, ``sum_k G(omega + 2 pi k / dv)``; bin integrals would convolve the
    LOSVD with a top-hat once more and add ``dv^2 / 12`` to ``sigma^2``.

    References
    ----------
    van der Marel R. P., Franx M., 1993, ApJ, 407, 525, doi:10.1086/172534.
    Cappellari M., 2017, MNRAS, 466, 798, doi:10.1093/mnras/stw3020.

    Examples
    --------
    >>> L = losvd_from_moments(np.arange(-500.0, 501.0, 50.0), [0.0, 100.0], 120.0, h3=0.1)
    >>> L.shape, np.allclose(L.sum(axis=-1), 1.0)
    ((2, 21), True)
    """
    v = np.asarray(velocity_kms, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"velocity_kms must be a non-empty 1-D array; got shape {v.shape}")
    Vb, sb, h3b, h4b = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (V, sigma, h3, h4))
    )
    if np.any(~(sb > 0)):
        raise ValueError(f"sigma must be > 0 km/s; got min {float(np.min(sb))}")
    y = (v - Vb[..., None]) / sb[..., None]
    dens = np.exp(-0.5 * y * y) * _gh_poly_real(y, h3b[..., None], h4b[..., None])
    tot = dens.sum(axis=-1, keepdims=True)
    if np.any(tot == 0):
        raise ValueError(
            "losvd_from_moments: a LOSVD falls entirely outside velocity_kms "
            f"[{v.min():.0f}, {v.max():.0f}] km/s; widen the velocity grid or check V/sigma"
        )
    return dens / tot


def gauss_hermite_rfft(omega, V_pix, sigma_pix, h3=0.0, h4=0.0) -> np.ndarray:
    """Analytic Fourier transform of a Gauss-Hermite kernel on a pixel grid (pPXF's).

    For a kernel ``k`` (``out[t] = sum_n k[n] f[t - n]``) centred at ``V_pix`` pixels with
    dispersion ``sigma_pix`` pixels, returns ``K(omega) = sum_n k[n] exp(-i omega n)`` at the
    angular frequencies ``omega`` (radians per pixel), broadcast over leading axes of the
    parameters: shape ``(*B, len(omega))``.

    Notes
    -----
    ``K(omega) = exp(-i omega V - (sigma omega)^2 / 2) * conj(sum_n c_n H_n(sigma omega))`` with
    ``c = [1, 0, 0, i^3 h3 / sqrt(3! 2^3), i^4 h4 / sqrt(4! 2^4)]`` and physicists' Hermite
    polynomials ``H_n``: Cappellari (2017) eq. (38), exactly what ``ppxf.losvd_rfft`` computes.

    References
    ----------
    Cappellari M., 2017, MNRAS, 466, 798, doi:10.1093/mnras/stw3020.

    Examples
    --------
    >>> K = gauss_hermite_rfft(np.array([0.0, np.pi]), 0.0, 1.0)
    >>> np.round(K.real, 6).tolist()
    [1.0, 0.007192]
    """
    w = np.asarray(omega, dtype=np.float64)
    Vb, sb, h3b, h4b = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (V_pix, sigma_pix, h3, h4))
    )
    if np.any(~(sb > 0)):
        raise ValueError(f"sigma_pix must be > 0; got min {float(np.min(sb))}")
    ws = w * sb[..., None]
    out = np.exp(-1j * w * Vb[..., None] - 0.5 * ws * ws)
    if np.any(h3b != 0) or np.any(h4b != 0):
        c3 = (1j**3) / np.sqrt(6.0 * 8.0)
        c4 = (1j**4) / np.sqrt(24.0 * 16.0)
        H3 = hermite.hermval(ws, [0, 0, 0, 1])
        H4 = hermite.hermval(ws, [0, 0, 0, 0, 1])
        poly = 1.0 + c3 * h3b[..., None] * H3 + c4 * h4b[..., None] * H4
        out = out * np.conj(poly)
    return out
