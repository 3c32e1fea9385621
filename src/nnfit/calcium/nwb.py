"""Neurodata Without Borders (NWB) files: read ROI traces, write deconvolved spikes back.

Reading
    The traces are a ``RoiResponseSeries`` inside a ``Fluorescence`` or ``DfOverF`` container of
    a processing module (``/processing/ophys`` in every pipeline's output), named
    ``Container/Series`` (``Fluorescence/RoiResponseSeries``; ``module/Container/Series`` for
    another module). The data are ``(frames, ROIs)``; column ``j`` is row ``rois[j]`` of the
    ROI table (a ``PlaneSegmentation``). The sampling rate is the series' ``rate`` or, when it
    keeps ``timestamps``, ``(n - 1) / (t[-1] - t[0])`` (each within
    :data:`TIMESTAMP_TOLERANCE` of a frame interval of the evenly spaced frames). Read lazily,
    a series is never loaded whole: the
    :class:`~nnfit.calcium.recording.Recording` names the HDF5 dataset behind the pynwb object's
    ``data`` and blocks of ROIs are read as hyperslabs of it (chunked and compressed data
    included). Values are in the series' ``unit``: ``data * conversion + offset``; a series
    with another ``conversion`` or ``offset`` than 1 and 0 (integer counts) is read whole and
    scaled, since the streamed blocks are read as stored. Data
    compressed with a filter HDF5 lacks (Blosc, Zstd: hdf5plugin's) are refused up front with
    what to install; hdf5plugin is imported where it is installed.

Writing
    Spikes go where suite2p's NWB export puts deconvolved activity: a ``Fluorescence``
    container named ``Deconvolved`` in the same processing module, holding a
    ``RoiResponseSeries`` with the source series' name (beside another tool's series of that
    name, :func:`spikes_series_name`), a region of the *same* ROI table rows,
    and the source's timing (the same ``rate`` and ``starting_time``, or a link to its
    timestamps; timestamps on an even grid become ``rate`` and ``starting_time``, as NWB's best
    practice asks). The run record (settings, kinetics, input sha256, nnfit version) is the series'
    ``comments`` as JSON. :func:`write_nwb` either rewrites the input (a copy with the new
    series, then ``os.replace``: the input is intact until the new file is complete) or writes a
    new, self-contained file (``NWBHDF5IO.export``: the input's contents plus the new series;
    relative ``external_file`` paths of image series are rewritten to name the same files from
    the new file's folder).
    A new file *linking* the input was considered and not taken: a ``DynamicTableRegion`` cannot
    reference a ROI table in another file (HDF5 object references stay inside one file), so it
    would need its own copy of the table anyway, and external links break as soon as the files
    are moved apart (nnfit's own readers refuse to follow them).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.calcium.recording import (
    FS_TOLERANCE,
    TIMESTAMP_TOLERANCE,
    Recording,
    rate_from_timestamps,
)
from nnfit.io import atomic_path, file_sha256
from nnfit.io.hdf5 import check_filters
from nnfit.validate import as_float_array, check_real

__all__ = [
    "DECONVOLVED",
    "FS_TOLERANCE",
    "TIMESTAMP_TOLERANCE",
    "columns_from_npy",
    "list_series",
    "read_nwb",
    "write_nwb",
]

logger = logging.getLogger(__name__)

#: Name of the container the spikes are written to (suite2p's and NeuroConv's convention).
DECONVOLVED = "Deconvolved"
#: How the description of a series of spikes nnfit wrote begins.
SPIKES_DESCRIPTION = "non-negative spikes deconvolved from"


def spikes_series_name(
    name: str, existing: dict[str, str], *, in_place: bool, where: str | os.PathLike[str]
) -> str:
    """The name in ``Deconvolved`` that :func:`write_nwb` gives the spikes of series ``name``.

    ``existing``: the series already in that container, name to description. ``name`` where it
    is free; beside another tool's series of that name (suite2p's NWB export writes its own
    deconvolution as ``Deconvolved/plane0``), ``name_nnfit``, then ``name_nnfit2``, ... An
    input that holds nnfit's spikes of the series already is not rewritten (a second run); a
    new file gets the next free name.

    Examples
    --------
    >>> spikes_series_name("plane0", {"plane0": "suite2p"}, in_place=True, where="a.nwb")
    'plane0_nnfit'
    """
    candidates = [name, f"{name}_nnfit", *(f"{name}_nnfit{k}" for k in range(2, 1000))]
    if in_place:
        ours = [c for c in candidates if existing.get(c, "").startswith(SPIKES_DESCRIPTION)]
        if ours:
            raise ValueError(
                f"{where}: {DECONVOLVED}/{ours[0]} holds nnfit's spikes of {name} from an earlier "
                "run; write into a new file with --write-nwb NEW.nwb"
            )
    return next(c for c in candidates if c not in existing)


#: Containers, or series, holding traces that are not fluorescence to deconvolve (never chosen
#: by default): suite2p's export writes them as containers, NeuroConv as series named so inside
#: ``Fluorescence``.
_NOT_TRACES = (DECONVOLVED, "Neuropil", "Denoised")


def _pynwb():
    try:
        import pynwb
    except ImportError as exc:  # pragma: no cover - pynwb is a runtime dependency
        raise ValueError(f"reading NWB files needs pynwb (pip install pynwb): {exc}") from None
    return pynwb


def list_series(nwbfile: Any) -> dict[str, Any]:
    """``{name: RoiResponseSeries}`` of every series in a ``Fluorescence``/``DfOverF``.

    Names are ``Container/Series`` in the ``ophys`` module and ``module/Container/Series``
    elsewhere.
    """
    from pynwb.ophys import DfOverF, Fluorescence

    found = {}
    for mod_name, module in nwbfile.processing.items():
        for cont_name, container in module.data_interfaces.items():
            if not isinstance(container, Fluorescence | DfOverF):
                continue
            for s_name, series in container.roi_response_series.items():
                prefix = "" if mod_name == "ophys" else f"{mod_name}/"
                found[f"{prefix}{cont_name}/{s_name}"] = series
    return found


def _choose(candidates: dict[str, Any], series: str | None, path: Path) -> tuple[str, Any]:
    listing = ", ".join(sorted(candidates)) or "none"
    if series is not None:
        key = series.strip("/")
        for prefix in ("processing/ophys/", "processing/"):
            if key.startswith(prefix) and key[len(prefix) :] in candidates:
                key = key[len(prefix) :]
        if key not in candidates:
            raise ValueError(
                f"{path}: no RoiResponseSeries {series!r} in a Fluorescence/DfOverF container; "
                f"--series is one of: {listing}"
            )
        return key, candidates[key]
    usable = {
        k: v
        for k, v in candidates.items()
        if not {k.split("/")[-2], k.split("/")[-1]} & set(_NOT_TRACES)
    }
    if len(usable) == 1:
        return next(iter(usable.items()))
    if not usable:
        raise ValueError(
            f"{path}: no RoiResponseSeries in a Fluorescence or DfOverF container of "
            f"/processing (found: {listing}); is this an ophys file?"
        )
    raise ValueError(
        f"{path} holds {len(usable)} fluorescence series; choose one with --series: "
        + ", ".join(sorted(usable))
    )


def _rate(series: Any, where: str, fs: float | None, fs_label: str) -> tuple[float, str]:
    if series.rate is not None:
        rate = series.rate
        if not (isinstance(rate, int | float | np.number) and math.isfinite(rate) and rate > 0):
            shown = f"{float(rate):g}" if isinstance(rate, int | float | np.number) else repr(rate)
            raise ValueError(
                f"{where}/starting_time: rate = {shown} Hz; an imaging rate must be a positive "
                "number (fix the file)"
            )
        found, how = float(rate), "rate"
    elif series.timestamps is not None:
        ts = np.asarray(series.timestamps[:], dtype=np.float64)
        found, how = rate_from_timestamps(ts, f"{where}/timestamps"), "timestamps"
    else:
        raise ValueError(f"{where}: neither rate nor timestamps; the file is not valid NWB")
    if fs is not None:
        given = check_real(fs_label, fs, low=0.0, low_inclusive=False)
        tol = 1e-9 if how == "rate" else FS_TOLERANCE
        if not math.isclose(given, found, rel_tol=tol):
            raise ValueError(
                f"{fs_label} = {given:g} Hz contradicts the sampling rate {found:g} Hz of {where} "
                f"(from its {how}); drop {fs_label} or fix the file"
            )
    return found, how


def _scaling(series: Any, where: str) -> tuple[float, float]:
    """``(conversion, offset)`` of a series: its values in ``unit`` are ``data * conversion +
    offset`` (raw counts stored as integers, DANDI's ADC data)."""
    conversion = float(series.conversion)
    offset = float(series.offset)
    if not (math.isfinite(conversion) and conversion != 0 and math.isfinite(offset)):
        raise ValueError(
            f"{where}/data: conversion = {conversion:g}, offset = {offset:g}; the values in "
            f"{series.unit} (data * conversion + offset) need a finite, non-zero conversion and "
            "a finite offset (fix the file)"
        )
    return conversion, offset


def _unreadable(path: Path, exc: Exception) -> ValueError:
    """One line for pynwb's failure to open or build a file.

    hdmf's ``ConstructError`` names the group it could not build; its text would be a dump of
    the whole builder.
    """
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) == 2 and hasattr(args[0], "path"):
        inside = "/" + str(args[0].path).removeprefix("root").lstrip("/")
        return ValueError(f"{path}: {inside}: {args[1]}")
    text = (str(exc).splitlines() or [""])[0][:300]
    return ValueError(f"{path}: not a readable NWB file ({type(exc).__name__}: {text})")


