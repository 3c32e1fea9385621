"""Output paths that would destroy an input are refused before any work starts."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["input_files", "refuse_output_over_input"]


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def input_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files an input names: the file itself, or every file directly inside a folder.

    A stem (``dir/session1`` for ``dir/session1.npy`` and its sidecar) names the files
    that start with it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.npy").write_bytes(b""); _ = (d / "a_metadata.json").write_bytes(b"")
    >>> sorted(p.name for p in input_files(d / "a"))
    ['a.npy', 'a_metadata.json']
    """
    p = Path(path)
    if p.is_dir():
        return [q for q in p.iterdir() if q.is_file()]
    if p.is_file():
        return [p]
    if p.parent.is_dir():
        return [q for q in p.parent.glob(f"{p.name}*") if q.is_file()]
    return []


def refuse_output_over_input(
    outputs: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    what: str = "--out",
) -> None:
    """Raise ``ValueError`` if writing any of ``outputs`` would replace one of ``inputs``.

    Compares files by identity (same inode through links and relative paths) where both
    exist, by resolved path otherwise.

    Parameters
    ----------
    outputs : iterable of path-like
        Files the command is about to write.
    inputs : iterable of path-like
        Files it reads.
    what : str
        The argument that chose the outputs, for the message.

    Examples
    --------
    >>> refuse_output_over_input(["a.png"], ["a.h5"])
    >>> refuse_output_over_input(["./a.h5"], ["a.h5"], what="--out")
    Traceback (most recent call last):
    ...
    ValueError: --out a.h5 is an input of this command (a.h5); writing it would destroy the input. Choose another path
    """
    ins = [Path(i) for i in inputs]
    for out in outputs:
        o = Path(out)
        for i in ins:
            if _same(o, i):
                raise ValueError(
                    f"{what} {o} is an input of this command ({i}); writing it would destroy "
                    "the input. Choose another path"
                )
