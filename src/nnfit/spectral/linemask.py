"""Masks of emission and sky lines for stellar-population fits (a default list, editable).

A line list is a sequence of ``(name, wavelength_A, half_width_kms, frame)`` with frame
``"rest"`` (galaxy emission lines, shifted with the galaxy) or ``"observed"`` (sky lines and
telluric bands, fixed on the detector). Wavelengths are in air, as MUSE and MILES are.
:func:`read_line_list` reads the same four columns from a text file so users can edit them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnfit.spectral.model import C_KMS

__all__ = ["DEFAULT_LINES", "line_mask", "read_line_list"]

DEFAULT_LINES: tuple[tuple[str, float, float, str], ...] = (
    # Galaxy emission lines (air, A), masked +-800 km/s as GIST's default specMask does.
    ("Hdelta", 4101.74, 800.0, "rest"),
    ("Hgamma", 4340.47, 800.0, "rest"),
    ("HeII", 4685.71, 800.0, "rest"),
    ("Hbeta", 4861.33, 800.0, "rest"),
    ("[OIII]4959", 4958.92, 800.0, "rest"),
    ("[OIII]5007", 5006.84, 800.0, "rest"),
    ("[NI]5200", 5199.35, 800.0, "rest"),
    ("HeI5876", 5875.62, 800.0, "rest"),
    ("[OI]6300", 6300.30, 800.0, "rest"),
    ("[OI]6364", 6363.78, 800.0, "rest"),
    ("[NII]6548", 6548.03, 800.0, "rest"),
    ("Halpha", 6562.80, 800.0, "rest"),
    ("[NII]6583", 6583.41, 800.0, "rest"),
    ("[SII]6716", 6716.47, 800.0, "rest"),
    ("[SII]6731", 6730.85, 800.0, "rest"),
    # Strong night-sky lines and telluric bands on the detector.
    ("sky[OI]5577", 5577.34, 400.0, "observed"),
    ("skyNaD", 5892.94, 600.0, "observed"),
    ("sky[OI]6300", 6300.30, 400.0, "observed"),
    ("sky[OI]6364", 6363.78, 400.0, "observed"),
    ("telluric-B", 6880.0, 700.0, "observed"),
    ("telluric-A", 7630.0, 1800.0, "observed"),
)


def read_line_list(path: str | os.PathLike[str]) -> list[tuple[str, float, float, str]]:
    """Read ``name wavelength_A half_width_kms frame`` rows (whitespace or commas; # comments).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "lines.txt"
    >>> _ = p.write_text("# my list\\nHalpha 6562.80 1000 rest\\n")
    >>> read_line_list(p)
    [('Halpha', 6562.8, 1000.0, 'rest')]
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--mask-lines: {p} does not exist")
    out = []
    for i, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) != 4 or line[3] not in ("rest", "observed"):
            raise ValueError(
                f"--mask-lines {p}:{i}: expected 'name wavelength_A half_width_kms rest|observed'"
                f"; got {raw.strip()!r}"
            )
        try:
            out.append((line[0], float(line[1]), float(line[2]), line[3]))
        except ValueError:
            raise ValueError(
                f"--mask-lines {p}:{i}: wavelength and width must be numbers"
            ) from None
    return out


def line_mask(
    ln_lam_rest: np.ndarray,
    redshift: float,
    lines: tuple | list = DEFAULT_LINES,
) -> np.ndarray:
    """Boolean mask (True = fitted) of rest-frame ln(lambda) pixels outside every line window.

    A ``"rest"`` line masks ``|ln(lambda / lambda_line)| <= w / c``; an ``"observed"`` one the
    same window around ``lambda_line / (1 + z)`` in the rest frame.

    Examples
    --------
    >>> ln = np.log(np.linspace(6500.0, 6600.0, 101))
    >>> m = line_mask(ln, 0.0, [("Halpha", 6562.8, 300.0, "rest")])
    >>> int((~m).sum())
    13
    """
    ln = np.asarray(ln_lam_rest, dtype=np.float64)
    keep = np.ones(ln.size, dtype=bool)
    for _name, lam, width, frame in lines:
        centre = np.log(lam) - (np.log1p(redshift) if frame == "observed" else 0.0)
        keep &= np.abs(ln - centre) > width / C_KMS
    return keep
