#!/usr/bin/env -S uv run --script
# /// script
# dependencies = ["nox>=2025.10.14"]
# ///
"""Task runner sessions mirroring ``make test``: ``nox -s lint``, ``nox -s tests``, ``nox -s docs``."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.10.14"
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON, default=True)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check, and mypy on the shared layers."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "src", "tests", "bench", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "docs", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON, default=True)
def tests(session: nox.Session) -> None:
    """The test suite; pass pytest arguments after ``--`` (e.g. ``-- -m "not slow"``)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", *session.posargs, env={"MPLBACKEND": "Agg"})


@nox.session(python=PYTHON, default=True)
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with warnings as errors."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


if __name__ == "__main__":
    nox.main()
