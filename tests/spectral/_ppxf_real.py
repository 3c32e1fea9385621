"""Real SDSS spectra and E-MILES templates from the ``ppxf`` package, set up as pPXF users do.

Shared by the pPXF-oracle tests and ``bench/spectral_vs_ppxf.py``: the galaxy's own
``ln lambda`` grid (float32 ``loglam``), templates log-rebinned to the galaxy's velocity step
from a start chosen to put the two grids ``frac`` of a pixel apart, broadened to the SDSS
resolution exactly as ``ppxf_example_kinematics_sdss.py`` does.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

C_KMS = 299792.458


@dataclass
class RealSpectrum:
    name: str
    galaxy: np.ndarray  # (L,) normalised flux
    noise: np.ndarray  # (L,)
    ln_lam_gal: np.ndarray  # (L,) float64 from float32 loglam
    templates: np.ndarray  # (T, P)
    ln_lam_temp: np.ndarray  # (T,)
    velscale: float
    goodpixels: np.ndarray  # int indices
    redshift: float


def log_rebin(lam_range, spec, velscale):
    """``ppxf.ppxf_util.log_rebin`` for a 2-element range, unchanged except one ``.item()``.

    ppxf 8.2.6 computes the output length with ``int()`` of a one-element array, which
    numpy >= 2.4 refuses (TypeError); this is its algorithm with that cast fixed.
    """
    lam = np.asarray(lam_range, dtype=float)
    spec = np.asarray(spec, dtype=float)
    n = len(spec)
    dlam = np.diff(lam).item() / (n - 1)
    lim = lam + np.array([-0.5, 0.5]) * dlam
    ln_lim = np.log(lim)
    m = int((ln_lim[1] - ln_lim[0]) / (velscale / C_KMS))
    new_borders = np.exp(ln_lim[0] + velscale / C_KMS * np.arange(m + 1))
    borders = np.linspace(*lim, n + 1)
    k = ((new_borders - lim[0]) / dlam).clip(0, n - 1).astype(int)
    out = np.add.reduceat(spec * dlam, k)[:-1]
    out *= np.diff(k) > 0
    out += np.diff((new_borders - borders[k]) * spec[k])
    out /= np.diff(new_borders)
    return out, 0.5 * np.log(new_borders[1:] * new_borders[:-1])


def ppxf_dir() -> Path:
    import ppxf.ppxf_util as util

    return Path(util.__file__).resolve().parent


def load_sdss(
    name: str = "NGC4636_SDSS_DR12",
    n_templates: int = 6,
    frac: float = 0.37,
    velscale_ratio: int = 1,
    lam_max: float = 7400.0,
) -> RealSpectrum:
    """One ppxf SDSS DR12 spectrum (``loglam``, ``wdisp`` columns) and ``n_templates`` E-MILES SSPs spread over age and metallicity."""
    import ppxf.ppxf_util as util
    from astropy.io import fits

    d = ppxf_dir()
    with fits.open(d / "spectra" / f"{name}.fits") as hdu:
        t = hdu["COADD"].data
        flux = np.asarray(t["flux"], dtype=np.float64)
        loglam = np.asarray(t["loglam"])
        wdisp = np.asarray(t["wdisp"], dtype=np.float64)
        z = float(hdu["SPECOBJ"].data["Z"][0])
    ln_lam_gal = loglam.astype(np.float64) * np.log(10)
    keep = np.exp(ln_lam_gal) < lam_max
    ln_lam_gal, flux, wdisp = ln_lam_gal[keep], flux[keep], wdisp[keep]
    galaxy = flux / np.median(flux)
    noise = np.full_like(galaxy, 0.0156)
    lam_gal = np.exp(ln_lam_gal)
    velscale = float(C_KMS * np.diff(ln_lam_gal[[0, -1]])[0] / (ln_lam_gal.size - 1))
    dlam = np.append(np.diff(lam_gal), np.diff(lam_gal)[-1])
    fwhm_gal = 2.355 * wdisp * dlam

    files = sorted(glob.glob(str(d / "miles_models" / "Eun1.30Z*.fits")))
    pick = np.linspace(0, len(files) - 1, n_templates).round().astype(int)
    fwhm_tem = 2.51
    with fits.open(files[0]) as hdu:
        h2 = hdu[0].header
    lam_temp = h2["CRVAL1"] + h2["CDELT1"] * np.arange(h2["NAXIS1"])
    good = (lam_temp > 3500) & (lam_temp < 1e4)
    lam_temp = lam_temp[good]
    # the templates' wavelengths scaled by exp(eps) (a zero-point shift, the same for both
    # codes) so that galaxy pixel 0 sits at template position n + frac
    dln = velscale / velscale_ratio / C_KMS
    ln0 = log_rebin(lam_temp[[0, -1]], lam_temp, velscale / velscale_ratio)[1][0]
    u0 = (ln_lam_gal[0] - ln0) / dln
    eps = ((u0 - np.floor(u0)) - frac) * dln
    lam_range = lam_temp[[0, -1]] * np.exp(eps)
    fwhm_g = np.interp(lam_temp, lam_gal, fwhm_gal)
    sig = np.sqrt((fwhm_g**2 - fwhm_tem**2).clip(0)) / 2.355 / h2["CDELT1"]
    cols = []
    for j in pick:
        with fits.open(files[j]) as hdu:
            ssp = np.asarray(hdu[0].data, dtype=np.float64)[good]
        ssp = util.gaussian_filter1d(ssp, sig)
        new, ln_lam_temp = log_rebin(lam_range, ssp, velscale / velscale_ratio)
        cols.append(new / np.median(new[new > 0]))
    templates = np.array(cols).T
    goodpixels = util.determine_goodpixels(ln_lam_gal, np.exp(ln_lam_temp[[0, -1]]), z)
    return RealSpectrum(
        name,
        galaxy,
        noise,
        ln_lam_gal,
        templates,
        np.asarray(ln_lam_temp, dtype=np.float64),
        velscale,
        np.asarray(goodpixels),
        z,
    )


def run_ppxf(
    sp: RealSpectrum,
    start,
    *,
    fixed: bool,
    degree: int = -1,
    mdegree: int = 0,
    moments: int = 2,
    velscale_ratio: int = 1,
):
    """pPXF on the spectrum with ``lam``/``lam_temp`` given (pPXF then computes ``vsyst``)."""
    from ppxf.ppxf import ppxf

    return ppxf(
        sp.templates,
        sp.galaxy,
        sp.noise,
        sp.velscale,
        list(start),
        goodpixels=sp.goodpixels,
        moments=moments,
        degree=degree,
        mdegree=mdegree,
        lam=np.exp(sp.ln_lam_gal),
        lam_temp=np.exp(sp.ln_lam_temp),
        quiet=True,
        fixed=[1] * len(start) if fixed else None,
        velscale_ratio=velscale_ratio,
    )
