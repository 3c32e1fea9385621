"""Reading integral-field (IFU) cubes from FITS: data, variance, spectral and celestial WCS.

A cube is a 3-D image ``(L, ny, nx)`` (FITS axes NAXIS1 = x, NAXIS2 = y, NAXIS3 = wavelength)
with a variance, inverse-variance or 1-sigma noise cube of the same shape, and optionally a
data-quality cube. Every pixel whose noise cannot be a variance (NaN, a variance or 1-sigma
noise <= 0, an inverse variance <= 0) or that the data-quality cube flags gets a NaN variance,
which every later step excludes. The reader maps the file into memory (nothing is read until a
slab is asked for), so a full MUSE cube (300 x 300 spaxels x 3,700 pixels, 1.3 GB per extension
in float32) costs no memory until it is streamed slab by slab (:meth:`IFUCube.slabs`).

Formats read, each found from what the file says (extension names, pointer keywords,
``TELESCOP``/``INSTRUME``); :func:`read_ifu_cube` lists the rules:

* MUSE (ESO): ``DATA`` + ``STAT`` (variance) + ``DQ`` (non-zero = bad), through the ESO
  ``ERRDATA``/``QUALDATA`` pointers; ``HDUCLAS3`` of the error extension (``MSE`` variance,
  ``RMSE`` 1-sigma, ``INVMSE`` inverse variance) says what it holds.
* SDSS-IV MaNGA DRP ``LOGCUBE``/``LINCUBE``: ``FLUX`` + ``IVAR`` + ``MASK`` (DRP3PIXMASK: bad
  where ``DONOTUSE`` or ``FORESTAR`` is set, the bits MaNGA's DAP excludes), ``WAVE`` (vacuum
  Angstrom, checked against the WCS) and the spectral-resolution extensions (``LSFPRE``,
  ``PREDISP``, ``PRESPECRES``, ``LSFPOST``, ``DISP``, ``SPECRES``; :meth:`IFUCube.lsf_fwhm`).
* CALIFA DR3 (V500, V1200, COMB): flux in the primary HDU, ``ERROR`` (1-sigma), ``BADPIX``
  (1 = bad); no ``CTYPE3`` or ``CUNIT3``: air wavelengths in Angstrom.
* SAMI DR3: flux in the primary HDU, ``VARIANCE``; ``WEIGHT`` and ``COVAR`` are not read.
* Keck KCWI DRP (``_icubes``): flux in the primary HDU, ``UNCERT`` (what it holds from its
  ``UTYPE``, astropy's ``CCDData`` convention), ``MASK`` (non-zero = bad); ``FLAGS`` is not read.
* JWST NIRSpec/MIRI IFU ``s3d``: ``SCI`` (MJy/sr), ``ERR`` (1-sigma), ``DQ`` (bad where
  ``DO_NOT_USE``, bit 0, is set), micron wavelengths; ``WAVE-TAB`` axes are refused.

The spectral axis comes from the FITS WCS keywords ``CTYPE3`` (``AWAV`` = air, ``WAVE`` =
vacuum; a ``-LOG`` suffix: logarithmic, Greisen et al. 2006), ``CRVAL3``, ``CRPIX3``, ``CD3_3``
or ``CDELT3`` (times ``PC3_3`` when present) and ``CUNIT3``; the celestial WCS of axes 1-2 is
kept for the maps. Files must be uncompressed (a gzip file, such as MaNGA's ``.fits.gz``, is
refused with the command that decompresses it), since slabs are read straight from the file.

One module, though over 600 lines: one file format (a FITS IFU cube with its noise and DQ
extensions and its spectral and celestial WCS) and the slab reader over it.
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

_VAR_NAMES = ("STAT", "VAR", "VARIANCE")
_IVAR_NAMES = ("IVAR", "INVVAR")
_NOISE_NAMES = ("ERR", "ERROR", "NOISE", "SIGMA")
_DQ_NAMES = ("DQ", "BADPIX", "MASK")
# What an error extension holds: the ESO data-format HDUCLAS3 (MUSE, MaNGA) and astropy
# CCDData's UTYPE (KCWI's UNCERT)
_HDUCLAS3_KIND = {"MSE": "variance", "RMSE": "sigma", "INVMSE": "ivar"}
_UTYPE_KIND = {
    "StdDevUncertainty": "sigma",
    "VarianceUncertainty": "variance",
    "InverseVariance": "ivar",
}
# MaNGA DRP3PIXMASK bits MaNGA's DAP excludes (mangadap DRPFits.do_not_use_flags): FORESTAR (3)
# and DONOTUSE (10); NOCOV (0), LOWCOV (1) and DEADFIBER (2) are kept, as the DAP keeps them.
_MANGA_BAD_BITS = {3: "FORESTAR", 10: "DONOTUSE"}
# JWST DQ: DO_NOT_USE (bit 0) excludes a pixel; the other bits (NON_SCIENCE, ...) inform.
_JWST_BAD_BITS = {0: "DO_NOT_USE"}
# MaNGA's spectral-resolution extensions, in MaNGA's DAP order (DRPFits.spectral_resolution:
# pre-pixelisation first, cubes before vectors); PREDISP / DISP are the DR15 names of LSFPRE /
# LSFPOST. "sigma": a cube of the LSF's 1-sigma in A; "R": a vector of lambda / FWHM.
_MANGA_LSF = (
    ("LSFPRE", "sigma"),
    ("PREDISP", "sigma"),
    ("PRESPECRES", "R"),
    ("LSFPOST", "sigma"),
    ("DISP", "sigma"),
    ("SPECRES", "R"),
)
_SIG2FWHM = float(np.sqrt(8.0 * np.log(2.0)))
# what each kind of noise extension holds, for messages
_KIND_WORD = {"variance": "variance", "sigma": "noise", "ivar": "inverse-variance"}
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
    noise_kind : {"variance", "sigma", "ivar"}
        What the noise extension holds: a variance, a 1-sigma noise or an inverse variance.
    noise_name, dq_name : str
        The noise and data-quality extensions read (``dq_name`` "" when none).
    file_format : str
        The survey format recognised ("manga", "califa", "sami", "kcwi", "jwst", "muse"), ""
        for any other cube (read by the generic rules).
    dq_rule : str
        Which DQ values make a pixel bad, in words ("" without a DQ extension).
    """

    wave: np.ndarray
    medium: str
    celestial_header: str
    bunit: str
    instrument: str
    path: Path
    noise_kind: str
    _data: _Extension
    _var: _Extension
    _sel: tuple[slice, slice, slice]
    _dq: _Extension | None = None
    file_format: str = ""
    dq_rule: str = ""
    _dq_bits: int | None = None  # None: any non-zero value is bad
    # (extension, its 1-sigma cube | its R = lambda / FWHM vector) of the file's own LSF
    _lsf: tuple[str, _Extension | np.ndarray] | None = None

    def _dq_bad(self, dq: np.ndarray) -> np.ndarray:
        """True where the DQ value makes the pixel bad (a NaN DQ, from a BLANK, is bad too)."""
        if self._dq_bits is None:
            return dq != 0  # NaN != 0
        finite = np.isfinite(dq)
        flags = np.where(finite, dq, 0).astype(np.int64)
        return ~finite | ((flags & self._dq_bits) != 0)

    @property
    def noise_is_sigma(self) -> bool:
        """True when the file stores a 1-sigma noise cube rather than a variance."""
        return self.noise_kind == "sigma"

    @property
    def data_name(self) -> str:
        """The data extension read (its EXTNAME; "PRIMARY" for CALIFA, SAMI and KCWI)."""
        return self._data.name

    @property
    def noise_name(self) -> str:
        """The noise extension read (its EXTNAME)."""
        return self._var.name

    @property
    def dq_name(self) -> str:
        """The data-quality extension read ("" when none)."""
        return "" if self._dq is None else self._dq.name

    def _variance(self, raw: np.ndarray, dq: np.ndarray | None) -> np.ndarray:
        """The variance of ``raw`` noise values, NaN where the pixel is bad.

        A variance is kept as it is (later steps drop values that are not finite and > 0); a
        1-sigma noise or an inverse variance that is not finite and > 0 cannot give one, so
        it becomes NaN rather than a square of a negative flag or 1 / 0.
        """
        raw = np.asarray(raw, dtype=np.float64)  # a float32 1 / ivar would lose digits
        if self.noise_kind == "variance":
            v = raw
        else:
            ok = np.isfinite(raw) & (raw > 0)
            with np.errstate(divide="ignore", over="ignore"):
                if self.noise_kind == "sigma":
                    v = np.where(ok, raw * raw, np.nan)
                else:
                    v = np.where(ok, 1.0 / np.where(ok, raw, 1.0), np.nan)
        if dq is not None:
            v = np.where(self._dq_bad(np.asarray(dq, dtype=np.float64)), np.nan, v)
        return v

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
        """The selected variance ``(L, ny, nx)``, NaN on bad pixels.

        Memory-mapped for a variance extension without DQ; a 1-sigma noise is squared and an
        inverse variance inverted (both into memory).
        """
        v = self._var.memmap(self.path)[self._sel]
        dq = None if self._dq is None else self._dq.memmap(self.path)[self._sel]
        if self.noise_kind == "variance" and dq is None:
            return v
        return self._variance(np.asarray(v), dq)

    def n_flagged(self, max_bytes: float = 64e6) -> int:
        """Pixels of the selection the DQ extension flags (0 without one), streamed."""
        if self._dq is None:
            return 0
        ls, ys, xs = self._sel
        _, ny, nx = self._dq.shape
        step = max(1, int(max_bytes // (8 * ny * nx)))
        n = 0
        with open(self.path, "rb") as fh:
            for a in range(ls.start, ls.stop, step):
                dq = self._dq.read_planes(fh, a, min(ls.stop, a + step))[:, ys, xs]
                n += int(np.count_nonzero(self._dq_bad(dq)))
        return n

    def lsf_fwhm(self, max_bytes: float = 64e6) -> tuple[str, np.ndarray] | None:
        """The file's own line-spread function: (extension, FWHM in A at :attr:`wave`), or None.

        MaNGA's cubes of the LSF's 1-sigma per spaxel (``LSFPRE``, ...) give the median over
        the selected spaxels with a positive value, wavelength by wavelength (MaNGA's DAP takes
        the same median for its single resolution vector), times ``sqrt(8 ln 2)``; its vectors
        of the resolution ``R = lambda / FWHM`` (``PRESPECRES``, ``SPECRES``) give
        ``wave / R``. Wavelengths without a positive value are interpolated from their
        neighbours, as the DAP does.

        Raises
        ------
        ValueError
            The extension has no positive value over the selection.
        """
        if self._lsf is None:
            return None
        name, src = self._lsf
        ls, ys, xs = self._sel
        if isinstance(src, _Extension):
            _, ny, nx = src.shape
            step = max(1, int(max_bytes // (8 * ny * nx)))
            sig = np.empty(self.shape[0])
            with open(self.path, "rb") as fh:
                for a in range(ls.start, ls.stop, step):
                    b = min(ls.stop, a + step)
                    planes = src.read_planes(fh, a, b)[:, ys, xs].reshape(b - a, -1)
                    good = np.isfinite(planes) & (planes > 0)
                    n = good.sum(axis=1)
                    med = np.nanmedian(np.where(good, planes, np.nan)[n > 0], axis=1)
                    out = np.full(b - a, np.nan)
                    out[n > 0] = med
                    sig[a - ls.start : b - ls.start] = out
            fwhm = _SIG2FWHM * sig
        else:
            r = np.asarray(src, dtype=np.float64)[ls]
            with np.errstate(divide="ignore", invalid="ignore"):
                fwhm = np.where(np.isfinite(r) & (r > 0), self.wave / r, np.nan)
        ok = np.isfinite(fwhm) & (fwhm > 0)
        if not ok.any():
            raise ValueError(
                f"{self.path}: spectral-resolution extension {name!r} has no positive value over "
                "the selection; give the instrument's FWHM (fwhm_gal=, CLI --fwhm)"
            )
        return name, np.interp(self.wave, self.wave[ok], fwhm[ok])

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
                dq = None if self._dq is None else self._dq.read_planes(fh, a, b)[:, ys, xs]
                if self.noise_kind != "variance" or dq is not None:
                    v = self._variance(v, dq)
                yield slice(l0, l1), f, v


def _extension(hdul, hdu, path: Path) -> _Extension:
    from astropy.io import fits

    if isinstance(hdu, fits.CompImageHDU) or hdu.header.get("ZIMAGE", False):
        plain = path.with_suffix("") if path.suffix == ".fz" else path.with_suffix(".plain.fits")
        # slabs are read at offsets into the file: compressed tiles have none to seek to
        raise ValueError(
            f"{path}: extension {hdu.name!r} is tile-compressed (.fits.fz); decompress it "
            f"first (funpack -O {plain} {path}) and give the uncompressed file"
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


_ARG_OF = {
    "data": "data_ext=, CLI --data-ext",
    "variance": "var_ext=, CLI --var-ext",
    "noise": "noise_ext=, CLI --noise-ext",
    "inverse-variance": "ivar_ext=, CLI --ivar-ext",
    "data-quality": "dq_ext=, CLI --dq-ext; --dq-ext none reads no DQ",
}


def _hdu_by_name(hdul, name: str | int, path: Path, what: str):
    names = [h.name or f"#{i}" for i, h in enumerate(hdul)]
    try:
        return hdul[name]
    except (KeyError, IndexError):
        raise ValueError(
            f"{path}: no {what} extension {name!r} (the file has {', '.join(names)}); "
            f"name the right one ({_ARG_OF[what]})"
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


def _find_var_hdu(hdul, data_hdu, var_ext, noise_ext, ivar_ext, path: Path):
    """The noise HDU and what it holds: "variance", "sigma" or "ivar"."""
    given = [
        (a, v)
        for a, v in (("var_ext", var_ext), ("noise_ext", noise_ext), ("ivar_ext", ivar_ext))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"give one of var_ext, noise_ext, ivar_ext (CLI --var-ext / --noise-ext / "
            f"--ivar-ext); got {' and '.join(a for a, _ in given)}"
        )
    if var_ext is not None:
        h = _hdu_by_name(hdul, var_ext, path, "variance")
        if h.name.upper() in _IVAR_NAMES:
            # an inverse variance read as a variance weights every pixel upside down
            raise ValueError(
                f"{path}: var_ext {var_ext!r}: extension {h.name!r} holds an inverse variance, "
                "not a variance; name it with ivar_ext= (CLI --ivar-ext)"
            )
        return h, "variance"
    if noise_ext is not None:
        return _hdu_by_name(hdul, noise_ext, path, "noise"), "sigma"
    if ivar_ext is not None:
        return _hdu_by_name(hdul, ivar_ext, path, "inverse-variance"), "ivar"
    err = data_hdu.header.get("ERRDATA")  # ESO data-format pointer (MUSE: 'STAT', MaNGA: 'IVAR')
    if err and err in hdul:
        h = hdul[err]
        clas3 = str(h.header.get("HDUCLAS3", "")).strip().upper()
        if clas3 in _HDUCLAS3_KIND:
            return h, _HDUCLAS3_KIND[clas3]
        return h, "ivar" if h.name.upper() in _IVAR_NAMES else "variance"
    for names, kind in ((_VAR_NAMES, "variance"), (_IVAR_NAMES, "ivar")):
        for n in names:
            if n in hdul:
                return hdul[n], kind
    if "UNCERT" in hdul:  # astropy CCDData's uncertainty (KCWI): UTYPE says what it holds
        h = hdul["UNCERT"]
        utype = str(h.header.get("UTYPE", "")).strip()
        if utype not in _UTYPE_KIND:
            raise ValueError(
                f"{path}: extension 'UNCERT' has UTYPE = {utype or 'missing'!r}, not one of "
                f"{', '.join(_UTYPE_KIND)}, so it could hold a 1-sigma noise, a variance or an "
                "inverse variance; say which: noise_ext='UNCERT', var_ext='UNCERT' or "
                "ivar_ext='UNCERT' (CLI --noise-ext / --var-ext / --ivar-ext UNCERT)"
            )
        return h, _UTYPE_KIND[utype]
    for n in _NOISE_NAMES:
        if n in hdul:
            return hdul[n], "sigma"
    names = [h.name for h in hdul]
    raise ValueError(
        f"{path}: no variance extension (looked for ERRDATA and {', '.join(_VAR_NAMES)}), "
        f"inverse-variance extension ({', '.join(_IVAR_NAMES)}), UNCERT or noise extension "
        f"({', '.join(_NOISE_NAMES)}); the file has {', '.join(names)}. Name it with var_ext=, "
        "ivar_ext= or noise_ext= (CLI --var-ext / --ivar-ext / --noise-ext)"
    )


def _find_dq_hdu(hdul, data_hdu, dq_ext, path: Path):
    """The data-quality HDU: ``dq_ext`` by name, None = none, "auto" = the ``QUALDATA``
    pointer, else ``DQ``, ``BADPIX`` or ``MASK``, if any."""
    if dq_ext is None:
        return None
    if dq_ext != "auto":
        return _hdu_by_name(hdul, dq_ext, path, "data-quality")
    qual = data_hdu.header.get("QUALDATA")  # ESO data-format pointer (MUSE: 'DQ')
    if qual and qual in hdul:
        return hdul[qual]
    for n in _DQ_NAMES:
        if n in hdul:
            return hdul[n]
    return None


def _file_format(hdul) -> str:
    """The survey format the file's extension names and primary header say, "" for none."""
    names = {h.name.upper() for h in hdul}
    h0 = hdul[0].header
    instrument = str(h0.get("INSTRUME", "")).strip().upper()
    if "VERSDRP3" in h0 or {"FLUX", "IVAR", "MASK", "WAVE"} <= names:
        return "manga"  # VERSDRP3: the MaNGA DRP version, which MaNGA's DAP reads from it
    if str(h0.get("TELESCOP", "")).strip().upper() == "JWST":
        return "jwst"
    if instrument.startswith("KCWI"):
        return "kcwi"
    if {"ERRWEIGHT", "BADPIX", "FIBCOVER"} <= names:
        return "califa"
    if {"VARIANCE", "WEIGHT", "COVAR"} <= names:
        return "sami"
    if instrument == "MUSE":
        return "muse"
    return ""


def _dq_rule(fmt: str, dq_name: str) -> tuple[int | None, str]:
    """(bits that make a pixel bad, None = any non-zero; the rule in words) for a DQ extension."""
    bits = {("manga", "MASK"): _MANGA_BAD_BITS, ("jwst", "DQ"): _JWST_BAD_BITS}.get(
        (fmt, dq_name.upper())
    )
    if bits is None:
        return None, "non-zero = bad"
    words = " or ".join(f"{name} (bit {b})" for b, name in bits.items())
    return sum(1 << b for b in bits), f"bad where {words} is set"


def _manga_lsf(hdul, shape: tuple[int, int, int], path: Path):
    """MaNGA's own LSF, the first of :data:`_MANGA_LSF` the file has, or None."""
    for name, kind in _MANGA_LSF:
        if name not in hdul:
            continue
        h = hdul[name]
        if kind == "sigma":
            return name, _cube_like(hdul, h, "spectral-resolution", "FLUX", shape, path)
        vec = np.asarray(h.data, dtype=np.float64)
        if vec.shape != (shape[0],):
            raise ValueError(
                f"{path}: spectral-resolution extension {name!r} has shape {vec.shape}, not "
                f"({shape[0]},) like the wavelength axis; give the instrument's FWHM (fwhm_gal=, "
                "CLI --fwhm)"
            )
        return name, vec
    return None


def _check_wave_extension(hdul, wave: np.ndarray, path: Path) -> None:
    """Refuse a MaNGA ``WAVE`` vector that disagrees with the spectral WCS by 1% of a pixel."""
    if "WAVE" not in hdul or hdul["WAVE"].header.get("NAXIS", 0) != 1:
        return
    vec = np.asarray(hdul["WAVE"].data, dtype=np.float64)
    if vec.shape != wave.shape:
        raise ValueError(
            f"{path}: the WAVE extension has {vec.size} wavelengths, the cube {wave.size}; the "
            "file is inconsistent: fix its header or its WAVE extension"
        )
    width = np.gradient(wave)
    off = np.abs(vec - wave) / width
    if not np.all(off <= 0.01):
        i = int(np.nanargmax(np.where(np.isfinite(off), off, np.inf)))
        raise ValueError(
            f"{path}: the WAVE extension gives {vec[i]!r} A at pixel {i}, the spectral WCS "
            f"(CTYPE3, CRVAL3, CRPIX3, CD3_3) {wave[i]!r} A, {off[i]:.3g} pixels apart; the "
            "file is inconsistent: fix its header or its WAVE extension"
        )


def _spectral_axis(
    header,
    path: Path,
    medium: str | None,
    default_medium: str | None = None,
    default_unit: str | None = None,
) -> tuple[np.ndarray, str]:
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
    algorithm = ctype[4:].strip("-")
    if algorithm == "TAB":
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r}: the wavelengths are a table (-TAB, e.g. a JWST cube "
            "built from several bands), which is not read; build the cube on a linear "
            "wavelength grid (JWST cube_build: one band, or linear_wave=True)"
        )
    if algorithm not in ("", "LOG"):
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r}: only linear (AWAV, WAVE) and logarithmic "
            "(AWAV-LOG, WAVE-LOG) wavelength axes are read"
        )
    kind = ctype[:4]
    if kind == "AWAV":
        found = "air"
    elif kind == "WAVE":
        found = "vacuum"
    elif medium is not None:
        found = medium
    elif default_medium is not None and not ctype:
        found = default_medium
    else:
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r}: expected 'AWAV' (air) or 'WAVE' (vacuum wavelengths); "
            "pass medium='air' or 'vacuum' (CLI --medium-obs) if the header cannot say"
        )
    if medium is not None and medium != found:
        raise ValueError(
            f"{path}: CTYPE3 = {ctype!r} says {found} wavelengths but medium={medium!r} (CLI "
            "--medium-obs) was given; drop it"
        )
    unit_s = str(header.get("CUNIT3", "")).strip() or (default_unit or "")
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
    crval = float(header["CRVAL3"])
    p = np.arange(L) + 1.0 - crpix
    if algorithm == "LOG":  # Greisen et al. 2006 (FITS WCS III), eq. 5
        if crval <= 0:
            raise ValueError(f"{path}: CTYPE3 = {ctype!r} needs CRVAL3 > 0; got {crval!r}")
        wave = crval * np.exp(step * p / crval) * factor
    else:
        wave = (crval + step * p) * factor
    if wave[0] <= 0:
        raise ValueError(f"{path}: spectral WCS gives a non-positive wavelength {wave[0]!r} A")
    return wave, found


def _celestial_header(header, ys: slice, xs: slice, path: Path) -> str:
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header)
        except Exception:  # a broken celestial WCS only costs the maps their WCS
            log.warning("%s: celestial WCS unreadable; maps will carry spaxel axes only", path)
            return ""
    if not w.has_celestial:
        if any(f"{k}{i}" in header for k in ("CRVAL", "CDELT") for i in (1, 2)):
            # the numbers of a sky WCS without the CTYPEs that say it is one
            log.warning(
                "%s: axes 1-2 have CRVAL/CDELT keywords but CTYPE1/CTYPE2 = %r/%r, not a "
                "celestial projection (e.g. 'RA---TAN'/'DEC--TAN'); the maps carry spaxel axes "
                "(add the CTYPEs to the header for RA/Dec)",
                path,
                header.get("CTYPE1", ""),
                header.get("CTYPE2", ""),
            )
        return ""
    cel = w.celestial[ys, xs]
    return cel.to_header().tostring()


