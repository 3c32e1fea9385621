"""generate_fixture returns a FixtureResult that unpacks as the design's triple."""

from __future__ import annotations

import json

from nnfit.io import file_sha256
from nnfit.ptycho import FixtureResult, generate_fixture, verify_fixture


def test_fixture_result_matches_what_was_written(small_source, tmp_path):
    res = generate_fixture(small_source, tmp_path / "fx.npz", n_subset=16)
    assert isinstance(res, FixtureResult)
    out, meta_path, checksum = res
    assert (out, meta_path, checksum) == (res.path, res.metadata_path, res.checksum)
    assert res[0] == out and res[2] == checksum and len(res) == 3
    assert checksum == file_sha256(out)
    assert res.metadata == json.loads(meta_path.read_text())
    assert res.metadata["subset_size"] == 16 and res.time_s > 0
    assert verify_fixture(out).ok
