"""Exactness of the LOSVD kernel, the FFT convolution and the rebin."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.operators import dottest
from nnfit.spectral.model import (
    C_KMS,
    ConvolutionOperator,
    ModelRowComputer,
    RebinOperator,
    convolve_spectra,
    convolve_spectra_adjoint,
    grid_step,
    losvd_to_kernel,
    model_rows,
    rebin_matrix,
    velocity_to_shift,
)


def direct_shift_and_add(spec, losvd_v, vel_pix, dlog):
    """Reference convolution: shift the spectrum by each bin's exact velocity (linear
    interpolation on the zero-padded grid) and add, weighted. No kernel, no FFT."""
    T = spec.size
    padded = np.concatenate([[0.0], spec, [0.0]])
    pos = np.arange(-1, T + 1, dtype=float)
    out = np.zeros(T)
    for w, v in zip(losvd_v, vel_pix, strict=True):
        d = np.log1p(v / C_KMS) / dlog
        out += w * np.interp(np.arange(T) - d, pos, padded, left=0.0, right=0.0)
    return out


def test_kernel_conserves_weight_and_centroid(rng):
    vel = np.linspace(-800, 800, 61)
    w = rng.uniform(0, 1, vel.size)
    dlog = 3.7e-5
    k, c = losvd_to_kernel(w, vel, dlog)
    assert k.sum() == pytest.approx(w.sum(), rel=1e-14)
    assert (k >= 0).all()
    centroid = np.sum((np.arange(k.size) - c) * k) / k.sum()
    expect = np.sum(w * np.log1p(vel / C_KMS) / dlog) / w.sum()
    assert centroid == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_convolution_equals_direct_shift_and_add(rng):
    T, dlog = 400, 1e-4
    spec = rng.standard_normal(T)
    vel = np.linspace(-700, 650, 37)
    w = rng.uniform(0, 1, vel.size)
    k, c = losvd_to_kernel(w, vel, dlog)
    fast = convolve_spectra(spec, k, c)
    ref = direct_shift_and_add(spec, w, vel, dlog)
    np.testing.assert_allclose(fast, ref, atol=1e-12 * np.abs(ref).max())


def test_delta_losvd_moves_line_to_doppler_wavelength():
    dlog = 2e-5
    tem = np.log(5000.0) + dlog * np.arange(6000)
    lam0 = 5150.0
    line = np.exp(-0.5 * ((np.exp(tem) - lam0) / 0.4) ** 2)
    for v in (-437.3, 0.0, 123.45, 987.6):
        k, c = losvd_to_kernel(np.array([1.0]), np.array([v]), dlog)
        out = convolve_spectra(line, k, c)
        # centroid of the shifted line in ln(lambda), against lambda * (1 + v/c)
        cen = np.sum(tem * out) / out.sum()
        cen0 = np.sum(tem * line) / line.sum()
        assert cen - cen0 == pytest.approx(np.log1p(v / C_KMS), abs=1e-9)
        assert np.exp(cen) / np.exp(cen0) == pytest.approx(1 + v / C_KMS, rel=1e-9)


def test_convolution_is_linear_not_circular():
    spec = np.zeros(50)
    spec[-1] = 1.0
    k, c = losvd_to_kernel(np.array([1.0]), np.array([300.0]), 1e-4)  # ~10 px to the red
    assert np.abs(convolve_spectra(spec, k, c)).max() < 1e-15  # falls off the end, no wrap


def test_convolve_adjoint_dot_test(rng):
    vel = np.linspace(-500, 500, 21)
    k, c = losvd_to_kernel(rng.uniform(size=21), vel, 1e-4)
    assert dottest(ConvolutionOperator(k, c, 300), seed=1) < 1e-13
    x, y = rng.standard_normal((2, 4, 300))
    lhs = np.sum(convolve_spectra(x, k, c) * y)
    rhs = np.sum(x * convolve_spectra_adjoint(y, k, c))
    assert lhs == pytest.approx(rhs, rel=1e-13)


def test_rebin_flat_stays_flat_and_flux_conserved(rng):
    tem = np.log(4700.0) + 3e-5 * np.arange(12000)
    lam = np.linspace(4800, 6200, 900)  # uniform in lambda: non-uniform in ln lambda
    obs = np.log(lam)
    R = rebin_matrix(tem, obs)
    assert R.shape == (obs.size, tem.size)
    assert R.nnz < 0.01 * R.shape[0] * R.shape[1]
    np.testing.assert_allclose(R @ np.full(tem.size, 3.5), 3.5, rtol=1e-13)
    # integral over ln lambda conserved for template pixels inside the observed range
    f = rng.uniform(0, 2, tem.size)
    from nnfit.spectral.model import pixel_edges

    oe, te = pixel_edges(obs), pixel_edges(tem)
    inside = (te[:-1] >= oe[0]) & (te[1:] <= oe[-1])
    f_in = np.where(inside, f, 0.0)
    np.testing.assert_allclose(
        np.sum((R @ f_in) * np.diff(oe)), np.sum(f_in * np.diff(te)), rtol=1e-12
    )


def test_rebin_adjoint_exact():
    R = rebin_matrix(np.log(5000.0) + 1e-4 * np.arange(500), np.log(np.linspace(5020, 5230, 77)))
    assert dottest(RebinOperator(R), seed=3) < 1e-14


def test_model_rows_equal_direct_reference(rng):
    dlog = 1e-4
    tem = np.log(5000.0) + dlog * np.arange(700)
    obs = np.log(np.linspace(5050, 5300, 90))
    vel = np.linspace(-600, 600, 25)
    P = 5
    tpl = rng.uniform(0.5, 1.5, (P, tem.size))
    w = rng.uniform(0, 1, vel.size)
    rows = model_rows(tpl, w, vel, tem, obs)
    R = rebin_matrix(tem, obs)
    ref = np.stack([R @ direct_shift_and_add(tpl[p], w, vel, dlog) for p in range(P)])
    np.testing.assert_allclose(rows, ref, rtol=1e-12, atol=1e-13)
    # the tile path (batched) agrees with the single-slab path
    mc = ModelRowComputer(tpl, vel, tem, obs)
    tile = mc.tile(np.stack([w, 2 * w], axis=1)[None])  # (1, V, 2)
    np.testing.assert_allclose(tile[0, 0], rows, rtol=2e-7)
    np.testing.assert_allclose(tile[0, 1], 2 * rows, rtol=2e-7)


def test_zero_losvd_gives_zero_rows():
    tem = np.log(5000.0) + 1e-4 * np.arange(300)
    rows = model_rows(
        np.ones((3, 300)), np.zeros(11), np.linspace(-300, 300, 11), tem, tem[40:260:3]
    )
    assert not rows.any()


def test_velocity_shift_and_grid_errors():
    assert velocity_to_shift(0.0, 1e-4) == 0.0
    with pytest.raises(ValueError, match="> -c"):
        velocity_to_shift(-C_KMS, 1e-4)
    with pytest.raises(ValueError, match="dlog"):
        velocity_to_shift(1.0, 0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        rebin_matrix(np.array([1.0, 3.0, 2.0]), np.array([1.5, 2.0]))
    assert grid_step(np.array([0.0, 0.5, 1.0])) == 0.5
