"""generate_fixture: the design's checks, alignment, determinism, strategies, bad inputs."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from nnfit.io import array_sha256
from nnfit.ptycho import (
    CONTRACT,
    alignment_residuals,
    compute_sha256,
    generate_fixture,
    read_npz,
    select_subset,
    simulate_dataset,
    validate_source,
    validate_subset_size,
    write_npz,
)

SIDECAR_FIELDS = {
    "version",
    "created",
    "generator_script",
    "generator_commit",
    "source_dataset",
    "subset_strategy",
    "subset_size",
    "transformations",
    "sha256_checksum",
    "validation_notes",
    "subset_indices",
    "arrays",
    "file_size_bytes",
    "contract",
    "contract_version",
}


def _assert_aligned(fx, factor=10.0):
    """Every pattern fits the noise-free model at its own coordinates far better than at any other."""
    r = alignment_residuals(
        fx["diffraction"], fx["probeGuess"], fx["objectGuess"], fx["xcoords"], fx["ycoords"]
    )
    n = r.shape[0]
    own = np.diag(r)
    others = np.where(np.eye(n, dtype=bool), np.inf, r).min(axis=1)
    assert np.all(own * factor < others), (own.max(), others.min())


@pytest.fixture(scope="module")
def big_fixture(big_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("bigfx") / "pytorch_integration" / "minimal_dataset_v1.npz"
    t0 = time.perf_counter()
    result = generate_fixture(big_source, out)
    return result, time.perf_counter() - t0


def test_design_checks_on_the_real_scale_fixture(big_fixture, big_data):
    (out, meta_path, checksum), seconds = big_fixture
    assert seconds < 5.0  # the issue: "well under 5 seconds" (about 0.3 s measured)
    fx = read_npz(out)
    # 6.1 shape, 6.2 dtype
    assert fx["diffraction"].shape == (64, 64, 64)
    assert fx["objectGuess"].shape == (227, 226)
    assert fx["probeGuess"].shape == (64, 64)
    assert fx["xcoords"].shape == (64,)
    assert fx["diffraction"].dtype == np.float32
    assert fx["objectGuess"].dtype == np.complex64
    assert fx["probeGuess"].dtype == np.complex64
    for k in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        assert fx[k].dtype == np.float64
    # 6.3 metadata
    assert meta_path == out.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    assert SIDECAR_FIELDS <= set(meta)
    assert meta["subset_size"] == 64
    assert meta["sha256_checksum"] == compute_sha256(out) == checksum
    assert meta["file_size_bytes"] == out.stat().st_size
    assert meta["subset_indices"] == list(range(64))
    assert meta["contract_version"] == CONTRACT.version
    assert meta["source_scans"] == 1087 and meta["source_layout"].startswith("legacy")
    assert meta["created"].endswith("Z")
    assert "nnfit" in meta["generator_script"]
    for k, a in fx.items():
        assert meta["arrays"][k] == {
            "dtype": a.dtype.str,
            "shape": list(a.shape),
            "sha256": array_sha256(a),
        }
    assert "diffraction: transpose (H,W,N) -> (N,H,W)" in meta["transformations"]
    assert "diffraction: dtype float64 -> float32" in meta["transformations"]
    assert "objectGuess: dtype complex128 -> complex64" in meta["transformations"]
    # 6.4 normalisation
    assert np.max(fx["diffraction"]) < 10.0
    assert np.min(fx["diffraction"]) >= 0.0
    # Content: exactly the source's first 64 scans, each pattern with its own coordinates.
    np.testing.assert_array_equal(
        fx["diffraction"], big_data["diffraction"][:, :, :64].transpose(2, 0, 1).astype(np.float32)
    )
    np.testing.assert_array_equal(fx["xcoords"], big_data["xcoords"][:64])
    np.testing.assert_array_equal(fx["scan_index"], np.arange(64))
    assert CONTRACT.validate(fx) == []
    _assert_aligned(fx)


@pytest.mark.parametrize(
    ("strategy", "seed"), [("first", None), ("stratified", None), ("random", 11)]
)
def test_every_strategy_keeps_patterns_with_their_coordinates(
    small_source, small_data, tmp_path, strategy, seed
):
    out, meta_path, _ = generate_fixture(
        small_source, tmp_path / "fx.npz", n_subset=40, subset_strategy=strategy, seed=seed
    )
    fx = read_npz(out)
    meta = json.loads(meta_path.read_text())
    idx = np.array(meta["subset_indices"])
    assert idx.size == 40 and np.all(np.diff(idx) > 0)
    assert meta["subset_strategy"] == strategy and meta["subset_seed"] == seed
    np.testing.assert_array_equal(fx["scan_index"], idx)
    src = small_data
    np.testing.assert_array_equal(
        fx["diffraction"], src["diffraction"][:, :, idx].transpose(2, 0, 1).astype(np.float32)
    )
    for k in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        np.testing.assert_array_equal(fx[k], src[k][idx])
    _assert_aligned(fx)


def test_the_original_fault_is_caught_by_the_alignment_check(small_data):
    """Patterns 0..63 with coordinates taken at other indices: 63 of 64 misplaced."""
    d = small_data
    wrong = np.arange(64) * 4  # the original took coordinates at different indices
    r = alignment_residuals(
        d["diffraction"][:, :, :64].transpose(2, 0, 1),
        d["probeGuess"],
        d["objectGuess"],
        d["xcoords"][wrong],
        d["ycoords"][wrong],
    )
    assert np.sum(np.argmin(r, axis=1) != np.arange(64)) >= 60


def test_stratified_spreads_over_the_scanned_area(small_data):
    x, y = small_data["xcoords"], small_data["ycoords"]
    first = select_subset(x, y, 32, "first")
    strat = select_subset(x, y, 32, "stratified")
    np.testing.assert_array_equal(strat, select_subset(x, y, 32, "stratified"))  # deterministic

    def coverage(idx):  # the largest distance from any scan to the nearest kept scan
        d2 = (x[:, None] - x[idx][None]) ** 2 + (y[:, None] - y[idx][None]) ** 2
        return np.sqrt(d2.min(axis=1).max())

    span = max(np.ptp(x), np.ptp(y))
    assert coverage(strat) < 0.25 * span < coverage(first)
    r1, r2 = select_subset(x, y, 32, "random", seed=1), select_subset(x, y, 32, "random", seed=2)
    np.testing.assert_array_equal(r1, select_subset(x, y, 32, "random", seed=1))
    assert not np.array_equal(r1, r2)
    with pytest.raises(ValueError, match="only used by the 'random'"):
        select_subset(x, y, 32, "first", seed=3)
    with pytest.raises(ValueError, match="strategy"):
        select_subset(x, y, 32, "every-other")


def test_random_without_seed_uses_and_records_seed_zero(small_source, tmp_path):
    _, meta_path, checksum = generate_fixture(
        small_source, tmp_path / "a.npz", subset_strategy="random"
    )
    assert json.loads(meta_path.read_text())["subset_seed"] == 0
    assert (
        generate_fixture(small_source, tmp_path / "b.npz", subset_strategy="random", seed=0)[2]
        == checksum
    )


def test_legacy_source_and_its_canonical_twin_give_identical_fixtures(small_data, tmp_path):
    canonical = dict(
        small_data, diffraction=np.ascontiguousarray(small_data["diffraction"].transpose(2, 0, 1))
    )
    renamed = {k: v for k, v in canonical.items() if k != "diffraction"}
    renamed["diff3d"] = np.asfortranarray(canonical["diffraction"]).astype(">f8")  # odd storage too
    sums = []
    for name, arrays in (("legacy", small_data), ("canonical", canonical), ("diff3d", renamed)):
        np.savez(tmp_path / f"{name}.npz", **arrays)  # an ordinary, non-canonical writer
        out, _, checksum = generate_fixture(
            tmp_path / f"{name}.npz",
            tmp_path / "out" / f"{name}.npz",
            n_subset=32,
            subset_strategy="stratified",
        )
        sums.append(checksum)
        assert compute_sha256(out) == checksum
    assert sums[0] == sums[1] == sums[2]
    assert (tmp_path / "out" / "legacy.npz").read_bytes() == (
        tmp_path / "out" / "diff3d.npz"
    ).read_bytes()


def test_ambiguous_layout_needs_layout_and_then_matches_twin(tmp_path):
    d = simulate_dataset(n_scans=32, probe_size=32, object_shape=(80, 80), seed=4, layout="legacy")
    assert d["diffraction"].shape == (32, 32, 32)
    write_npz(tmp_path / "sq.npz", d)
    with pytest.raises(ValueError, match="ambiguous"):
        generate_fixture(tmp_path / "sq.npz", tmp_path / "fx.npz", n_subset=16)
    assert not (tmp_path / "fx.npz").exists()
    _, _, legacy = generate_fixture(
        tmp_path / "sq.npz", tmp_path / "fx.npz", n_subset=16, layout="legacy"
    )
    write_npz(tmp_path / "sq_can.npz", dict(d, diffraction=d["diffraction"].transpose(2, 0, 1)))
    _, _, canon = generate_fixture(
        tmp_path / "sq_can.npz", tmp_path / "fx2.npz", n_subset=16, layout="canonical"
    )
    assert legacy == canon
    _assert_aligned(read_npz(tmp_path / "fx.npz"))


def test_optional_keys_kept_and_unknown_keys_dropped(small_data, tmp_path):
    n = 300
    arrays = dict(
        small_data,
        scan_index=np.arange(1000, 1000 + n, dtype=np.int32),
        Y=np.ones((32, 32, n), np.complex128),
        notes=np.arange(3.0),
    )
    write_npz(tmp_path / "src.npz", arrays)
    out, meta_path, _ = generate_fixture(
        tmp_path / "src.npz", tmp_path / "fx.npz", n_subset=20, subset_strategy="random", seed=5
    )
    fx = read_npz(out)
    meta = json.loads(meta_path.read_text())
    idx = np.array(meta["subset_indices"])
    assert "notes" not in fx and "notes" in meta["validation_notes"]
    np.testing.assert_array_equal(fx["scan_index"], 1000 + idx)
    assert (
        fx["scan_index"].dtype == np.int64
        and fx["Y"].shape == (20, 32, 32)
        and fx["Y"].dtype == np.complex64
    )
    assert any("dropped keys" in t and "notes" in t for t in meta["transformations"])


def test_subset_size_limits():
    assert validate_subset_size(16, 16) == 16
    with pytest.raises(ValueError, match="< 16"):
        validate_subset_size(15, 1087)
    with pytest.raises(ValueError, match="exceeds"):
        validate_subset_size(1088, 1087)


def _bad(small_data, change):
    arrays = {k: v.copy() for k, v in small_data.items()}
    change(arrays)
    return arrays


BAD_SOURCES = {
    "missing key": (lambda a: a.pop("probeGuess"), "probeGuess: expected a required key"),
    "2-D diffraction": (lambda a: a.update(diffraction=a["diffraction"][:, :, 0]), "2-D"),
    "count mismatch": (
        lambda a: a.update(xcoords=a["xcoords"][:-5], ycoords=a["ycoords"][:-5]),
        "no axis of length N=295",
    ),
    "NaN": (lambda a: a["diffraction"].__setitem__((3, 4, 5), np.nan), "1 NaN/Inf"),
    "negative amplitudes": (
        lambda a: a["diffraction"].__setitem__((3, 4, 5), -0.5),
        "non-negative",
    ),
    "intensity": (lambda a: a.update(diffraction=(a["diffraction"] * 1e3) ** 2), "max < 10"),
    "coordinates in metres": (
        lambda a: a.update({k: (a[k] - 60) * 1e-8 for k in ("xcoords", "ycoords")}),
        "metres or another unit? convert them to object pixels",
    ),
    "object not 2-D": (
        lambda a: a.update(objectGuess=a["objectGuess"][None]),
        "objectGuess: expected a 2-D array",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_sources_give_a_clear_error_and_no_output(small_data, tmp_path, case):
    change, message = BAD_SOURCES[case]
    write_npz(tmp_path / "src.npz", _bad(small_data, change))
    with pytest.raises(ValueError) as exc:
        generate_fixture(tmp_path / "src.npz", tmp_path / "out" / "fx.npz")
    assert message in str(exc.value) and "DATA-001 v1" in str(exc.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["src.npz"]


@pytest.mark.parametrize(
    ("n_subset", "message"),
    [(15, r"< 16: .*--subset-size"), (301, r"exceeds .*--subset-size .* between 16 and 300")],
)
def test_bad_subset_sizes_leave_no_output(small_source, tmp_path, n_subset, message):
    with pytest.raises(ValueError, match=message):
        generate_fixture(small_source, tmp_path / "fx.npz", n_subset=n_subset)
    assert list(tmp_path.iterdir()) == []


def test_missing_source_and_unreadable_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="source dataset not found"):
        generate_fixture(tmp_path / "nope.npz", tmp_path / "fx.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="not"):
        generate_fixture(tmp_path / "junk.npz", tmp_path / "fx.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.npz"]


def test_refuses_to_overwrite_unless_asked(small_source, tmp_path):
    out, meta, checksum = generate_fixture(small_source, tmp_path / "fx.npz", n_subset=16)
    before = out.read_bytes(), meta.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        generate_fixture(small_source, out, n_subset=32)
    out.unlink()
    with pytest.raises(FileExistsError, match=r"fx\.json"):  # a lone sidecar is protected too
        generate_fixture(small_source, out, n_subset=32)
    meta.unlink()
    generate_fixture(small_source, out, n_subset=16)
    assert out.read_bytes() == before[0]
    _, _, other = generate_fixture(small_source, out, n_subset=32, overwrite=True)
    assert other != checksum and json.loads(meta.read_text())["subset_size"] == 32
    with pytest.raises(ValueError, match="over the source"):
        generate_fixture(small_source, small_source, n_subset=16, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx.json", "fx.npz"]


def test_output_folder_or_sidecar_equal_to_fixture_is_refused(small_source, tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        generate_fixture(small_source, tmp_path / "dir.npz", overwrite=True)
    with pytest.raises(ValueError, match="cannot both be"):
        generate_fixture(small_source, tmp_path / "fx.npz", metadata_out=tmp_path / "fx.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.npz"]


def test_validate_source_returns_the_arrays(small_source):
    arrays = validate_source(small_source)
    assert arrays["diffraction"].shape == (32, 32, 300)


def test_a_float32_rounding_to_ten_is_caught_before_writing(small_data, tmp_path):
    arrays = _bad(
        small_data, lambda a: a["diffraction"].__setitem__((0, 0, 0), np.nextafter(10.0, 0))
    )
    write_npz(tmp_path / "src.npz", arrays)
    with pytest.raises(ValueError, match="fixture cut from this source"):
        generate_fixture(tmp_path / "src.npz", tmp_path / "fx.npz", n_subset=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.npz"]


def test_an_uncompressed_source_is_streamed_not_loaded(big_source, tmp_path):
    tracemalloc.start()
    try:
        generate_fixture(big_source, tmp_path / "fx.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert big_source.stat().st_size > 35e6
    assert peak < 20e6  # the fixture is 1.4 MB raw; the source 36 MB (about 8.5 MB measured)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a: a.update({k: a[k] * 1e-8 for k in ("xcoords", "ycoords")}),
            "they look like metres",
        ),
        (lambda a: a["xcoords"].__setitem__(3, 15.5), "away from the object's edge"),
    ],
    ids=["metres", "near the edge"],
)
def test_patches_reaching_outside_the_object_are_refused_before_writing(
    small_data, tmp_path, change, message
):
    """verify --alignment needs every probe-sized patch inside the object: make checks it too."""
    write_npz(tmp_path / "src.npz", _bad(small_data, change))
    with pytest.raises(ValueError) as exc:
        generate_fixture(tmp_path / "src.npz", tmp_path / "fx.npz", n_subset=16)
    text = str(exc.value)
    assert "outside the 120x118 objectGuess" in text and message in text
    assert "x in [16, 102] and y in [16, 104] object pixels" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.npz"]
