"""CaImAn ``CNMF.save`` results (calcium/caiman.py), built to the layout CaImAn's source writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse

from nnfit.calcium import deconvolve, simulate_recording
from nnfit.calcium.caiman import read_caiman
from nnfit.calcium.recordings import read_input
from nnfit.cli import main

FR = 15.0


def save_like_caiman(group, dic):
    """The rules of CaImAn's ``recursively_save_dict_contents_to_group`` for the types used.

    Strings become attributes; numbers, arrays and tuples datasets; ``None`` the string dataset
    ``'NoneType'``; dicts (and the ``Estimates``/``CNMFParams`` objects) groups; sparse matrices
    a group of ``data``/``indptr``/``indices``/``shape`` (CSC).
    """
    for key, item in dic.items():
        if isinstance(item, list | tuple):
            item = (
                np.bytes_(item)
                if item and all(isinstance(e, str) for e in item)
                else np.array(item)
            )
        if isinstance(item, str):
            group.attrs[key] = item
        elif isinstance(item, dict):
            save_like_caiman(group.create_group(key), item)
        elif scipy.sparse.issparse(item):
            csc = item.tocsc()
            sub = group.create_group(key)
            for name in ("data", "indptr", "indices", "shape"):
                sub[name] = np.asarray(getattr(csc, name))
        elif item is None:
            group[key] = "NoneType"
        else:
            group[key] = item


def cnmf_dict(C, YrA, *, F_dff=None, idx=None, fr=FR):
    K, T = C.shape
    rng = np.random.default_rng(1)
    return {
        "dims": (32, 32),
        "dview": None,
        "skip_refinement": False,
        "estimates": {
            "A": scipy.sparse.random(1024, K, density=0.02, random_state=1, format="csc"),
            "C": C,
            "YrA": YrA,
            "S": np.maximum(C - 0.5, 0),
            "F_dff": F_dff,
            "b": rng.random((1024, 1)),
            "f": rng.random((1, T)),
            "g": np.full((K, 1), 0.9),
            "sn": rng.random(1024),
            "bl": None,
            "idx_components": idx,
            "idx_components_bad": None if idx is None else np.setdiff1d(np.arange(K), idx),
            "SNR_comp": rng.random(K),
            "dims": (32, 32),
        },
        "params": {
            "data": {
                "fnames": ["/data/mov.tif"],
                "dims": (32, 32),
                "fr": fr,
                "decay_time": 0.4,
                "caiman_version": "1.11.3",
                "last_commit": None,
            },
            "temporal": {"p": 1, "method_deconvolution": "oasis"},
        },
    }


def write_results(path, **kw):
    with h5py.File(path, "w") as f:
        save_like_caiman(f, cnmf_dict(**kw))
    return path


@pytest.fixture
def traces():
    rec = simulate_recording(6, 1200, fs=FR, seed=3)
    c = rec.calcium
    return c, rec.traces - c


def test_raw_traces_accepted_components_and_fs_exact(tmp_path, traces):
    C, YrA = traces
    path = write_results(tmp_path / "res.hdf5", C=C, YrA=YrA, idx=np.array([4, 0, 2]))
    r = read_caiman(path)
    assert r.kind == "caiman" and r.fs == FR
    assert r.cell_index.tolist() == [0, 2, 4]
    np.testing.assert_array_equal(r.traces, (C + YrA)[[0, 2, 4]])
    assert r.provenance["accepted_from"] == "estimates/idx_components"
    assert read_input(path).traces.shape == (3, 1200)
    np.testing.assert_array_equal(read_caiman(path, traces="C").traces, C[[0, 2, 4]])


def test_equal_to_calab_loader_and_f_dff(tmp_path, traces):
    calab = pytest.importorskip("calab")
    C, YrA = traces
    path = write_results(tmp_path / "res.hdf5", C=C, YrA=YrA, F_dff=C / 3.0)
    ours = read_caiman(path, traces="C")
    theirs, meta = calab.load_caiman(str(path))
    np.testing.assert_array_equal(ours.traces, theirs)
    assert ours.fs == meta["sampling_rate_hz"]
    dff, _ = calab.load_caiman(str(path), trace_key="estimates/F_dff")
    np.testing.assert_array_equal(read_caiman(path, traces="F_dff").traces, dff)
    assert read_caiman(path).provenance["accepted_from"] == "all components"


@pytest.mark.slow
def test_cli_deconvolve_equals_in_memory(tmp_path, traces, monkeypatch, capsys):
    C, YrA = traces
    write_results(tmp_path / "res.hdf5", C=C, YrA=YrA, idx=np.arange(6))
    monkeypatch.chdir(tmp_path)
    args = [
        "calcium",
        "deconvolve",
        "res.hdf5",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.4",
        "--baseline",
        "constant",
        "--lam",
        "0.3",
        "--out",
        "o",
        "--plot-cells",
        "0",
    ]
    assert main(args) == 0
    ref = deconvolve(C + YrA, FR, 0.05, 0.4, lam=0.3, baseline="constant")
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "spikes.npy"), ref.spikes)
    assert main(["calcium", "estimate", "res.hdf5", "--series", "F_dff"]) == 2
    assert "estimates/F_dff is missing" in capsys.readouterr().err
    assert main(["calcium", "estimate", "res.hdf5", "--series", "Fluorescence/X"]) == 2
    assert "res.hdf5 is CaImAn results: its traces are one of" in capsys.readouterr().err


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


BAD = {
    "missing group": (lambda f: f.move("estimates", "est"), "no /estimates group"),
    "missing C": (lambda f: f.__delitem__("estimates/C"), "/estimates/C is missing"),
    "wrong shape": (
        lambda f: (
            f.__delitem__("estimates/YrA"),
            f.create_dataset("estimates/YrA", data=np.zeros((6, 5))),
        ),
        "/estimates/YrA has shape (6, 5), /estimates/C (6, 1200)",
    ),
    "rate 0": (lambda f: f["params/data/fr"].write_direct(np.array(0.0)), "/params/data/fr in"),
    "NaN": (
        lambda f: f["estimates/C"].write_direct(
            np.full((1, 1), np.nan), np.s_[0:1, 0:1], np.s_[2:3, 5:6]
        ),
        "/estimates/C in",
    ),
    "ROI count mismatch": (
        lambda f: (
            f.__delitem__("estimates/idx_components"),
            f.create_dataset("estimates/idx_components", data=[0, 9]),
        ),
        "/estimates/idx_components lists component 9 but /estimates/C has 6 components",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_results_one_line_exit_2(tmp_path, traces, monkeypatch, capsys, case):
    edit, message = BAD[case]
    C, YrA = traces
    path = write_results(tmp_path / "res.hdf5", C=C, YrA=YrA, idx=np.arange(6))
    _edit(path, edit)
    monkeypatch.chdir(tmp_path)
    for cmd in (["deconvolve", "--out", "x"], ["export", "--out", "x/s"], ["estimate"]):
        assert main(["calcium", cmd[0], "res.hdf5", *cmd[1:]]) == 2, cmd
        err = capsys.readouterr().err
        assert err.startswith("nnfit: error:") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()


def test_no_frame_rate_needs_fs(tmp_path, traces):
    C, YrA = traces
    path = write_results(tmp_path / "res.hdf5", C=C, YrA=YrA)
    _edit(path, lambda f: f.__delitem__("params/data/fr"))
    with pytest.raises(ValueError, match="does not record a sampling rate: pass fs"):
        read_caiman(path)
    assert read_caiman(path, fs=10.0).fs == 10.0
    with pytest.raises(ValueError, match="not a readable HDF5"):
        (tmp_path / "x.hdf5").write_text("text")
        read_caiman(tmp_path / "x.hdf5")


def test_external_link_in_a_results_file_is_refused(tmp_path, traces):
    """Results are read through nnfit's safe opener: a link out of the file is not followed."""
    path = tmp_path / "res.hdf5"
    write_results(path, C=traces[0], YrA=traces[1])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["C"] = np.ones_like(traces[0])
    with h5py.File(path, "a") as f:
        del f["estimates/C"]
        f["estimates/C"] = h5py.ExternalLink(str(other), "C")
    with pytest.raises(ValueError, match="external"):
        read_caiman(path)
