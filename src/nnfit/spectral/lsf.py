"""An instrument's line-spread function from a file: wavelength (A) against FWHM (A).

Accepted: a text table of two columns (wavelength, FWHM; ``#`` comments), or a FITS binary
table whose columns are found by name (wavelength: ``WAVE``, ``WAVELENGTH``, ``LAMBDA``,
``LAM``; FWHM: ``FWHM``), else its first two columns. Wavelengths in the cube's frame
(observed) and medium; the FWHM is interpolated linearly between the rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["LSFTable", "read_lsf_table"]

_WAVE_NAMES = ("WAVE", "WAVELENGTH", "LAMBDA", "LAM")


class LSFTable:
    """FWHM (A) as a function of wavelength (A), linear between tabulated rows.

    Beyond the table the end values hold (the templates are matched a little outside the
    data's range); :meth:`check_covers` refuses data outside the table.

    Examples
    --------
    >>> lsf = LSFTable([4800.0, 9300.0], [2.9, 2.4], source="table")
    >>> lsf(np.array([4800.0, 7050.0, 9500.0])).tolist()
    [2.9, 2.65, 2.4]
    """

    def __init__(self, wave, fwhm, source: str = "") -> None:
        w = np.asarray(wave, dtype=np.float64).ravel()
        f = np.asarray(fwhm, dtype=np.float64).ravel()
        where = f"LSF file {source}" if source else "LSF table"
        if w.size < 2 or w.size != f.size:
            raise ValueError(f"{where}: need two or more rows of (wavelength, FWHM); got {w.size}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(f))):
            raise ValueError(f"{where}: wavelengths and FWHMs must be finite numbers")
        if np.any(np.diff(w) <= 0):
            raise ValueError(f"{where}: wavelengths must increase strictly, row after row")
        if np.any(f <= 0):
            raise ValueError(f"{where}: the FWHM must be > 0 Angstrom in every row")
        self.wave, self.fwhm, self.source = w, f, source
        self.lam_range = (float(w[0]), float(w[-1]))

    def __call__(self, lam: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), self.wave, self.fwhm)

    def check_covers(self, lo: float, hi: float) -> None:
        """Refuse data wavelengths ``lo..hi`` (A) outside the table."""
        a, b = self.lam_range
        if lo < a * (1 - 1e-9) or hi > b * (1 + 1e-9):
            raise ValueError(
                f"LSF file {self.source}: covers {a:.1f}-{b:.1f} A; the cube's selection is "
                f"{lo:.1f}-{hi:.1f} A (trim --lam-range or extend the table)"
            )

    def __repr__(self) -> str:
        return f"LSFTable({self.source!r}, {self.wave.size} rows, {self.lam_range})"


def read_lsf_table(path: str | os.PathLike[str]) -> LSFTable:
    """Read an LSF file (see the module docstring).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a two-column table of positive FWHMs over increasing wavelengths.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"LSF file {p}: no such file")
    head = p.read_bytes()[:6]
    if head == b"SIMPLE":
        from astropy.io import fits
        from astropy.table import Table

        with fits.open(p) as hdul:
            tabs = [h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)]
            if not tabs:
                raise ValueError(f"LSF file {p}: no table extension (wavelength, FWHM)")
            t = Table.read(tabs[0])
        names = {n.upper(): n for n in t.colnames}
        wcol = next((names[n] for n in _WAVE_NAMES if n in names), None)
        fcol = names.get("FWHM")
        if wcol is None or fcol is None:
            if len(t.colnames) < 2:
                raise ValueError(f"LSF file {p}: the table needs two columns (wavelength, FWHM)")
            wcol, fcol = t.colnames[:2]
        return LSFTable(np.asarray(t[wcol]), np.asarray(t[fcol]), source=str(p))
    try:
        arr = np.loadtxt(p, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(
            f"LSF file {p}: not a text table of numbers (wavelength FWHM per row): {exc}"
        ) from None
    if arr.shape[1] != 2:
        raise ValueError(f"LSF file {p}: need 2 columns (wavelength, FWHM); got {arr.shape[1]}")
    return LSFTable(arr[:, 0], arr[:, 1], source=str(p))
