import hashlib

import numpy as np

from nnfit.io import array_sha256, bytes_sha256, file_sha256


def test_file_hash_matches_hashlib(tmp_path):
    p = tmp_path / "f.bin"
    data = np.random.default_rng(0).bytes(3_000_000)
    p.write_bytes(data)
    assert file_sha256(p, chunk_size=4096) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert bytes_sha256(data) == file_sha256(p)


def test_array_hash_ignores_layout_but_not_content():
    a = np.arange(12, dtype="<f4").reshape(3, 4)
    assert array_sha256(a) == array_sha256(np.asfortranarray(a))
    assert array_sha256(a) == array_sha256(a.astype(">f4"))
    assert array_sha256(a) != array_sha256(a.astype("<f8"))
    assert array_sha256(a) != array_sha256(a.reshape(4, 3))
    b = a.copy()
    b[0, 0] = 1e-30
    assert array_sha256(a) != array_sha256(b)
