"""Read HyperCube rows in chunk order: each stored chunk is read once per pass.

The HyperCube ``/HyperCube/models`` has shape ``(S, C, P, L)`` (float32) and is chunked in
tiles ``(S_chunk, C_chunk, P_chunk, L)``. A row of the global system is one observed pixel
``l`` of one spaxel ``s``: the vector ``A[s, :, :, l]`` of length ``C*P``. Reading one
spaxel's rows touches ``C / C_chunk`` chunks that each hold ``S_chunk`` spaxels, so visiting
spaxels in a global random order re-reads every chunk up to ``S_chunk`` times per epoch (the
fault of the original, which relied on a chunk cache too small for it).

:class:`HyperCubeReader` instead works in *spaxel blocks* aligned with ``S_chunk``: for a
block it reads each chunk of the block exactly once, as one chunk-aligned hyperslab, and
gathers only the selected pixels of each spaxel into a ``(dS, K, C*P)`` float32 buffer. The
solver promotes rows to float64 while it uses them. Callers shuffle the blocks and the spaxels
inside each block, which keeps every pass at one read per chunk whatever the chunk cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numba
import numpy as np

from nnfit.io.hdf5 import open_h5
from nnfit.spectral.store_checks import check_tile_finite

__all__ = ["HyperCubeReader", "open_h5_read"]


def open_h5_read(path: str | os.PathLike[str]) -> h5py.File:
    """Open the store read-only, SWMR-safe (works while the fit tracker writes ``/Fit/*``),
    through :func:`nnfit.io.hdf5.open_h5` (which also repairs a file left by a killed writer)."""
    return open_h5(path, "r")


@numba.njit(cache=True, nogil=True)
def _gather(buf, local, pix, counts, rows4, c0, p0):  # pragma: no cover - compiled
    """rows4[j, k, c0 + c, p0 + p] = buf[local[j], c, p, pix[j, k]] for k < counts[j]."""
    n_sel = local.shape[0]
    _, dc, dp, _ = buf.shape
    for j in range(n_sel):
        src = local[j]
        for c in range(dc):
            for p in range(dp):
                for k in range(counts[j]):
                    rows4[j, k, c0 + c, p0 + p] = buf[src, c, p, pix[j, k]]


def warm_up() -> None:
    """Load (or compile) the gather kernel now rather than at the first block read."""
    z = np.zeros(1, dtype=np.int64)
    _gather(
        np.zeros((1, 1, 1, 1), np.float32),
        z,
        z.reshape(1, 1),
        z,
        np.zeros((1, 1, 1, 1), np.float32),
        0,
        0,
    )


@dataclass
class BlockRows:
    """Rows of one spaxel block: ``rows[j]`` is spaxel ``spaxels[j]``'s ``(K, C*P)`` rows."""

    spaxels: np.ndarray  # (dS,) global spaxel indices, in block order
    pixels: np.ndarray  # (dS, K) observed-pixel indices of the rows (-1 = padding)
    counts: np.ndarray  # (dS,) number of valid rows per spaxel
    rows: np.ndarray  # (dS, K, C*P) float32
    extra: dict[int, np.ndarray]  # spaxel -> (k_extra, C*P) rows for extra pixels asked for


class HyperCubeReader:
    """Chunk-ordered, mask-aware reader of HyperCube rows (float32 on disk, no copies to f64).

    Parameters
    ----------
    source : path or h5py.File
        The store. A path is opened read-only with SWMR; an open file (for example one on a
        byte-counting file object in the tests) is used as it is and not closed.
    max_bytes_rows : int
        Budget for the gathered-rows buffer of one block. A block whose buffer would exceed it
        is processed in sub-blocks; each sub-block re-reads the block's chunks, which is
        counted in :attr:`chunk_reads`.

    Attributes
    ----------
    S, C, P, L : int
        HyperCube dimensions.
    S_chunk : int
        Spaxels per stored chunk (the block size).
    chunk_reads : int
        Number of chunk-sized hyperslabs read so far.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.h5"
    >>> with h5py.File(p, "w", libver="latest") as f:
    ...     _ = f.create_dataset("HyperCube/models", data=np.ones((4, 1, 2, 3), np.float32),
    ...                          chunks=(2, 1, 2, 3))
    >>> r = HyperCubeReader(p)
    >>> b = r.read_block(0, [np.array([0, 2]), np.array([1, 2])])
    >>> b.rows.shape, r.chunk_reads
    ((2, 2, 2), 1)
    >>> r.close()
    """

    def __init__(self, source: str | os.PathLike[str] | h5py.File, *, max_bytes_rows=2 << 30):
        self._own = not isinstance(source, h5py.File)
        self.file = open_h5_read(source) if self._own else source
        if "HyperCube/models" not in self.file:
            name = self.file.filename
            if self._own:
                self.file.close()
            raise ValueError(
                f"{name} has no /HyperCube/models; build it first "
                "(build_hypercube or `nnfit spectral build`)"
            )
        self.models = self.file["HyperCube/models"]
        self.S, self.C, self.P, self.L = (int(v) for v in self.models.shape)
        chunks = self.models.chunks or self.models.shape
        self.S_chunk, self.C_chunk, self.P_chunk = (int(v) for v in chunks[:3])
        self.max_bytes_rows = int(max_bytes_rows)
        self.chunk_reads = 0
        self.bytes_read = 0

    @property
    def n_blocks(self) -> int:
        """Number of spaxel blocks (``ceil(S / S_chunk)``)."""
        return -(-self.S // self.S_chunk)

    def block_range(self, b: int) -> tuple[int, int]:
        """``(s0, s1)`` spaxel range of block ``b``."""
        s0 = b * self.S_chunk
        return s0, min(s0 + self.S_chunk, self.S)

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._own and self.file.id.valid:
            self.file.close()

    def __enter__(self) -> HyperCubeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _chunks_of(self, s0: int, s1: int):
        for c0 in range(0, self.C, self.C_chunk):
            c1 = min(c0 + self.C_chunk, self.C)
            for p0 in range(0, self.P, self.P_chunk):
                p1 = min(p0 + self.P_chunk, self.P)
                yield c0, c1, p0, p1

    def read_block(
        self,
        b: int,
        pixels: list[np.ndarray],
        *,
        extra: dict[int, np.ndarray] | None = None,
        local: np.ndarray | None = None,
    ) -> BlockRows:
        """Gather the rows of block ``b``.

        Parameters
        ----------
        b : int
            Block index.
        pixels : list of int arrays
            ``pixels[j]``: observed-pixel indices for the ``j``-th spaxel of ``local``.
        extra : dict, optional
            ``{spaxel: pixel indices}`` of additional rows to gather from the same chunk reads
            (validation rows), returned in :attr:`BlockRows.extra`.
        local : int array, optional
            Local spaxel indices (``0 <= j < dS``) to gather, in the order of ``pixels``;
            default all spaxels of the block in order.
        """
        s0, s1 = self.block_range(b)
        ds = s1 - s0
        local = np.arange(ds) if local is None else np.asarray(local, dtype=np.intp)
        if len(pixels) != local.size:
            raise ValueError(f"pixels has {len(pixels)} entries for {local.size} spaxels")
        counts = np.array([len(p) for p in pixels], dtype=np.intp)
        k = int(counts.max(initial=0))
        pix = np.full((local.size, k), -1, dtype=np.intp)
        for j, p in enumerate(pixels):
            pix[j, : len(p)] = p
        n = self.C * self.P
        rows = np.zeros((local.size, k, n), dtype=np.float32)
        rows4 = rows.reshape(local.size, k, self.C, self.P)
        extra = extra or {}
        ex_local = {int(s) - s0: np.asarray(v, dtype=np.intp) for s, v in extra.items()}
        ex_rows = {
            j: np.zeros((v.size, self.C, self.P), dtype=np.float32) for j, v in ex_local.items()
        }
        take = np.ascontiguousarray(np.where(pix >= 0, pix, 0), dtype=np.int64)
        local64 = np.ascontiguousarray(local, dtype=np.int64)
        buf = None
        for c0, c1, p0, p1 in self._chunks_of(s0, s1):
            shape = (ds, c1 - c0, p1 - p0, self.L)
            if buf is None or buf.shape != shape:
                buf = np.empty(shape, dtype=np.float32)
            self.models.read_direct(buf, source_sel=np.s_[s0:s1, c0:c1, p0:p1, :])
            check_tile_finite(self.file.filename, buf, np.s_[s0:s1, c0:c1, p0:p1])
            self.chunk_reads += 1
            self.bytes_read += buf.nbytes
            # (dS, dc, dp, L) -> rows (dS_sel, K, C, P) at the selected pixels, no temporaries
            _gather(buf, local64, take, counts.astype(np.int64), rows4, c0, p0)
            for j, v in ex_local.items():
                ex_rows[j][:, c0:c1, p0:p1] = np.moveaxis(buf[j][:, :, v], 2, 0)
        return BlockRows(
            spaxels=s0 + local,
            pixels=pix,
            counts=counts,
            rows=rows,
            extra={s0 + j: r.reshape(r.shape[0], n) for j, r in ex_rows.items()},
        )

    def sub_blocks(self, n_spaxels: int, k: int) -> int:
        """How many sub-blocks a block of ``n_spaxels`` spaxels with ``k`` rows each needs."""
        need = n_spaxels * k * self.C * self.P * 4
        return max(1, -(-need // max(self.max_bytes_rows, 1)))

    def spaxel_rows(self, s: int, pixels: np.ndarray) -> np.ndarray:
        """Rows ``A[s, :, :, pixels]`` as a ``(len(pixels), C*P)`` float32 array (one spaxel;
        for diagnostics and dashboards, not for passes over the cube)."""
        slab = np.asarray(self.models[s], dtype=np.float32)  # (C, P, L)
        return np.ascontiguousarray(np.moveaxis(slab[:, :, pixels], 2, 0)).reshape(
            len(pixels), self.C * self.P
        )
