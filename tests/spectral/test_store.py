"""The store: layout, every validation error, SWMR opening and repair."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from nnfit.io.hdf5 import clear_swmr_status, open_h5, read_superblock
from nnfit.spectral.manager import H5Manager
from nnfit.spectral.simulate import simulate_cube
from nnfit.spectral.store import load_problem


@pytest.fixture(scope="module")
def sim():
    return simulate_cube(6, 2, 6, seed=4, mask_fraction=0.1)


def _mgr(tmp_path, sim, name="s.h5"):
    m = H5Manager(tmp_path / name, sim.tem_pix, sim.obs_pix)
    m.set_velocity_grid(sim.vel_pix)
    return m


def _populate(m, sim, **kw):
    args = {
        "losvd": sim.losvd,
        "datacube": sim.datacube,
        "templates": sim.templates,
        "mask": sim.mask,
    }
    args.update(kw)
    m.populate_from_arrays(**args)


def test_layout_matches_spec(tmp_path, sim):
    m = _mgr(tmp_path, sim)
    S, L = sim.datacube.shape
    xp = np.arange(2 * S, dtype=float)
    _populate(
        m,
        sim,
        datacube=sim.datacube.T,
        noise=sim.noise_sigma,
        xpix=xp,
        ypix=xp + 1,
        binnum=np.repeat(np.arange(S), 2),
        template_meta=sim.template_meta,
    )
    m.ensure_rebin_and_resample()
    with open_h5(m.path, "r") as f:
        shapes = {k: (f[k].shape, f[k].dtype.str) for k in f if isinstance(f[k], h5py.Dataset)}
        dims = json.loads(f.attrs["dims"])
        meta = json.loads(f.attrs["template_meta_json"])
        guard = json.loads(f.attrs["guard_info_json"])
        assert f.attrs["guard.safe"]
        T, V, C, P = sim.tem_pix.size, sim.vel_pix.size, 2, 6
        assert shapes["DataCube"] == ((S, L), "<f8")
        assert shapes["Noise"] == ((S, L), "<f8")
        assert shapes["Templates"] == ((P, T), "<f4")
        assert shapes["LOSVD"] == ((S, V, C), "<f4")
        assert shapes["TemPix"] == ((T,), "<f8") and shapes["ObsPix"] == ((L,), "<f8")
        assert shapes["VelPix"] == ((V,), "<f8") and shapes["Mask"] == ((L,), "|b1")
        assert shapes["R_T"] == ((T, L), "<f4")
        assert shapes["BinNum"] == ((2 * S,), "<i4") and shapes["XPix"] == ((2 * S,), "<f8")
        np.testing.assert_array_equal(f["DataCube"][()], sim.datacube)  # (L, S) was transposed
        # Templates[p] = templates[:, *unravel(p, grid_shape)] in C order
        np.testing.assert_array_equal(f["Templates"][4], sim.templates[:, 1, 1].astype(np.float32))
    assert dims == {"nSpat": S, "nLSpec": L, "nTSpec": T, "nVel": V, "nComp": C, "nPop": P}
    assert meta["shape"] == [T, 2, 3] and meta["grid_axes"] == ["metallicity", "log_age"]
    assert guard["left_margin_px"] >= 2 and guard["right_margin_px"] >= 2
    prob = load_problem(m.path)
    np.testing.assert_array_equal(prob.templates_PT, sim.templates_PT)  # exact: f32 values
    np.testing.assert_array_equal(prob.losvd, sim.losvd)
    assert prob.noise is not None and prob.mask.dtype == bool
    R_dense = h5py.File(m.path, "r")["R_T"][()]
    np.testing.assert_allclose(R_dense, prob.rebin.T.toarray(), rtol=1e-7)


def test_masked_nonfinite_pixels_are_zeroed_used_ones_rejected(tmp_path, sim):
    m = _mgr(tmp_path, sim)
    dc = sim.datacube.copy()
    off = int(np.flatnonzero(~sim.mask)[0])
    on = int(np.flatnonzero(sim.mask)[0])
    dc[2, off] = np.nan
    _populate(m, sim, datacube=dc)
    with open_h5(m.path, "r") as f:
        assert f["DataCube"][2, off] == 0.0 and f.attrs["masked_nonfinite_replaced"] == 1
    dc[3, on] = np.inf
    with pytest.raises(
        ValueError, match=rf"datacube must be finite on fitted pixels.*spaxel 3, pixel {on}"
    ):
        _populate(m, sim, datacube=dc)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"losvd": "neg"}, r"losvd must be >= 0 .* at \(s, v, c\) = \(1, 3, 0\)"),
        (
            {"losvd": "V"},
            r"losvd must be \(S, V, C\) with V = len\(VelPix\) = 41; got shape \(6, 40, 2\)",
        ),
        ({"datacube": "shape"}, r"datacube must have shape \(S, L\) = \(6, 300\) or \(L, S\)"),
        ({"templates": "T"}, r"templates must have T = len\(tem_pix\) = 1500 pixels along axis 0"),
        ({"mask": "int"}, r"mask must be boolean or 0/1 .* values other than 0 and 1"),
        ({"mask": "len"}, r"mask must have shape \(L,\) = \(300,\); got \(299,\)"),
        ({"mask": "none"}, r"mask must leave at least one pixel fitted"),
        (
            {"binnum": "range"},
            r"binnum values must be in \[0, S-1\] = \[0, 5\]; found 6 at index 2",
        ),
        ({"binnum": "float"}, r"binnum must be a 1-D integer array"),
        ({"xpix": "alone"}, r"xpix and ypix must be given together"),
        ({"noise": "zero"}, r"noise must be > 0 on fitted pixels"),
        ({"noise": "nan"}, r"noise must be finite on fitted pixels"),
        ({"datacube_layout": "bad"}, r"datacube_layout must be 'SL', 'LS' or None"),
        ({"templates": "nan"}, r"templates contains 1 NaN/Inf"),
    ],
)
def test_populate_errors_name_array_expected_found(tmp_path, sim, change, match):
    ((key, what),) = change.items()
    kw = {}
    if key == "losvd":
        lo = sim.losvd.copy()
        kw["losvd"] = lo[:, :-1] if what == "V" else lo
        if what == "neg":
            lo[1, 3, 0] = -1e-3
    elif key == "datacube":
        kw["datacube"] = sim.datacube[:, :-1]
    elif key == "templates":
        t = sim.templates.copy()
        if what == "nan":
            t[5, 0, 0] = np.nan
            kw["templates"] = t
        else:
            kw["templates"] = t[:-1]
    elif key == "mask":
        kw["mask"] = {
            "int": 2 * sim.mask.astype(int),
            "len": sim.mask[:-1],
            "none": np.zeros(300, bool),
        }[what]
    elif key == "binnum":
        kw["binnum"] = np.array([0, 1, 6]) if what == "range" else np.array([0.0, 1.0])
    elif key == "xpix":
        kw["xpix"] = np.arange(3.0)
    elif key == "noise":
        nz = sim.noise_sigma.copy()
        on = int(np.flatnonzero(sim.mask)[1])
        nz[0, on] = 0.0 if what == "zero" else np.nan
        kw["noise"] = nz
    elif key == "datacube_layout":
        kw["datacube_layout"] = "XY"
    with pytest.raises(ValueError, match=match):
        _populate(_mgr(tmp_path, sim), sim, **kw)


def test_square_datacube_needs_layout(tmp_path):
    sim = simulate_cube(40, 1, 2, n_obs_pix=40, n_tem_pix=600, seed=1)
    m = _mgr(tmp_path, sim)
    with pytest.raises(ValueError, match=r"S == L == 40: cannot tell .* datacube_layout='SL'"):
        _populate(m, sim)
    _populate(m, sim, datacube=sim.datacube.T.copy(), datacube_layout="LS")
    np.testing.assert_array_equal(load_problem(m.path).datacube, sim.datacube)
    with pytest.raises(ValueError, match=r"datacube_layout='SL' must have shape \(40, 40\)"):
        _populate(m, sim, datacube=sim.datacube[:, :5], datacube_layout="SL")


def test_grid_errors(tmp_path, sim):
    tem = sim.tem_pix.copy()
    tem[100] += 0.3 * (tem[1] - tem[0])
    with pytest.raises(ValueError, match=r"tem_pix must be uniform in ln\(lambda\).*at pixel 99"):
        H5Manager(tmp_path / "a.h5", tem, sim.obs_pix)
    obs = sim.obs_pix.copy()
    obs[10] = obs[9]
    with pytest.raises(
        ValueError, match=r"obs_pix must be strictly increasing.*obs_pix\[10\] > obs_pix\[9\]"
    ):
        H5Manager(tmp_path / "a.h5", sim.tem_pix, obs)
    m = H5Manager(tmp_path / "b.h5", sim.tem_pix, sim.obs_pix)
    with pytest.raises(ValueError, match="call set_velocity_grid"):
        _populate(m, sim)
    with pytest.raises(ValueError, match="vbins must be strictly increasing"):
        m.set_velocity_grid(sim.vel_pix[::-1])


def test_coverage_error_and_diagnose(tmp_path, sim):
    # Observed range reaching the template edge: no room for the LOSVD shifts.
    obs = np.linspace(sim.tem_pix[3], sim.tem_pix[-200], 300)
    m = H5Manager(tmp_path / "c.h5", sim.tem_pix, obs)
    m.set_velocity_grid(sim.vel_pix)
    with pytest.raises(
        ValueError,
        match=r"template grid does not cover .* expected margins >= 2 .* found left -?\d+ px",
    ):
        _populate(m, sim)
    good = _mgr(tmp_path, sim, "d.h5")
    _populate(good, sim, safety_pad_px=2)
    good.ensure_rebin_and_resample()
    rep = H5Manager.diagnose_rebin_edges(good.path, verbose=False)
    assert rep["safe"] and rep["left_margin_px"] >= 2 and rep["right_margin_px"] >= 2
    assert rep["rebin_row_sum_min"] == pytest.approx(1.0, abs=1e-12)
    big = _mgr(tmp_path, sim, "e.h5")
    with pytest.raises(ValueError, match="safety pad of 50 px"):
        _populate(big, sim, safety_pad_px=50)


def test_second_writer_is_refused_and_readers_coexist(tmp_path):
    p = tmp_path / "w.h5"
    with open_h5(p, "w") as f:
        f.create_dataset("x", data=np.arange(4.0))
    with open_h5(p, "r+") as f:
        with pytest.raises(FileExistsError, match="another process is writing"):
            open_h5(p, "r+")
    with open_h5(p, "r") as a, open_h5(p, "r") as b:
        assert a["x"][1] == b["x"][1] == 1.0
    with pytest.raises(FileNotFoundError):
        open_h5(tmp_path / "missing.h5", "r")
    with pytest.raises(ValueError, match="mode must be one of"):
        open_h5(p, "rw")


def test_repair_after_killed_swmr_writer(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    p = tmp_path / "k.h5"
    with open_h5(p, "w") as f:
        f.create_dataset("d", shape=(50, 200), chunks=(1, 200), dtype="f4")
    code = (
        "import sys, time, h5py\n"
        "f = h5py.File(sys.argv[1], 'r+', libver=('v110', 'v110')); f.swmr_mode = True\n"
        "for i in range(10**6):\n"
        "    f['d'][i % 50] = i; f.flush()\n"
        "    if i == 3: print('go', flush=True)\n"
        "    time.sleep(0.002)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sb = read_superblock(p)
    assert sb["flags"] != 0 and sb["checksum_ok"]
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(p, "r+")  # plain HDF5 refuses the file (h5py locking=False does not help)
    with open_h5(p, "r") as f:  # SWMR readers can still read it
        assert f["d"].shape == (50, 200)
    with open_h5(p, "r+") as f:  # the writer repairs it first
        f["d"][0] = 1.0
    sb2 = read_superblock(p)
    assert sb2["flags"] == 0 and sb2["checksum_ok"] and sb2["eoa"] >= sb["eof"] + (1 << 20)
    assert clear_swmr_status(p) is False
    with h5py.File(p, "r") as f:
        assert f["d"][0, 0] == 1.0


def test_repopulating_drops_the_old_hypercube_and_its_space(built_store, small_sim):
    size_built = built_store.stat().st_size
    m = H5Manager(built_store, small_sim.tem_pix, small_sim.obs_pix)
    m.set_velocity_grid(small_sim.vel_pix)
    _populate(m, small_sim)
    m.ensure_rebin_and_resample()  # already written by populate: a no-op
    with open_h5(built_store, "r") as f:
        assert "HyperCube" not in f and "RebinCSR" in f and f["R_T"].shape == (1500, 300)
    assert built_store.stat().st_size < size_built - 12 * 3 * 8 * 300 * 4 // 2


def test_a_0_1_mask_is_taken_as_boolean(tmp_path, sim):
    """CubeFit's scripts pass 0/1 masks; they mean the same as the boolean mask."""
    a, b = _mgr(tmp_path, sim, "a.h5"), _mgr(tmp_path, sim, "b.h5")
    _populate(a, sim, mask=sim.mask)
    _populate(b, sim, mask=sim.mask.astype(np.int8))
    with open_h5(a.path, "r") as fa, open_h5(b.path, "r") as fb:
        assert fb["Mask"].dtype == bool
        np.testing.assert_array_equal(fa["Mask"][()], fb["Mask"][()])


