"""``H5Manager``: CubeFit's store class, with its static helpers for the HyperCube.

:class:`~nnfit.spectral.store.StoreWriter` writes and checks a store. CubeFit's scripts call
four more things on the same class (``diagnose_rebin_edges`` printing by default,
``print_hypercube_done_status``,
``live_prefit_snapshot_from_models``, ``compress_hypercube_inplace``); they belong to the
HyperCube and the figures, which sit above the store, so this facade lives one floor up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnfit.spectral.diagnostics import (
    describe_hypercube_status,
    hypercube_status,
    live_prefit_snapshot_from_models,
)
from nnfit.spectral.hypercube import compress_hypercube_inplace
from nnfit.spectral.store import StoreWriter, describe_rebin_edges

__all__ = ["H5Manager"]


class H5Manager(StoreWriter):
    """Write and check a store (:class:`StoreWriter`), plus CubeFit's HyperCube helpers."""

    @staticmethod
    def diagnose_rebin_edges(
        path: str | os.PathLike[str], *, verbose: bool = True
    ) -> dict[str, Any]:
        """Coverage report of the template grid (:meth:`StoreWriter.diagnose_rebin_edges`),
        printed in one line unless ``verbose=False``, as CubeFit's scripts expect."""
        rep = StoreWriter.diagnose_rebin_edges(path)
        if verbose:
            print(describe_rebin_edges(rep))
        return rep

    @staticmethod
    def print_hypercube_done_status(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Print the HyperCube's shape, chunks and tiles done, and return them.

        CubeFit's interactive helper, so it prints; library code uses
        :func:`~nnfit.spectral.diagnostics.hypercube_status`.
        """
        st = hypercube_status(path)
        print(describe_hypercube_status(path, st))
        return st

    @staticmethod
    def live_prefit_snapshot_from_models(
        path: str | os.PathLike[str],
        out_png: str | os.PathLike[str] = "prefit_overlay.png",
        **kw: Any,
    ) -> Path:
        """Four-panel sanity figure, readable while a build runs."""
        return live_prefit_snapshot_from_models(path, out_png=out_png, **kw)

    @staticmethod
    def compress_hypercube_inplace(
        path: str | os.PathLike[str], codec: str = "gzip", level: int = 2, shuffle: bool = True
    ) -> Path:
        """Compress ``/HyperCube/models`` crash-safely."""
        return compress_hypercube_inplace(path, codec=codec, level=level, shuffle=shuffle)
