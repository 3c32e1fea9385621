"""MATLAB .mat inputs (calcium/matlab.py): v5 written by scipy, v7.3 laid out as MATLAB does."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.io.matlab import matfile_version

from nnfit.calcium import simulate_recording
from nnfit.calcium.matlab import read_matlab
from nnfit.calcium.recordings import read_input
from nnfit.cli import main

KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5", "--plot-cells", "0"]
#: MATLAB-written files shipped with scipy's tests (absent where scipy is installed without them)
SCIPY_DATA = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"


@pytest.fixture
def traces():
    return simulate_recording(4, 600, fs=30.0, seed=5).traces


def _class(arr: np.ndarray) -> str:
    return {"float64": "double", "float32": "single"}.get(arr.dtype.name, arr.dtype.name)


def _write_v73(group, variables):
    for name, value in variables.items():
        if isinstance(value, dict):
            sub = group.create_group(name)
            sub.attrs["MATLAB_class"] = np.bytes_("struct")
            _write_v73(sub, value)
        else:
            arr = np.atleast_2d(np.asarray(value))
            # MATLAB is column-major: HDF5 holds its size(X) = [m, n] as an (n, m) dataset
            ds = group.create_dataset(name, data=arr.T)
            ds.attrs["MATLAB_class"] = np.bytes_(_class(arr))


def save_v73(path, variables):
    """A MATLAB 7.3 file: HDF5 behind a 512-byte header (text, subsystem offset, 0x0200, IM)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        _write_v73(f, variables)
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec  7 12:00:00 2026 HDF5 "
    header = (text + b"schema 1.00 .").ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\0"))
    return path


def test_v5_matrix_rows_are_cells_fs_from_the_file(tmp_path, traces, caplog):
    p = tmp_path / "rec.mat"
    scipy.io.savemat(p, {"dff": traces, "fs": 30.0, "label": "mouse 3"})
    with caplog.at_level(logging.INFO, logger="nnfit.calcium.matlab"):
        rec = read_input(p)
    assert "reading dff, its only numeric matrix" in caplog.text
    assert rec.kind == "matlab" and rec.fs == 30.0
    np.testing.assert_array_equal(rec.traces, traces)
    assert rec.provenance["series"] == "dff" and rec.provenance["fs_from"] == "fs"
    assert rec.provenance["matlab_size"] == [4, 600] and rec.provenance["input_sha256"]
    with pytest.raises(ValueError, match=r"--fs = 20 Hz contradicts the sampling rate 30 Hz"):
        read_input(p, fs=20, fs_label="--fs")


def test_v73_is_read_as_matlab_shows_it(tmp_path, traces):
    p = save_v73(tmp_path / "rec.mat", {"results": {"F": traces, "Fs": 30.0}, "t": np.arange(9.0)})
    assert matfile_version(p) == (2, 0)
    with h5py.File(p, "r") as f:
        assert f["results/F"].shape == (600, 4)  # how h5py sees MATLAB's 4 x 600
    rec = read_input(p, series="results.F")
    np.testing.assert_array_equal(rec.traces, traces)
    assert rec.fs == 30.0 and rec.provenance["fs_from"] == "results.Fs"
    assert rec.provenance["mat_version"] == "MATLAB 7.3 (HDF5)"
    # the same matrix in v5 reads the same
    scipy.io.savemat(tmp_path / "v5.mat", {"results": {"F": traces, "Fs": 30.0}})
    np.testing.assert_array_equal(
        read_input(tmp_path / "v5.mat", series="results.F").traces, traces
    )


@pytest.mark.skipif(not SCIPY_DATA.is_dir(), reason="scipy's MATLAB test files not installed")
def test_files_matlab_wrote_v7_and_v73_agree():
    # testdouble = 0:pi/4:2*pi (1 x 9), saved by MATLAB 7.4 as v7 and as v7.3 (HDF5)
    v73 = read_matlab(SCIPY_DATA / "testhdf5_7.4_GLNX86.mat", fs=1)
    v7 = read_matlab(SCIPY_DATA / "testdouble_7.1_GLNX86.mat", fs=1)
    np.testing.assert_allclose(v73.traces, [np.arange(9) * np.pi / 4])
    np.testing.assert_array_equal(v73.traces, v7.traces)
    with pytest.raises(ValueError, match="testfunc is a function handle; nothing in a file"):
        read_matlab(SCIPY_DATA / "testfunc_7.4_GLNX86.mat", "testfunc", fs=1)
    with pytest.raises(ValueError, match="testobject is a MATLAB object"):
        read_matlab(SCIPY_DATA / "testobject_6.5.1_GLNX86.mat", "testobject", fs=1)


def test_frames_by_cells_warns_and_a_vector_is_one_trace(tmp_path, traces, caplog):
    scipy.io.savemat(tmp_path / "t.mat", {"X": traces.T, "v": traces[0][:, None]})
    with caplog.at_level(logging.WARNING):
        rec = read_input(tmp_path / "t.mat", series="X", fs=30)
    assert rec.shape == (600, 4)
    assert "(cells, frames) = (600, 4)" in caplog.text and "X = X.'" in caplog.text
    np.testing.assert_array_equal(
        read_input(tmp_path / "t.mat", series="v", fs=30).traces, traces[:1]
    )


