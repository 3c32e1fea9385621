"""Keep the API reference complete: every public name must appear on an ``api/`` page.

The pages in ``docs/api/`` group names by role by hand. At build start this extension reads
every ``.. autosummary::`` list there and warns (an error under ``-W``) for each name in a
documented module's ``__all__`` that no page lists, so a new public function cannot go
undocumented.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# Modules whose ``__all__`` is the public surface the reference must cover.
PUBLIC_MODULES = (
    "nnfit.calcium",
    "nnfit.spectral",
    "nnfit.ptycho",
    "nnfit.operators",
    "nnfit.solvers.kaczmarz",
    "nnfit.solvers.nnls",
    "nnfit.solvers.pgd",
    "nnfit.io",
    "nnfit.io.npz",
    "nnfit.parallel",
)

_CURRENTMODULE = re.compile(r"^\.\. (?:current)?module:: (\S+)")


def listed_names(api_dir: Path) -> set[str]:
    """Fully qualified names listed under ``autosummary`` directives in ``api_dir/*.rst``."""
    names: set[str] = set()
    for page in sorted(api_dir.glob("*.rst")):
        module = ""
        in_list = False
        for line in page.read_text(encoding="utf-8").splitlines():
            m = _CURRENTMODULE.match(line)
            if m:
                module, in_list = m.group(1), False
            elif line.startswith(".. autosummary::"):
                in_list = True
            elif in_list and line.startswith("   ") and line.strip():
                entry = line.strip()
                if not entry.startswith(":"):
                    names.add(f"{module}.{entry}" if module else entry)
            elif in_list and line.strip() and not line.startswith(" "):
                in_list = False
    return names


def check_api_pages(app: Sphinx) -> None:
    listed = listed_names(Path(app.srcdir) / "api")
    for modname in PUBLIC_MODULES:
        public = getattr(importlib.import_module(modname), "__all__", ())
        for name in public:
            if f"{modname}.{name}" not in listed:
                logger.warning(
                    "%s.%s is public (in __all__) but listed on no docs/api page; "
                    "add it to the autosummary of its capability's page",
                    modname,
                    name,
                )


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("builder-inited", check_api_pages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
