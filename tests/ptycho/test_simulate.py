"""The synthetic source and the forward model."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.ptycho import (
    alignment_residuals,
    extract_patches,
    far_field_intensity,
    forward_amplitude,
    simulate_dataset,
)
from nnfit.ptycho.simulate import make_probe

KEYS = {
    "diffraction",
    "objectGuess",
    "probeGuess",
    "xcoords",
    "ycoords",
    "xcoords_start",
    "ycoords_start",
}


def test_real_scale_legacy_layout_keys_dtypes_and_normalisation(big_data):
    d = big_data
    assert set(d) == KEYS
    assert d["diffraction"].shape == (64, 64, 1087)
    assert d["diffraction"].dtype == np.float64 and d["diffraction"].flags.c_contiguous
    assert d["objectGuess"].shape == (227, 226) and d["objectGuess"].dtype == np.complex128
    assert d["probeGuess"].shape == (64, 64) and d["probeGuess"].dtype == np.complex128
    for k in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        assert d[k].shape == (1087,) and d[k].dtype == np.float64
    amp = d["diffraction"]
    assert amp.min() >= 0 and amp.max() < 10
    # Centres at least half a probe from the edges: every patch lies inside the object.
    assert d["xcoords"].min() >= 32 and d["xcoords"].max() <= 226 - 32
    assert d["ycoords"].min() >= 32 and d["ycoords"].max() <= 227 - 32
    # Poisson counts: amplitude * scale squared is an integer (scale = sqrt(photons), unit-power probe).
    counts = (amp[:, :, :5] * 1e3) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)


def test_layouts_hold_the_same_data_and_seed_is_reproducible():
    kw = dict(n_scans=40, probe_size=16, object_shape=(50, 48), seed=5)
    leg, can = simulate_dataset(**kw, layout="legacy"), simulate_dataset(**kw, layout="canonical")
    np.testing.assert_array_equal(leg["diffraction"].transpose(2, 0, 1), can["diffraction"])
    for k in KEYS - {"diffraction"}:
        np.testing.assert_array_equal(leg[k], can[k])
    again = simulate_dataset(**kw, layout="legacy")
    for k in KEYS:
        np.testing.assert_array_equal(leg[k], again[k])
    other = simulate_dataset(**{**kw, "seed": 6}, layout="legacy")
    assert not np.array_equal(other["diffraction"], leg["diffraction"])


def test_pattern_is_the_forward_model_up_to_poisson_noise():
    d = simulate_dataset(
        n_scans=50, probe_size=32, object_shape=(80, 80), photons=1e10, layout="canonical"
    )
    model = forward_amplitude(d["probeGuess"], d["objectGuess"], d["xcoords"], d["ycoords"])
    # At 1e10 photons the amplitude noise is 0.5 / sqrt(1e10) = 5e-6 per pixel.
    assert np.abs(model - d["diffraction"]).max() < 1e-4


def test_extract_patches_integer_positions_are_exact_slices(rng):
    obj = rng.standard_normal((30, 40)) + 1j * rng.standard_normal((30, 40))
    p = extract_patches(obj, [10.0, 20.0], [8.0, 22.0], (16, 12))
    np.testing.assert_array_equal(p[0], obj[0:16, 4:16])
    np.testing.assert_array_equal(p[1], obj[14:30, 14:26])


def test_extract_patches_bilinear_and_bounds(rng):
    obj = rng.standard_normal((20, 20))
    p = extract_patches(obj, [10.25], [10.5], (4, 4))[0]
    want = 0.5 * (0.75 * obj[8:12, 8:12] + 0.25 * obj[8:12, 9:13]) + 0.5 * (
        0.75 * obj[9:13, 8:12] + 0.25 * obj[9:13, 9:13]
    )
    np.testing.assert_allclose(p, want, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="reach outside"):
        extract_patches(obj, [1.0], [10.0], (4, 4))
    with pytest.raises(ValueError, match="reach outside"):
        extract_patches(obj, [10.0], [18.5], (4, 4))


def test_far_field_conserves_power_and_is_centred(rng):
    probe = make_probe(32)
    patch = np.exp(1j * rng.uniform(-1, 1, (1, 32, 32)))
    inten = far_field_intensity(probe, patch)
    assert inten.sum() == pytest.approx(1.0, rel=1e-12)  # unit-power probe, |object| = 1
    flat = far_field_intensity(probe, np.ones((1, 32, 32)))
    peak = np.unravel_index(np.argmax(flat[0]), (32, 32))
    assert abs(peak[0] - 16) <= 1 and abs(peak[1] - 16) <= 1  # fftshift puts DC at (16, 16)


def test_alignment_residuals_find_every_pattern_at_its_own_coordinates():
    d = simulate_dataset(
        n_scans=64, probe_size=32, object_shape=(90, 90), seed=2, layout="canonical"
    )
    args = (d["probeGuess"], d["objectGuess"], d["xcoords"], d["ycoords"])
    for fit_scale in (False, True):
        r = alignment_residuals(d["diffraction"], *args, fit_scale=fit_scale)
        own = np.diag(r)
        others = np.where(np.eye(64, dtype=bool), np.inf, r).min(axis=1)
        assert np.all(own * 10 < others)
    # With the scale fitted, a uniformly rescaled stack aligns just as well.
    r = alignment_residuals(3.0 * d["diffraction"], *args, fit_scale=True)
    assert np.all(np.argmin(r, axis=1) == np.arange(64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_scans": 0}, "n_scans"),
        ({"probe_size": 2}, "probe_size"),
        ({"object_shape": (20, 100), "probe_size": 32}, "object_shape"),
        ({"photons": -1.0}, "photons"),
        ({"photons": 1e30}, r"photons must be <= 1e\+18"),
        ({"layout": "hwn"}, "layout"),
    ],
)
def test_bad_simulation_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_dataset(**kwargs)
