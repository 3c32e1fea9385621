"""suite2p plane folders: read traces safely, write ``spks.npy``-compatible spikes back.

A plane folder (``suite2p/plane0``) holds ``F.npy`` and ``Fneu.npy`` (ROIs x frames,
float32), ``iscell.npy`` (ROIs x 2: is-cell flag, probability), ``spks.npy`` (suite2p's own
deconvolution, ROIs x frames, float32) and its settings: ``ops.npy`` (a pickled dict; suite2p
up to 0.14 keeps ``fs`` and ``neucoeff`` there) or, from suite2p 1.0, ``settings.npy``
(``fs`` and ``extraction/neuropil_coefficient``). The pickled files are read with
:func:`nnfit.io.load_object_npy`, which refuses anything but plain data: a crafted ``ops.npy``
cannot run code. Every array file is read with ``allow_pickle=False``.

A multi-plane run leaves ``suite2p/plane0``, ``suite2p/plane1``, ... and, with
``combine=True``, ``suite2p/combined``: suite2p's ``io.save.combined`` concatenates the planes'
ROIs (plane 0's first) and pads a plane with fewer frames with zeros, which a deconvolution
would read as a drop in fluorescence. :func:`read_suite2p_planes` reads the planes themselves
in the same ROI order, and only when they share their frame count and rate; a ``combined``
folder given as a plane folder is refused where its cells end in such padding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.recording import NEUROPIL_FACTOR, Recording, resolve_fs
from nnfit.io import atomic_path, bytes_sha256, file_sha256, load_object_npy
from nnfit.validate import as_float_array, check_finite_rows, check_real

__all__ = [
    "plane_folders",
    "read_settings",
    "read_suite2p",
    "read_suite2p_planes",
    "write_spks",
    "write_spks_planes",
]

logger = logging.getLogger(__name__)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a plain numeric .npy ({exc})") from None


def read_settings(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], Path | None]:
    """The plane's settings dict (``ops.npy``, else ``settings.npy``) and the file read.

    Returns ``({}, None)`` when neither file exists. Raises ``ValueError`` when the file
    holds anything but plain data (see :func:`nnfit.io.load_object_npy`) or is not a dict.
    """
    root = Path(folder)
    for name in ("ops.npy", "settings.npy"):
        path = root / name
        if path.is_file():
            obj = load_object_npy(path)
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: expected a pickled dict; found {type(obj).__name__}")
            return obj, path
    return {}, None


def _neuropil_from(settings: dict[str, Any], where: Path | None) -> float | None:
    value = settings.get("neucoeff")
    if value is None and isinstance(settings.get("extraction"), dict):
        value = settings["extraction"].get("neuropil_coefficient")
    if value is None:
        return None
    return check_real(f"neucoeff in {where}", value, low=0.0, high=1.0)


def read_suite2p(
    folder: str | os.PathLike[str],
    fs: float | None = None,
    *,
    neuropil_factor: float | None = None,
    fs_label: str = "fs",
    allow_no_cells: bool = False,
) -> Recording:
    """Read a suite2p plane folder: ``F - c * Fneu`` for the ROIs marked as cells.

    ``F.npy`` and ``Fneu.npy`` are required; ``iscell.npy`` (first column > 0 selects) is
    used when present. The sampling rate ``fs`` and the neuropil coefficient ``c`` come from
    ``ops.npy`` (``fs``, ``neucoeff``) or ``settings.npy`` (``fs``,
    ``extraction/neuropil_coefficient``) when present; ``c`` defaults to
    :data:`~nnfit.calcium.recording.NEUROPIL_FACTOR` (suite2p's default) and an explicit
    ``neuropil_factor`` wins over the file's.
    ``allow_no_cells`` reads a plane whose ``iscell.npy`` marks no ROI as a cell as a recording
    of no cells (as a plane of a multi-plane run is read) instead of refusing it.

    Returns
    -------
    Recording
        ``cell_index`` holds the ROI rows kept; ``provenance`` the neuropil coefficient used,
        where it came from, and the sha256 of ``F.npy``, ``Fneu.npy`` and the settings file.

    Raises
    ------
    ValueError
        A settings file holding anything but plain data (nothing from it is executed),
        mismatched shapes, NaN, no ROI marked as a cell, or a ``combined`` folder whose cells
        end in the zeros suite2p pads shorter planes with.
    """
    root = Path(folder)
    files = {name: root / f"{name}.npy" for name in ("F", "Fneu", "iscell")}
    for name in ("F", "Fneu"):
        if not files[name].is_file():
            raise FileNotFoundError(f"suite2p folder {root} has no {name}.npy ({files[name]})")
    settings, settings_path = read_settings(root)
    found_c = _neuropil_from(settings, settings_path)
    if neuropil_factor is not None:
        factor = check_real("neuropil_factor", neuropil_factor, low=0.0, high=1.0)
        factor_from = "argument"
    elif found_c is not None:
        factor, factor_from = found_c, str(settings_path)
    else:
        factor, factor_from = NEUROPIL_FACTOR, "default"
    # finite only where a cell is kept (below): suite2p leaves NaN in ROIs it rejected
    f = as_float_array(f"traces in {files['F']}", _load_array(files["F"]), ndim=(2,), finite=False)
    fneu = as_float_array(
        f"traces in {files['Fneu']}", _load_array(files["Fneu"]), ndim=(2,), finite=False
    )
    if f.shape != fneu.shape:
        raise ValueError(f"{files['Fneu']} has shape {fneu.shape} but {files['F']} has {f.shape}")
    keep = np.arange(f.shape[0])
    if files["iscell"].is_file():
        iscell = _load_array(files["iscell"])
        flags = iscell[:, 0] if iscell.ndim == 2 else iscell
        if flags.ndim != 1 or flags.shape[0] != f.shape[0]:
            raise ValueError(
                f"{files['iscell']} has {flags.shape[0] if flags.ndim else 0} rows, "
                f"F.npy {f.shape[0]}: they must list the same ROIs"
            )
        keep = np.flatnonzero(flags > 0)
        if keep.size == 0 and not allow_no_cells:
            raise ValueError(f"{files['iscell']} marks no ROI as a cell: nothing to deconvolve")
    found = None
    if "fs" in settings:
        found = check_real(f"fs in {settings_path}", settings["fs"], low=0.0, low_inclusive=False)
    fs_ = resolve_fs(found, fs, str(settings_path) if found is not None else str(root), fs_label)
    for name, values in (("F", f), ("Fneu", fneu)):
        check_finite_rows(values[keep], keep, str(files[name]), "ROI")
    if root.name == "combined":
        _refuse_padded_planes(root, f[keep], fneu[keep], keep)
    traces = np.ascontiguousarray(f[keep] - factor * fneu[keep])
    provenance = {
        "input_sha256": file_sha256(files["F"]),
        "files_sha256": {
            p.name: file_sha256(p)
            for p in (files["F"], files["Fneu"], files["iscell"], settings_path)
            if p is not None and p.is_file()
        },
        "neuropil_factor": factor,
        "neuropil_factor_from": factor_from,
        "n_rois": int(f.shape[0]),
    }
    logger.info(
        "suite2p %s: %d of %d ROIs, c = %g (%s)", root, keep.size, f.shape[0], factor, factor_from
    )
    return Recording(traces, fs_, "suite2p", root, keep, provenance=provenance)


def _refuse_padded_planes(root: Path, f: np.ndarray, fneu: np.ndarray, rows: np.ndarray) -> None:
    """Refuse a ``combined`` folder whose ROIs end in frames suite2p padded with zeros.

    suite2p's ``combined`` gives every plane the longest plane's frame count, the missing
    frames 0 in ``F`` and ``Fneu``; deconvolved, they would read as a drop to zero fluorescence.
    """
    zero = (f == 0) & (fneu == 0)
    # the length of each row's run of zeros at its end
    tail = np.argmin(zero[:, ::-1], axis=1)
    tail[zero.all(axis=1)] = f.shape[1]
    padded = np.flatnonzero(tail > 0)
    if padded.size:
        raise ValueError(
            f"{root}: {padded.size} ROI(s) end in frames that are 0 in both F.npy and Fneu.npy "
            f"(ROI row {int(rows[padded[0]])}: its last {int(tail[padded[0]])} frames), the "
            "padding suite2p's combined folder gives planes with fewer frames; pass the suite2p "
            f"folder above it ({root.parent}) to read the planes themselves, or one plane folder"
        )


def plane_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``planeN`` folders holding ``F.npy`` inside a suite2p output folder, by ``N``."""
    root = Path(folder)
    found = [
        (int(m.group(1)), q)
        for q in root.iterdir()
        if (m := re.fullmatch(r"plane(\d+)", q.name)) and (q / "F.npy").is_file()
    ]
    return [q for _, q in sorted(found)]


def read_suite2p_planes(
    folder: str | os.PathLike[str], fs: float | None = None, *, fs_label: str = "fs"
) -> Recording:
    """Read every plane of a suite2p output folder (``suite2p/``) as one recording.

    Each plane is read as by :func:`read_suite2p` (its own ``fs`` and neuropil coefficient)
    and the planes' cells are stacked in plane order, so ``cell_index`` is the ROI row in the
    planes' concatenation, the order of suite2p's own ``combined`` folder. ``combined`` itself
    is not read (it pads shorter planes with zeros).

    Returns
    -------
    Recording
        ``roi_ids``: ``planeN/ROW`` of each cell; ``provenance``: ``planes`` (folder, ROI rows
        ``[start, stop)`` in the concatenation, ROIs, cells, neuropil coefficient, file
        hashes), ``n_rois`` (all planes), ``neuropil_factor`` (one value, or one per plane
        where they differ), and ``input_sha256``: the sha256 of the lines
        ``planeN/F.npy <sha256>`` of every plane.

    Raises
    ------
    ValueError
        No plane folder, planes with different frame counts or rates (each plane can still be
        read on its own), or what :func:`read_suite2p` refuses in any plane.
    """
    root = Path(folder)
    planes = plane_folders(root)
    if not planes:
        raise FileNotFoundError(
            f"suite2p folder {root} has no F.npy and no plane folder (plane0, plane1, ...) "
            "holding one"
        )
    # a plane without cells (the flyback plane, say) adds none; the others are still read
    recs = [read_suite2p(q, fs, fs_label=fs_label, allow_no_cells=True) for q in planes]
    if not any(len(r.cell_index) for r in recs):
        raise ValueError(
            f"{root}: no plane's iscell.npy marks a ROI as a cell "
            f"({', '.join(q.name for q in planes)}): nothing to deconvolve"
        )
    shapes = {q.name: r.shape[1] for q, r in zip(planes, recs, strict=True)}
    rates = {q.name: r.fs for q, r in zip(planes, recs, strict=True)}
    if len(set(shapes.values())) > 1 or not all(
        math.isclose(v, recs[0].fs, rel_tol=1e-9) for v in rates.values()
    ):
        listed = ", ".join(f"{k}: {shapes[k]} frames at {rates[k]:g} Hz" for k in shapes)
        raise ValueError(
            f"{root}: the planes differ ({listed}); deconvolve each plane folder on its own "
            f"(e.g. {planes[0]})"
        )
    start = 0
    parts = []
    for q, r in zip(planes, recs, strict=True):
        n_rois = int(r.provenance["n_rois"])
        parts.append(
            {
                "folder": q.name,
                "rows": [start, start + n_rois],
                "n_rois": n_rois,
                "cells": len(r.cell_index),
                "neuropil_factor": r.provenance["neuropil_factor"],
                "neuropil_factor_from": r.provenance["neuropil_factor_from"],
                "files_sha256": r.provenance["files_sha256"],
            }
        )
        start += n_rois
    factors = [pl["neuropil_factor"] for pl in parts]
    digests = "".join(f"{pl['folder']}/F.npy {pl['files_sha256']['F.npy']}\n" for pl in parts)
    provenance = {
        "input_sha256": bytes_sha256(digests.encode()),
        "planes": parts,
        "n_rois": start,
        "neuropil_factor": factors[0] if len(set(factors)) == 1 else factors,
    }
    logger.info(
        "suite2p %s: %s", root, ", ".join(f"{pl['folder']} {pl['cells']} cells" for pl in parts)
    )
    return Recording(
        np.concatenate([r.load() for r in recs]),
        recs[0].fs,
        "suite2p",
        root,
        np.concatenate([pl["rows"][0] + r.cell_index for pl, r in zip(parts, recs, strict=True)]),
        roi_ids=np.asarray(
            [f"{q.name}/{i}" for q, r in zip(planes, recs, strict=True) for i in r.cell_index]
        ),
        provenance=provenance,
    )


def write_spks_planes(
    folder: str | os.PathLike[str],
    spikes: np.ndarray,
    cell_index: np.ndarray,
    planes: list[dict[str, Any]],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write the spikes of :func:`read_suite2p_planes`' cells back into each plane folder.

    ``planes``: the recording's ``provenance["planes"]``; each plane gets its own ``spks.npy``
    (as :func:`write_spks` writes one) from the cells whose ``cell_index`` lies in its ``rows``.
    An existing ``spks.npy`` in any plane refuses them all unless ``overwrite``.
    """
    root = Path(folder)
    cell_index = np.asarray(cell_index, dtype=np.int64)
    # every plane is checked before any is written, so a refusal leaves every plane as it was
    existing = [root / pl["folder"] / "spks.npy" for pl in planes]
    existing = [dest for dest in existing if dest.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{', '.join(map(str, existing))} exist(s) (suite2p's deconvolution or an earlier "
            "write); pass --overwrite to replace them"
        )
    # every plane's file is written in full before any replaces what the folder holds, so an
    # error leaves no plane changed and a kill leaves at most the renames undone
    with contextlib.ExitStack() as stack:
        for pl in planes:
            start, stop = pl["rows"]
            mine = np.flatnonzero((cell_index >= start) & (cell_index < stop))
            tmp = stack.enter_context(atomic_path(root / pl["folder"] / "spks.npy", suffix=".npy"))
            _write_rows(
                tmp,
                np.asarray(spikes[mine]) if mine.size else np.zeros((0, spikes.shape[1])),
                cell_index[mine] - start,
                pl["n_rois"],
            )
    return [root / pl["folder"] / "spks.npy" for pl in planes]


def write_spks(
    folder: str | os.PathLike[str],
    spikes: np.ndarray,
    cell_index: np.ndarray,
    *,
    n_rois: int | None = None,
    overwrite: bool = False,
    name: str = "spks.npy",
) -> Path:
    """Write spikes as suite2p's ``spks.npy``: ``(n_rois, n_frames)`` float32, every ROI.

    Row ``cell_index[i]`` gets ``spikes[i]``; ROIs that were not deconvolved (not marked as
    cells) get zeros. ``spikes`` may be a memory map; it is copied a block of rows at a time.
    The file is written atomically, and an existing one (suite2p's deconvolution, or an
    earlier write) is kept unless ``overwrite``.

    Parameters
    ----------
    folder : path-like
        The plane folder (holds ``F.npy``; its row count is ``n_rois`` when not given).
    spikes : array-like
        ``(len(cell_index), n_frames)``.
    cell_index : array-like of int
        ROI row of each spike train.
    n_rois : int, optional
        Rows of the output; default: rows of ``F.npy``.
    overwrite : bool
        Replace an existing file.
    name : str
        File name inside ``folder``.
    """
    root = Path(folder)
    dest = root / name
    if dest.exists() and not overwrite:
        raise ValueError(
            f"{dest} exists (suite2p's deconvolution or an earlier write); pass --overwrite to "
            "replace it"
        )
    if n_rois is None:
        n_rois = int(np.load(root / "F.npy", mmap_mode="r").shape[0])
    with atomic_path(dest, suffix=".npy") as tmp:
        _write_rows(tmp, spikes, np.asarray(cell_index, dtype=np.int64), n_rois)
    return dest


def _write_rows(path: Path, spikes: np.ndarray, cell_index: np.ndarray, n_rois: int) -> None:
    """Write ``spikes`` as ``(n_rois, n_frames)`` float32 into ``path``, zeros in other rows."""
    n_cells, n_frames = spikes.shape
    if n_cells != cell_index.size or (
        n_cells and (cell_index.min() < 0 or cell_index.max() >= n_rois)
    ):
        raise ValueError(
            f"{n_cells} spike trains for {cell_index.size} ROI rows in 0..{n_rois - 1}"
        )
    row_of = np.full(n_rois, -1, dtype=np.int64)
    row_of[cell_index] = np.arange(n_cells)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n_rois, n_frames)}
    block = max(1, (32 << 20) // max(1, 4 * n_frames))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for a in range(0, n_rois, block):
            b = min(a + block, n_rois)
            out = np.zeros((b - a, n_frames), dtype="<f4")
            src = row_of[a:b]
            have = src >= 0
            if have.any():
                out[have] = np.asarray(spikes[src[have]], dtype="<f4")
            f.write(out.tobytes())
