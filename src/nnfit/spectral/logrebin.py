"""Flux-conserving rebinning of spectra onto a grid uniform in ln(lambda) (a velocity step).

Pixels are step functions between their edges. The new value of pixel ``j`` is the mean flux
density over its edges, ``f_j = sum_i |new_j & old_i| f_i / |new_j|`` (overlaps in lambda), so
``sum_j f_j |new_j| = sum_i f_i |old_i|`` over the covered range: flux is conserved exactly and
the output stays a flux density in the input's unit. The map is a sparse matrix ``M`` with at
most two or three non-zeros per row; variances go through ``M**2`` (independent input pixels;
the covariance it creates between neighbouring output pixels is not kept).

Input pixel edges follow the input's sampling (:func:`pixel_edges`): arithmetic midpoints for
a linear (or irregular) grid, geometric midpoints for a grid uniform in ln(lambda) such as a
MaNGA ``LOGCUBE``'s, so that a spectrum already on the requested ln(lambda) grid maps onto
itself (the matrix is the identity to rounding).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from nnfit.spectral.model import C_KMS

__all__ = ["linear_pixel_edges", "log_grid", "log_rebin", "log_rebin_matrix", "pixel_edges"]


def linear_pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Pixel edges (n + 1,) of pixel centres ``wave`` (n,): midpoints, ends mirrored.

    Examples
    --------
    >>> linear_pixel_edges(np.array([1.0, 2.0, 3.0])).tolist()
    [0.5, 1.5, 2.5, 3.5]
    """
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or not np.all(np.diff(w) > 0):
        raise ValueError("wave must be 1-D, strictly increasing, with at least 2 pixels")
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[1.5 * w[0] - 0.5 * w[1]], mid, [1.5 * w[-1] - 0.5 * w[-2]]])


def pixel_edges(wave: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """Pixel edges (n + 1,) of pixel centres ``wave`` (n,), in the grid's own spacing.

    A grid uniform in ln(lambda) (every ``ln(wave[i+1] / wave[i])`` equal to ``rtol`` of their
    mean) gets geometric midpoints, its ends mirrored in ln(lambda): the edges of pixels
    uniform in ln(lambda), whose centres are those midpoints in ln(lambda) (the FITS
    ``WAVE-LOG`` axis, MaNGA's ``LOGCUBE``). Any other grid gets
    :func:`linear_pixel_edges`. Arithmetic midpoints of a log-spaced grid would widen every
    pixel's red half at the expense of its blue one, by ``d ln(lambda)^2 / 8`` of a pixel.

    Parameters
    ----------
    wave : array (n,)
        Pixel centres, strictly increasing, at least 2.
    rtol : float
        How uniform the ln(lambda) steps must be, relative to their mean, to count as a log grid.

    Examples
    --------
    >>> w = 5000.0 * np.exp(1e-4 * np.arange(4))
    >>> bool(np.allclose(np.diff(np.log(pixel_edges(w))), 1e-4, rtol=1e-9, atol=0))
    True
    >>> pixel_edges(np.array([1.0, 2.0, 3.0])).tolist()
    [0.5, 1.5, 2.5, 3.5]
    """
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or not np.all(np.diff(w) > 0) or w[0] <= 0:
        raise ValueError("wave must be 1-D, positive, strictly increasing, with at least 2 pixels")
    d = np.diff(np.log(w))
    if w.size < 3 or np.max(np.abs(d - d.mean())) > rtol * d.mean():
        # two pixels cannot tell a log grid from a linear one
        return linear_pixel_edges(w)
    ln = np.log(w)
    mid = 0.5 * (ln[1:] + ln[:-1])
    return np.exp(np.concatenate([[1.5 * ln[0] - 0.5 * ln[1]], mid, [1.5 * ln[-1] - 0.5 * ln[-2]]]))


def log_grid(lam_lo: float, lam_hi: float, velscale: float) -> tuple[np.ndarray, np.ndarray]:
    """A grid uniform in ln(lambda) from edge ``lam_lo`` with ``velscale`` km/s pixels.

    ``n = floor(ln(lam_hi / lam_lo) / (velscale / c))`` whole pixels fit before ``lam_hi``.

    Returns
    -------
    ln_edges : ndarray (n + 1,)
    ln_lam : ndarray (n,)
        Pixel centres in ln(lambda) (midpoints of the edges: pPXF's convention).

    Examples
    --------
    >>> e, c = log_grid(5000.0, 5010.0, 60.0)
    >>> e.size, bool(np.allclose(np.diff(e), 60.0 / 299792.458))
    (10, True)
    """
    if not (lam_hi > lam_lo > 0):
        raise ValueError(f"need 0 < lam_lo < lam_hi; got {lam_lo}, {lam_hi}")
    if not velscale > 0:
        raise ValueError(f"velscale must be > 0 km/s; got {velscale}")
    d = velscale / C_KMS
    n = int(np.floor(np.log(lam_hi / lam_lo) / d * (1 + 1e-12)))
    if n < 1:
        raise ValueError(f"range {lam_lo}-{lam_hi} A is narrower than one {velscale} km/s pixel")
    edges = np.log(lam_lo) + d * np.arange(n + 1)
    return edges, 0.5 * (edges[1:] + edges[:-1])


def log_rebin_matrix(edges_in: np.ndarray, ln_edges_out: np.ndarray) -> sp.csr_matrix:
    """Sparse (n_out, n_in) map of flux densities from lambda pixels to ln(lambda) pixels.

    ``M[j, i] = |out_j & in_i| / |out_j|`` with both intervals in lambda. Output pixels that
    reach outside the input get the overlap that exists (a row sum below 1): check coverage
    with the row sums.

    Parameters
    ----------
    edges_in : array (n_in + 1,)
        Input pixel edges in Angstrom, increasing.
    ln_edges_out : array (n_out + 1,)
        Output pixel edges in ln(Angstrom), increasing.
    """
    ei = np.asarray(edges_in, dtype=np.float64)
    eo = np.exp(np.asarray(ln_edges_out, dtype=np.float64))
    if not (np.all(np.diff(ei) > 0) and np.all(np.diff(eo) > 0)):
        raise ValueError("pixel edges must be strictly increasing")
    n_in, n_out = ei.size - 1, eo.size - 1
    # Each output pixel overlaps input pixels first..last (by index); few per pixel.
    first = np.clip(np.searchsorted(ei, eo[:-1], side="right") - 1, 0, n_in - 1)
    last = np.clip(np.searchsorted(ei, eo[1:], side="left") - 1, 0, n_in - 1)
    width = int((last - first).max(initial=0)) + 1
    rows, cols, vals = [], [], []
    for k in range(width):
        i = first + k
        ok = i <= last
        j = np.flatnonzero(ok)
        ii = i[ok]
        ov = np.minimum(eo[1:][j], ei[ii + 1]) - np.maximum(eo[:-1][j], ei[ii])
        pos = ov > 0
        rows.append(j[pos])
        cols.append(ii[pos])
        vals.append(ov[pos] / (eo[1:][j[pos]] - eo[:-1][j[pos]]))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_out, n_in),
    )


