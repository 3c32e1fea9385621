"""Text tables of traces (calcium/tables.py): Inscopix IDPS exports and plain columns."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from nnfit.calcium import simulate_recording
from nnfit.calcium.recordings import read_input
from nnfit.cli import main

KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5", "--plot-cells", "0"]
FS = 20.0


@pytest.fixture
def traces():
    return simulate_recording(3, 500, fs=FS, seed=9).traces


def write_idps(path, traces, statuses, *, fs=FS, t0=0.0):
    """As isxcore's writeTraces: ' , C00, ...', the status row, then time and values, ', '."""
    names = [f"C{k:02d}" for k in range(len(statuses))]
    lines = [" , " + ", ".join(names), "Time(s)/Cell Status, " + ", ".join(statuses)]
    for i, row in enumerate(traces.T):
        t = t0 + i / fs
        lines.append(", ".join([f"{t:.17g}", *(f"{v:.8g}" for v in row)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_idps_accepted_cells_fs_from_time(tmp_path, traces, caplog):
    p = write_idps(tmp_path / "cells.csv", traces, ["accepted", "rejected", "accepted"])
    with caplog.at_level(logging.WARNING):
        rec = read_input(p)
    assert "dropped C01 (rejected)" in caplog.text
    assert rec.kind == "table" and rec.fs == pytest.approx(FS, rel=1e-12)
    np.testing.assert_allclose(rec.traces, traces[[0, 2]], rtol=1e-7)
    assert rec.cell_index.tolist() == [0, 2] and rec.roi_ids.tolist() == ["C00", "C02"]
    prov = rec.provenance
    assert prov["layout"] == "inscopix" and prov["dropped"] == {"C01": "rejected"}
    assert prov["columns"] == ["C00", "C02"] and prov["time_column"] == "Time(s)/Cell Status"
    assert read_input(p, series="all").shape == (3, 500)
    with pytest.raises(ValueError, match="contradicts the sampling rate 20 Hz of the timestamps"):
        read_input(p, fs=30, fs_label="--fs")


def test_idps_unreviewed_export_names_the_statuses(tmp_path, traces):
    p = write_idps(tmp_path / "cells.csv", traces, ["undecided"] * 3, t0=1.7e9)
    with pytest.raises(ValueError, match=r"no cell is accepted \(3 undecided\); .*--series"):
        read_input(p)
    assert read_input(p, series="accepted,undecided").shape == (3, 500)
    with pytest.raises(ValueError, match="--series lists cell statuses"):
        read_input(p, series="good")


def test_plain_tables(tmp_path, traces):
    t = np.arange(traces.shape[1]) / FS
    np.savetxt(tmp_path / "a.csv", np.c_[t, traces.T], delimiter=",", header="Time (s),x,y,z")
    (tmp_path / "a.csv").write_text((tmp_path / "a.csv").read_text().removeprefix("# "))
    rec = read_input(tmp_path / "a.csv")
    np.testing.assert_array_equal(rec.traces, traces)
    assert rec.fs == pytest.approx(FS) and rec.provenance["time_column"] == "Time (s)"
    np.savetxt(tmp_path / "b.tsv", traces.T, delimiter="\t")
    np.savetxt(tmp_path / "c.txt", traces.T)
    for name in ("b.tsv", "c.txt"):
        np.testing.assert_array_equal(read_input(tmp_path / name, fs=FS).traces, traces)
        with pytest.raises(ValueError, match="does not record a sampling rate: pass --fs"):
            read_input(tmp_path / name, fs_label="--fs")
    with pytest.raises(ValueError, match="--series selects the cell statuses of an IDPS"):
        read_input(tmp_path / "b.tsv", fs=FS, series="accepted")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0,1,2\n0.1,1,oops\n", "row 3, column 3 ('b'): 'oops' is not a number"),
        ("0,1,2\n0.1,1\n", "row 3 has 2 field(s), the table 3"),
        ("0,1,2\n0.1,nan,2\n", "row 3, column 2 ('a') is nan (1 NaN/Inf value(s))"),
        ("0,1,2\n0.1,,2\n", "row 3, column 2 ('a'): the value is missing"),
        ("0,1,2\n0.1,1,2\n0.3,1,2\n", "column 1 ('time'): sampling is not uniform"),
        ("0,1,2\n0,1,2\n", "column 1 ('time'): timestamps do not increase"),
    ],
)
def test_bad_tables_name_file_row_and_column(tmp_path, body, message):
    p = tmp_path / "bad.csv"
    p.write_text("time,a,b\n" + body)
    with pytest.raises(ValueError, match="^" + str(p).replace(".", r"\.")) as info:
        read_input(p)
    assert message in str(info.value)


def test_cli_idps_equals_npy(tmp_path, traces, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_idps(tmp_path / "cells.csv", traces, ["accepted"] * 3)
    np.save("rec.npy", read_input("cells.csv").traces)  # the values as the CSV holds them
    assert main(["calcium", "deconvolve", "cells.csv", *KIN, "--out", "c"]) == 0
    assert main(["calcium", "deconvolve", "rec.npy", "--fs", "20", *KIN, "--out", "n"]) == 0
    np.testing.assert_array_equal(np.load("c/spikes.npy"), np.load("n/spikes.npy"))
    run = json.loads(Path("c/run.json").read_text())
    assert run["input_kind"] == "table" and run["input_provenance"]["layout"] == "inscopix"
    assert main(["calcium", "estimate", "cells.csv", "--max-cells", "2"]) == 0


def test_excel_csv_in_a_decimal_comma_locale(tmp_path, traces):
    # Excel (German, French, ... locale): byte order mark, CRLF, ';' with decimal commas,
    # quoted fields, a ';' ending every line, empty rows at the end
    rows = [
        f"{i / FS:.2f};" + ";".join(f'"{v:.6f}"' for v in row) for i, row in enumerate(traces.T)
    ]
    text = "\r\n".join(["Time (s);cell 1;cell 2;cell 3", *rows]).replace(".", ",")
    p = tmp_path / "excel.csv"
    p.write_bytes(("\ufeff" + text.replace("\r\n", ";\r\n") + ";\r\n;;;;\r\n\r\n").encode())
    rec = read_input(p)
    np.testing.assert_allclose(rec.traces, traces, atol=5e-7)
    assert rec.fs == pytest.approx(FS) and rec.roi_ids.tolist() == ["cell 1", "cell 2", "cell 3"]
    (tmp_path / "sep.csv").write_text("sep=;\n" + text.replace("\r\n", "\n"))
    np.testing.assert_array_equal(read_input(tmp_path / "sep.csv").traces, rec.traces)
    # a headerless one-cell column of decimal commas in a .txt: one cell, not two
    (tmp_path / "one.txt").write_text("sep=;\n1,25\n3,5\n2,0\n")
    assert read_input(tmp_path / "one.txt", fs=FS).traces.tolist() == [[1.25, 3.5, 2.0]]


def test_index_frame_and_millisecond_columns_are_no_cells(tmp_path, traces):
    t = np.arange(traces.shape[1]) / FS
    body = [",".join(f"{v:.17g}" for v in row) for row in traces.T]
    pandas = [",cell0,cell1,cell2", *(f"{i},{r}" for i, r in enumerate(body))]  # df.to_csv()
    (tmp_path / "pandas.csv").write_text("\n".join(pandas) + "\n")
    rec = read_input(tmp_path / "pandas.csv", fs=FS)
    np.testing.assert_array_equal(rec.traces, traces)
    assert rec.roi_ids.tolist() == ["cell0", "cell1", "cell2"]
    assert rec.provenance["frame_columns"] == [""]
    ms = ["frame,Time (ms),a,b,c", *(f"{i + 1},{1e3 * t[i]:.6f},{r}" for i, r in enumerate(body))]
    (tmp_path / "ms.csv").write_text("\n".join(ms) + "\n")
    rec = read_input(tmp_path / "ms.csv")
    np.testing.assert_array_equal(rec.traces, traces)
    assert rec.fs == pytest.approx(FS) and rec.provenance["time_column"] == "Time (ms)"
    del ms[10]  # a frame missing
    (tmp_path / "gap.csv").write_text("\n".join(ms) + "\n")
    with pytest.raises(ValueError, match=r"column 1 \('frame'\) is read as frame numbers, and "):
        read_input(tmp_path / "gap.csv")


def test_excel_encodings(tmp_path):
    text = "time,\u00b5F cell\n0,1\n0.1,2\n0.2,3\n"
    (tmp_path / "ansi.csv").write_bytes(text.encode("cp1252"))  # Excel's "CSV (comma delimited)"
    (tmp_path / "unicode.txt").write_bytes(text.replace(",", "\t").encode("utf-16"))
    for name in ("ansi.csv", "unicode.txt"):
        rec = read_input(tmp_path / name)
        assert rec.traces.tolist() == [[1.0, 2.0, 3.0]] and rec.roi_ids.tolist() == ["\u00b5F cell"]


def test_a_wide_table_is_converted_row_by_row(tmp_path):
    import tracemalloc

    x = np.random.default_rng(0).standard_normal((300, 400))
    np.savetxt(tmp_path / "wide.csv", x, delimiter=",", header=",".join("c" * 400), comments="")
    tracemalloc.start()
    rec = read_input(tmp_path / "wide.csv", fs=FS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(rec.traces, x.T)
    # the float64 values, their transpose and one copy; never every field as text at once
    assert peak < 6 * x.nbytes, peak / x.nbytes


def test_a_comma_in_a_table_whose_decimal_mark_is_a_point_is_refused_not_misread(tmp_path):
    # a tab-separated export with English thousands separators: "1,234.5" is no 1.2345
    p = tmp_path / "t.tsv"
    p.write_text("time\tcell\n0.0\t1.5\n0.1\t1,234.5\n0.2\t2.5\n")
    with pytest.raises(ValueError, match=r"row 3, column 2 \('cell'\): '1,234.5' is not a number"):
        read_input(p)
    p.write_text("time\tcell\n0.0\t1.5\n0.1\t1,234\n0.2\t2.5\n")
    with pytest.raises(ValueError, match=r"'1,234' is not a number"):
        read_input(p)


def test_a_time_column_in_ms_headed_time_is_flagged(tmp_path, caplog):
    p = tmp_path / "t.csv"
    p.write_text("time,cell\n" + "".join(f"{i * 33.3:.1f},{i % 3}\n" for i in range(50)))
    rec = read_input(p)
    assert rec.fs == pytest.approx(0.03003, rel=1e-3)
    assert "slower than calcium imaging runs; if its times are in ms, head it" in caplog.text


def test_an_idps_export_of_several_recordings_says_to_export_each(tmp_path, traces):
    a = write_idps(tmp_path / "a.csv", traces[:, :250], ["accepted"] * 3)
    b = write_idps(tmp_path / "b.csv", traces[:, 250:], ["accepted"] * 3, t0=3600.0)
    p = tmp_path / "series.csv"
    p.write_text(a.read_text() + "".join(b.read_text().splitlines(keepends=True)[2:]))
    with pytest.raises(ValueError, match=r"not uniform.*export each recording of the series"):
        read_input(p)
