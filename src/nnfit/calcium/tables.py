"""Text tables of traces (``.csv``, ``.tsv``, ``.txt``): one row per frame, one column per cell.

Inscopix IDPS cell-trace export
    The layout of isxcore's ``writeTraces`` (``isxExport.cpp``, inscopix/isxcore): a first row
    holding a blank and the cell names (`` , C00, C01, ...``), a second row
    ``Time(s)/Cell Status, accepted, rejected, undecided, ...``, then one row per frame: the
    time in seconds, then each cell's value, fields separated by ``", "``. The cells marked
    ``accepted`` are read (``series`` selects other statuses); the sampling rate comes from the
    time column.
Plain tables
    An optional header row (a first row holding anything but numbers is one), an optional time
    column, recognised by its header only (``time``, ``t``, ``Time (s)``, ``timestamps``,
    ...), and every other column a cell.

Fields are split with :mod:`csv` (commas in ``.csv``, tabs in ``.tsv``; a ``.txt`` is split on
tabs or commas when its first line holds one, else on whitespace). The sampling rate from a
time column follows the rules the NWB reader applies to timestamps
(:func:`~nnfit.calcium.recording.rate_from_timestamps`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np

from nnfit.calcium.recording import Recording, rate_from_timestamps, resolve_fs
from nnfit.io import file_sha256

__all__ = ["IDPS_STATUSES", "read_table"]

logger = logging.getLogger(__name__)

#: The cell statuses of an IDPS export, in the order ``--series all`` lists them.
IDPS_STATUSES = ("accepted", "undecided", "rejected")
_IDPS_STATUS_ROW = "time(s)/cell status"
_TIME_HEADER = re.compile(r"(time|t|times|timestamps?)\s*(\(s\)|\[s\]|_s)?", re.IGNORECASE)


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, stripped fields)`` of every non-blank row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text table ({exc})") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    if delimiter is None:
        delimiter = "\t" if "\t" in first else "," if "," in first else None
    if delimiter is None:
        rows = ((n, line.split()) for n, line in enumerate(lines, 1))
    else:
        reader = csv.reader(lines, delimiter=delimiter)
        rows = ((reader.line_num, [f.strip() for f in fields]) for fields in reader)
    return [(n, fields) for n, fields in rows if any(fields)]


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _values(
    path: Path, rows: list[tuple[int, list[str]]], names: list[str], columns: list[int]
) -> np.ndarray:
    """``(frames, len(columns))`` float64 of the given columns, every value a finite number."""
    width = len(names)
    for line, fields in rows:
        if len(fields) != width:
            raise ValueError(
                f"{path}: row {line} has {len(fields)} field(s), the table {width}; every row "
                "needs a value for every column"
            )
    text = np.array([fields for _, fields in rows], dtype=str)[:, columns]
    try:
        values = text.astype(np.float64)
    except ValueError:
        i, k = next(
            (i, k) for i, row in enumerate(text) for k, f in enumerate(row) if not _is_number(f)
        )
        j = columns[k]
        shown = f"{str(text[i, k])!r} is not a number" if text[i, k] else "the value is missing"
        raise ValueError(
            f"{path}: row {rows[i][0]}, column {j + 1} ({names[j]!r}): {shown}"
        ) from None
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        i, k = (int(v) for v in bad[0])
        j = columns[k]
        raise ValueError(
            f"{path}: row {rows[i][0]}, column {j + 1} ({names[j]!r}) is {text[i, k]} "
            f"({len(bad)} NaN/Inf value(s)); clean or interpolate them first"
        )
    return values


def _statuses(series: str | None, path: Path) -> tuple[str, ...]:
    if series is None:
        return ("accepted",)
    chosen = tuple(s.strip().lower() for s in series.split(","))
    if chosen == ("all",):
        return IDPS_STATUSES
    unknown = [s for s in chosen if s not in IDPS_STATUSES]
    if unknown:
        raise ValueError(
            f"{path} is an IDPS cell-trace export: --series lists cell statuses "
            f"({', '.join(IDPS_STATUSES)}, comma-separated) or is 'all'; got {series!r}"
        )
    return chosen


def read_table(
    path: str | os.PathLike[str],
    series: str | None = None,
    fs: float | None = None,
    *,
    fs_label: str = "fs",
) -> Recording:
    """Read a table of traces (frames as rows) as a :class:`Recording`.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.tsv`` or ``.txt`` file: an Inscopix IDPS cell-trace export or a plain
        table (see the module notes).
    series : str, optional
        IDPS exports only: the cell statuses to read, comma-separated (``accepted``,
        ``undecided``, ``rejected``) or ``all``; default ``accepted``.
    fs : float, optional
        Sampling rate in Hz; needed without a time column, and within
        :data:`~nnfit.calcium.recording.FS_TOLERANCE` of the time column's rate with one.
    fs_label : str
        Name of ``fs`` in error messages.

    Returns
    -------
    Recording
        ``(cells, frames)``; ``cell_index``: each cell's position among the table's cell
        columns; ``roi_ids``: their names (``C00``, ... or ``column 3``); ``provenance``:
        ``input_sha256``, ``layout`` (``inscopix`` or ``table``), ``series``, ``columns``
        read, ``time_column``, ``fs_from`` and, for IDPS, the cells ``dropped`` with their
        status.

    Raises
    ------
    ValueError
        One line naming the file, the row (its line number) and the column: a field that is
        not a number, a missing value, NaN/Inf, a row with more or fewer fields, a time column
        that does not increase evenly, no cell with the statuses chosen.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rec.csv"
    >>> _ = p.write_text("time,cell1,cell2\\n0,1,2\\n0.1,1,3\\n0.2,2,2\\n")
    >>> rec = read_table(p)
    >>> rec.traces.tolist(), rec.fs, rec.provenance["time_column"]
    ([[1.0, 1.0, 2.0], [2.0, 3.0, 2.0]], 10.0, 'time')
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input not found: {p}")
    rows = _rows(p)
    if not rows:
        raise ValueError(f"{p}: empty table; expected one row per frame, one column per cell")
    idps = len(rows) > 1 and rows[1][1] and rows[1][1][0].lower() == _IDPS_STATUS_ROW
    header = idps or not all(_is_number(f) for f in rows[0][1])
    width = len(rows[0][1])
    names = list(rows[0][1]) if header else [f"column {j + 1}" for j in range(width)]
    if idps:
        names[0] = rows[1][1][0]  # the time column's header is the status row's first field
    data = rows[2:] if idps else rows[1:] if header else rows
    if not data:
        raise ValueError(f"{p}: a header but no rows of values")
    if idps:
        time_col: int | None = 0
        cell_cols = list(range(1, width))
        status = [s.lower() for s in rows[1][1][1:]]
        if len(status) != len(cell_cols):
            raise ValueError(
                f"{p}: row {rows[1][0]} gives {len(status)} cell status(es) for "
                f"{len(cell_cols)} cell(s) in row {rows[0][0]}"
            )
        wanted = _statuses(series, p)
        keep = [k for k, s in enumerate(status) if s in wanted]
        dropped = {names[c]: status[k] for k, c in enumerate(cell_cols) if status[k] not in wanted}
        if not keep:
            counts = ", ".join(f"{status.count(s)} {s}" for s in sorted(set(status)))
            raise ValueError(
                f"{p}: no cell is {' or '.join(wanted)} ({counts}); choose the statuses to read "
                "with --series, e.g. --series accepted,undecided (or all)"
            )
    else:
        if series is not None:
            raise ValueError(
                f"--series selects the cell statuses of an IDPS export; {p} has no "
                "'Time(s)/Cell Status' row (every column but a time column is read)"
            )
        timed = [j for j, n in enumerate(names) if header and _TIME_HEADER.fullmatch(n)]
        if len(timed) > 1:
            raise ValueError(
                f"{p}: columns {', '.join(repr(names[j]) for j in timed)} all look like time; "
                "keep one time column"
            )
        time_col = timed[0] if timed else None
        cell_cols = [j for j in range(width) if j != time_col]
        keep, wanted, dropped = list(range(len(cell_cols))), (), {}
        if not cell_cols:
            raise ValueError(f"{p}: a time column and no cell column")
    used = [cell_cols[k] for k in keep]
    values = _values(p, data, names, ([time_col] if time_col is not None else []) + used)
    found = None
    if time_col is not None:
        where = f"{p}: column {time_col + 1} ({names[time_col]!r})"
        found = rate_from_timestamps(values[:, 0], where, fs, fs_label)
        values = values[:, 1:]
    fs_ = resolve_fs(found, None if found is not None else fs, str(p), fs_label)
    traces = np.ascontiguousarray(values.T)
    provenance = {
        "input_sha256": file_sha256(p),
        "layout": "inscopix" if idps else "table",
        "series": ",".join(wanted) if idps else None,
        "columns": [names[j] for j in used],
        "time_column": names[time_col] if time_col is not None else None,
        "fs_from": "time column" if found is not None else None,
        "dropped": dropped,
    }
    if dropped:
        listed = ", ".join(f"{n} ({s})" for n, s in dropped.items())
        marked = " or ".join(wanted)
        logger.warning("%s: read %d cell(s) marked %s; dropped %s", p, len(used), marked, listed)
    logger.info("table %s: %d cell(s) x %d frames at %g Hz", p, *traces.shape, fs_)
    return Recording(
        traces,
        fs_,
        "table",
        p,
        np.asarray(keep, dtype=np.int64),
        roi_ids=np.asarray([names[j] for j in used]),
        provenance=provenance,
    )
