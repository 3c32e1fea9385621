"""Exact template placement: band-limited LOSVD kernels and the grid offset as a phase.

This is the ``kernel="fourier"`` model, pPXF's (Cappellari 2017, Sec. 3.2) in the
matrix-free form of :mod:`nnfit.spectral.cube_operator`. For spaxel ``s``, component ``c`` and
template ``T_p`` on a uniform ``ln lambda`` grid of step ``dlog``::

    A[s, c, p, l] = (1/r) sum_{i<r} (T_p (*) k_sc)(b + r l + i)

``(*)`` is the convolution of the band-limited (Whittaker-Shannon) continuations of the
sampled template and kernel, evaluated at fractional template positions; ``r`` is the integer
ratio of the observed to the template step and ``b`` the (fractional) template position of
observed pixel 0's first sample, so ``b + r l + (r - 1)/2`` is observed pixel ``l``'s centre:
pPXF's ``velscale_ratio`` average and its ``vsyst`` phase. Nothing is interpolated linearly,
so nothing broadens the lines.

It is computed as: ``b = j0 + f`` (``j0`` integer, ``|f| <= 1/2``, ``b`` including the
systemic shift); each template is advanced by ``f`` once, exactly, in Fourier space
(``T_f[m] = T(m + f)``); the kernel is a set of taps on integer template-pixel shifts; the
observed pixels select (and average) template pixels ``j0 + r l + i``. The taps are:

* LOSVD histograms: each bin is a delta at its shift ``d_v = ln_shift(v) / dlog`` pixels.
  A bin at an integer shift (bins at multiples of the template step in the ``"ppxf"``
  convention) is one tap, exactly. A fractional shift is the band-limited delta
  ``sinc(n - d_v)`` (:func:`bin_kernel_matrix`).
* Gauss-Hermite moments ``(V, sigma, h3, h4)``: the taps are the inverse FFT of pPXF's
  analytic transform (:func:`nnfit.spectral.losvd.gauss_hermite_rfft`) on
  ``[V - n_sigma sigma - half_width, V + n_sigma sigma + half_width]`` pixels
  (:func:`moment_kernels`).

A fractional shift makes a kernel's transform jump at the Nyquist frequency, so its taps decay
only as ``1/n``. The ``1/n`` and ``1/n^2`` parts of that tail are the same sequences for every
kernel: :func:`nyquist_tail` applies them to each template once, and they enter the dictionary
as two extra entries with per-kernel coefficients, so the kernels' own taps stop
``half_width`` pixels beyond their core with an ``O(n^-3)`` remainder. That remainder is the
only approximation in the model; its size is measured against closed forms and pPXF in the
tests.

A common integer shift of all taps (from an observed-frame velocity grid) is moved into
``j0`` and a systemic velocity ``vsyst`` joins the phase ``f``, so the kernel covers only the
LOSVD's own width: observed-frame and rest-frame fits build identical kernels.

When the observed grid is not a log-uniform resampling of the template grid (steps not an
integer multiple of the template step, or a grid uniform in lambda such as MUSE's) to within
:data:`UNIFORM_TOL_PX` template pixels, the selection becomes the overlap-average rebin of
:func:`nnfit.spectral.model.rebin_matrix` and ``f = 0``; the kernel stays band-limited.

One module, though just over 500 lines: one construction (placing a band-limited LOSVD kernel
on the observed grid) with its grid classification and the fallback it chooses between.

References
----------
Cappellari M., 2017, MNRAS, 466, 798, doi:10.1093/mnras/stw3020.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp

from nnfit.spectral.losvd import gauss_hermite_rfft, ln_shift
from nnfit.spectral.model import grid_step, rebin_matrix, shifted_template_dictionary

__all__ = [
    "HALF_WIDTH",
    "KERNELS",
    "MAX_HALF_WIDTH",
    "TAIL_TOL",
    "UNIFORM_TOL_PX",
    "Placement",
    "bin_kernel_matrix",
    "check_coverage",
    "exact_model",
    "moment_kernels",
    "nyquist_tail",
    "phase_shift",
    "place_grids",
]

KERNELS = ("linear", "fourier")
"""``"linear"``: linear split of each bin and overlap rebin (stores written before the exact
model; kept so they open unchanged). ``"fourier"``: this module's exact placement."""

UNIFORM_TOL_PX = 0.01
"""An observed grid within this many template pixels of a uniform one is treated as uniform
(SDSS's float32 ``loglam`` jitters by ~1e-3 pixel around its uniform grid)."""