def read_nwb(
    path: str | os.PathLike[str],
    series: str | None = None,
    fs: float | None = None,
    *,
    fs_label: str = "fs",
    lazy: bool = True,
) -> Recording:
    """Read a ``RoiResponseSeries`` of an NWB file as a :class:`Recording`.

    Parameters
    ----------
    path : path-like
        The ``.nwb`` (HDF5) file.
    series : str, optional
        ``Container/Series`` (see :func:`list_series`); optional when the file holds one
        fluorescence series (``Deconvolved`` and ``Neuropil`` containers, and series so named
        or named ``Denoised``, are not counted).
    fs : float, optional
        Sampling rate in Hz; must agree with the file's (``rate``, or the timestamps' to
        within :data:`FS_TOLERANCE`).
    fs_label : str
        Name of ``fs`` in error messages.
    lazy : bool
        Stream the data (``Recording.traces`` is ``None``; rows are read on demand from
        ``Recording.dataset``) instead of loading it. A lazy read checks values block by block
        as they are read.

    Returns
    -------
    Recording
        ``cell_index``: the ROI table rows of the columns; ``roi_ids``: their ``id``;
        ``provenance``: ``input_sha256``, ``series``, ``series_path``, ``rate_from``,
        ``roi_table``, ``identifier`` (and ``conversion``, ``offset`` of scaled data).

    Raises
    ------
    ValueError
        One line naming the file and the path inside it: no such series (the candidates are
        listed), several and none chosen, rate 0, NaN or uneven timestamps, data that are not
        ``(frames, ROIs)`` numbers, a ROI region that does not match the columns, data stored
        in another file (external link), a ``conversion`` of 0, data compressed with a filter
        HDF5 lacks.
    """
    pynwb = _pynwb()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input not found: {p}")
    try:
        io = pynwb.NWBHDF5IO(str(p), "r")
    except Exception as exc:  # h5py and hdmf raise many types for a file that is not NWB
        raise _unreadable(p, exc) from None
    with io, warnings.catch_warnings(record=True) as caught:
        # pynwb warns about what it finds odd while reading (rate 0, transposed data); the
        # checks below turn what matters into errors, the rest goes to the log.
        warnings.simplefilter("always")
        try:
            nwbfile = io.read()
        except Exception as exc:
            raise _unreadable(p, exc) from None
        name, obj = _choose(list_series(nwbfile), series, p)
        module = name.split("/")[0] if name.count("/") == 2 else "ophys"
        where = f"/processing/{module}/{'/'.join(name.split('/')[-2:])}"
        at = f"{p}: {where}"  # errors name the file and the path inside it
        data = obj.data
        import h5py

        if not isinstance(data, h5py.Dataset):
            raise ValueError(f"{at}/data: not an HDF5 dataset ({type(data).__name__})")
        if Path(data.file.filename).resolve() != p.resolve():
            raise ValueError(
                f"{at}/data is an external link into {data.file.filename}; read that file "
                "instead (links out of an input are not followed)"
            )
        if data.dtype.kind not in "fiu":
            raise ValueError(f"{at}/data: expected numbers; got dtype {data.dtype}")
        check_filters(data, f"{at}/data")
        if data.ndim not in (1, 2) or data.shape[0] < 2 or (data.ndim == 2 and data.shape[1] < 1):
            raise ValueError(
                f"{at}/data: expected (frames, ROIs) with at least 2 frames; got shape {data.shape}"
            )
        n_cols = 1 if data.ndim == 1 else int(data.shape[1])
        rows = np.asarray(obj.rois.data[:], dtype=np.int64)
        table = obj.rois.table
        n_table = len(table)
        if rows.shape != (n_cols,):
            raise ValueError(
                f"{at}/rois: the ROI region lists {rows.size} ROI(s) but data has {n_cols} "
                "column(s); they must match"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n_table):
            raise ValueError(f"{at}/rois: row {rows.max()} outside the ROI table ({n_table} rows)")
        roi_ids = np.asarray(table.id[:], dtype=np.int64)[rows]
        rate, how = _rate(obj, at, fs, fs_label)
        conversion, offset = _scaling(obj, at)
        dataset = data.name
        traces = None
        scaled = (conversion, offset) != (1.0, 0.0)
        if not lazy or data.ndim == 1 or scaled:
            raw = np.asarray(data[:]).reshape(data.shape[0], -1)
            if scaled:
                raw = raw * conversion + offset
            traces = np.ascontiguousarray(as_float_array(f"{where}/data in {p}", raw, ndim=(2,)).T)
        provenance = {
            "input_sha256": file_sha256(p),
            "series": name,
            "series_path": where,
            "rate_from": how,
            "roi_table": table.name,
            "identifier": nwbfile.identifier,
            **({"conversion": conversion, "offset": offset} if scaled else {}),
        }
    for w in caught:
        logger.info("pynwb reading %s: %s", p, w.message)
    logger.info("NWB %s: %s, %d ROIs, %g Hz (from %s)", p, where, n_cols, rate, how)
    return Recording(
        traces,
        rate,
        "nwb",
        p,
        rows,
        roi_ids=roi_ids,
        dataset=None if traces is not None else dataset,
        provenance=provenance,
    )


