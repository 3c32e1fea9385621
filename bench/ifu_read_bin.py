"""Peak memory and time of reading and Voronoi-binning a MUSE-size FITS cube.

Writes a simulated cube (DATA + STAT float32, default 300 x 300 spaxels x 3,700 pixels, the
size of a full MUSE field: 1.33 GB per extension) plane by plane, then runs in fresh
processes, each reporting its peak resident memory (``ru_maxrss``):

* ``nnfit``: ``read_ifu_cube`` -> ``spaxel_signal_noise`` -> ``voronoi_bins`` (vorbin) ->
  ``bin_spectra`` -> ``log_rebin`` of the bin spectra, all streamed in slabs;
* ``astropy (whole cube)``: ``fits.getdata`` of DATA and STAT (what glue code does), then the
  same signal/noise, binning and sums in NumPy;
* ``mpdaf``: ``mpdaf.obj.Cube`` (loads data and variance) and its per-spaxel mean image.

Usage::

    python bench/ifu_read_bin.py                       # full MUSE size
    python bench/ifu_read_bin.py --nx 150 --ny 150     # a quarter of it
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import recorded


def write_cube(path: Path, nx: int, ny: int, nl: int, seed: int = 0) -> None:
    """A galaxy (exponential disc, absorption lines) with noise, written plane by plane."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx]
    light = 200.0 * np.exp(-np.hypot(xx - nx / 2, yy - ny / 2) / (nx / 8)) + 2.0
    wave = 4750.0 + 1.25 * np.arange(nl)
    spec = 1.0 - 0.3 * np.exp(
        -0.5 * ((wave[:, None] - np.array([5175.0, 5270.0, 5890.0, 6563.0])) / 4.0) ** 2
    ).sum(1)
    var_img = (light + 20.0).astype(np.float32)
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", "AWAV"
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = 150.0, 2.0, 4750.0
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = nx / 2, ny / 2, 1.0
    h["CD1_1"], h["CD2_2"], h["CD3_3"] = -5.5555555555556e-05, 5.5555555555556e-05, 1.25
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "Angstrom"

    def ext_header(name: str) -> bytes:
        hdu = fits.ImageHDU(np.zeros((1, 1, 1), dtype=np.float32), h, name=name)
        hh = hdu.header
        hh["NAXIS1"], hh["NAXIS2"], hh["NAXIS3"] = nx, ny, nl
        return hh.tostring().encode("ascii")

    def pad(fh) -> None:
        fh.write(b"\0" * (-fh.tell() % 2880))

    with open(path, "wb") as fh:
        fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        fh.write(ext_header("DATA"))
        for l in range(nl):
            plane = light * spec[l] + rng.standard_normal((ny, nx)) * np.sqrt(var_img)
            fh.write(plane.astype(">f4").tobytes())
        pad(fh)
        fh.write(ext_header("STAT"))
        for _ in range(nl):
            fh.write(var_img.astype(">f4").tobytes())
        pad(fh)


def run_nnfit(path: str, target_sn: float) -> dict:
    from nnfit.spectral.binning import bin_spectra, spaxel_signal_noise, voronoi_bins
    from nnfit.spectral.ifu_cube import read_ifu_cube
    from nnfit.spectral.logrebin import log_rebin

    t = [time.perf_counter()]
    cube = read_ifu_cube(path)
    s, n, ok = spaxel_signal_noise(cube)
    t.append(time.perf_counter())
    bins = voronoi_bins(s, n, ok, target_sn)
    t.append(time.perf_counter())
    flux, var = bin_spectra(cube, bins)
    out, _, _, _ = log_rebin(cube.wave, flux, variance=var)
    t.append(time.perf_counter())
    return {
        "bins": bins.n_bins,
        "checksum": float(np.nansum(out[:, out.shape[1] // 2])),
        "split": "read+S/N {:.0f} s, vorbin {:.0f} s, bin+rebin {:.0f} s".format(*np.diff(t)),
    }


def run_astropy(path: str, target_sn: float) -> dict:
    import warnings

    import scipy.sparse as sp
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vorbin.voronoi_2d_binning import voronoi_2d_binning

        d = fits.getdata(path, "DATA", memmap=False)
        v = fits.getdata(path, "STAT", memmap=False)
        s = np.nanmean(d, axis=0)
        n = np.sqrt(np.nanmean(v, axis=0))
        ok = (s / n) >= 1.0
        y, x = np.nonzero(ok)
        t1 = time.perf_counter()
        binnum = voronoi_2d_binning(
            x.astype(float),
            y.astype(float),
            s[ok],
            n[ok],
            target_sn,
            pixelsize=1.0,
            plot=False,
            quiet=True,
        )[0]
        t2 = time.perf_counter()
    B = sp.csr_matrix((np.ones(y.size), (binnum, np.arange(y.size))))
    flux = B @ d[:, y, x].T
    return {
        "bins": int(binnum.max()) + 1,
        "checksum": float(flux[:, flux.shape[1] // 2].sum()),
        "split": f"vorbin {t2 - t1:.0f} s",
    }


def run_mpdaf(path: str, target_sn: float) -> dict:
    from mpdaf.obj import Cube

    c = Cube(path)
    img = c.mean(axis=0)
    return {"bins": 0, "checksum": float(np.nansum(img.data))}


def child(mode: str, path: str, target_sn: float) -> None:
    t = time.perf_counter()
    res = {"nnfit": run_nnfit, "astropy": run_astropy, "mpdaf": run_mpdaf}[mode](path, target_sn)
    res["seconds"] = time.perf_counter() - t
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nx", type=int, default=300)
    ap.add_argument("--ny", type=int, default=300)
    ap.add_argument("--nl", type=int, default=3700)
    ap.add_argument("--target-sn", type=float, default=40.0)
    ap.add_argument("--dir", default=None, help="where to write the cube (default: a temp dir)")
    ap.add_argument("--peers", default="nnfit,astropy,mpdaf")
    ap.add_argument("--cube", help="reuse this cube instead of writing one")
    ap.add_argument("--keep", action="store_true", help="keep the written cube")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], float(a.child[2]))
        return
    if a.cube:
        path = Path(a.cube)
        print(f"cube {path}: {path.stat().st_size / 1e9:.2f} GB")
    else:
        folder = Path(a.dir or tempfile.mkdtemp())
        path = folder / f"muse_{a.nx}x{a.ny}x{a.nl}.fits"
        t = time.perf_counter()
        write_cube(path, a.nx, a.ny, a.nl)
        gb = path.stat().st_size / 1e9
        print(
            f"cube {a.nx} x {a.ny} x {a.nl} float32, DATA + STAT: {gb:.2f} GB written in "
            f"{time.perf_counter() - t:.0f} s"
        )
    rows = []
    for mode in a.peers.split(","):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        p = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(path), str(a.target_sn)],
            capture_output=True,
            text=True,
            env=env,
        )
        if p.returncode != 0:
            rows.append((mode, "failed: " + p.stderr.strip().splitlines()[-1]))
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(
            (
                mode,
                f"{r['peak_rss_gib']:6.2f} GiB  {r['seconds']:7.1f} s  bins {r['bins']}  "
                f"{r.get('split', '')}",
            )
        )
    print(f"{'reader':<10} peak RSS     time       result")
    for mode, text in rows:
        print(f"{mode:<10} {text}")
    if not (a.cube or a.keep):
        path.unlink()


if __name__ == "__main__":
    with recorded(peers=("astropy", "vorbin", "mpdaf")):
        raise SystemExit(main())
