"""The file-format options of ``nnfit calcium``: ``--series``, ``--write-nwb``, ``--write-suite2p``.

Reading goes through :func:`nnfit.calcium.recordings.read_input`; writing back happens after the
run's own outputs (``spikes.npy`` in ``--out``) are complete, from those files. Every target is
checked before any work starts, so a refused write leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_format_arguments", "add_series_argument", "check_write_targets", "write_back"]


def add_series_argument(p: argparse.ArgumentParser) -> None:
    """``--series`` (every command that reads INPUT)."""
    p.add_argument(
        "--series",
        metavar="NAME",
        help="which traces of an .nwb, CaImAn, .mat or IDPS .csv INPUT: an NWB RoiResponseSeries "
        "as Container/Series (e.g. Fluorescence/RoiResponseSeries; listed when the file holds "
        "several); for CaImAn C+YrA (raw, default), C or F_dff; for a .mat the variable, "
        "cells x frames (or a struct field as NAME.FIELD; optional when the file holds one "
        "numeric matrix); for an Inscopix IDPS .csv the cell statuses read, comma-separated "
        "(default accepted; e.g. accepted,undecided, or all)",
    )


def add_format_arguments(p: argparse.ArgumentParser) -> None:
    """``--series``, ``--write-nwb``, ``--write-suite2p`` and ``--overwrite`` for deconvolve."""
    add_series_argument(p)
    p.add_argument(
        "--write-nwb",
        nargs="?",
        const=True,
        default=None,
        metavar="NEW.nwb",
        help="also write the spikes into NWB, as processing/ophys/Deconvolved/<series> (same ROI "
        "table rows and timing, settings as JSON comments): into INPUT itself (rewritten "
        "atomically) or, given a file name, into a new self-contained copy of INPUT",
    )
    p.add_argument(
        "--write-suite2p",
        action="store_true",
        help="also write the spikes as spks.npy (ROIs x frames, float32, zeros for ROIs that are "
        "not cells) into the suite2p plane folder INPUT (into each plane folder of a suite2p "
        "folder INPUT)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="let --write-suite2p replace an existing spks.npy (suite2p's deconvolution or an "
        "earlier --write-suite2p) and --write-nwb an existing NEW.nwb",
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spks_origin(dest: Path, out: Path) -> str:
    """Who wrote the existing ``dest``, where that is known: the run in ``out`` records the hash
    of each spks.npy it wrote (``spks_sha256`` in run.json), and a file with that hash is the
    one it wrote; a spks.npy is otherwise suite2p's or another run's."""
    from nnfit.io import file_sha256

    try:
        hashes = json.loads((out / "run.json").read_text()).get("spks_sha256", {})
        recorded = hashes.get(str(dest.resolve()))
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded == file_sha256(dest):
        return f"written by the earlier --write-suite2p into {out}"
    return "suite2p's deconvolution or an earlier --write-suite2p"


def check_write_targets(args: argparse.Namespace, rec: Any) -> None:
    """Refuse, before any work, write-back options that cannot be honoured."""
    if getattr(args, "write_suite2p", False):
        if rec.kind != "suite2p":
            raise ValueError(f"--write-suite2p needs a suite2p plane folder INPUT; got {rec.kind}")
        planes = [Path(rec.source) / pl["folder"] for pl in rec.provenance.get("planes", [])]
        for dest in (folder / "spks.npy" for folder in planes or [Path(rec.source)]):
            if dest.exists() and not args.overwrite:
                raise ValueError(
                    f"{dest} exists ({_spks_origin(dest, Path(args.out))}); pass --overwrite to "
                    "replace it"
                )
    write_nwb = getattr(args, "write_nwb", None)
    if write_nwb is None:
        return
    if rec.kind != "nwb":
        raise ValueError(f"--write-nwb needs an .nwb INPUT; got {rec.kind}")
    from nnfit.calcium.nwb import DECONVOLVED, spikes_series_name
    from nnfit.io.hdf5 import open_h5

    if write_nwb is True:
        module, _, name = rec.provenance["series_path"].rsplit("/", 2)
        with open_h5(rec.source, "r") as f:
            group = f.get(f"{module}/{DECONVOLVED}", {})
            existing = {k: _text(group[k].attrs.get("description", "")) for k in group}
        spikes_series_name(name, existing, in_place=True, where=rec.source)
        return
    dest = Path(write_nwb).resolve()
    if dest == Path(rec.source).resolve():
        raise ValueError(
            f"--write-nwb {write_nwb} is the input; give no file name to add the spikes to it"
        )
    if dest.exists() and not args.overwrite:
        raise ValueError(f"--write-nwb {write_nwb} exists; pass --overwrite to replace it")


def write_back(
    args: argparse.Namespace, rec: Any, out: Path, run: dict[str, Any]
) -> dict[str, Any]:
    """Write ``out/spikes.npy`` back into the input's format as asked.

    Returns
    -------
    dict
        What run.json records of it (empty when nothing was written): ``written_back``, the
        targets, and ``spks_sha256``, the hash of each spks.npy written by its absolute path
        (how a later --write-suite2p knows the file as this run's).
    """
    from nnfit.io import file_sha256

    written = []
    hashes = {}
    spikes_npy = Path(out) / "spikes.npy"
    if getattr(args, "write_suite2p", False):
        from nnfit.calcium.suite2p import write_spks, write_spks_planes

        spikes = np.load(spikes_npy, mmap_mode="r")
        if "planes" in rec.provenance:
            paths = write_spks_planes(
                rec.source,
                spikes,
                rec.cell_index,
                rec.provenance["planes"],
                overwrite=args.overwrite,
            )
        else:
            paths = [
                write_spks(
                    rec.source,
                    spikes,
                    rec.cell_index,
                    n_rois=rec.provenance.get("n_rois"),
                    overwrite=args.overwrite,
                )
            ]
        written.extend(str(path) for path in paths)
        hashes = {str(Path(path).resolve()): file_sha256(path) for path in paths}
    if getattr(args, "write_nwb", None) is not None:
        from nnfit.calcium.nwb import write_nwb

        dest = None if args.write_nwb is True else args.write_nwb
        path, inside = write_nwb(
            rec.source,
            rec.provenance["series"],
            spikes_npy,
            run,
            dest=dest,
            overwrite=args.overwrite,
        )
        written.append(f"{path}:{inside}")
    if not written:
        return {}
    return {"written_back": written, **({"spks_sha256": hashes} if hashes else {})}
