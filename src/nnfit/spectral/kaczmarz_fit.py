"""Global Kaczmarz NNLS fit of a spectral cube from its HyperCube, with tracking and resume.

:class:`PipelineRunner` glues the chunk-ordered :class:`~nnfit.spectral.hypercube_reader.HyperCubeReader`
to the array-level solver :mod:`nnfit.solvers.kaczmarz` and to the asynchronous
:class:`~nnfit.spectral.tracker.FitTracker` (the only writer of the store while a fit runs).

One epoch, ``row_order="random"``: the spaxel blocks (``S_chunk`` spaxels each, the stored
chunk rows) are visited in a fresh random order, the spaxels inside each block in a fresh random
order, and for each spaxel ``K = pixels_per_aperture`` of its fitted pixels are drawn without
replacement. This two-level shuffle reads every HyperCube chunk exactly once per epoch. With
``row_order="sequential"`` each spaxel's visit takes the next ``K`` fitted pixels, wrapping, so
successive epochs walk through all of them. All draws derive from ``(seed, epoch, block)``
and ``(seed, epoch, spaxel)``, so a run resumed from a checkpoint at ``(epoch, spaxels done)``
repeats exactly the trajectory of an uninterrupted run.

Noise: when the store has ``/Noise`` (sigma per spaxel and pixel), residuals are weighted by
``w = 1/sigma`` (RMSEs are then chi-like) and the step of row ``i`` is relaxed by
``min(w_i^2 ||a_i||^2 / nu, 1)`` with ``nu`` the largest ``w^2 ||a||^2`` over a fixed
calibration block, so that the expected step follows the chi^2 gradient. Without ``/Noise``
the step is the standard Kaczmarz projection.

One module, though long: the solver's steps (:meth:`PipelineRunner._setup`, ``_open``,
``_epoch``, ``_finalize``), the in-memory problem they share, the seed calibration and the
objective evaluation form one algorithm over one store; nothing else uses its parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnfit.progress import progress
from nnfit.solvers.kaczmarz import RatioPenalty, kaczmarz_rows, residual_sse, warm_up
from nnfit.spectral.hypercube_reader import HyperCubeReader, open_h5_read
from nnfit.spectral.hypercube_reader import warm_up as warm_up_reader
from nnfit.spectral.result import FitResult
from nnfit.spectral.store_checks import check_fitted_data, check_hypercube_shape, check_inputs
from nnfit.spectral.tracker import FitTracker, TrackerConfig, read_checkpoints
from nnfit.validate import as_float_array, check_int, check_real

logger = logging.getLogger(__name__)

__all__ = ["PipelineRunner", "blas_limit"]

_WARM = (None, "auto", "x0", "seed")


@contextlib.contextmanager
def blas_limit(n: int | None):
    """Limit BLAS threads to ``n`` inside the block (``None``: leave them as they are).

    Yields whether a limit was applied.
    """
    if n is None:
        yield False
        return
    check_int("blas_threads", n, low=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n), user_api="blas"):
        yield True


class _Problem:
    """Small in-memory parts of the store: data, mask, noise weights, checkpoints."""

    def __init__(self, path: Path) -> None:
        with open_h5_read(path) as f:
            if "HyperCube/models" not in f:
                raise ValueError(
                    f"{path} has no /HyperCube/models; build it first (`nnfit spectral build`)"
                )
            m = f["HyperCube/models"]
            self.S, self.C, self.P, self.L = check_hypercube_shape(f, path)
            check_inputs(f, path, required=("DataCube",))
            self.S_chunk = int((m.chunks or m.shape)[0])
            if "DataCube" not in f:
                raise ValueError(f"{path} has no /DataCube")
            data = np.asarray(f["DataCube"], dtype=np.float64)
            if data.shape != (self.S, self.L):
                raise ValueError(
                    f"/DataCube has shape {data.shape}, expected (S, L) = {(self.S, self.L)}"
                )
            mask = np.asarray(f["Mask"], dtype=bool) if "Mask" in f else np.ones(self.L, bool)
            if mask.shape != (self.L,):
                raise ValueError(f"/Mask has shape {mask.shape}, expected ({self.L},)")
            noise = np.asarray(f["Noise"], dtype=np.float64) if "Noise" in f else None
            if noise is not None and noise.shape != data.shape:
                raise ValueError(f"/Noise has shape {noise.shape}, expected {data.shape}")
            check_fitted_data(path, data, mask, noise)
            self.checkpoints = read_checkpoints(f)
            self.sample = None
            if "Fit/sample/spaxels" in f:
                self.sample = (
                    np.asarray(f["Fit/sample/spaxels"], dtype=np.int64),
                    np.asarray(f["Fit/sample/val_pixels"], dtype=np.int64),
                )
        if not mask.any():
            raise ValueError("/Mask excludes every pixel; nothing to fit")
        fitted = np.flatnonzero(mask)
        bad = ~np.isfinite(data[:, fitted])
        if bad.any():
            s, j = np.argwhere(bad)[0]
            raise ValueError(
                f"/DataCube has {int(bad.sum())} NaN/Inf values in fitted pixels, first at "
                f"spaxel {s}, pixel {fitted[j]}; mask them in /Mask"
            )
        if noise is not None:
            if noise.shape != (self.S, self.L):
                raise ValueError(f"/Noise has shape {noise.shape}, expected {(self.S, self.L)}")
            sig = noise[:, fitted]
            ok = np.isfinite(sig) & (sig > 0)
            if not ok.all():
                s, j = np.argwhere(~ok)[0]
                raise ValueError(
                    f"/Noise must be finite and > 0 on fitted pixels; spaxel {s}, pixel "
                    f"{fitted[j]} has {sig[s, j]!r}"
                )
            self.w = np.ones((self.S, self.L))
            self.w[:, fitted] = 1.0 / sig
        else:
            self.w = None
        self.data = data
        self.mask = mask
        self.fitted = fitted

    def weights(self, s: int, pix: np.ndarray) -> np.ndarray:
        return np.ones(pix.size) if self.w is None else self.w[s, pix]


class PipelineRunner:
    """Run the global Kaczmarz fit of a store that holds a built HyperCube.

    Parameters
    ----------
    path : path-like
        HDF5 store with ``/HyperCube/models``, ``/DataCube`` and optionally ``/Mask`` and
        ``/Noise``.
    max_bytes_rows : int
        Budget of the gathered rows of one spaxel block (``S_chunk * K * C * P * 4`` bytes);
        above it a block is processed in sub-blocks, each re-reading the block's chunks
        (reported as ``stats["chunk_reads"]``).

    Examples
    --------
    See the README section on the Kaczmarz fit; in short::

        x, stats = PipelineRunner("cube.h5").solve_all(epochs=5, pixels_per_aperture=256)
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes_rows: int = 2 << 30) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such HDF5 store: {self.path}")
        self.max_bytes_rows = check_int("max_bytes_rows", max_bytes_rows, low=1)

    # ------------------------------------------------------------------------------------
    def solve_all(
        self,
        epochs: int = 1,
        pixels_per_aperture: int = 256,
        lr: float = 0.25,
        project_nonneg: bool = True,
        orbit_weights: Any = None,
        row_order: str = "random",
        blas_threads: int | None = None,
        ratio_use: bool | None = None,
        ratio_prob: float = 0.02,
        ratio_eta: float | None = None,
        ratio_anchor: str | int = "auto",
        ratio_min_weight: float = 1e-3,
        ratio_batch: int = 2,
        x0: Any = None,
        warm_start: str | None = None,
        seed: int = 0,
        verbose: bool = True,
        tracker: TrackerConfig | FitTracker | None = None,
        method: str = "kaczmarz",
        on_epoch_end: Callable[[int, np.ndarray, dict], None] | None = None,
        **kwargs: Any,
    ) -> FitResult:
        """Fit one non-negative ``x`` (length ``C*P``) to every spaxel; return ``(x, stats)``
        as a :class:`~nnfit.spectral.FitResult` (it unpacks as ``x, stats = ...``).

        Parameters
        ----------
        epochs : int
            Target number of epochs *of this fit*: a run resumed from a checkpoint of the same
            fit (same knobs, see ``stats["fingerprint"]``) only runs the epochs still missing.
        pixels_per_aperture : int
            ``K``: rows per spaxel per epoch (all fitted pixels if fewer).
        lr : float
            Kaczmarz relaxation, ``0 < lr < 2``.
        project_nonneg : bool
            Clip ``x`` at zero after every row update (and after every ratio step).
        orbit_weights : array (C,), optional
            Per-component target weights: used as ratio targets and for the mass metrics.
        row_order : {"random", "sequential"}
            Pixel selection per spaxel visit (see the module docstring).
        blas_threads : int, optional
            BLAS thread limit (via threadpoolctl; the row loop itself is single-threaded
            compiled code and memory-bandwidth bound).
        ratio_use, ratio_prob, ratio_eta, ratio_anchor, ratio_min_weight, ratio_batch
            Ratio penalty on the component sums; ``ratio_use=None`` turns it on when
            ``orbit_weights`` is given; ``ratio_eta=None`` means ``0.1 * lr``;
            ``ratio_min_weight`` is relative to ``max(orbit_weights)``.
        x0 : array (C*P,) or (C, P), optional
            Starting point. Used when nothing is stored to resume from, or always with
            ``warm_start="x0"``.
        warm_start : {None, "auto", "x0", "seed"}
            ``None``/``"auto"``: resume or warm-start from the store, else ``x0``, else the
            streaming Jacobi seed. Stored vectors are digest-verified (a torn write is
            skipped). Checkpoints of this same fit (same fingerprint) are continued from the
            most advanced position, ties in the order ``/Fit/x_best`` -> ``/X_global`` ->
            ``/Fit/x_latest``; vectors of another fit warm-start in that priority order.
            ``"x0"``: start from ``x0`` (always wins). ``"seed"``: ignore stored vectors.
        seed : int
            Seed of every random draw.
        verbose : bool
            Progress bar (on a terminal) and one summary line per epoch on stderr.
        tracker : TrackerConfig or FitTracker, optional
            Tracking configuration (default :class:`TrackerConfig`); the tracker's writer
            process is also how ``/X_global`` is committed, so it always runs.
        method : str
            ``"kaczmarz"`` (this solver). Other methods are routed to
            ``nnfit.spectral.fit.fit_cube`` with ``x0`` and ``**kwargs``.
        on_epoch_end : callable, optional
            ``on_epoch_end(epoch, x, stats)`` after each epoch (x is a copy).

        Returns
        -------
        FitResult
            ``x`` of shape (C*P,) and ``stats``:
            ``epochs``, ``epochs_run``, ``start`` (source and position), ``train_rmse``,
            ``val_rmse``, ``epoch_time_s`` (lists per epoch run), ``time_s``,
            ``rows_per_epoch``, ``ratio_steps``, ``chunk_reads`` (per epoch),
            ``tracker_waits``, ``tracker_drops`` (always 0: the solver waits instead),
            ``fingerprint`` and the knobs used.
        """
        if method != "kaczmarz":
            return _dispatch_method(self.path, method, x0=x0, **kwargs)
        run = self._setup(
            epochs=epochs,
            pixels_per_aperture=pixels_per_aperture,
            lr=lr,
            project_nonneg=project_nonneg,
            orbit_weights=orbit_weights,
            row_order=row_order,
            ratio_use=ratio_use,
            ratio_prob=ratio_prob,
            ratio_eta=ratio_eta,
            ratio_anchor=ratio_anchor,
            ratio_min_weight=ratio_min_weight,
            ratio_batch=ratio_batch,
            x0=x0,
            warm_start=warm_start,
            seed=seed,
            tracker=tracker,
            max_bytes_rows=kwargs.pop("max_bytes_rows", self.max_bytes_rows),
            extra=kwargs,
        )
        try:
            self._open(run)
            with blas_limit(blas_threads) as applied:
                run.stats["blas_threads_applied"] = applied
                for ep in range(run.start_pos[0], run.epochs):
                    self._epoch(run, ep, verbose=verbose)
                    if on_epoch_end is not None:
                        on_epoch_end(ep, run.x.copy(), run.stats)
        finally:
            if run.reader is not None:
                run.reader.close()
            run.trk.close()
        stats = self._finalize(run)
        x = run.x
        if run.x_start is not None and stats["epochs_run"]:
            x = _keep_better(self.path, run.x_start, run.x, run.keep_src, run.start_ck, stats)
        return FitResult(x, stats)

    # -- the solver's anatomy: setup (validate, fingerprint, start), open (tracker, reader,
    # -- seed), one epoch, finalize (stats) ------------------------------------------------

    def _setup(
        self,
        *,
        epochs: int,
        pixels_per_aperture: int,
        lr: float,
        project_nonneg: bool,
        orbit_weights: Any,
        row_order: str,
        ratio_use: bool | None,
        ratio_prob: float,
        ratio_eta: float | None,
        ratio_anchor: str | int,
        ratio_min_weight: float,
        ratio_batch: int,
        x0: Any,
        warm_start: str | None,
        seed: int,
        tracker: TrackerConfig | FitTracker | None,
        max_bytes_rows: int,
        extra: dict[str, Any],
    ) -> _Run:
        """Check every argument, read the problem, fingerprint the fit, choose the start."""
        if extra:
            raise ValueError(f"unknown solve_all option(s) for method 'kaczmarz': {sorted(extra)}")
        epochs = check_int("epochs", epochs, low=0)
        K = check_int("pixels_per_aperture", pixels_per_aperture, low=1)
        lr = check_real("lr", lr, low=0, low_inclusive=False, high=2, high_inclusive=False)
        seed = check_int("seed", seed, low=0)
        if row_order not in ("random", "sequential"):
            raise ValueError(f"row_order must be 'random' or 'sequential'; got {row_order!r}")
        if warm_start not in _WARM:
            raise ValueError(f"warm_start must be one of {_WARM}; got {warm_start!r}")
        if isinstance(tracker, FitTracker):
            raise ValueError(
                "pass a TrackerConfig: the runner starts its own tracker so that it opens the "
                "store for reading only after the writer"
            )
        cfg = tracker if tracker is not None else TrackerConfig()
        if not isinstance(cfg, TrackerConfig):
            raise ValueError(f"tracker must be a TrackerConfig or None; got {type(cfg).__name__}")

        prob = _Problem(self.path)
        S, C, P = prob.S, prob.C, prob.P
        n = C * P
        w_orb = None
        if orbit_weights is not None:
            w_orb = as_float_array("orbit_weights", orbit_weights, ndim=(1,))
            if w_orb.shape != (C,):
                raise ValueError(f"orbit_weights must have length C = {C}; got {w_orb.shape[0]}")
        use_ratio = (w_orb is not None) if ratio_use is None else bool(ratio_use)
        if use_ratio and w_orb is None:
            raise ValueError("ratio_use=True needs orbit_weights (length C)")
        eta = 0.1 * lr if ratio_eta is None else ratio_eta
        penalty = (
            RatioPenalty(
                w_orb,
                n_populations=P,
                eta=eta,
                anchor=ratio_anchor,
                min_weight=ratio_min_weight,
                batch=ratio_batch,
                prob=ratio_prob,
            )
            if use_ratio
            else None
        )
        x_init = None
        if x0 is not None:
            x_init = as_float_array("x0", x0, ndim=(1, 2)).reshape(-1)
            if x_init.size != n:
                raise ValueError(f"x0 must have C*P = {n} values; got {x_init.size}")
            if (x_init < 0).any() and project_nonneg:
                x_init = np.maximum(x_init, 0.0)
        if warm_start == "x0" and x_init is None:
            raise ValueError("warm_start='x0' needs x0")

        knobs = {
            "dims": [S, C, P, prob.L],
            "K": K,
            "lr": lr,
            "project_nonneg": bool(project_nonneg),
            "row_order": row_order,
            "seed": seed,
            "ratio": None
            if penalty is None
            else [
                w_orb.tolist(),
                eta,
                penalty.anchor_index,
                penalty.min_weight,
                penalty.batch,
                penalty.prob,
            ],
            "mask": hashlib.sha256(prob.mask.tobytes()).hexdigest()[:16],
            "noise": prob.w is not None,
            "sample": [cfg.Ns, cfg.Kval, cfg.diag_seed],
        }
        fp = hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:32]

        start_src, start_pos, x = "seed", (0, 0), None
        if warm_start == "x0":
            start_src, x = "x0", x_init.copy()
        elif warm_start in (None, "auto"):
            ck = prob.checkpoints
            order = ("x_best", "X_global", "x_latest")
            # checkpoints of this same fit: continue from the most advanced one (ties in the
            # spec's priority order); otherwise warm-start in the spec's priority order
            same = [k for k in order if k in ck and ck[k]["fp"] == fp.encode() and ck[k]["pos"]]
            same = [k for k in same if ck[k]["pos"][0] >= 0]
            if same:
                best = max(same, key=lambda k: (ck[k]["pos"], -order.index(k)))
                x, start_src, start_pos = ck[best]["x"].copy(), best, ck[best]["pos"]
            else:
                for name in order:
                    if name in ck and _nonzero(ck[name]["x"]):
                        x, start_src = ck[name]["x"].copy(), name
                        break
            if x is None and x_init is not None:
                start_src, x = "x0", x_init.copy()
        if x is not None and x.size != n:
            raise ValueError(f"stored start vector has {x.size} values, expected {n}")
        continuing = start_src in ("x_best", "X_global", "x_latest") and start_pos != (0, 0)
        # A warm start from a stored solution (an exact fit's /X_global) must not end
        # worse than it started, nor may a resumed run overwrite another solver's /X_global
        # with something worse: remember the candidate to compare at the end.
        stored = start_src in ("x_best", "X_global", "x_latest") and not continuing
        keep_src, x_start = start_src, (x.copy() if x is not None and stored else None)
        other = prob.checkpoints.get("X_global")
        if (
            x_start is None
            and warm_start != "seed"
            and other is not None
            and other["fp"] != fp.encode()
        ):
            keep_src, x_start = "X_global", other["x"].copy()
        start_ck = prob.checkpoints.get(keep_src) if x_start is not None else None

        stats: dict[str, Any] = {
            "method": "kaczmarz",
            "epochs": epochs,
            "pixels_per_aperture": K,
            "lr": lr,
            "row_order": row_order,
            "project_nonneg": bool(project_nonneg),
            "ratio_use": use_ratio,
            "ratio_eta": eta if use_ratio else None,
            "noise_weighted": prob.w is not None,
            "seed": seed,
            "fingerprint": fp,
            "start": {"source": start_src, "epoch": start_pos[0], "spaxel": start_pos[1]},
            "train_rmse": [],
            "val_rmse": [],
            "epoch_time_s": [],
            "epoch_index": [],
            "chunk_reads": [],
            "rows_per_epoch": [],
            "ratio_steps": 0,
        }
        trk = FitTracker(
            self.path, cfg, fingerprint=fp.encode(), reset_best=not continuing, wait=False
        )
        return _Run(
            prob=prob,
            epochs=epochs,
            K=K,
            lr=lr,
            seed=seed,
            row_order=row_order,
            project_nonneg=bool(project_nonneg),
            penalty=penalty,
            w_orb=w_orb,
            x=x,
            start_pos=start_pos,
            stats=stats,
            trk=trk,
            max_bytes_rows=max_bytes_rows,
            t_start=time.perf_counter(),
            x_start=x_start,
            keep_src=keep_src,
            start_ck=start_ck,
        )

    def _open(self, run: _Run) -> None:
        """Start the tracker's writer, open the HyperCube, draw the validation sample and
        (when there is no start vector, or the fit is noise-weighted) the seed's calibration."""
        warm_up()  # load the compiled kernels while the writer process starts
        warm_up_reader()
        trk, prob = run.trk, run.prob
        trk.wait_ready()
        if run.w_orb is not None:
            trk.set_orbit_weights(run.w_orb)
        run.sample_s = np.asarray(trk.sample_spaxels, dtype=np.int64)
        run.val_pix = np.asarray(trk.val_pixels, dtype=np.int64)
        # training pixels per spaxel (held-out pixels removed on the sample spaxels)
        run.train_sample = np.setdiff1d(prob.fitted, run.val_pix)
        run.in_sample = np.zeros(prob.S, dtype=bool)
        run.in_sample[run.sample_s] = True
        if run.train_sample.size == 0:
            raise ValueError("the validation sample leaves no training pixel")
        run.reader = HyperCubeReader(self.path, max_bytes_rows=run.max_bytes_rows)
        run.stats["S_chunk"] = run.reader.S_chunk
        calib = None
        if run.x is None or prob.w is not None:
            calib = _calibrate(run.reader, prob, run.train_pix, run.K, run.seed)
        if run.x is None:
            run.x = calib["x_seed"]
            run.stats["seed_scale"] = calib["scale"]
        run.nu_inv = 0.0 if prob.w is None else 1.0 / calib["nu"]
        run.x = np.ascontiguousarray(run.x, dtype=np.float64)

    def _epoch(self, run: _Run, ep: int, *, verbose: bool) -> None:
        """One pass over every spaxel block (seeded order), resuming mid-epoch if needed;
        then the validation RMSE, a checkpoint and the commit of ``/X_global``."""
        prob, reader, trk, x, stats = run.prob, run.reader, run.trk, run.x, run.stats
        S, K, seed, penalty = prob.S, run.K, run.seed, run.penalty
        skip = run.start_pos[1] if ep == run.start_pos[0] else 0
        t_ep = time.perf_counter()
        reads0 = reader.chunk_reads
        sse_tot, rows_tot, done = 0.0, 0, 0
        rng_e = np.random.default_rng([seed, ep])
        blocks = rng_e.permutation(reader.n_blocks)
        bar = progress(
            total=S,
            desc=f"epoch {ep + 1}/{run.epochs}",
            unit="spaxel",
            enabled=None if verbose else False,
        )
        bar.update(min(skip, S))
        for b in blocks:
            s0, s1 = reader.block_range(int(b))
            ds = s1 - s0
            if done + ds <= skip:
                done += ds
                continue
            rng_b = np.random.default_rng([seed, ep, int(b)])
            local = rng_b.permutation(ds)
            pix_sel = []
            for j in local:
                s = s0 + int(j)
                tp = run.train_pix(s)
                kk = min(K, tp.size)
                if run.row_order == "random":
                    pix_sel.append(rng_b.choice(tp, size=kk, replace=False))
                else:
                    start = (ep * K) % tp.size
                    pix_sel.append(tp[(start + np.arange(kk)) % tp.size])
            first = max(0, skip - done)
            done += first
            todo = np.arange(first, ds)
            n_sub = reader.sub_blocks(todo.size, K)
            for part in np.array_split(todo, n_sub):
                if part.size == 0:
                    continue
                extra = {
                    int(s): run.val_pix
                    for s in run.sample_s
                    if s0 <= s < s1 and int(s) not in run.val_rows
                }
                br = reader.read_block(
                    int(b),
                    [pix_sel[i] for i in part],
                    local=local[part],
                    extra=extra,
                )
                run.val_rows.update({k: v for k, v in br.extra.items()})
                if extra and run.val_ready():
                    run.install_val()
                for jj in range(part.size):
                    s = int(br.spaxels[jj])
                    cnt = int(br.counts[jj])
                    pix = br.pixels[jj, :cnt]
                    wts = prob.weights(s, pix)
                    sse = kaczmarz_rows(
                        x,
                        br.rows[jj, :cnt],
                        prob.data[s, pix],
                        lr=run.lr,
                        weights=wts,
                        rho=wts * wts * run.nu_inv if run.nu_inv else None,
                        project_nonneg=run.project_nonneg,
                        norm_weighted=bool(run.nu_inv),
                    )
                    if penalty is not None:
                        comps = penalty.draw(np.random.default_rng([seed, ep, s, 7]), cnt)
                        if comps.size:
                            penalty.step(x, comps, project_nonneg=run.project_nonneg)
                            stats["ratio_steps"] += int(comps.size)
                    sse_tot += sse
                    rows_tot += cnt
                    done += 1
                    trk.on_batch(math.sqrt(sse / max(cnt, 1)))
                    trk.maybe_save(x, ep + done / S, position=(ep, done))
                    bar.update(1)
                    if (done & 15) == 0:
                        bar.set_postfix(rmse=f"{trk.train_rmse_ewma:.4g}")
        bar.close()
        if not run.val_ready() and run.sample_s.size:
            for s in run.sample_s:
                if int(s) not in run.val_rows:
                    run.val_rows[int(s)] = reader.spaxel_rows(int(s), run.val_pix)
            run.install_val()
        val = trk.validation_rmse(x)
        trk.maybe_save(x, ep + 1, position=(ep + 1, 0), force=True)
        trk.commit_global(x, (ep + 1, 0))
        dt = time.perf_counter() - t_ep
        train = math.sqrt(sse_tot / rows_tot) if rows_tot else math.nan
        stats["train_rmse"].append(train)
        stats["val_rmse"].append(val)
        stats["epoch_time_s"].append(dt)
        stats["epoch_index"].append(ep)
        stats["chunk_reads"].append(reader.chunk_reads - reads0)
        stats["rows_per_epoch"].append(rows_tot)
        if verbose:
            logger.info(
                "epoch %d/%d: train RMSE %.6g, val RMSE %.6g, %.2f s, %d rows",
                ep + 1,
                run.epochs,
                train,
                val,
                dt,
                rows_tot,
            )

    @staticmethod
    def _finalize(run: _Run) -> dict[str, Any]:
        """The run's statistics, tracker counters included."""
        stats, trk = run.stats, run.trk
        stats["epochs_run"] = len(stats["epoch_index"])
        stats["tracker_waits"] = trk.waits
        stats["tracker_wait_sec"] = trk.wait_sec
        stats["tracker_drops"] = trk.drops
        stats["tracker_messages"] = trk.sent
        stats["best_val_rmse"] = trk.best_val
        stats["time_s"] = time.perf_counter() - run.t_start
        stats["rmse"] = stats["train_rmse"][-1] if stats["train_rmse"] else math.nan
        return stats


