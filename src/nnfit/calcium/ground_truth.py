"""The CASCADE calcium ground truth (imaging with simultaneous electrophysiology), hash-checked.

Four datasets of the CASCADE database (Rupprecht et al., Nat. Neurosci. 2021), converted to
one ``.npz`` each (keys ``fluo_<i>``, ``time_<i>``, ``spikes_<i>``, ``fs``, ``cell_id``,
``segment``; the folder's ``README.md`` gives the provenance and the conversion). The files
are not shipped with nnfit and not downloaded: they are read from a folder the caller names,
and every file is checked against :data:`REGISTRY` with :func:`pooch.file_hash` first, so a
damaged or different file is refused in one line instead of giving other numbers.

Needs ``pooch`` (the ``data`` or ``test`` extra). :func:`read_cascade` reads a dataset folder of
the CASCADE repository itself (its ``*_mini.mat`` files) into the same layout, for the datasets
that are not converted here.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "REGISTRY", "ground_truth_file", "open_ground_truth", "read_cascade"]

log = logging.getLogger(__name__)

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


#: CASCADE stores spike times (``events_AP``) in units of 1e-4 s: this many to the second
_AP_PER_S = 1e4
_CASCADE_FIELDS = ("fluo_time", "fluo_mean", "events_AP")


def _cascade_recording(entry: np.ndarray, where: str) -> tuple[np.ndarray, ...]:
    """``(time, fluo, spikes)`` of one entry of a ``CAttached`` cell array, checked."""
    names = entry.dtype.names
    if names is None or entry.size != 1:
        raise ValueError(f"{where}: not one struct")
    missing = [f for f in _CASCADE_FIELDS if f not in names]
    if missing:
        raise ValueError(
            f"{where}: no field {', '.join(missing)}; a CASCADE recording holds "
            f"{', '.join(_CASCADE_FIELDS)}"
        )
    rec = entry.ravel()[0]
    t = np.asarray(rec["fluo_time"], dtype=np.float64).ravel()
    f = np.asarray(rec["fluo_mean"], dtype=np.float64).ravel()
    ap = np.asarray(rec["events_AP"], dtype=np.float64).ravel()
    if t.shape != f.shape:
        raise ValueError(f"{where}: {t.size} frame times but {f.size} fluorescence values")
    good = np.isfinite(t) & np.isfinite(f)
    if not good.any():
        raise ValueError(f"{where}: no frame has both a time and a fluorescence value")
    first, last = int(np.argmax(good)), int(good.size - np.argmax(good[::-1]))
    if not good[first:last].all():
        raise ValueError(
            f"{where}: {int((~good[first:last]).sum())} frames inside the recording have no "
            "time or fluorescence (NaN); only leading and trailing ones are dropped"
        )
    if first or last < good.size:
        log.warning(
            "%s: dropped %d leading and %d trailing frames without time or fluorescence",
            where,
            first,
            good.size - last,
        )
    t, f = t[first:last], f[first:last]
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise ValueError(f"{where}: frame times must increase strictly over at least 2 frames")
    spikes = np.sort(ap[np.isfinite(ap)] / _AP_PER_S)
    return t, f, spikes


def read_cascade(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A dataset folder of the CASCADE ground truth (``Ground_truth/<dataset>/*.mat``), read.

    Each MATLAB v5 file holds one neuron, a cell array ``CAttached`` with one struct per
    recording; its fields ``fluo_time`` (s), ``fluo_mean`` (dF/F) and ``events_AP`` (spike
    times in units of 1e-4 s) are read and nothing else (``scipy.io.loadmat``: no code in a
    file is run). Frames without a time or a fluorescence value (NaN) at the start or end of a
    recording are dropped, with a warning; such frames inside a recording are refused.

    Parameters
    ----------
    folder : str or path-like
        One dataset's folder, e.g. ``Ground_truth/DS32-GCaMP8s-m-V1``.

    Returns
    -------
    dict of str to numpy.ndarray
        The layout of the converted files (:func:`open_ground_truth`), recordings ordered by
        file name, then by position in the file: ``fluo_<i>`` (float32, dF/F as given),
        ``time_<i>`` (s), ``spikes_<i>`` (s, sorted), ``fs`` (``1 / median(diff(time_<i>))``,
        Hz), ``cell_id`` (the file's position in name order) and ``segment``.

    Raises
    ------
    FileNotFoundError
        No folder, or no ``.mat`` file in it.
    ValueError
        A file that is not a MATLAB v5 file with a ``CAttached`` cell array of recordings, or a
        recording that fails the checks above; the message names the file and the recording.

    References
    ----------
    .. [1] Rupprecht P, et al. (2021). A database and deep learning toolbox for noise-optimized,
       generalized spike inference from calcium imaging. Nature Neuroscience 24, 1324-1337.
       https://doi.org/10.1038/s41593-021-00895-5
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; give one CASCADE dataset's folder")
    files = sorted(root.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"{root}: no .mat file; give one CASCADE dataset's folder")
    out: dict[str, np.ndarray] = {}
    fs, cell_id, segment = [], [], []
    for cell, path in enumerate(files):
        try:
            mat = loadmat(path, variable_names=["CAttached"])
        except NotImplementedError:
            raise ValueError(
                f"{path}: a MATLAB v7.3 (HDF5) file; CASCADE's files are MATLAB v5 (save it "
                "with -v7)"
            ) from None
        except (MatReadError, ValueError, TypeError, OSError) as err:
            raise ValueError(f"{path}: not a readable MATLAB file ({err})") from None
        cells = mat.get("CAttached")
        if cells is None or cells.dtype != object or cells.size == 0:
            raise ValueError(f"{path}: no CAttached cell array of recordings")
        for seg, entry in enumerate(cells.ravel()):
            if not isinstance(entry, np.ndarray):
                raise ValueError(f"{path}: CAttached{{{seg + 1}}}: not one struct")
            t, f, spikes = _cascade_recording(entry, f"{path}: CAttached{{{seg + 1}}}")
            i = len(fs)
            out[f"fluo_{i}"] = f.astype(np.float32)
            out[f"time_{i}"] = t
            out[f"spikes_{i}"] = spikes
            fs.append(1.0 / float(np.median(np.diff(t))))
            cell_id.append(cell)
            segment.append(seg)
    out["fs"] = np.asarray(fs)
    out["cell_id"] = np.asarray(cell_id, dtype=np.int64)
    out["segment"] = np.asarray(segment, dtype=np.int64)
    return out
