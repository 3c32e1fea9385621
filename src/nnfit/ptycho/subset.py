"""Cut a small, deterministic, contract-checked fixture from a large ptychography NPZ.

The fixture keeps ``n_subset`` scans of the source, chosen by one index vector that selects
every per-scan array (diffraction, coordinates, ``*_start``, ``scan_index``, ``Y``), so each
pattern stays with its own coordinates. Diffraction goes to the canonical (N, H, W) float32,
probe and object to complex64; coordinates stay float64. The NPZ bytes depend only on the
source arrays and the arguments (see :mod:`nnfit.io.npz`); everything volatile (time,
paths, commit) lives in the JSON sidecar.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nnfit import __version__
from nnfit.io import (
    array_sha256,
    bytes_sha256,
    file_sha256,
    remove_stale_temporaries,
    replace_together,
)
from nnfit.io.hdf5 import is_hdf5
from nnfit.io.lock import run_lock
from nnfit.io.npz import encode_npz, open_npz
from nnfit.ptycho.contract import CONTRACT, LAYOUT_AXES, Violation, resolve_layout
from nnfit.ptycho.result import FixtureResult
from nnfit.ptycho.simulate import centre_limits, patches_outside
from nnfit.validate import check_int

STRATEGIES = ("first", "stratified", "random")
MIN_SUBSET = 16
SIDECAR_VERSION = "v1"
PER_SCAN_KEYS = ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "scan_index")

logger = logging.getLogger(__name__)


class ContractViolationError(ValueError):
    """An input breaks the DATA-001 contract; ``violations`` lists every broken rule."""

    def __init__(self, what: str, violations: list[Violation]):
        self.violations = list(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(
            f"{what} breaks {CONTRACT.id} ({len(self.violations)} problem(s)):\n{lines}"
        )


def compute_sha256(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of a file as ``sha256:<hex>`` (the sidecar's ``sha256_checksum``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "empty.npz"
    >>> _ = p.write_bytes(b"")
    >>> compute_sha256(p)
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return file_sha256(path)


def validate_subset_size(n_subset: int, n_total: int) -> int:
    """Check that ``16 <= n_subset <= n_total`` and return ``n_subset``.

    Raises
    ------
    ValueError
        If the subset is too small for grouping tests or larger than the dataset.

    Examples
    --------
    >>> validate_subset_size(64, 1087)
    64
    >>> validate_subset_size(8, 1087)
    Traceback (most recent call last):
    ...
    ValueError: subset size 8 < 16: too few scans for grouping tests (--subset-size, subset_size=)
    """
    n_subset = check_int("subset size", n_subset)
    n_total = check_int("dataset size", n_total, low=0)
    if n_subset < MIN_SUBSET:
        raise ValueError(
            f"subset size {n_subset} < {MIN_SUBSET}: too few scans for grouping tests "
            f"(--subset-size, subset_size=)"
        )
    if n_subset > n_total:
        raise ValueError(
            f"subset size {n_subset} exceeds the dataset's {n_total} scans: give "
            f"--subset-size (subset_size=) between {MIN_SUBSET} and {n_total}"
        )
    return n_subset


def validate_source(
    source_path: str | os.PathLike[str], *, layout: str | None = None
) -> dict[str, np.ndarray]:
    """Open a source dataset, check it against the contract and return its arrays.

    Members stored without compression are memory-mapped read-only (see
    :func:`~nnfit.io.npz.open_npz`), so a large source is streamed, not loaded.

    Accepted: ``diffraction`` or ``diff3d`` as (H, W, N) or (N, H, W) float32/float64
    amplitudes, complex probe and object, real coordinates (see
    :meth:`~nnfit.ptycho.contract.DataContract.validate` with ``role="source"``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable NPZ, or breaks the contract (a
        :class:`ContractViolationError` listing every problem: missing keys, a 2-D stack,
        pattern/coordinate count mismatch, NaN, negative values, intensities, ...).
    """
    path = Path(source_path)
    if not path.exists():
        raise FileNotFoundError(f"source dataset not found: {path}")
    fix = (
        f"a ptychodus product and its patterns become a source with: nnfit ptycho import "
        f"--product {path} --patterns PATTERNS --out SOURCE.npz"
    )
    if is_hdf5(path):
        raise ValueError(f"{path} is an HDF5 file, not a DATA-001 source NPZ; {fix}")
    arrays = open_npz(path)
    if "probe_position_x_m" in arrays:
        raise ValueError(f"{path} is a ptychodus product (positions in metres); {fix}")
    problems = CONTRACT.validate(arrays, role="source", layout=layout)
    if problems:
        what = f"source {path}"
        if any(arrays[k].dtype.kind in "iu" for k in CONTRACT.diffraction_aliases if k in arrays):
            what += (
                " (it holds detector counts, as ptychodus's PtychoPINN training-data export "
                "does; from ptychodus, build the source from the product and its patterns: "
                "nnfit ptycho import --product PRODUCT --patterns PATTERNS --out SOURCE.npz)"
            )
        raise ContractViolationError(what, problems)
    return arrays


def select_subset(
    xcoords: np.ndarray,
    ycoords: np.ndarray,
    n_subset: int,
    strategy: str = "first",
    seed: int | None = None,
) -> np.ndarray:
    """Return the sorted int64 indices of the scans a fixture keeps.

    Parameters
    ----------
    xcoords, ycoords : ndarray, shape (N,)
        Scan centres.
    n_subset : int
        How many scans to keep (at least 16, at most N).
    strategy : {"first", "stratified", "random"}
        ``first``: scans ``0 .. n_subset - 1`` (neighbours overlap, as grouping tests need).
        ``stratified``: spread over the scanned area by farthest-point sampling, starting at
        the scan nearest the centre of the coordinates' bounding box, ties to the lower
        index (deterministic). ``random``: a uniform draw without replacement from
        ``numpy.random.default_rng(seed)``.
    seed : int, optional
        Only for ``random`` (default 0).

    Examples
    --------
    >>> x = np.tile(np.arange(10.0), 10); y = np.repeat(np.arange(10.0), 10)
    >>> select_subset(x, y, 16)[:5].tolist()
    [0, 1, 2, 3, 4]
    >>> idx = select_subset(x, y, 16, "stratified")
    >>> sorted({(int(x[i]) // 5, int(y[i]) // 5) for i in idx})  # every quadrant is covered
    [(0, 0), (0, 1), (1, 0), (1, 1)]
    """
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    n_total = x.shape[0]
    n_subset = validate_subset_size(n_subset, n_total)
    if strategy not in STRATEGIES:
        raise ValueError(f"subset strategy must be one of {STRATEGIES}; got {strategy!r}")
    if strategy != "random" and seed is not None:
        raise ValueError(f"seed is only used by the 'random' strategy, not {strategy!r}")
    if strategy == "first":
        return np.arange(n_subset, dtype=np.int64)
    if strategy == "random":
        return random_subset(n_total, n_subset, 0 if seed is None else seed)
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    chosen = [int(np.argmin((x - cx) ** 2 + (y - cy) ** 2))]
    mind = (x - x[chosen[0]]) ** 2 + (y - y[chosen[0]]) ** 2
    mind[chosen[0]] = -1.0
    for _ in range(n_subset - 1):
        j = int(np.argmax(mind))
        chosen.append(j)
        mind = np.minimum(mind, (x - x[j]) ** 2 + (y - y[j]) ** 2)
        mind[chosen] = -1.0
    return np.sort(np.array(chosen, dtype=np.int64))


def random_subset(n_total: int, n_subset: int, seed: int) -> np.ndarray:
    """The sorted int64 indices of the ``random`` strategy: ``n_subset`` of ``n_total`` scans.

    A uniform draw without replacement from ``numpy.random.default_rng(seed)``; it needs no
    coordinates, so ``verify`` can redraw it from the sidecar's ``source_scans`` and
    ``subset_seed``.

    Examples
    --------
    >>> random_subset(100, 16, 7).tolist() == random_subset(100, 16, 7).tolist()
    True
    """
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    return np.sort(rng.choice(n_total, size=n_subset, replace=False)).astype(np.int64)


def _git_commit() -> str:
    """The git SHA of the checkout this package runs from, else ``"unknown"``."""
    folder = Path(__file__).resolve().parent
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", Path(__file__).name],
            cwd=folder,
            capture_output=True,
            timeout=10,
        )
        if tracked.returncode != 0:
            return "unknown"
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = head.stdout.strip()
    return sha if head.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"


def _same_type(found: np.dtype, want: object) -> bool:
    """Same kind and size, whatever the byte order."""
    w = np.dtype(want)
    return found.kind == w.kind and found.itemsize == w.itemsize


def build_fixture_arrays(
    source: Mapping[str, np.ndarray], indices: np.ndarray, *, layout: str | None = None
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Transform validated source arrays into the fixture's arrays.

    Returns ``(arrays, transformations, dropped_keys)``; ``arrays`` are canonical (C-contiguous,
    little-endian) and in the contract's dtypes. ``indices`` select every per-scan array.

    Examples
    --------
    >>> from nnfit.ptycho import simulate_dataset
    >>> src = simulate_dataset(n_scans=30, probe_size=16, object_shape=(40, 40))
    >>> arrays, notes, dropped = build_fixture_arrays(src, np.array([2, 5, 7]))
    >>> arrays["diffraction"].shape, arrays["scan_index"].tolist(), notes[0]
    ((3, 16, 16), [2, 5, 7], 'diffraction: transpose (H,W,N) -> (N,H,W)')
    """
    idx = np.asarray(indices, dtype=np.int64)
    dkey = "diffraction" if "diffraction" in source else "diff3d"
    diff = source[dkey]
    n_total = int(np.asarray(source["xcoords"]).shape[0])
    lay = resolve_layout(diff.shape, n_total, layout)
    notes: list[str] = []
    if dkey != "diffraction":
        notes.append(f"{dkey}: renamed to diffraction")

    def stack(a: np.ndarray, dtype: type, name: str) -> np.ndarray:
        sub = a[:, :, idx].transpose(2, 0, 1) if lay == "legacy" else a[idx]
        if not _same_type(a.dtype, dtype):
            notes.append(f"{name}: dtype {a.dtype.name} -> {np.dtype(dtype).name}")
        return np.ascontiguousarray(sub, dtype=np.dtype(dtype).newbyteorder("<"))

    if lay == "legacy":
        notes.append("diffraction: transpose (H,W,N) -> (N,H,W)")
    out: dict[str, np.ndarray] = {"diffraction": stack(diff, np.float32, "diffraction")}
    if "Y" in source:
        if lay == "legacy":
            notes.append("Y: transpose (H,W,N) -> (N,H,W)")
        out["Y"] = stack(source["Y"], np.complex64, "Y")
    for k in ("objectGuess", "probeGuess"):
        a = source[k]
        if not _same_type(a.dtype, np.complex64):
            notes.append(f"{k}: dtype {a.dtype.name} -> complex64")
        out[k] = np.ascontiguousarray(a, dtype="<c8")
    for k in PER_SCAN_KEYS:
        if k not in source:
            continue
        a = np.asarray(source[k])
        want = "<i8" if k == "scan_index" else "<f8"
        if not _same_type(a.dtype, want):
            notes.append(f"{k}: dtype {a.dtype.name} -> {np.dtype(want).name}")
        out[k] = np.ascontiguousarray(a[idx], dtype=want)
    if "scan_index" not in source:
        out["scan_index"] = idx.astype("<i8")
        notes.append("scan_index: added (each pattern's scan number in the source)")
    per_scan = [k for k in ("diffraction", "Y", *PER_SCAN_KEYS) if k in out]
    contiguous = idx.size and np.array_equal(idx, np.arange(idx.size))
    which = f"[0:{idx.size}]" if contiguous else f"{idx.size} of {n_total} (see subset_indices)"
    notes.append(f"{', '.join(per_scan)}: subset indices {which}")
    known = set(CONTRACT.key_names) | {"diff3d"}
    dropped = sorted(k for k in source if k not in known)
    if dropped:
        notes.append(f"dropped keys outside {CONTRACT.id}: {', '.join(dropped)}")
    return out, notes, dropped


def generate_fixture(
    source_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    n_subset: int = 64,
    subset_strategy: str = "first",
    seed: int | None = None,
    metadata_out: str | os.PathLike[str] | None = None,
    layout: str | None = None,
    *,
    overwrite: bool = False,
) -> FixtureResult:
    """Cut a deterministic DATA-001 fixture from ``source_path``.

    Parameters
    ----------
    source_path : path-like
        Source NPZ (legacy (H, W, N) or canonical (N, H, W); ``diff3d`` accepted).
    output_path : path-like
        Fixture NPZ to write; parent folders are created.
    n_subset : int
        Scans to keep, 16 to N.
    subset_strategy : {"first", "stratified", "random"}
        See :func:`select_subset`.
    seed : int, optional
        Seed of the ``random`` strategy (default 0); recorded in the sidecar.
    metadata_out : path-like, optional
        Sidecar JSON; default ``output_path`` with the suffix ``.json``.
    layout : {"legacy", "canonical"}, optional
        Only needed when the source's layout is ambiguous (N == H).
    overwrite : bool
        Replace existing output files; otherwise an existing one is an error.

    Returns
    -------
    FixtureResult
        Fixture path, sidecar path and the fixture's ``sha256:<hex>`` (it unpacks as that
        triple, the design's return value), the sidecar and ``time_s``.

    Raises
    ------
    FileNotFoundError, FileExistsError, ValueError
        Missing source; existing output without ``overwrite``; any bad input or argument.
        Nothing is written in any of these cases.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.ptycho import simulate_dataset, write_npz
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_npz(tmp / "src.npz", simulate_dataset(n_scans=40, probe_size=16, object_shape=(48, 48)))
    >>> out, meta, checksum = generate_fixture(tmp / "src.npz", tmp / "fx" / "mini.npz", n_subset=16)
    >>> meta.name, checksum.startswith("sha256:")
    ('mini.json', True)
    """
    return _generate(
        source_path,
        output_path,
        n_subset,
        subset_strategy,
        seed,
        metadata_out,
        layout,
        overwrite=overwrite,
        command=None,
    )


def _generate(
    source_path,
    output_path,
    n_subset,
    subset_strategy,
    seed,
    metadata_out,
    layout,
    *,
    overwrite: bool,
    command: str | None,
) -> FixtureResult:
    start = time.perf_counter()
    src = Path(source_path)
    out = Path(output_path)
    meta_path = Path(metadata_out) if metadata_out is not None else out.with_suffix(".json")
    if subset_strategy not in STRATEGIES:
        raise ValueError(f"subset strategy must be one of {STRATEGIES}; got {subset_strategy!r}")
    if subset_strategy != "random" and seed is not None:
        raise ValueError(f"seed is only used by the 'random' strategy, not {subset_strategy!r}")
    if subset_strategy == "random":
        seed = 0 if seed is None else check_int("seed", seed, low=0)
    if layout is not None and layout not in LAYOUT_AXES:
        raise ValueError(f"layout must be 'legacy' or 'canonical'; got {layout!r}")
    for p in (out, meta_path):
        if p.is_dir():
            raise ValueError(f"{p} is a folder; give a file name for the output")
    if out.resolve() == meta_path.resolve():
        raise ValueError(f"the fixture and its sidecar cannot both be {out}")
    if src.exists() and src.resolve() in (out.resolve(), meta_path.resolve()):
        raise ValueError(f"refusing to write over the source dataset {src}")
    if not overwrite:
        for p in (out, meta_path):
            if p.exists():
                raise FileExistsError(
                    f"{p} already exists; pass --overwrite (overwrite=True) to replace it"
                )

    source = validate_source(src, layout=layout)
    n_total = int(source["xcoords"].shape[0])
    indices = select_subset(source["xcoords"], source["ycoords"], n_subset, subset_strategy, seed)
    arrays, transformations, dropped = build_fixture_arrays(source, indices, layout=layout)
    problems = CONTRACT.validate(arrays)
    if problems:  # e.g. a float64 max of 9.99999999 that rounds to 10.0 in float32
        raise ContractViolationError("the fixture cut from this source", problems)
    _check_patches_inside(arrays, indices)
    dkey = "diffraction" if "diffraction" in source else "diff3d"
    src_layout = resolve_layout(source[dkey].shape, n_total, layout)
    payload = encode_npz(arrays)
    checksum = bytes_sha256(payload)
    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    meta = {
        "version": SIDECAR_VERSION,
        "created": created,
        "generator_script": command or f"nnfit.ptycho.generate_fixture (nnfit {__version__})",
        "generator_commit": _git_commit(),
        "source_dataset": str(src),
        "source_sha256": file_sha256(src),
        "source_layout": f"{src_layout} {LAYOUT_AXES[src_layout]}",
        "source_scans": n_total,
        "subset_strategy": subset_strategy,
        "subset_seed": seed,
        "subset_size": int(indices.size),
        "subset_indices": [int(i) for i in indices],
        "transformations": transformations,
        "sha256_checksum": checksum,
        "file_size_bytes": len(payload),
        "arrays": {
            k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": array_sha256(a)}
            for k, a in sorted(arrays.items())
        },
        "contract": CONTRACT.name,
        "contract_version": CONTRACT.version,
        "validation_notes": (
            f"Compliant with {CONTRACT.id} (nnfit.ptycho.contract): the source passed the "
            "source rules and the fixture the fixture rules with no violations"
            + (f"; dropped keys outside the contract: {', '.join(dropped)}" if dropped else "")
            + ". Check with: nnfit ptycho verify <fixture>"
        ),
    }
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        run_lock(_lock_path(out), what=f"fixture {out}"),
        run_lock(_lock_path(meta_path), what=f"sidecar {meta_path}"),
    ):
        if not overwrite:  # another run may have written them since the check above
            for p in (out, meta_path):
                if p.exists():
                    raise FileExistsError(
                        f"{p} already exists; pass --overwrite (overwrite=True) to replace it"
                    )
        for p in (out, meta_path):
            remove_stale_temporaries(p)
        replace_together([(out, payload), (meta_path, text.encode("utf-8"))])
    return FixtureResult(out, meta_path, checksum, meta, time.perf_counter() - start)


def _check_patches_inside(arrays: Mapping[str, np.ndarray], indices: np.ndarray) -> None:
    """Refuse a fixture whose probe-sized patches reach outside the object.

    The contract asks only that the centres lie inside ``objectGuess``; the forward model
    (and ``nnfit ptycho verify --alignment``) needs the whole patch inside, so a fixture that
    breaks this rule could never pass the alignment check.
    """
    x, y = arrays["xcoords"], arrays["ycoords"]
    obj, probe = arrays["objectGuess"].shape, arrays["probeGuess"].shape
    bad = patches_outside(x, y, obj, probe)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    (xlo, xhi), (ylo, yhi) = centre_limits(obj, probe)
    span = max(float(np.ptp(x)), float(np.ptp(y)))
    if x.size > 1 and span < 1:
        hint = (
            f"the coordinates span only {span:.3g}, less than one pixel: they look like metres "
            "(or another physical unit), not object pixels. Convert xcoords and ycoords in the "
            "source to object pixels (x / pixel_size + the origin's column, likewise y) and "
            "run make again"
        )
    else:
        hint = (
            "check that xcoords and ycoords are patch centres in object pixels (x = column, "
            "y = row), not metres or top-left corners, or keep scans away from the object's "
            "edge (--strategy, --subset-size)"
        )
    raise ValueError(
        f"{int(bad.sum())} of {x.size} kept scans put their {probe[0]}x{probe[1]} probe patch "
        f"outside the {obj[0]}x{obj[1]} objectGuess (first: scan {int(indices[i])} at "
        f"x={x[i]:g}, y={y[i]:g}); the forward model and verify --alignment need centres in "
        f"x in [{xlo}, {xhi}] and y in [{ylo}, {yhi}] object pixels; {hint}"
    )


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"
