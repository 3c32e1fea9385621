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
