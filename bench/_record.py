"""What a benchmark table needs beside it: date, machine, load, commit and versions.

Every script in ``bench/`` runs its work inside :func:`recorded`, which prints these lines
before the work and the load average and wall time after it, so a table copied into
``docs/benchmarks.rst`` carries its own record (and :func:`current_record` puts it into a
script's JSON output)::

    with recorded(peers=("oasis-deconv", "catune")):
        ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CORE = ("numpy", "scipy", "numba", "h5py")
_ENV = "NNFIT_BENCH_RECORDED"
_STARTED: list[str] = []  # the record printed when the running benchmark started


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return run.stdout.strip()


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty else "")


def _blas() -> str:
    try:
        import numpy  # noqa: F401 - loads the BLAS that threadpoolctl then reports
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    libs = [
        f"{i.get('internal_api')} {i.get('version')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return ", ".join(sorted(set(libs))) or "unknown"


def record_lines(peers: Sequence[str] = ()) -> list[str]:
    """The record printed before a benchmark's work (one ``key: value`` per line)."""
    load = os.getloadavg()
    versions = [f"Python {platform.python_version()}"]
    versions += [f"{d} {_version(d)}" for d in (*CORE, *peers)]
    return [
        f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {_cpu_model()}, {os.cpu_count()} CPUs, {_memory_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"load average at start: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)",
        f"commit: {_commit()}",
        f"versions: {', '.join(versions)}; BLAS: {_blas()}",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
    ]


def current_record() -> dict[str, str]:
    """The record of the running benchmark's start as a dict (``date``, ``machine``, ...), for
    its JSON output; taken now where :func:`recorded` has not run."""
    return dict(line.split(": ", 1) for line in (_STARTED or record_lines()))


@contextlib.contextmanager
def recorded(peers: Sequence[str] = ()) -> Iterator[None]:
    """Print :func:`record_lines` before the block, the load and wall time after it.

    Nothing is printed for ``--help``, which runs no benchmark, nor in a process that a
    recorded benchmark started (its parent's record covers it, and some parents read the
    child's last line of output as its result).
    """
    if {"-h", "--help"} & set(sys.argv[1:]) or os.environ.get(_ENV):
        yield
        return
    os.environ[_ENV] = "1"  # inherited by the benchmark's own child processes
    _STARTED[:] = record_lines(peers)
    for line in _STARTED:
        print(f"# {line}", flush=True)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        load = os.getloadavg()
        print(
            f"# load average at end: {load[0]:.2f} (1 min); wall {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
