"""The CASCADE calcium ground truth (imaging with simultaneous electrophysiology), hash-checked.

Four datasets of the CASCADE database (Rupprecht et al., Nat. Neurosci. 2021), converted to
one ``.npz`` each (keys ``fluo_<i>``, ``time_<i>``, ``spikes_<i>``, ``fs``, ``cell_id``,
``segment``; the folder's ``README.md`` gives the provenance and the conversion). The files
are not shipped with nnfit and not downloaded: they are read from a folder the caller names,
and every file is checked against :data:`REGISTRY` with :func:`pooch.file_hash` first, so a
damaged or different file is refused in one line instead of giving other numbers.

Needs ``pooch`` (the ``data`` or ``test`` extra).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "REGISTRY", "ground_truth_file", "open_ground_truth"]

#: file name -> SHA-256 of the converted files (pooch's registry format)
REGISTRY = {
    "DS06-GCaMP6f-zf-aDp.npz": "57d7d5db7dd99656aac79ed705bbf43b13adb940374f16706dc56c4f18f4d2ce",
    "DS09-GCaMP6f-m-V1.npz": "624951f93b5c0333a8a836d829b79740cb85c2bd4567b32e0311eb523a9e3dd1",
    "DS14-GCaMP6s-m-V1.npz": "47a7da6c2f363ade7f9d75427f082b50da07085273fcab7a0386fc9fdbea220d",
    "DS30-GCaMP8f-m-V1.npz": "c1395b97b9a6c22d6ef536f2f9efdd2cbf84d132b7881c8ae88629c6ad5bdb2b",
}
#: dataset names (file names without ``.npz``)
DATASETS = tuple(sorted(name.removesuffix(".npz") for name in REGISTRY))


@functools.lru_cache(maxsize=16)
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> None:
    """Hash one file once per process (per size and modification time)."""
    import pooch

    got = pooch.file_hash(path, alg="sha256")
    if got != expected:
        raise ValueError(
            f"{path}: SHA-256 {got[:16]}... does not match the registry's {expected[:16]}...; "
            "the file is damaged or not the CASCADE conversion nnfit knows (see its README.md)"
        )


def ground_truth_file(name: str, folder: str | os.PathLike[str]) -> Path:
    """The verified path of dataset ``name`` (e.g. ``"DS09-GCaMP6f-m-V1"``) in ``folder``.

    Raises ``ValueError`` for an unknown name or a file whose SHA-256 differs from
    :data:`REGISTRY`, ``FileNotFoundError`` for a missing file.

    Examples
    --------
    >>> ground_truth_file("DS99", ".")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown ground-truth dataset 'DS99'; expected one of DS06-GCaMP6f-zf-aDp, ...
    """
    file = f"{name}.npz"
    if file not in REGISTRY:
        raise ValueError(
            f"unknown ground-truth dataset {name!r}; expected one of {', '.join(DATASETS)}"
        )
    path = Path(folder) / file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: ground-truth file not found; give the folder that holds the CASCADE "
            "conversion (datasets/calcium-ground-truth)"
        )
    st = path.stat()
    _verified(str(path.resolve()), st.st_size, st.st_mtime_ns, REGISTRY[file])
    return path


def open_ground_truth(name: str, folder: str | os.PathLike[str]) -> np.lib.npyio.NpzFile:
    """Open a verified ground-truth dataset (:func:`ground_truth_file`) with ``np.load``.

    No pickles are allowed; close it (or use it in a ``with`` block) when done.
    """
    return np.load(ground_truth_file(name, folder), allow_pickle=False)
