"""Reading small JSON files (sidecars, parameter files, run state) without surprises."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_object"]

_MAX_BYTES = 64 << 20


def read_json_object(
    path: str | os.PathLike[str], *, max_bytes: int = _MAX_BYTES
) -> dict[str, Any]:
    """Read a JSON file that must hold one object; every failure is a one-line error.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file: larger than ``max_bytes``, not UTF-8, not JSON, nested too deeply
        for the parser, or not a JSON object.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = p.write_text('{"a": [1, 2]}')
    >>> read_json_object(p)
    {'a': [1, 2]}
    >>> _ = p.write_text("[" * 100000)
    >>> read_json_object(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...m.json: not valid JSON (nested too deeply)
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such JSON file")
    size = p.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{p}: {size} bytes is too large for a JSON sidecar (limit {max_bytes})")
    try:
        obj: Any = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not UTF-8 text, so not a JSON file") from None
    except RecursionError:
        raise ValueError(f"{p}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: must hold a JSON object; found a {type(obj).__name__}")
    return obj
