"""The HDF5 store of a spectral cube problem: layout, validation, loading and writing.

Layout (``S`` spaxels, ``L`` observed pixels, ``T`` template pixels, ``V`` velocity bins,
``C`` components, ``P`` populations)::

    /DataCube   (S, L) float64   observed spectra (masked pixels that were NaN/Inf stored as 0)
    /Noise      (S, L) float64   optional 1-sigma noise, > 0 on fitted pixels
    /Templates  (P, T) float32   flattened from (T, *grid) in C order; see template_meta_json
    /LOSVD      (S, V, C) float32
    /TemPix     (T,)  float64    natural ln(lambda), uniform
    /ObsPix     (L,)  float64    natural ln(lambda), strictly increasing (need not be uniform)
    /VelPix     (V,)  float64    km/s, bin centres
    /Mask       (L,)  bool       True = pixel is fitted
    /XPix, /YPix (nPix,) float64, /BinNum (nPix,) int32 in [0, S-1]   optional
    /R_T        (T, L) float32   the rebin operator, stored densely for the layout's sake
    /RebinCSR/{data,indices,indptr}  the same operator (L, T) as float64 CSR: what the code uses
    /HyperCube/models (S, C, P, L) float32, /HyperCube/_done (see ``hypercube``)

Root attributes: ``dims`` (JSON ``{nSpat, nLSpec, nTSpec, nVel, nComp, nPop}``),
``template_meta_json``, ``guard_info_json`` and ``guard.*`` scalars (coverage margins).

Files are written in the HDF5 1.10 format (superblock v3), the oldest that supports SWMR, so
readers with HDF5 >= 1.10 can open them and one writer can keep them readable while it works;
every open goes through :func:`nnfit.io.hdf5.open_h5`.

One module, though long: the store's layout, the validation of its inputs, loading it into a
:class:`CubeProblem` and the staged writer all follow the layout above; the problem half
(``CubeProblem``, ``load_problem``, the warm start) is the cut to make if it grows further.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp

from nnfit.io import atomic_path
from nnfit.io.hdf5 import create_h5, open_h5, writer_lock
from nnfit.spectral.model import (
    C_KMS,
    grid_step,
    kernel_support,
    mean_flux,
    pixel_edges,
    rebin_matrix,
)
from nnfit.spectral.store_checks import check_fitted_data, check_inputs
from nnfit.validate import as_float_array, check_int

__all__ = ["CubeProblem", "StoreWriter", "describe_rebin_edges", "guard_report", "load_problem"]

UNIFORM_RTOL = 1e-6
"""Largest relative deviation of a template ln-lambda step from the mean step."""


# --------------------------------------------------------------------------------------------
# The problem in memory
# --------------------------------------------------------------------------------------------


@dataclass
class CubeProblem:
    """Everything in a store except the HyperCube, in memory, float64 for the math.

    ``templates_PT`` and ``losvd`` hold the stored float32 values exactly; ``rebin`` is the
    (L, T) CSR operator; ``mask`` is True on fitted pixels.
    """

    datacube: np.ndarray
    templates_PT: np.ndarray
    losvd: np.ndarray
    tem_pix: np.ndarray
    obs_pix: np.ndarray
    vel_pix: np.ndarray
    mask: np.ndarray
    noise: np.ndarray | None
    template_meta: dict
    rebin: sp.csr_matrix
    guard_info: dict = field(default_factory=dict)
    path: Path | None = None
    model_options: dict = field(default_factory=dict)
    """``kernel``, ``convention``, ``vsyst`` and ``flux_scale`` for :class:`CubeOperator`
    (empty for stores written before the exact model: the ``"linear"`` model)."""
    warm_start: np.ndarray | None = None
    """``(C, P)``: the store's ``/X_global`` (else ``/Fit/x_best``) where one verifies
    (:func:`read_warm_start_from`), clipped at 0; None when the store holds none."""

    @property
    def S(self) -> int:
        """Number of spaxels."""
        return self.datacube.shape[0]

    @property
    def L(self) -> int:
        """Number of observed pixels."""
        return self.obs_pix.size

    @property
    def T(self) -> int:
        """Number of template pixels."""
        return self.tem_pix.size

    @property
    def V(self) -> int:
        """Number of LOSVD velocity bins."""
        return self.vel_pix.size

    @property
    def C(self) -> int:
        """Number of components."""
        return self.losvd.shape[2]

    @property
    def P(self) -> int:
        """Number of populations (templates)."""
        return self.templates_PT.shape[0]

    @property
    def dlog(self) -> float:
        """Template pixel size in ln(lambda)."""
        return grid_step(self.tem_pix)

    def spaxel(self, s: int) -> CubeProblem:
        """The problem of spaxel (or bin) ``s`` alone: its data, noise, LOSVDs and flux scale.

        Templates, grid and mask are shared; the result has no file behind it and no warm
        start (the store's solution is of the whole cube).
        """
        opts = dict(self.model_options)
        if opts.get("flux_scale") is not None:
            opts["flux_scale"] = np.asarray(opts["flux_scale"])[s : s + 1]
        return replace(
            self,
            datacube=self.datacube[s : s + 1],
            noise=None if self.noise is None else self.noise[s : s + 1],
            losvd=self.losvd[s : s + 1],
            path=None,
            model_options=opts,
            warm_start=None,
        )


def solution_sha(x: np.ndarray) -> bytes:
    """The digest a store records beside a stored solution (``/Fit/state/<name>_sha``)."""
    from nnfit.io import array_sha256

    return array_sha256(np.asarray(x, dtype=np.float64)).encode("ascii")


def read_warm_start_from(f: h5py.File, shape: tuple[int, int]) -> np.ndarray | None:
    """``/X_global`` (else ``/Fit/x_best``) of an open store reshaped to ``shape``, or ``None``.

    Vectors with a digest record (``/Fit/state/<name>_sha``, the Kaczmarz tracker's
    convention) are used only when the digest verifies, so a torn write is skipped; all-zero
    or non-finite vectors are not starts.
    """
    st = f.get("Fit/state")
    for name, key in (("X_global", "X_global"), ("x_best", "Fit/x_best")):
        if key not in f or f[key].size != shape[0] * shape[1]:
            continue
        x = np.asarray(f[key][...], dtype=np.float64)
        if st is not None and f"{name}_sha" in st:
            sha = bytes(st[f"{name}_sha"][0])
            if sha not in (b"untracked", solution_sha(x)):
                continue
        if np.all(np.isfinite(x)) and np.any(x != 0):
            return np.clip(x, 0.0, None).reshape(shape)
    return None


def read_rebin(f: h5py.File, T: int, L: int) -> sp.csr_matrix:
    if "RebinCSR" in f:
        g = f["RebinCSR"]
        try:
            R = sp.csr_matrix(
                (g["data"][()], g["indices"][()], g["indptr"][()]), shape=(L, T), dtype=np.float64
            )
            # every index in range: scipy's products read out of bounds (a crash) otherwise
            R.check_format(full_check=True)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"{f.filename}: /RebinCSR is not a valid ({L}, {T}) sparse matrix ({exc}); "
                "re-create the store (nnfit spectral init)"
            ) from None
        if not np.isfinite(R.data).all():
            raise ValueError(f"{f.filename}: /RebinCSR holds NaN/Inf values; re-create the store")
        return R
    return rebin_matrix(f["TemPix"][()], f["ObsPix"][()])


def load_problem(path: str | os.PathLike[str]) -> CubeProblem:
    """Load a populated store (everything but the HyperCube) into memory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.spectral.simulate import simulate_cube
    >>> p = simulate_cube(3, 2, 4).to_h5(pathlib.Path(tempfile.mkdtemp()) / "c.h5")
    >>> prob = load_problem(p)
    >>> (prob.S, prob.C, prob.P), prob.rebin.shape == (prob.L, prob.T)
    ((3, 2, 4), True)
    """
    p = Path(path)
    with open_h5(p, "r") as f:
        missing = [
            k
            for k in ("DataCube", "Templates", "LOSVD", "TemPix", "ObsPix", "VelPix")
            if k not in f
        ]
        if missing:
            raise ValueError(
                f"{p}: not a populated cube store; missing {', '.join('/' + m for m in missing)}. "
                "Run StoreWriter.populate_from_arrays (or 'nnfit spectral init') first"
            )
        check_inputs(f, p)
        tem = f["TemPix"][()].astype(np.float64)
        obs = f["ObsPix"][()].astype(np.float64)
        L = obs.size
        mask = f["Mask"][()].astype(bool) if "Mask" in f else np.ones(L, dtype=bool)
        datacube = f["DataCube"][()].astype(np.float64)
        noise = f["Noise"][()].astype(np.float64) if "Noise" in f else None
        if datacube.ndim == 2 and datacube.shape[1] == mask.size:
            check_fitted_data(p, datacube, mask, noise)
        losvd = f["LOSVD"][()].astype(np.float64)
        templates = f["Templates"][()].astype(np.float64)
        return CubeProblem(
            datacube=datacube,
            templates_PT=templates,
            losvd=losvd,
            tem_pix=tem,
            obs_pix=obs,
            vel_pix=f["VelPix"][()].astype(np.float64),
            mask=mask,
            noise=noise,
            template_meta=json.loads(f.attrs.get("template_meta_json", "{}")),
            rebin=read_rebin(f, tem.size, L),
            guard_info=json.loads(f.attrs.get("guard_info_json", "{}")),
            path=p,
            model_options=_read_model_options(f),
            warm_start=read_warm_start_from(f, (losvd.shape[-1], templates.shape[0])),
        )


def _read_model_options(f: h5py.File) -> dict:
    """The model attributes of a store; stores without them keep the ``"linear"`` model."""
    opts: dict[str, Any] = {}
    if "kernel" in f.attrs:
        opts["kernel"] = str(f.attrs["kernel"])
        opts["convention"] = str(f.attrs.get("velocity_convention", "cz"))
        opts["vsyst"] = float(f.attrs.get("vsyst_kms", 0.0))
    if "FluxScale" in f:
        opts["flux_scale"] = f["FluxScale"][()].astype(np.float64)
    return opts


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_grid(name: str, pix: Any, *, uniform: bool) -> np.ndarray:
    from nnfit.spectral.checks import check_ln_grid

    arr = as_float_array(name, pix, ndim=(1,))
    if arr.size < 2:
        raise ValueError(f"{name} must have at least 2 pixels; got {arr.size}")
    check_ln_grid(name, arr)
    d = np.diff(arr)
    if not np.all(d > 0):
        i = int(np.argmax(~(d > 0)))
        raise ValueError(
            f"{name} must be strictly increasing ln(lambda); expected {name}[{i + 1}] > "
            f"{name}[{i}], found {arr[i + 1]!r} <= {arr[i]!r}"
        )
    if uniform:
        step = grid_step(arr)
        dev = float(np.max(np.abs(d - step)) / step)
        if dev > UNIFORM_RTOL:
            i = int(np.argmax(np.abs(d - step)))
            raise ValueError(
                f"{name} must be uniform in ln(lambda) (convolution by velocity needs a constant "
                f"step); expected steps of {step:.9g} within {UNIFORM_RTOL:g} relative, found "
                f"{d[i]:.9g} at pixel {i} ({dev:.2g} relative). Resample the templates onto a "
                "uniform ln(lambda) grid first"
            )
    return arr


def guard_report(
    tem_pix: np.ndarray, obs_pix: np.ndarray, vel_pix: np.ndarray, safety_pad_px: int
) -> dict[str, Any]:
    """Coverage margins of the template grid around the observed range, in template pixels.

    The model at an observed pixel reads templates from ``t - o_max`` to ``t - o_min`` (the
    LOSVD kernel's offsets). ``left_margin_px``/``right_margin_px`` are how many template
    pixels remain beyond what the bluest/reddest observed pixel reads; ``safe`` is True when
    both are at least ``safety_pad_px``.
    """
    dlog = grid_step(tem_pix)
    o_min, o_max = kernel_support(vel_pix, dlog)
    te = pixel_edges(tem_pix)
    oe = pixel_edges(obs_pix)
    T = tem_pix.size
    # First/last template pixels the rebin touches (overlap > 0).
    t_first = int(np.searchsorted(te, oe[0], side="right") - 1)
    t_last = int(np.searchsorted(te, oe[-1], side="left") - 1)
    left = t_first - o_max  # lowest template index read
    right = (T - 1) - (t_last - o_min)
    vmax = float(np.max(np.abs(vel_pix)))
    return {
        "safe": bool(
            left >= safety_pad_px and right >= safety_pad_px and oe[0] >= te[0] and oe[-1] <= te[-1]
        ),
        "left_margin_px": int(left),
        "right_margin_px": int(right),
        "left_margin_kms": float(C_KMS * np.expm1(left * dlog)),
        "right_margin_kms": float(C_KMS * np.expm1(right * dlog)),
        "safety_pad_px": int(safety_pad_px),
        "kernel_offsets_px": [int(o_min), int(o_max)],
        "kernel_center": int(-o_min),
        "kernel_len": int(o_max - o_min + 1),
        "dlog": dlog,
        "velscale_kms": float(C_KMS * np.expm1(dlog)),
        "vmax_kms": vmax,
        "tem_lo": float(te[0]),
        "tem_hi": float(te[-1]),
        "obs_lo": float(oe[0]),
        "obs_hi": float(oe[-1]),
        "first_template_pixel_used": t_first,
        "last_template_pixel_used": t_last,
    }


def _spaxel_layout(name: str, arr: np.ndarray, S: int, L: int, layout: str | None) -> np.ndarray:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (S, L) = ({S}, {L}) or (L, S); got shape {arr.shape}")
    if layout is not None:
        if layout not in ("SL", "LS"):
            raise ValueError(f"datacube_layout must be 'SL', 'LS' or None; got {layout!r}")
        expect = (S, L) if layout == "SL" else (L, S)
        if arr.shape != expect:
            raise ValueError(
                f"{name} with datacube_layout={layout!r} must have shape {expect}; got {arr.shape}"
            )
        return arr if layout == "SL" else arr.T
    if S == L and arr.shape == (S, L):
        raise ValueError(
            f"{name} has shape {arr.shape} with S == L == {S}: cannot tell (S, L) from (L, S); "
            "pass datacube_layout='SL' (rows are spaxels) or 'LS' (rows are pixels)"
        )
    if arr.shape == (S, L):
        return arr
    if arr.shape == (L, S):
        return arr.T
    raise ValueError(
        f"{name} must have shape (S, L) = ({S}, {L}) or (L, S) = ({L}, {S}) (S from LOSVD, L from "
        f"obs_pix); got {arr.shape}"
    )


def _check_used_finite(name: str, arr: np.ndarray, mask: np.ndarray) -> None:
    used = arr[:, mask]
    bad = ~np.isfinite(used)
    if bad.any():
        s, j = (int(i) for i in np.argwhere(bad)[0])
        l_idx = int(np.flatnonzero(mask)[j])
        raise ValueError(
            f"{name} must be finite on fitted pixels (Mask True); found {int(bad.sum())} NaN/Inf, "
            f"first at spaxel {s}, pixel {l_idx}. Mask those pixels (Mask False) or clean them"
        )


# --------------------------------------------------------------------------------------------
# Writing a store
# --------------------------------------------------------------------------------------------


def _write_rebin(f: h5py.File, R: sp.csr_matrix) -> None:
    """Write ``/R_T`` (T, L) float32 (the layout's dense copy) and ``/RebinCSR`` (float64)."""
    L, T = R.shape
    dset = f.create_dataset("R_T", shape=(T, L), dtype=np.float32, chunks=(min(T, 1024), L))
    # Written in row blocks from the sparse matrix: never a dense float64 (T, L) copy.
    RT = R.T.tocsr()
    for t0 in range(0, T, 1024):
        dset[t0 : t0 + 1024] = RT[t0 : t0 + 1024].toarray().astype(np.float32)
    g = f.create_group("RebinCSR")
    g.create_dataset("data", data=R.data.astype(np.float64))
    g.create_dataset("indices", data=R.indices.astype(np.int64))
    g.create_dataset("indptr", data=R.indptr.astype(np.int64))
    g.attrs["shape"] = [L, T]
    g.attrs["definition"] = (
        "R[l, t] = |obs_l intersect tem_t| / |obs_l| in ln(lambda), edges at midpoints"
    )


class StoreWriter:
    """Writes and checks a cube store (CubeFit calls it ``H5Manager``: :class:`nnfit.spectral.manager.H5Manager`).

    Parameters
    ----------
    path : path-like
        The HDF5 file (created if missing).
    tem_pix : array (T,)
        Template grid, natural ln(lambda), uniform.
    obs_pix : array (L,)
        Observed grid, natural ln(lambda), strictly increasing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.spectral.simulate import simulate_cube
    >>> sim = simulate_cube(4, 2, 6, seed=1)
    >>> mgr = StoreWriter(pathlib.Path(tempfile.mkdtemp()) / "c.h5", sim.tem_pix, sim.obs_pix)
    >>> mgr.set_velocity_grid(sim.vel_pix)
    >>> mgr.populate_from_arrays(sim.losvd, sim.datacube, sim.templates, mask=sim.mask)
    >>> mgr.ensure_rebin_and_resample()
    >>> StoreWriter.diagnose_rebin_edges(mgr.path)["safe"]
    True
    """

    def __init__(self, path: str | os.PathLike[str], tem_pix: Any, obs_pix: Any) -> None:
        self.path = Path(path)
        self.tem_pix = _check_grid("tem_pix", tem_pix, uniform=True)
        self.obs_pix = _check_grid("obs_pix", obs_pix, uniform=False)
        self.vel_pix: np.ndarray | None = None
        if self.path.exists():
            with open_h5(self.path, "r") as f:
                if "VelPix" in f:
                    self.vel_pix = f["VelPix"][()]

    # -- velocity grid -----------------------------------------------------------------------
    def set_velocity_grid(self, vbins: Any) -> None:
        """Set the LOSVD velocity bin centres (km/s), strictly increasing; writes ``/VelPix``."""
        v = as_float_array("vbins", vbins, ndim=(1,))
        if v.size > 1 and not np.all(np.diff(v) > 0):
            raise ValueError(f"vbins must be strictly increasing km/s; got {v[:5]}...")
        if np.any(v <= -C_KMS):
            raise ValueError(f"vbins must be > -c = -{C_KMS} km/s; found min {float(v.min())}")
        self.vel_pix = v
        with open_h5(self.path, "a") as f:
            if "VelPix" in f:
                del f["VelPix"]
            f.create_dataset("VelPix", data=v)

    # -- populate -----------------------------------------------------------------------------
    def populate_from_arrays(
        self,
        losvd: Any,
        datacube: Any,
        templates: Any,
        mask: Any = None,
        xpix: Any = None,
        ypix: Any = None,
        binnum: Any = None,
        noise: Any = None,
        datacube_layout: str | None = None,
        *,
        template_meta: dict | None = None,
        safety_pad_px: int = 2,
        kernel: str = "linear",
        convention: str = "cz",
        vsyst: float = 0.0,
        flux_scale: Any = None,
        medium_obs: str | None = None,
        medium_templates: str | None = None,
    ) -> None:
        """Validate the problem's arrays and write the store in the canonical layout.

        The store is written afresh (to a temporary file that atomically replaces ``path``, so
        an interruption leaves the previous file): anything else it held, such as a HyperCube
        or fit results for other inputs, is discarded. The rebin operator is written too.

        Parameters
        ----------
        losvd : array (S, V, C)
            Non-negative LOSVD histograms on the velocity grid (``set_velocity_grid`` first).
        datacube : array (S, L) or (L, S)
            Observed spectra; see ``datacube_layout`` when S == L.
        templates : array (T, *grid) or (T,)
            Templates on ``tem_pix``; flattened to (P, T) in C order over ``grid``.
        mask : bool array (L,), optional
            True = fitted pixel (default all True).
        xpix, ypix : arrays (nPix,), optional
            Image-plane pixel coordinates.
        binnum : int array (nPix,), optional
            Spaxel index of each image pixel, in [0, S-1].
        noise : array like ``datacube``, optional
            1-sigma noise, finite and > 0 on fitted pixels; enables weighted fits.
        datacube_layout : {"SL", "LS"}, optional
            Orientation of ``datacube``/``noise``; required only when S == L.
        template_meta : dict, optional
            Extra template metadata (axis names, axis values) merged into
            ``template_meta_json``.
        safety_pad_px : int, optional
            Template pixels required beyond the largest LOSVD shift on each side.
        kernel : {"linear", "fourier"}
            The model (root attribute ``kernel``; see :class:`CubeOperator`). ``"fourier"`` is
            the exact band-limited model of :mod:`nnfit.spectral.placement`; ``"linear"`` the
            original one, which the HyperCube builder implements.
        convention : {"cz", "ppxf"}
            Velocity convention of ``/VelPix`` and ``vsyst`` (attribute
            ``velocity_convention``); ``"fourier"`` only.
        vsyst : float
            Systemic velocity (km/s) added to every LOSVD bin (attribute ``vsyst_kms``).
        flux_scale : array (S,) or "data", optional
            Per-spaxel factor on the kernels (``/FluxScale``); ``"data"``: each spaxel's mean
            flux over fitted pixels, for unit-normalised LOSVDs.
        medium_obs, medium_templates : {"air", "vacuum"}, optional
            Wavelength media, recorded as attributes; a mismatch is refused.
        """
        from nnfit.spectral.checks import check_media
        from nnfit.spectral.losvd import VELOCITY_CONVENTIONS
        from nnfit.spectral.placement import KERNELS

        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
        if convention not in VELOCITY_CONVENTIONS:
            raise ValueError(
                f"convention must be one of {VELOCITY_CONVENTIONS}; got {convention!r}"
            )
        if kernel == "linear" and (convention != "cz" or vsyst):
            raise ValueError(
                "kernel='linear' supports convention='cz' and vsyst=0 only; use kernel='fourier'"
            )
        check_media(medium_obs, medium_templates)
        if self.vel_pix is None:
            raise ValueError(
                "velocity grid not set: call set_velocity_grid(vbins) before populate_from_arrays"
            )
        T, L, V = self.tem_pix.size, self.obs_pix.size, self.vel_pix.size
        pad = check_int("safety_pad_px", safety_pad_px, low=0)

        lo = as_float_array("losvd", losvd, ndim=(3,))
        S, C = lo.shape[0], lo.shape[2]
        if lo.shape[1] != V:
            raise ValueError(
                f"losvd must be (S, V, C) with V = len(VelPix) = {V}; got shape {lo.shape}"
            )
        if np.any(lo < 0):
            idx = tuple(int(i) for i in np.argwhere(lo < 0)[0])
            raise ValueError(
                f"losvd must be >= 0 everywhere (it is a histogram of light); found "
                f"{int((lo < 0).sum())} negative value(s), first {lo[idx]!r} at (s, v, c) = {idx}"
            )

        tarr = as_float_array("templates", templates, ndim=tuple(range(1, 8)))
        if tarr.shape[0] != T:
            raise ValueError(
                f"templates must have T = len(tem_pix) = {T} pixels along axis 0 (shape (T, ...)); "
                f"got shape {tarr.shape}"
            )
        grid_shape = tuple(int(n) for n in tarr.shape[1:])
        templates_PT = tarr.reshape(T, -1).T
        P = templates_PT.shape[0]

        if mask is None:
            m = np.ones(L, dtype=bool)
        else:
            m = np.asarray(mask)
            if m.dtype != bool:
                # CubeFit's scripts pass 0/1 masks: take them, but nothing else
                if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
                    raise ValueError(
                        "mask must be boolean or 0/1 (True or 1 = fitted); got dtype "
                        f"{m.dtype} with values other than 0 and 1"
                    )
                m = m.astype(bool)
            if m.shape != (L,):
                raise ValueError(f"mask must have shape (L,) = ({L},); got {m.shape}")
            if not m.any():
                raise ValueError("mask must leave at least one pixel fitted; found all False")

        dc = as_float_array("datacube", datacube, ndim=(2,), finite=False)
        dc = np.array(_spaxel_layout("datacube", dc, S, L, datacube_layout), dtype=np.float64)
        _check_used_finite("datacube", dc, m)
        n_replaced = int((~np.isfinite(dc)).sum())
        dc[~np.isfinite(dc)] = 0.0

        nz = None
        if noise is not None:
            nz = as_float_array("noise", noise, ndim=(2,), finite=False)
            nz = np.array(_spaxel_layout("noise", nz, S, L, datacube_layout), dtype=np.float64)
            _check_used_finite("noise", nz, m)
            used = nz[:, m]
            if np.any(used <= 0):
                s, j = (int(i) for i in np.argwhere(used <= 0)[0])
                raise ValueError(
                    f"noise must be > 0 on fitted pixels; found {used[s, j]!r} at spaxel {s}, "
                    f"pixel {int(np.flatnonzero(m)[j])}"
                )
            nz[~np.isfinite(nz) | (nz <= 0)] = 1.0  # unused pixels: a harmless placeholder

        guard = guard_report(self.tem_pix, self.obs_pix, self.vel_pix, pad)
        if kernel == "fourier":
            from nnfit.spectral.placement import check_coverage

            check_coverage(self.tem_pix, self.obs_pix, self.vel_pix, convention, vsyst, pad)
        elif not guard["safe"]:
            raise ValueError(
                "template grid does not cover the observed range plus the largest LOSVD shift "
                f"and a safety pad of {pad} px: expected margins >= {pad} template pixels on both "
                f"sides, found left {guard['left_margin_px']} px, right {guard['right_margin_px']} "
                f"px (kernel offsets {guard['kernel_offsets_px']} px for |v| <= "
                f"{guard['vmax_kms']:.0f} km/s; templates span [{guard['tem_lo']:.6f}, "
                f"{guard['tem_hi']:.6f}], observed [{guard['obs_lo']:.6f}, {guard['obs_hi']:.6f}] "
                "in ln lambda). Extend the templates or trim the observed range"
            )

        fs = None
        if isinstance(flux_scale, str):
            if flux_scale != "data":
                raise ValueError(f"flux_scale must be an array (S,) or 'data'; got {flux_scale!r}")
            fs = mean_flux(dc, m)
        elif flux_scale is not None:
            fs = as_float_array("flux_scale", flux_scale, ndim=(1,))
            if fs.shape != (S,):
                raise ValueError(f"flux_scale must have shape (S,) = ({S},); got {fs.shape}")

        xp = yp = bn = None
        if xpix is not None or ypix is not None:
            if xpix is None or ypix is None:
                raise ValueError("xpix and ypix must be given together")
            xp = as_float_array("xpix", xpix, ndim=(1,))
            yp = as_float_array("ypix", ypix, ndim=(1,))
            if xp.shape != yp.shape:
                raise ValueError(
                    f"xpix and ypix must have equal shapes; got {xp.shape}, {yp.shape}"
                )
        if binnum is not None:
            bn_raw = np.asarray(binnum)
            if bn_raw.dtype.kind not in "iu" or bn_raw.ndim != 1:
                raise ValueError(
                    f"binnum must be a 1-D integer array; got dtype {bn_raw.dtype}, shape {bn_raw.shape}"
                )
            if bn_raw.size and (bn_raw.min() < 0 or bn_raw.max() > S - 1):
                bad = int(np.flatnonzero((bn_raw < 0) | (bn_raw > S - 1))[0])
                raise ValueError(
                    f"binnum values must be in [0, S-1] = [0, {S - 1}]; found {int(bn_raw[bad])} at "
                    f"index {bad}"
                )
            if xp is not None and bn_raw.shape != xp.shape:
                raise ValueError(
                    f"binnum must have the shape of xpix {xp.shape}; got {bn_raw.shape}"
                )
            bn = bn_raw.astype(np.int32)

        meta = {
            "shape": [T, *grid_shape],
            "grid_shape": list(grid_shape),
            "order": "C",
            "layout": "Templates[p, t] = templates[t, *np.unravel_index(p, grid_shape)]",
        }
        if template_meta:
            meta.update(template_meta)
        dims = {"nSpat": S, "nLSpec": L, "nTSpec": T, "nVel": V, "nComp": C, "nPop": P}

        # The store is written afresh into a temporary file that replaces it atomically: a kill
        # leaves the old store or the new one, and the space of a previous HyperCube is freed.
        with writer_lock(self.path), atomic_path(self.path, suffix=".h5") as tmp:
            with create_h5(tmp) as f:
                f.create_dataset("DataCube", data=dc, dtype=np.float64)
                if nz is not None:
                    f.create_dataset("Noise", data=nz, dtype=np.float64)
                f.create_dataset("Templates", data=templates_PT, dtype=np.float32)
                f.create_dataset("LOSVD", data=lo, dtype=np.float32)
                f.create_dataset("TemPix", data=self.tem_pix)
                f.create_dataset("ObsPix", data=self.obs_pix)
                f.create_dataset("VelPix", data=self.vel_pix)
                f.create_dataset("Mask", data=m, dtype=bool)
                if xp is not None:
                    f.create_dataset("XPix", data=xp)
                    f.create_dataset("YPix", data=yp)
                if bn is not None:
                    f.create_dataset("BinNum", data=bn, dtype=np.int32)
                f.attrs["dims"] = json.dumps(dims)
                f.attrs["template_meta_json"] = json.dumps(meta)
                self._write_guard_attrs(f, guard)
                f.attrs["masked_nonfinite_replaced"] = n_replaced
                f.attrs["lambda_units"] = "natural log of wavelength"
                f.attrs["kernel"] = kernel
                f.attrs["velocity_convention"] = convention
                f.attrs["vsyst_kms"] = float(vsyst)
                f.attrs["medium_obs"] = medium_obs or "unknown"
                f.attrs["medium_templates"] = medium_templates or "unknown"
                if fs is not None:
                    f.create_dataset("FluxScale", data=fs)
                _write_rebin(f, rebin_matrix(self.tem_pix, self.obs_pix))

    @staticmethod
    def _write_guard_attrs(f: h5py.File, guard: dict[str, Any]) -> None:
        """Write the guard report as JSON plus ``guard.*`` scalar attributes."""
        f.attrs["guard_info_json"] = json.dumps(guard)
        for key, val in guard.items():
            if isinstance(val, bool | int | float):
                f.attrs[f"guard.{key}"] = val

    # -- rebin ---------------------------------------------------------------------------------
    def ensure_rebin_and_resample(self) -> None:
        """Make sure the rebin operator is stored: ``/R_T`` (T, L) f32, ``/RebinCSR`` (L, T) f64.

        ``populate_from_arrays`` already writes both, so this is a no-op on stores it made; kept
        for the spec's boot sequence and for stores written by other tools. Template FFTs are not
        cached in the file: their length depends on the kernel, and they take well under a
        second to recompute.
        """
        with open_h5(self.path, "a") as f:
            if "TemPix" not in f or "ObsPix" not in f:
                raise ValueError(f"{self.path}: populate_from_arrays first (missing /TemPix)")
            T, L = f["TemPix"].shape[0], f["ObsPix"].shape[0]
            if "RebinCSR" in f and "R_T" in f and f["R_T"].shape == (T, L):
                return  # populate_from_arrays already wrote it
            for name in ("R_T", "RebinCSR"):
                if name in f:
                    del f[name]
            _write_rebin(f, rebin_matrix(f["TemPix"][()], f["ObsPix"][()]))

    @staticmethod
    def diagnose_rebin_edges(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Coverage report of the template grid vs observed range and LOSVD shifts.

        Returns the :func:`guard_report` dict (``safe``, ``left_margin_px``,
        ``right_margin_px``, in km/s too) plus ``safety_pad_px`` and
        ``rebin_row_sum_min``/``max`` (1 on fully covered observed pixels);
        :func:`describe_rebin_edges` puts it in one line.
        """
        with open_h5(path, "r") as f:
            check_inputs(f, path)
            tem, obs, vel = f["TemPix"][()], f["ObsPix"][()], f["VelPix"][()]
            pad = int(f.attrs.get("guard.safety_pad_px", 0))
            R = read_rebin(f, tem.size, obs.size)
        rep = guard_report(tem, obs, vel, pad)
        rs = np.asarray(R.sum(axis=1)).ravel()
        rep["rebin_row_sum_min"] = float(rs.min())
        rep["rebin_row_sum_max"] = float(rs.max())
        rep["safety_pad_px"] = pad
        return rep


def describe_rebin_edges(rep: dict[str, Any]) -> str:
    """One line for people from :meth:`StoreWriter.diagnose_rebin_edges`'s report."""
    return (
        f"Safe={rep['safe']}  left margin {rep['left_margin_px']} px "
        f"({rep['left_margin_kms']:.0f} km/s), right margin {rep['right_margin_px']} px "
        f"({rep['right_margin_kms']:.0f} km/s), pad {rep['safety_pad_px']} px, kernel offsets "
        f"{rep['kernel_offsets_px']} px, rebin row sums in [{rep['rebin_row_sum_min']:.6f}, "
        f"{rep['rebin_row_sum_max']:.6f}]"
    )
