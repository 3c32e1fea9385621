"""Byte-deterministic NPZ writing and safe reading."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from nnfit.io.npz import StreamedArray, zip_layout_problems
from nnfit.ptycho import encode_npz, open_npz, read_npz, write_npz


def test_same_content_same_bytes_whatever_order_memory_layout_or_byte_order(rng):
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = (rng.standard_normal(6) + 1j).astype(np.complex64)
    ref = encode_npz({"a": a, "b": b})
    assert encode_npz({"b": b, "a": a}) == ref
    assert encode_npz({"a": np.asfortranarray(a), "b": b}) == ref
    assert encode_npz({"a": a.astype(">f4"), "b": b.astype(">c8")}) == ref
    assert encode_npz({"a": a[:, ::-1][:, ::-1], "b": b}) == ref
    assert encode_npz({"a": a + 1, "b": b}) != ref


def test_roundtrip_numpy_compatible_and_fixed_zip_fields(tmp_path, rng):
    arrays = {
        "z": rng.standard_normal((3, 4)),
        "i": np.arange(5, dtype=">i8"),
        "c": np.ones(2, np.complex64),
    }
    path = write_npz(tmp_path / "x.npz", arrays)
    with np.load(path) as npz:
        assert npz.files == ["c", "i", "z"]
        np.testing.assert_array_equal(npz["i"], arrays["i"])
    back = read_npz(path)
    assert back["i"].dtype.str == "<i8"
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
    assert zip_layout_problems(path) == []
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_layout_problems_of_an_ordinary_savez(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, b=np.zeros(2), a=np.asfortranarray(np.zeros((2, 2))), c=np.zeros(2, ">f8"))
    problems = "\n".join(zip_layout_problems(path))
    assert "sorted" in problems and "Fortran" in problems and "big-endian" in problems


def test_refuses_object_arrays_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="deterministically"):
        encode_npz({"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="key"):
        encode_npz({"a/b": np.zeros(1)})
    with pytest.raises(ValueError):
        write_npz(tmp_path / "bad.npz", {"x": np.array([None], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_read_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such NPZ"):
        read_npz(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an NPZ"):
        read_npz(tmp_path / "text.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        read_npz(tmp_path / "obj.npz")


def test_open_npz_maps_stored_members_and_loads_compressed_ones(tmp_path, rng):
    arrays = {
        "big": rng.standard_normal((6, 5, 4)),
        "fort": np.asfortranarray(rng.standard_normal((3, 4))),
        "empty": np.zeros((0, 3)),
        "ints": np.arange(7, dtype=">i4"),
    }
    np.savez(tmp_path / "stored.npz", **arrays)  # numpy's own writer, stored members
    np.savez_compressed(tmp_path / "deflated.npz", **arrays)
    for name in ("stored.npz", "deflated.npz"):
        lazy, full = open_npz(tmp_path / name), read_npz(tmp_path / name)
        assert sorted(lazy) == sorted(full) == sorted(arrays)
        for k, a in arrays.items():
            np.testing.assert_array_equal(lazy[k], a)
            assert lazy[k].dtype == full[k].dtype and lazy[k].shape == a.shape
    lazy = open_npz(tmp_path / "stored.npz")
    assert not lazy["big"].flags.writeable and not lazy["big"].flags.owndata  # a view of the file
    assert lazy["fort"].flags.f_contiguous
    # A mixed archive: one member stored, one deflated.
    with zipfile.ZipFile(tmp_path / "mixed.npz", "w") as zf:
        zf.writestr("a.npy", _npy(arrays["big"]), compress_type=zipfile.ZIP_STORED)
        zf.writestr("b.npy", _npy(arrays["ints"]), compress_type=zipfile.ZIP_DEFLATED)
    mixed = open_npz(tmp_path / "mixed.npz")
    np.testing.assert_array_equal(mixed["a"], arrays["big"])
    np.testing.assert_array_equal(mixed["b"], arrays["ints"])
    assert not mixed["a"].flags.owndata and mixed["b"].flags.writeable
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        open_npz(tmp_path / "obj.npz")


def _npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("damaged", [b"(48,)4)}", b"(48,)48 ", b"{(48,), "])
@pytest.mark.parametrize("reader", [read_npz, open_npz])
def test_a_damaged_member_header_is_a_clear_error(tmp_path, reader, damaged):
    # found by bench/fuzz_cli.py: numpy's header parser raised tokenize.TokenError
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(48, np.complex64))
    data = p.read_bytes()
    assert data.count(b"(48,), }") == 1
    p.write_bytes(data.replace(b"(48,), }", damaged))
    with pytest.raises(ValueError, match=r"x\.npz is not a readable NPZ file"):
        reader(p)


@pytest.mark.parametrize("compress", [True, False])
def test_a_streamed_member_has_the_bytes_of_the_whole_array(rng, compress):
    a = rng.standard_normal((37, 5, 6)).astype(">f4")
    blocks = StreamedArray(a.shape, a.dtype, lambda: (a[i : i + 8] for i in range(0, 37, 8)))
    whole = encode_npz({"d": a, "x": np.arange(3)}, compress=compress)
    assert encode_npz({"d": blocks, "x": np.arange(3)}, compress=compress) == whole


def test_streamed_blocks_that_do_not_make_the_array_are_refused(tmp_path):
    a = np.zeros((10, 3))
    short = StreamedArray(a.shape, a.dtype, lambda: iter([a[:6]]))
    with pytest.raises(ValueError, match="4 rows short"):
        write_npz(tmp_path / "s.npz", {"d": short})
    wide = StreamedArray(a.shape, a.dtype, lambda: iter([np.zeros((10, 4))]))
    with pytest.raises(ValueError, match="does not continue"):
        write_npz(tmp_path / "s.npz", {"d": wide})
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_a_damaged_compression_method_is_a_clear_error(tmp_path):
    p = write_npz(tmp_path / "c.npz", {"x": np.arange(100.0)})
    data = bytearray(p.read_bytes())
    data[8] = 99  # the local header's compression method (offset 8): no such method
    for off in [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]:
        data[off + 10] = 99  # and the central directory's
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"not a readable NPZ file .*compression method"):
        read_npz(p)
