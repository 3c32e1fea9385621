"""Files for the CaTune browser: format, atomicity, sidecar checks."""

from __future__ import annotations

import ast
import json
import struct

import catune
import numpy as np
import pytest

from nnfit.calcium import load_tuning_data, save_for_tuning
from nnfit.calcium.browser_files import BROWSER_DTYPES


def parse_npy_like_browser(data: bytes) -> tuple[str, tuple[int, ...], np.ndarray]:
    """Parse .npy bytes the way CaTune's npy-parser.ts does: magic, version, header, dtype."""
    assert data[:6] == b"\x93NUMPY", "bad magic"
    major, minor = data[6], data[7]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    else:
        raise AssertionError(f"unsupported npy version {major}.{minor}")
    header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
    assert (start + hlen) % 64 == 0  # numpy pads the header to a 64-byte boundary
    descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    assert descr in BROWSER_DTYPES, f"dtype {descr} rejected by the browser"
    assert fortran is False
    assert len(shape) == 2
    body = np.frombuffer(data[start + hlen :], dtype=np.dtype(descr))
    assert body.size == shape[0] * shape[1]
    return descr, (major, minor), body.reshape(shape)


def test_npy_bytes_parse_as_the_browser_does(tmp_path, rng):
    x = rng.standard_normal((4, 37)).astype(np.float32)
    npy, _meta = save_for_tuning(np.asfortranarray(x), 20.0, tmp_path / "rec")
    descr, version, body = parse_npy_like_browser(npy.read_bytes())
    assert descr == "<f8" and version == (1, 0)
    assert np.array_equal(body, x.astype(np.float64))


def test_save_load_roundtrip(tmp_path, rng):
    x = rng.standard_normal((5, 1000))
    save_for_tuning(x, 30.0, tmp_path / "rec")
    y, meta = load_tuning_data(tmp_path / "rec")
    assert np.array_equal(x, y) and y.dtype == np.float64 and y.flags.c_contiguous
    assert meta == {
        "dtype": "<f8",
        "num_cells": 5,
        "num_timepoints": 1000,
        "sampling_rate_hz": 30.0,
        "schema_version": "1.0.0",
    }


def test_custom_metadata_and_1d_input(tmp_path):
    extra = {"indicator": "GCaMP7f", "n_rois": np.int64(9), "ids": np.arange(3)}
    save_for_tuning(np.arange(7), 15, tmp_path / "one", metadata=extra)
    y, meta = load_tuning_data(tmp_path / "one.npy")
    assert y.shape == (1, 7) and meta["indicator"] == "GCaMP7f"
    assert meta["n_rois"] == 9 and meta["ids"] == [0, 1, 2]
    assert meta["sampling_rate_hz"] == 15.0


def test_files_readable_by_catune_and_catune_files_readable_here(tmp_path, rng):
    x = rng.standard_normal((3, 50))
    save_for_tuning(x, 30.0, tmp_path / "ours")
    y, meta = catune.load_tuning_data(tmp_path / "ours")
    assert np.array_equal(x, y) and meta["num_cells"] == 3
    catune.save_for_tuning(x, 30.0, tmp_path / "theirs", metadata={"a": 1})
    y, meta = load_tuning_data(tmp_path / "theirs")
    assert np.array_equal(x, y) and meta["a"] == 1


