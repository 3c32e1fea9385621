"""ptychodus products and patterns as DATA-001 sources, on files ptychodus 1.7.0 wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from nnfit.io.npz import open_npz
from nnfit.ptycho import alignment_residuals, generate_fixture, validate_source, verify_fixture
from nnfit.ptycho.ptychodus import (
    import_ptychodus,
    is_training_data,
    open_patterns,
    open_ptychodus,
    read_product,
    read_ptychodus_source,
    read_training_data,
)

DATA = Path(__file__).parent / "data" / "ptychodus-1.7.0"
REF = json.loads((DATA / "ptychodus_pixels.json").read_text())
PAIRS = [
    ("product.h5", "patterns.npz"),
    ("product.npz", "patterns.npz"),
    ("product_scan_order.h5", "patterns_dp.h5"),
]


def _source(product: str | Path, patterns: str | Path, **kw):
    src = read_ptychodus_source(DATA / product, DATA / patterns, **kw)
    return src, np.concatenate(list(src.diffraction.blocks()))


def _misfit(d: np.ndarray, a: dict, dx: float, dy: float) -> float:
    """Median relative misfit of the patterns against the model at shifted coordinates."""
    r = alignment_residuals(
        d, a["probeGuess"], a["objectGuess"], a["xcoords"] + dx, a["ycoords"] + dy,
        fit_scale=True,
    )  # fmt: skip
    return float(np.median(np.diag(r)))


@pytest.mark.parametrize(("product", "patterns"), PAIRS)
def test_coordinates_are_the_simulated_ones_through_ptychodus_metres(product, patterns):
    # The files hold metres that ptychodus's own map_coordinates_object_to_probe made from
    # the simulated pixel coordinates; reading them back must give those coordinates.
    src, _ = _source(product, patterns)
    a = src.arrays
    np.testing.assert_allclose(a["xcoords"], REF["simulated_xcoords"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["ycoords"], REF["simulated_ycoords"], rtol=0, atol=1e-9)
    first = 0 if patterns.endswith(".h5") else 1000  # an HDF5 stack's pattern k has index k
    np.testing.assert_array_equal(a["scan_index"], first + np.arange(40))


def test_each_pattern_fits_the_forward_model_at_its_own_coordinates_and_not_half_a_pixel_off():
    src, d = _source("product.h5", "patterns.npz")
    a = src.arrays
    args = (d, a["probeGuess"], a["objectGuess"])
    r = alignment_residuals(*args, a["xcoords"], a["ycoords"], fit_scale=True)
    off = np.where(np.eye(len(r), dtype=bool), np.inf, r).min(axis=1)
    assert np.all(np.diag(r) * 2 < off)
    half = alignment_residuals(*args, a["xcoords"] - 0.5, a["ycoords"] - 0.5, fit_scale=True)
    assert np.median(np.diag(half)) > 5 * np.median(np.diag(r))


def test_amplitudes_probe_and_object_follow_the_stated_rules():
    src, d = _source("product.h5", "patterns.npz")
    raw = np.load(DATA / "patterns.npz")
    counts, bad = raw["patterns"].astype(np.float64), raw["bad_pixels"]
    counts[:, bad] = 0
    photons = counts.sum() / counts.shape[0]
    assert src.photons == pytest.approx(photons, rel=1e-12)
    order = np.argsort(raw["indexes"])
    np.testing.assert_allclose(d, np.sqrt(counts[order]) / np.sqrt(photons), rtol=1e-6)
    assert np.all(d[:, bad] == 0)
    assert np.mean(np.sum(d.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(1, rel=1e-6)
    with h5py.File(DATA / "product.h5") as f:
        mode0, obj = f["probe"][0, 0], f["object"][0]
    p = src.arrays["probeGuess"]
    assert np.sum(np.abs(p.astype(np.complex128)) ** 2) == pytest.approx(1, rel=1e-6)
    np.testing.assert_allclose(p, mode0 / np.linalg.norm(mode0), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(src.arrays["objectGuess"], obj)
    assert any("incoherent mode 0 of 2" in n for n in src.notes)
    assert any("1 bad pixels" in n for n in src.notes)


def test_import_writes_a_source_that_make_and_verify_accept(tmp_path):
    out, meta_path, meta = import_ptychodus(
        DATA / "product.h5", DATA / "patterns.npz", tmp_path / "src" / "scan.npz"
    )
    assert meta_path == out.with_suffix(".json")
    assert json.loads(meta_path.read_text()) == meta
    assert meta["scans"] == 40
    assert meta["product_metadata"]["photon_energy_eV"] == 8000.0
    from nnfit.io import file_sha256

    assert meta["source_sha256"] == file_sha256(out)
    assert meta["patterns_sha256"] == file_sha256(DATA / "patterns.npz")
    arrays = validate_source(out)
    assert arrays["diffraction"].dtype == np.float32 and arrays["diffraction"].shape == (40, 16, 16)
    assert isinstance(arrays["diffraction"].base, np.memmap)  # stored, so make streams it
    fx = generate_fixture(out, tmp_path / "fx.npz", n_subset=16, subset_strategy="stratified")
    report = verify_fixture(fx.path, alignment=True)
    assert report.ok, str(report)
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_ptychodus(DATA / "product.h5", DATA / "patterns.npz", out)


def test_a_failed_import_leaves_the_old_source(tmp_path):
    out, _, _ = import_ptychodus(DATA / "product.h5", DATA / "patterns.npz", tmp_path / "s.npz")
    before = out.read_bytes()
    with pytest.raises(ValueError, match="none of the 40 positions"):
        import_ptychodus(DATA / "product.h5", DATA / "patterns_dp.h5", out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.npz"]


def _edited_product(tmp_path: Path, edit) -> Path:
    p = tmp_path / "edited.h5"
    shutil.copy(DATA / "product.h5", p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda f: f.attrs.__setitem__("far_field", False), "near-field"),
        (lambda f: f["object"].attrs.__setitem__("pixel_width_m", 2.5e-8), r"pixels .* differ"),
        (lambda f: f["object"].attrs.__delitem__("center_x_m"), "no 'center_x_m' attribute"),
        (
            lambda f: f["probe_position_indexes"].__setitem__(1, 1000),
            "repeats 1000: each position must name its own pattern",
        ),
        (
            lambda f: f["probe_position_x_m"].__setitem__(3, np.nan),
            "probe_position_x_m has 1 NaN",
        ),
    ],
)
def test_bad_products_are_refused_naming_the_problem(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        read_ptychodus_source(_edited_product(tmp_path, edit), DATA / "patterns.npz")


def test_bad_patterns_are_refused_naming_the_problem(tmp_path):
    raw = dict(np.load(DATA / "patterns.npz"))
    np.savez(tmp_path / "nopat.npz", frames=raw["patterns"])
    with pytest.raises(ValueError, match="no 'patterns' member"):
        open_patterns(tmp_path / "nopat.npz")
    f = raw["patterns"].astype(np.float64)
    f[7, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", patterns=f, indexes=raw["indexes"])
    with pytest.raises(ValueError, match=r"1 NaN/Inf counts .* pattern index 1007"):
        read_ptychodus_source(DATA / "product.h5", tmp_path / "nan.npz")
    np.savez(tmp_path / "crop.npz", patterns=raw["patterns"][:, :8, :8], indexes=raw["indexes"])
    with pytest.raises(ValueError, match=r"probe .* is 16x16 but the patterns .* are 8x8"):
        read_ptychodus_source(DATA / "product.h5", tmp_path / "crop.npz")
    with h5py.File(tmp_path / "other.h5", "w") as h:
        h["frames"] = raw["patterns"]
    with pytest.raises(ValueError, match="--patterns-path"):
        open_patterns(tmp_path / "other.h5")
    src = read_ptychodus_source(
        DATA / "product_scan_order.h5", tmp_path / "other.h5", data_path="/frames"
    )
    assert src.diffraction.shape == (40, 16, 16)


def test_negative_counts_are_clipped_and_counted(tmp_path):
    raw = dict(np.load(DATA / "patterns.npz"))
    f = raw["patterns"].astype(np.float64) - 1.0  # a dark level subtracted
    np.savez(tmp_path / "dark.npz", patterns=f, indexes=raw["indexes"])
    src, d = _source(DATA / "product.h5", tmp_path / "dark.npz")
    n_neg = int(np.count_nonzero(f < 0))
    assert n_neg > 0
    assert f"{n_neg} negative counts clipped to 0" in " ".join(src.notes)
    assert d.min() == 0


def test_product_only_positions_and_pattern_only_frames_are_dropped_and_said(tmp_path):
    raw = dict(np.load(DATA / "patterns.npz"))
    keep = raw["indexes"] < 1030
    np.savez(tmp_path / "part.npz", patterns=raw["patterns"][keep], indexes=raw["indexes"][keep])
    src, d = _source(DATA / "product.h5", tmp_path / "part.npz")
    assert d.shape[0] == 30
    np.testing.assert_array_equal(src.arrays["scan_index"], np.arange(1000, 1030))
    assert "positions: 10 without a pattern dropped" in src.notes


def test_read_product_gives_both_containers_the_same_content():
    a, b = read_product(DATA / "product.h5"), read_product(DATA / "product.npz")
    for name in ("indexes", "x_m", "y_m", "probe", "object"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.object_center_m == b.object_center_m and a.object_pixel_m == b.object_pixel_m


def test_make_on_a_product_or_a_training_export_names_the_import_command(tmp_path):
    for name in ("product.h5", "product.npz"):
        with pytest.raises(ValueError, match="nnfit ptycho import --product"):
            generate_fixture(DATA / name, tmp_path / "fx.npz")
    # what ptychodus 1.7.0's save_ptychopinn_training_data writes: counts in diff3d
    src, _ = _source("product.h5", "patterns.npz")
    raw = np.load(DATA / "patterns.npz")
    export = {
        "diff3d": raw["patterns"],
        "bad_pixels": raw["bad_pixels"],
        **{k: src.arrays[k] for k in ("xcoords", "ycoords", "objectGuess", "probeGuess")},
    }
    np.savez(tmp_path / "train.npz", **export)
    with pytest.raises(ValueError, match=r"training-data export .* nnfit ptycho import"):
        generate_fixture(tmp_path / "train.npz", tmp_path / "fx.npz")


def _nnfit(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nnfit", *map(str, args)], capture_output=True, text=True
    )


def test_cli_import_then_make(tmp_path):
    out = tmp_path / "source.npz"
    args = ("ptycho", "import", "--product", DATA / "product.h5")
    run = _nnfit(*args, "--patterns", DATA / "patterns.npz", "--out", out)
    assert run.returncode == 0, run.stderr
    assert "40 scans" in run.stdout and "nnfit ptycho make --source" in run.stdout
    assert "incoherent modes" in run.stderr  # the library's warning, shown by the CLI
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["generator_script"].startswith("nnfit ptycho import")
    assert open_npz(out)["diffraction"].shape == (40, 16, 16)
    again = _nnfit(*args, "--patterns", DATA / "patterns.npz", "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    fx = tmp_path / "fx.npz"
    make = _nnfit("ptycho", "make", "--source", out, "--output", fx, "--subset-size", "16")
    assert make.returncode == 0, make.stderr
    assert _nnfit("ptycho", "verify", fx, "--alignment").returncode == 0


def test_damaged_files_are_named(tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes((DATA / "product.h5").read_bytes()[:20000])
    with pytest.raises(OSError, match=r"cut\.h5: cannot open as an HDF5 file"):
        read_product(cut)
    raw = np.load(DATA / "patterns.npz")["patterns"]
    with h5py.File(tmp_path / "dp.h5", "w") as f:
        f.create_dataset("dp", data=raw, chunks=(1, 16, 16), compression="gzip")
        offset = f["dp"].id.get_chunk_info(20).byte_offset
    data = bytearray((tmp_path / "dp.h5").read_bytes())
    data[offset : offset + 40] = b"\0" * 40  # one chunk's deflate stream destroyed
    (tmp_path / "dp.h5").write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"dp\.h5: /dp: cannot read rows"):
        read_ptychodus_source(DATA / "product_scan_order.h5", tmp_path / "dp.h5")


@pytest.mark.parametrize("folder", [DATA, DATA / "odd15"])
def test_coordinates_put_each_pattern_where_ptychodus_own_forward_model_made_it(folder):
    # ptychodus_forward.npz: patterns ptychodus 1.7.0's simulator computed from the product
    # (its patch bounds, Fourier sub-pixel shift and Fresnel propagation; see the README).
    # nnfit's forward model at the imported coordinates must fit them better than anywhere
    # on a quarter-pixel grid around them, in both axes, for an even and an odd probe.
    src = read_ptychodus_source(folder / "product_scan_order.h5", folder / "ptychodus_forward.npz")
    a = src.arrays
    d = np.concatenate(list(src.diffraction.blocks())).astype(np.float64)

    at_zero = _misfit(d, a, 0.0, 0.0)
    assert at_zero < 1e-4
    shifts = [(dx, dy) for dx in (-0.5, -0.25, 0, 0.25, 0.5) for dy in (-0.5, -0.25, 0, 0.25, 0.5)]
    assert all(_misfit(d, a, dx, dy) > at_zero for dx, dy in shifts if (dx, dy) != (0, 0))
    # ptychodus's own map of product.h5 (reversed position order), + 1/2 for an even probe
    ref = json.loads((folder / "ptychodus_pixels.json").read_text())
    order = np.argsort(ref["indexes"])
    half = 0.5 if a["probeGuess"].shape[1] % 2 == 0 else 0.0
    np.testing.assert_allclose(a["xcoords"], np.asarray(ref["x_px"])[order] + half, atol=1e-9)
    np.testing.assert_allclose(a["ycoords"], np.asarray(ref["y_px"])[order] + half, atol=1e-9)


@pytest.mark.parametrize("folder", [DATA, DATA / "odd15"])
def test_ptychodus_training_data_file_alone_is_a_source(folder, tmp_path):
    # training.h5: ptychodus 1.7.0's save_training_data of Poisson counts its own simulator
    # made; positions in its object pixels, probe stack, object, filled bad pixels, one file
    path = folder / "training.h5"
    assert is_training_data(path) and not is_training_data(folder / "product_scan_order.h5")
    prod, pats = read_training_data(path)
    src = read_ptychodus_source(prod, pats)
    a = src.arrays
    ref = json.loads((folder / "ptychodus_pixels.json").read_text())
    np.testing.assert_allclose(a["xcoords"], ref["simulated_xcoords"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["ycoords"], ref["simulated_ycoords"], rtol=0, atol=1e-9)
    assert "1 pixels ptychodus filled (bad_pixels) kept as filled" in src.notes[-2]
    d = np.concatenate(list(src.diffraction.blocks())).astype(np.float64)
    with h5py.File(path) as f:
        counts = f["patterns"][()].astype(np.float64)
    np.testing.assert_allclose(d, np.sqrt(counts / counts.sum(axis=(1, 2)).mean()), rtol=1e-6)

    at_zero = _misfit(d, a, 0.0, 0.0)
    assert all(_misfit(d, a, dx, dy) > at_zero for dx in (-0.25, 0, 0.25) for dy in (-0.25, 0, 0.25)
               if (dx, dy) != (0, 0))  # fmt: skip
    out, _, meta = import_ptychodus(path, None, tmp_path / "s.npz")
    assert validate_source(out)["diffraction"].shape == d.shape
    assert meta["patterns"].endswith("training.h5: /patterns") and meta["scans"] == d.shape[0]
    with pytest.raises(
        ValueError, match=r"not ptychodus.s training-data file .* give its patterns"
    ):
        import_ptychodus(folder / "product_scan_order.h5", None, tmp_path / "t.npz")


def test_cli_import_of_a_training_file_needs_no_patterns(tmp_path):
    out = tmp_path / "s.npz"
    run = _nnfit("ptycho", "import", "--product", DATA / "training.h5", "--out", out)
    assert run.returncode == 0, run.stderr
    assert "40 scans" in run.stdout
    bad = _nnfit("ptycho", "import", "--product", DATA / "product.h5", "--out", tmp_path / "x.npz")
    assert bad.returncode == 2 and "give its patterns with --patterns" in bad.stderr


def test_patterns_path_without_patterns_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"--patterns-path .* give --patterns"):
        open_ptychodus(DATA / "training.h5", None, "/dp")


@pytest.fixture
def master(tmp_path, monkeypatch):
    """A detector-style master file whose /dp is an external link to the patterns; opt-in off."""
    from nnfit.io.hdf5 import ALLOW_EXTERNAL_ENV

    monkeypatch.delenv(ALLOW_EXTERNAL_ENV, raising=False)
    shutil.copy(DATA / "patterns_dp.h5", tmp_path / "data_000001.h5")
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["dp"] = h5py.ExternalLink("data_000001.h5", "/dp")
    return tmp_path / "master.h5"


def test_patterns_from_another_file_are_refused_unless_allowed(master, monkeypatch):
    # An Eiger-style master file whose /dp is an external link: nnfit's HDF5 rule (data from
    # outside the file only when the user opts in) holds for imported files too.
    from nnfit.io.hdf5 import ALLOW_EXTERNAL_ENV

    with pytest.raises(ValueError, match=r"external link .* opt in"):
        open_patterns(master)
    monkeypatch.setenv(ALLOW_EXTERNAL_ENV, "1")
    src = read_ptychodus_source(DATA / "product_scan_order.h5", master)
    assert src.diffraction.shape == (40, 16, 16)


def test_cli_import_follows_external_links_when_told(master, tmp_path):
    args = ("ptycho", "import", "--product", DATA / "product_scan_order.h5", "--patterns",
            master, "--out", tmp_path / "s.npz")  # fmt: skip
    refused = _nnfit(*args)
    assert refused.returncode == 2 and "--allow-external" in refused.stderr
    assert _nnfit(*args, "--allow-external").returncode == 0