HALF_WIDTH = 24
"""Template pixels of band-limited tail kept on each side of a fractional LOSVD bin."""

MAX_HALF_WIDTH = 64
"""Largest tail kept on each side of a Gauss-Hermite kernel (see :func:`moment_kernels`)."""

TAIL_TOL = 1e-4
"""Gauss-Hermite kernels keep their band-limited tail down to about this tap size."""

_INTEGER_TOL = 1e-9


@dataclass
class Placement:
    """Where the observed pixels sit on the template grid (see the module docstring).

    Attributes
    ----------
    uniform : bool
        True when the observed grid is a log-uniform resampling (phase + selection).
    ratio : int
        Observed step / template step (1 when ``uniform`` is False).
    start : float
        ``b``: template position of observed pixel 0's first sample (``uniform`` only); in
        :func:`exact_model`'s result it includes the systemic shift ``-ln_shift(vsyst)/dlog``.
    j0 : int
        ``round(start)``.
    frac : float
        ``start - j0``, the phase applied to the templates, in ``[-1/2, 1/2]``.
    max_dev_px : float
        Largest deviation of the observed grid from the uniform one, template pixels.
    """

    uniform: bool
    ratio: int
    start: float
    j0: int
    frac: float
    max_dev_px: float

    def selection(self, n_tem: int, n_obs: int, offset: int = 0) -> sp.csr_matrix:
        """``R (L, T)``: observed pixel ``l`` averages template pixels ``j0 - offset + r l + i``.

        Raises ``ValueError`` when a selected pixel falls outside ``[0, T)``.
        """
        r = self.ratio
        cols = (self.j0 - offset) + r * np.arange(n_obs)[:, None] + np.arange(r)[None, :]
        if cols.min() < 0 or cols.max() >= n_tem:
            raise ValueError(
                f"the observed range (template pixels {int(cols.min())}..{int(cols.max())} after "
                f"the systemic shift) is not covered by the {n_tem} template pixels; extend the "
                "templates or check vsyst / the velocity grid"
            )
        rows = np.repeat(np.arange(n_obs), r)
        return sp.csr_matrix(
            (np.full(cols.size, 1.0 / r), (rows, cols.ravel())), shape=(n_obs, n_tem)
        )


def place_grids(tem_pix, obs_pix, tol_px: float = UNIFORM_TOL_PX) -> Placement:
    """Decide whether ``obs_pix`` is a log-uniform resampling of ``tem_pix`` and where it sits.

    Parameters
    ----------
    tem_pix : array (T,)
        Uniform template grid, natural ``ln lambda``.
    obs_pix : array (L,)
        Observed grid, natural ``ln lambda``.
    tol_px : float
        Largest deviation (template pixels) from a uniform grid with an integer step ratio
        still treated as uniform.

    Examples
    --------
    >>> tem = np.log(4000.0) + 1e-4 * np.arange(100)
    >>> p = place_grids(tem, tem[10:90:2] + 0.3e-4)
    >>> p.uniform, p.ratio, round(p.start, 6), p.j0, round(p.frac, 6)
    (True, 2, 9.8, 10, -0.2)
    """
    tem = np.asarray(tem_pix, dtype=np.float64)
    obs = np.asarray(obs_pix, dtype=np.float64)
    dlog = grid_step(tem)
    u = (obs - tem[0]) / dlog
    L = u.size
    step = (u[-1] - u[0]) / (L - 1) if L > 1 else 1.0
    r = round(step)
    if r >= 1:
        u0 = float(np.mean(u - r * np.arange(L)))
        dev = float(np.max(np.abs(u - (u0 + r * np.arange(L)))))
    else:
        u0, dev = float(u[0]), np.inf
    if r >= 1 and dev <= tol_px:
        start = u0 - 0.5 * (r - 1)
        j0 = int(np.round(start))
        return Placement(True, r, start, j0, start - j0, dev)
    return Placement(False, 1, float(u[0]), 0, 0.0, dev)


