"""Seeded generator of malformed files and arguments for every command-line capability.

Each case runs ``nnfit.cli.main`` in this process and must end in exactly one of two ways:
exit 0 with a valid result, or exit 2 with a one-line ``nnfit: error:`` message (``ptycho
verify`` may also exit 1: a failed check is its answer). Never a traceback, never a leftover
temporary file, partial folder or stub output. The test runs it in a subprocess with a
timeout, so a hang fails too; ``bench/fuzz_cli.py`` runs more cases.

Usage: ``python tests/cli/fuzz_cases.py CAPABILITY N SEED WORKDIR`` prints one JSON line.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

LEFTOVER = re.compile(r"(\.tmp|staged|\.partial$)")


# -- byte-level damage --------------------------------------------------------------------
def _empty(data: bytes, rng) -> bytes:
    return b""


def _garbage(data: bytes, rng) -> bytes:
    return rng.bytes(int(rng.integers(1, 4000)))


def _truncate(data: bytes, rng) -> bytes:
    return data[: int(rng.integers(0, max(1, len(data))))]


def _flip(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    return bytes(b)


BYTE_DAMAGE = (_empty, _garbage, _truncate, _flip, _flip, _truncate)


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _bad_traces(rng) -> bytes:
    """A .npy of traces that is wrong in one way (or, sometimes, fine)."""
    x = rng.normal(size=(3, 300)) + 1.0
    kind = int(rng.integers(12))
    if kind == 0:
        x[1, 5] = np.nan
    elif kind == 1:
        x[0, :] = np.inf
    elif kind == 2:
        x = x[:, :1]  # one frame
    elif kind == 3:
        x = x[:0]  # no cells
    elif kind == 4:
        x = x.reshape(3, 10, 30)
    elif kind == 5:
        x = np.array([{"a": 1}], dtype=object)
    elif kind == 6:
        x = (x * 1000).astype(np.int16)
    elif kind == 7:
        x = np.zeros((2, 300))
    elif kind == 8:
        x = np.array(["a", "b"])
    elif kind == 9:
        x = x.astype(np.complex128)
    elif kind == 10:
        buf = io.BytesIO()
        np.savez(buf, traces=x)
        return buf.getvalue()
    data = _npy_bytes(x)
    if rng.random() < 0.3:
        data = BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))](data, rng)
    return data


# -- running one case -----------------------------------------------------------------------
def _run(argv: list[str], folder: Path, new_outputs: list[Path], allowed=(0, 2)) -> str | None:
    """Run one command; return a description of what went wrong, or None."""
    from nnfit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse refusals
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:
            return f"{argv}: raised\n{traceback.format_exc()}"
    text = err.getvalue()
    if rc not in allowed:
        return f"{argv}: exit {rc}\n{text[-2000:]}"
    if "Traceback" in text:
        return f"{argv}: traceback on stderr\n{text[-2000:]}"
    if rc == 2:
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if not (last.startswith("nnfit: error: ") or re.match(r"nnfit( \S+)*: error: ", last)):
            return f"{argv}: exit 2 without a one-line error\n{text[-2000:]}"
        for p in new_outputs:
            if p.exists() and not (p.is_dir() and not any(p.iterdir())):
                return f"{argv}: refused but left {p}"
    left = [p for p in folder.rglob("*") if LEFTOVER.search(p.name)]
    if left:
        return f"{argv}: leftovers {left}"
    return None


# -- capabilities -----------------------------------------------------------------------------
def calcium_case(rng, folder: Path) -> str | None:
    src = folder / "rec.npy"
    src.write_bytes(_bad_traces(rng))
    out = folder / f"out{int(rng.integers(1 << 30))}"
    cmd = ["deconvolve", "export", "estimate"][int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    fs = str(rng.choice(["30", "30", "0", "-5", "nan", "1e9", "abc"]))
    if cmd == "estimate":
        return _run(["calcium", "estimate", str(src), "--fs", fs], folder, [])
    if cmd == "export":
        return _run(
            ["calcium", "export", str(src), "--fs", fs, "--out", str(out / "s")],
            folder,
            [out / "s.npy", out / "s_metadata.json"],
        )
    argv = [
        "calcium",
        "deconvolve",
        str(src),
        "--fs",
        fs,
        "--out",
        str(out),
        "--no-progress",
        "--plot-cells",
        "0",
        "--solver",
        str(rng.choice(["exact", "fista"])),
    ]
    if rng.random() < 0.8:
        tr, td = rng.choice(["0.05", "0.5", "-1", "0", "1e9", "nan"], size=2)
        argv += ["--tau-rise", str(tr), "--tau-decay", str(td)]
        argv += ["--lam", str(rng.choice(["0.5", "0", "-1", "inf"]))]
    return _run(argv, folder, [out])


def _spectral_store(folder: Path) -> Path:
    from nnfit.spectral.simulate import simulate_cube

    p = folder / "master.h5"
    if not p.exists():
        simulate_cube(4, 2, 3, n_tem_pix=400, n_obs_pix=60, n_vel=11, seed=1).to_h5(p)
        from nnfit.spectral.hypercube import build_hypercube

        build_hypercube(p, S_chunk=2, C_chunk=1, P_chunk=3, n_workers=0)
    return p


def _damage_store(master: Path, dst: Path, rng) -> None:
    shutil.copyfile(master, dst)
    kind = int(rng.integers(8))
    if kind < 3:
        dst.write_bytes(BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))](dst.read_bytes(), rng))
        return
    with h5py.File(dst, "a") as f:
        name = str(
            rng.choice(
                [
                    "DataCube",
                    "LOSVD",
                    "Templates",
                    "Mask",
                    "HyperCube/models",
                    "ObsPix",
                    "TemPix",
                    "VelPix",
                    "Noise",
                ]
            )
        )
        if name not in f:
            return
        d = f[name][()]
        del f[name]
        if kind == 3 and d.dtype.kind == "f":
            d = d.copy()
            d.flat[int(rng.integers(d.size))] = np.nan
            f[name] = d
        elif kind == 4:
            f[name] = d.reshape(-1)[: max(1, d.size // 2)]
        elif kind == 5:
            f[name] = h5py.ExternalLink(str(master), "/" + name)
        elif kind == 6:
            f.create_dataset(
                name, shape=(10**7, *d.shape[1:]), dtype=d.dtype, chunks=(1, *d.shape[1:])
            )
        # kind 7: the dataset is simply missing


def spectral_case(rng, folder: Path) -> str | None:
    master = _spectral_store(folder)
    store = folder / "s.h5"
    _damage_store(master, store, rng)
    png = folder / f"p{int(rng.integers(1 << 30))}.png"
    cmd = str(
        rng.choice(["status", "fit", "reconstruct", "snapshot", "dashboard", "build", "compress"])
    )
    argv = ["spectral", cmd, str(store)]
    new: list[Path] = []
    if cmd in ("snapshot", "dashboard"):
        argv += ["--out", str(png if rng.random() < 0.8 else store)]
        new = [png]
    elif cmd == "build":
        argv += ["--workers", "0", "--no-progress"]
    elif cmd == "fit" and rng.random() < 0.4:
        argv += ["--method", "kaczmarz", "--epochs", "1", "--no-progress"]
    return _run(argv, folder, new)


PTYCHODUS = Path(__file__).resolve().parents[1] / "ptycho" / "data" / "ptychodus-1.7.0"


def ptychodus_import_case(rng, folder: Path) -> str | None:
    """``ptycho import`` of files ptychodus wrote, one of them damaged (most of the time)."""
    product = str(rng.choice(["product.h5", "product.npz", "product_scan_order.h5", "training.h5"]))
    patterns = rng.choice(["patterns.npz", "patterns_dp.h5", ""])
    names = [product] + ([str(patterns)] if patterns else [])
    for name in names:
        shutil.copyfile(PTYCHODUS / name, folder / name)
    if rng.random() < 0.8:
        victim = folder / names[int(rng.integers(len(names)))]
        victim.write_bytes(
            BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))](victim.read_bytes(), rng)
        )
    out = folder / f"src{int(rng.integers(1 << 30))}.npz"
    argv = ["ptycho", "import", "--product", str(folder / product), "--out", str(out)]
    if patterns:
        argv += ["--patterns", str(folder / str(patterns))]
    return _run([*argv, "--no-progress"], folder, [out, out.with_suffix(".json")])


def ptycho_case(rng, folder: Path) -> str | None:
    from nnfit.ptycho import simulate_dataset, write_npz

    if rng.random() < 0.35:
        return ptychodus_import_case(rng, folder)

    src = folder / "src.npz"
    good = folder / "good.npz"
    if not good.exists():
        write_npz(
            good,
            simulate_dataset(
                n_scans=40, probe_size=16, object_shape=(48, 48), seed=2, layout="legacy"
            ),
            compress=False,
        )
    data = good.read_bytes()
    if rng.random() < 0.8:
        data = BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))](data, rng)
    src.write_bytes(data)
    out = folder / f"fx{int(rng.integers(1 << 30))}.npz"
    size = str(rng.choice(["16", "16", "0", "-3", "1000"]))
    err = _run(
        ["ptycho", "make", "--source", str(src), "--output", str(out), "--subset-size", size],
        folder,
        [out, out.with_suffix(".json")],
    )
    if err or not out.exists():
        return err
    meta = out.with_suffix(".json")
    if rng.random() < 0.5:
        out.write_bytes(BYTE_DAMAGE[int(rng.integers(len(BYTE_DAMAGE)))](out.read_bytes(), rng))
    else:
        meta.write_bytes(_flip(meta.read_bytes(), rng))
    return _run(["ptycho", "verify", str(out)], folder, [], allowed=(0, 1, 2))


CASES: dict[str, Callable] = {
    "calcium": calcium_case,
    "spectral": spectral_case,
    "ptycho": ptycho_case,
}


def run(capability: str, n: int, seed: int, workdir: Path) -> dict:
    """Run ``n`` cases of one capability; return counts and the first failures."""
    import logging

    logging.getLogger("nnfit").disabled = True  # progress logs are not under test here
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    failures = []
    t0 = time.perf_counter()
    for i in range(n):
        case_dir = workdir / f"case{i:04d}"
        case_dir.mkdir()
        if capability == "spectral" and (workdir / "master.h5").exists():
            shutil.copyfile(workdir / "master.h5", case_dir / "master.h5")
        elif capability == "ptycho" and (workdir / "good.npz").exists():
            shutil.copyfile(workdir / "good.npz", case_dir / "good.npz")
        problem = CASES[capability](rng, case_dir)
        if capability == "spectral" and not (workdir / "master.h5").exists():
            shutil.copyfile(case_dir / "master.h5", workdir / "master.h5")
        if capability == "ptycho" and (case_dir / "good.npz").exists():
            shutil.copyfile(case_dir / "good.npz", workdir / "good.npz")
        if problem:
            failures.append(problem)
        shutil.rmtree(case_dir, ignore_errors=True)
    return {
        "capability": capability,
        "cases": n,
        "failures": len(failures),
        "first": failures[:5],
        "time_s": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    cap, n, seed, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(run(cap, n, seed, work)))
