"""``.. nnfit-cli::``: the ``nnfit`` command line reference, rendered from the parsers.

The directive walks :func:`nnfit.cli.build_parser` at build time and writes one section per
command group and command holding its ``--help`` text, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# Wide enough for the examples in the epilogs; fixed so the page does not depend on the terminal.
HELP_WIDTH = "100"
LEVELS = "-~^"


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, list[str], str, argparse.ArgumentParser]]:
    """Yield ``(name, aliases, one-line help, parser)`` for each sub-command, once each."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        names: dict[int, list[str]] = {}
        for name, sub in action.choices.items():
            names.setdefault(id(sub), []).append(name)
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield name, names[id(sub)][1:], helps.get(name, ""), sub


def _render(parser: argparse.ArgumentParser, prog: str, depth: int) -> list[str]:
    lines: list[str] = []
    for name, aliases, help_text, sub in _subcommands(parser):
        title = f"{prog} {name}"
        lines += [title, LEVELS[min(depth, len(LEVELS) - 1)] * len(title), ""]
        if help_text:
            lines += [help_text[0].upper() + help_text[1:] + ".", ""]
        if aliases:
            also = ", ".join(f"``{prog} {a}``" for a in aliases)
            lines += [f"Also available as {also} (older name).", ""]
        lines += ["::", ""]
        lines += [f"   {ln}" if ln else "" for ln in sub.format_help().splitlines()]
        lines += [""]
        lines += _render(sub, title, depth + 1)
    return lines


class NnfitCliDirective(SphinxDirective):
    """Render the whole ``nnfit`` command tree (no arguments, no options)."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from nnfit.cli import build_parser

        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = HELP_WIDTH
        try:
            parser = build_parser()
            top = ["::", ""] + [
                f"   {ln}" if ln else "" for ln in parser.format_help().splitlines()
            ]
            lines = [*top, "", *_render(parser, parser.prog, 0)]
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="nnfit-cli"), node)
        return node.children


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("nnfit-cli", NnfitCliDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
