"""O(T) application of the truncated calcium kernel by its two-pole recursion.

The kernel ``h[i] = (d**i - r**i) / peak`` (``i < K``, zero beyond; :func:`build_kernel`) is the
impulse response of ``c[t] = g1 c[t-1] + g2 c[t-2] + s[t]`` delayed by one frame and scaled by
``alpha = (d - r) / peak``. Convolving with the *untruncated* response costs two multiply-adds a
frame; the truncation at ``K`` samples is removed exactly by subtracting the tail
``sum_{i >= K} h[i] s[t - i] = (d**K e_d[t-K] - r**K e_r[t-K]) / peak``, where ``e_d`` and ``e_r``
are one-pole filters of ``s``. The adjoint runs the same recursions backwards in time. Both
agree with ``np.convolve(s, h)[:T]`` to rounding (tested), at ``O(T)`` instead of ``O(T K)``.

Alongside the operator this module holds the compiled banded kernels the exact solver uses:
with ``G`` the banded lower-triangular matrix ``(G c)[t] = c[t] - g1 c[t-1] - g2 c[t-2]``, the
untruncated operator is ``alpha Z G^-1`` (``Z`` a one-frame delay), so
``K^T K + D = G^-T (alpha^2 P + G^T D G) G^-1`` with a pentadiagonal middle factor.
"""

from __future__ import annotations

import numba
import numpy as np

from nnfit.calcium.kernel import build_kernel, check_kinetics, kernel_length, tau_to_ar2
from nnfit.operators import LinearOperator


class AR2Coefficients:
    """The numbers that define the kernel's recursion: poles, scale and truncation.

    Attributes
    ----------
    g1, g2 : float
        AR(2) coefficients, ``g1 = d + r``, ``g2 = -d r``.
    d, r : float
        Decay and rise roots.
    alpha : float
        Scale of the delayed AR(2) response that equals the peak-normalised kernel.
    peak : float
        Peak of the un-normalised kernel ``d**i - r**i``.
    length : int
        Kernel length ``K``.
    dK, rK : float
        ``d**K / peak`` and ``r**K / peak``: the weights of the truncation correction.
    """

    def __init__(self, tau_rise: float, tau_decay: float, fs: float) -> None:
        tau_rise, tau_decay, fs = check_kinetics(tau_rise, tau_decay, fs)
        self.tau_rise, self.tau_decay, self.fs = tau_rise, tau_decay, fs
        self.g1, self.g2, self.d, self.r = tau_to_ar2(tau_rise, tau_decay, fs)
        self.length = kernel_length(tau_decay, fs)
        dt = 1.0 / fs
        t = np.arange(self.length) * dt
        raw = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
        self.peak = float(raw.max())
        self.alpha = (self.d - self.r) / self.peak
        self.dK = float(np.exp(-self.length * dt / tau_decay)) / self.peak
        self.rK = float(np.exp(-self.length * dt / tau_rise)) / self.peak

    def kernel(self) -> np.ndarray:
        """The truncated kernel (identical to :func:`build_kernel`)."""
        return build_kernel(self.tau_rise, self.tau_decay, self.fs)

    def params(self) -> tuple[float, float, float, float, float, float, float, int]:
        """``(g1, g2, alpha, d, r, dK, rK, K)``: the arguments the compiled loops take."""
        return (self.g1, self.g2, self.alpha, self.d, self.r, self.dK, self.rK, self.length)


@numba.njit(cache=True, error_model="numpy")
def _forward(s, g1, g2, alpha, d, r, dK, rK, K, out):  # pragma: no cover - compiled
    T = s.shape[0]
    c1 = 0.0
    c2 = 0.0
    ed = 0.0
    er = 0.0
    for t in range(T):
        # untruncated: alpha * c[t-1]; minus the tail dK e_d[t-K] - rK e_r[t-K]
        v = alpha * c1
        if t >= K:
            x = s[t - K]
            ed = d * ed + x
            er = r * er + x
            v -= dK * ed - rK * er
        out[t] = v
        c = g1 * c1 + g2 * c2 + s[t]
        c2 = c1
        c1 = c
    return out


