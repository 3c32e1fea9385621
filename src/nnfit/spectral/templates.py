"""Stellar-population template libraries: pPXF's SPS ``.npz`` files and MILES/E-MILES FITS.

:func:`load_template_library` reads a library, matches its resolution to the instrument's
line-spread function, rebins it (flux-conserving) onto a given ln(lambda) grid and normalises
it, recording ages, metallicities and the grid shape for ``template_meta_json``.

Two source formats:

* pPXF's SPS library file (``spectra_<name>_9.0.npz``): ``templates (n_pix, n_ages, n_metals)``
  in L_sun/A per unit mass, ``lam (n_pix,)`` A, ``fwhm`` (A, scalar or per pixel), ``ages``
  (Gyr), ``metals`` ([M/H]), ``masses (n_ages, n_metals)``. Read with ``allow_pickle=False``.
* a folder of MILES/E-MILES SSP FITS files (one spectrum each, linear ``CRVAL1``/``CDELT1``),
  whose names carry ``Z[m|p]<metal>T<age>`` (e.g. ``Eun1.30Zm0.40T00.0631_...fits``); their
  resolution is a constant FWHM (2.51 A for MILES and the optical part of E-MILES,
  Vazdekis et al. 2010, 2016), given by ``fwhm_tem``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.spectral.logrebin import log_rebin_matrix, pixel_edges

__all__ = ["TemplateLibrary", "gaussian_filter_variable", "load_template_library"]

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
MILES_FWHM = 2.51
"""FWHM (A) of MILES SSPs and of E-MILES over 3,540-8,950 A (Vazdekis et al. 2016)."""

_MILES_NAME = re.compile(r"Z([mp])(\d\.\d{2})T(\d{2}\.\d{4})")


@dataclass
class TemplateLibrary:
    """Templates on a uniform ln(lambda) grid over an age x metallicity grid.

    Attributes
    ----------
    templates : ndarray (T, n_ages, n_metals)
        Normalised templates (see ``normalisation``), float64.
    ln_lam : ndarray (T,)
        Pixel centres, ln(Angstrom), in the medium ``medium``.
    ages : ndarray (n_ages,)
        Gyr.
    metals : ndarray (n_metals,)
        [M/H] in dex.
    flux : ndarray (n_ages, n_metals)
        Factor each template (per unit initial mass, as the library gives it) was divided
        by. Weights ``w`` fitted with these templates are light weights when
        ``normalisation == "light"``; mass weights are ``w / flux`` in both cases, light
        weights ``w * flux / flux_band`` where ``flux_band`` is the band mean.
    band_flux : ndarray (n_ages, n_metals)
        Mean flux per unit mass in ``norm_range`` (converts mass to light weights).
    normalisation : {"light", "mass"}
    norm_range : (float, float)
        Band (A) of the light normalisation.
    medium : {"air", "vacuum"}
    fwhm_tem : float or None
        The library's own FWHM (A); None when it varies (``.npz`` per-pixel ``fwhm``).
    source : str
    """

    templates: np.ndarray
    ln_lam: np.ndarray
    ages: np.ndarray
    metals: np.ndarray
    flux: np.ndarray
    band_flux: np.ndarray
    normalisation: str
    norm_range: tuple[float, float]
    medium: str
    fwhm_tem: float | None
    source: str

    def meta(self) -> dict[str, Any]:
        """The ``template_meta_json`` record: grid axes and values, normalisation, source."""
        return {
            "grid_axes": ["age", "metal"],
            "axis_values": {"age": self.ages.tolist(), "metal": self.metals.tolist()},
            "axis_units": {"age": "Gyr", "metal": "[M/H] dex"},
            "normalisation": self.normalisation,
            "norm_range_A": list(self.norm_range),
            "flux": self.flux.tolist(),
            "band_flux": self.band_flux.tolist(),
            "weights": (
                "light fractions in norm_range (mass weights = weights / flux)"
                if self.normalisation == "light"
                else "masses in units of 1/flux solar masses (light = weights * band_flux / flux)"
            ),
            "medium": self.medium,
            "library": self.source,
        }


def gaussian_filter_variable(spectra: np.ndarray, sigma_pix: np.ndarray) -> np.ndarray:
    """Convolve spectra ``(n, ...)`` along axis 0 with a Gaussian of per-pixel ``sigma_pix``.

    Output pixel ``i`` is ``sum_k g_i(k) x[i + k]`` with ``g_i`` a Gaussian of dispersion
    ``sigma_pix[i]`` sampled at integer ``k`` and normalised to 1 (the kernel at the output
    pixel, as pPXF's ``gaussian_filter1d``); zero padding beyond the ends. With a constant
    sigma it equals :func:`scipy.ndimage.gaussian_filter1d` (``mode="constant"``,
    ``truncate=4``) away from the ends.

    Examples
    --------
    >>> x = np.zeros(21); x[10] = 1.0
    >>> y = gaussian_filter_variable(x, np.full(21, 2.0))
    >>> round(float(y.sum()), 6), int(np.argmax(y))
    (1.0, 10)
    """
    x = np.asarray(spectra, dtype=np.float64)
    sig = np.clip(np.asarray(sigma_pix, dtype=np.float64), 0.01, None)
    n = x.shape[0]
    if sig.shape != (n,):
        raise ValueError(f"sigma_pix must have shape ({n},); got {sig.shape}")
    p = int(np.ceil(4.0 * sig.max()))
    k = np.arange(-p, p + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k[:, None] / sig[None, :]) ** 2)
    g /= g.sum(axis=0)
    pad = np.zeros((n + 2 * p, *x.shape[1:]))
    pad[p : p + n] = x
    out = np.zeros_like(x)
    shape = (n,) + (1,) * (x.ndim - 1)
    for j in range(2 * p + 1):
        out += g[j].reshape(shape) * pad[j : j + n]
    return out


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz template library ({exc})") from None
    with z:
        need = ("templates", "lam", "ages", "metals")
        missing = [k for k in need if k not in z.files]
        if missing:
            raise ValueError(
                f"{path}: pPXF SPS library needs arrays {', '.join(need)}; missing "
                f"{', '.join(missing)} (found {', '.join(z.files)})"
            )
        t = np.asarray(z["templates"], dtype=np.float64)
        lam = np.asarray(z["lam"], dtype=np.float64)
        ages = np.asarray(z["ages"], dtype=np.float64)
        metals = np.asarray(z["metals"], dtype=np.float64)
        fwhm = np.asarray(z["fwhm"], dtype=np.float64) if "fwhm" in z.files else None
    if t.ndim != 3 or t.shape != (lam.size, ages.size, metals.size):
        raise ValueError(
            f"{path}: templates must be (lam.size, ages.size, metals.size) = "
            f"({lam.size}, {ages.size}, {metals.size}); got {t.shape}"
        )
    return {"templates": t, "lam": lam, "ages": ages, "metals": metals, "fwhm": fwhm}


def _read_miles_folder(folder: Path, pattern: str) -> dict[str, Any]:
    from astropy.io import fits

    files = sorted(folder.glob(pattern))
    if not files:
        raise ValueError(f"{folder}: no template files match {pattern!r}")
    keys = []
    for f in files:
        m = _MILES_NAME.search(f.name)
        if m is None:
            raise ValueError(
                f"{f}: file name carries no MILES age/metallicity tag like 'Zm0.40T00.0631'"
            )
        metal = float(m.group(2)) * (-1.0 if m.group(1) == "m" else 1.0)
        keys.append((float(m.group(3)), metal))
    ages = np.unique([k[0] for k in keys])
    metals = np.unique([k[1] for k in keys])
    if len(set(keys)) != ages.size * metals.size or len(keys) != len(set(keys)):
        raise ValueError(
            f"{folder}: the {len(files)} files matching {pattern!r} do not form one full "
            f"age x metallicity grid ({ages.size} ages x {metals.size} metallicities)"
        )
    lam = None
    t = None
    for f, (age, met) in zip(files, keys, strict=True):
        with fits.open(f) as h:
            hdr, data = h[0].header, h[0].data
            for kw in ("CRVAL1", "CDELT1"):
                if kw not in hdr:
                    raise ValueError(f"{f}: keyword {kw} missing (linear wavelength WCS)")
            if data is None or data.ndim != 1:
                raise ValueError(f"{f}: expected a 1-D spectrum in the primary HDU")
            w = hdr["CRVAL1"] + hdr["CDELT1"] * (np.arange(data.size) + 1 - hdr.get("CRPIX1", 1))
            if lam is None:
                lam = w
                t = np.empty((w.size, ages.size, metals.size))
            elif w.size != lam.size or not np.allclose(w, lam):
                raise ValueError(f"{f}: wavelength grid differs from {files[0].name}")
            t[:, np.searchsorted(ages, age), np.searchsorted(metals, met)] = data
    return {"templates": t, "lam": lam, "ages": ages, "metals": metals, "fwhm": None}


def load_template_library(
    source: str | os.PathLike[str],
    ln_edges: np.ndarray,
    *,
    fwhm_gal: float | Callable[[np.ndarray], np.ndarray] | None = None,
    fwhm_tem: float | Callable[[np.ndarray], np.ndarray] | None = None,
    normalisation: str = "light",
    norm_range: tuple[float, float] = (5070.0, 5950.0),
    age_range: tuple[float, float] | None = None,
    metal_range: tuple[float, float] | None = None,
    medium: str = "air",
    pattern: str = "*.fits",
) -> TemplateLibrary:
    """Load, resolution-match, log-rebin and normalise an SSP library.

    Parameters
    ----------
    source : path
        A pPXF SPS ``.npz`` file or a folder of MILES/E-MILES FITS files.
    ln_edges : array (T + 1,)
        Output pixel edges in ln(Angstrom) (rest frame), uniform: the template grid.
    fwhm_gal : float or callable, optional
        The instrument's FWHM (A) in the templates' frame, constant or a function of the
        wavelength (A); the templates are convolved with a Gaussian of FWHM
        ``sqrt(fwhm_gal^2 - fwhm_tem^2)`` (0 where the templates are already broader, as
        pPXF clips it). None: no convolution.
    fwhm_tem : float or callable, optional
        The library's FWHM (A), constant or a function of its wavelength (A): a library whose
        resolution varies (E-MILES beyond the MILES range) needs the function, e.g. an
        :class:`~nnfit.spectral.lsf.LSFTable`; default the ``.npz`` file's ``fwhm``, else 2.51
        (MILES).
    normalisation : {"light", "mass"}
        "light": each template divided by its mean in ``norm_range`` (weights are light
        fractions there); "mass": all divided by one scalar, the median positive value
        (weights are proportional to mass), pPXF's two conventions.
    norm_range : (float, float)
        Band in A (default the V band's FWHM, 5070-5950 A, as pPXF's examples).
    age_range, metal_range : (float, float), optional
        Keep ages (Gyr) and [M/H] within these inclusive ranges.
    medium : {"air", "vacuum"}
        Medium of ``ln_edges``; the library is converted when it differs (MILES and
        pPXF's libraries are in air).
    pattern : str
        Glob of the FITS files in a folder (e.g. ``"Eun1.30Z*T*.fits"``).

    Returns
    -------
    TemplateLibrary

    Notes
    -----
    Broadening before rebinning: the difference kernel has
    ``sigma(lambda) = sqrt(max(FWHM_gal(lambda)^2 - FWHM_tem(lambda)^2, 0)) / (2 sqrt(2 ln 2))``
    A, applied per pixel of the library's own grid (linear, or uniform in ln(lambda)) by
    :func:`gaussian_filter_variable`; the rebin is
    :func:`nnfit.spectral.logrebin.log_rebin_matrix` over the library's pixel edges
    (:func:`nnfit.spectral.logrebin.pixel_edges`).

    References
    ----------
    Vazdekis, A. et al. 2016, MNRAS 463, 3409. doi:10.1093/mnras/stw2231
    """
    from nnfit.spectral.ifu_cube import air_to_vacuum

    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"templates: {src} does not exist")
    if normalisation not in ("light", "mass"):
        raise ValueError(f"normalisation must be 'light' or 'mass'; got {normalisation!r}")
    if medium not in ("air", "vacuum"):
        raise ValueError(f"medium must be 'air' or 'vacuum'; got {medium!r}")
    lib = _read_npz(src) if src.is_file() else _read_miles_folder(src, pattern)
    t, lam, ages, metals = lib["templates"], lib["lam"], lib["ages"], lib["metals"]
    if age_range is not None:
        keep = (ages >= age_range[0]) & (ages <= age_range[1])
        t, ages = t[:, keep], ages[keep]
    if metal_range is not None:
        keep = (metals >= metal_range[0]) & (metals <= metal_range[1])
        t, metals = t[:, :, keep], metals[keep]
    if ages.size == 0 or metals.size == 0:
        raise ValueError(
            f"age_range {age_range} / metal_range {metal_range} leave no templates in {src}"
        )
    if medium == "vacuum":
        lam = air_to_vacuum(lam)

    ln_edges = np.asarray(ln_edges, dtype=np.float64)
    lo, hi = np.exp(ln_edges[0]), np.exp(ln_edges[-1])
    edges = pixel_edges(lam)
    if edges[0] > lo or edges[-1] < hi:
        raise ValueError(
            f"templates: {src.name} covers {edges[0]:.1f}-{edges[-1]:.1f} A; the fit needs "
            f"{lo:.1f}-{hi:.1f} A (observed range plus the LOSVD margin). Trim --lam-range"
        )
    if fwhm_tem is None:
        ftem = lib["fwhm"]
    elif callable(fwhm_tem):
        ftem = np.asarray(fwhm_tem(lam), dtype=np.float64)
        if ftem.shape != lam.shape or not np.all(np.isfinite(ftem) & (ftem > 0)):
            raise ValueError("fwhm_tem: the library's FWHM must be > 0 A at every wavelength")
    else:
        ftem = np.asarray(fwhm_tem, dtype=np.float64)
    if ftem is None:
        ftem = np.asarray(MILES_FWHM)
    # Work on the library's pixels that matter (plus room for the smoothing kernel).
    margin = 50.0 + 10.0 * float(np.max(ftem))
    sel = np.flatnonzero((lam >= lo - margin) & (lam <= hi + margin))
    lam_s, t_s = lam[sel], t[sel]
    ftem_s = ftem[sel] if ftem.ndim == 1 else ftem
    if fwhm_gal is not None:
        fg = fwhm_gal(lam_s) if callable(fwhm_gal) else np.full(lam_s.size, float(fwhm_gal))
        diff2 = np.asarray(fg, dtype=np.float64) ** 2 - ftem_s**2
        if np.any(diff2 < 0):
            log.info(
                "templates broader than the instrument over %.0f%% of the range; not sharpened",
                100.0 * np.mean(diff2 < 0),
            )
        sigma_pix = np.sqrt(np.clip(diff2, 0.0, None)) * FWHM_TO_SIGMA / np.gradient(lam_s)
        t_s = gaussian_filter_variable(t_s, sigma_pix)
    M = log_rebin_matrix(pixel_edges(lam_s), ln_edges)
    shape = t_s.shape[1:]
    out = np.asarray(M @ t_s.reshape(lam_s.size, -1)).reshape(M.shape[0], *shape)
    ln_lam = 0.5 * (ln_edges[1:] + ln_edges[:-1])
    lam_out = np.exp(ln_lam)
    band = (lam_out >= norm_range[0]) & (lam_out <= norm_range[1])
    if band.sum() < 1:
        raise ValueError(
            f"norm_range {norm_range} A lies outside the template grid "
            f"{lam_out[0]:.0f}-{lam_out[-1]:.0f} A; choose a band inside it"
        )
    band_flux = out[band].mean(axis=0)
    if normalisation == "light":
        flux = band_flux.copy()
    else:
        flux = np.full(shape, float(np.median(out[out > 0])))
    out /= flux
    return TemplateLibrary(
        templates=out,
        ln_lam=ln_lam,
        ages=ages,
        metals=metals,
        flux=flux,
        band_flux=band_flux,
        normalisation=normalisation,
        norm_range=(float(norm_range[0]), float(norm_range[1])),
        medium=medium,
        fwhm_tem=None if np.ndim(ftem) else float(ftem),
        source=str(src),
    )
