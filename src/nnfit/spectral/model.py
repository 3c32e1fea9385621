"""Exact building blocks of the spectral model: LOSVD kernels, FFT convolution, rebinning.

The model of one spaxel ``s`` and component ``c`` for population ``p`` is::

    A[s, c, p, :] = Rebin( LOSVD[s, :, c] (*) T_p )

The convolution runs on the template grid, which must be uniform in natural log-wavelength
(``ln lambda``) with step ``dlog``; a velocity ``v`` (km/s) is then a shift of
``ln(1 + v/c) / dlog`` template pixels (exact relativistic Doppler in ``lambda``, no small-``v``
approximation). The rebin maps the convolved template onto the observed grid.

Conventions (the contract other modules code against):

* Kernel: ``out[t] = sum_k kernel[k] * spec[t - (k - center)]``; index ``center`` is a zero
  shift, ``k > center`` shifts to the red. A line at ``lambda`` convolved with a delta LOSVD at
  velocity ``v`` lands at ``lambda * (1 + v/c)`` (its centroid, exactly).
* Sub-pixel shifts use linear interpolation between the two neighbouring pixels. This keeps the
  kernel non-negative, conserves its total weight (``kernel.sum() == losvd.sum()``) and puts the
  centroid of every velocity bin exactly at ``ln(1 + v/c)/dlog``; the price is a small extra
  broadening of ``frac*(1-frac)`` pixel^2 in variance (at most 1/4 pixel^2), far below the
  width of any LOSVD bin sampled at or above the template pixel scale.
* Convolution is linear (zero padded), never circular: nothing wraps around the grid ends.
* Rebin: ``y[l] = sum_t R[l, t] f[t]`` with ``R[l, t] = |obs_l intersect tem_t| / |obs_l|``, the
  overlap of the pixels' extents in ``ln lambda`` (pixel edges at the midpoints between centres,
  the outer edges half a pixel beyond the end centres), divided by the observed pixel's width.
  It is an average of the flux density per unit ``ln lambda``: a flat spectrum stays flat, and
  the integral ``sum_l y[l] |obs_l| == sum_t f[t] |tem_t|`` is conserved for every template
  pixel that lies inside the observed range (pixels straddling the ends count by their overlap).

One module, though long: the velocity-to-shift conventions, LOSVD kernels, FFT convolution,
rebin operator and :class:`ModelRowComputer` are the parts of one model row, which the
HyperCube build and the operators compose; none is used apart from the others.

Examples
--------
>>> import numpy as np
>>> round(float(velocity_to_shift(C_KMS, np.log(2.0))), 12)  # v = c doubles lambda
1.0
>>> kernel, center = losvd_to_kernel(np.array([1.0]), np.array([0.0]), 1e-4)
>>> kernel.tolist(), center
([1.0], 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp

from nnfit.operators import LinearOperator

C_KMS = 299792.458
"""Speed of light in km/s."""

__all__ = [
    "C_KMS",
    "ConvolutionOperator",
    "ModelRowComputer",
    "RebinOperator",
    "conv_fft_length",
    "convolve_spectra",
    "convolve_spectra_adjoint",
    "grid_step",
    "kernel_support",
    "losvd_kernel_matrix",
    "losvd_to_kernel",
    "mean_flux",
    "model_rows",
    "pixel_edges",
    "rebin_matrix",
    "shifted_template_dictionary",
    "velocity_to_shift",
]


def velocity_to_shift(v_kms, dlog: float):
    """Shift in template pixels of a line-of-sight velocity: ``ln(1 + v/c) / dlog``.

    Parameters
    ----------
    v_kms : float or array
        Velocity in km/s (positive = receding = redshift). Must be > -c.
    dlog : float
        Template pixel size in natural log-wavelength.

    Returns
    -------
    float or ndarray
        Shift in (fractional) template pixels; positive moves to longer wavelength.

    Examples
    --------
    >>> s = velocity_to_shift(np.array([-300.0, 0.0, 300.0]), 1e-4)
    >>> np.round(s, 4).tolist()
    [-10.0119, 0.0, 10.0019]
    """
    v = np.asarray(v_kms, dtype=np.float64)
    if np.any(v <= -C_KMS):
        raise ValueError(f"velocities must be > -c = -{C_KMS} km/s; got min {float(v.min())}")
    if not dlog > 0:
        raise ValueError(f"dlog must be > 0; got {dlog}")
    out = np.log1p(v / C_KMS) / dlog
    return float(out) if out.ndim == 0 else out


def grid_step(pix: np.ndarray) -> float:
    """Mean step of a uniform grid, ``(pix[-1] - pix[0]) / (n - 1)`` (exact for uniform grids).

    Examples
    --------
    >>> grid_step(np.linspace(8.0, 9.0, 11))
    0.1
    """
    pix = np.asarray(pix, dtype=np.float64)
    if pix.ndim != 1 or pix.size < 2:
        raise ValueError(f"grid must be 1-D with at least 2 points; got shape {pix.shape}")
    return float((pix[-1] - pix[0]) / (pix.size - 1))


def kernel_support(vel_pix: np.ndarray, dlog: float) -> tuple[int, int]:
    """Integer pixel offsets ``(o_min, o_max)`` a kernel on this velocity grid can touch.

    The support depends only on the velocity grid, so every LOSVD on the same grid gives a
    kernel of the same length ``o_max - o_min + 1`` with ``center = -o_min``.

    Examples
    --------
    >>> kernel_support(np.array([-250.0, 0.0, 250.0]), 1e-4)
    (-9, 9)
    """
    shifts = np.atleast_1d(velocity_to_shift(np.asarray(vel_pix, dtype=np.float64), dlog))
    # Linear interpolation of a shift d touches floor(d) and, if d is fractional, ceil(d).
    lo = int(np.floor(shifts.min()))
    hi = int(np.ceil(shifts.max()))
    return min(lo, 0), max(hi, 0)


def losvd_kernel_matrix(vel_pix: np.ndarray, dlog: float) -> tuple[sp.csr_matrix, int]:
    """Sparse map ``W`` (V, K) from LOSVD bin weights to kernel taps, and the kernel centre.

    ``kernel = losvd_v @ W``; each velocity bin spreads its weight over the two template pixels
    around its exact shift (linear interpolation), so every row of ``W`` sums to 1.

    Examples
    --------
    >>> W, center = losvd_kernel_matrix(np.array([0.0]), 1e-4)
    >>> W.toarray().tolist(), center
    ([[1.0]], 0)
    """
    vel = np.atleast_1d(np.asarray(vel_pix, dtype=np.float64))
    if vel.ndim != 1:
        raise ValueError(f"vel_pix must be 1-D; got shape {vel.shape}")
    shifts = np.atleast_1d(velocity_to_shift(vel, dlog))
    o_min, o_max = kernel_support(vel, dlog)
    center = -o_min
    K = o_max - o_min + 1
    base = np.floor(shifts)
    frac = shifts - base
    k0 = base.astype(np.int64) + center
    rows = np.repeat(np.arange(vel.size), 2)
    cols = np.stack([k0, k0 + 1], axis=1).ravel()
    vals = np.stack([1.0 - frac, frac], axis=1).ravel()
    keep = vals != 0.0
    W = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(vel.size, K))
    return W, center


def losvd_to_kernel(losvd_v, vel_pix, dlog: float) -> tuple[np.ndarray, int]:
    """Turn a LOSVD histogram into a convolution kernel on template pixels.

    Parameters
    ----------
    losvd_v : array (V,)
        Non-negative LOSVD weights at the velocities ``vel_pix``. Their sum (the component's
        amplitude in this spaxel) is carried into the kernel unchanged.
    vel_pix : array (V,)
        Bin-centre velocities in km/s.
    dlog : float
        Template pixel size in natural log-wavelength.

    Returns
    -------
    kernel : ndarray (K,) float64
        Kernel taps; ``kernel.sum() == losvd_v.sum()`` up to rounding.
    center : int
        Index of the zero-shift tap: ``out[t] = sum_k kernel[k] * spec[t - (k - center)]``.

    Examples
    --------
    >>> k, c = losvd_to_kernel([0.5, 0.5], [0.0, 150.0], 1e-4)
    >>> np.round(k, 4).tolist(), c    # 150 km/s = 5.0022 pixels
    ([0.5, 0.0, 0.0, 0.0, 0.0, 0.4989, 0.0011], 0)
    """
    w = np.asarray(losvd_v, dtype=np.float64)
    vel = np.asarray(vel_pix, dtype=np.float64)
    if w.shape != vel.shape or w.ndim != 1:
        raise ValueError(
            f"losvd_v must be 1-D with the shape of vel_pix {vel.shape}; got shape {w.shape}"
        )
    W, center = losvd_kernel_matrix(vel, dlog)
    return np.asarray(W.T @ w, dtype=np.float64), center


def conv_fft_length(n_pix: int, n_kernel: int) -> int:
    """FFT length for a zero-padded linear convolution: fast length >= ``n_pix + n_kernel - 1``.

    Examples
    --------
    >>> conv_fft_length(7561, 157)
    7776
    """
    return int(sfft.next_fast_len(int(n_pix) + int(n_kernel) - 1, real=True))


def _check_kernel(kernel, center: int) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 1 or k.size == 0:
        raise ValueError(f"kernel must be a non-empty 1-D array; got shape {k.shape}")
    if not 0 <= int(center) < k.size:
        raise ValueError(f"center must index the kernel, 0 <= center < {k.size}; got {center}")
    return k


def convolve_spectra(spectra, kernel, center: int) -> np.ndarray:
    """Linear (zero-padded) FFT convolution of spectra with a kernel, on the same grid.

    ``out[..., t] = sum_k kernel[k] * spectra[..., t - (k - center)]`` with ``spectra`` taken
    as zero outside ``0..T-1``; batched over the leading axes.

    Parameters
    ----------
    spectra : array (..., T)
    kernel : array (K,)
    center : int
        Zero-shift index of ``kernel``.

    Returns
    -------
    ndarray (..., T) float64

    Examples
    --------
    >>> convolve_spectra([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 1).round(12).tolist()
    [0.0, 0.0, 1.0, 0.0]
    """
    x = np.asarray(spectra, dtype=np.float64)
    k = _check_kernel(kernel, center)
    T = x.shape[-1]
    n = conv_fft_length(T, k.size)
    full = sfft.irfft(sfft.rfft(x, n=n, axis=-1) * sfft.rfft(k, n=n), n=n, axis=-1)
    return np.ascontiguousarray(full[..., center : center + T])


def convolve_spectra_adjoint(signal, kernel, center: int) -> np.ndarray:
    """Exact adjoint of :func:`convolve_spectra` (a correlation with the kernel).

    ``adj[..., u] = sum_t kernel[t + center - u] * signal[..., t]``.

    Examples
    --------
    >>> convolve_spectra_adjoint([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0], 1).round(12).tolist()
    [0.0, 1.0, 0.0, 0.0]
    """
    r = np.asarray(signal, dtype=np.float64)
    k = _check_kernel(kernel, center)
    T = r.shape[-1]
    n = conv_fft_length(T, k.size)
    z = np.zeros((*r.shape[:-1], n), dtype=np.float64)
    z[..., center : center + T] = r
    corr = sfft.irfft(sfft.rfft(z, axis=-1) * np.conj(sfft.rfft(k, n=n)), n=n, axis=-1)
    return np.ascontiguousarray(corr[..., :T])


def pixel_edges(pix: np.ndarray) -> np.ndarray:
    """Pixel edges (n+1,) of a monotonic increasing grid of centres: midpoints, ends mirrored.

    Examples
    --------
    >>> pixel_edges(np.array([0.0, 1.0, 3.0])).tolist()
    [-0.5, 0.5, 2.0, 4.0]
    """
    c = np.asarray(pix, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"grid must be 1-D with at least 2 points; got shape {c.shape}")
    d = np.diff(c)
    if not np.all(d > 0):
        i = int(np.argmax(~(d > 0)))
        raise ValueError(
            f"grid must be strictly increasing; found pix[{i + 1}]={c[i + 1]!r} <= pix[{i}]={c[i]!r}"
        )
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - 0.5 * d[0]], mid, [c[-1] + 0.5 * d[-1]]])


def rebin_matrix(tem_pix, obs_pix) -> sp.csr_matrix:
    """Sparse rebin operator R (L, T): overlap-weighted average in ``ln lambda``.

    ``R[l, t] = |obs_l intersect tem_t| / |obs_l|`` with pixel extents from
    :func:`pixel_edges`. Rows of observed pixels fully covered by the template grid sum to 1
    (a flat spectrum stays flat); ``sum_l |obs_l| R[l, t] = |tem_t|`` for template pixels inside
    the observed range (the integral of the flux density over ``ln lambda`` is conserved).
    Neither grid needs to be uniform; both must be strictly increasing.

    Examples
    --------
    >>> R = rebin_matrix(np.arange(6.0), np.array([0.5, 2.5, 4.5]))
    >>> R.toarray().tolist()
    [[0.5, 0.5, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]]
    """
    te = pixel_edges(tem_pix)
    oe = pixel_edges(obs_pix)
    T, L = te.size - 1, oe.size - 1
    a, b = oe[:-1], oe[1:]
    # Template pixels overlapping obs pixel l: t in [t0, t1] (clipped to the grid).
    t0 = np.clip(np.searchsorted(te, a, side="right") - 1, 0, T - 1)
    t1 = np.clip(np.searchsorted(te, b, side="left") - 1, 0, T - 1)
    width = b - a
    n_max = int(np.max(t1 - t0)) + 1 if L else 0
    rows, cols, vals = [], [], []
    for j in range(n_max):
        t = t0 + j
        ok = t <= t1
        tt = np.minimum(t, T - 1)
        ov = np.minimum(b, te[tt + 1]) - np.maximum(a, te[tt])
        ok &= ov > 0
        rows.append(np.nonzero(ok)[0])
        cols.append(tt[ok])
        vals.append(ov[ok] / width[ok])
    R = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(L, T)
    )
    R.sum_duplicates()
    R.sort_indices()
    return R


@dataclass
class ModelRowComputer:
    """Computes HyperCube slabs fast: template FFTs cached, kernels batched, sparse rebin.

    Parameters
    ----------
    templates_PT : array (P, T)
        Templates on the template grid (float64 math whatever the input dtype).
    vel_pix, tem_pix, obs_pix : arrays
        Velocity bin centres (km/s) and the two ``ln lambda`` grids.
    rebin : csr_matrix (L, T), optional
        Precomputed :func:`rebin_matrix` (computed if omitted).

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(64)
    >>> mc = ModelRowComputer(np.ones((2, 64)), np.array([0.0]), tem, tem[8:56:4])
    >>> mc.rows(np.array([2.0])).shape
    (2, 12)
    """

    templates_PT: np.ndarray
    vel_pix: np.ndarray
    tem_pix: np.ndarray
    obs_pix: np.ndarray
    rebin: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.templates_PT = np.asarray(self.templates_PT, dtype=np.float64)
        self.tem_pix = np.asarray(self.tem_pix, dtype=np.float64)
        self.obs_pix = np.asarray(self.obs_pix, dtype=np.float64)
        self.vel_pix = np.asarray(self.vel_pix, dtype=np.float64)
        if self.templates_PT.ndim != 2 or self.templates_PT.shape[1] != self.tem_pix.size:
            raise ValueError(
                f"templates_PT must be (P, T) with T = len(tem_pix) = {self.tem_pix.size}; "
                f"got shape {self.templates_PT.shape}"
            )
        self.dlog = grid_step(self.tem_pix)
        if self.rebin is None:
            self.rebin = rebin_matrix(self.tem_pix, self.obs_pix)
        self.rebin = sp.csr_matrix(self.rebin, dtype=np.float64)
        T = self.tem_pix.size
        self.W, self.center = losvd_kernel_matrix(self.vel_pix, self.dlog)
        self.K = self.W.shape[1]
        self.nfft = conv_fft_length(T, self.K)
        # Only the template pixels the rebin reads need to come out of the inverse FFT.
        used = np.flatnonzero(np.asarray(self.rebin.sum(axis=0)).ravel() != 0)
        self.t_lo = int(used.min()) if used.size else 0
        self.t_hi = int(used.max()) + 1 if used.size else 0
        self._R_cols = sp.csr_matrix(self.rebin[:, self.t_lo : self.t_hi].T)  # (T', L) CSR
        self._TF = sfft.rfft(self.templates_PT, n=self.nfft, axis=-1)  # (P, nF) complex128

    @property
    def n_pop(self) -> int:
        """Number of populations P."""
        return self.templates_PT.shape[0]

    @property
    def n_obs(self) -> int:
        """Number of observed pixels L."""
        return self.obs_pix.size

    def kernels(self, losvd: np.ndarray) -> np.ndarray:
        """Kernels (..., K) of LOSVDs (..., V) on this velocity grid."""
        lv = np.asarray(losvd, dtype=np.float64)
        return np.asarray(lv.reshape(-1, lv.shape[-1]) @ self.W.toarray()).reshape(
            *lv.shape[:-1], self.K
        )

    def rows(self, losvd_v: np.ndarray) -> np.ndarray:
        """The slab ``A[s, c, :, :]`` (P, L) float64 for one LOSVD (V,)."""
        kern = self.kernels(np.asarray(losvd_v, dtype=np.float64)[None, :])[0]
        kf = sfft.rfft(kern, n=self.nfft)
        return self._rows_from_kf(kf)

    def _rows_from_kf(self, kf: np.ndarray, p0: int = 0, p1: int | None = None, buf=None):
        TF = self._TF[p0:p1]
        if buf is None:
            buf = np.empty_like(TF)
        np.multiply(TF, kf, out=buf)
        full = sfft.irfft(buf, n=self.nfft, axis=-1, overwrite_x=True)
        # out[t] = full[t + center]; only t in [t_lo, t_hi) reach the rebin.
        conv = full[:, self.center + self.t_lo : self.center + self.t_hi]
        return conv @ self._R_cols  # (P', L): dense @ CSR (T', L)

    def tile(
        self, losvd_block: np.ndarray, p0: int = 0, p1: int | None = None, out=None
    ) -> np.ndarray:
        """Models (dS, dC, P', L) float32 for an LOSVD block (dS, V, dC), populations p0:p1."""
        lb = np.asarray(losvd_block, dtype=np.float64)
        dS, _, dC = lb.shape
        p1 = self.n_pop if p1 is None else p1
        if out is None:
            out = np.empty((dS, dC, p1 - p0, self.n_obs), dtype=np.float32)
        kern = self.kernels(np.moveaxis(lb, 1, 2))  # (dS, dC, K)
        kf = sfft.rfft(kern, n=self.nfft, axis=-1)
        buf = np.empty((p1 - p0, self._TF.shape[1]), dtype=np.complex128)
        for i in range(dS):
            for j in range(dC):
                if not kern[i, j].any():
                    out[i, j] = 0.0  # an empty LOSVD: exactly zero models
                    continue
                out[i, j] = self._rows_from_kf(kf[i, j], p0, p1, buf)
        return out


def model_rows(templates_PT, losvd_v, vel_pix, tem_pix, obs_pix, rebin=None) -> np.ndarray:
    """One HyperCube slab ``A[s, c, :, :] = Rebin(LOSVD[s, :, c] (*) T_p)`` as (P, L) float64.

    Parameters
    ----------
    templates_PT : array (P, T)
    losvd_v : array (V,)
    vel_pix : array (V,)
        LOSVD bin velocities, km/s.
    tem_pix, obs_pix : arrays (T,), (L,)
        ``ln lambda`` grids; the template grid must be uniform.
    rebin : csr_matrix (L, T), optional
        Precomputed :func:`rebin_matrix`.

    Examples
    --------
    >>> tem = np.log(5000.0) + 1e-4 * np.arange(40)
    >>> rows = model_rows(np.ones((1, 40)), [1.0], [0.0], tem, tem[10:30:2] + 0.5e-4)
    >>> np.allclose(rows, 1.0)
    True
    """
    mc = ModelRowComputer(np.asarray(templates_PT), vel_pix, tem_pix, obs_pix, rebin=rebin)
    return mc.rows(np.asarray(losvd_v, dtype=np.float64))


class ConvolutionOperator(LinearOperator):
    """:func:`convolve_spectra` as a :class:`~nnfit.operators.LinearOperator` on (T,) vectors.

    Examples
    --------
    >>> from nnfit.operators import dottest
    >>> dottest(ConvolutionOperator(np.array([0.2, 0.5, 0.3]), 1, 16)) < 1e-12
    True
    """

    def __init__(self, kernel: np.ndarray, center: int, n_pix: int) -> None:
        self.kernel = _check_kernel(kernel, center)
        self.center = int(center)
        self.model_shape = (int(n_pix),)
        self.data_shape = (int(n_pix),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return convolve_spectra(x, self.kernel, self.center)

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        return convolve_spectra_adjoint(r, self.kernel, self.center)


class RebinOperator(LinearOperator):
    """The sparse rebin ``R`` (L, T) as a :class:`~nnfit.operators.LinearOperator`.

    Examples
    --------
    >>> from nnfit.operators import dottest
    >>> dottest(RebinOperator(rebin_matrix(np.arange(8.0), np.array([1.5, 4.0])))) < 1e-12
    True
    """

    def __init__(self, rebin: sp.spmatrix) -> None:
        self.R = sp.csr_matrix(rebin, dtype=np.float64)
        self.data_shape = (self.R.shape[0],)
        self.model_shape = (self.R.shape[1],)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.R @ np.asarray(x, dtype=np.float64)

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        return self.R.T @ np.asarray(r, dtype=np.float64)


def shifted_template_dictionary(
    templates_PT: np.ndarray, rebin: sp.spmatrix, n_taps: int, center: int, n_extra: int = 0
) -> np.ndarray:
    """``Y[p, k, :] = rebin @ shift_{k-center}(T_p)`` as a C-contiguous (P, K, L) float64 array.

    ``shift_d(f)[t] = f[t - d]`` with zeros outside the grid (linear, never circular).
    ``n_extra`` more entries ``Y[:, K:K + n_extra]`` are allocated (uninitialised) for the
    caller to fill, so the dictionary never needs a second copy.
    """
    T_ = np.asarray(templates_PT, dtype=np.float64)
    P, T = T_.shape
    R = sp.csr_matrix(rebin, dtype=np.float64)
    L = R.shape[0]
    if R.shape[1] != T:
        raise ValueError(f"rebin must be (L, T) with T = {T}; got {R.shape}")
    M = max(center, n_taps - 1 - center)
    padded = np.zeros((T + 2 * M, P))
    padded[M : M + T] = T_.T
    Y = np.empty((P, n_taps + int(n_extra), L))
    for k in range(n_taps):
        d = k - center
        Y[:, k, :] = (R @ padded[M - d : M - d + T]).T
    return Y


def mean_flux(datacube: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean of each spaxel's spectrum over fitted, finite pixels (S,)."""
    y = np.asarray(datacube, dtype=np.float64)
    ok = np.isfinite(y)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)[None, :]
    return np.where(ok, y, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
