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

Fields are split with :mod:`csv`: on commas in a ``.csv`` (on semicolons where its first line
holds one, as Excel writes CSV where the decimal mark is a comma; an Excel ``sep=;`` first line
names the separator), on tabs in a ``.tsv``; a ``.txt`` is split on tabs, semicolons or commas
when its first line holds one, else on whitespace. Where the separator is not a comma, a comma
in a value is its decimal mark (``1,25``), unless the first row of values holds a point (then
the point is, and a value with a comma is refused). A separator ending every line (an empty last column)
is ignored. The text is UTF-8 (with or without a byte order mark), UTF-16 with a byte order mark
(Excel's "Unicode text"), or else Windows-1252 (Excel's plain CSV).

A column of frame numbers (headed ``frame``, ``frame number``, ``index``, ..., or unheaded in
first place, as pandas writes its index) is no cell: it must count up by one, and is dropped.
A time column headed in milliseconds (``Time (ms)``, ``time_ms``) is read in seconds. The
sampling rate from a time column follows the rules the NWB reader applies to timestamps
(:func:`~nnfit.calcium.recording.rate_from_timestamps`).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import logging
import operator
import os
import re
from collections.abc import Generator, Iterable
from pathlib import Path

import numpy as np

from nnfit.calcium.recording import Recording, rate_from_timestamps, resolve_fs
from nnfit.io import file_sha256

__all__ = ["IDPS_STATUSES", "read_table"]

logger = logging.getLogger(__name__)

#: The cell statuses of an IDPS export, in the order ``--series all`` lists them.
IDPS_STATUSES = ("accepted", "undecided", "rejected")
_IDPS_STATUS_ROW = "time(s)/cell status"
_TIME_HEADER = re.compile(
    r"(?:time|t|times|timestamps?)\s*(?:[(\[]\s*(?P<unit>s|secs?|seconds|ms|msec|milliseconds)"
    r"\s*[)\]]|_(?P<suffix>s|sec|ms))?",
    re.IGNORECASE,
)
_FRAME_HEADER = re.compile(
    r"frames?|frame[ _]?(?:number|nr|no\.?|index|idx|#)|index|idx|unnamed: 0", re.IGNORECASE
)


def _time_scale(name: str) -> float | None:
    """Seconds per unit of a column headed ``name`` if it is a time column, else ``None``."""
    m = _TIME_HEADER.fullmatch(name)
    if m is None:
        return None
    unit = (m.group("unit") or m.group("suffix") or "s").lower()
    return 1e-3 if unit.startswith("m") else 1.0


def _encoding(path: Path) -> str:
    """UTF-16 with a byte order mark, else UTF-8 if the whole file decodes, else Windows-1252."""
    with open(path, "rb") as fh:
        if fh.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


def _separator(path: Path, encoding: str) -> tuple[str | None, bool]:
    """The field separator (``None``: whitespace) and whether a ``sep=X`` line names it."""
    # a byte the encoding lacks is reported where the rows are read, with its line
    with open(path, newline="", encoding=encoding, errors="replace") as fh:
        first = next((line for line in fh if line.strip()), "").strip("\r\n")
    if re.fullmatch(r"sep=.", first):
        return first[-1], True
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t", False
    if suffix == ".csv":
        return (";" if ";" in first else ","), False
    return next((sep for sep in ("\t", ";", ",") if sep in first), None), False


