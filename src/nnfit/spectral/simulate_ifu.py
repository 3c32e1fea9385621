"""A synthetic IFU cube as the files astronomers have: FITS cube, SSP library, LOSVDs.

:func:`write_ifu_demo` turns :func:`nnfit.spectral.simulate.simulate_cube` into

* ``cube.fits``: MUSE-style ``DATA`` + ``STAT`` extensions ``(L, ny, nx)`` with a celestial
  TAN WCS and a linear air-wavelength axis (``CTYPE3 = 'AWAV'``),
* ``templates.npz``: the simulated templates in pPXF's SPS library format,
* ``losvd.npz``: the true LOSVD histograms of every spaxel (``losvd``, ``vel_pix``),
* ``truth.npz``: the true weights ``x_true (C, P)`` and the spaxel light ``amplitude (S, C)``,

so that the whole FITS path (``nnfit spectral init cube.fits --templates templates.npz --losvd
losvd.npz ...``, ``nnfit spectral fit``, ``nnfit spectral maps``) runs on data with a known answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.spectral.model import C_KMS

__all__ = ["write_ifu_demo"]


def write_ifu_demo(
    out_dir: str | os.PathLike[str],
    *,
    n_side: int = 6,
    n_components: int = 2,
    population_grid: tuple[int, int] = (3, 5),
    snr: float = 50.0,
    seed: int = 0,
    trim_kms: float = 4500.0,
) -> dict[str, Any]:
    """Write a simulated IFU cube with its template library and LOSVDs as real file formats.

    Parameters
    ----------
    out_dir : path
        Folder for ``cube.fits``, ``templates.npz``, ``losvd.npz`` and ``truth.npz``.
    n_side : int
        The cube has ``n_side x n_side`` spaxels (``simulate_cube``'s spaxel layout).
    n_components : int
        LOSVD components C.
    population_grid : (int, int)
        (n_metallicity, n_age) of the SSP-like templates.
    snr : float
        Median S/N per pixel of each spaxel.
    seed : int
        Random seed.
    trim_kms : float
        Observed pixels within this velocity of either end are left out of the cube, so the
        templates cover the cube plus every LOSVD shift with room for the exact model.

    Returns
    -------
    dict
        Paths (``cube``, ``templates``, ``losvd``, ``truth``) and ``lam_range`` (A) of the
        cube; pass ``--fwhm none --no-line-mask`` to ``nnfit spectral init`` (the templates carry
        no instrumental resolution and the spectra no emission lines).

    Examples
    --------
    >>> import tempfile
    >>> info = write_ifu_demo(tempfile.mkdtemp(), n_side=2, n_components=1)
    >>> sorted(k for k in info if k != "lam_range")
    ['cube', 'losvd', 'templates', 'truth']
    """
    from astropy.io import fits

    from nnfit.io import atomic_path
    from nnfit.spectral.simulate import simulate_cube

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nZ, nA = population_grid
    S = n_side * n_side
    sim = simulate_cube(
        S,
        n_components,
        nZ * nA,
        n_tem_pix=4000,
        n_obs_pix=600,
        snr=snr,
        seed=seed,
        population_grid=(nZ, nA),
        vmax=600.0,
    )
    lam = np.exp(sim.obs_pix)
    dlam = float(np.mean(np.diff(lam)))
    keep = (sim.obs_pix >= sim.obs_pix[0] + trim_kms / C_KMS) & (
        sim.obs_pix <= sim.obs_pix[-1] - trim_kms / C_KMS
    )
    i0 = int(np.flatnonzero(keep)[0])
    data = sim.datacube[:, keep].T.reshape(-1, n_side, n_side)  # (L, y, x): s = y * n + x
    var = (sim.noise_sigma[:, keep] ** 2).T.reshape(-1, n_side, n_side)
    hdr = fits.Header()
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRVAL1"], hdr["CRVAL2"] = 150.0, 2.0
    hdr["CRPIX1"] = hdr["CRPIX2"] = (n_side + 1) / 2.0
    hdr["CD1_1"], hdr["CD2_2"] = -0.2 / 3600.0, 0.2 / 3600.0
    hdr["CUNIT1"] = hdr["CUNIT2"] = "deg"
    hdr["CTYPE3"], hdr["CUNIT3"] = "AWAV", "Angstrom"
    hdr["CRVAL3"], hdr["CRPIX3"], hdr["CD3_3"] = float(lam[i0]), 1.0, dlam
    hdr["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    paths = {
        k: out / f"{k}.{ext}"
        for k, ext in (("cube", "fits"), ("templates", "npz"), ("losvd", "npz"), ("truth", "npz"))
    }
    var_hdr = hdr.copy()
    var_hdr["BUNIT"] = "10**(-40)*erg**2/s**2/cm**4/Angstrom**2"  # STAT holds the variance
    with atomic_path(paths["cube"], suffix=".fits") as tmp:
        fits.HDUList(
            [
                fits.PrimaryHDU(),
                fits.ImageHDU(data.astype(np.float32), hdr, name="DATA"),
                fits.ImageHDU(var.astype(np.float32), var_hdr, name="STAT"),
            ]
        ).writeto(tmp, overwrite=True, checksum=True)
    meta = sim.template_meta["axis_values"]
    ages = 10.0 ** np.asarray(meta["log_age"])  # Gyr
    tpl = np.ascontiguousarray(sim.templates.transpose(0, 2, 1))  # (T, n_ages, n_metals)
    with atomic_path(paths["templates"], suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            templates=tpl,
            lam=np.exp(sim.tem_pix),
            ages=ages,
            metals=np.asarray(meta["metallicity"]),
            masses=np.ones(tpl.shape[1:]),
            fwhm=np.full(sim.tem_pix.size, 0.01),
        )
    with atomic_path(paths["losvd"], suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, losvd=sim.losvd, vel_pix=sim.vel_pix)
    with atomic_path(paths["truth"], suffix=".npz") as tmp, open(tmp, "wb") as fh:
        # x_true is over the simulator's (metallicity, age) order; ours is (age, metallicity).
        x = sim.x_true.reshape(n_components, nZ, nA).transpose(0, 2, 1).reshape(n_components, -1)
        np.savez(
            fh,
            x_true=x,
            amplitude=sim.gh_params["amplitude"],
            ages=ages,
            metals=np.asarray(meta["metallicity"]),
        )
    return {**paths, "lam_range": (float(lam[keep][0]), float(lam[keep][-1]))}
