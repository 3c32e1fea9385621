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