@pytest.mark.parametrize(
    ("traces", "fs", "metadata", "message"),
    [
        (np.array([[1.0, np.nan]]), 30.0, None, "traces contains 1 NaN/Inf"),
        (np.zeros((2, 2, 2)), 30.0, None, "traces must be 1-D or 2-D"),
        (np.zeros((0, 5)), 30.0, None, "traces is empty"),
        (np.array([True, False]), 30.0, None, "traces must be a real numeric array"),
        (np.ones(5), 0.0, None, "fs must be > 0"),
        (np.ones(5), 30.0, {"num_cells": 9}, "metadata may not set num_cells"),
        (np.ones(5), 30.0, {"x": float("nan")}, "JSON-serialisable"),
        (np.ones(5), 30.0, {"x": object()}, "JSON-serialisable"),
        (np.ones(5), 30.0, [1], "metadata must be a dict"),
    ],
)
def test_rejected_input_writes_nothing(tmp_path, traces, fs, metadata, message):
    with pytest.raises(ValueError, match=message):
        save_for_tuning(traces, fs, tmp_path / "rec", metadata)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_files_intact(tmp_path, monkeypatch):
    save_for_tuning(np.ones((2, 3)), 30.0, tmp_path / "rec")
    before = (tmp_path / "rec.npy").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        save_for_tuning(np.zeros((4, 4)), 30.0, tmp_path / "rec")
    assert (tmp_path / "rec.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.npy", "rec_metadata.json"]


def test_missing_files_name_their_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"rec\.npy"):
        load_tuning_data(tmp_path / "rec")
    np.save(tmp_path / "rec.npy", np.ones((2, 3)))
    with pytest.raises(FileNotFoundError, match=r"rec_metadata\.json"):
        load_tuning_data(tmp_path / "rec")
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        save_for_tuning(np.ones(3), 30.0, tmp_path / "nope" / "rec")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num_cells": 3}, r"rec_metadata.json says num_cells x num_timepoints = 3 x 4"),
        ({"num_timepoints": 5}, "holds 2 x 4"),
        ({"dtype": "<f4"}, "says dtype '<f4' but .*rec.npy holds '<f8'"),
        ({"schema_version": "2.0.0"}, "schema_version '2.0.0' is not supported"),
        ({"sampling_rate_hz": -1}, "sampling_rate_hz must be > 0"),
        ({"sampling_rate_hz": None}, "sampling_rate_hz must be a real number"),
    ],
)
def test_sidecar_mismatch_names_the_wrong_file(tmp_path, edit, message):
    save_for_tuning(np.ones((2, 4)), 30.0, tmp_path / "rec")
    meta_path = tmp_path / "rec_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(edit)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        load_tuning_data(tmp_path / "rec")


def test_corrupt_files_are_named(tmp_path):
    save_for_tuning(np.ones((2, 4)), 30.0, tmp_path / "rec")
    (tmp_path / "rec_metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"rec_metadata\.json: not valid JSON"):
        load_tuning_data(tmp_path / "rec")
    save_for_tuning(np.ones((2, 4)), 30.0, tmp_path / "rec")
    (tmp_path / "rec.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"rec\.npy"):
        load_tuning_data(tmp_path / "rec")
    np.save(tmp_path / "rec.npy", np.ones(8))
    with pytest.raises(ValueError, match=r"rec\.npy: expected a 2-D"):
        load_tuning_data(tmp_path / "rec")


def test_metadata_returned_by_load_tuning_data_can_be_saved_again(tmp_path):
    # catune accepts its own loaded metadata back; reserved fields must only agree.
    save_for_tuning(np.ones((2, 5)), 30.0, tmp_path / "a", metadata={"indicator": "GCaMP6f"})
    traces, meta = load_tuning_data(tmp_path / "a")
    save_for_tuning(traces, 30.0, tmp_path / "b", metadata=meta)
    assert load_tuning_data(tmp_path / "b")[1] == meta
    with pytest.raises(ValueError, match=r"may not set sampling_rate_hz=30\.0"):
        save_for_tuning(traces, 20.0, tmp_path / "c", metadata=meta)


@pytest.mark.parametrize("name", ["out/", "out"])
def test_a_folder_is_not_a_stem(tmp_path, name):
    # "out/" wrote the hidden files out/.npy and out/_metadata.json
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"must name a file stem, not a folder; .*session1"):
        save_for_tuning(np.ones((2, 20)), 30.0, str(tmp_path / name))
    assert not any((tmp_path / "out").iterdir())