@dataclass
class _Run:
    """The state of one Kaczmarz fit between :class:`PipelineRunner`'s steps."""

    prob: _Problem
    epochs: int
    K: int
    lr: float
    seed: int
    row_order: str
    project_nonneg: bool
    penalty: RatioPenalty | None
    w_orb: np.ndarray | None
    x: np.ndarray | None
    start_pos: tuple[int, int]
    stats: dict[str, Any]
    trk: FitTracker
    max_bytes_rows: int
    t_start: float
    x_start: np.ndarray | None = None  # a start to keep if the fit ends worse (see _keep_better)
    keep_src: str = ""
    start_ck: dict | None = None
    reader: HyperCubeReader | None = None
    nu_inv: float = 0.0
    sample_s: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    val_pix: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    train_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    in_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    val_rows: dict[int, np.ndarray] = field(default_factory=dict)

    def train_pix(self, s: int) -> np.ndarray:
        """Training pixels of spaxel ``s`` (held-out pixels removed on the sample spaxels)."""
        return self.train_sample if self.in_sample[s] else self.prob.fitted

    def val_ready(self) -> bool:
        return len(self.val_rows) == self.sample_s.size

    def install_val(self) -> None:
        """Hand the validation rows, data and weights of the sample spaxels to the tracker."""
        if not self.sample_s.size or self.val_pix.size == 0:
            return
        rows = np.concatenate([self.val_rows[int(s)] for s in self.sample_s])
        y = np.concatenate([self.prob.data[s, self.val_pix] for s in self.sample_s])
        w = np.concatenate([self.prob.weights(int(s), self.val_pix) for s in self.sample_s])
        self.trk.set_validation(rows, y, w)


