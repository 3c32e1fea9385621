"""Small HDF5 stores for the fit tests, written directly in the store layout.

They hold only what the fit reads (``/HyperCube/models``, ``/DataCube``, ``/Mask``,
``/Noise``), so the fit tests do not depend on the HyperCube build; the end-to-end test in
``test_runner.py`` uses the real simulator and builder when they are available.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np


@dataclass
class Store:
    path: Path
    models: np.ndarray  # (S, C, P, L) float32
    x_true: np.ndarray  # (C*P,)
    data: np.ndarray  # (S, L)
    mask: np.ndarray  # (L,)
    noise: np.ndarray | None

    @property
    def shape(self):
        return self.models.shape

    def dense(self, weighted: bool = True):
        """Dense (rows, C*P) matrix and data over fitted pixels, rows ordered (s, l)."""
        _S, C, P, _L = self.models.shape
        fit = np.flatnonzero(self.mask)
        A = self.models[:, :, :, fit].astype(np.float64).transpose(0, 3, 1, 2).reshape(-1, C * P)
        y = self.data[:, fit].reshape(-1)
        if weighted and self.noise is not None:
            w = 1.0 / self.noise[:, fit].reshape(-1)
            return A * w[:, None], y * w
        return A, y


def make_store(
    path,
    S=12,
    C=2,
    P=5,
    L=40,
    *,
    S_chunk=4,
    P_chunk=None,
    seed=0,
    noise_sigma=None,
    mask_fraction=0.0,
    sparse_truth=False,
    compression=None,
):
    """Write a consistent (or noisy) small store; models are smooth positive 'spectra'."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(0, 1, L)
    models = np.empty((S, C, P, L), dtype=np.float32)
    for s in range(S):
        for c in range(C):
            for p in range(P):
                centers = rng.random(3)
                widths = 0.03 + 0.1 * rng.random(3)
                prof = 1.0 + 0.3 * rng.random() * lam
                for ce, wi in zip(centers, widths, strict=True):
                    prof -= 0.5 * rng.random() * np.exp(-0.5 * ((lam - ce) / wi) ** 2)
                models[s, c, p] = (0.1 + rng.random() * np.clip(prof, 0.05, None)).astype(
                    np.float32
                )
    x_true = rng.random(C * P)
    if sparse_truth:
        x_true[rng.random(C * P) < 0.4] = 0.0
    data = np.einsum("scpl,cp->sl", models.astype(np.float64), x_true.reshape(C, P))
    mask = np.ones(L, dtype=bool)
    if mask_fraction:
        mask[rng.choice(L, size=int(mask_fraction * L), replace=False)] = False
    noise = None
    if noise_sigma is not None:
        noise = noise_sigma * (0.5 + rng.random((S, L)))
        data = data + noise * rng.standard_normal((S, L))
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset(
            "HyperCube/models",
            data=models,
            chunks=(S_chunk, 1, P_chunk or P, L),
            compression=compression,
        )
        f["HyperCube"].attrs["complete"] = True
        f.create_dataset("DataCube", data=data)
        f.create_dataset("Mask", data=mask)
        if noise is not None:
            f.create_dataset("Noise", data=noise)
    return Store(Path(path), models, x_true, data, mask, noise)
