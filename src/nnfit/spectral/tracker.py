"""Asynchronous fit tracker: one writer process owns every write to the store during a fit.

The solver process never opens the HDF5 store for writing. :class:`FitTracker` starts a
writer process (a fresh interpreter fed through a pipe) that opens the store once in append mode, creates
every ``/Fit/*`` dataset it will need (and ``/X_global``), then switches the file to SWMR mode
so that the solver (reading the HyperCube) and any number of dashboards can read it at the same
time. The solver sends small messages through a bounded queue; when the queue is full the
solver *waits* (counted in :attr:`FitTracker.waits`), so no message is ever dropped
(:attr:`FitTracker.drops` stays 0 and is reported in the fit's stats).

One module, though long: the solver-side :class:`FitTracker` and the writer loop it starts
speak one message protocol, and keeping both sides together keeps them in step. The names
under ``/Fit`` (``time_sec`` included) are CubeFit's file layout and stay as CubeFit wrote them.

What it writes (all in the base file)::

    /X_global                 (C*P,) f64   committed at each epoch end
    /Fit/x_latest             (C*P,) f64   latest checkpoint
    /Fit/x_best               (C*P,) f64   best by validation RMSE on the held-out sample
    /Fit/x_ring               (R, C*P) f64 ring of checkpoints; /Fit/x_vis_ring f32 copy
    /Fit/ring_epoch, ring_time (R,) f64    epoch / time of each ring slot (NaN = empty)
    /Fit/metrics/<name>       appended rows: epoch, time_sec, train_rmse_ewma, val_rmse,
                              delta_x_rel, nnz, l1_norm, l2_norm, mass_err_L1, mass_err_Linf
    /Fit/sample/spaxels (Ns,), /Fit/sample/val_pixels (Kval,) int32  fixed validation sample
    /Fit/orbit_weights        (C,) f64 (NaN until set_orbit_weights)
    /Fit/state/*              digests, positions and run fingerprints of the vectors above

Crash consistency: every vector is written, flushed, and only then its SHA-256 digest and
position are written and flushed. A kill between the two leaves a digest that does not match,
and resume skips that vector (falling back to the next source) instead of trusting torn data.
If the solver process dies, the writer sees its pipe close, flushes and closes the file.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nnfit.io import array_sha256
from nnfit.io.hdf5 import open_h5
from nnfit.validate import check_int, check_real

__all__ = [
    "METRIC_NAMES",
    "FitTracker",
    "TrackerConfig",
    "TrackerWriterError",
    "choose_validation_sample",
    "read_checkpoints",
]

METRIC_NAMES = (
    "epoch",
    "time_sec",
    "train_rmse_ewma",
    "val_rmse",
    "delta_x_rel",
    "nnz",
    "l1_norm",
    "l2_norm",
    "mass_err_L1",
    "mass_err_Linf",
)
_VECTORS = ("x_best", "X_global", "x_latest")
_STR = "S96"


class TrackerWriterError(RuntimeError, OSError):
    """The tracker's writer process died or failed: what it was sent may not be in the file.

    An ``OSError`` too, so the command line reports it in one line.
    """


@dataclass(frozen=True)
class TrackerConfig:
    """Intervals and sizes of the fit tracker (times in seconds of wall clock).

    Parameters
    ----------
    metrics_interval_sec : float
        Minimum time between two metrics rows (epoch ends always write one).
    val_interval_sec : float
        Minimum time between two validation evaluations (epoch ends always evaluate).
    ckpt_interval_sec : float
        Minimum time between two ``/Fit/x_latest`` checkpoints (epoch ends always write one).
    Ns, Kval : int
        Validation sample: ``Ns`` spaxels by ``Kval`` fitted pixels, held out of training.
    diag_seed : int
        Seed of the validation sample.
    ring_size : int
        Slots of ``/Fit/x_ring``.
    ewma_alpha : float
        Weight of the newest batch RMSE in ``train_rmse_ewma``.
    queue_size : int
        Messages in flight before the solver waits.
    put_timeout_sec : float
        How long the solver waits for a stalled writer before raising.

    Examples
    --------
    >>> TrackerConfig(ckpt_interval_sec=60).ring_size
    96
    """

    metrics_interval_sec: float = 300.0
    val_interval_sec: float = 3600.0
    ckpt_interval_sec: float = 1800.0
    Ns: int = 16
    Kval: int = 32
    diag_seed: int = 12345
    ring_size: int = 96
    ewma_alpha: float = 0.05
    queue_size: int = 8
    put_timeout_sec: float = 600.0

    def __post_init__(self) -> None:
        for name in ("metrics_interval_sec", "val_interval_sec", "ckpt_interval_sec"):
            check_real(name, getattr(self, name), low=0)
        check_int("Ns", self.Ns, low=0)
        check_int("Kval", self.Kval, low=0)
        check_int("diag_seed", self.diag_seed, low=0)
        check_int("ring_size", self.ring_size, low=1)
        check_real("ewma_alpha", self.ewma_alpha, low=0, low_inclusive=False, high=1)
        check_int("queue_size", self.queue_size, low=1)
        check_real("put_timeout_sec", self.put_timeout_sec, low=0, low_inclusive=False)


def choose_validation_sample(
    n_spaxels: int, mask: np.ndarray, Ns: int, Kval: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick the held-out validation sample: ``Ns`` spaxels and ``Kval`` fitted pixels.

    Pixels are drawn among the fitted (``mask`` True) pixels, at most half of them so that every
    sample spaxel keeps training rows. Both arrays come back sorted, as int32.

    Examples
    --------
    >>> s, v = choose_validation_sample(10, np.ones(8, bool), Ns=3, Kval=2, seed=1)
    >>> s.size, v.size, bool(np.all(np.diff(s) > 0))
    (3, 2, True)
    """
    rng = np.random.default_rng(seed)
    fitted = np.flatnonzero(np.asarray(mask, dtype=bool))
    ns = min(int(Ns), int(n_spaxels))
    kv = min(int(Kval), fitted.size // 2)
    spax = np.sort(rng.choice(int(n_spaxels), size=ns, replace=False)).astype(np.int32)
    pix = np.sort(rng.choice(fitted, size=kv, replace=False)).astype(np.int32)
    return spax, pix


def _open_writer(path: Path, wait_sec: float = 60.0) -> h5py.File:
    """Open the store for appending, retrying while another process still holds it."""
    deadline = time.monotonic() + wait_sec
    while True:
        try:
            return open_h5(path, "a")
        except (OSError, BlockingIOError) as exc:
            text = str(exc).lower()
            if time.monotonic() > deadline or not ("lock" in text or "already open" in text):
                raise
            time.sleep(0.2)


def _sha(x: np.ndarray) -> bytes:
    return array_sha256(np.asarray(x, dtype=np.float64)).encode("ascii")


def _ensure(group: h5py.Group, name: str, shape, dtype, fill=None, **kw) -> h5py.Dataset:
    if name in group:
        ds = group[name]
        if ds.shape != tuple(shape) and ds.maxshape[0] is not None:
            raise ValueError(
                f"{group.name}/{name} has shape {ds.shape}, expected {tuple(shape)}: "
                "the store was fitted with other dimensions; delete /Fit to start over"
            )
        return ds
    ds = group.create_dataset(name, shape=shape, dtype=dtype, **kw)
    if fill is not None and ds.size:
        ds[...] = fill
    return ds


def _prepare_file(f: h5py.File, spec: dict[str, Any]) -> dict[str, Any]:
    """Create every dataset the writer will touch (SWMR forbids creating them later)."""
    if "HyperCube/models" not in f:
        raise ValueError(f"{f.filename} has no /HyperCube/models; build it first")
    models = f["HyperCube/models"]
    S, C, P, _ = (int(v) for v in models.shape)
    n = C * P
    ring = int(spec["ring_size"])
    if "Fit/state/time_offset" not in f or "X_global" not in f:
        # New datasets are created outside SWMR mode, where a full disk half-way would leave
        # metadata that cannot be read: their space (rings, vectors, headers) is taken first.
        f.reserve(2 * (12 * ring * n + 8 * 4 * n) + (1 << 20))
    fit = f.require_group("Fit")
    sample = fit.require_group("sample")
    if "spaxels" not in sample:
        L = int(models.shape[3])
        mask = np.asarray(f["Mask"], dtype=bool) if "Mask" in f else np.ones(L, dtype=bool)
        spax, pix = choose_validation_sample(S, mask, spec["Ns"], spec["Kval"], spec["diag_seed"])
        sample.create_dataset("spaxels", data=spax)
        sample.create_dataset("val_pixels", data=pix)
    if "X_global" not in f:
        f.create_dataset("X_global", shape=(n,), dtype="f8", fillvalue=0.0)
        had_global = False
    else:
        had_global = True
        if f["X_global"].shape != (n,):
            raise ValueError(f"/X_global has shape {f['X_global'].shape}, expected ({n},)")
    for name in ("x_latest", "x_best"):
        _ensure(fit, name, (n,), "f8", fillvalue=0.0)
    _ensure(fit, "x_ring", (ring, n), "f8", fillvalue=0.0)
    _ensure(fit, "x_vis_ring", (ring, n), "f4", fillvalue=0.0)
    _ensure(fit, "ring_epoch", (ring,), "f8", fill=np.nan)
    _ensure(fit, "ring_time", (ring,), "f8", fill=np.nan)
    _ensure(fit, "orbit_weights", (C,), "f8", fill=np.nan)
    met = fit.require_group("metrics")
    for name in METRIC_NAMES:
        _ensure(met, name, (0,), "f8", maxshape=(None,), chunks=(256,))
    st = fit.require_group("state")
    for v in _VECTORS:
        fresh = f"{v}_sha" not in st
        _ensure(st, f"{v}_sha", (1,), _STR)
        _ensure(st, f"{v}_fp", (1,), _STR)
        _ensure(st, f"{v}_pos", (2,), "i8", fill=-1 if fresh else None)
        if fresh and v == "X_global" and had_global:
            # an /X_global written by someone else (no digest record): trusted as it is
            st["X_global_sha"][0] = b"untracked"
    _ensure(st, "best_val", (1,), "f8", fill=np.inf)
    if spec.get("reset_best"):
        # a new fit (not a continuation): the old best is not comparable
        st["best_val"][0] = np.inf
    _ensure(st, "ring_next", (1,), "i8", fill=0)
    _ensure(st, "time_offset", (1,), "f8", fill=0.0)
    return {
        "spaxels": np.asarray(sample["spaxels"], dtype=np.int64),
        "val_pixels": np.asarray(sample["val_pixels"], dtype=np.int64),
        "best_val": float(st["best_val"][0]),
        "time_offset": float(st["time_offset"][0]),
        "C": C,
        "P": P,
    }


def _write_vector(f: h5py.File, name: str, x: np.ndarray, pos, fp: bytes) -> None:
    st = f["Fit/state"]
    ds = f["X_global"] if name == "X_global" else f[f"Fit/{name}"]
    ds[...] = x
    f.flush()
    st[f"{name}_pos"][...] = np.asarray(pos, dtype=np.int64)
    st[f"{name}_fp"][0] = fp
    st[f"{name}_sha"][0] = _sha(x)
    f.flush()


def _writer_loop(path: str, spec: dict[str, Any], recv: Callable[[], Any], reply) -> None:
    """Body of the writer process: open, prepare, switch to SWMR, apply messages until EOF."""
    try:
        f = _open_writer(Path(path))
    except Exception as exc:  # report and exit: the front end raises it
        reply(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        try:
            info = _prepare_file(f, spec)
            f.flush()
            try:
                f.swmr_mode = True
            except RuntimeError as exc:
                raise ValueError(
                    f"{path} cannot be opened for SWMR writing ({exc}); the store was written "
                    "in an old HDF5 format: repack it with `h5repack -L` (latest format) or "
                    "re-create it with nnfit"
                ) from None
        except Exception as exc:
            reply(("error", f"{type(exc).__name__}: {exc}"))
            return
        reply(("ready", info))
        while True:
            try:
                msg = recv()
            except (EOFError, OSError):
                break  # the solver closed the pipe or died: flush and close cleanly
            if msg[0] == "close":
                break
            try:
                _apply(f, msg)
            except Exception as exc:  # a full disk: reported in one line by the front end
                reply(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
                break
    finally:
        with contextlib.suppress(Exception):
            f.flush()
        try:
            f.close()
        except Exception as exc:  # its last writes failed (a full disk)
            with contextlib.suppress(Exception):
                reply(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        with contextlib.suppress(Exception):
            reply(("closed", None))


def _apply(f: h5py.File, msg: tuple) -> None:
    """Write one message of the front end into the store (SWMR mode)."""
    kind = msg[0]
    if kind == "metrics":
        row = msg[1]
        met = f["Fit/metrics"]
        for name in METRIC_NAMES:
            ds = met[name]
            ds.resize((ds.shape[0] + 1,))
            ds[-1] = row[name]
        f["Fit/state/time_offset"][0] = row["time_sec"]
        f.flush()
    elif kind == "vector":
        _, name, x, pos, fp = msg
        _write_vector(f, name, x, pos, fp)
    elif kind == "best":
        _, x, val, pos, fp = msg
        _write_vector(f, "x_best", x, pos, fp)
        f["Fit/state/best_val"][0] = val
        f.flush()
    elif kind == "ring":
        _, x, epoch, tsec = msg
        st = f["Fit/state"]
        i = int(st["ring_next"][0]) % f["Fit/x_ring"].shape[0]
        f["Fit/x_ring"][i] = x
        f["Fit/x_vis_ring"][i] = x.astype(np.float32)
        f["Fit/ring_epoch"][i] = epoch
        f["Fit/ring_time"][i] = tsec
        st["ring_next"][0] = i + 1
        f.flush()
    elif kind == "weights":
        f["Fit/orbit_weights"][...] = msg[1]
        f.flush()


def _writer_entry() -> None:
    """Entry point of the writer subprocess: messages are pickles on stdin, replies on stdout."""
    # Ctrl-C in a terminal reaches the whole process group: the front end handles it and
    # closes this writer, which first writes what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the reply pipe

    def reply(obj: Any) -> None:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    path, spec = pickle.load(inp)
    _writer_loop(path, spec, lambda: pickle.load(inp), reply)


def read_checkpoints(f: h5py.File) -> dict[str, dict[str, Any]]:
    """Read the stored vectors whose digests verify, with their positions and fingerprints.

    Returns ``{name: {"x", "pos", "fp"}}`` for ``x_best``, ``X_global``, ``x_latest`` that are
    valid. An ``/X_global`` written without the tracker (no digest record) is returned with
    ``pos=None``.
    """
    out: dict[str, dict[str, Any]] = {}
    st = f.get("Fit/state")
    for name in _VECTORS:
        path = "X_global" if name == "X_global" else f"Fit/{name}"
        if path not in f:
            continue
        if st is None or f"{name}_sha" not in st:
            if name == "X_global":
                out[name] = {"x": np.asarray(f[path], dtype=np.float64), "pos": None, "fp": b""}
            continue
        # Read in the reverse of the writer's order (vector, position and fingerprint, then
        # digest), so that a writer still at work (a killed solver's writer draining its
        # queue) cannot pair a vector with the position of the next one: a position newer
        # than the digest comes with a vector newer than the digest, which fails the check.
        sha = bytes(st[f"{name}_sha"][0])
        pos = tuple(int(v) for v in st[f"{name}_pos"][:]) if f"{name}_pos" in st else None
        fp = bytes(st[f"{name}_fp"][0]) if f"{name}_fp" in st else b""
        x = np.asarray(f[path], dtype=np.float64)
        if sha == b"untracked":
            out[name] = {"x": x, "pos": None, "fp": b""}
        elif sha and sha == _sha(x):
            out[name] = {"x": x, "pos": pos, "fp": fp}
    return out


_OPEN: weakref.WeakSet[FitTracker] = weakref.WeakSet()


@atexit.register
def _close_open_trackers() -> None:
    """Close the trackers a program left open when it ends (their writers still hold queued
    messages): daemon threads and the garbage collector do not run at interpreter exit."""
    for trk in list(_OPEN):
        with contextlib.suppress(Exception):
            trk.close(timeout=60)


class FitTracker:
    """Live fit tracking through a separate writer process (the only writer of ``/Fit/*``).

    Parameters
    ----------
    path : path-like
        The HDF5 store (with ``/HyperCube/models``). The solver must not hold a write handle
        on it; read handles must be opened *after* the tracker (SWMR readers).
    cfg : TrackerConfig, optional
        Intervals and sizes.
    fingerprint : bytes, optional
        Run fingerprint stored with every vector (the runner uses it to decide whether a
        stored position can be continued).

    Examples
    --------
    The runner uses the tracker for you; standalone use looks like this::

        tracker = FitTracker("cube.h5", cfg=TrackerConfig(ckpt_interval_sec=60))
        tracker.set_orbit_weights(w)
        for ...:
            tracker.on_batch(rmse)
            tracker.maybe_save(x, epoch=ep)
        tracker.close()  # optional: a tracker left open is closed when the program ends

    Without :meth:`set_validation`, the validation RMSE (which picks ``/Fit/x_best``) is
    computed on the held-out sample read from the store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        cfg: TrackerConfig | None = None,
        *,
        fingerprint: bytes = b"",
        reset_best: bool = False,
        start_timeout_sec: float = 120.0,
        wait: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such HDF5 store: {self.path}")
        self.cfg = cfg or TrackerConfig()
        self.fingerprint = bytes(fingerprint)
        spec = asdict(self.cfg)
        spec["reset_best"] = bool(reset_best)
        # A fresh interpreter (not multiprocessing): no fork of a threaded solver, and no
        # re-import of the user's script, which would need an ``if __name__`` guard.
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from nnfit.spectral.tracker import _writer_entry; _writer_entry()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=self.cfg.queue_size)
        self._start_timeout = start_timeout_sec
        self._ready = False
        self.waits = 0
        self.wait_sec = 0.0
        self.drops = 0
        self.sent = 0
        self._closed = False
        try:
            self._write((str(self.path), spec))
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the writer has prepared the file and switched it to SWMR mode.

        ``FitTracker(..., wait=False)`` lets the caller do other work (not touching the store)
        while the writer starts; call this before opening any read handle.
        """
        if self._ready:
            return
        try:
            kind, info = self._read_reply(self._start_timeout)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._closed = True
            raise
        if kind == "error":
            self._proc.wait(30)
            self._closed = True
            if info.startswith(("ValueError", "FileNotFoundError", "KeyError", "FileExistsError")):
                raise ValueError(f"fit tracker: {info}")
            raise TrackerWriterError(f"fit tracker writer failed: {info}")
        self._sender = threading.Thread(target=self._pump, name="nnfit-tracker-send", daemon=True)
        self._sender.start()
        _OPEN.add(self)
        self.sample_spaxels = info["spaxels"]
        self.val_pixels = info["val_pixels"]
        self.best_val = info["best_val"]
        self.C, self.P = info["C"], info["P"]
        self._t0 = time.monotonic() - info["time_offset"]
        now = time.monotonic()
        self._last = {"metrics": now, "val": now, "ckpt": now}
        self.train_rmse_ewma = math.nan
        self.last_val_rmse = math.nan
        self.orbit_weights: np.ndarray | None = None
        self._x_prev: np.ndarray | None = None
        self._val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._ready = True

    # -- messaging ---------------------------------------------------------------------
    def _write(self, obj: Any) -> None:
        pickle.dump(obj, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc.stdin.flush()

    def _read_reply(self, timeout: float) -> Any:
        box: list[Any] = []

        def get() -> None:
            with contextlib.suppress(Exception):
                box.append(pickle.load(self._proc.stdout))

        t = threading.Thread(target=get, daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            raise RuntimeError(
                f"fit tracker writer did not start (exit code {self._proc.poll()}); "
                "see its messages above"
            )
        return box[0]

    def _pump(self) -> None:
        """Sender thread: move queued messages into the writer's pipe (blocking)."""
        while True:
            msg = self._q.get()
            if msg is None:
                return
            try:
                self._write(msg)
            except BaseException as exc:  # broken pipe: the writer died
                self._error = exc
                return
            finally:
                self._q.task_done()

    def _send(self, msg: tuple) -> None:
        if self._closed:
            raise RuntimeError("fit tracker is closed")
        self._check()
        try:
            self._q.put_nowait(msg)
        except queue.Full:
            self.waits += 1
            t = time.monotonic()
            while True:
                self._check()
                try:
                    self._q.put(msg, timeout=1.0)
                    break
                except queue.Full:
                    if time.monotonic() - t > self.cfg.put_timeout_sec:
                        raise RuntimeError(
                            f"fit tracker writer stalled for {self.cfg.put_timeout_sec:g} s"
                        ) from None
            self.wait_sec += time.monotonic() - t
        self.sent += 1

    def _check(self) -> None:
        if self._error is not None or self._proc.poll() is not None:
            raise TrackerWriterError(
                f"{self.path}: fit tracker writer died (exit code {self._proc.poll()}): "
                f"{self._error!r}; rerun the fit to resume from the last checkpoint"
            )

    # -- public API ----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds of fitting recorded in this store (continues across resumed runs)."""
        return time.monotonic() - self._t0

    def set_orbit_weights(self, w: np.ndarray) -> None:
        """Record per-component target weights (length C); enables the mass-error metrics."""
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (self.C,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"orbit_weights must be {self.C} finite non-negative values, not all zero; "
                f"got shape {w.shape}"
            )
        self.orbit_weights = w
        self._send(("weights", w))

    def set_validation(self, rows: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Give the held-out rows ``(n, C*P)`` (float32 is fine), data and weights.

        Optional: without it the tracker reads them from the store at the first validation
        (the rows of ``/HyperCube/models`` at ``/Fit/sample``, ``/DataCube``, ``1 / /Noise``).
        A solver that already holds those rows passes them here to save the read.
        """
        self._val = (rows, np.asarray(y, np.float64), np.asarray(w, np.float64))

    def _read_validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed validation sample's rows, data and weights, read from the store."""
        from nnfit.spectral.hypercube_reader import HyperCubeReader

        spax, pix = self.sample_spaxels, self.val_pixels
        with HyperCubeReader(self.path) as reader:
            f = reader.file
            rows = np.concatenate([reader.spaxel_rows(int(s), pix) for s in spax])
            y = np.concatenate([np.asarray(f["DataCube"][int(s)], np.float64)[pix] for s in spax])
            if "Noise" in f:
                sig = np.concatenate(
                    [np.asarray(f["Noise"][int(s)], np.float64)[pix] for s in spax]
                )
                w = 1.0 / sig
            else:
                w = np.ones(y.size)
        return rows, y, w

    def validation_rmse(self, x: np.ndarray) -> float:
        """Weighted RMSE of ``x`` on the held-out sample (``/Fit/sample``: the store's rows at
        the sample spaxels' validation pixels, weighted by ``1 / /Noise``), CubeFit's
        criterion for ``/Fit/x_best``."""
        if self._val is None:
            if not self.sample_spaxels.size or not self.val_pixels.size:
                return math.nan
            self._val = self._read_validation()
        from nnfit.solvers.kaczmarz import residual_sse

        rows, y, w = self._val
        if y.size == 0:
            return math.nan
        return math.sqrt(residual_sse(x, rows, y, w) / y.size)

    def on_batch(self, rmse: float) -> None:
        """Fold one batch's (one spaxel's) training RMSE into the EWMA."""
        r = float(rmse)
        if not math.isfinite(r):
            return
        a = self.cfg.ewma_alpha
        prev = self.train_rmse_ewma
        self.train_rmse_ewma = r if math.isnan(prev) else (1 - a) * prev + a * r

    def _metrics(self, x: np.ndarray, epoch: float, val: float) -> dict[str, float]:
        l2 = float(np.linalg.norm(x))
        if self._x_prev is None:
            dx = math.nan
        else:
            dx = float(np.linalg.norm(x - self._x_prev)) / max(l2, np.finfo(float).tiny)
        self._x_prev = x.copy()
        row = {
            "epoch": float(epoch),
            "time_sec": self.elapsed,
            "train_rmse_ewma": self.train_rmse_ewma,
            "val_rmse": val,
            "delta_x_rel": dx,
            "nnz": float(np.count_nonzero(x)),
            "l1_norm": float(np.abs(x).sum()),
            "l2_norm": l2,
            "mass_err_L1": math.nan,
            "mass_err_Linf": math.nan,
        }
        if self.orbit_weights is not None:
            s = x.reshape(self.C, self.P).sum(axis=1)
            if s.sum() > 0:
                err = s / s.sum() - self.orbit_weights / self.orbit_weights.sum()
                row["mass_err_L1"] = float(np.abs(err).sum())
                row["mass_err_Linf"] = float(np.abs(err).max())
        return row

    def maybe_save(
        self,
        x: np.ndarray,
        epoch: float,
        *,
        position: tuple[int, int] | None = None,
        force: bool = False,
    ) -> dict[str, bool]:
        """Send metrics / validation / checkpoint messages whose interval has elapsed.

        Parameters
        ----------
        x : ndarray, shape (C*P,)
            Current weights (copied before sending).
        epoch : float
            Fractional epoch for the metrics row.
        position : (int, int), optional
            ``(epoch, spaxels done in it)``: where a resumed run would continue from ``x``.
        force : bool
            Do everything now (the runner forces at each epoch end).

        Returns
        -------
        dict
            Which of ``metrics``, ``val``, ``ckpt``, ``best`` were sent.
        """
        now = time.monotonic()
        cfg = self.cfg
        due = {
            "metrics": force or now - self._last["metrics"] >= cfg.metrics_interval_sec,
            "val": force or now - self._last["val"] >= cfg.val_interval_sec,
            "ckpt": force or now - self._last["ckpt"] >= cfg.ckpt_interval_sec,
        }
        sent = {"metrics": False, "val": False, "ckpt": False, "best": False}
        if not any(due.values()):
            return sent
        x = np.array(x, dtype=np.float64).reshape(-1)
        pos = (-1, -1) if position is None else tuple(int(v) for v in position)
        val = math.nan
        if due["val"]:
            val = self.validation_rmse(x)
            self._last["val"] = now
            sent["val"] = True
            if math.isfinite(val):
                self.last_val_rmse = val
                if val < self.best_val:
                    self.best_val = val
                    self._send(("best", x, val, pos, self.fingerprint))
                    sent["best"] = True
        if due["metrics"] or sent["val"]:
            self._send(("metrics", self._metrics(x, epoch, val)))
            self._last["metrics"] = now
            sent["metrics"] = True
        if due["ckpt"]:
            self._send(("vector", "x_latest", x, pos, self.fingerprint))
            self._send(("ring", x, float(epoch), self.elapsed))
            self._last["ckpt"] = now
            sent["ckpt"] = True
        return sent

    def commit_global(self, x: np.ndarray, position: tuple[int, int]) -> None:
        """Write ``/X_global`` (through the writer, digest-verified) for an epoch end."""
        x = np.array(x, dtype=np.float64).reshape(-1)
        self._send(("vector", "X_global", x, tuple(position), self.fingerprint))

    def close(self, timeout: float = 120.0) -> None:
        """Let the writer drain its queue, flush, close the file and exit."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        sender = getattr(self, "_sender", None)
        if sender is not None:
            self._q.put(("close",))
            self._q.put(None)
            sender.join(timeout)
        with contextlib.suppress(Exception):
            self._proc.stdin.close()
        confirmed = not self._ready
        if self._ready:
            # the writer replies once the file is closed (lock released); its interpreter
            # shutdown after that does not concern us
            with contextlib.suppress(Exception):
                while True:
                    kind, info = self._read_reply(timeout)
                    if kind == "closed":
                        break
                    if kind == "error" and self._error is None:
                        self._error = OSError(info)
                confirmed = True
        else:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout)
        with contextlib.suppress(Exception):
            self._proc.stdout.close()
        if self._error is not None:
            raise TrackerWriterError(
                f"{self.path}: fit tracker writer failed: {self._error!r}; /X_global and /Fit "
                "may hold an earlier state. Rerun the fit to resume from the last checkpoint"
            )
        if not confirmed:
            # Without the writer's "closed" reply nothing says the last vectors reached the
            # file: a caller must not report /X_global as updated.
            raise TrackerWriterError(
                f"{self.path}: the fit tracker's writer process ended (exit code "
                f"{self._proc.poll()}) before confirming its writes; /X_global and /Fit may "
                "hold an earlier state. Rerun the fit to resume from the last checkpoint"
            )

    def __enter__(self) -> FitTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a tracker left open still closes its writer
        with contextlib.suppress(Exception):
            self.close(timeout=10)
