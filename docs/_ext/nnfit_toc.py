"""New workflow pages appear without editing an index.

Each capability's ``index.rst`` (``calcium``, ``spectral``, ``ptycho``) ends with a toctree
that lists its pages in reading order. When a page in that folder is not listed there, this
extension appends it to that last toctree, so dropping ``docs/<capability>/<topic>.rst`` is
enough to publish it (listed pages keep their place; new ones follow in name order).
"""

from __future__ import annotations

import re

from sphinx.application import Sphinx

SECTIONS = ("calcium", "spectral", "ptycho")


def add_unlisted_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    section, _, page = docname.partition("/")
    if section not in SECTIONS or page != "index":
        return
    text = source[0]
    listed = set(re.findall(r"^   (\S+)\s*$", text, flags=re.MULTILINE))
    extra = sorted(
        doc.partition("/")[2]
        for doc in app.env.found_docs
        if doc.startswith(f"{section}/") and doc != docname and doc.count("/") == 1
    )
    new = [name for name in extra if name not in listed]
    if new:
        source[0] = text.rstrip("\n") + "\n" + "".join(f"   {name}\n" for name in new)


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", add_unlisted_pages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