def phase_shift(templates, frac: float, n_fft: int | None = None) -> np.ndarray:
    """Templates advanced by ``frac`` pixels, band-limited: ``out[m] = T(m + frac)``.

    The shift is a phase ``exp(+i omega frac)`` on the zero-padded FFT (length ``n_fft``,
    default the next fast length >= 2T), as pPXF applies ``vsyst``.

    Examples
    --------
    >>> t = np.cos(2 * np.pi * np.arange(64) / 16.0)
    >>> out = phase_shift(t[None, :], 0.25, n_fft=64)[0]
    >>> bool(np.allclose(out, np.cos(2 * np.pi * (np.arange(64) + 0.25) / 16.0)))
    True
    """
    T_ = np.asarray(templates, dtype=np.float64)
    if frac == 0.0:
        return T_.copy()
    T = T_.shape[-1]
    n = int(n_fft) if n_fft else int(sfft.next_fast_len(2 * T, real=True))
    w = 2.0 * np.pi * sfft.rfftfreq(n)
    ph = np.exp(1j * w * frac)
    if n % 2 == 0:
        ph[-1] = np.cos(np.pi * frac)  # the real part at Nyquist, as an irfft keeps it
    return sfft.irfft(sfft.rfft(T_, n=n, axis=-1) * ph, n=n, axis=-1)[..., :T]


def nyquist_tail(templates, half_width: int, power: int = 1) -> np.ndarray:
    """Templates convolved with ``t[n] = (-1)^n / (pi n^power)`` for ``|n| > half_width``.

    A kernel ``k`` whose transform ``K`` jumps at the Nyquist frequency (any fractional shift)
    has taps ``k[n] = (-1)^n [Im K(pi) / (pi n) + Re K'(pi) / (pi n^2) + O(n^-3)]``
    (integration by parts of the inverse transform). Those slowly decaying parts are the same
    sequences for every kernel, so they are applied once per template here (over the whole
    template length, by FFT) and enter the model as two extra dictionary entries with
    coefficients ``Im K(pi)`` and ``Re K'(pi)``; a kernel's own taps then need only reach
    ``half_width``, beyond which they differ from the exact ones by ``O(n^-3)``.

    Examples
    --------
    >>> out = nyquist_tail(np.ones((1, 41)), 4)
    >>> out.shape, bool(abs(out[0, 20]) < 1e-12)  # the odd tail cancels on a flat spectrum
    ((1, 41), True)
    """
    T_ = np.asarray(templates, dtype=np.float64)
    T = T_.shape[-1]
    t = _tail_sequence(np.arange(-T, T + 1), half_width, power)
    nfft = int(sfft.next_fast_len(3 * T + 1, real=True))
    full = sfft.irfft(sfft.rfft(T_, n=nfft, axis=-1) * sfft.rfft(t, n=nfft), n=nfft, axis=-1)
    return np.ascontiguousarray(full[..., T : 2 * T])  # t's index 0 sits at position T


def _tail_sequence(n: np.ndarray, half_width: int, power: int) -> np.ndarray:
    n = np.asarray(n, dtype=np.int64)
    far = np.abs(n) > half_width
    out = np.zeros(n.shape)
    out[far] = np.where(n[far] % 2 == 0, 1.0, -1.0) / (np.pi * n[far].astype(float) ** power)
    return out


def bin_kernel_matrix(shifts_px, half_width: int = HALF_WIDTH) -> tuple[np.ndarray, int, int]:
    """Taps of delta LOSVD bins at (fractional) template-pixel shifts: ``(W, center, o)``.

    ``o`` is the common integer shift taken out of every bin (the caller moves it into the
    selection); tap ``k < K`` is a shift of ``k - center + o`` pixels. An integer shift is one
    tap of weight 1. A fractional shift ``d`` is the band-limited delta ``sinc(n - d)``: its
    taps on the kernel's support (all shifts plus ``half_width`` each side), and its ``1/n``
    and ``1/n^2`` tails beyond ``half_width`` as the coefficients ``-sin(pi d)`` and
    ``-d sin(pi d)`` of :func:`nyquist_tail` in two extra last columns (present only when
    some shift is fractional): ``W`` is (V, K) or (V, K + 2).

    Examples
    --------
    >>> W, center, o = bin_kernel_matrix([100.0, 101.0, 102.0])
    >>> W.tolist(), center, o
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 1, 101)
    """
    d = np.atleast_1d(np.asarray(shifts_px, dtype=np.float64))
    o = int(np.round(0.5 * (d.min() + d.max())))
    d = d - o
    frac_bins = np.abs(d - np.round(d)) > _INTEGER_TOL
    hw = int(half_width) if frac_bins.any() else 0
    if hw:  # symmetric, so the number of taps does not depend on the bins' sub-pixel phase
        half = int(np.ceil(0.5 * (d.max() - d.min()) + 0.5)) + hw
        lo, hi = -half, half
    else:
        lo, hi = int(np.round(d.min())), int(np.round(d.max()))
    center = -lo
    K = hi - lo + 1
    n = np.arange(lo, hi + 1, dtype=np.float64)
    W = np.zeros((d.size, K + (2 if hw else 0)))
    t1 = _tail_sequence(n, hw, 1)
    t2 = _tail_sequence(n, hw, 2)
    for j, dj in enumerate(d):
        if not frac_bins[j]:
            W[j, int(np.round(dj)) + center] = 1.0
            continue
        # K(w) = exp(-i w d): Im K(pi) = -sin(pi d), Re K'(pi) = -d sin(pi d)
        W[j, K] = -np.sin(np.pi * dj)
        W[j, K + 1] = -dj * np.sin(np.pi * dj)
        W[j, :K] = np.sinc(n - dj) - W[j, K] * t1 - W[j, K + 1] * t2  # tails added back
    return W, center, o


