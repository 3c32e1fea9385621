"""Read-only diagnostics of a cube store: tile status and the live prefit snapshot.

Everything here opens the store with ``open_h5(path, "r")`` (SWMR read), so it can run while
``build_hypercube`` writes the same file from another process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.spectral.store import open_h5

__all__ = ["hypercube_status", "print_hypercube_done_status"]


def hypercube_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Shape, chunks and tiles done of ``/HyperCube`` (``present`` False if not started)."""
    with open_h5(path, "r") as f:
        if "HyperCube/models" not in f:
            return {"present": False, "tiles_done": 0, "tiles_total": 0, "complete": False}
        g = f["HyperCube"]
        m = g["models"]
        done_ds = g["_done"]
        done_ds.refresh()
        done = np.asarray(done_ds[()], dtype=bool)
        return {
            "present": True,
            "shape": tuple(int(n) for n in m.shape),
            "chunks": tuple(int(n) for n in m.chunks),
            "tile_grid": tuple(int(n) for n in done.shape),
            "tiles_done": int(done.sum()),
            "tiles_total": int(done.size),
            "complete": bool(g.attrs.get("complete", False)) and bool(done.all()),
            "compression": m.compression,
            "nbytes": int(np.prod(m.shape)) * 4,
        }


def print_hypercube_done_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Print the HyperCube's shape, chunks and ``N_done / N_total`` tiles; return them."""
    st = hypercube_status(path)
    if not st["present"]:
        print(f"{Path(path)}: no /HyperCube yet (run build_hypercube)")
        return st
    pct = 100.0 * st["tiles_done"] / max(st["tiles_total"], 1)
    print(
        f"{Path(path)}: models {st['shape']} float32, chunks {st['chunks']}, "
        f"tiles {st['tiles_done']} / {st['tiles_total']} done ({pct:.1f}%), "
        f"complete={st['complete']}, compression={st['compression']}"
    )
    return st