def _keep_better(path: Path, x_start, x_fit, source: str, ck, stats: dict) -> np.ndarray:
    """Of the warm start and the fitted vector, keep the one with the smaller objective.

    Kaczmarz epochs are not monotone: started from an exact optimum they can only move away
    from it. The full objective of both is computed (one pass over the HyperCube each); if the
    start is better it is written back as ``/X_global`` (with its stored position and
    fingerprint when it came from the store) and returned. ``stats["kept"]`` says which.
    """
    from nnfit.io.hdf5 import open_h5
    from nnfit.spectral.tracker import _write_vector

    sse_start = evaluate_objective(path, x_start)["sse"]
    sse_fit = evaluate_objective(path, x_fit)["sse"]
    kept = "fit" if sse_fit <= sse_start else "start"
    stats["kept"] = {
        "kept": kept,
        "start_source": source,
        "sse_start": sse_start,
        "sse_fit": sse_fit,
    }
    if kept == "fit":
        return x_fit
    pos = ck["pos"] if ck is not None and ck["pos"] is not None else (0, 0)
    fp = ck["fp"] if ck is not None else b""
    with open_h5(path, "a") as f:
        _write_vector(f, "X_global", np.asarray(x_start, dtype=np.float64), pos, fp)
    logger.info(
        "kept the starting vector (%s): its objective %.10g is below the fit's %.10g",
        source,
        sse_start,
        sse_fit,
    )
    return x_start