@pytest.mark.parametrize(
    ("variables", "series", "message"),
    [
        ({"a": np.ones((2, 5)), "b": np.ones((3, 5))}, None, "holds 2 numeric matrices; name"),
        ({"a": np.ones((2, 5))}, "c", "no variable c; --series is one of: a (2x5 double)"),
        (
            {"s": {"F": np.ones((2, 5))}},
            "s",
            "s is a struct; name a numeric field with --series: s.F",
        ),
        ({"c": np.array([np.ones(3), np.ones(4)], dtype=object)}, "c", "c is a cell array"),
        ({"z": np.ones((2, 5)) * 1j}, "z", "z holds complex numbers"),
        ({"a": np.ones((2, 5)), "fs": 30.0, "Fs": 15.0}, "a", "Fs = 15 and fs = 30 disagree"),
        (
            {"a": np.array([[1.0, np.nan, 2.0]])},
            "a",
            "contains 1 NaN/Inf value(s), first at index (0, 1)",
        ),
        ({"a": np.ones((2, 5))}, "a", "does not record a sampling rate: pass --fs"),
    ],
)
def test_refusals_name_the_file_and_variable(tmp_path, variables, series, message):
    p = tmp_path / "bad.mat"
    scipy.io.savemat(p, variables)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        read_input(p, series=series, fs_label="--fs")
    assert str(p) in str(info.value)


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_text("hello")
    with pytest.raises(ValueError, match=r"x\.mat: not a MATLAB \.mat file"):
        read_input(tmp_path / "x.mat")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_cli_mat_equals_npy(tmp_path, traces, monkeypatch, version):
    monkeypatch.chdir(tmp_path)
    if version == "v5":
        scipy.io.savemat("rec.mat", {"X": traces})
    else:
        save_v73(tmp_path / "rec.mat", {"X": traces})
    np.save("rec.npy", traces)
    assert (
        main(
            ["calcium", "deconvolve", "rec.mat", "--series", "X", "--fs", "30", *KIN, "--out", "m"]
        )
        == 0
    )
    assert main(["calcium", "deconvolve", "rec.npy", "--fs", "30", *KIN, "--out", "n"]) == 0
    np.testing.assert_array_equal(np.load("m/spikes.npy"), np.load("n/spikes.npy"))
    run = json.loads(Path("m/run.json").read_text())
    assert run["input_kind"] == "matlab" and run["input_provenance"]["series"] == "X"
    assert run["input_sha256"] == run["input_provenance"]["input_sha256"]
    assert main(["calcium", "export", "rec.mat", "--fs", "30", "--out", "exp/"]) == 0
    np.testing.assert_array_equal(np.load("exp/rec.npy"), traces)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_suite2p_fall_mat_rate_from_ops_and_a_warning(tmp_path, traces, caplog, version):
    # suite2p's Fall.mat: F, Fneu, spks (ROIs x frames, single), iscell, stat, ops (fs there)
    fall = {
        "F": traces.astype(np.float32),
        "Fneu": np.ones_like(traces, np.float32),
        "spks": np.zeros_like(traces, np.float32),
        "iscell": np.c_[[1.0, 0.0, 1.0, 1.0], [0.9, 0.1, 0.8, 0.7]],
        "ops": {"fs": 30.0, "neucoeff": 0.7, "nframes": 600.0},
    }
    p = tmp_path / "Fall.mat"
    if version == "v5":
        scipy.io.savemat(p, fall)
    else:
        save_v73(p, fall)
    with caplog.at_level(logging.WARNING):
        rec = read_input(p, series="F")
    assert rec.fs == 30.0 and rec.provenance["fs_from"] == "ops.fs" and rec.shape == (4, 600)
    assert (
        "F of suite2p's Fall.mat holds every ROI" in caplog.text and "plane folder" in caplog.text
    )
    # a rate in any struct around the traces is theirs
    save_v73(p, {"data": {"traces": {"F": traces}, "fs": 20.0}})
    assert read_input(p, series="data.traces.F").provenance["fs_from"] == "data.fs"


def test_a_field_of_an_object_says_how_to_save_it(tmp_path, traces):
    # CNMF-E's neuron (a Sources2D classdef object) in a v7.3 file: references into MATLAB's
    # own subsystem, not readable data
    p = save_v73(tmp_path / "cnmfe.mat", {"dummy": np.ones((2, 5))})
    with h5py.File(p, "r+") as f:
        ds = f.create_dataset("neuron", data=np.array([[3707764736, 2, 1, 1, 1, 1]], np.uint32).T)
        ds.attrs["MATLAB_class"] = np.bytes_("Sources2D")
        ds.attrs["MATLAB_object_decode"] = np.int32(3)
    with pytest.raises(ValueError, match=re.escape("neuron is a MATLAB object (1x6 Sources2D)")):
        read_input(p, series="neuron.C", fs=30)
    with pytest.raises(ValueError, match=re.escape("(C = neuron.C; save('traces.mat', 'C'))")):
        read_input(p, series="neuron.C", fs=30)
