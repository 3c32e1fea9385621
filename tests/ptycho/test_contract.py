"""The DATA-001 contract object."""

from __future__ import annotations

import numpy as np
import pytest

from nnfit.ptycho import CONTRACT, Violation, resolve_layout


def _fixture_arrays(n=16, h=8, w=8):
    return {
        "diffraction": np.full((n, h, w), 0.5, np.float32),
        "objectGuess": np.ones((32, 30), np.complex64),
        "probeGuess": np.ones((h, w), np.complex64),
        "xcoords": np.linspace(5, 25, n),
        "ycoords": np.linspace(5, 25, n),
        "xcoords_start": np.linspace(5, 25, n),
        "ycoords_start": np.linspace(5, 25, n),
        "scan_index": np.arange(n, dtype=np.int64),
        "Y": np.ones((n, h, w), np.complex64),
    }


def _keys(violations):
    return [v.key for v in violations]


def test_declared_and_versioned():
    assert CONTRACT.id == "DATA-001 v1"
    assert CONTRACT.key_names[:5] == (
        "diffraction",
        "objectGuess",
        "probeGuess",
        "xcoords",
        "ycoords",
    )
    assert [s.key for s in CONTRACT.keys if s.required] == list(CONTRACT.key_names[:5])
    assert CONTRACT.spec("diffraction").dtype == "<f4"
    text = CONTRACT.describe()
    assert "DATA-001 v1" in text and "diff3d" in text


def test_valid_fixture_and_source_forms():
    good = _fixture_arrays()
    assert CONTRACT.validate(good) == []
    src = {k: v for k, v in good.items() if k != "diffraction"}
    src["diff3d"] = good["diffraction"].transpose(1, 2, 0).astype(np.float64)  # legacy, float64
    src["objectGuess"] = good["objectGuess"].astype(">c16")
    src["Y"] = good["Y"].transpose(1, 2, 0)
    src["extra_key"] = np.zeros(3)
    assert CONTRACT.validate(src, role="source") == []
    # The fixture role refuses every one of those liberties, naming key, expected and found.
    found = CONTRACT.validate(src)
    assert {"diffraction", "diff3d", "objectGuess", "extra_key"} <= set(_keys(found))
    assert all(isinstance(v, Violation) and v.expected and v.found for v in found)


@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        (lambda a: a.pop("probeGuess"), "probeGuess", "missing"),
        (lambda a: a.update(diffraction=a["diffraction"][0]), "diffraction", "2-D"),
        (lambda a: a.update(diffraction=a["diffraction"].astype(np.float64)), "diffraction", "<f8"),
        (
            lambda a: a.update(xcoords=a["xcoords"][:-1], ycoords=a["ycoords"][:-1]),
            "diffraction",
            "shape (16, 8, 8)",
        ),
        (lambda a: a.update(ycoords=a["ycoords"][:-1]), "ycoords", "length 15"),
        (lambda a: a["diffraction"].__setitem__((3, 2, 1), np.nan), "diffraction", "NaN"),
        (lambda a: a["diffraction"].__setitem__((3, 2, 1), -0.1), "diffraction", "min -0.1"),
        (lambda a: a["diffraction"].__setitem__((3, 2, 1), 250.0), "diffraction", "max 250"),
        (lambda a: a.update(objectGuess=np.ones((2, 32, 30), np.complex64)), "objectGuess", "3-D"),
        (lambda a: a.update(objectGuess=np.ones((32, 30), np.float32)), "objectGuess", "<f4"),
        (lambda a: a.update(objectGuess=np.ones((6, 30), np.complex64)), "objectGuess", "(6, 30)"),
        (lambda a: a.update(probeGuess=np.ones((8, 9), np.complex64)), "probeGuess", "(8, 9)"),
        (lambda a: a["xcoords"].__setitem__(4, 40.0), "xcoords/ycoords", "x=40"),
        (lambda a: a.update(scan_index=np.arange(16.0)), "scan_index", "<f8"),
        (lambda a: a.update(Y=np.ones((16, 8, 8), np.complex128)), "Y", "<c16"),
        (lambda a: a.update(xcoords=np.linspace(5, 25, 16).astype(np.float32)), "xcoords", "<f4"),
        (lambda a: a.update(note=np.array(["x"], dtype=object)), "note", "object"),
    ],
)
def test_each_violation_names_key_expected_and_found(change, key, text):
    arrays = _fixture_arrays()
    change(arrays)
    found = CONTRACT.validate(arrays)
    mine = [v for v in found if v.key == key]
    assert mine, found
    assert any(text in v.found for v in mine), [str(v) for v in mine]
    if key == "diffraction" and "shape" in text:
        assert "N=15" in mine[0].expected
    assert str(mine[0]).startswith(f"{key}: expected ")


def test_source_role_accepts_diff3d_but_not_both_keys():
    a = _fixture_arrays()
    a["diff3d"] = a.pop("diffraction")
    assert CONTRACT.validate(a, role="source") == []
    a["diffraction"] = a["diff3d"]
    assert "both keys present" in CONTRACT.validate(a, role="source")[0].found


def test_layout_is_decided_by_the_scan_axis_never_by_size():
    assert resolve_layout((64, 64, 1087), 1087) == "legacy"
    assert resolve_layout((1087, 64, 64), 1087) == "canonical"
    assert resolve_layout((64, 32, 16), 16) == "legacy"  # smallest axis is not a rule
    assert resolve_layout((16, 32, 64), 16) == "canonical"
    for shape in ((32, 32, 32), (32, 16, 32)):
        with pytest.raises(ValueError, match="ambiguous"):
            resolve_layout(shape, 32)
        assert resolve_layout(shape, 32, "legacy") == "legacy"
        assert resolve_layout(shape, 32, "canonical") == "canonical"
    with pytest.raises(ValueError, match="no axis of length N=100"):
        resolve_layout((64, 64, 99), 100)
    with pytest.raises(ValueError, match="layout='canonical'"):
        resolve_layout((64, 64, 1087), 1087, "canonical")
    a = _fixture_arrays(n=8, h=8, w=8)
    assert "ambiguous" in CONTRACT.validate(a, role="source")[0].found
    assert CONTRACT.validate(a, role="source", layout="canonical") == []
    assert CONTRACT.validate(a) == []  # a fixture is canonical by definition