def _nonzero(x: np.ndarray) -> bool:
    return bool(np.any(x != 0))


def _calibrate(reader: HyperCubeReader, prob: _Problem, train_pix, K: int, seed: int) -> dict:
    """Streaming Jacobi seed and noise-step constant from one fixed block (seeded).

    Over the K drawn rows of every spaxel of one block: ``d += w^2 a*a``, ``b += w^2 a*y``,
    ``x0 = max(b / (d + eps), 0)``; the seed is then rescaled by the best global factor
    ``alpha = <A x0, y>_w / ||A x0||_w^2`` so that its flux matches the data (the unscaled seed
    overshoots by about C*P). ``nu`` is the largest ``w^2 ||a||^2`` of those rows.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    b = int(rng.integers(reader.n_blocks))
    s0, s1 = reader.block_range(b)
    pix = []
    for s in range(s0, s1):
        tp = train_pix(s)
        pix.append(np.sort(rng.choice(tp, size=min(K, tp.size), replace=False)))
    br = reader.read_block(b, pix)
    n = reader.C * reader.P
    d = np.zeros(n)
    bb = np.zeros(n)
    nu = 0.0
    for j in range(s1 - s0):
        s = s0 + j
        cnt = int(br.counts[j])
        p = br.pixels[j, :cnt]
        A = br.rows[j, :cnt].astype(np.float64)
        w2 = prob.weights(s, p) ** 2
        y = prob.data[s, p]
        d += w2 @ (A * A)
        bb += (w2 * y) @ A
        nu = max(nu, float(np.max(w2 * np.einsum("ij,ij->i", A, A), initial=0.0)))
    eps = 1e-12 * max(float(d.max(initial=0.0)), np.finfo(float).tiny)
    x0 = np.maximum(bb / (d + eps), 0.0)
    num = den = 0.0
    for j in range(s1 - s0):
        s = s0 + j
        cnt = int(br.counts[j])
        p = br.pixels[j, :cnt]
        m = br.rows[j, :cnt].astype(np.float64) @ x0
        w2 = prob.weights(s, p) ** 2
        num += float(np.sum(w2 * m * prob.data[s, p]))
        den += float(np.sum(w2 * m * m))
    scale = max(num / den, 0.0) if den > 0 else 0.0
    if nu <= 0:
        nu = 1.0
    return {"x_seed": x0 * scale, "scale": scale, "nu": nu, "block": b}


def _dispatch_method(path: Path, method: str, **kwargs: Any):
    """Route non-Kaczmarz methods to the exact solver (``nnfit.spectral.fit.fit_cube``)."""
    from nnfit.spectral.fit import fit_cube

    return fit_cube(path, method=method, **kwargs)


def evaluate_objective(path: str | os.PathLike[str], x: np.ndarray) -> dict[str, float]:
    """Weighted sum of squares and RMSE of ``x`` over every fitted pixel (one pass, chunk order).

    Examples
    --------
    See ``tests/spectral/test_runner.py``.
    """
    prob = _Problem(Path(path))
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1))
    sse = 0.0
    count = 0
    with HyperCubeReader(path) as reader:
        for b in range(reader.n_blocks):
            s0, s1 = reader.block_range(b)
            br = reader.read_block(b, [prob.fitted] * (s1 - s0))
            for j in range(s1 - s0):
                s = s0 + j
                sse += residual_sse(
                    x, br.rows[j], prob.data[s, prob.fitted], prob.weights(s, prob.fitted)
                )
                count += prob.fitted.size
    return {"sse": sse, "rmse": math.sqrt(sse / count), "n_rows": count}
