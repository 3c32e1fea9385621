"""From an IFU cube in FITS to a populated cube store, in one call.

:func:`store_from_ifu_cube` chains the single-purpose steps: read the cube
(:mod:`~nnfit.spectral.ifu_cube`), bin it (:mod:`~nnfit.spectral.binning`), log-rebin the bin
spectra to a velocity step (:mod:`~nnfit.spectral.logrebin`), de-redshift, load and
resolution-match the templates on an aligned finer grid (:mod:`~nnfit.spectral.templates`),
mask lines (:mod:`~nnfit.spectral.linemask`), turn kinematics into LOSVDs
(:mod:`~nnfit.spectral.kinematics`), and writes the store with
:class:`~nnfit.spectral.store.H5Manager` plus what the maps need:

    /BinNum, /XPix, /YPix     spaxel -> bin (from the binning)
    /BinMask (S, L) bool      per-bin fitted pixels (False where no spaxel of the bin had data)
    /Kinematics/{V,sigma,h3,h4} (S,)  when the LOSVDs came from moments (pPXF convention)
    attrs ifu_json            source file, redshift, frame "rest", medium, flux unit (the
                              file's and the store's: a flux density per unit frequency, such
                              as JWST's MJy/sr, is converted to one per Angstrom), velscale,
                              velscale ratio, spatial shape, the celestial WCS header, the
                              file format, the data, noise and DQ extensions read (with the DQ
                              rule) and the LSF

Pixels a bin lacks are stored as data 0 with a noise ``1e10`` times the bin's largest, so they
carry no weight in any fit; ``/BinMask`` says which they are.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.spectral.model import C_KMS
from nnfit.spectral.placement import HALF_WIDTH

__all__ = ["store_from_ifu_cube"]

log = logging.getLogger(__name__)

_MISSING_NOISE = 1e10


def _per_wavelength(bunit: str, wave: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(factor at each wavelength, new unit) turning a flux density per unit frequency into
    one per Angstrom, or None when ``bunit`` is not per unit frequency (or unreadable).

    JWST's cubes are in MJy/sr. The templates are per unit wavelength, and
    ``f_lambda = f_nu c / lambda^2`` tilts a spectrum by ``lambda^-2``: fitted as it is, an f_nu
    spectrum looks redder, older and more metal-rich than it is.

    Examples
    --------
    >>> f, unit = _per_wavelength("MJy/sr", np.array([20000.0]))
    >>> unit, f"{f[0]:.5e}"   # 1 MJy = 1e-17 erg/s/cm^2/Hz, times c / (2 micron)^2
    ('erg / (Angstrom s sr cm2)', '7.49481e-08')
    >>> _per_wavelength("1E-17 erg/s/cm^2/Ang/spaxel", np.array([5000.0])) is None
    True
    """
    import warnings

    import astropy.units as u

    with warnings.catch_warnings():  # FITS discourages some spellings; only the unit matters
        warnings.simplefilter("ignore", u.UnitsWarning)
        try:
            unit = u.Unit(bunit.strip(), parse_strict="raise")
        except (ValueError, TypeError):
            return None
    f_lambda = u.erg / u.s / u.cm**2 / u.AA
    lam = np.asarray(wave, dtype=np.float64) * u.AA
    for per in (u.sr, u.dimensionless_unscaled):  # a surface brightness (MJy/sr) or a flux
        if unit.is_equivalent(u.MJy / per):
            scale = unit.to(u.MJy / per)
            factor = scale * (1.0 * u.MJy).to_value(f_lambda, u.spectral_density(lam))
            return np.asarray(factor, dtype=np.float64), (f_lambda / per).to_string()
    return None


#: Survey formats whose cubes are resampled from fibres, with what is known of the covariance.
_CORRELATED_SURVEYS = {
    "manga": "MaNGA: ALPHA = 1.62, the MaNGA DAP's calibration",
    "califa": "CALIFA: ALPHA = 1.07, Garcia-Benito et al. 2015, Eq. 1",
    "sami": "SAMI: its COVAR extension, which nnfit does not read, gives the covariance",
}