def columns_from_npy(npy: str | os.PathLike[str], dtype: str = "<f8") -> Any:
    """An hdmf chunk iterator writing a ``(cells, T)`` ``.npy`` as a ``(T, cells)`` dataset.

    NWB keeps traces as (frames, ROIs); this reads blocks of rows of the ``.npy`` (plain file
    reads, see :func:`nnfit.calcium.pipeline.read_rows`) and hands them over transposed, in
    chunks of whole ROI traces (about 2 MB) and buffers of about 64 MB, so the array is never
    in memory whole. Wrap it in ``H5DataIO`` to compress.
    """
    from hdmf.data_utils import GenericDataChunkIterator

    from nnfit.calcium.pipeline import open_traces, read_rows

    path = Path(npy)
    n_cells, T = open_traces(path).shape
    out = np.dtype(dtype)
    per_chunk = max(1, min(n_cells, (2 << 20) // (out.itemsize * T)))
    per_buffer = min(n_cells, per_chunk * max(1, (64 << 20) // (out.itemsize * T * per_chunk)))

    class _Columns(GenericDataChunkIterator):
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            t, c = selection
            rows = read_rows(path, c.start or 0, n_cells if c.stop is None else c.stop)
            return np.ascontiguousarray(rows[:, t].T, dtype=out)

        def _get_maxshape(self) -> tuple[int, int]:
            return (T, n_cells)

        def _get_dtype(self) -> np.dtype:
            return out

    return _Columns(buffer_shape=(T, per_buffer), chunk_shape=(T, per_chunk))


#: Seconds within which timestamps on an even grid are stored as ``rate`` (nwbinspector's
#: ``check_regular_timestamps`` compares intervals to 9 decimals).
REGULAR_TIMESTAMPS = 1e-9


def _timing(src: Any) -> dict[str, Any]:
    """The timing arguments of a series sampled as ``src``.

    The source's ``rate`` and ``starting_time``; for timestamps, a link to them, unless every
    one lies within :data:`REGULAR_TIMESTAMPS` of an even grid: then ``rate`` and
    ``starting_time`` say the same in two numbers, as NWB's best practice asks.
    """
    if src.rate is not None:
        return {"rate": float(src.rate), "starting_time": float(src.starting_time or 0.0)}
    ts = np.asarray(src.timestamps[:], dtype=np.float64)
    rate = (ts.size - 1) / (ts[-1] - ts[0])
    if np.max(np.abs(ts - (ts[0] + np.arange(ts.size) / rate))) <= REGULAR_TIMESTAMPS:
        return {"rate": float(rate), "starting_time": float(ts[0])}
    return {"timestamps": src}


def _add_spikes(
    nwbfile: Any,
    rec_series: str | None,
    spikes_npy: Path,
    run: dict[str, Any],
    where: Path,
    in_place: bool,
) -> str:
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    key, src = _choose(list_series(nwbfile), rec_series, where)
    module_name = key.split("/")[0] if key.count("/") == 2 else "ophys"
    module = nwbfile.processing[module_name]
    n_cols = 1 if src.data.ndim == 1 else int(src.data.shape[1])
    T = int(src.data.shape[0])
    shape = np.load(spikes_npy, mmap_mode="r").shape
    if tuple(shape) != (n_cols, T):
        raise ValueError(f"{spikes_npy} holds {shape}; {where} series {key} needs {(n_cols, T)}")
    container = module.data_interfaces.get(DECONVOLVED)
    existing = {} if container is None else container.roi_response_series
    name = spikes_series_name(
        src.name,
        {k: str(v.description) for k, v in existing.items()},
        in_place=in_place,
        where=where,
    )
    if container is None:
        container = Fluorescence(name=DECONVOLVED)
        module.add(container)
    timing = _timing(src)
    with warnings.catch_warnings():
        # hdmf checks, as each new object gets its parent, that the region's table shares an
        # ancestor with it; the table was read from the file, so the check cannot see that.
        warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion")
        region = src.rois.table.create_region(
            name="rois",
            region=[int(i) for i in src.rois.data[:]],
            description=f"the ROIs of {key}",
        )
        series = RoiResponseSeries(
            name=name,
            data=H5DataIO(columns_from_npy(spikes_npy), compression="gzip", compression_opts=4),
            rois=region,
            unit=src.unit,
            description=(
                f"{SPIKES_DESCRIPTION} {key} by nnfit (trace = kernel * spikes + baseline, in "
                "the units of the source); settings in comments (JSON)"
            ),
            comments=json.dumps(run, sort_keys=True, allow_nan=False, default=str),
            **timing,
        )
        container.add_roi_response_series(series)
    return f"/processing/{module_name}/{DECONVOLVED}/{name}"


def _rebase_external_files(path: Path, old_dir: Path, new_dir: Path) -> None:
    """Keep the relative ``external_file`` paths of a file moved from ``old_dir`` to ``new_dir``.

    An ``ImageSeries`` (suite2p's ``TwoPhotonSeries`` of the raw movie) may keep its frames in
    files named relative to the NWB file; a copy of the file written elsewhere must name the
    same files from its own folder. Absolute paths and URLs are kept as they are.
    """
    if old_dir == new_dir:
        return
    import h5py

    found: list[str] = []
    with h5py.File(path, "r+") as f:
        f.visititems(
            lambda name, obj: (
                found.append(name)
                if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == "external_file"
                else None
            )
        )
        for name in found:
            files = [str(x) for x in f[name].asstr()[...].ravel()]
            moved = [
                x
                if not x or os.path.isabs(x) or "://" in x
                else os.path.relpath(old_dir / x, new_dir)
                for x in files
            ]
            if moved != files:
                f[name][...] = np.array(moved, dtype=object).reshape(f[name].shape)


def write_nwb(
    source: str | os.PathLike[str],
    series: str | None,
    spikes_npy: str | os.PathLike[str],
    run: dict[str, Any],
    *,
    dest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> tuple[Path, str]:
    """Write spikes next to the traces they came from, in NWB.

    Parameters
    ----------
    source : path-like
        The NWB file the traces were read from.
    series : str, optional
        The series deconvolved (as for :func:`read_nwb`).
    spikes_npy : path-like
        ``(ROIs, frames)`` spikes (``spikes.npy`` of a deconvolve run), copied into the file a
        block of ROIs at a time (gzip-compressed, chunks of whole ROI traces).
    run : dict
        The run record stored as the series' ``comments`` (JSON).
    dest : path-like, optional
        ``None``: rewrite ``source`` atomically (a full copy with the new series replaces it).
        A path: a new, self-contained file: ``source``'s contents and the new series.
    overwrite : bool
        Replace an existing ``dest``.

    Returns
    -------
    (Path, str)
        The file written and the path of the new series inside it.
    """
    pynwb = _pynwb()
    src_path = Path(source).resolve()
    spikes_npy = Path(spikes_npy)
    if dest is None:
        target = src_path
    else:
        target = Path(dest).resolve()
        if target == src_path:
            raise ValueError(
                f"--write-nwb {dest} is the input; pass --write-nwb without a file name to add "
                "the spikes to the input"
            )
        if target.exists() and not overwrite:
            raise ValueError(f"{target} exists; pass --overwrite to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".nwb") as tmp:
        if dest is None:
            shutil.copyfile(src_path, tmp)
            with pynwb.NWBHDF5IO(str(tmp), "a") as io:
                nwbfile = io.read()
                inside = _add_spikes(nwbfile, series, spikes_npy, run, src_path, True)
                io.write(nwbfile)
        else:
            with pynwb.NWBHDF5IO(str(src_path), "r") as src_io:
                nwbfile = src_io.read()
                inside = _add_spikes(nwbfile, series, spikes_npy, run, src_path, False)
                nwbfile.set_modified()
                with pynwb.NWBHDF5IO(str(tmp), "w") as out_io:
                    out_io.export(src_io=src_io, nwbfile=nwbfile, write_args={"link_data": False})
            _rebase_external_files(tmp, src_path.parent, target.parent)
    logger.info("wrote %s into %s", inside, target)
    return target, inside