def moment_kernels(
    moments,
    dlog: float,
    convention: str = "cz",
    vsyst_kms: float = 0.0,
    n_sigma: float = 6.0,
    half_width: int | None = None,
    _return_hw: bool = False,
) -> tuple:
    """Taps ``(kern (..., K + 2), center, o)`` of Gauss-Hermite kernels from moments ``(..., m)``.

    ``moments[..., :]`` is ``(V, sigma[, h3[, h4]])`` in km/s, ``V`` relative to ``vsyst`` in
    ``convention``; ``sigma`` becomes ``sigma / (c dlog)`` pixels (pPXF's definition). Taps
    ``k < K`` are the inverse FFT of :func:`~nnfit.spectral.losvd.gauss_hermite_rfft` on
    ``[V - n_sigma sigma - half_width, V + n_sigma sigma + half_width]`` (shift
    ``k - center + o``); the last two entries are the coefficients ``Im K(pi)`` and
    ``Re K'(pi)`` of :func:`nyquist_tail`, which carry the band-limited ``1/n`` and ``1/n^2``
    tails of a fractional ``V``.

    The default ``half_width`` keeps the neglected ``O(n^-3)`` tail below :data:`TAIL_TOL`:
    4 pixels for ``sigma >~ 1`` pixel, more near half a pixel.

    Examples
    --------
    >>> k, center, o = moment_kernels(np.array([[0.0, 150.0]]), 1e-4 / 3.0)
    >>> k.shape[-1] == 2 * center + 3, o, round(float(k[..., :-2].sum()), 9)
    (True, 0, 1.0)
    """
    from nnfit.spectral.model import C_KMS

    mom = np.asarray(moments, dtype=np.float64)
    if mom.shape[-1] < 2 or mom.shape[-1] > 4:
        raise ValueError(f"moments must end in (V, sigma[, h3[, h4]]); got shape {mom.shape}")
    full = np.zeros((*mom.shape[:-1], 4))
    full[..., : mom.shape[-1]] = mom
    V = np.asarray(ln_shift(full[..., 0], convention, vsyst_kms)) / dlog
    sig = full[..., 1] / (C_KMS * dlog)
    if np.any(~(sig > 0)):
        raise ValueError(f"moments sigma must be > 0 km/s; got min {float(full[..., 1].min())}")
    if half_width is None:
        # neglected tail ~ |K(pi)| (pi sigma^2 + 1)^2 / (pi n^3): keep it to TAIL_TOL
        g = np.abs(gauss_hermite_rfft(np.pi, 0.0, sig, full[..., 2], full[..., 3]))[..., 0]
        need = float(np.max(np.cbrt(g * (np.pi * sig**2 + 1.0) ** 2 / (np.pi * TAIL_TOL))))
        half_width = int(np.clip(np.ceil(need), 4, MAX_HALF_WIDTH))
    lo_all = float(np.min(V - n_sigma * sig))
    hi_all = float(np.max(V + n_sigma * sig))
    o = int(np.round(0.5 * (lo_all + hi_all)))
    # symmetric about o, so the number of taps does not depend on where V falls in a pixel
    half = int(np.ceil(0.5 * (hi_all - lo_all) + 0.5)) + int(half_width)
    lo, hi = -half, half
    K = hi - lo + 1
    n_fft = int(sfft.next_fast_len(max(8 * K, 4096), real=True))
    w = 2.0 * np.pi * sfft.rfftfreq(n_fft)
    G = gauss_hermite_rfft(w, V - o, sig, full[..., 2], full[..., 3])
    h = 1e-6  # K'(pi) by a central difference of the analytic transform
    dK = (
        gauss_hermite_rfft(np.array([np.pi + h]), V - o, sig, full[..., 2], full[..., 3])
        - gauss_hermite_rfft(np.array([np.pi - h]), V - o, sig, full[..., 2], full[..., 3])
    )[..., 0] / (2 * h)
    c1 = G[..., -1].imag.copy()
    c2 = dK.real
    n = np.arange(lo, hi + 1)
    G[..., -1] = G[..., -1].real
    k = sfft.irfft(G, n=n_fft, axis=-1)[..., n % n_fft]
    out = np.empty((*k.shape[:-1], K + 2))
    # the exact taps minus the tails that the two extra entries add back beyond half_width
    out[..., :K] = (
        k
        - c1[..., None] * _tail_sequence(n, half_width, 1)
        - c2[..., None] * _tail_sequence(n, half_width, 2)
    )
    out[..., K] = c1
    out[..., K + 1] = c2
    if _return_hw:
        return np.ascontiguousarray(out), -lo, o, int(half_width)
    return np.ascontiguousarray(out), -lo, o


