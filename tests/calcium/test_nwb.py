"""NWB in and out (calcium/nwb.py): files written and read back by pynwb itself."""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from hdmf.backends.hdf5 import H5DataIO  # noqa: E402
from pynwb.ophys import (  # noqa: E402
    DfOverF,
    Fluorescence,
    ImageSegmentation,
    OpticalChannel,
    RoiResponseSeries,
)

from nnfit.calcium import run_deconvolution, simulate_recording  # noqa: E402
from nnfit.calcium.nwb import list_series, read_nwb, write_nwb  # noqa: E402
from nnfit.calcium.recordings import read_input  # noqa: E402
from nnfit.cli import main  # noqa: E402

FS = 30.0
KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5"]


def make_nwb(
    path,
    traces,
    *,
    fs=FS,
    timestamps=None,
    extra_rois=2,
    rois=None,
    more=False,
    data=None,
    chunks=True,
    deconvolved=False,
    conversion=1.0,
    offset=0.0,
):
    """An ophys NWB file as a pipeline writes it: ROI table, Fluorescence/RoiResponseSeries.

    ``traces`` is (cells, frames); the series keeps it as (frames, cells), float32, gzip
    compressed in chunks. The ROI table has ``extra_rois`` more rows than cells (the series
    refers to rows 1..n, ids 100 + row), as when some ROIs were rejected.
    """
    nwb = pynwb.NWBFile(
        session_description="test",
        identifier="rec-1",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="OpticalChannel", description="green", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        imaging_rate=fs,
        description="L2/3",
        device=device,
        excitation_lambda=920.0,
        indicator="GCaMP6f",
        location="V1",
    )
    module = nwb.create_processing_module(name="ophys", description="optical physiology")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="ROIs", imaging_plane=plane
    )
    n, T = traces.shape
    for i in range(n + extra_rois):
        table.add_roi(pixel_mask=[(i, 0, 1.0)], id=100 + i)
    first = min(1, extra_rois)
    rows = list(range(first, first + n)) if rois is None else rois
    region = table.create_roi_table_region(region=rows, description="cells")
    timing = (
        {"rate": fs, "starting_time": 2.0} if timestamps is None else {"timestamps": timestamps}
    )
    values = np.ascontiguousarray(traces.T.astype(np.float32)) if data is None else data
    if chunks:
        values = H5DataIO(values, compression="gzip", chunks=(min(T, 256), min(n, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb warns about the deliberately bad files
        series = RoiResponseSeries(
            name="RoiResponseSeries",
            data=values,
            rois=region,
            unit="a.u.",
            conversion=conversion,
            offset=offset,
            **timing,
        )
        module.add(Fluorescence(name="Fluorescence", roi_response_series=series))
        if more:
            dff = RoiResponseSeries(
                name="RoiResponseSeries", data=values, rois=region, unit="a.u.", **timing
            )
            module.add(DfOverF(name="DfOverF", roi_response_series=dff))
        if deconvolved:  # another tool's spikes, as suite2p's NWB export writes them
            theirs = RoiResponseSeries(
                name="RoiResponseSeries",
                data=np.zeros((T, n), np.float32),
                rois=region,
                unit="a.u.",
                description="suite2p deconvolution",
                **timing,
            )
            module.add(Fluorescence(name="Deconvolved", roi_response_series=theirs))
        with pynwb.NWBHDF5IO(str(path), "w") as io:
            io.write(nwb)
    return path


@pytest.fixture
def rec():
    return simulate_recording(6, 1500, seed=4)


def _spikes_in(path, name="RoiResponseSeries"):
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        series = io.read().processing["ophys"]["Deconvolved"][name]
        return {
            "spikes": series.data[:].T,
            "rows": series.rois.data[:].tolist(),
            "table": series.rois.table.name,
            "rate": series.rate,
            "starting_time": series.starting_time,
            "timestamps": None if series.timestamps is None else series.timestamps[:],
            "run": json.loads(series.comments),
            "chunks": series.data.chunks,
            "compression": series.data.compression,
        }


@pytest.mark.parametrize("timing", ["rate", "timestamps"])
def test_read_rate_or_timestamps_rows_and_ids(tmp_path, rec, timing):
    ts = 7.0 + np.arange(rec.traces.shape[1]) / FS if timing == "timestamps" else None
    path = make_nwb(tmp_path / "rec.nwb", rec.traces, timestamps=ts)
    r = read_nwb(path)
    assert r.kind == "nwb" and r.traces is None and r.shape == (6, 1500)
    assert r.fs == pytest.approx(FS, rel=1e-12)
    assert r.cell_index.tolist() == [1, 2, 3, 4, 5, 6]
    assert r.roi_ids.tolist() == [101, 102, 103, 104, 105, 106]
    assert r.provenance["rate_from"] == timing and r.provenance["input_sha256"].startswith(
        "sha256:"
    )
    expected = rec.traces.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(r.read_rows(2, 5), expected[2:5])
    np.testing.assert_array_equal(r.take(np.array([0, 4])), expected[[0, 4]])
    np.testing.assert_array_equal(read_nwb(path, lazy=False).traces, expected)
    assert read_input(path, series="Fluorescence/RoiResponseSeries").fs == pytest.approx(FS)


@pytest.mark.slow
def test_lazy_read_streams_blocks_of_a_large_series(tmp_path):
    """A 10,000-ROI series is read a block of ROIs at a time, never whole."""
    import tracemalloc

    n, T = 10_000, 200
    traces = np.random.default_rng(0).standard_normal((n, T)).astype(np.float32)
    path = make_nwb(tmp_path / "big.nwb", traces, extra_rois=0)
    r = read_nwb(path)
    tracemalloc.start()
    block = r.read_rows(5000, 5256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(block, traces[5000:5256].astype(np.float64))
    assert peak < 0.1 * n * T * 8, peak  # the whole series as float64 would be 16 MB


@pytest.mark.slow
@pytest.mark.parametrize("timing", ["rate", "timestamps"])
def test_deconvolve_round_trip_equals_npy_path(run_cli, tmp_path, rec, timing):
    ts = 7.0 + np.arange(rec.traces.shape[1]) / FS if timing == "timestamps" else None
    make_nwb(tmp_path / "rec.nwb", rec.traces, timestamps=ts)
    np.save(tmp_path / "rec.npy", rec.traces.astype(np.float32))
    common = [
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--lam",
        "0.3",
        "--baseline",
        "constant",
        "--block-cells",
        "4",
        "--plot-cells",
        "1",
        "--no-progress",
    ]
    # fs from timestamps is 1 / median interval: 30 Hz to 1e-12, not bit for bit; the .npy
    # path gets the same number so that the spikes can be compared exactly
    fs = read_nwb(tmp_path / "rec.nwb").fs
    assert fs == pytest.approx(FS, rel=1e-12)
    run_cli("calcium", "deconvolve", "rec.npy", "--fs", repr(fs), *common, "--out", "a", check=True)
    proc = run_cli(
        "calcium",
        "deconvolve",
        "rec.nwb",
        "--series",
        "Fluorescence/RoiResponseSeries",
        *common,
        "--out",
        "b",
        "--write-nwb",
        check=True,
    )
    assert "written back" in proc.stdout
    ref = np.load(tmp_path / "a" / "spikes.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "spikes.npy"), ref)
    got = _spikes_in(tmp_path / "rec.nwb")
    np.testing.assert_array_equal(got["spikes"], ref)
    assert got["rows"] == [1, 2, 3, 4, 5, 6] and got["table"] == "PlaneSegmentation"
    # summary.csv of the streamed run names each cell's ROI table row, as the spikes' region does
    lines = (tmp_path / "b" / "summary.csv").read_text().splitlines()[1:]
    source = [int(line.split(",")[1]) for line in lines]
    assert source == got["rows"]
    if timing == "rate":
        assert got["rate"] == FS and got["starting_time"] == 2.0
    else:  # timestamps on an even grid: the same timing as rate and starting time
        assert got["timestamps"] is None and got["starting_time"] == 7.0
        assert got["rate"] == pytest.approx(FS, rel=1e-12)
    assert got["compression"] == "gzip" and got["chunks"][0] == rec.traces.shape[1]
    assert got["run"]["tau_decay"] == 0.5 and got["run"]["input_sha256"].startswith("sha256:")
    assert got["run"]["input_provenance"]["series"] == "Fluorescence/RoiResponseSeries"
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["input_kind"] == "nwb" and run["written_back"]
    # the original traces are still there, untouched, beside the spikes
    assert read_nwb(tmp_path / "rec.nwb").read_rows(0, 6).shape == (6, 1500)
    assert not list(tmp_path.glob(".rec.nwb.*"))  # no temporary file left


@pytest.mark.slow
def test_write_into_a_new_file_and_fista_path(tmp_path, rec, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_nwb(tmp_path / "rec.nwb", rec.traces)
    before = (tmp_path / "rec.nwb").read_bytes()
    args = ["calcium", "deconvolve", "rec.nwb", *KIN, "--out", "f", "--plot-cells", "0"]
    assert main([*args, "--write-nwb", "new.nwb"]) == 0
    assert (tmp_path / "rec.nwb").read_bytes() == before  # the input is not touched
    ref = run_deconvolution(rec.traces.astype(np.float32).astype(float), FS, 0.05, 0.5, 0.5)
    got = _spikes_in(tmp_path / "new.nwb")
    np.testing.assert_array_equal(got["spikes"], ref)
    assert got["run"]["solver"] == "fista"
    # the new file is self-contained: the traces are in it, not linked
    with pynwb.NWBHDF5IO(str(tmp_path / "new.nwb"), "r") as io:
        data = io.read().processing["ophys"]["Fluorescence"]["RoiResponseSeries"].data
        assert data.file.filename.endswith("new.nwb") and data.shape == (1500, 6)
    capsys.readouterr()
    # a second run refuses to overwrite, before any work
    assert main([*args[:-4], "--out", "g", "--write-nwb", "new.nwb"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    assert main([*args[:-4], "--out", "g", "--write-nwb", "new.nwb", "--overwrite"]) == 0
    # writing into the same file twice is refused (the series exists)
    assert main([*args[:-4], "--out", "h", "--write-nwb"]) == 0
    assert main([*args[:-4], "--out", "i", "--write-nwb"]) == 2
    assert "Deconvolved/RoiResponseSeries holds nnfit's spikes" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


@pytest.mark.slow
def test_several_series_need_a_choice(tmp_path, rec, monkeypatch, capsys):
    path = make_nwb(tmp_path / "rec.nwb", rec.traces, more=True)
    with pytest.raises(
        ValueError,
        match=r"holds 2 fluorescence series; choose one with --series: "
        r"DfOverF/RoiResponseSeries, Fluorescence/RoiResponseSeries",
    ):
        read_nwb(path)
    assert (
        read_nwb(path, "DfOverF/RoiResponseSeries").provenance["series"]
        == "DfOverF/RoiResponseSeries"
    )
    assert read_nwb(path, "/processing/ophys/DfOverF/RoiResponseSeries").shape == (6, 1500)
    with pytest.raises(ValueError, match="--series is one of: DfOverF/RoiResponseSeries, Fluo"):
        read_nwb(path, "Fluorescence/Nope")
    assert sorted(list_series_of(path)) == [
        "DfOverF/RoiResponseSeries",
        "Fluorescence/RoiResponseSeries",
    ]
    monkeypatch.chdir(tmp_path)
    assert main(["calcium", "estimate", "rec.nwb"]) == 2
    assert "choose one with --series" in capsys.readouterr().err
    assert main(["calcium", "estimate", "rec.nwb", "--series", "DfOverF/RoiResponseSeries"]) == 0


def list_series_of(path):
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        return list(list_series(io.read()))


BAD = {
    "rate 0": (
        {"fs": 0.0},
        "/processing/ophys/Fluorescence/RoiResponseSeries/starting_time: rate = 0 Hz",
    ),
    "NaN timestamps": (
        {"timestamps": np.r_[0.0, np.nan, 2 / FS + np.arange(1498) / FS]},
        "RoiResponseSeries/timestamps: 1 NaN/Inf timestamp(s), first at index 1",
    ),
    "dropped frames": (
        {"timestamps": np.r_[np.arange(700), np.arange(701, 1501)] / FS},
        "RoiResponseSeries/timestamps: sampling is not uniform: interval 699 is 0.0666667 s",
    ),
    "ROI count mismatch": ({"rois": [0, 1, 2]}, "RoiResponseSeries/rois: the ROI region lists 3"),
    "wrong shape": (
        "3d",
        "rec.nwb: /processing/ophys/Fluorescence/RoiResponseSeries: Could not construct "
        "RoiResponseSeries object due to: RoiResponseSeries.__init__: incorrect shape for data",
    ),
    "NaN data": ("nan", "RoiResponseSeries/data in"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_one_line_exit_2_nothing_written(tmp_path, rec, monkeypatch, capsys, case):
    kwargs, message = BAD[case]
    if kwargs == "nan":
        traces = rec.traces.copy()
        traces[2, 10] = np.nan
        make_nwb(tmp_path / "rec.nwb", traces)
    elif kwargs == "3d":  # pynwb refuses to write it; another tool wrote it with h5py
        import h5py

        make_nwb(tmp_path / "rec.nwb", rec.traces, chunks=False)
        with h5py.File(tmp_path / "rec.nwb", "a") as f:
            group = f["processing/ophys/Fluorescence/RoiResponseSeries"]
            attrs = dict(group["data"].attrs)
            del group["data"]
            group["data"] = np.ones((1500, 6, 2), np.float32)
            group["data"].attrs.update(attrs)
    else:
        kwargs = dict(kwargs)
        fs = kwargs.pop("fs", FS)
        make_nwb(tmp_path / "rec.nwb", rec.traces, fs=fs, **kwargs)
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "rec.nwb").read_bytes()
    for cmd in (
        ["deconvolve", *KIN, "--out", "x", "--write-nwb"],
        ["export", "--out", "x/s"],
        ["estimate", "--json", "x.json"],
    ):
        assert main(["calcium", cmd[0], "rec.nwb", *cmd[1:]]) == 2, cmd
        err = capsys.readouterr().err
        assert err.startswith("nnfit: error:") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.json").exists()
    assert (tmp_path / "rec.nwb").read_bytes() == before


def test_missing_ophys_and_not_nwb(tmp_path, monkeypatch, capsys):
    nwb = pynwb.NWBFile(
        session_description="t",
        identifier="e",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    with pynwb.NWBHDF5IO(str(tmp_path / "empty.nwb"), "w") as io:
        io.write(nwb)
    (tmp_path / "text.nwb").write_text("not hdf5")
    monkeypatch.chdir(tmp_path)
    assert main(["calcium", "deconvolve", "empty.nwb", *KIN, "--out", "x"]) == 2
    assert "no RoiResponseSeries in a Fluorescence or DfOverF container" in capsys.readouterr().err
    assert main(["calcium", "deconvolve", "text.nwb", *KIN, "--out", "x"]) == 2
    assert "text.nwb: not a readable NWB file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "rounding",
    [
        lambda t: np.round(t, 3),  # to the millisecond
        lambda t: (5000.0 + t).astype(np.float32).astype(np.float64),  # float32, late in a day
    ],
)
def test_rounded_timestamps_are_uniform_sampling(tmp_path, rec, rounding):
    ts = rounding(np.arange(rec.traces.shape[1]) / FS)
    read = read_nwb(make_nwb(tmp_path / "rec.nwb", rec.traces, timestamps=ts))
    assert read.fs == pytest.approx(FS, rel=1e-5)
    np.testing.assert_array_equal(read.read_rows(0, 6), rec.traces.astype(np.float32))


def test_fs_must_agree(tmp_path, rec):
    ts = np.arange(rec.traces.shape[1]) / FS
    path = make_nwb(tmp_path / "rec.nwb", rec.traces, timestamps=ts)
    assert read_nwb(path, fs=30.0).fs == pytest.approx(FS)
    with pytest.raises(ValueError, match="fs = 20 Hz contradicts the sampling rate 30 Hz"):
        read_nwb(path, fs=20.0)


def test_write_nwb_refuses_mismatched_spikes(tmp_path, rec):
    path = make_nwb(tmp_path / "rec.nwb", rec.traces)
    np.save(tmp_path / "s.npy", np.zeros((5, 1500)))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"holds \(5, 1500\)"):
        write_nwb(path, None, tmp_path / "s.npy", {})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "rec.nwb",
        "s.npy",
    ]


def test_neuroconv_neuropil_and_deconvolved_series_are_not_chosen(tmp_path, rec):
    # NeuroConv writes suite2p's neuropil and spikes as series inside Fluorescence
    path = make_nwb(tmp_path / "rec.nwb", rec.traces)
    with pynwb.NWBHDF5IO(str(path), "a") as io:
        nwb = io.read()
        fluorescence = nwb.processing["ophys"]["Fluorescence"]
        region = fluorescence["RoiResponseSeries"].rois
        for name in ("Neuropil", "Deconvolved"):
            fluorescence.create_roi_response_series(
                name=name, data=np.zeros(rec.traces.T.shape), rois=region, unit="a.u.", rate=FS
            )
        io.write(nwb)
    got = read_nwb(path)
    assert got.provenance["series"] == "Fluorescence/RoiResponseSeries"


def test_export_into_a_folder_names_the_files_after_the_recording(
    tmp_path, rec, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    make_nwb(tmp_path / "rec.nwb", rec.traces)
    assert main(["calcium", "export", "rec.nwb", "--out", "browser/"]) == 0
    assert sorted(p.name for p in (tmp_path / "browser").iterdir()) == [
        "rec.npy",
        "rec_metadata.json",
    ]
    capsys.readouterr()


def test_spikes_go_beside_another_tools_deconvolution(tmp_path, rec):
    # suite2p's NWB export holds its own Deconvolved/<series>: nnfit's go beside it
    path = make_nwb(tmp_path / "rec.nwb", rec.traces, deconvolved=True)
    spikes = np.abs(rec.traces)
    np.save(tmp_path / "s.npy", spikes)
    _, inside = write_nwb(path, None, tmp_path / "s.npy", {}, dest=tmp_path / "new.nwb")
    assert inside == "/processing/ophys/Deconvolved/RoiResponseSeries_nnfit"
    np.testing.assert_array_equal(
        _spikes_in(tmp_path / "new.nwb", "RoiResponseSeries_nnfit")["spikes"], spikes
    )
    with pynwb.NWBHDF5IO(str(tmp_path / "new.nwb"), "r") as io:
        theirs = io.read().processing["ophys"]["Deconvolved"]["RoiResponseSeries"]
        assert theirs.description == "suite2p deconvolution" and not theirs.data[:].any()
    assert write_nwb(path, None, tmp_path / "s.npy", {})[1] == inside  # the input itself
    # a second run into the input is refused; a new file gets the next name
    with pytest.raises(ValueError, match=r"RoiResponseSeries_nnfit holds nnfit's spikes"):
        write_nwb(path, None, tmp_path / "s.npy", {})
    _, inside = write_nwb(path, None, tmp_path / "s.npy", {}, dest=tmp_path / "newer.nwb")
    assert inside.endswith("/RoiResponseSeries_nnfit2")


@pytest.mark.slow
def test_exact_path_estimates_kinetics_from_the_stream(tmp_path, rec):
    from nnfit.calcium.pipeline import deconvolve_recording

    path = make_nwb(tmp_path / "rec.nwb", rec.traces)
    np.save(tmp_path / "rec.npy", rec.traces.astype(np.float32))
    r = read_nwb(path)
    kw = {"block_cells": 4, "progress": False}
    info = deconvolve_recording(path, tmp_path / "o", r.fs, dataset=r.dataset, **kw)
    ref = deconvolve_recording(tmp_path / "rec.npy", tmp_path / "n", FS, **kw)
    assert info["kinetics_estimated"] and info["tau_decay"] == ref["tau_decay"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "o" / "spikes.npy"), np.load(tmp_path / "n" / "spikes.npy")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rec.npy", "--fs", "30", "--series", "F/R"], "--series selects a series in an .nwb"),
        (["rec.npy", "--fs", "30", "--write-nwb"], "--write-nwb and --write-suite2p need"),
        (["rec.npy", "--fs", "30", *KIN, "--write-nwb"], "--write-nwb needs an .nwb INPUT"),
        (["rec.nwb", "--write-suite2p"], "--write-suite2p needs a suite2p plane folder"),
        (["rec.nwb", *KIN, "--write-nwb", "rec.nwb"], "is the input; give no file name"),
    ],
)
def test_format_options_checked_before_any_work(tmp_path, rec, monkeypatch, capsys, args, message):
    make_nwb(tmp_path / "rec.nwb", rec.traces)
    np.save(tmp_path / "rec.npy", rec.traces)
    monkeypatch.chdir(tmp_path)
    assert main(["calcium", "deconvolve", *args, "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnfit: error:") and message in err, err
    assert not (tmp_path / "x").exists()


def test_scaled_integer_data_are_read_in_the_units_of_the_series(
    tmp_path, rec, monkeypatch, capsys
):
    # DANDI holds raw counts as int16 with conversion/offset: values = data * conversion + offset
    offset = float(rec.traces.mean())
    conversion = float(np.abs(rec.traces - offset).max()) / 30000
    raw = np.round((rec.traces - offset) / conversion).astype(np.int16)
    path = make_nwb(
        tmp_path / "rec.nwb", rec.traces, data=raw.T.copy(), conversion=conversion, offset=offset
    )
    expected = raw.astype(np.float64) * conversion + offset
    got = read_nwb(path)
    np.testing.assert_allclose(got.load(), expected, rtol=1e-12)
    assert got.provenance["conversion"] == conversion and got.provenance["offset"] == offset
    np.testing.assert_allclose(read_nwb(path, lazy=False).traces, expected, rtol=1e-12)
    monkeypatch.chdir(tmp_path)
    make_nwb(tmp_path / "zero.nwb", rec.traces, conversion=0.0)
    assert main(["calcium", "export", "zero.nwb", "--out", "x"]) == 2
    assert "RoiResponseSeries/data: conversion = 0, offset = 0;" in capsys.readouterr().err


@pytest.mark.parametrize("blank", [1000, 0])
def test_a_filter_hdf5_lacks_is_named_with_what_to_install(
    tmp_path, rec, monkeypatch, capsys, blank
):
    import h5py

    if h5py.h5z.filter_avail(32001):
        pytest.skip("Blosc is registered with HDF5 here")
    monkeypatch.setitem(__import__("sys").modules, "hdf5plugin", None)  # not installed
    traces = rec.traces.copy()
    traces[:, :blank] = 0.0  # frames before the shutter opened: the filter shrinks them
    path = make_nwb(tmp_path / "rec.nwb", traces, chunks=False)
    with h5py.File(path, "a") as f:
        group = f["processing/ophys/Fluorescence/RoiResponseSeries"]
        attrs = dict(group["data"].attrs)
        del group["data"]
        group.create_dataset("data", data=traces.T, chunks=(1500, 2), compression="lzf")
        group["data"].attrs.update(attrs)
    # the pipeline now names Blosc (id 32001, optional, as hdf5plugin writes it), which h5py
    # does not bring; an optional filter that shrank no chunk was skipped and is not needed
    content = path.read_bytes()
    at = content.index(b"lzf\0")
    assert content[at - 8 : at - 6] == (32000).to_bytes(2, "little")
    content = content[: at - 8] + (32001).to_bytes(2, "little") + content[at - 6 :]
    path.write_bytes(content.replace(b"lzf\0\0\0\0\0", b"blosc\0\0\0", 1))
    if not blank:
        np.testing.assert_array_equal(read_nwb(path).load(), traces)
        return
    monkeypatch.chdir(tmp_path)
    assert main(["calcium", "deconvolve", "rec.nwb", *KIN, "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert (
        "RoiResponseSeries/data is compressed with the HDF5 filter 'blosc' (id 32001)" in err
        and "pip install hdf5plugin" in err
    ), err
    assert not (tmp_path / "x").exists()


def test_a_new_file_elsewhere_names_the_same_external_movie(tmp_path, rec):
    # suite2p's export keeps the raw movie as a TwoPhotonSeries naming files relative to the NWB
    from pynwb.ophys import TwoPhotonSeries

    path = make_nwb(tmp_path / "rec.nwb", rec.traces)
    elsewhere = str(tmp_path / "raw" / "b.tif")
    with pynwb.NWBHDF5IO(str(path), "a") as io:
        nwb = io.read()
        nwb.add_acquisition(
            TwoPhotonSeries(
                name="TwoPhotonSeries",
                external_file=["a.tif", elsewhere],
                starting_frame=[0, 750],
                format="external",
                imaging_plane=nwb.imaging_planes["ImagingPlane"],
                rate=FS,
                num_samples=1500,
            )
        )
        io.write(nwb)
    np.save(tmp_path / "s.npy", np.abs(rec.traces))
    dest = tmp_path / "out" / "new.nwb"
    write_nwb(path, None, tmp_path / "s.npy", {}, dest=dest)
    with pynwb.NWBHDF5IO(str(dest), "r") as io:
        movie = io.read().acquisition["TwoPhotonSeries"]
        assert list(movie.external_file[:]) == [str(Path("..") / "a.tif"), elsewhere]
        assert list(movie.starting_frame[:]) == [0, 750]
    write_nwb(path, None, tmp_path / "s.npy", {})  # in place: the folder is the same
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        assert list(io.read().acquisition["TwoPhotonSeries"].external_file[:]) == [
            "a.tif",
            elsewhere,
        ]


@pytest.mark.parametrize("jitter", [0.0, 1e-4])
def test_spikes_keep_the_timing_of_timestamps(tmp_path, rec, jitter):
    # regular timestamps become rate and starting time (NWB best practice); others are linked
    T = rec.traces.shape[1]
    ts = 7.0 + np.arange(T) / FS + jitter * np.random.default_rng(1).standard_normal(T)
    path = make_nwb(tmp_path / "rec.nwb", rec.traces, timestamps=ts)
    np.save(tmp_path / "s.npy", np.abs(rec.traces))
    for dest in (tmp_path / "new.nwb", None):
        got = _spikes_in(write_nwb(path, None, tmp_path / "s.npy", {}, dest=dest)[0])
        if jitter:
            assert got["rate"] is None
            np.testing.assert_array_equal(got["timestamps"], ts)
        else:
            assert got["timestamps"] is None and got["starting_time"] == 7.0
            assert got["rate"] == pytest.approx(FS, rel=1e-12)
