"""Gauss-Hermite LOSVDs and velocity conventions against pPXF and closed forms."""

import numpy as np
import pytest

from nnfit.spectral.losvd import (
    convert_velocity,
    gauss_hermite_rfft,
    ln_shift,
    losvd_from_moments,
    redshift_from_velocity,
    velocity_from_redshift,
)
from nnfit.spectral.operators import C_KMS


def test_rfft_matches_ppxf_losvd_rfft():
    ppxf = pytest.importorskip("ppxf.ppxf")
    nl = 129
    for pars in ([3.3, 1.7, 0.1, -0.05], [-7.2, 0.6, -0.2, 0.1], [0.0, 4.0, 0.0, 0.0]):
        vsyst = 0.37
        ref = ppxf.losvd_rfft(np.array(pars), 1, [4], nl, 1, vsyst, 1, 0.0)[:, 0, 0]
        w = np.linspace(0, np.pi, nl)
        got = gauss_hermite_rfft(w, vsyst + pars[0], pars[1], pars[2], pars[3])
        assert np.max(np.abs(got - ref)) < 1e-14


def test_histogram_is_the_sampled_analytic_kernel():
    # the inverse FFT of the analytic transform, sampled at integer pixels, is the density at
    # the pixel centres: losvd_from_moments on a 1-pixel velocity grid gives the same numbers
    n = 256
    w = 2 * np.pi * np.fft.rfftfreq(n)
    for p in [(0.0, 0.0), (0.1, 0.0), (0.0, 0.05), (-0.1, 0.08)]:
        k = np.fft.irfft(gauss_hermite_rfft(w, 128.3, 3.0, *p), n)
        L = losvd_from_moments(np.arange(n) * 1.0, 128.3, 3.0, *p)
        assert np.max(np.abs(k / k.sum() - L)) < 1e-12


def test_vectorised_and_normalised():
    v = np.arange(-800.0, 801.0, 20.0)
    V = np.array([[0.0, 50.0, -120.0]])
    L = losvd_from_moments(v, V, [[80.0], [200.0]], h3=0.05, h4=-0.02)
    assert L.shape == (2, 3, v.size)
    assert np.allclose(L.sum(-1), 1.0)
    one = losvd_from_moments(v, 50.0, 200.0, 0.05, -0.02)
    assert np.allclose(L[1, 1], one)
    L0 = losvd_from_moments(v, V, 80.0)
    assert np.allclose((L0 * v).sum(-1), V.ravel(), atol=1e-9)


def test_bad_sigma_and_empty_support_name_the_fix():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        losvd_from_moments([0.0, 1.0], 0.0, 0.0)
    with pytest.raises(ValueError, match="widen the velocity grid"):
        losvd_from_moments([0.0, 10.0], 1e5, 1.0)


def test_conventions():
    z = 0.088
    assert velocity_from_redshift(z, "ppxf") == pytest.approx(C_KMS * np.log1p(z), rel=1e-15)
    assert velocity_from_redshift(z, "cz") == pytest.approx(C_KMS * z, rel=1e-15)
    # ~1100 km/s apart in the observed frame at z = 0.088
    diff = velocity_from_redshift(z, "cz") - velocity_from_redshift(z, "ppxf")
    assert 1050 < diff < 1150
    for conv in ("ppxf", "cz"):
        assert redshift_from_velocity(velocity_from_redshift(z, conv), conv) == pytest.approx(z)
    v = convert_velocity(26000.0, "cz", "ppxf")
    assert ln_shift(v, "ppxf") == pytest.approx(ln_shift(26000.0, "cz"), rel=1e-14)
    # a bin on top of a systemic velocity: shifts add in ln(lambda) in both conventions
    assert ln_shift(100.0, "ppxf", 26000.0) == pytest.approx(
        ln_shift(0.0, "ppxf", 26000.0) + ln_shift(100.0, "ppxf"), rel=1e-14
    )
    assert ln_shift(100.0, "cz", 26000.0) == pytest.approx(
        np.log((1 + 26000.0 / C_KMS) * (1 + 100.0 / C_KMS)), rel=1e-14
    )
    with pytest.raises(ValueError, match="convention must be one of"):
        ln_shift(1.0, "vrad")
