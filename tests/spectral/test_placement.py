"""The exact (band-limited) placement against closed forms and against the frame it is fitted in."""

import numpy as np
import pytest

from nnfit.spectral.operator import CubeOperator
from nnfit.spectral.operators import C_KMS
from nnfit.spectral.placement import bin_kernel_matrix, place_grids

DLOG = 1e-4
FREQS = np.array([0.013, 0.041, 0.097, 0.15, 0.2])  # cycles per template pixel


def _cosines(t, amps, phases):
    """A band-limited template sampled (or evaluated) at template positions t."""
    return 2.0 + sum(
        a * np.cos(2 * np.pi * f * t + ph) for a, f, ph in zip(amps, FREQS, phases, strict=True)
    )


def _tapered(T, amps, phases):
    """_cosines on 0..T-1, tapered smoothly to 0 over the outer 150 pixels.

    A template that stops abruptly rings (1/n) when shifted by a fraction of a pixel, in pPXF
    as here; the taper keeps that ringing out of the comparison with the infinite cosines.
    """
    t = np.arange(T)
    w = np.clip(np.minimum(t, T - 1 - t) / 150.0, 0.0, 1.0)
    return _cosines(t, amps, phases) * (0.5 - 0.5 * np.cos(np.pi * w))


def _analytic(u, amps, phases, V, sig, r):
    """Gaussian-broadened, shifted band-limited template averaged over r samples from u."""
    out = np.zeros_like(u)
    for i in range(r):
        t = u + i
        val = np.full_like(t, 2.0)
        for a, f, ph in zip(amps, FREQS, phases, strict=True):
            val += (
                a * np.exp(-0.5 * (2 * np.pi * f * sig) ** 2) * np.cos(2 * np.pi * f * (t - V) + ph)
            )
        out += val / r
    return out


@pytest.mark.parametrize("ratio", [1, 2])
@pytest.mark.parametrize("sig_px", [0.5, 1.3, 4.0])
def test_moments_model_is_the_band_limited_convolution(ratio, sig_px):
    rng = np.random.default_rng(3)
    T = 1200
    tem = np.log(4500.0) + DLOG * np.arange(T)
    amps = rng.uniform(0.1, 0.5, FREQS.size)
    phases = rng.uniform(0, 2 * np.pi, FREQS.size)
    templ = _tapered(T, amps, phases)[None]
    frac = 0.3141
    L = 300
    start = 400 + frac  # template position of observed pixel 0's first sample
    obs = tem[0] + DLOG * (start + ratio * np.arange(L) + 0.5 * (ratio - 1))
    V_px = 7.77
    V = C_KMS * V_px * DLOG  # 'ppxf' convention: V / c = shift in ln(lambda)
    op = CubeOperator(
        templ,
        None,
        None,
        tem,
        obs,
        kernel="fourier",
        convention="ppxf",
        moments=np.array([[[V, sig_px * C_KMS * DLOG]]]),
    )
    model = op.forward(np.ones((1, 1)))[0]
    ref = _analytic(start + ratio * np.arange(L), amps, phases, V_px, sig_px, ratio)
    # the templates' highest frequency (0.27 c/px) is well below Nyquist: exact to rounding
    # up to the kernel's truncated O(n^-2) tail
    assert np.max(np.abs(model - ref)) < 2e-4 * 2.0


def test_histogram_bins_are_band_limited_deltas():
    T = 900
    tem = np.log(5000.0) + DLOG * np.arange(T)
    amps = np.array([0.3, 0.2, 0.2, 0.1, 0.1])
    phases = np.array([0.1, 1.0, 2.0, 3.0, 4.0])
    templ = _tapered(T, amps, phases)[None]
    obs = tem[300:600] + 0.42 * DLOG
    vel = np.array([-150.0, -20.0, 33.3, 160.0])  # fractional shifts in 'cz'
    w = np.array([0.1, 0.4, 0.3, 0.2])
    op = CubeOperator(templ, w[None, :, None], vel, tem, obs, kernel="fourier")
    model = op.forward(np.ones((1, 1)))[0]
    u = 300.42 + np.arange(300)
    ref = np.zeros_like(u)
    for wj, v in zip(w, vel, strict=True):
        d = np.log1p(v / C_KMS) / DLOG
        ref += wj * _cosines(u - d, amps, phases)
    assert np.max(np.abs(model - ref)) < 1e-4


def test_integer_bins_are_single_taps():
    W, center, o = bin_kernel_matrix(np.arange(-5.0, 6.0) + 40.0)
    assert W.shape == (11, 11) and o == 40 and center == 5
    assert np.array_equal(W, np.eye(11))


