"""Sphinx configuration for the nnfit documentation (``make docs``).

The build must pass offline with warnings as errors, so nothing here needs the network:
intersphinx links are added only when ``NNFIT_DOCS_INTERSPHINX=1`` is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# A source checkout documents its own code even when another nnfit is installed.
sys.path.insert(0, str(HERE.parent / "src"))

import nnfit  # noqa: E402

project = "nnfit"
author = "nnfit developers"
copyright = "nnfit developers"
release = nnfit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "nnfit_cli",
    "nnfit_api",
    "nnfit_toc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {
    "description": "Non-negative fitting of scientific signals",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []

# API reference: autosummary writes one stub page per public name into api/generated/.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

# Offline by default. Set NNFIT_DOCS_INTERSPHINX=1 (with network) to link numpy, scipy, ...
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
if os.environ.get("NNFIT_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "h5py": ("https://docs.h5py.org/en/stable", None),
        "astropy": ("https://docs.astropy.org/en/stable", None),
    }
