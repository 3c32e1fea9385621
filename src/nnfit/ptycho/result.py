"""The result of cutting a fixture: :class:`FixtureResult`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FixtureResult"]


@dataclass(frozen=True)
class FixtureResult:
    """What :func:`~nnfit.ptycho.generate_fixture` wrote.

    It unpacks and indexes as the design's triple ``(output_path, metadata_path, checksum)``,
    so ``out, meta, checksum = generate_fixture(...)`` keeps working.

    Attributes
    ----------
    path : pathlib.Path
        The fixture NPZ.
    metadata_path : pathlib.Path
        Its JSON sidecar.
    checksum : str
        ``sha256:<hex>`` of the fixture's bytes (also in the sidecar).
    metadata : dict
        The sidecar as written (subset indices, transformations, per-array digests...).
    time_s : float
        Wall-clock seconds of the cut, reading the source included.

    Examples
    --------
    >>> r = FixtureResult(Path("fx.npz"), Path("fx.json"), "sha256:00", {}, 0.1)
    >>> out, meta, checksum = r
    >>> out.name, r[2], len(r)
    ('fx.npz', 'sha256:00', 3)
    """

    path: Path
    metadata_path: Path
    checksum: str
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    time_s: float = 0.0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.path, self.metadata_path, self.checksum))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        return (self.path, self.metadata_path, self.checksum)[index]