def test_float32_jitter_is_uniform_and_a_resampling_is_not():
    tem = np.log(3800.0) + DLOG * np.arange(3000)
    obs = (tem[500:2500] + 0.25 * DLOG).astype(np.float32).astype(np.float64)
    pl = place_grids(tem, obs)
    assert pl.uniform and pl.ratio == 1 and pl.max_dev_px < 0.01
    assert pl.j0 == 500 and pl.frac == pytest.approx(0.25, abs=2e-3)
    lam = np.linspace(4800.0, 6000.0, 800)  # uniform in lambda (MUSE-like)
    assert not place_grids(np.log(4700.0) + DLOG * np.arange(2400), np.log(lam)).uniform


@pytest.mark.parametrize("convention", ["ppxf", "cz"])
def test_observed_and_rest_frame_fits_agree(convention):
    from nnfit.spectral.fit import fit_cube
    from nnfit.spectral.losvd import ln_shift, losvd_from_moments

    rng = np.random.default_rng(5)
    T, P, S = 2600, 5, 3
    tem = np.log(4000.0) + DLOG * np.arange(T)
    templates = np.array(
        [_cosines(np.arange(T), rng.uniform(0.1, 0.4, 5), rng.uniform(0, 6, 5)) for _ in range(P)]
    )
    vsys = 25000.0
    rest = tem[700:1500] + 0.37 * DLOG
    observed = rest + ln_shift(0.0, convention, vsys)
    vel = np.arange(-600.0, 601.0, 15.0)
    losvd = losvd_from_moments(vel, rng.uniform(-80, 80, (S, 1)), rng.uniform(90, 250, (S, 1)))
    losvd = np.moveaxis(losvd, 1, 2)  # (S, V, C=1)
    common = dict(kernel="fourier", convention=convention)
    op_r = CubeOperator(templates, losvd, vel, tem, rest, **common)
    y = op_r.forward(rng.uniform(0.2, 1.0, (1, P))) + 0.01 * rng.standard_normal((S, rest.size))
    op_r = CubeOperator(templates, losvd, vel, tem, rest, datacube=y, **common)
    op_o = CubeOperator(templates, losvd, vel, tem, observed, datacube=y, vsyst=vsys, **common)
    assert op_o.n_taps == op_r.n_taps
    x_r, _ = fit_cube(op_r, method="gram", tol=1e-12)
    x_o, _ = fit_cube(op_o, method="gram", tol=1e-12)
    assert np.max(np.abs(x_o - x_r)) <= 1e-6 * np.max(np.abs(x_r))
    if convention == "ppxf":  # velocities add: the same LOSVD on an observed-frame grid
        wide = CubeOperator(
            templates, losvd, vel + vsys, tem, observed, kernel="fourier", convention=convention
        )
        assert wide.n_taps == op_r.n_taps  # the bulk shift never enters the kernel


def test_store_records_the_model_and_old_stores_open_linear(tmp_path):
    from nnfit.spectral.simulate import simulate_cube
    from nnfit.spectral.store import H5Manager, load_problem

    sim = simulate_cube(4, 2, 6, seed=1, vmax=500.0)
    import h5py

    old = sim.to_h5(tmp_path / "old.h5")
    with h5py.File(old, "a") as f:  # a store written before the model was recorded
        for k in ("kernel", "velocity_convention", "vsyst_kms"):
            del f.attrs[k]
    assert load_problem(old).model_options == {}
    cut = slice(40, -40)  # the exact kernel's band-limited taps need a wider margin
    mgr = H5Manager(tmp_path / "new.h5", sim.tem_pix, sim.obs_pix[cut])
    mgr.set_velocity_grid(sim.vel_pix)
    mgr.populate_from_arrays(
        sim.losvd,
        sim.datacube[:, cut],
        sim.templates,
        mask=sim.mask[cut],
        kernel="fourier",
        convention="ppxf",
        vsyst=120.0,
        medium_obs="air",
        medium_templates="air",
    )
    prob = load_problem(mgr.path)
    assert prob.model_options == {"kernel": "fourier", "convention": "ppxf", "vsyst": 120.0}
    op = CubeOperator.from_problem(prob)
    direct = CubeOperator(
        prob.templates_PT,
        prob.losvd,
        prob.vel_pix,
        prob.tem_pix,
        prob.obs_pix,
        kernel="fourier",
        convention="ppxf",
        vsyst=120.0,
    )
    x = np.random.default_rng(0).random((prob.C, prob.P))
    assert np.allclose(op.forward(x), direct.forward(x), rtol=1e-13, atol=0)

    with h5py.File(mgr.path) as f:
        assert f.attrs["medium_obs"] == "air" and f.attrs["kernel"] == "fourier"

    from nnfit.spectral.hypercube import build_hypercube

    with pytest.raises(ValueError, match=r"kernel='fourier'.*fit_cube"):
        build_hypercube(mgr.path)