def _cube_like(hdul, hdu, what: str, data_name: str, shape: tuple, path: Path) -> _Extension:
    """The extension of ``hdu``, refused unless it is a cube shaped like the data."""
    if hdu.header.get("NAXIS", 0) != 3:
        raise ValueError(
            f"{path}: {what} extension {hdu.name!r} has NAXIS = {hdu.header.get('NAXIS', 0)}; "
            f"it must be a cube shaped like {data_name!r}"
        )
    ext = _extension(hdul, hdu, path)
    if ext.shape != shape:
        raise ValueError(
            f"{path}: {what} extension {hdu.name!r} has shape {ext.shape}, the data "
            f"{data_name!r} {shape}; they must match"
        )
    return ext


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
    ivar_ext: str | int | None = None,
    dq_ext: str | int | None = "auto",
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
        Data extension; default ``DATA`` (or ``FLUX``/``SCI``, else the first image HDU: the
        primary of CALIFA, SAMI and KCWI cubes).
    var_ext, noise_ext, ivar_ext : str or int, optional
        Variance, 1-sigma noise or inverse-variance extension (give at most one); default the
        ``ERRDATA`` pointer (what it holds from its ``HDUCLAS3``: ``MSE`` variance, ``RMSE``
        1-sigma, ``INVMSE`` inverse variance; else from its name), then ``STAT``, ``VAR``,
        ``VARIANCE``, then ``IVAR``/``INVVAR`` (as inverse variance), then ``UNCERT`` (as its
        ``UTYPE`` says: ``StdDevUncertainty``, ``VarianceUncertainty`` or ``InverseVariance``;
        refused without one), then ``ERR``/``ERROR``/``NOISE``/``SIGMA`` (as noise). An
        extension named ``IVAR`` or ``INVVAR`` is refused as ``var_ext``. Pixels whose noise is
        not finite, or is <= 0 (1-sigma noise, inverse variance), get a NaN variance: excluded.
    dq_ext : str, int or None
        Data-quality extension (its bad pixels are excluded like a NaN variance; the flux is
        read unchanged). ``"auto"`` (default): the ``QUALDATA`` pointer, else ``DQ``,
        ``BADPIX`` or ``MASK`` when the file has one; None: read none. Non-zero = bad, except
        MaNGA's ``MASK`` (DRP3PIXMASK: bad where ``FORESTAR`` or ``DONOTUSE`` is set, the bits
        MaNGA's DAP excludes; ``NOCOV``, ``LOWCOV``, ``DEADFIBER`` alone are kept, as the DAP
        keeps them, and a zero ``IVAR`` still excludes a pixel) and JWST's ``DQ`` (bad where ``DO_NOT_USE`` is set;
        ``NON_SCIENCE`` and the other bits inform).
    lam_range : (float, float), optional
        Keep pixels with ``lam_range[0] <= wave <= lam_range[1]`` (observed Angstrom).
    x_range, y_range : (int, int), optional
        Keep spaxel columns ``x_range[0]:x_range[1]`` and rows ``y_range[0]:y_range[1]``
        (0-based, stop excluded).
    medium : {"air", "vacuum"}, optional
        Needed only when ``CTYPE3`` is neither ``AWAV`` nor ``WAVE`` (``-LOG`` or not); a
        CALIFA cube without ``CTYPE3`` is read as air wavelengths unless this says otherwise.

    Returns
    -------
    IFUCube
        Memory-mapped views of the selection; see :class:`IFUCube`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A gzip-compressed file, a missing extension, a file that is not 3-D, a spectral WCS
        keyword missing or wrong (or a ``-TAB`` axis), a ``WAVE`` extension that disagrees with
        the WCS, variance and data of different shapes, or no finite data in the selection;
        the message names the extension or keyword.

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
    with open(p, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            # slabs are read at offsets into the file: a gzip stream has none to seek to
            raise ValueError(
                f"{p}: the file is gzip-compressed (MaNGA's .fits.gz); decompress it first "
                f"(gunzip -k {p}) and give the .fits"
            )
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
        fmt = _file_format(hdul)
        vh, kind = _find_var_hdu(hdul, dh, var_ext, noise_ext, ivar_ext, p)
        qh = _find_dq_hdu(hdul, dh, dq_ext, p)
        # CALIFA's cubes carry neither CTYPE3 nor CUNIT3: air wavelengths in Angstrom
        califa = fmt == "califa"
        wave, found_medium = _spectral_axis(
            hdr,
            p,
            medium,
            default_medium="air" if califa else None,
            default_unit="Angstrom" if califa else None,
        )
        if fmt == "manga":
            _check_wave_extension(hdul, wave, p)
        d_ext = _extension(hdul, dh, p)
        v_ext = _cube_like(hdul, vh, _KIND_WORD[kind], dh.name, d_ext.shape, p)
        q_ext = None if qh is None else _cube_like(hdul, qh, "DQ", dh.name, d_ext.shape, p)
        dq_bits, dq_rule = _dq_rule(fmt, qh.name) if qh is not None else (None, "")
        lsf = _manga_lsf(hdul, d_ext.shape, p) if fmt == "manga" else None
        L, ny, nx = d_ext.shape
        if lam_range is not None:
            lo, hi = (float(v) for v in lam_range)
            keep = np.flatnonzero((wave >= lo) & (wave <= hi))
            if keep.size < 2:
                raise ValueError(
                    f"{p}: lam_range {lam_range} (CLI --lam-range, observed Angstrom) keeps "
                    f"{keep.size} pixels of the cube's {wave[0]:.1f}-{wave[-1]:.1f} A; give a "
                    "range in Angstrom inside it"
                )
            ls = slice(int(keep[0]), int(keep[-1]) + 1)
        else:
            ls = slice(0, L)
        xs = _as_slice(x_range, nx, "x_range")
        ys = _as_slice(y_range, ny, "y_range")
        cube = IFUCube(
            wave=wave[ls],
            medium=found_medium,
            celestial_header=_celestial_header(hdr, ys, xs, p),
            bunit=str(hdr.get("BUNIT", hdul[0].header.get("BUNIT", ""))),
            instrument=str(hdr.get("INSTRUME", hdul[0].header.get("INSTRUME", ""))).strip(),
            path=p,
            noise_kind=kind,
            _data=d_ext,
            _var=v_ext,
            _sel=(ls, ys, xs),
            _dq=q_ext,
            file_format=fmt,
            dq_rule=dq_rule,
            _dq_bits=dq_bits,
            _lsf=lsf,
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
