"""Chunk-ordered HyperCube reads: exact rows, and each chunk read once per pass."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from nnfit.spectral.hypercube_reader import HyperCubeReader

from ._kaczmarz_fixtures import make_store


class CountingFile(io.FileIO):
    """A real file that counts the bytes HDF5 reads through it."""

    def __init__(self, path):
        super().__init__(path, "r")
        self.nread = 0

    def readinto(self, b):
        n = super().readinto(b)
        self.nread += n or 0
        return n

    def read(self, size=-1):
        out = super().read(size)
        self.nread += len(out)
        return out


def test_rows_equal_stored_models_ragged_blocks_and_p_chunks(tmp_path, rng):
    st = make_store(tmp_path / "c.h5", S=11, C=3, P=7, L=30, S_chunk=4, P_chunk=3)
    with HyperCubeReader(st.path) as r:
        assert (r.S, r.C, r.P, r.L, r.S_chunk, r.n_blocks) == (11, 3, 7, 30, 4, 3)
        s0, s1 = r.block_range(2)
        assert (s0, s1) == (8, 11)  # ragged last block
        pix = [rng.choice(30, size=k, replace=False) for k in (5, 9, 2)]
        local = np.array([2, 0, 1])
        br = r.read_block(2, pix, local=local, extra={9: np.array([3, 4])})
        assert r.chunk_reads == 3 * 3  # C chunks x P chunks, each once
        for j, s in enumerate(br.spaxels):
            k = br.counts[j]
            want = st.models[s][:, :, pix[j]].transpose(2, 0, 1).reshape(k, 21)
            np.testing.assert_array_equal(br.rows[j, :k], want)
            assert not br.rows[j, k:].any()
        assert br.rows.dtype == np.float32
        want = st.models[9][:, :, [3, 4]].transpose(2, 0, 1).reshape(2, 21)
        np.testing.assert_array_equal(br.extra[9], want)
        np.testing.assert_array_equal(r.spaxel_rows(9, np.array([3, 4])), want)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_each_chunk_read_once_per_pass_whatever_the_cache(tmp_path, compression):
    """Bytes read from disk in one shuffled pass ~ the stored HyperCube, with no chunk cache.

    Uncompressed, HDF5 reads partial chunks in place, so only the gzip case shows the
    original's re-reads; both show one read per chunk for the chunk-ordered reader.
    """
    S, C, P, L = 24, 3, 6, 50
    st = make_store(tmp_path / "c.h5", S=S, C=C, P=P, L=L, S_chunk=8, compression=compression)
    with h5py.File(st.path, "r") as f:
        models_bytes = f["HyperCube/models"].id.get_storage_size()
    rng = np.random.default_rng(0)

    def one_pass(fobj, chunk_ordered):
        with h5py.File(fobj, "r", rdcc_nbytes=0) as f:
            before = fobj.nread
            if chunk_ordered:
                r = HyperCubeReader(f)
                for b in rng.permutation(r.n_blocks):
                    s0, s1 = r.block_range(b)
                    local = rng.permutation(s1 - s0)
                    pix = [rng.choice(L, size=20, replace=False) for _ in local]
                    r.read_block(int(b), pix, local=local)
                assert r.chunk_reads == r.n_blocks * C
            else:  # the original: spaxels in a global random order, one slab at a time
                m = f["HyperCube/models"]
                for s in rng.permutation(S):
                    m[int(s)]
            return fobj.nread - before

    with CountingFile(st.path) as fobj:
        ordered = one_pass(fobj, True)
    with CountingFile(st.path) as fobj:
        naive = one_pass(fobj, False)
    assert models_bytes <= ordered < 1.05 * models_bytes + 64 * 1024
    if compression:
        assert naive > 5 * models_bytes  # the original's access pattern, caught by this count


def test_missing_hypercube_is_a_clear_error(tmp_path):
    p = tmp_path / "e.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f["DataCube"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="no /HyperCube/models"):
        HyperCubeReader(p)
    with pytest.raises(FileNotFoundError):
        HyperCubeReader(tmp_path / "missing.h5")


def test_sub_blocks_follow_the_budget(tmp_path):
    st = make_store(tmp_path / "c.h5", S=8, C=2, P=5, L=20, S_chunk=8)
    with HyperCubeReader(st.path, max_bytes_rows=1100) as r:
        assert r.sub_blocks(8, 10) == 3