def test_caches_not_stored_have_the_documented_replacements(tmp_path, sim):
    """docs/spectral/store.rst: /TemplatesFFT(_R) and /RebinMatrix are not written; the
    recipes it gives produce the layout's arrays."""
    from nnfit.spectral.store import read_rebin

    m = _mgr(tmp_path, sim)
    _populate(m, sim)
    m.ensure_rebin_and_resample()
    with h5py.File(m.path, "r") as f:
        assert not {"TemplatesFFT", "TemplatesFFT_R", "RebinMatrix"} & set(f)
        P, T = f["Templates"].shape
        L = f["ObsPix"].shape[0]
        fft = np.fft.rfft(f["Templates"][()], axis=1).astype(np.complex64)
        rebin_lt = f["R_T"][()].T
        csr = read_rebin(f, T, L)
    assert fft.shape == (P, T // 2 + 1) and fft.dtype == np.complex64
    assert rebin_lt.shape == (L, T) and rebin_lt.dtype == np.float32
    np.testing.assert_allclose(rebin_lt, csr.toarray(), rtol=1e-7)


def test_a_spaxels_problem_models_that_spaxel_as_the_whole_cube_does(small_store):
    from nnfit.spectral.cube_operator import CubeOperator

    prob = load_problem(small_store)
    prob.model_options = {**prob.model_options, "flux_scale": np.linspace(0.5, 2.0, prob.S)}
    x = np.random.default_rng(0).random((prob.C, prob.P))
    full = CubeOperator.from_problem(prob).forward(x)
    for s in (0, 5, prob.S - 1):
        one = prob.spaxel(s)
        assert (one.S, one.path, one.warm_start) == (1, None, None)
        got = CubeOperator.from_problem(one).forward(x)[0]
        np.testing.assert_allclose(got, full[s], rtol=1e-12, atol=1e-12 * np.abs(full).max())
    # the flux scale takes part (so the check above covers that it is the spaxel's own)
    opts = {k: v for k, v in prob.spaxel(0).model_options.items() if k != "flux_scale"}
    unscaled = CubeOperator.from_problem(dataclasses.replace(prob.spaxel(0), model_options=opts))
    assert not np.allclose(unscaled.forward(x)[0], full[0])