def check_coverage(
    tem_pix, obs_pix, vel_pix, convention: str = "cz", vsyst_kms: float = 0.0, pad: int = 0
) -> None:
    """Refuse grids whose templates do not cover the observed range plus every LOSVD shift.

    Uses the ``"fourier"`` model's support (:data:`HALF_WIDTH` of band-limited taps beyond the
    extreme shifts plus ``pad`` pixels).

    Examples
    --------
    >>> tem = np.log(4000.0) + 1e-4 * np.arange(200)
    >>> check_coverage(tem, tem[60:140], np.array([-100.0, 100.0]))
    """
    tem = np.asarray(tem_pix, dtype=np.float64)
    dlog = grid_step(tem)
    shifts = np.atleast_1d(ln_shift(np.asarray(vel_pix, dtype=np.float64), convention, vsyst_kms))
    shifts = shifts / dlog
    u = (np.asarray(obs_pix, dtype=np.float64)[[0, -1]] - tem[0]) / dlog
    lo = u[0] - shifts.max() - HALF_WIDTH - pad - 1
    hi = u[1] - shifts.min() + HALF_WIDTH + pad + 1
    if lo < 0 or hi > tem.size - 1:
        raise ValueError(
            f"templates do not cover the observed range plus the LOSVD shifts: the model reads "
            f"template pixels {lo:.0f}..{hi:.0f} of 0..{tem.size - 1} (shifts {shifts.min():.1f}"
            f"..{shifts.max():.1f} px with vsyst={vsyst_kms:g} km/s, {convention!r}). Extend "
            "the templates, trim the observed range, or check vsyst / the velocity grid"
        )