def _rows(
    path: Path, encoding: str, separator: str | None, skip_first: bool
) -> Generator[tuple[int, list[str]], None, None]:
    """``(line number, stripped fields)`` of every non-blank row, read as the file is."""
    with open(path, newline="", encoding=encoding) as fh:
        if separator is None:
            rows: Iterable[tuple[int, list[str]]] = (
                (n, line.split()) for n, line in enumerate(fh, 1)
            )
        else:
            reader = csv.reader(fh, delimiter=separator)
            rows = ((reader.line_num, [f.strip() for f in fields]) for fields in reader)
        for n, fields in rows:
            if any(fields):
                if skip_first:  # the sep=X line
                    skip_first = False
                    continue
                yield n, fields


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _values(
    path: Path,
    rows: Iterable[tuple[int, list[str]]],
    names: list[str],
    columns: list[int],
    *,
    trailing: bool,
    decimal_comma: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The given columns as finite float64 ``(frames, len(columns))``, and each frame's line.

    Each row is converted as it is read: the text of a large table is never held at once.
    """
    width = len(names)
    pick = None if columns == list(range(width)) else operator.itemgetter(*columns)
    # grown by doubling, and no object kept per row: a narrow table costs its numbers only
    values = np.empty((256, len(columns)))
    lines = np.empty(256, dtype=np.int64)
    n = 0
    for line, fields in rows:
        if trailing and len(fields) == width + 1 and not fields[-1]:
            fields.pop()
        if len(fields) != width:
            raise ValueError(
                f"{path}: row {line} has {len(fields)} field(s), the table {width}; every row "
                "needs a value for every column"
            )
        chosen = fields if pick is None else [pick(fields)] if len(columns) == 1 else pick(fields)
        if decimal_comma:
            chosen = [f.replace(",", ".") for f in chosen]
        if n == len(values):
            values = np.concatenate([values, np.empty_like(values)])
            lines = np.concatenate([lines, np.empty_like(lines)])
        try:
            values[n] = chosen
        except ValueError:
            k = next(k for k, f in enumerate(chosen) if not _is_number(f))
            j = columns[k]
            shown = f"{fields[j]!r} is not a number" if fields[j] else "the value is missing"
            raise ValueError(
                f"{path}: row {line}, column {j + 1} ({names[j]!r}): {shown}"
            ) from None
        lines[n] = line
        n += 1
    values, lines = values[:n], lines[:n]
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        i, k = (int(v) for v in bad[0])
        j = columns[k]
        raise ValueError(
            f"{path}: row {lines[i]}, column {j + 1} ({names[j]!r}) is {values[i, k]} "
            f"({len(bad)} NaN/Inf value(s)); clean or interpolate them first"
        )
    return values, lines


def _check_frame_numbers(
    path: Path, frames: np.ndarray, lines: np.ndarray, column: int, name: str
) -> None:
    """Refuse a frame-number column that does not count up by one (a frame missing, or times)."""
    off = np.flatnonzero(np.diff(frames) != 1)
    if off.size:
        i = int(off[0]) + 1
        raise ValueError(
            f"{path}: column {column + 1} ({name!r}) is read as frame numbers, and they do not "
            f"count up by one (row {lines[i]}: {frames[i]:g} after {frames[i - 1]:g}); if it "
            "holds times, head it as a time column (e.g. 'time (s)'), else remove the column"
        )


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
        read, ``time_column``, ``fs_from``, the ``frame_columns`` dropped and, for IDPS, the
        cells ``dropped`` with their status.

    Raises
    ------
    ValueError
        One line naming the file, the row (its line number) and the column: a field that is
        not a number, a missing value, NaN/Inf, a row with more or fewer fields, a time column
        that does not increase evenly, frame numbers that do not count up by one, no cell with
        the statuses chosen, text in no encoding Excel writes.

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
    encoding = _encoding(p)
    separator, named = _separator(p, encoding)
    rows = _rows(p, encoding, separator, named)
    try:
        first, second = next(rows, None), next(rows, None)
        if first is None:
            raise ValueError(f"{p}: empty table; expected one row per frame, one column per cell")
        decimal_comma = separator != ","
        head = first[1]
        # a separator ending every line makes an empty last field, not a column
        trailing = len(head) > 1 and not head[-1]
        width = len(head) - trailing
        idps = second is not None and bool(second[1]) and second[1][0].lower() == _IDPS_STATUS_ROW
        header = idps or not all(
            _is_number(f.replace(",", ".") if decimal_comma else f) for f in head[:width]
        )
        names = head[:width] if header else [f"column {j + 1}" for j in range(width)]
        ahead = [r for r in ([] if header else [first]) + [second] if r is not None]
        if decimal_comma and ahead and any("." in f for f in ahead[0][1]):
            # a point in the values is their decimal mark: a comma then is no decimal (a
            # thousands separator, "1,234.5"), and such a value is refused, not misread
            decimal_comma = False
        data = itertools.chain([] if idps else ahead, rows)
        index_cols: list[int] = []
        if idps:
            assert second is not None  # idps says so
            names[0] = second[1][0]  # the time column's header is the status row's first field
            time_col: int | None = 0
            scale = 1.0
            cell_cols = list(range(1, width))
            status = [s.lower() for s in second[1][1 : len(second[1]) - trailing]]
            if len(status) != len(cell_cols):
                raise ValueError(
                    f"{p}: row {second[0]} gives {len(status)} cell status(es) for "
                    f"{len(cell_cols)} cell(s) in row {first[0]}"
                )
            wanted = _statuses(series, p)
            keep = [k for k, s in enumerate(status) if s in wanted]
            dropped = {
                names[c]: status[k] for k, c in enumerate(cell_cols) if status[k] not in wanted
            }
            if not keep:
                counts = ", ".join(f"{status.count(s)} {s}" for s in sorted(set(status)))
                raise ValueError(
                    f"{p}: no cell is {' or '.join(wanted)} ({counts}); choose the statuses to "
                    "read with --series, e.g. --series accepted,undecided (or all)"
                )
        else:
            if series is not None:
                raise ValueError(
                    f"--series selects the cell statuses of an IDPS export; {p} has no "
                    "'Time(s)/Cell Status' row (every column but a time column is read)"
                )
            if header:
                index_cols = [
                    j
                    for j, n in enumerate(names)
                    if _FRAME_HEADER.fullmatch(n) or (j == 0 and not n)
                ]
            timed = [
                j
                for j, n in enumerate(names)
                if header and j not in index_cols and _time_scale(n) is not None
            ]
            if len(timed) > 1:
                raise ValueError(
                    f"{p}: columns {', '.join(repr(names[j]) for j in timed)} all look like "
                    "time; keep one time column"
                )
            time_col = timed[0] if timed else None
            scale = (_time_scale(names[time_col]) or 1.0) if time_col is not None else 1.0
            cell_cols = [j for j in range(width) if j != time_col and j not in index_cols]
            keep, wanted, dropped = list(range(len(cell_cols))), (), {}
            if not cell_cols:
                raise ValueError(f"{p}: a time or frame-number column and no cell column")
        used = [cell_cols[k] for k in keep]
        front = ([time_col] if time_col is not None else []) + index_cols
        values, lines = _values(
            p, data, names, front + used, trailing=trailing, decimal_comma=decimal_comma
        )
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(
            f"{p}: not a text table in UTF-8, UTF-16 or Windows-1252 ({exc}); if it is one, "
            "save it as CSV UTF-8"
        ) from None
    finally:
        rows.close()  # an error before the last row leaves the file open otherwise
    if not lines.size:
        raise ValueError(f"{p}: a header but no rows of values")
    for k, j in enumerate(index_cols, len(front) - len(index_cols)):
        _check_frame_numbers(p, values[:, k], lines, j, names[j])
    found = None
    if time_col is not None:
        where = f"{p}: column {time_col + 1} ({names[time_col]!r})"
        try:
            found = rate_from_timestamps(values[:, 0] * scale, where, fs, fs_label)
        except ValueError as exc:
            if not idps or "not uniform" not in str(exc):
                raise
            # IDPS exports a series of recordings (a longitudinal or multi-file cell set) as one
            # table whose times jump between the segments
            raise ValueError(
                f"{exc}; an IDPS export of several recordings holds each one's frames in turn: "
                "export each recording of the series on its own"
            ) from None
        if found < 1.0 and fs is None:
            # frames 33 apart at 30 Hz: a time column in ms read as seconds looks like this
            logger.warning(
                "%s gives %.3g Hz, slower than calcium imaging runs; if its times are in ms, "
                "head it 'time (ms)' (or pass %s)",
                where,
                found,
                fs_label,
            )
    values = values[:, len(front) :]
    fs_ = resolve_fs(found, None if found is not None else fs, str(p), fs_label)
    traces = np.ascontiguousarray(values.T)
    provenance = {
        "input_sha256": file_sha256(p),
        "layout": "inscopix" if idps else "table",
        "series": ",".join(wanted) if idps else None,
        "columns": [names[j] for j in used],
        "time_column": names[time_col] if time_col is not None else None,
        "fs_from": "time column" if found is not None else None,
        "frame_columns": [names[j] for j in index_cols],
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