def store_from_ifu_cube(
    cube_path: str | os.PathLike[str],
    templates: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    redshift: float = 0.0,
    target_sn: float | None = None,
    bin_map: np.ndarray | None = None,
    min_sn: float = 1.0,
    covariance: float = 0.0,
    lam_range: tuple[float, float] | None = None,
    x_range: tuple[int, int] | None = None,
    y_range: tuple[int, int] | None = None,
    velscale: float | None = None,
    velscale_ratio: int = 2,
    fwhm_gal: float | Callable[[np.ndarray], np.ndarray] | str | os.PathLike[str] | None = "auto",
    fwhm_tem: float | os.PathLike[str] | None = None,
    normalisation: str = "light",
    norm_range: tuple[float, float] = (5070.0, 5950.0),
    age_range: tuple[float, float] | None = None,
    metal_range: tuple[float, float] | None = None,
    template_pattern: str = "*.fits",
    lines: Any = None,
    kinematics: dict[str, np.ndarray] | str | None = None,
    losvd: tuple[np.ndarray, np.ndarray] | None = None,
    ppxf_moments: int = 2,
    ppxf_degree: int = 4,
    margin_kms: float = 2000.0,
    kernel: str = "fourier",
    medium: str | None = None,
    data_ext: str | int | None = None,
    var_ext: str | int | None = None,
    noise_ext: str | int | None = None,
    ivar_ext: str | int | None = None,
    dq_ext: str | int | None = "auto",
    overwrite: bool = False,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a cube store from a FITS IFU cube and an SSP library.

    Parameters
    ----------
    cube_path : path
        FITS cube (see :func:`nnfit.spectral.ifu_cube.read_ifu_cube`).
    templates : path
        pPXF SPS ``.npz`` or folder of MILES/E-MILES FITS.
    out : path
        Store to write (``.h5``); written whole or not at all.
    redshift : float
        Spectra are de-redshifted by ``1 + redshift`` (the store is in the rest frame).
    target_sn : float, optional
        Voronoi target S/N per pixel; None = one bin per usable spaxel.
    bin_map : array (ny, nx), optional
        Your own bins (0..S-1, -1 unused) instead of Voronoi binning.
    min_sn : float
        Spaxels below this mean S/N per pixel are not used.
    covariance : float
        Spatial covariance of the cube's noise (CLI ``--covariance``; GIST's ``COVARIANCE``): a
        bin of ``n`` spaxels has noise ``1 + covariance * log10(n)`` times the root of its
        summed variances, in the Voronoi S/N and in the bin's variance
        (:func:`~nnfit.spectral.binning.covariance_factor`). 0 (the default) treats spaxels as
        independent; :doc:`/spectral/ifu` lists published values.
    lam_range : (float, float), optional
        Observed wavelengths (A) to keep.
    x_range, y_range : (int, int), optional
        Spaxel columns / rows to keep.
    velscale : float, optional
        Log-rebinned pixel (km/s); default the data's (same pixel count over the range).
    velscale_ratio : int
        Template pixels per observed pixel (pPXF's ``velscale_ratio``).
    fwhm_gal : "auto", "muse", float, callable, path or None
        Instrumental FWHM in A at observed wavelengths: ``"muse"`` =
        :func:`~nnfit.spectral.ifu_cube.muse_lsf_fwhm`; a number; a function; a path
        (``pathlib.Path``) to an LSF file of wavelength against FWHM
        (:func:`~nnfit.spectral.lsf.read_lsf_table`, which must cover the cube's selection);
        None = no resolution matching; ``"auto"`` = ``"muse"`` when the header's ``INSTRUME`` is
        MUSE, else the cube's own LSF when it has one (MaNGA's ``LSFPRE`` first: the median
        over the selected spaxels, :meth:`~nnfit.spectral.ifu_cube.IFUCube.lsf_fwhm`), logged
        and recorded in ``ifu_json``; else refused (give the instrument's FWHM).
    fwhm_tem : float or path, optional
        The library's FWHM (A): a number, or a path (``pathlib.Path``) to an LSF file of the
        library's wavelength against its FWHM (:func:`~nnfit.spectral.lsf.read_lsf_table`) for
        a library whose resolution varies; default the library file's, else 2.51 (MILES).
    normalisation, norm_range, age_range, metal_range, template_pattern
        See :func:`nnfit.spectral.templates.load_template_library`.
    lines : list, optional
        Line list for the mask (default :data:`nnfit.spectral.linemask.DEFAULT_LINES`);
        ``[]`` masks nothing.
    kinematics : dict, "ppxf" or None
        Per-bin moments (:func:`~nnfit.spectral.kinematics.read_kinematics_table`), or
        ``"ppxf"`` to measure them with pPXF; None means ``"ppxf"`` unless ``losvd`` is
        given.
    ppxf_moments, ppxf_degree : int
        pPXF's ``moments`` (2: V, sigma; 4: also h3, h4) and additive ``degree`` for
        ``kinematics="ppxf"`` (recorded in ``/Kinematics`` and ``ifu_json``).
    losvd : (losvd (S, V, C), vel_pix (V,)), optional
        Histograms instead of moments (e.g. from an orbit model), velocities in cz km/s.
    margin_kms : float
        Template coverage beyond the observed range on each side (>= largest LOSVD shift,
        ``|V| + 5 sigma``; CLI ``--template-margin``): raise it for galaxies broader than
        about 400 km/s. Kinematics tables and LOSVD histograms widen it as they need.
    kernel : {"fourier", "linear"}
        The store's model (:class:`~nnfit.spectral.cube_operator.CubeOperator`): ``"fourier"``,
        the exact band-limited one (pPXF's), with LOSVDs from moments on pPXF's log-velocity
        grid; ``"linear"`` the original one (needed by ``nnfit spectral build``/Kaczmarz).
    medium : {"air", "vacuum"}, optional
        Wavelength medium of the cube, needed only when its ``CTYPE3`` says neither (CLI
        ``--medium-obs``).
    data_ext, var_ext, noise_ext, ivar_ext, dq_ext : optional
        FITS extensions (see :func:`~nnfit.spectral.ifu_cube.read_ifu_cube`): pixels the DQ
        extension flags (``"auto"``: ``QUALDATA``, ``DQ``, ``BADPIX`` or ``MASK`` when the file
        has one, by the file format's rule; None: none) are excluded like pixels without a
        valid variance.
    overwrite : bool
        Replace ``out`` if it exists.
    scheduler : optional
        Where pPXF's per-bin kinematics run: None here, a bin at a time per CPU; a
        ``dask.distributed`` scheduler address or client (:mod:`nnfit.parallel`).
    progress : callable, optional
        ``progress(done, total)`` after each bin's pPXF fit (``kinematics="ppxf"``), the long
        step of this function: about 0.7 s per bin and core with 150 E-MILES templates.

    Returns
    -------
    dict
        ``S`` bins, ``L`` pixels, ``T``, ``P``, ``V``, ``velscale``, ``n_masked``,
        ``kinematics`` (source), ``path``, ``dq_ext`` (the DQ extension read, "" when none)
        and ``dq_flagged`` (pixels of the selection it flags).
    """
    from nnfit.io import atomic_path
    from nnfit.io.hdf5 import open_h5
    from nnfit.spectral.binning import (
        BinMap,
        bin_spectra,
        check_covariance,
        covariance_factor,
        spaxel_signal_noise,
        voronoi_bins,
    )
    from nnfit.spectral.ifu_cube import muse_lsf_fwhm, read_ifu_cube
    from nnfit.spectral.kinematics import (
        N_SIGMA,
        KinematicsAtBoundError,
        losvd_from_kinematics,
        ppxf_kinematics,
    )
    from nnfit.spectral.linemask import DEFAULT_LINES, line_mask
    from nnfit.spectral.logrebin import log_rebin
    from nnfit.spectral.lsf import LSFTable, read_lsf_table
    from nnfit.spectral.manager import H5Manager
    from nnfit.spectral.templates import load_template_library

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if kinematics is not None and losvd is not None:
        raise ValueError("give kinematics or losvd, not both")
    if int(velscale_ratio) < 1:
        raise ValueError(f"velscale_ratio must be an integer >= 1; got {velscale_ratio}")
    ratio = int(velscale_ratio)
    covariance = check_covariance(covariance)
    if kinematics is None and losvd is None:
        kinematics = "ppxf"
    if ppxf_moments not in (2, 4):
        raise ValueError(f"ppxf_moments must be 2 (V, sigma) or 4 (+ h3, h4); got {ppxf_moments}")
    if not float(margin_kms) > 0:
        raise ValueError(f"margin_kms (--template-margin) must be > 0 km/s; got {margin_kms}")
    if int(ppxf_degree) < -1:
        raise ValueError(f"ppxf_degree must be >= -1 (-1: no polynomial); got {ppxf_degree}")
    if kinematics != "ppxf" and (ppxf_moments, ppxf_degree) != (2, 4):
        raise ValueError(
            "ppxf_moments/ppxf_degree apply to kinematics measured with pPXF; drop them or use "
            "kinematics='ppxf'"
        )
    if isinstance(kinematics, dict):
        margin_kms = max(
            margin_kms, float(np.max(np.abs(kinematics["V"]) + 6 * kinematics["sigma"]))
        )
    elif losvd is not None:
        margin_kms = max(margin_kms, float(np.max(np.abs(losvd[1]))) + 300.0)
    zf = 1.0 + float(redshift)

    cube = read_ifu_cube(
        cube_path,
        data_ext=data_ext,
        var_ext=var_ext,
        noise_ext=noise_ext,
        ivar_ext=ivar_ext,
        dq_ext=dq_ext,
        lam_range=lam_range,
        x_range=x_range,
        y_range=y_range,
        medium=medium,
    )
    _, ny, nx = cube.shape
    # the LSF before the DQ count and the binning, which read the whole cube: a refusal
    # comes at once
    own_lsf = None  # the cube's own LSF, tabulated at the observed wavelengths
    if fwhm_gal == "auto":
        if cube.instrument.upper() == "MUSE":
            fwhm_gal = "muse"
            log.info("%s: INSTRUME is MUSE: templates matched to MUSE's LSF", cube.path)
        else:
            own_lsf = cube.lsf_fwhm()
            if own_lsf is None:
                raise ValueError(
                    f"{cube.path}: --fwhm: INSTRUME is {cube.instrument or 'missing'!r}, not MUSE, "
                    "and it has no spectral-resolution extension (MaNGA's LSFPRE, ...); give "
                    "the instrument's FWHM in Angstrom (--fwhm 2.5) or an LSF file, or "
                    "--fwhm none to skip matching"
                )
            per_spaxel = own_lsf[0] not in ("PRESPECRES", "SPECRES")
            lsf_words = f"{own_lsf[0]}, " + (
                "median over the selected spaxels" if per_spaxel else "lambda / R"
            )
            log.info(
                "%s: templates matched to the cube's own LSF (extension %s): FWHM %.2f-%.2f A "
                "observed, %.2f-%.2f A in the rest frame (z = %g)",
                cube.path,
                lsf_words,
                float(own_lsf[1].min()),
                float(own_lsf[1].max()),
                float(own_lsf[1].min()) / zf,
                float(own_lsf[1].max()) / zf,
                redshift,
            )
            fwhm_gal = LSFTable(cube.wave, own_lsf[1], source=f"cube extension {lsf_words}")
    if isinstance(fwhm_gal, os.PathLike):
        fwhm_gal = read_lsf_table(fwhm_gal)
    if isinstance(fwhm_gal, LSFTable):
        fwhm_gal.check_covers(float(cube.wave[0]), float(cube.wave[-1]))
    if isinstance(fwhm_gal, str):
        if fwhm_gal != "muse":
            raise ValueError(
                f"fwhm_gal must be 'muse', a number, a function or None; got {fwhm_gal!r}"
            )
        fwhm_rest = lambda lam: muse_lsf_fwhm(lam * zf) / zf  # noqa: E731
    elif callable(fwhm_gal):
        fwhm_rest = lambda lam: np.asarray(fwhm_gal(lam * zf)) / zf  # noqa: E731
    elif fwhm_gal is None:
        fwhm_rest = None
    else:
        fwhm_rest = float(fwhm_gal) / zf
    n_dq = cube.n_flagged()
    if cube.dq_name:
        log.info(
            "%s: extension %r (%s) flags %d of the selection's %d pixels (excluded)",
            cube.path,
            cube.dq_name,
            cube.dq_rule,
            n_dq,
            int(np.prod(cube.shape)),
        )
    signal, noise, usable = spaxel_signal_noise(cube)
    if bin_map is not None:
        bins = BinMap.from_map(bin_map)
        if bins.bin_map.shape != (ny, nx):
            raise ValueError(
                f"bin map shape {bins.bin_map.shape} differs from the selected cube's {(ny, nx)}"
            )
    else:
        bins = voronoi_bins(signal, noise, usable, target_sn, min_sn=min_sn, covariance=covariance)
    shared = np.bincount(bins.binnum).max() > 1
    if shared and not covariance and cube.file_format in _CORRELATED_SURVEYS:
        log.warning(
            "%s: neighbouring spaxels of a resampled cube share noise, so bins reach their "
            "S/N only on paper and their variance is too small; --covariance ALPHA corrects "
            "both (%s; see the IFU docs)",
            cube.path,
            _CORRELATED_SURVEYS[cube.file_format],
        )
    flux_lin, var_lin = bin_spectra(cube, bins, covariance=covariance)
    S = bins.n_bins
    with np.errstate(invalid="ignore"):
        has_data = (np.isfinite(flux_lin) & np.isfinite(var_lin) & (var_lin > 0)).any(axis=1)
    if not has_data.all():
        # pPXF would fail on such a bin or return its starting guess as kinematics
        empty = np.flatnonzero(~has_data)
        shown = ", ".join(str(b) for b in empty[:10]) + (", ..." if empty.size > 10 else "")
        raise ValueError(
            f"bin map (--bin-map): bin(s) {shown} have no pixel with finite data "
            "and a valid variance over the selection (every spaxel NaN or flagged); mark their "
            "spaxels -1 (unused) or merge them into neighbouring bins"
        )
    log.info("%d bins from %d spaxels", S, bins.binnum.size)
    bunit = cube.bunit
    per_lambda = _per_wavelength(cube.bunit, cube.wave)
    if per_lambda is not None:
        factor, bunit = per_lambda
        flux_lin *= factor
        var_lin *= factor**2
        log.info(
            "%s: BUNIT = %r is a flux density per unit frequency; converted to %s "
            "(f_lambda = f_nu c / lambda^2), per unit wavelength like the templates",
            cube.path,
            cube.bunit,
            bunit,
        )

    flux, var, ln_obs, vs = log_rebin(cube.wave, flux_lin, velscale=velscale, variance=var_lin)
    del flux_lin, var_lin
    ln_rest = ln_obs - np.log(zf)
    dlog = vs / C_KMS
    dlog_t = dlog / ratio
    # Template grid: aligned with the observed pixel edges, `ratio` pixels per observed pixel.
    # ... plus the exact model's band-limited tail and the store's 2-pixel safety pad.
    m = int(np.ceil(margin_kms / C_KMS / dlog_t)) + HALF_WIDTH + 4
    edge0 = ln_rest[0] - 0.5 * dlog
    j = np.arange(-m, ln_rest.size * ratio + m + 1)
    tem_edges = edge0 + j * dlog_t
    lo, hi = np.exp(tem_edges[0]), np.exp(tem_edges[-1])
    if not (norm_range[0] < hi and norm_range[1] > lo):
        # the default V band misses a near-infrared cube (JWST) altogether
        a, b = np.exp(ln_rest[0] + np.array([0.4, 0.6]) * (ln_rest[-1] - ln_rest[0]))
        raise ValueError(
            f"{cube.path}: --norm-range {norm_range[0]:g} {norm_range[1]:g} (the band the "
            "templates' light is measured in, rest-frame Angstrom) lies outside the templates' "
            f"grid, the spectra plus the LOSVD margin, {lo:.0f}-{hi:.0f} A; give a band inside "
            f"it, e.g. the middle fifth of the spectra: --norm-range {a:.0f} {b:.0f}"
        )
    lib = load_template_library(
        templates,
        tem_edges,
        fwhm_gal=fwhm_rest,
        fwhm_tem=read_lsf_table(fwhm_tem) if isinstance(fwhm_tem, os.PathLike) else fwhm_tem,
        normalisation=normalisation,
        norm_range=norm_range,
        age_range=age_range,
        metal_range=metal_range,
        medium=cube.medium,
        pattern=template_pattern,
    )
    tem_pix = lib.ln_lam
    templates_TP = lib.templates.reshape(tem_pix.size, -1)

    bad = ~(np.isfinite(flux) & np.isfinite(var) & (var > 0))
    mask = line_mask(ln_rest, float(redshift), DEFAULT_LINES if lines is None else lines)
    mask &= ~bad.all(axis=0)
    if not mask.any():
        raise ValueError("every pixel is masked (lines or missing data); widen --lam-range")
    bin_mask = ~bad & mask[None, :]
    sigma = np.sqrt(np.where(bad, 0.0, var))
    flux = np.where(bad, 0.0, flux)
    top = np.max(np.where(bad, 0.0, sigma), axis=1, keepdims=True)
    sigma = np.where(bad, _MISSING_NOISE * np.where(top > 0, top, 1.0), sigma)

    kin = None
    if losvd is not None:
        L_sv, vel_pix = losvd
        if L_sv.shape[0] != S:
            raise ValueError(f"--losvd has {L_sv.shape[0]} spectra; the binning gives {S} bins")
        kin_source = "losvd histograms"
        convention = "cz"
    else:
        if isinstance(kinematics, str):
            if kinematics != "ppxf":
                raise ValueError(f"kinematics must be a table or 'ppxf'; got {kinematics!r}")
            try:
                kin = ppxf_kinematics(
                    flux,
                    sigma,
                    templates_TP,
                    vs,
                    mask,
                    velscale_ratio=ratio,
                    vsyst=C_KMS * (tem_pix[0] - ln_rest[0]),
                    moments=int(ppxf_moments),
                    degree=int(ppxf_degree),
                    vmax=margin_kms,
                    scheduler=scheduler,
                    progress=progress,
                )
            except KinematicsAtBoundError as e:
                # the bin's S/N as --min-sn and --target-sn measure it (vorbin's sum)
                sel = bins.bin_map == e.bin_id
                sn = float(
                    signal[sel].sum()
                    / np.sqrt((noise[sel] ** 2).sum())
                    / covariance_factor(int(sel.sum()), covariance)
                )
                wider = ""
                if e.vmax is not None:  # a fit beyond the margin, maybe a broad galaxy's
                    reach = abs(e.V) + N_SIGMA * e.sigma
                    need = 500.0 * np.ceil((reach + 500.0) / 500.0)
                    wider = (
                        f"If the galaxy is that broad, keep the templates further out: "
                        f"margin_kms={need:.0f} (CLI --template-margin {need:.0f}). Otherwise: "
                    )
                if bin_map is not None:
                    more = "merge it with its neighbours in --bin-map"
                else:
                    now = "" if target_sn is None else f" (now {target_sn:g})"
                    more = f"raise --min-sn (now {min_sn:g}) or bin spaxels to a --target-sn{now}"
                raise ValueError(
                    f"{e} (S/N {sn:.1f}). {wider}"
                    f"The spectra were de-redshifted by z = {redshift:g}: "
                    "give the galaxy's --redshift if that is not it; a bin of noise needs more "
                    f"signal: {more}; or give kinematics you trust as a --kinematics table"
                ) from None
            kin_source = f"ppxf (moments {int(ppxf_moments)}, degree {int(ppxf_degree)})"
        else:
            kin = kinematics
            kin_source = "table"
        if kin["V"].size != S:
            raise ValueError(
                f"kinematics has {kin['V'].size} rows; the binning gives {S} bins (BIN_ID 0..{S - 1})"
            )
        L_sv, vel_cz = losvd_from_kinematics(kin, dlog_t)
        if kernel == "fourier":  # the same bins in pPXF's log-velocity, where moments live
            vel_pix, convention = C_KMS * np.log1p(vel_cz / C_KMS), "ppxf"
        else:
            vel_pix, convention = vel_cz, "cz"

    info_json = {
        "source": str(Path(cube_path).resolve()),
        "redshift": float(redshift),
        "frame": "rest",
        "medium": cube.medium,
        "bunit": bunit,
        "bunit_file": cube.bunit,
        "velscale_kms": vs,
        "velscale_ratio": ratio,
        "spatial_shape": [ny, nx],
        "celestial_header": cube.celestial_header,
        "lam_range_observed": [float(np.exp(ln_obs[0])), float(np.exp(ln_obs[-1]))],
        "kinematics": kin_source,
        "target_sn": target_sn,
        "covariance": covariance,
        "fwhm_gal": (
            f"cube extension {lsf_words}"
            if own_lsf is not None
            else fwhm_gal
            if isinstance(fwhm_gal, str | float | int | None)
            else f"LSF file {fwhm_gal.source}"
            if isinstance(fwhm_gal, LSFTable)
            else "function"
        ),
        "fwhm_templates": (
            f"LSF file {fwhm_tem}" if isinstance(fwhm_tem, os.PathLike) else lib.fwhm_tem
        ),
        "instrument": cube.instrument,
        "format": cube.file_format,
        "data": cube.data_name,
        "noise": f"{cube.noise_name} ({cube.noise_kind})",
        "dq": (
            {"extension": cube.dq_name, "rule": cube.dq_rule, "flagged": n_dq}
            if cube.dq_name
            else None
        ),
    }
    with atomic_path(out, suffix=".h5") as tmp:
        tmp.unlink(missing_ok=True)  # H5Manager creates the file itself
        mgr = H5Manager(tmp, tem_pix, ln_rest)
        mgr.set_velocity_grid(vel_pix)
        mgr.populate_from_arrays(
            L_sv,
            flux,
            lib.templates,
            mask=mask,
            xpix=bins.xpix,
            ypix=bins.ypix,
            binnum=bins.binnum,
            noise=sigma,
            datacube_layout="SL",
            template_meta=lib.meta(),
            kernel=kernel,
            convention=convention,
            medium_obs=cube.medium,
            medium_templates=lib.medium,
            # Unit LOSVDs from moments: each bin's kernels carry its mean flux, so one global
            # x can describe every bin; histograms from an orbit model carry their own light.
            flux_scale="data" if kin is not None else None,
        )
        with open_h5(tmp, "a") as f:
            f.create_dataset("BinMask", data=bin_mask, dtype=bool)
            if kin is not None:
                g = f.create_group("Kinematics")
                for k in ("V", "sigma", "h3", "h4"):
                    g.create_dataset(k, data=np.asarray(kin[k], dtype=np.float64))
                g.attrs["convention"] = "ppxf: V = c ln(1+z) relative to the store's redshift"
                g.attrs["source"] = kin_source
                if kinematics == "ppxf":
                    g.attrs["ppxf_moments"] = int(ppxf_moments)
                    g.attrs["ppxf_degree"] = int(ppxf_degree)
            f.attrs["ifu_json"] = json.dumps(info_json)
    return {
        "kernel": kernel,
        "path": out,
        "S": S,
        "L": ln_rest.size,
        "T": tem_pix.size,
        "P": templates_TP.shape[1],
        "V": vel_pix.size,
        "velscale": vs,
        "n_masked": int((~mask).sum()),
        "kinematics": kin_source,
        "spaxels": int(bins.binnum.size),
        "dq_ext": cube.dq_name,
        "dq_flagged": n_dq,
    }