def exact_model(
    templates_PT,
    tem_pix,
    obs_pix,
    *,
    losvd=None,
    vel_pix=None,
    moments=None,
    convention: str = "cz",
    vsyst_kms: float = 0.0,
    half_width: int | None = None,
    rebin=None,
) -> tuple[np.ndarray, np.ndarray, int, sp.csr_matrix, Placement, int]:
    """Everything the matrix-free operator needs for the ``"fourier"`` model.

    Parameters
    ----------
    templates_PT : array (P, T)
    tem_pix, obs_pix : arrays (T,), (L,)
        ``ln lambda`` grids (template grid uniform).
    losvd : array (S, V, C), optional
        LOSVD histograms on ``vel_pix`` (km/s, relative to ``vsyst_kms``, in ``convention``).
    moments : array (S, C, m), optional
        Gauss-Hermite ``(V, sigma[, h3[, h4]])`` per spaxel and component instead of ``losvd``.
    convention : {"cz", "ppxf"}
    vsyst_kms : float
        Systemic velocity added to every bin (or ``V``); it only moves the selection.
    half_width : int, optional
        Band-limited tail kept on each side of a kernel (template pixels); default
        :data:`HALF_WIDTH` for histograms, adaptive for moments (:func:`moment_kernels`).
    rebin : sparse (L, T), optional
        Overlap rebin to use when the grids are not log-uniform resamplings (default
        :func:`~nnfit.spectral.model.rebin_matrix`).

    Returns
    -------
    Y : ndarray (P, K', L)
        The dictionary of the operator: ``Y[p, k] = R shift_{k - center}(T_p advanced by the
        grid phase)`` for the ``K`` taps, plus ``R (T_p (*) nyquist_tail)`` (``power`` 1 and 2)
        as two last entries when the kernels have band-limited tails (``K' = K + 2``).
    kern : ndarray (S, C, K')
        Kernel coefficients of the dictionary entries.
    center : int
    R : csr_matrix (L, T)
        Selection (or overlap rebin) from the convolved templates to the observed pixels.
    placement : Placement
    n_taps : int
        ``K``: the entries ``< K`` are shifts; ``K'`` - ``K`` (0 or 2) are the tails.

    Examples
    --------
    >>> tem = np.log(4000.0) + 1e-4 * np.arange(200)
    >>> Y, kern, center, R, pl, K = exact_model(np.ones((2, 200)), tem, tem[60:140] + 0.4e-4,
    ...                                          moments=np.array([[[30.0, 60.0]]]))
    >>> Y.shape[::2], kern.shape[-1] == Y.shape[1], R.shape, pl.uniform
    ((2, 80), True, (80, 200), True)
    """
    T_ = np.asarray(templates_PT, dtype=np.float64)
    tem = np.asarray(tem_pix, dtype=np.float64)
    obs = np.asarray(obs_pix, dtype=np.float64)
    dlog = grid_step(tem)
    if (losvd is None) == (moments is None):
        raise ValueError("give exactly one of losvd (S, V, C) histograms or moments (S, C, m)")
    T, L = tem.size, obs.size
    pl = place_grids(tem, obs)
    # A systemic velocity shifts every kernel alike: on a log-uniform resampling it joins the
    # grid phase (so observed- and rest-frame fits build identical kernels); otherwise it
    # goes into the kernels.
    v_kernel = 0.0 if pl.uniform else vsyst_kms
    if losvd is not None:
        lv = np.asarray(losvd, dtype=np.float64)
        vel = np.asarray(vel_pix, dtype=np.float64)
        shifts = np.atleast_1d(ln_shift(vel, convention, v_kernel)) / dlog
        hw_used = HALF_WIDTH if half_width is None else int(half_width)
        W, center, o = bin_kernel_matrix(shifts, hw_used)
        tail_col = bool(np.any(np.abs(shifts - np.round(shifts)) > _INTEGER_TOL))
        S_, V_, C_ = lv.shape
        # one 2-D BLAS product: a stacked matmul on the transposed view is ~30x slower
        kern = (np.ascontiguousarray(lv.transpose(0, 2, 1)).reshape(S_ * C_, V_) @ W).reshape(
            S_, C_, W.shape[1]
        )
    else:
        kern, center, o, hw_used = moment_kernels(
            moments, dlog, convention, v_kernel, half_width=half_width, _return_hw=True
        )
    if pl.uniform:
        start = pl.start - float(ln_shift(0.0, convention, vsyst_kms)) / dlog
        j0 = int(np.round(start))
        pl = Placement(True, pl.ratio, start, j0, start - j0, pl.max_dev_px)
        R = pl.selection(T, L, offset=o)
        templates = phase_shift(T_, pl.frac)
    else:
        R0 = sp.csr_matrix(rebin if rebin is not None else rebin_matrix(tem, obs))
        coo = R0.tocoo()
        cols = coo.col - o
        if cols.size and (cols.min() < 0 or cols.max() >= T):
            raise ValueError(
                "the observed range after the systemic shift is not covered by the templates; "
                "extend the templates or check vsyst / the velocity grid"
            )
        R = sp.csr_matrix((coo.data, (coo.row, cols)), shape=(L, T))
        templates = T_
    has_tail = moments is not None or tail_col
    K = kern.shape[-1] - (2 if has_tail else 0)
    used = np.flatnonzero(np.asarray(abs(R).sum(axis=0)).ravel())
    lo_read = int(used.min()) - (K - 1 - center)
    hi_read = int(used.max()) + center
    if lo_read < 0 or hi_read >= T:
        raise ValueError(
            f"templates do not cover the observed range plus the kernel: the model reads "
            f"template pixels {lo_read}..{hi_read} of 0..{T - 1}. Extend the templates (or trim "
            "the observed range, or narrow the velocity grid)"
        )
    Y = shifted_template_dictionary(templates, R, K, center, n_extra=2 if has_tail else 0)
    if has_tail:
        for i, pw in enumerate((1, 2)):
            Y[:, K + i, :] = (R @ nyquist_tail(templates, hw_used, pw).T).T
    return Y, kern, int(center), R, pl, K
