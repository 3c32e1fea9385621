"""``nnfit ptycho import`` at real scale: time and peak memory against loading the stack whole.

Run: ``.venv/bin/python bench/ptycho_import.py [--scans 10000] [--size 128]``. Writes a
ptychodus-layout product (HDF5, as ``ptychodus.api.io.save_product`` lays it out) and its
patterns twice (ptychodus's NPZ, compressed as ptychodus writes it; an HDF5 ``/dp`` stack,
LZF as ptychodus's HDF5 writer), then, each in a fresh process, imports the pair and, as the
baseline, does what a script would: load the stack whole, ``sqrt(counts / mean total)`` in
float32, ``np.savez``. Prints wall time and peak resident memory (``VmHWM``) of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from _record import recorded

_CHILD = """
import sys, time
import numpy as np
t0 = time.perf_counter()
what, product, patterns, out = sys.argv[1:5]
if what == "nnfit":
    from nnfit.ptycho import import_ptychodus
    import_ptychodus(product, patterns, out, overwrite=True)
else:
    if patterns.endswith(".npz"):
        counts = np.load(patterns)["patterns"]
    else:
        import h5py
        with h5py.File(patterns) as f:
            counts = f["/dp"][()]
    c = counts.astype(np.float32)
    np.savez(out, diffraction=np.sqrt(c / (c.sum(dtype=np.float64) / len(c))))
# VmHWM: this process's own peak (ru_maxrss would include the parent's before the exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - t0, int(hwm.split()[1]) / 1024)
"""


def _write(folder: Path, n: int, size: int, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    obj_px = int(np.sqrt(n)) * 4 + size + 8
    product = folder / "product.h5"
    with h5py.File(product, "w") as f:
        f.attrs.update(
            name="bench",
            comments="",
            detector_object_distance_m=2.0,
            photon_energy_eV=8000.0,
            probe_photon_count=1e6,
            exposure_time_s=0.1,
        )
        side = int(np.ceil(np.sqrt(n)))
        gx, gy = np.meshgrid(np.arange(side), np.arange(side))
        f["probe_position_indexes"] = np.arange(n)
        f["probe_position_x_m"] = (gx.ravel()[:n] * 4 - side * 2) * 1e-8
        f["probe_position_y_m"] = (gy.ravel()[:n] * 4 - side * 2) * 1e-8
        p = f.create_dataset("probe", data=np.ones((1, 1, size, size), np.complex64))
        p.attrs.update(pixel_width_m=1e-8, pixel_height_m=1e-8)
        o = f.create_dataset("object", data=np.ones((1, obj_px, obj_px), np.complex64))
        o.attrs.update(center_x_m=0.0, center_y_m=0.0, pixel_width_m=1e-8, pixel_height_m=1e-8)
        f["object_layer_spacing_m"] = np.zeros(0)
        f["loss_values"] = np.zeros(0)
    counts = rng.poisson(20.0, size=(n, size, size)).astype(np.uint32)
    npz = folder / "patterns.npz"
    np.savez_compressed(npz, indexes=np.arange(n), patterns=counts)
    h5 = folder / "patterns_dp.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("/dp", data=counts, compression="lzf")
    return product, npz, h5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=10000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ptycho_import_bench_"))
    t0 = time.perf_counter()
    product, npz, h5 = _write(tmp, args.scans, args.size, np.random.default_rng(0))
    stack_mb = args.scans * args.size**2 * 4 / 2**20
    print(
        f"{args.scans} patterns of {args.size}x{args.size} uint32 ({stack_mb:.0f} MiB), written "
        f"in {time.perf_counter() - t0:.1f} s to {tmp}"
    )
    print(f"{'patterns':<22} {'nnfit import':>22} {'load whole + savez':>22}")
    for label, pats in (("ptychodus NPZ", npz), ("HDF5 /dp (LZF)", h5)):
        cells = []
        for what in ("nnfit", "whole"):
            out = tmp / f"{what}.npz"
            run = subprocess.run(
                [sys.executable, "-c", _CHILD, what, str(product), str(pats), str(out)],
                capture_output=True,
                text=True,
                check=True,
            )
            wall, rss = (float(v) for v in run.stdout.split())
            cells.append(f"{wall:6.1f} s, {rss:6.0f} MiB")
        print(f"{label:<22} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    with recorded():
        main()
