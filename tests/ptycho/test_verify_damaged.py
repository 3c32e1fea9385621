"""``nnfit ptycho verify`` reports damaged fixtures and sidecars instead of crashing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nnfit.cli import main


@pytest.fixture
def fixture(tmp_path, small_source, capsys):
    out = tmp_path / "fx.npz"
    assert (
        main(
            [
                "ptycho",
                "make",
                "--source",
                str(small_source),
                "--output",
                str(out),
                "--subset-size",
                "16",
            ]
        )
        == 0
    )
    capsys.readouterr()
    return out, out.with_suffix(".json")


def test_every_single_flipped_byte_is_reported(fixture, tmp_path, capsys):
    fx, meta = fixture
    data = fx.read_bytes()
    rng = np.random.default_rng(5)
    bad = tmp_path / "bad.npz"
    for pos in rng.choice(len(data), size=25, replace=False):
        b = bytearray(data)
        b[pos] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(b))
        rc = main(["ptycho", "verify", str(bad), "--metadata", str(meta)])
        out, err = capsys.readouterr()
        assert rc == 1, (pos, out, err)
        assert "FAILED" in out and "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (lambda m: m.update(transformations="scan_index: added"), "transformations (a list"),
        (lambda m: m.update(transformations=[1, 2]), "transformations (a list"),
    ],
)
def test_non_list_transformations_fail_the_sidecar_check(fixture, capsys, change, reported):
    fx, meta = fixture
    m = json.loads(meta.read_text())
    change(m)
    meta.write_text(json.dumps(m))
    assert main(["ptycho", "verify", str(fx)]) == 1
    out = capsys.readouterr().out
    assert reported in out and "FAILED" in out


def test_deeply_nested_sidecar_is_reported(fixture, capsys):
    fx, meta = fixture
    shutil.copyfile(meta, meta.with_suffix(".bak"))
    meta.write_text("[" * 200000 + "]" * 200000)
    assert main(["ptycho", "verify", str(fx)]) == 1
    out = capsys.readouterr().out
    assert "nested too deeply" in out
