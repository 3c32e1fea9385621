"""Population maps of a fitted cube store: FITS with the cube's celestial WCS, and figures.

Weights come from ``/BinFit`` (bins fitted one by one, :mod:`nnfit.spectral.bin_fit`) or, when
absent, from the global fit ``/X_global`` (C, P): then bin ``s`` holds
``w[s, c, p] = x[c, p] * sum_v LOSVD[s, v, c]``, the light its LOSVDs carry.

With templates normalised to light in a band (``template_meta_json`` ``normalisation``
"light") the weights are light fractions there; mass weights are ``w / flux`` per template
(the ``flux`` it was divided by). Means follow pPXF's ``mean_age_metal``:
``<lg age> = sum w lg(age / yr) / sum w`` and ``<[M/H]> = sum w [M/H] / sum w``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["population_maps", "write_maps"]

log = logging.getLogger(__name__)


def _spaxel_image(values: np.ndarray, binnum, xpix, ypix, shape) -> np.ndarray:
    img = np.full(shape, np.nan)
    img[np.asarray(ypix, int), np.asarray(xpix, int)] = values[np.asarray(binnum, int)]
    return img


def population_maps(
    path: str | os.PathLike[str],
    *,
    degree: int | None = None,
    mdegree: int | None = None,
    fit: str | None = None,
) -> dict[str, Any]:
    """Per-bin population quantities of a fitted store.

    Parameters
    ----------
    path : path
        A store with ``/BinFit`` or ``/X_global``.
    degree, mdegree : int, optional
        The continuum polynomial degrees of the fit. Fits record them (with ``regul``; see
        :mod:`nnfit.spectral.fit_record`) and are read back: a value given here that differs
        from the record is refused. Needed only for a global fit stored without a record
        (default then -1 and 0). For a global fit the model is rebuilt with each spaxel's
        polynomials at their optimum for that ``x``
        (:func:`nnfit.spectral.continuum.mpoly_step`); ``/BinFit`` stores its model.
    fit : {"per-bin", "global"}, optional
        Which result to map where the store holds both; default the one written last
        (:func:`nnfit.spectral.fit_record.latest_result`).

    Returns
    -------
    dict
        Per bin (S,): ``chi2``, ``chi2_dof``, ``lg_age_light``, ``lg_age_mass`` (lg yr),
        ``metal_light``, ``metal_mass`` ([M/H]); ``mass_fraction (S, C)``;
        ``light_grid (C, n_ages, n_metals)`` (light fractions summed over bins, total 1);
        ``ages``, ``metals``; ``model (S, L)``, ``data``, ``noise``, ``fitted (S, L)``,
        ``lam_rest (L,)``; ``source`` ("bins" or "global"); the store's ``ifu`` record;
        ``binnum``, ``xpix``, ``ypix``; ``settings`` (the fit's record, with ``regul (S,)``
        per bin for ``/BinFit``).
    """
    from nnfit.io.hdf5 import open_h5
    from nnfit.spectral.fit_record import latest_result, recorded_settings
    from nnfit.spectral.store import load_problem

    prob = load_problem(path)
    meta = prob.template_meta
    if "axis_values" not in meta or "age" not in meta.get("axis_values", {}):
        raise ValueError(
            f"{path}: template_meta_json has no age/metal grid; maps need a store written by "
            "'nnfit spectral init CUBE.fits --templates ...'"
        )
    ages = np.asarray(meta["axis_values"]["age"], dtype=np.float64)
    metals = np.asarray(meta["axis_values"]["metal"], dtype=np.float64)
    flux = np.asarray(meta["flux"], dtype=np.float64).ravel()
    band = np.asarray(meta["band_flux"], dtype=np.float64).ravel()
    S, C, P, L = prob.S, prob.C, prob.P, prob.L
    if ages.size * metals.size != P:
        raise ValueError(f"{path}: grid {ages.size} x {metals.size} != P = {P} templates")
    with open_h5(path, "r") as f:
        ifu = json.loads(f.attrs.get("ifu_json", "{}"))
        bin_mask = f["BinMask"][()] if "BinMask" in f else np.ones((S, L), bool)
        binnum = f["BinNum"][()] if "BinNum" in f else np.arange(S)
        xpix = f["XPix"][()] if "XPix" in f else np.arange(S, dtype=float)
        ypix = f["YPix"][()] if "YPix" in f else np.zeros(S)
        dof = None
        if latest_result(f, fit) == "BinFit":
            g = f["BinFit"]
            w = g["weights"][()]
            model = g["model"][()].astype(np.float64)
            dof = g["dof"][()]
            source, where = "bins", "/BinFit"
            settings = recorded_settings(g.attrs)
            if settings is not None and "regul" in g:
                settings["regul_per_bin"] = g["regul"][()]
        else:
            x = f["X_global"][()].reshape(C, P)
            source, where = "global", "/X_global"
            fp = f.get("Fit/state/X_global_fp")
            fp = b"" if fp is None else bytes(fp[0])
            # an /X_global the Kaczmarz tracker wrote (its run's fingerprint): any record on
            # it is fit_cube's from before, stale
            by_fit_cube = fp == b"" or fp.startswith(b"fit_cube")
            settings = recorded_settings(f["X_global"].attrs) if by_fit_cube else None
    for name, given in (("degree", degree), ("mdegree", mdegree)):
        if settings is not None and given is not None and given != settings[name]:
            raise ValueError(
                f"--{name} {given} contradicts the fit's {name} {settings[name]} recorded on "
                f"{path}:{where}; drop --{name}"
            )
    if settings is not None:
        degree, mdegree = settings["degree"], settings["mdegree"]
    degree = -1 if degree is None else int(degree)
    mdegree = 0 if mdegree is None else int(mdegree)
    if source == "global":
        from nnfit.spectral.cube_operator import CubeOperator

        fs = prob.model_options.get("flux_scale")
        amp = prob.losvd.sum(axis=1) * (1.0 if fs is None else np.asarray(fs)[:, None])
        w = x[None] * amp[:, :, None]
        model = CubeOperator.from_problem(prob).forward(x)
    fitted = bin_mask & prob.mask[None, :]
    noise = prob.noise if prob.noise is not None else np.ones((S, L))
    if source == "global":
        from nnfit.spectral.continuum import with_continuum

        model = with_continuum(model, prob.datacube, fitted / noise, degree, mdegree)
    r = np.where(fitted, (prob.datacube - model) / noise, 0.0)
    if dof is None:  # the global x: its non-zero weights shared by all bins, the polynomials
        dof = fitted.sum(axis=1) - np.count_nonzero(x) / S - (degree + 1) - max(mdegree, 0)
    chi2_dof = (r**2).sum(axis=1) / np.maximum(dof, 1)

    if meta.get("normalisation") == "light":
        w_light = w
    else:
        w_light = w * (band / flux)[None, None, :]
    w_mass = w / flux[None, None, :]
    lg_age = (np.log10(ages) + 9.0)[:, None] * np.ones(metals.size)[None, :]
    met = np.ones(ages.size)[:, None] * metals[None, :]
    lg_age, met = lg_age.ravel(), met.ravel()

    def mean(wt, q):
        tot = wt.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, (wt * q).sum(axis=(1, 2)) / tot, np.nan)

    mass_c = w_mass.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass_fraction = mass_c / mass_c.sum(axis=1, keepdims=True)
    grid = w_light.sum(axis=0).reshape(C, ages.size, metals.size)
    grid = grid / max(grid.sum(), np.finfo(float).tiny)
    return {
        "chi2": (r**2).sum(axis=1),
        "chi2_dof": chi2_dof,
        "lg_age_light": mean(w_light, lg_age),
        "lg_age_mass": mean(w_mass, lg_age),
        "metal_light": mean(w_light, met),
        "metal_mass": mean(w_mass, met),
        "mass_fraction": mass_fraction,
        "light_grid": grid,
        "ages": ages,
        "metals": metals,
        "model": model,
        "data": prob.datacube,
        "noise": noise,
        "fitted": fitted,
        "lam_rest": np.exp(prob.obs_pix),
        "source": source,
        "ifu": ifu,
        "binnum": binnum,
        "xpix": xpix,
        "ypix": ypix,
        "normalisation": meta.get("normalisation", "unknown"),
        "settings": settings
        or {
            "fit": "global" if source == "global" else "per-bin",
            "degree": degree,
            "mdegree": mdegree,
            "regul": "unrecorded",
            "regul_order": 0,
        },
    }


# (EXTNAME, key, label, colour map, FITS unit). "log(yr)" is the FITS Standard's (4.0,
# Sect. 4.3) common logarithm of years; [M/H] has no unit there, and "dex" is how Gaia's
# catalogues write it. astropy's FITS unit parser knows neither: Table.read reports them as
# UnrecognizedUnit.
_MAPS = (
    ("CHI2DOF", "chi2_dof", r"$\chi^2$/dof", "viridis", ""),
    ("LGAGE_L", "lg_age_light", "light-weighted lg(age / yr)", "magma", "log(yr)"),
    ("LGAGE_M", "lg_age_mass", "mass-weighted lg(age / yr)", "magma", "log(yr)"),
    ("MH_L", "metal_light", "light-weighted [M/H] (dex)", "cividis", "dex"),
    ("MH_M", "metal_mass", "mass-weighted [M/H] (dex)", "cividis", "dex"),
)


def write_maps(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    degree: int | None = None,
    mdegree: int | None = None,
    fit: str | None = None,
) -> dict[str, Any]:
    """Write ``maps.fits`` (per-spaxel images with the celestial WCS, per-bin table) and PNGs.

    Files in ``out_dir``:

    ``maps.fits``
        Image extensions ``CHI2DOF, LGAGE_L, LGAGE_M, MH_L, MH_M, BINMAP`` and
        ``MASSFRAC`` (C, ny, nx) on the cube's spaxel grid with its celestial WCS; ``LIGHTGRID``
        (C, n_metals, n_ages) light fractions; table ``BINS`` with one row per bin, tables
        ``AGES`` and ``METALS`` of the grid. Units in ``BUNIT``/``TUNITn`` (``log(yr)``,
        ``dex``, ``Gyr``; ``''`` for pure numbers), the component as WCS axis 3 (``COMP``) of
        ``MASSFRAC`` (with a celestial WCS) and ``LIGHTGRID`` (axes 1-2: rows of ``AGES`` and
        ``METALS``), ``CHECKSUM``/``DATASUM`` in every HDU.
    ``maps.png``
        The five maps and the bin map, on RA/Dec axes drawn from the cube's celestial WCS
        (astropy WCSAxes; spaxel axes when the cube has none).
    ``weights_grid.png``
        Light fraction over age x [M/H], one panel per component.
    ``mass_fractions.png``
        Mass fraction of each component per spaxel.
    ``residuals.png``
        Data, model and normalised residuals of the worst and the median-chi^2 bin.

    ``degree``/``mdegree``/``fit``: see :func:`population_maps`.

    Returns
    -------
    dict
        ``files`` written, ``sky_axes`` (True when the figures have RA/Dec axes from the
        cube's celestial WCS, else spaxel axes) and the per-bin arrays (see
        :func:`population_maps`).
    """
    from astropy.io import fits
    from matplotlib.figure import Figure

    from nnfit.io import atomic_path

    res = population_maps(path, degree=degree, mdegree=mdegree, fit=fit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ifu = res["ifu"]
    S = res["chi2_dof"].size
    C = res["mass_fraction"].shape[1]
    if "spatial_shape" in ifu:
        shape = tuple(ifu["spatial_shape"])
    else:
        shape = (int(np.max(res["ypix"])) + 1, int(np.max(res["xpix"])) + 1)
    hdr = (
        fits.Header.fromstring(ifu.get("celestial_header", ""))
        if ifu.get("celestial_header")
        else fits.Header()
    )

    def img(v):
        return _spaxel_image(
            np.asarray(v, dtype=np.float64), res["binnum"], res["xpix"], res["ypix"], shape
        )

    hdus = [fits.PrimaryHDU()]
    hdus[0].header["NNFITSRC"] = (res["source"], "bins: fitted one by one; global: one x")
    hdus[0].header["TPLNORM"] = (res["normalisation"], "template normalisation")
    hdus[0].header["FRAME"] = (ifu.get("frame", "unknown"), "spectral frame of the fit")
    st = res["settings"]
    hdus[0].header["FITMODE"] = (st["fit"], "per-bin or global")
    hdus[0].header["DEGREE"] = (st["degree"], "additive Legendre degree (-1: none)")
    hdus[0].header["MDEGREE"] = (st["mdegree"], "multiplicative Legendre degree (0: none)")
    hdus[0].header["REGUL"] = (str(st["regul"]), "regularisation (auto: pPXF's rule per bin)")
    hdus[0].header["REGORD"] = (st["regul_order"], "regularisation order")
    images = {}
    for name, key, label, _, unit in _MAPS:
        images[name] = img(res[key])
        h = hdr.copy()
        h["BUNIT"] = (unit, "FITS unit of the values ('': a pure number)")
        h["COMMENT"] = _plain(label)
        hdus.append(fits.ImageHDU(images[name].astype(np.float32), h, name=name))
    bimg = img(np.arange(S))
    h = hdr.copy()
    h["COMMENT"] = "the bin of each spaxel: a row of table BINS; -1: in no bin"
    hdus.append(fits.ImageHDU(np.nan_to_num(bimg, nan=-1).astype(np.int32), h, name="BINMAP"))
    mf = np.stack([img(res["mass_fraction"][:, c]) for c in range(C)])
    # the component as axis 3 beside the sky's; without a sky WCS the planes stay bare like
    # the 2-D maps, as fitsverify wants all or none of an axis' keywords
    component = {3: ("COMP", "LOSVD component")}
    h = _index_axes(hdr, component) if "CTYPE1" in hdr else hdr.copy()
    h["BUNIT"] = ("", "mass fraction of the component (a pure number)")
    hdus.append(fits.ImageHDU(mf.astype(np.float32), h, name="MASSFRAC"))
    grid_h = _index_axes(
        fits.Header(),
        {1: ("AGEINDEX", "row of table AGES"), 2: ("MHINDEX", "row of table METALS"), **component},
    )
    grid_h["BUNIT"] = ("", "fraction of the light of all bins (a pure number)")
    grid_h["COMMENT"] = "light fraction (C, n_metals, n_ages): rows of tables METALS and AGES"
    hdus.append(fits.ImageHDU(res["light_grid"].transpose(0, 2, 1), grid_h, name="LIGHTGRID"))
    cols = [("BIN_ID", np.arange(S), None, "bin index (BINMAP value)")]
    cols += [(name, res[key], unit or None, _plain(label)) for name, key, label, _, unit in _MAPS]
    cols += [
        (f"MASSFRAC{c}", res["mass_fraction"][:, c], None, f"mass fraction of component {c}")
        for c in range(C)
    ]
    if "regul_per_bin" in st:
        cols.append(("REGUL", st["regul_per_bin"], None, "regularisation of the bin's fit"))
    hdus.append(_table("BINS", cols))
    hdus.append(_table("AGES", [("AGE_GYR", res["ages"], "Gyr", "template age")]))
    hdus.append(_table("METALS", [("MH", res["metals"], "dex", "template [M/H]")]))
    files = []
    with atomic_path(out / "maps.fits", suffix=".fits") as tmp:
        # CHECKSUM/DATASUM: archives (fitsverify) and readers can tell a damaged copy
        fits.HDUList(hdus).writeto(tmp, overwrite=True, checksum=True)
    files.append(out / "maps.fits")

    frame = "rest frame" if ifu.get("frame") == "rest" else "observed frame"
    wcs = _celestial_wcs(hdr)
    if wcs is not None:
        import astropy.units as u
        from astropy.wcs.utils import proj_plane_pixel_scales

        field = max(shape) * float(np.max(proj_plane_pixel_scales(wcs))) * 3600.0  # arcsec
        steps = (np.array([1, 2, 5])[None, :] * 10.0 ** np.arange(-4, 5)[:, None]).ravel()

    def sky_axes(fig, nrows, ncols, k):
        """Panel ``k`` (1-based): RA/Dec axes from the cube's WCS, else spaxel axes."""
        if wcs is None:
            ax = fig.add_subplot(nrows, ncols, k)
            ax.set_xlabel("x (spaxel)")
            ax.set_ylabel("y (spaxel)")
            return ax
        ax = fig.add_subplot(nrows, ncols, k, projection=wcs)
        ax.coords[0].set_axislabel(f"right ascension ({wcs.wcs.radesys or 'ICRS'})")
        ax.coords[1].set_axislabel("declination")
        for coord, fmt, unit in ((ax.coords[0], "hh:mm:ss", 15.0), (ax.coords[1], "dd:mm:ss", 1.0)):
            # ~3 ticks over the field, a 1-2-5 step in the labels' own seconds (of time for
            # RA, 15 arcsec each), so every tick is a multiple of the last digit shown
            tick = float(steps[max(0, np.searchsorted(steps, field / unit / 3.0) - 1)])
            coord.set_ticks(spacing=tick * unit * u.arcsec)
            digits = max(0, int(np.ceil(-np.log10(tick) - 1e-9)))
            coord.set_major_formatter(fmt + ("." + "s" * digits if digits else ""))
            coord.set_ticklabel(exclude_overlapping=True)
        return ax

    def panel(ax, im, label, cmap, vmin=None, vmax=None):
        m = ax.imshow(im, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        fig.colorbar(m, ax=ax, label=label, shrink=0.85)

    def save(fig, name, **kw):
        with atomic_path(out / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png", **kw)
        files.append(out / name)

    fig = Figure(figsize=(15, 9), layout="constrained")
    axes = [sky_axes(fig, 2, 3, k + 1) for k in range(6)]
    for ax, (name, _key, label, cmap, _unit) in zip(axes, _MAPS, strict=False):
        panel(ax, images[name], label, cmap)
        ax.set_title(label)
    panel(axes[5], np.ma.masked_less(bimg, 0), "bin index", "tab20")
    axes[5].set_title(f"{S} bins")
    fig.suptitle(f"{Path(path).name}: population maps ({res['source']} fit, {frame})")
    save(fig, "maps.png")

    lg = np.log10(res["ages"]) + 9.0
    fig = Figure(figsize=(5.5 * C + 0.5, 4.2), layout="constrained")
    axes = fig.subplots(1, C, squeeze=False)
    for c, ax in enumerate(axes[0]):
        g = res["light_grid"][c].T  # (n_metals, n_ages)
        m = ax.pcolormesh(
            _centres_to_edges(lg),
            _centres_to_edges(res["metals"]),
            g,
            cmap="Blues",
            vmin=0.0,
            vmax=max(float(g.max()), 1e-12),
        )
        ax.set_xlabel("lg(age / yr)")
        ax.set_ylabel("[M/H] (dex)")
        ax.set_title(f"component {c}: light fraction (all bins)")
        fig.colorbar(m, ax=ax, label="fraction of total light")
    save(fig, "weights_grid.png")

    # One row of maps of the field's aspect: a map about 3.2 in wide beside its axis labels
    # and colour bar, the title and the RA labels about 0.9 in together; what the estimate
    # leaves over is trimmed at saving.
    aspect = min(max(shape[0] / shape[1], 0.25), 3.0)
    fig = Figure(figsize=(5.0 * C + 0.5, 3.2 * aspect + 0.9), layout="constrained")
    for c in range(C):
        ax = sky_axes(fig, 1, C, c + 1)
        panel(ax, mf[c], "mass fraction", "viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"component {c}")
    save(fig, "mass_fractions.png", bbox_inches="tight", pad_inches=0.1)

    chi = res["chi2_dof"]
    order = np.argsort(chi)
    picks = [("worst", int(order[-1])), ("typical (median)", int(order[S // 2]))]
    fig = Figure(figsize=(12, 10), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 3, 1]})
    lam = res["lam_rest"]
    flux = _flux_label(ifu.get("bunit", ""))
    for k, (what, s) in enumerate(picks):
        ax, axr = axes[2 * k], axes[2 * k + 1]
        fit = res["fitted"][s]
        ax.plot(lam, np.where(fit, res["data"][s], np.nan), "k", lw=0.6, label="data")
        ax.plot(lam, res["model"][s], "r", lw=0.8, label="model")
        _shade(ax, lam, ~fit)
        _shade(axr, lam, ~fit)
        ax.set_ylabel(flux)
        ax.set_title(f"{what} bin {s}: chi2/dof = {chi[s]:.3f}")
        ax.legend(loc="upper right", fontsize=8)
        rr = np.where(fit, (res["data"][s] - res["model"][s]) / res["noise"][s], np.nan)
        axr.plot(lam, rr, "b", lw=0.5)
        axr.axhline(0, color="k", lw=0.5)
        axr.set_ylabel("(data-model)/noise")
    axes[-1].set_xlabel(f"wavelength ({frame}, {ifu.get('medium', '')}) [Å]")
    save(fig, "residuals.png")
    return {"files": files, "sky_axes": wcs is not None, **res}


def _plain(label: str) -> str:
    r"""A figure label as header text: FITS comments are not typeset.

    Examples
    --------
    >>> _plain(r"$\chi^2$/dof")
    'chi^2/dof'
    """
    return label.replace("$", "").replace("\\", "")


def _index_axes(header, axes: dict[int, tuple[str, str]]):
    """``header`` with linear WCS axes counting pixels from 0.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Kept as it is; ``WCSAXES`` grows to the largest axis of ``axes``.
    axes : dict
        Axis number (1-based, FITS order) to its ``(CTYPE, CNAME)``.

    Each axis gets ``CTYPE``, ``CRPIX``, ``CRVAL`` and ``CDELT``: fitsverify warns about a WCS
    axis without the first three, and viewers (DS9, CARTA) label a cube's planes by them.
    """
    h = header.copy()
    # WCSAXES leads the WCS keywords (FITS Standard 4.0, Sect. 8.2)
    h.set("WCSAXES", max(int(h.get("WCSAXES", 0)), *axes), "number of WCS axes", before=0)
    for i, (ctype, cname) in axes.items():
        h[f"CTYPE{i}"] = (ctype, cname)
        h[f"CNAME{i}"] = cname
        h[f"CRPIX{i}"] = (1.0, "the first pixel is 0")
        h[f"CRVAL{i}"] = 0.0
        h[f"CDELT{i}"] = 1.0
    return h


def _table(name: str, columns):
    """Binary table ``name`` of ``(TTYPE, values, TUNIT or None, description)`` columns.

    Integers are written as 64-bit (``K``), the rest as doubles (``D``); each description is
    its TTYPE card's comment, so that a header listing says what the column holds.
    """
    from astropy.io import fits

    cols = []
    for ttype, values, unit, _ in columns:
        a = np.asarray(values)
        integer = a.dtype.kind in "iu"
        cols.append(
            fits.Column(
                name=ttype,
                format="K" if integer else "D",
                unit=unit,
                array=a.astype(np.int64 if integer else np.float64),
            )
        )
    hdu = fits.BinTableHDU.from_columns(cols, name=name)
    for i, (_, _, _, text) in enumerate(columns, start=1):
        hdu.header.comments[f"TTYPE{i}"] = text
    return hdu


def _flux_label(bunit: str) -> str:
    r"""Axis label of the cube's flux: its FITS ``BUNIT`` typeset by astropy, else as written.

    Examples
    --------
    >>> print(_flux_label("10**(-20)*erg/s/cm**2/Angstrom"))
    flux [$\mathrm{1 \times 10^{-20}\,erg\,\mathring{A}^{-1}\,s^{-1}\,cm^{-2}}$]
    >>> _flux_label("counts per thing"), _flux_label("")
    ('flux [counts per thing]', 'flux')
    """
    import warnings

    import astropy.units as u

    if not bunit.strip():
        return "flux"
    try:
        with warnings.catch_warnings():  # FITS discourages "a/b/c"; the unit is clear
            warnings.simplefilter("ignore", u.UnitsWarning)
            text = u.Unit(bunit, format="fits").to_string("latex_inline")
    except ValueError:
        text = bunit
    return f"flux [{text}]"


def _celestial_wcs(hdr):
    """The header's celestial WCS, or None when it has none (then maps use spaxel axes)."""
    from astropy.wcs import WCS

    if "CTYPE1" not in hdr or "CTYPE2" not in hdr:
        return None
    try:
        wcs = WCS(hdr).celestial
    except (ValueError, KeyError) as exc:
        log.warning("maps: the cube's celestial WCS is unusable (%s); spaxel axes instead", exc)
        return None
    return wcs if wcs.naxis == 2 and wcs.has_celestial else None


def _centres_to_edges(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _shade(ax, lam: np.ndarray, masked: np.ndarray) -> None:
    """Grey spans over runs of masked pixels."""
    idx = np.flatnonzero(np.diff(np.concatenate([[0], masked.astype(int), [0]])))
    for a, b in zip(idx[::2], idx[1::2], strict=True):
        ax.axvspan(lam[a], lam[b - 1], color="0.85", lw=0)
