"""Recheck a fixture: file and array hashes, the contract, the sidecar, optionally alignment."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnfit.io import array_sha256, file_sha256
from nnfit.io.jsonfile import read_json_object
from nnfit.io.npz import read_npz, zip_layout_problems
from nnfit.ptycho.contract import CONTRACT
from nnfit.ptycho.subset import STRATEGIES, random_subset

SIDECAR_FIELDS = (
    "version",
    "created",
    "generator_script",
    "generator_commit",
    "source_dataset",
    "subset_strategy",
    "subset_size",
    "transformations",
    "sha256_checksum",
    "validation_notes",
    "subset_indices",
    "arrays",
    "file_size_bytes",
    "contract",
    "contract_version",
    "subset_seed",
    "source_sha256",
    "source_scans",
)


@dataclass(frozen=True)
class Check:
    """One verification step: its name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """Result of :func:`verify_fixture`; ``str(report)`` is the readable report."""

    path: Path
    metadata_path: Path
    checks: list[Check] = field(default_factory=list)
    checksum: str = ""

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def __str__(self) -> str:
        lines = [f"fixture  {self.path}", f"sidecar  {self.metadata_path}"]
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            detail = c.detail.replace("\n", "\n" + " " * (width + 10))
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {detail}")
        failed = sum(not c.ok for c in self.checks)
        lines.append(
            f"OK: all {len(self.checks)} checks passed"
            if not failed
            else f"FAILED: {failed} of {len(self.checks)} checks"
        )
        return "\n".join(lines)


