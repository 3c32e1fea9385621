"""verify_fixture and the ``nnfit fixture`` commands (real subprocesses)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnfit.ptycho import generate_fixture, read_npz, verify_fixture, write_npz
from nnfit.ptycho.subset import _git_commit


@pytest.fixture
def fixture_pair(small_source, tmp_path):
    out, meta, _ = generate_fixture(
        small_source, tmp_path / "fx.npz", n_subset=24, subset_strategy="stratified"
    )
    return out, meta


def test_verify_passes_a_fresh_fixture(fixture_pair):
    out, meta = fixture_pair
    report = verify_fixture(out, alignment=True)
    assert report.ok, str(report)
    text = str(report)
    assert "OK: all 10 checks passed" in text
    assert json.loads(meta.read_text())["sha256_checksum"] in text


def test_verify_catches_tampering(fixture_pair):
    out, _ = fixture_pair
    arrays = read_npz(out)
    arrays["diffraction"][0, 0, 0] += 0.25
    write_npz(out, arrays)
    report = verify_fixture(out)
    failed = {c.name for c in report.checks if not c.ok}
    assert failed == {"file checksum", "file size", "array hashes"} or failed == {
        "file checksum",
        "array hashes",
    }
    assert "diffraction: content hash differs" in str(report) and "FAILED" in str(report)


def test_verify_catches_misplaced_coordinates(fixture_pair):
    out, _ = fixture_pair
    arrays = read_npz(out)
    arrays["xcoords"] = np.roll(arrays["xcoords"], 1)
    arrays["ycoords"] = np.roll(arrays["ycoords"], 1)
    write_npz(out, arrays)
    report = verify_fixture(out, alignment=True)
    bad = {c.name: c.detail for c in report.checks if not c.ok}
    assert "alignment" in bad and "24 of 24 patterns" in bad["alignment"]


def test_verify_reports_sidecar_and_contract_problems(fixture_pair, tmp_path):
    out, meta = fixture_pair
    doc = json.loads(meta.read_text())
    del doc["subset_indices"]
    doc["contract_version"] = "0"
    meta.write_text(json.dumps(doc))
    failed = {c.name: c.detail for c in verify_fixture(out).checks if not c.ok}
    assert "subset_indices" in failed["sidecar"] and "'0'" in failed["contract version"]
    meta.unlink()
    failed = {c.name: c.detail for c in verify_fixture(out).checks if not c.ok}
    assert set(failed) == {"sidecar"} and "missing" in failed["sidecar"]
    np.savez(tmp_path / "plain.npz", diffraction=np.zeros((4, 4, 4)))
    failed = {c.name: c.detail for c in verify_fixture(tmp_path / "plain.npz").checks if not c.ok}
    assert "objectGuess: expected a required key" in failed["contract DATA-001 v1"]
    with pytest.raises(FileNotFoundError):
        verify_fixture(tmp_path / "absent.npz")


def test_generator_commit_is_a_sha_in_a_checkout():
    in_checkout = shutil.which("git") and (Path(__file__).resolve().parents[2] / ".git").exists()
    assert re.fullmatch(r"[0-9a-f]{40}" if in_checkout else r"[0-9a-f]{40}|unknown", _git_commit())


@pytest.mark.slow
def test_cli_simulate_make_verify_and_cross_process_determinism(run_cli, tmp_path):
    sim = run_cli(
        "fixture",
        "simulate",
        "--out",
        "src/legacy.npz",
        "--n-scans",
        "200",
        "--probe-size",
        "32",
        "--object-shape",
        "100",
        "100",
        check=True,
    )
    assert "(32, 32, 200)" in sim.stdout
    a = run_cli(
        "fixture",
        "make",
        "--source",
        "src/legacy.npz",
        "--output",
        "a/deep/fx.npz",
        "--subset-size",
        "32",
        check=True,
    )
    b = run_cli(
        "fixture",
        "make",
        "--source",
        "src/legacy.npz",
        "--output",
        "b/fx.npz",
        "--subset-size",
        "32",
        "--metadata-out",
        "b/meta/side.json",
        check=True,
    )
    sum_a = re.search(r"checksum (sha256:[0-9a-f]{64})", a.stdout).group(1)
    sum_b = re.search(r"checksum (sha256:[0-9a-f]{64})", b.stdout).group(1)
    assert sum_a == sum_b  # two processes, same bytes
    assert (tmp_path / "a/deep/fx.npz").read_bytes() == (tmp_path / "b/fx.npz").read_bytes()
    meta = json.loads((tmp_path / "b/meta/side.json").read_text())
    assert meta["sha256_checksum"] == sum_a
    assert meta["generator_script"].startswith("nnfit fixture make --source src/legacy.npz")
    ok = run_cli("fixture", "verify", "a/deep/fx.npz", "--alignment")
    assert ok.returncode == 0 and "OK: all 10 checks passed" in ok.stdout, ok.stdout
    # Existing output without --overwrite: exit 2, clear message, file untouched; --overwrite (or its alias --force) replaces.
    again = run_cli(
        "fixture",
        "make",
        "--source",
        "src/legacy.npz",
        "--output",
        "a/deep/fx.npz",
        "--subset-size",
        "48",
    )
    assert (
        again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    )
    assert "Traceback" not in again.stderr
    forced = run_cli(
        "fixture",
        "make",
        "--source",
        "src/legacy.npz",
        "--output",
        "a/deep/fx.npz",
        "--subset-size",
        "48",
        "--strategy",
        "random",
        "--seed",
        "3",
        "--force",
        check=True,
    )
    assert sum_a not in forced.stdout
    # verify against the wrong sidecar fails with exit 1
    bad = run_cli("fixture", "verify", "a/deep/fx.npz", "--metadata", "b/meta/side.json")
    assert bad.returncode == 1 and "FAIL" in bad.stdout


@pytest.mark.slow
def test_cli_bad_input_exits_2_and_writes_nothing(run_cli, tmp_path, small_data):
    arrays = dict(small_data, diffraction=small_data["diffraction"][:, :, 0])
    write_npz(tmp_path / "flat.npz", arrays)
    proc = run_cli("fixture", "make", "--source", "flat.npz", "--output", "out/fx.npz")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "nnfit: error: source flat.npz breaks DATA-001 v1"
    )
    assert "diffraction: expected a 3-D stack" in proc.stderr
    proc = run_cli("fixture", "make", "--source", "missing.npz", "--output", "out/fx.npz")
    assert proc.returncode == 2 and "source dataset not found: missing.npz" in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["flat.npz"]


def test_help_has_examples(run_cli, capsys):
    from nnfit.cli import build_parser

    for cmd in ("make", "simulate", "verify"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["fixture", cmd, "--help"])
        assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
    text = run_cli("fixture", "make", "--help", check=True).stdout
    for flag in (
        "--source",
        "--output",
        "--subset-size",
        "--metadata-out",
        "--strategy",
        "--seed",
        "--layout",
        "--overwrite",
    ):
        assert flag in text


def test_unwritable_destination_is_a_user_error(run_cli, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    proc = run_cli("fixture", "simulate", "--out", blocker / "src.npz", "--n-scans", "20")
    assert proc.returncode == 2
    assert proc.stderr.startswith("nnfit: error:")
    assert "Traceback" not in proc.stderr


def _arrays_entry(key, field, value):
    return lambda m: m["arrays"][key].update({field: value})


SIDECAR_EDITS = {
    "another contract": (
        "first",
        lambda m: m.update(contract="DATA-999"),
        "contract version",
        "contract 'DATA-999'",
    ),
    "first relabelled random": (
        "first",
        lambda m: m.update(subset_strategy="random", subset_seed=0),
        "subset",
        "not the 16 of 300 scans that 'random' with seed 0 selects",
    ),
    "random with another seed": (
        "random",
        lambda m: m.update(subset_seed=4),
        "subset",
        "'random' with seed 4 selects",
    ),
    "a seed with first": (
        "first",
        lambda m: m.update(subset_seed=5),
        "subset",
        "subset_seed 5 with subset_strategy 'first'",
    ),
    "a seed with stratified": (
        "stratified",
        lambda m: m.update(subset_seed=0),
        "subset",
        "make records a seed only for 'random'",
    ),
    "unknown strategy": (
        "first",
        lambda m: m.update(subset_strategy="first_n_positions"),
        "subset",
        "subset_strategy must be one of first, stratified, random",
    ),
    "indices as a string": (
        "first",
        lambda m: m.update(subset_indices="0-15"),
        "subset",
        "subset_indices must be a list of integers (scan numbers); found str",
    ),
    "indices past the source": (
        "stratified",
        lambda m: m.update(source_scans=max(m["subset_indices"])),
        "subset",
        "subset_indices must lie in",
    ),
    "source_scans a string": (
        "first",
        lambda m: m.update(source_scans="300"),
        "subset",
        "source_scans must be an integer >= N=16; found '300'",
    ),
    "array dtype": (
        "first",
        _arrays_entry("diffraction", "dtype", "<f8"),
        "array hashes",
        "diffraction: dtype '<f8' in the sidecar, '<f4' in the file",
    ),
    "array shape": (
        "first",
        _arrays_entry("xcoords", "shape", [15]),
        "array hashes",
        "xcoords: shape [15] in the sidecar, [16] in the file",
    ),
    "source checksum": (
        "first",
        lambda m: m.update(source_sha256="sha256:00"),
        "sidecar",
        "source_sha256 (sha256:<64 hex digits>; found 'sha256:00')",
    ),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_EDITS))
def test_verify_rechecks_every_sidecar_field_it_can(small_source, tmp_path, case):
    strategy, change, check, text = SIDECAR_EDITS[case]
    out, meta, _ = generate_fixture(
        small_source,
        tmp_path / "fx.npz",
        n_subset=16,
        subset_strategy=strategy,
        seed=3 if strategy == "random" else None,
    )
    assert verify_fixture(out).ok
    doc = json.loads(meta.read_text())
    change(doc)
    meta.write_text(json.dumps(doc))
    failed = {c.name: c.detail for c in verify_fixture(out).checks if not c.ok}
    assert set(failed) == {check} and text in failed[check], failed


def test_verify_says_which_subsets_it_re_derived(small_source, tmp_path):
    for strategy, seed, said in (
        ("first", None, "indices re-derived"),
        ("random", 3, "indices re-derived"),
        ("stratified", None, "stratified indices need the source to re-derive"),
    ):
        out, _, _ = generate_fixture(small_source, tmp_path / f"{strategy}.npz", 16, strategy, seed)
        detail = {c.name: c.detail for c in verify_fixture(out).checks}["subset"]
        assert detail == f"16 scans, strategy {strategy}; {said}"
