"""Synthetic MUSE cubes made of real E-MILES SSPs on the real minicube's grid and variance.

Shared by ``test_ifu_end_to_end.py`` and ``bench/ifu_regul_rule.py`` (the simulations on which
the regularisation rule was decided). Spectra are built only with pPXF/SciPy: each SSP smoothed
to a constant MUSE FWHM at rest, log-rebinned (pPXF), convolved with a Gaussian LOSVD,
redshifted, integrated over the MUSE pixels and normalised to mean 1 over 5070-5950 A at rest;
a spaxel is ``amp * sum_k f_k SSP_k`` with light fractions ``f_k`` in that band, plus noise
drawn from the real STAT variance. The store is built by ``store_from_ifu_cube`` on Voronoi
bins, with the true kinematics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

C_KMS = 299792.458
Z = 0.0863  # Abell 478's brightest cluster galaxy
SIGMA_KMS = 250.0
SIGNAL_SCALE = 4.0  # synthetic flux = 4x the real galaxy's mean, the variance stays the real one
FWHM_MUSE = 3.0  # A, constant instrumental FWHM used by the generator and given to init
PATTERN = "Eun1.30Z[mp]0.[024]*.fits"  # [M/H] = -0.40, 0.00, +0.22; with ages 1-16 Gyr: 39
# The end-to-end test's populations (seed 13): an old metal-rich SSP dominating the centre and
# a young metal-poor one outside.
OLD = (10.0, 0.22)  # Gyr, [M/H]
YOUNG = (1.9953, -0.40)
TEST_SEED = 13


def old_young(yy, xx):
    """Light fractions (2, ny, nx) of OLD and YOUNG in the band, radial."""
    r = np.hypot(xx - 20.0, yy - 19.0) / 28.0
    f_old = np.clip(0.9 - 0.7 * r, 0.2, 0.9)  # light fraction of the old SSP in the band
    return np.stack([f_old, 1 - f_old])


def paths() -> tuple[Path, Path]:
    """(the mpdaf minicube, pPXF's E-MILES folder)."""
    import mpdaf
    import ppxf

    return (
        Path(mpdaf.__file__).parent / "data" / "sdetect" / "minicube.fits",
        Path(ppxf.__file__).parent / "miles_models",
    )


def ssp_file(age: float, metal: float) -> Path:
    from ppxf.miles_util import age_metal

    for f in paths()[1].glob("Eun1.30Z*.fits"):
        if age_metal(str(f)) == (age, metal):
            return f
    raise AssertionError(f"no E-MILES file for {age} Gyr, [M/H] {metal}")


def observed_spectrum(path: Path, wave_obs: np.ndarray) -> np.ndarray:
    """A real SSP as MUSE sees it (see the module docstring)."""
    from astropy.io import fits
    from ppxf.ppxf_util import log_rebin
    from scipy.ndimage import gaussian_filter1d

    h = fits.getheader(path)
    lam = h["CRVAL1"] + h["CDELT1"] * np.arange(h["NAXIS1"])
    ssp = fits.getdata(path).astype(np.float64)
    sig_a = np.sqrt((FWHM_MUSE / (1 + Z)) ** 2 - 2.51**2) / np.sqrt(8 * np.log(2))
    ssp = gaussian_filter1d(ssp, sig_a / h["CDELT1"])
    t, ln_lam, vs = log_rebin(lam[[0, -1]], ssp)
    t = gaussian_filter1d(t, SIGMA_KMS / vs)
    band = (np.exp(ln_lam) >= 5070) & (np.exp(ln_lam) <= 5950)
    t /= t[band].mean()
    d = vs / C_KMS
    edges = np.exp(np.concatenate([ln_lam - d / 2, [ln_lam[-1] + d / 2]]) + np.log1p(Z))
    cum = np.concatenate([[0.0], np.cumsum(t * np.diff(edges))])
    e_obs = np.concatenate([wave_obs - 0.625, [wave_obs[-1] + 0.625]])
    return np.diff(np.interp(e_obs, edges, cum)) / 1.25


def synthetic_store(
    out_dir: Path,
    ssps: list[tuple[float, float]],
    fractions,
    *,
    seed: int,
    noisy: bool = True,
    target_sn: float = 60.0,
    bin_map: np.ndarray | None = None,
    pattern: str = PATTERN,
    signal_scale: float = SIGNAL_SCALE,
) -> dict:
    """Write ``synthetic.fits`` and its store; return the store and the per-bin truth.

    ``fractions(yy, xx) -> (K, ny, nx)``: light fractions of the ``ssps`` (age Gyr, [M/H]),
    summing to 1 in every spaxel. ``bin_map`` (ny, nx): these bins instead of Voronoi bins at
    ``target_sn`` (e.g. a noisy cube's bins for its noise-free twin). ``pattern``: the E-MILES
    files of the store's template grid. ``signal_scale``: the synthetic flux in units of the
    real galaxy's mean (the variance stays the real one), so ``k`` times it with ``k`` times
    ``target_sn`` gives about the same bins at ``k`` times the S/N.
    """
    from astropy.io import fits

    from nnfit.spectral.binning import BinMap, spaxel_signal_noise, voronoi_bins
    from nnfit.spectral.ifu_cube import read_ifu_cube
    from nnfit.spectral.ifu_store import store_from_ifu_cube

    minicube, miles = paths()
    real = read_ifu_cube(minicube)
    wave = real.wave
    data = np.asarray(real.flux, dtype=np.float64)
    var = np.asarray(real.variance, dtype=np.float64)
    _, ny, nx = data.shape
    spectra = np.stack([observed_spectrum(ssp_file(a, m), wave) for a, m in ssps])  # (K, L)
    sel = (wave >= 4800) & (wave <= 7000)
    amp = signal_scale * np.clip(np.nanmean(data[sel], axis=0), 1.0, None)  # (ny, nx)
    yy, xx = np.mgrid[:ny, :nx]
    f = np.asarray(fractions(yy, xx), dtype=np.float64)  # (K, ny, nx)
    model = amp * np.einsum("kl,kyx->lyx", spectra, f)
    rng = np.random.default_rng(seed)
    synth = model + noisy * rng.normal(size=model.shape) * np.sqrt(np.where(var > 0, var, 0.0))
    synth[~np.isfinite(data)] = np.nan
    hdr = fits.getheader(minicube, "DATA")
    out_dir.mkdir(parents=True, exist_ok=True)
    cube_path = out_dir / "synthetic.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(synth.astype(np.float32), hdr, name="DATA"),
            fits.ImageHDU(var.astype(np.float32), hdr, name="STAT"),
        ]
    ).writeto(cube_path, overwrite=True)

    cube = read_ifu_cube(cube_path, lam_range=(4800, 7000))
    if bin_map is None:
        s, n, ok = spaxel_signal_noise(cube)
        bins = voronoi_bins(s, n, ok, target_sn)
    else:
        bins = BinMap.from_map(bin_map)
    S = bins.n_bins
    kin = {"V": np.zeros(S), "sigma": np.full(S, SIGMA_KMS), "h3": np.zeros(S), "h4": np.zeros(S)}
    store = out_dir / "synthetic.h5"
    store_from_ifu_cube(
        cube_path,
        miles,
        store,
        redshift=Z,
        bin_map=bins.bin_map,
        lam_range=(4800, 7000),
        fwhm_gal=FWHM_MUSE,
        template_pattern=pattern,
        age_range=(1, 16),
        kinematics=kin,
        overwrite=True,
    )
    # Truth per bin: light-in-band fractions summed over the bin's spaxels.
    y, x = bins.ypix.astype(int), bins.xpix.astype(int)
    light = np.bincount(bins.binnum, amp[y, x], S)
    F = np.stack([np.bincount(bins.binnum, (amp * fk)[y, x], S) / light for fk in f])  # (K, S)
    lg = np.log10([a for a, _ in ssps]) + 9.0
    mh = np.array([m for _, m in ssps])
    return {
        "store": store,
        "cube": cube_path,
        "S": S,
        "lg_age": lg @ F,
        "metal": mh @ F,
        "F": F,
        "bins": bins,
    }
