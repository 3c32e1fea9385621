"""The kernel functions against PyPI catune 0.1.0 (the reference) and analytic facts."""

import catune
import numpy as np
import pytest

from nnfit.calcium import build_kernel, compute_lipschitz, tau_to_ar2

PARAMS = [
    (0.05, 0.5, 30.0),
    (0.02, 0.4, 30.0),
    (0.005, 0.1, 100.0),
    (0.1, 2.0, 7.5),
    (0.001, 0.01, 1000.0),
    (0.2, 0.21, 15.0),
]


@pytest.mark.parametrize(("tr", "td", "fs"), PARAMS)
def test_matches_catune_exactly(tr, td, fs):
    h = build_kernel(tr, td, fs)
    assert np.array_equal(h, catune.build_kernel(tr, td, fs))
    assert tau_to_ar2(tr, td, fs) == catune.tau_to_ar2(tr, td, fs)
    assert compute_lipschitz(h) == catune.compute_lipschitz(h)


@pytest.mark.parametrize(("tr", "td", "fs"), PARAMS)
def test_kernel_shape_and_ar2_recursion(tr, td, fs):
    h = build_kernel(tr, td, fs)
    assert h[0] == 0.0 and h.max() == 1.0 and np.all(h >= 0)
    assert len(h) == max(2, int(np.ceil(-np.log(1e-6) * td * fs)))
    # Lipschitz of a non-negative kernel is its DC gain squared.
    assert np.isclose(compute_lipschitz(h), h.sum() ** 2, rtol=1e-12)
    # h is the AR(2) impulse response delayed by one frame: h[t] = g1 h[t-1] + g2 h[t-2], t >= 3.
    g1, g2, _, _ = tau_to_ar2(tr, td, fs)
    if len(h) > 3:
        assert np.allclose(h[3:], g1 * h[2:-1] + g2 * h[1:-2], atol=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.5, 0.05, 30.0), "tau_rise must be smaller than tau_decay"),
        ((0.5, 0.5, 30.0), "tau_rise must be smaller than tau_decay"),
        ((0.0, 0.5, 30.0), "tau_rise must be > 0"),
        ((0.05, -1.0, 30.0), "tau_decay must be > 0"),
        ((0.05, 0.5, 0.0), "fs must be > 0"),
        ((0.05, 0.5, float("nan")), "fs must be finite"),
    ],
)
def test_bad_kinetics_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        build_kernel(*args)
    with pytest.raises(ValueError, match=message):
        tau_to_ar2(*args)
