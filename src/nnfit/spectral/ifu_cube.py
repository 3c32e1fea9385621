"""Reading integral-field (IFU) cubes from FITS: data, variance, spectral and celestial WCS.

A cube is a 3-D image ``(L, ny, nx)`` (FITS axes NAXIS1 = x, NAXIS2 = y, NAXIS3 = wavelength)
with a variance (MUSE ``STAT``) or 1-sigma noise cube of the same shape. The reader maps the
file into memory (nothing is read until a slab is asked for), so a full MUSE cube (300 x 300
spaxels x 3,700 pixels, 1.3 GB per extension in float32) costs no memory until it is streamed
slab by slab (:meth:`IFUCube.slabs`).

The spectral axis comes from the standard linear FITS WCS keywords ``CTYPE3`` (``AWAV`` = air,
``WAVE`` = vacuum wavelengths), ``CRVAL3``, ``CRPIX3``, ``CD3_3`` or ``CDELT3`` (times
``PC3_3`` when present) and ``CUNIT3``; the celestial WCS of axes 1-2 is kept for the maps.

One module, though just over 500 lines: one file format (a FITS IFU cube with its variance
extension and its spectral and celestial WCS) and the slab reader over it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IFUCube",
    "air_to_vacuum",
    "muse_lsf_fwhm",
    "read_ifu_cube",
    "vacuum_to_air",
]

log = logging.getLogger(__name__)

_VAR_NAMES = ("STAT", "VAR", "VARIANCE", "IVAR")
_NOISE_NAMES = ("ERR", "ERROR", "NOISE", "SIGMA")
_DATA_NAMES = ("DATA", "FLUX", "SCI")


def _refraction_factor(lam_vac: np.ndarray) -> np.ndarray:
    """n(lambda_vac) of standard air, Ciddor (1996) as given by the IAU/SDSS convention."""
    s2 = (1e4 / np.asarray(lam_vac, dtype=np.float64)) ** 2
    return 1.0 + 5.792105e-2 / (238.0185 - s2) + 1.67917e-3 / (57.362 - s2)


def vacuum_to_air(lam_vac: np.ndarray) -> np.ndarray:
    """Vacuum to air wavelengths (Angstrom): ``lambda_air = lambda_vac / n(lambda_vac)``.

    Notes
    -----
    The refractive index of standard air is Ciddor's (1996) two-term formula,
    ``n - 1 = 0.05792105 / (238.0185 - s^2) + 0.00167917 / (57.362 - s^2)`` with
    ``s = 10^4 / lambda`` in inverse micron.

    References
    ----------
    Ciddor, P. E. 1996, Applied Optics 35, 1566. doi:10.1364/AO.35.001566

    Examples
    --------
    >>> round(float(vacuum_to_air(np.array(6564.61))[()]), 2)   # H-alpha
    6562.8
    """
    lam = np.asarray(lam_vac, dtype=np.float64)
    return lam / _refraction_factor(lam)


def air_to_vacuum(lam_air: np.ndarray) -> np.ndarray:
    """Air to vacuum wavelengths (Angstrom), the inverse of :func:`vacuum_to_air`.

    Solved by fixed-point iteration ``lambda_vac = lambda_air * n(lambda_vac)`` to 1e-10 A
    (three iterations in the optical), so the pair round-trips exactly.

    Examples
    --------
    >>> lam = np.array([4861.33, 6562.80])
    >>> bool(np.allclose(vacuum_to_air(air_to_vacuum(lam)), lam, atol=1e-9, rtol=0))
    True
    """
    lam = np.asarray(lam_air, dtype=np.float64)
    vac = lam * _refraction_factor(lam)
    for _ in range(10):
        new = lam * _refraction_factor(vac)
        if np.max(np.abs(new - vac), initial=0.0) < 1e-10:
            return new
        vac = new
    return vac


def muse_lsf_fwhm(lam: np.ndarray) -> np.ndarray:
    """FWHM (Angstrom) of the MUSE line-spread function at observed wavelengths ``lam`` (A).

    Notes
    -----
    The quadratic fit of Bacon et al. (2017, eq. 8) to the MUSE UDF sky lines,
    ``FWHM = 5.866e-8 lam^2 - 9.187e-4 lam + 6.040``, valid over 4,750-9,350 A (2.5-3.0 A).

    References
    ----------
    Bacon, R. et al. 2017, A&A 608, A1. doi:10.1051/0004-6361/201730833

    Examples
    --------
    >>> np.round(muse_lsf_fwhm(np.array([4800.0, 7000.0, 9300.0])), 3).tolist()
    [2.982, 2.483, 2.57]
    """
    lam = np.asarray(lam, dtype=np.float64)
    return 5.866e-8 * lam**2 - 9.187e-4 * lam + 6.040


@dataclass(frozen=True)
class _Extension:
    """Where an uncompressed image extension's data sits in the file, and how to scale it."""

    name: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, int, int]
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype(np.float64)
        if self.blank is not None:
            out[raw == self.blank] = np.nan
        if self.bscale != 1.0 or self.bzero != 0.0:
            out = out * self.bscale + self.bzero
        return out

    def read_planes(self, fh, l0: int, l1: int) -> np.ndarray:
        """Planes ``l0:l1`` (full spatial extent) as float64, one contiguous file read."""
        _, ny, nx = self.shape
        fh.seek(self.offset + l0 * ny * nx * self.dtype.itemsize)
        raw = np.fromfile(fh, dtype=self.dtype, count=(l1 - l0) * ny * nx)
        return self._scale(raw.reshape(l1 - l0, ny, nx))

    def memmap(self, path: Path) -> np.ndarray:
        """The whole extension as a read-only memory map (scaled arrays are read whole)."""
        mm = np.memmap(path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        if self.blank is None and self.bscale == 1.0 and self.bzero == 0.0:
            return mm
        return self._scale(np.asarray(mm))


@dataclass
class IFUCube:
    """A FITS cube opened for streaming: nothing is read until asked for.

    :meth:`slabs` reads wavelength slabs with plain file reads (one contiguous read per slab
    and extension), so memory stays at one slab whatever the cube's size; ``flux`` and
    ``variance`` give memory-mapped views of the selection for small cubes and tests.

    Attributes
    ----------
    wave : ndarray (L,)
        Wavelength of each selected pixel in Angstrom, in the medium of ``medium``.
    medium : {"air", "vacuum"}
        From ``CTYPE3`` (``AWAV`` / ``WAVE``).
    celestial_header : str
        The 2-D celestial WCS of the selection as a FITS header string ("" when the file has
        none); ``astropy.wcs.WCS(astropy.io.fits.Header.fromstring(...))`` reads it back.
    bunit : str
        Flux unit (``BUNIT``), "" when absent.
    instrument : str
        ``INSTRUME`` of the data or primary header ("" when absent).
    path : Path
        The file.
    noise_is_sigma : bool
        True when the file stores a 1-sigma noise cube rather than a variance.
    """

    wave: np.ndarray
    medium: str
    celestial_header: str
    bunit: str
    instrument: str
    path: Path
    noise_is_sigma: bool
    _data: _Extension
    _var: _Extension
    _sel: tuple[slice, slice, slice]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(L, ny, nx)`` of the selection."""
        return tuple(
            len(range(*s.indices(n))) for s, n in zip(self._sel, self._data.shape, strict=True)
        )  # type: ignore[return-value]

    @property
    def flux(self) -> np.ndarray:
        """The selected data ``(L, ny, nx)``, memory-mapped."""
        return self._data.memmap(self.path)[self._sel]

    @property
    def variance(self) -> np.ndarray:
        """The selected variance ``(L, ny, nx)`` (memory-mapped; a noise file is squared)."""
        v = self._var.memmap(self.path)[self._sel]
        return np.square(v, dtype=np.float64) if self.noise_is_sigma else v

    def slabs(self, max_bytes: float = 64e6) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """Yield ``(wavelength slice, flux, variance)`` slabs as float64, about ``max_bytes``
        of full planes per extension; slices index the selection."""
        ls, ys, xs = self._sel
        L = self.shape[0]
        _, ny, nx = self._data.shape
        step = max(1, int(max_bytes // (8 * ny * nx)))
        with open(self.path, "rb") as fh:
            for l0 in range(0, L, step):
                l1 = min(L, l0 + step)
                a, b = ls.start + l0, ls.start + l1
                f = self._data.read_planes(fh, a, b)[:, ys, xs]
                v = self._var.read_planes(fh, a, b)[:, ys, xs]
                if self.noise_is_sigma:
                    v = v * v
                yield slice(l0, l1), f, v


def _extension(hdul, hdu, path: Path) -> _Extension:
    from astropy.io import fits

    if isinstance(hdu, fits.CompImageHDU) or hdu.header.get("ZIMAGE", False):
        raise ValueError(
            f"{path}: extension {hdu.name!r} is tile-compressed; decompress it first "
            "(e.g. funpack) so it can be streamed"
        )
    h = hdu.header
    bitpix = int(h["BITPIX"])
    kind = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}.get(bitpix)
    if kind is None:
        raise ValueError(f"{path}: extension {hdu.name!r}: BITPIX = {bitpix} is not a FITS type")
    shape = tuple(int(h[f"NAXIS{k}"]) for k in (3, 2, 1))
    return _Extension(
        name=hdu.name,
        offset=int(hdul.fileinfo(hdul.index(hdu))["datLoc"]),
        dtype=np.dtype(kind),
        shape=shape,  # type: ignore[arg-type]
        bscale=float(h.get("BSCALE", 1.0)),
        bzero=float(h.get("BZERO", 0.0)),
        blank=int(h["BLANK"]) if bitpix > 0 and "BLANK" in h else None,
    )


def _hdu_by_name(hdul, name: str | int, path: Path, what: str):
    names = [h.name or f"#{i}" for i, h in enumerate(hdul)]
    try:
        return hdul[name]
    except (KeyError, IndexError):
        raise ValueError(
            f"{path}: no {what} extension {name!r} (the file has {', '.join(names)}); "
            f"name the right one (data_ext= / var_ext=, CLI --data-ext / --var-ext)"
        ) from None


def _find_data_hdu(hdul, data_ext, path: Path):
    if data_ext is not None:
        return _hdu_by_name(hdul, data_ext, path, "data")
    for n in _DATA_NAMES:
        if n in hdul:
            return hdul[n]
    for h in hdul:
        if h.header.get("NAXIS", 0) >= 1 and h.is_image:
            return h
    raise ValueError(f"{path}: no image extension with data (HDUs: {[h.name for h in hdul]})")


def _find_var_hdu(hdul, data_hdu, var_ext, noise_ext, path: Path):
    if var_ext is not None and noise_ext is not None:
        raise ValueError("give var_ext or noise_ext, not both")
    if var_ext is not None:
        return _hdu_by_name(hdul, var_ext, path, "variance"), False
    if noise_ext is not None:
        return _hdu_by_name(hdul, noise_ext, path, "noise"), True
    err = data_hdu.header.get("ERRDATA")  # ESO data-format pointer (MUSE: 'STAT')
    if err and err in hdul:
        return hdul[err], False
    for n in _VAR_NAMES:
        if n in hdul and n != "IVAR":
            return hdul[n], False
    for n in _NOISE_NAMES:
        if n in hdul:
            return hdul[n], True
    names = [h.name for h in hdul]
    raise ValueError(
        f"{path}: no variance extension (looked for ERRDATA and {', '.join(_VAR_NAMES[:3])}) or "
        f"noise extension ({', '.join(_NOISE_NAMES)}); the file has {', '.join(names)}. Name "
        "it with var_ext= or noise_ext= (CLI --var-ext / --noise-ext)"
    )


def _spectral_axis(header, path: Path, medium: str | None) -> tuple[np.ndarray, str]:
    import astropy.units as u

    L = int(header["NAXIS3"])
    ctype = str(header.get("CTYPE3", "")).strip().upper()
    if "CRVAL3" not in header:
        raise ValueError(
            f"{path}: no spectral WCS: keyword CRVAL3 is missing (the wavelength of pixel "
            "CRPIX3); add CRVAL3, CRPIX3, CD3_3 (or CDELT3), CUNIT3 and CTYPE3 to the header"
        )
    if "CD3_3" in header:
        step = float(header["CD3_3"])
    elif "CDELT3" in header:
        step = float(header["CDELT3"]) * float(header.get("PC3_3", 1.0))
    else:
        raise ValueError(f"{path}: no spectral WCS step: neither CD3_3 nor CDELT3 is in the header")
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"{path}: spectral step CD3_3/CDELT3 must be > 0; got {step!r}")
    crpix = float(header.get("CRPIX3", 0.0))  # FITS default for a missing CRPIXj
    if ctype[4:].strip("-"):
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r}: only linear wavelength axes (AWAV or WAVE) are read"
        )
    kind = ctype[:4]
    if kind == "AWAV":
        found = "air"
    elif kind == "WAVE":
        found = "vacuum"
    elif medium is not None:
        found = medium
    else:
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r}: expected 'AWAV' (air) or 'WAVE' (vacuum wavelengths); "
            "pass medium='air' or 'vacuum' (CLI --medium) if the header cannot say"
        )
    if medium is not None and medium != found:
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r} says {found} wavelengths but medium={medium!r} was given"
        )
    unit_s = str(header.get("CUNIT3", "")).strip()
    if unit_s:
        try:
            factor = (1.0 * u.Unit(unit_s)).to_value(u.AA)
        except (ValueError, u.UnitConversionError):
            raise ValueError(
                f"{path}: CUNIT3 = {unit_s!r} is not a wavelength unit (expected e.g. 'Angstrom', "
                "'nm', 'm')"
            ) from None
    else:
        log.warning("%s: CUNIT3 missing; assuming Angstrom", path)
        factor = 1.0
    wave = (float(header["CRVAL3"]) + step * (np.arange(L) + 1.0 - crpix)) * factor
    if wave[0] <= 0:
        raise ValueError(f"{path}: spectral WCS gives a non-positive wavelength {wave[0]!r} A")
    return wave, found


def _celestial_header(header, ys: slice, xs: slice) -> str:
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header)
        except Exception:  # a broken celestial WCS only costs the maps their WCS
            log.warning("celestial WCS unreadable; maps will carry pixel coordinates only")
            return ""
    if not w.has_celestial:
        return ""
    cel = w.celestial[ys, xs]
    return cel.to_header().tostring()


def _as_slice(r, n: int, name: str) -> slice:
    if r is None:
        return slice(0, n)
    a, b = (int(v) for v in r)
    if not 0 <= a < b <= n:
        raise ValueError(f"{name} must be (start, stop) with 0 <= start < stop <= {n}; got {r}")
    return slice(a, b)


def read_ifu_cube(
    path: str | os.PathLike[str],
    *,
    data_ext: str | int | None = None,
    var_ext: str | int | None = None,
    noise_ext: str | int | None = None,
    lam_range: tuple[float, float] | None = None,
    x_range: tuple[int, int] | None = None,
    y_range: tuple[int, int] | None = None,
    medium: str | None = None,
) -> IFUCube:
    """Open an IFU cube from FITS for streaming, with its variance and wavelength WCS.

    Parameters
    ----------
    path : path-like
        The FITS file.
    data_ext : str or int, optional
        Data extension; default ``DATA`` (or ``FLUX``/``SCI``, else the first image HDU).
    var_ext, noise_ext : str or int, optional
        Variance or 1-sigma noise extension; default the ``ERRDATA`` pointer, then ``STAT``,
        ``VAR``, ``VARIANCE``, then ``ERR``/``NOISE``/``SIGMA`` (as noise).
    lam_range : (float, float), optional
        Keep pixels with ``lam_range[0] <= wave <= lam_range[1]`` (observed Angstrom).
    x_range, y_range : (int, int), optional
        Keep spaxel columns ``x_range[0]:x_range[1]`` and rows ``y_range[0]:y_range[1]``
        (0-based, stop excluded).
    medium : {"air", "vacuum"}, optional
        Needed only when ``CTYPE3`` is neither ``AWAV`` nor ``WAVE``.

    Returns
    -------
    IFUCube
        Memory-mapped views of the selection; see :class:`IFUCube`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A missing extension, a file that is not 3-D, a spectral WCS keyword missing or wrong,
        variance and data of different shapes, or no finite data in the selection; the
        message names the extension or keyword.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.io import fits
    >>> d = np.ones((5, 2, 3), dtype=np.float32)
    >>> h = fits.Header({"CTYPE3": "AWAV", "CRVAL3": 5000.0, "CD3_3": 1.25, "CRPIX3": 1.0,
    ...                  "CUNIT3": "Angstrom"})
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.fits"
    >>> fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(d, h, name="DATA"),
    ...               fits.ImageHDU(d, h, name="STAT")]).writeto(p)
    >>> cube = read_ifu_cube(p, lam_range=(5001, 5003))
    >>> cube.shape, cube.wave.tolist(), cube.medium
    ((2, 2, 3), [5001.25, 5002.5], 'air')
    """
    from astropy.io import fits

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if medium is not None and medium not in ("air", "vacuum"):
        raise ValueError(f"medium must be 'air' or 'vacuum'; got {medium!r}")
    try:
        hdul = fits.open(p, memmap=False, lazy_load_hdus=True)
    except OSError as exc:
        raise ValueError(f"{p}: not a readable FITS file ({exc})") from None
    with hdul:
        dh = _find_data_hdu(hdul, data_ext, p)
        hdr = dh.header
        if hdr.get("NAXIS", 0) != 3:
            raise ValueError(
                f"{p}: extension {dh.name!r} is not a cube: NAXIS = {hdr.get('NAXIS', 0)} "
                "(expected 3: x, y, wavelength)"
            )
        vh, is_sigma = _find_var_hdu(hdul, dh, var_ext, noise_ext, p)
        wave, found_medium = _spectral_axis(hdr, p, medium)
        d_ext = _extension(hdul, dh, p)
        if vh.header.get("NAXIS", 0) != 3:
            raise ValueError(
                f"{p}: {'noise' if is_sigma else 'variance'} extension {vh.name!r} has NAXIS = "
                f"{vh.header.get('NAXIS', 0)}; it must be a cube shaped like {dh.name!r}"
            )
        v_ext = _extension(hdul, vh, p)
        if v_ext.shape != d_ext.shape:
            raise ValueError(
                f"{p}: {'noise' if is_sigma else 'variance'} extension {vh.name!r} has shape "
                f"{v_ext.shape}, the data {dh.name!r} {d_ext.shape}; they must match"
            )
        L, ny, nx = d_ext.shape
        if lam_range is not None:
            lo, hi = (float(v) for v in lam_range)
            keep = np.flatnonzero((wave >= lo) & (wave <= hi))
            if keep.size < 2:
                raise ValueError(
                    f"lam_range {lam_range} keeps {keep.size} pixels of the cube's "
                    f"{wave[0]:.1f}-{wave[-1]:.1f} A"
                )
            ls = slice(int(keep[0]), int(keep[-1]) + 1)
        else:
            ls = slice(0, L)
        xs = _as_slice(x_range, nx, "x_range")
        ys = _as_slice(y_range, ny, "y_range")
        cube = IFUCube(
            wave=wave[ls],
            medium=found_medium,
            celestial_header=_celestial_header(hdr, ys, xs),
            bunit=str(hdr.get("BUNIT", hdul[0].header.get("BUNIT", ""))),
            instrument=str(hdr.get("INSTRUME", hdul[0].header.get("INSTRUME", ""))).strip(),
            path=p,
            noise_is_sigma=is_sigma,
            _data=d_ext,
            _var=v_ext,
            _sel=(ls, ys, xs),
        )
    # An all-NaN cube is refused here, not after binning: a few planes are read.
    L2 = cube.shape[0]
    probe = np.unique(np.linspace(0, L2 - 1, min(L2, 16)).astype(int))
    with open(p, "rb") as fh:
        finite = any(
            np.isfinite(d_ext.read_planes(fh, ls.start + i, ls.start + i + 1)[:, ys, xs]).any()
            for i in probe
        )
    if not finite:
        raise ValueError(
            f"{p}: no finite data in extension {dh.name!r} over the selection "
            f"({L2} x {cube.shape[1]} x {cube.shape[2]}; checked {probe.size} planes)"
        )
    return cube
