"""Synthetic spectral cubes with a known answer, for tests, demos and benchmarks.

``simulate_cube`` draws stellar-population templates on a uniform ln(lambda) grid, per-spaxel
per-component LOSVDs from Gauss-Hermite parameters, a coarser observed grid (uniform in
lambda, as MUSE delivers it, so non-uniform in ln lambda), a known non-negative weight array
``x_true`` (C, P), and the observed cube ``y[s] = sum_c sum_p x[c, p] A[s, c, p] + noise``.

Templates and LOSVDs are rounded to float32 values before anything is computed from them, so
the store (which keeps them as float32, as the layout says) describes exactly the same model.
The noise-free model is computed by linearity, ``Rebin(sum_c LOSVD[s,:,c] (*) (x[c] @ T))``,
so the real scale (S=2854, C=22, P=360, L=1247, T=7561) never materialises an S*C*P*L array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp

from nnfit.spectral.model import (
    C_KMS,
    conv_fft_length,
    losvd_kernel_matrix,
    rebin_matrix,
)
from nnfit.validate import check_int, check_real

__all__ = ["SimulatedCube", "simulate_cube"]

# Strong optical absorption features (Angstrom, air): Balmer lines and metal blends.
_BALMER = (4101.7, 4340.5, 4861.3, 6562.8)
_METALS = (
    4226.7,
    4383.5,
    4668.1,
    5015.0,
    5167.3,
    5172.7,
    5183.6,
    5270.0,
    5328.0,
    5335.0,
    5406.0,
    5709.0,
    5782.0,
    5889.9,
    5895.9,
    6102.7,
    6122.2,
    6162.2,
    6495.0,
    8498.0,
    8542.1,
    8662.1,
)


@dataclass
class SimulatedCube:
    """A simulated problem with its true solution. Shapes: see :func:`simulate_cube`."""

    tem_pix: np.ndarray
    obs_pix: np.ndarray
    vel_pix: np.ndarray
    templates: np.ndarray
    templates_PT: np.ndarray
    template_meta: dict
    losvd: np.ndarray
    x_true: np.ndarray
    datacube: np.ndarray
    noise_sigma: np.ndarray
    mask: np.ndarray
    model: np.ndarray
    gh_params: dict = field(default_factory=dict)

    @property
    def shape(self) -> dict[str, int]:
        """Problem sizes ``S, C, P, L, T, V``."""
        return {
            "S": self.datacube.shape[0],
            "C": self.losvd.shape[2],
            "P": self.templates_PT.shape[0],
            "L": self.obs_pix.size,
            "T": self.tem_pix.size,
            "V": self.vel_pix.size,
        }

    def to_h5(
        self,
        path: str | os.PathLike[str],
        *,
        with_noise: bool = True,
        overwrite: bool = True,
        **kwargs: Any,
    ) -> Path:
        """Write a complete store (populate + rebin) at ``path`` and return the path.

        ``with_noise`` writes ``/Noise``; ``kwargs`` go to
        :meth:`~nnfit.spectral.store.StoreWriter.populate_from_arrays` (e.g. ``safety_pad_px``).
        """
        from nnfit.spectral.store import StoreWriter

        p = Path(path)
        if p.exists():
            if not overwrite:
                raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
            p.unlink()
        mgr = StoreWriter(p, self.tem_pix, self.obs_pix)
        mgr.set_velocity_grid(self.vel_pix)
        mgr.populate_from_arrays(
            self.losvd,
            self.datacube,
            self.templates,
            mask=self.mask,
            noise=self.noise_sigma if with_noise else None,
            datacube_layout="SL",
            template_meta=self.template_meta,
            **kwargs,
        )
        mgr.ensure_rebin_and_resample()
        return p


def _grid_factor(P: int) -> tuple[int, int]:
    nz = max(d for d in range(1, int(np.sqrt(P)) + 1) if P % d == 0)
    return nz, P // nz


def _hermite_losvd(vel: np.ndarray, V0, sig, h3, h4) -> np.ndarray:
    """Gauss-Hermite LOSVD shapes (..., V), clipped at 0, each summing to 1."""
    y = (vel - V0[..., None]) / sig[..., None]
    H3 = (2.0 * y**3 - 3.0 * y) / np.sqrt(3.0)
    H4 = (4.0 * y**4 - 12.0 * y**2 + 3.0) / np.sqrt(24.0)
    f = np.exp(-0.5 * y**2) * (1.0 + h3[..., None] * H3 + h4[..., None] * H4)
    f = np.clip(f, 0.0, None)
    tot = f.sum(axis=-1, keepdims=True)
    return f / np.where(tot > 0, tot, 1.0)


def simulate_cube(
    n_spaxels: int,
    n_components: int,
    n_populations: int,
    *,
    n_tem_pix: int = 1500,
    n_obs_pix: int = 300,
    n_vel: int = 41,
    templates: str = "ssp",
    snr: float = 50.0,
    mask_fraction: float = 0.0,
    noise: bool = True,
    seed: int = 0,
    lam_range: tuple[float, float] = (4800.0, 6300.0),
    vmax: float = 1000.0,
    population_grid: tuple[int, int] | None = None,
    float32_inputs: bool = True,
) -> SimulatedCube:
    """Simulate an IFU cube built from LOSVD-convolved, rebinned templates.

    Parameters
    ----------
    n_spaxels, n_components, n_populations : int
        S, C and P.
    n_tem_pix, n_obs_pix, n_vel : int, optional
        T, L and V. The template grid covers the observed range plus the largest LOSVD shift
        and a pad, so every store written from it passes the coverage check.
    templates : {"ssp", "random"}
        ``"ssp"``: absorption lines on a continuum that vary smoothly over an age x metallicity
        grid, so neighbouring populations are nearly collinear (cond(A) ~ 1e12, like real
        libraries). ``"random"``: each population has its own random line list (well
        conditioned).
    snr : float
        Median signal-to-noise ratio per observed pixel.
    mask_fraction : float
        Fraction of observed pixels masked (``mask`` False) in a few contiguous bands.
    noise : bool
        Add Gaussian noise of ``noise_sigma`` (else ``datacube == model``).
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``.
    lam_range : (float, float)
        Observed wavelength range in Angstrom.
    vmax : float
        LOSVD velocity grid spans [-vmax, vmax] km/s.
    population_grid : (int, int), optional
        (n_metallicity, n_age) for ``"ssp"``; default: the most square factorisation of P.
    float32_inputs : bool
        Round templates and LOSVDs to float32 values (default), so that a store, which keeps
        them as float32, holds exactly this problem. The rounding (6e-8 relative) also caps
        the condition number of SSP-like problems near 1e9; ``False`` keeps float64 values
        (cond ~1e11-1e12 for ``"ssp"``) for in-memory experiments.

    Returns
    -------
    SimulatedCube
        ``templates`` (T, nZ, nAge) or (T, P) for "random", ``templates_PT`` (P, T),
        ``losvd`` (S, V, C), ``x_true`` (C, P), ``datacube``, ``noise_sigma`` and ``model``
        (S, L), ``mask`` (L,) with True = fitted.

    Examples
    --------
    >>> sim = simulate_cube(4, 2, 6, seed=3)
    >>> sim.shape == {"S": 4, "C": 2, "P": 6, "L": 300, "T": 1500, "V": 41}
    True
    >>> bool((sim.x_true >= 0).all()), sim.templates.shape
    (True, (1500, 2, 3))
    """
    S = check_int("n_spaxels", n_spaxels, low=1)
    C = check_int("n_components", n_components, low=1)
    P = check_int("n_populations", n_populations, low=1)
    T = check_int("n_tem_pix", n_tem_pix, low=32)
    L = check_int("n_obs_pix", n_obs_pix, low=2)
    V = check_int("n_vel", n_vel, low=1)
    snr = check_real("snr", snr, low=0, low_inclusive=False)
    mask_fraction = check_real("mask_fraction", mask_fraction, low=0, high=0.9)
    vmax = check_real("vmax", vmax, low=0, high=0.5 * C_KMS)
    if templates not in ("ssp", "random"):
        raise ValueError(f"templates must be 'ssp' or 'random'; got {templates!r}")
    lam_lo, lam_hi = (float(v) for v in lam_range)
    if not 0 < lam_lo < lam_hi:
        raise ValueError(f"lam_range must be (lo, hi) with 0 < lo < hi; got {lam_range}")
    rng = np.random.default_rng(seed)

    # ---- grids ---------------------------------------------------------------------------
    dlam = (lam_hi - lam_lo) / L
    obs_pix = np.log(lam_lo + dlam * (np.arange(L) + 0.5))
    span = np.log(lam_hi / lam_lo)
    m_v = -np.log1p(-vmax / C_KMS) if vmax > 0 else 0.0  # the larger (blueshift) side
    extra = 8  # pixels beyond the largest shift on each side: pad (2) + interpolation + edges
    dlog = (span + 2.0 * m_v) / (T - 1 - 2 * extra)
    if dlog <= 0 or T - 1 - 2 * extra <= 0:
        raise ValueError(f"n_tem_pix={T} too small for the observed range and vmax")
    tem_pix = np.log(lam_lo) - m_v - extra * dlog + dlog * np.arange(T)
    vel_pix = np.linspace(-vmax, vmax, V) if V > 1 else np.zeros(1)
    lam_t = np.exp(tem_pix)

    # ---- templates -----------------------------------------------------------------------
    xw = (lam_t - 5500.0) / 1000.0
    if templates == "ssp":
        nZ, nA = population_grid if population_grid is not None else _grid_factor(P)
        if nZ * nA != P:
            raise ValueError(f"population_grid {population_grid} must multiply to P = {P}")
        mh = np.linspace(-1.5, 0.3, nZ)
        logage = np.linspace(-1.0, np.log10(14.0), nA)
        MH, LA = (g.ravel() for g in np.meshgrid(mh, logage, indexing="ij"))  # (P,)
        # Fixed line list: real features plus weak metal lines at seeded positions.
        extra_lines = np.sort(rng.uniform(lam_lo - 100.0, lam_hi + 100.0, 60))
        centres = np.concatenate([_BALMER, _METALS, extra_lines])
        kind = np.array([0] * len(_BALMER) + [1] * len(_METALS) + [2] * extra_lines.size)
        base_depth = np.concatenate(
            [np.full(len(_BALMER), 0.6), np.full(len(_METALS), 0.35), rng.uniform(0.03, 0.15, 60)]
        )
        width = np.concatenate(
            [np.full(len(_BALMER), 3.0), np.full(len(_METALS), 1.5), rng.uniform(0.8, 1.6, 60)]
        )
        balmer = np.exp(-((LA + 0.4) ** 2) / 0.6) * (1.0 - 0.15 * MH)
        metal = (0.35 + 0.3 * (MH + 1.5)) * (0.55 + 0.45 * np.tanh(1.5 * (LA + 0.2)))
        strength = np.where(kind[:, None] == 0, balmer[None, :], metal[None, :])  # (nl, P)
        depth = base_depth[:, None] * strength
        slope = -0.35 + 0.3 * LA + 0.08 * MH
        curv = -0.05 + 0.03 * LA
        cont = 1.0 + slope[:, None] * xw[None, :] + curv[:, None] * xw[None, :] ** 2
        grid_shape: tuple[int, ...] = (nZ, nA)
        meta = {
            "axes": ["ln_lambda", "metallicity", "log_age"],
            "grid_axes": ["metallicity", "log_age"],
            "axis_values": {"metallicity": mh.tolist(), "log_age": logage.tolist()},
            "kind": "ssp",
        }
    else:
        n_lines = 30
        centres_p = rng.uniform(lam_t[0], lam_t[-1], (P, n_lines))
        depth_p = rng.uniform(0.1, 0.7, (P, n_lines))
        width_p = rng.uniform(0.8, 2.5, (P, n_lines))
        slope = rng.uniform(-0.3, 0.3, P)
        cont = 1.0 + slope[:, None] * xw[None, :]
        grid_shape = (P,)
        meta = {
            "axes": ["ln_lambda", "population"],
            "grid_axes": ["population"],
            "axis_values": {"population": list(range(P))},
            "kind": "random",
        }
    tau = np.zeros((P, T))
    if templates == "ssp":
        for i in range(centres.size):
            g = np.exp(-0.5 * ((lam_t - centres[i]) / width[i]) ** 2)
            nz_ = g > 1e-12
            tau[:, nz_] += depth[i][:, None] * g[nz_][None, :]
    else:
        for p in range(P):
            for i in range(centres_p.shape[1]):
                g = np.exp(-0.5 * ((lam_t - centres_p[p, i]) / width_p[p, i]) ** 2)
                tau[p] += depth_p[p, i] * g
    templates_PT = cont * np.exp(-tau)
    templates_PT /= np.median(templates_PT, axis=1, keepdims=True)
    if float32_inputs:
        templates_PT = templates_PT.astype(np.float32).astype(np.float64)
    templates_arr = np.ascontiguousarray(templates_PT.T.reshape(T, *grid_shape))
    meta.update({"shape": [T, *grid_shape], "grid_shape": list(grid_shape), "order": "C"})

    # ---- weights -------------------------------------------------------------------------
    mass = rng.uniform(0.5, 1.5, C)
    if templates == "ssp":
        zz, aa = np.meshgrid(
            np.linspace(0, 1, grid_shape[0]), np.linspace(0, 1, grid_shape[1]), indexing="ij"
        )
        x_true = np.empty((C, P))
        for c in range(C):
            cz, ca = rng.uniform(0.1, 0.9, 2)
            wz, wa = rng.uniform(0.15, 0.4, 2)
            bump = np.exp(-0.5 * (((zz - cz) / wz) ** 2 + ((aa - ca) / wa) ** 2)).ravel()
            bump[bump < 0.05 * bump.max()] = 0.0
            x_true[c] = bump
    else:
        x_true = rng.uniform(0.0, 1.0, (C, P)) * (rng.uniform(size=(C, P)) < 0.5)
        x_true[np.arange(C), rng.integers(0, P, C)] += 0.5  # at least one population each
    x_true *= (mass / x_true.sum(axis=1))[:, None]

    # ---- LOSVDs --------------------------------------------------------------------------
    side = int(np.ceil(np.sqrt(S)))
    xs = (np.arange(S) % side - (side - 1) / 2.0) / max(side / 2.0, 1.0)
    ys = (np.arange(S) // side - (side - 1) / 2.0) / max(side / 2.0, 1.0)
    r = np.hypot(xs, ys)
    vrot = rng.uniform(-0.25, 0.25, C) * vmax
    sig0 = rng.uniform(0.08, 0.2, C) * vmax
    V0 = vrot[None, :] * np.tanh(xs[:, None] / 0.4) + rng.normal(0, 0.01 * vmax, (S, C))
    sig = sig0[None, :] * (1.0 - 0.3 * np.clip(r, 0, 1))[:, None] + 0.02 * vmax
    if V > 1:
        sig = np.maximum(sig, 1.5 * (vel_pix[1] - vel_pix[0]))
    h3 = rng.uniform(-0.1, 0.1, (S, C))
    h4 = rng.uniform(-0.05, 0.1, (S, C))
    shapes = _hermite_losvd(vel_pix, V0, sig, h3, h4)  # (S, C, V)
    scale = rng.uniform(0.5, 2.0, C)
    amp = np.exp(-r[:, None] / scale[None, :])  # light of component c in spaxel s
    losvd = np.ascontiguousarray(np.moveaxis(shapes * amp[..., None], 2, 1))  # (S, V, C)
    if float32_inputs:
        losvd = losvd.astype(np.float32).astype(np.float64)

    # ---- model by linearity, in spaxel blocks ----------------------------------------------
    R = rebin_matrix(tem_pix, obs_pix)
    model = _model_by_linearity(templates_PT, x_true, losvd, vel_pix, dlog, R)

    # ---- noise and mask ------------------------------------------------------------------
    med = np.median(model, axis=1, keepdims=True)
    noise_sigma = np.sqrt(np.clip(model, 0.05 * med, None) * med) / snr
    datacube = model + rng.standard_normal((S, L)) * noise_sigma if noise else model.copy()
    mask = np.ones(L, dtype=bool)
    n_mask = round(mask_fraction * L)
    if n_mask:
        n_bands = max(1, min(6, n_mask // 3))
        sizes = np.full(n_bands, n_mask // n_bands)
        sizes[: n_mask % n_bands] += 1
        slots = np.sort(rng.choice(np.arange(n_bands * 2 + 1), n_bands, replace=False))
        starts = (slots * (L - n_mask) // (n_bands * 2 + 1)) + np.concatenate(
            [[0], np.cumsum(sizes)[:-1]]
        )
        for st, sz in zip(starts, sizes, strict=True):
            mask[st : st + sz] = False

    return SimulatedCube(
        tem_pix=tem_pix,
        obs_pix=obs_pix,
        vel_pix=vel_pix,
        templates=templates_arr,
        templates_PT=templates_PT,
        template_meta=meta,
        losvd=losvd,
        x_true=x_true,
        datacube=datacube,
        noise_sigma=noise_sigma,
        mask=mask,
        model=model,
        gh_params={"V": V0, "sigma": sig, "h3": h3, "h4": h4, "amplitude": amp},
    )


def _model_by_linearity(
    templates_PT: np.ndarray,
    x: np.ndarray,
    losvd: np.ndarray,
    vel_pix: np.ndarray,
    dlog: float,
    R: sp.csr_matrix,
    block: int = 256,
) -> np.ndarray:
    """``y[s] = R sum_c LOSVD[s,:,c] (*) (x[c] @ T)`` without any (S, C, P, L) array."""
    S = losvd.shape[0]
    T = templates_PT.shape[1]
    W, center = losvd_kernel_matrix(vel_pix, dlog)
    Wd = W.toarray()
    n = conv_fft_length(T, Wd.shape[1])
    mix = x @ templates_PT  # (C, T)
    mixF = sfft.rfft(mix, n=n, axis=-1)  # (C, nF)
    RT = R.T.tocsc()
    out = np.empty((S, R.shape[0]))
    for s0 in range(0, S, block):
        lb = losvd[s0 : s0 + block]  # (b, V, C)
        kern = np.einsum("bvc,vk->bck", lb, Wd)
        KF = sfft.rfft(kern, n=n, axis=-1)  # (b, C, nF)
        full = sfft.irfft(np.einsum("bcf,cf->bf", KF, mixF), n=n, axis=-1)
        conv = full[:, center : center + T]
        out[s0 : s0 + block] = np.asarray(conv @ RT)
    return out