def log_rebin(
    wave: np.ndarray,
    spectra: np.ndarray,
    *,
    velscale: float | None = None,
    variance: np.ndarray | None = None,
    ln_edges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, float]:
    """Rebin spectra ``(..., n)`` sampled at ``wave`` onto a uniform ln(lambda) grid.

    Parameters
    ----------
    wave : array (n,)
        Pixel centres in Angstrom, increasing; edges from :func:`pixel_edges` (geometric
        midpoints when ``wave`` is uniform in ln(lambda), else arithmetic ones).
    spectra : array (..., n)
        Flux densities; the last axis is wavelength.
    velscale : float, optional
        Output pixel in km/s (``c * d ln lambda``). Default: the input's own, the same number
        of pixels over the same range (pPXF's ``log_rebin`` default).
    variance : array like ``spectra``, optional
        Propagated as ``M**2 @ variance``.
    ln_edges : array, optional
        Explicit output edges in ln(Angstrom) (then ``velscale`` is ignored).

    Returns
    -------
    out : ndarray (..., n_out)
    out_variance : ndarray or None
    ln_lam : ndarray (n_out,)
        Output pixel centres, ln(Angstrom).
    velscale : float
        The output step in km/s.

    Notes
    -----
    Output pixel ``j`` holds ``(1/|out_j|) * integral over out_j of f(lambda) d lambda`` for
    the piecewise-constant input ``f``: the same integral as pPXF's ``log_rebin`` with
    ``flux=False`` (Cappellari 2017, sec. 2.3), written as a sparse matrix so that variances
    propagate with the same weights.

    References
    ----------
    Cappellari, M. 2017, MNRAS 466, 798. doi:10.1093/mnras/stw3020

    Examples
    --------
    >>> wave = 5000.0 + 1.25 * np.arange(400)
    >>> out, _, ln_lam, vs = log_rebin(wave, np.ones(400))
    >>> bool(np.allclose(out, 1.0)), out.size, round(vs, 2)
    (True, 400, 71.44)
    """
    w = np.asarray(wave, dtype=np.float64)
    edges = pixel_edges(w)
    if ln_edges is None:
        if velscale is None:
            velscale = C_KMS * np.log(edges[-1] / edges[0]) / w.size
        ln_edges, _ = log_grid(edges[0], edges[-1], float(velscale))
    ln_edges = np.asarray(ln_edges, dtype=np.float64)
    velscale = float(C_KMS * np.mean(np.diff(ln_edges)))
    M = log_rebin_matrix(edges, ln_edges)
    x = np.asarray(spectra, dtype=np.float64)
    if x.shape[-1] != w.size:
        raise ValueError(f"spectra must have {w.size} pixels on the last axis; got {x.shape}")
    flat = x.reshape(-1, w.size)
    out = (M @ flat.T).T.reshape(*x.shape[:-1], M.shape[0])
    out_var = None
    if variance is not None:
        v = np.asarray(variance, dtype=np.float64)
        if v.shape != x.shape:
            raise ValueError(f"variance must have the shape of spectra {x.shape}; got {v.shape}")
        M2 = M.multiply(M).tocsr()
        out_var = (M2 @ v.reshape(-1, w.size).T).T.reshape(out.shape)
    ln_lam = 0.5 * (ln_edges[1:] + ln_edges[:-1])
    return out, out_var, ln_lam, velscale
