"""The same recording deconvolved from an NWB file and from a ``.npy``: peak memory side by side.

1. Writes a seeded ``(cells, frames)`` float32 recording to ``DIR/rec.npy`` (in chunks of cells,
   never whole) and the same numbers to ``DIR/rec.nwb`` as an ophys
   ``Fluorescence/RoiResponseSeries`` (``(frames, cells)``, gzip, chunks of whole ROI traces),
   through pynwb.
2. Runs ``nnfit calcium deconvolve --solver exact`` on each in a real process (kinetics given,
   lam per cell from the noise, constant baseline): the ``.npy`` streamed from the file, the NWB
   series streamed as hyperslabs of its dataset; the NWB run also writes the spikes back
   (``--write-nwb DIR/out.nwb``, a new self-contained file).
3. Prints each run's wall time and peak resident memory (the child's ``ru_maxrss`` from
   ``wait4``) beside the sizes on disk, and checks that both runs gave the same spikes and that
   the spikes read back from ``out.nwb`` by pynwb are those spikes.

Not part of ``make test`` (minutes, gigabytes of disk)::

    .venv/bin/python bench/calcium_formats.py --dir /tmp/nnfit-formats              # 10,000 x 30,000
    .venv/bin/python bench/calcium_formats.py --cells 2000 --frames 30000            # smaller
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _record import recorded


def write_npy(path: Path, cells: int, frames: int, fs: float, chunk: int = 250) -> None:
    from nnfit.calcium import simulate_recording

    header = {"descr": "<f4", "fortran_order": False, "shape": (cells, frames)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i, c0 in enumerate(range(0, cells, chunk)):
            n = min(chunk, cells - c0)
            rec = simulate_recording(
                n,
                frames,
                fs=fs,
                tau_rise=0.05,
                tau_decay=0.5,
                rate_hz=0.5,
                noise=0.15,
                baseline=1.0,
                seed=1000 + i,
            )
            f.write(rec.traces.astype("<f4").tobytes())


def write_nwb(path: Path, npy: Path, fs: float) -> None:
    """``npy`` as an ophys NWB file (pynwb), the traces streamed in by ``columns_from_npy``."""
    import pynwb
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    from nnfit.calcium.nwb import columns_from_npy

    cells = np.load(npy, mmap_mode="r").shape[0]
    nwb = pynwb.NWBFile(
        session_description="bench",
        identifier="bench",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    device = nwb.create_device(name="Microscope")
    plane = nwb.create_imaging_plane(
        name="ImagingPlane",
        device=device,
        imaging_rate=fs,
        description="",
        indicator="GCaMP6f",
        location="V1",
        excitation_lambda=920.0,
        optical_channel=OpticalChannel(
            name="OpticalChannel", description="", emission_lambda=510.0
        ),
    )
    module = nwb.create_processing_module(name="ophys", description="")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="", imaging_plane=plane
    )
    table.add_column(name="roi_index", description="row of the ROI in the .npy")
    for i in range(cells):
        table.add_row(pixel_mask=[(i % 512, i // 512, 1.0)], roi_index=i)
    region = table.create_roi_table_region(region=list(range(cells)), description="all ROIs")
    data = H5DataIO(columns_from_npy(npy, dtype="<f4"), compression="gzip", compression_opts=4)
    series = RoiResponseSeries(
        name="RoiResponseSeries", data=data, rois=region, unit="a.u.", rate=fs
    )
    with warnings.catch_warnings():
        # hdmf's check that a region and its table share an ancestor runs before both are in
        # the file; it is noise here
        warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion")
        module.add(Fluorescence(name="Fluorescence", roi_response_series=series))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS GiB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(proc.stderr.read() if proc.stderr else "")
        raise SystemExit(f"{' '.join(cmd)} exited with {code}")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/nnfit-formats"))
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=30_000)
    ap.add_argument("--fs", type=float, default=30.0)
    ap.add_argument("--block-cells", type=int, default=256)
    ap.add_argument("--keep", action="store_true", help="keep DIR afterwards")
    args = ap.parse_args()

    from nnfit.calcium.pipeline import read_rows

    d = args.dir
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    npy, nwb = d / "rec.npy", d / "rec.nwb"
    t0 = time.perf_counter()
    write_npy(npy, args.cells, args.frames, args.fs)
    t_npy = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_nwb(nwb, npy, args.fs)
    t_nwb = time.perf_counter() - t0
    common = [
        "--solver",
        "exact",
        "--tau-rise",
        "0.05",
        "--tau-decay",
        "0.5",
        "--baseline",
        "constant",
        "--block-cells",
        str(args.block_cells),
        "--no-progress",
        "--plot-cells",
        "0",
    ]
    nnfit = [sys.executable, "-m", "nnfit", "calcium", "deconvolve"]
    runs = {
        ".npy": run([*nnfit, str(npy), "--fs", str(args.fs), *common, "--out", str(d / "a")]),
        ".nwb + --write-nwb": run(
            [
                *nnfit,
                str(nwb),
                "--series",
                "Fluorescence/RoiResponseSeries",
                *common,
                "--out",
                str(d / "b"),
                "--write-nwb",
                str(d / "out.nwb"),
            ]
        ),
    }
    # the same spikes both ways, and in the NWB file written back
    import h5py

    same, written = True, True
    with h5py.File(d / "out.nwb", "r") as f:
        back = f["processing/ophys/Deconvolved/RoiResponseSeries/data"]
        for a in range(0, args.cells, 1000):
            b = min(a + 1000, args.cells)
            ref = read_rows(d / "a" / "spikes.npy", a, b)
            same &= np.array_equal(read_rows(d / "b" / "spikes.npy", a, b), ref)
            written &= np.array_equal(back[:, a:b].T, ref)
    run_b = json.loads((d / "b" / "run.json").read_text())
    size = {p: p.stat().st_size / 2**30 for p in (npy, nwb, d / "out.nwb")}
    print(
        f"{args.cells:,} cells x {args.frames:,} frames at {args.fs:g} Hz, float32; "
        f"{os.cpu_count()} CPU(s); blocks of {args.block_cells} cells"
    )
    print(
        f"inputs written in {t_npy:.0f} s (.npy, {size[npy]:.2f} GiB) and {t_nwb:.0f} s "
        f"(.nwb gzip, {size[nwb]:.2f} GiB); out.nwb {size[d / 'out.nwb']:.2f} GiB"
    )
    solve = {
        name: json.loads((d / sub / "run.json").read_text())["seconds"]
        for name, sub in zip(runs, ("a", "b"), strict=True)
    }
    print(f"{'input':22s} {'wall s':>8s} {'of which solve s':>17s} {'peak RSS GiB':>13s}")
    for name, (wall, rss) in runs.items():
        print(f"{name:22s} {wall:8.1f} {solve[name]:17.1f} {rss:13.2f}")
    print(
        f"certified {run_b['converged']}/{run_b['cells']}; spikes .nwb == .npy: {same}; "
        f"spikes read back from out.nwb == .npy run: {written}"
    )
    if not args.keep:
        shutil.rmtree(d)
    return 0 if same and written else 1


if __name__ == "__main__":
    with recorded(peers=("pynwb",)):
        raise SystemExit(main())