def verify_fixture(
    path: str | os.PathLike[str],
    metadata_path: str | os.PathLike[str] | None = None,
    *,
    alignment: bool = False,
) -> VerifyReport:
    """Recompute a fixture's hashes and check it against the contract and its sidecar.

    Checks: the NPZ reads without pickles; its zip layout is the deterministic one; the
    arrays satisfy :data:`~nnfit.ptycho.contract.CONTRACT`; the sidecar exists with every
    field; the file's sha256 and size and each array's dtype, shape and content hash match
    the sidecar; the subset fields agree with the arrays and with each other (``first`` and
    ``random`` subsets are re-derived from the strategy, seed and ``source_scans``; a
    ``stratified`` one needs the source's coordinates, so only its form is checked); the
    sidecar names the current contract and version. With
    ``alignment``, every pattern must also match the forward model at its own coordinates
    better than at any other scan's (:func:`~nnfit.ptycho.simulate.alignment_residuals`
    with a fitted scale, so any normalisation works).

    Parameters
    ----------
    path : path-like
        The fixture NPZ.
    metadata_path : path-like, optional
        Its sidecar; default ``path`` with the suffix ``.json``.
    alignment : bool
        Also run the forward-model alignment check.

    Returns
    -------
    VerifyReport
        ``report.ok`` and ``str(report)``.

    Raises
    ------
    FileNotFoundError
        If the fixture does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nnfit.ptycho import generate_fixture, simulate_dataset, write_npz
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_npz(tmp / "src.npz", simulate_dataset(n_scans=40, probe_size=16, object_shape=(48, 48)))
    >>> out, _, _ = generate_fixture(tmp / "src.npz", tmp / "mini.npz", n_subset=16)
    >>> verify_fixture(out, alignment=True).ok
    True
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such fixture: {p}")
    meta_p = Path(metadata_path) if metadata_path is not None else p.with_suffix(".json")
    report = VerifyReport(p, meta_p)
    report.checksum = file_sha256(p)

    try:
        arrays = read_npz(p)
    except ValueError as exc:
        report.add("readable NPZ", False, str(exc))
        return report
    report.add("readable NPZ", True, f"{len(arrays)} arrays: {', '.join(sorted(arrays))}")
    layout = zip_layout_problems(p)
    report.add(
        "deterministic layout",
        not layout,
        "sorted members, fixed zip fields, C-ordered little-endian .npy"
        if not layout
        else "\n".join(layout),
    )
    violations = CONTRACT.validate(arrays)
    report.add(
        f"contract {CONTRACT.id}",
        not violations,
        "no violations" if not violations else "\n".join(str(v) for v in violations),
    )

    meta = None
    if not meta_p.is_file():
        report.add("sidecar", False, f"missing: {meta_p}")
    else:
        try:
            meta = read_json_object(meta_p)
        except ValueError as exc:
            report.add("sidecar", False, f"unreadable JSON: {exc}")
            meta = None
    if meta is not None:
        missing = [f for f in SIDECAR_FIELDS if f not in meta]
        steps = meta.get("transformations", [])
        if not isinstance(steps, list) or not all(isinstance(t, str) for t in steps):
            missing.append(f"transformations (a list of strings; found {type(steps).__name__})")
            meta["transformations"] = []
        src_sum = meta.get("source_sha256")
        if "source_sha256" in meta and not (
            isinstance(src_sum, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", src_sum)
        ):
            missing.append(f"source_sha256 (sha256:<64 hex digits>; found {src_sum!r})")
        report.add(
            "sidecar",
            not missing,
            "all fields present"
            if not missing
            else f"missing or malformed fields: {', '.join(missing)}",
        )
        want = meta.get("sha256_checksum")
        report.add(
            "file checksum",
            want == report.checksum,
            report.checksum
            if want == report.checksum
            else f"{report.checksum} != sidecar {want}{_interrupted(p, meta_p)}",
        )
        size = p.stat().st_size
        report.add(
            "file size",
            meta.get("file_size_bytes") == size,
            f"{size} bytes"
            + (
                ""
                if meta.get("file_size_bytes") == size
                else f" != sidecar {meta.get('file_size_bytes')}"
            ),
        )
        recorded = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
        bad = []
        for k in sorted(set(recorded) | set(arrays)):
            if k not in arrays:
                bad.append(f"{k}: in the sidecar, not in the file")
            elif k not in recorded:
                bad.append(f"{k}: in the file, not in the sidecar")
            elif not isinstance(recorded[k], dict):
                bad.append(f"{k}: the sidecar's entry is not an object")
            else:
                a, rec = arrays[k], recorded[k]
                if rec.get("dtype") != a.dtype.str:
                    bad.append(
                        f"{k}: dtype {rec.get('dtype')!r} in the sidecar, {a.dtype.str!r} in the file"
                    )
                if rec.get("shape") != list(a.shape):
                    bad.append(
                        f"{k}: shape {rec.get('shape')} in the sidecar, {list(a.shape)} in the file"
                    )
                if rec.get("sha256") != array_sha256(a):
                    bad.append(f"{k}: content hash differs from the sidecar")
        report.add(
            "array hashes",
            not bad,
            f"{len(arrays)} arrays match (dtype, shape, content hash)"
            if not bad
            else "\n".join(bad),
        )
        n = int(arrays["xcoords"].shape[0]) if "xcoords" in arrays else None
        sub_bad, how = _subset_problems(meta, arrays, n)
        report.add(
            "subset",
            not sub_bad,
            f"{n} scans, strategy {meta.get('subset_strategy')}{how}"
            if not sub_bad
            else "\n".join(sub_bad),
        )
        name, cv = meta.get("contract"), meta.get("contract_version")
        same = name == CONTRACT.name and cv == CONTRACT.version
        report.add(
            "contract version",
            same,
            f"{CONTRACT.id}"
            if same
            else f"sidecar says contract {name!r} version {cv!r}; this nnfit checks {CONTRACT.id}",
        )

    if alignment:
        _check_alignment(report, arrays, violations)
    return report


def _check_alignment(report: VerifyReport, arrays: dict, violations: list) -> None:
    from nnfit.ptycho.simulate import alignment_residuals

    if violations:
        report.add("alignment", False, "skipped: the contract check failed")
        return
    try:
        r = alignment_residuals(
            arrays["diffraction"],
            arrays["probeGuess"],
            arrays["objectGuess"],
            arrays["xcoords"],
            arrays["ycoords"],
            fit_scale=True,
        )
    except ValueError as exc:
        report.add("alignment", False, str(exc))
        return
    n = r.shape[0]
    own = np.diag(r)
    others = np.where(np.eye(n, dtype=bool), np.inf, r).min(axis=1) if n > 1 else own + np.inf
    wrong = np.flatnonzero(own >= others)
    if wrong.size:
        report.add(
            "alignment",
            False,
            f"{wrong.size} of {n} patterns match another scan's coordinates better than their own "
            f"(first: pattern {int(wrong[0])})",
        )
        return
    with np.errstate(divide="ignore"):
        margin = float(np.min(others / np.maximum(own, np.finfo(float).tiny)))
    report.add(
        "alignment",
        True,
        f"every pattern fits its own coordinates best (worst margin {margin:.3g}x)",
    )


def _interrupted(path: Path, metadata_path: Path) -> str:
    """A hint when a killed ``make`` left temporary files beside the pair (see subset.py)."""
    left = sorted(
        q.name
        for f in (path, metadata_path)
        for q in f.parent.glob(f".{glob.escape(f.name)}.*.tmp*")
    )
    if not left:
        return ""
    return (
        f" (an interrupted nnfit ptycho make left {', '.join(left)}: run that make again "
        "with --overwrite to write a matching pair)"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _subset_problems(meta: dict, arrays: dict, n: int | None) -> tuple[list[str], str]:
    """What is wrong with the sidecar's subset fields, and how far they were checked.

    ``first`` and ``random`` subsets are re-derived from ``subset_strategy``,
    ``subset_seed``, ``source_scans`` and ``subset_size``; a ``stratified`` one depends on
    every source coordinate, so only its form is checked (sorted, distinct, inside the
    source) along with the combinations ``make`` refuses (a seed without ``random``).
    """
    bad: list[str] = []
    size, idx = meta.get("subset_size"), meta.get("subset_indices")
    total = meta.get("source_scans")
    strategy, seed = meta.get("subset_strategy"), meta.get("subset_seed")
    if not _is_int(size) or size != n:
        bad.append(f"subset_size {size!r} != N={n}")
    if not isinstance(idx, list) or not all(_is_int(i) for i in idx):
        found = type(idx).__name__ if not isinstance(idx, list) else "a list with non-integers"
        bad.append(f"subset_indices must be a list of integers (scan numbers); found {found}")
        idx = None
    elif len(idx) != n:
        bad.append(f"subset_indices has {len(idx)} entries, N={n}")
    elif len(set(idx)) != len(idx):
        bad.append("subset_indices has repeats")
    elif idx != sorted(idx):
        bad.append("subset_indices is not in scan order (make keeps the indices sorted)")
    elif "scan_index" in arrays and any(
        "scan_index: added" in t for t in meta.get("transformations", [])
    ):
        if not np.array_equal(arrays["scan_index"], np.asarray(idx)):
            bad.append("scan_index differs from subset_indices")
    if not _is_int(total) or total < (n or 0):
        bad.append(f"source_scans must be an integer >= N={n}; found {total!r}")
        total = None
    elif idx and (min(idx) < 0 or max(idx) >= total):
        bad.append(f"subset_indices must lie in [0, {total - 1}] (source_scans {total})")
    if strategy not in STRATEGIES:
        bad.append(f"subset_strategy must be one of {', '.join(STRATEGIES)}; found {strategy!r}")
    elif strategy != "random" and seed is not None:
        bad.append(
            f"subset_seed {seed!r} with subset_strategy {strategy!r}: make records a seed only "
            "for 'random' (it refuses --seed with any other strategy)"
        )
    elif strategy == "random" and not (_is_int(seed) and seed >= 0):
        bad.append(f"subset_seed must be an integer >= 0 for 'random'; found {seed!r}")
    if bad or strategy == "stratified" or idx is None or total is None or n is None:
        return bad, "" if bad else "; stratified indices need the source to re-derive"
    want = list(range(n)) if strategy == "first" else random_subset(total, n, seed).tolist()
    if idx != want:
        k = next(i for i, (a, b) in enumerate(zip(idx, want, strict=True)) if a != b)
        what = "'first'" if strategy == "first" else f"'random' with seed {seed}"
        bad.append(
            f"subset_indices are not the {n} of {total} scans that {what} selects "
            f"(entry {k} is {idx[k]}, expected {want[k]})"
        )
    return bad, "; indices re-derived"