@numba.njit(cache=True, error_model="numpy")
def _adjoint(u, g1, g2, alpha, d, r, dK, rK, K, out):  # pragma: no cover - compiled
    T = u.shape[0]
    # untruncated: alpha * G^-T Z^T u, (Z^T u)[t] = u[t+1]; tail: f_d[t+K] = sum d^(m-t-K) u[m]
    x1 = 0.0
    x2 = 0.0
    fd = 0.0
    fr = 0.0
    for t in range(T - 1, -1, -1):
        v = u[t + 1] if t + 1 < T else 0.0
        x = v + g1 * x1 + g2 * x2
        x2 = x1
        x1 = x
        w = alpha * x
        if t + K < T:
            y = u[t + K]
            fd = d * fd + y
            fr = r * fr + y
            w -= dK * fd - rK * fr
        out[t] = w
    return out


@numba.njit(cache=True, error_model="numpy")
def _gt_mul(v, g1, g2, out):  # pragma: no cover - compiled
    """out = G^T v: out[i] = v[i] - g1 v[i+1] - g2 v[i+2]."""
    T = v.shape[0]
    for i in range(T):
        a = v[i]
        if i + 1 < T:
            a -= g1 * v[i + 1]
        if i + 2 < T:
            a -= g2 * v[i + 2]
        out[i] = a
    return out


@numba.njit(cache=True, error_model="numpy")
def _g_mul(w, g1, g2, out):  # pragma: no cover - compiled
    """out = G w: out[t] = w[t] - g1 w[t-1] - g2 w[t-2]."""
    T = w.shape[0]
    for t in range(T):
        a = w[t]
        if t >= 1:
            a -= g1 * w[t - 1]
        if t >= 2:
            a -= g2 * w[t - 2]
        out[t] = a
    return out


class AR2Convolution(LinearOperator):
    """Convolution with the truncated calcium kernel, applied in O(T) by recursion.

    ``forward(s)`` equals ``np.convolve(s, build_kernel(tau_rise, tau_decay, fs))[:T]`` and
    ``adjoint`` is its exact transpose. Arrays may be 1-D ``(T,)`` or 2-D ``(cells, T)`` (each
    row is one trace); ``n_frames`` fixes the last axis.

    Parameters
    ----------
    n_frames : int
        Number of frames ``T``.
    tau_rise, tau_decay : float
        Kernel time constants in seconds, ``0 < tau_rise < tau_decay``.
    fs : float
        Sampling rate in Hz.
    n_cells : int, optional
        Number of rows for 2-D use; ``None`` (default) for single traces.

    Examples
    --------
    >>> op = AR2Convolution(500, 0.05, 0.5, 30.0)
    >>> s = np.zeros(500); s[[10, 200]] = 1.0
    >>> ref = np.convolve(s, build_kernel(0.05, 0.5, 30.0))[:500]
    >>> bool(np.allclose(op.forward(s), ref, rtol=0, atol=1e-12))
    True
    >>> from nnfit.operators import dottest
    >>> dottest(op) < 1e-12
    True
    """

    def __init__(
        self,
        n_frames: int,
        tau_rise: float,
        tau_decay: float,
        fs: float,
        n_cells: int | None = None,
    ) -> None:
        from nnfit.validate import check_int

        self.n_frames = check_int("n_frames", n_frames, low=1)
        self.coef = AR2Coefficients(tau_rise, tau_decay, fs)
        if n_cells is None:
            self.model_shape = self.data_shape = (self.n_frames,)
        else:
            n_cells = check_int("n_cells", n_cells, low=1)
            self.model_shape = self.data_shape = (n_cells, self.n_frames)

    def _apply(self, x: np.ndarray, fn) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != self.model_shape:
            raise ValueError(f"expected an array of shape {self.model_shape}; got {x.shape}")
        out = np.empty_like(x)
        p = self.coef.params()
        if x.ndim == 1:
            fn(x, *p, out)
        else:
            for i in range(x.shape[0]):
                fn(x[i], *p, out[i])
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x, _forward)

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        return self._apply(r, _adjoint)


def convolve_kernel(spikes: np.ndarray, tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """``K s`` for ``(T,)`` or ``(cells, T)`` spikes: the truncated kernel applied in O(T).

    Examples
    --------
    >>> s = np.zeros((2, 100)); s[0, 5] = 1.0
    >>> c = convolve_kernel(s, 0.05, 0.5, 30.0)
    >>> bool(np.allclose(c[0, 5:], build_kernel(0.05, 0.5, 30.0)[:95])), float(c[1].max())
    (True, 0.0)
    """
    s = np.asarray(spikes, dtype=np.float64)
    n_cells = s.shape[0] if s.ndim == 2 else None
    return AR2Convolution(s.shape[-1], tau_rise, tau_decay, fs, n_cells=n_cells).forward(s)
