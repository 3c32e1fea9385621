"""The package's shape: no import circles, nothing imports the command line, capabilities
import only the shared layers (never each other), and library code does not print."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "nnfit"
CAPABILITIES = ("calcium", "spectral", "ptycho")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every nnfit module -> the nnfit modules it imports (function-level imports included)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    deps.add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


GRAPH = _imports()


def _package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_no_import_circles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            # a package's __init__ re-exports its modules; edges into it are not circles
            if d == m.rsplit(".", 1)[0] or m == d.rsplit(".", 1)[0]:
                continue
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(d) :], d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize(
    "module", sorted(m for m in GRAPH if not m.startswith("nnfit.cli") and m != "nnfit.__main__")
)
def test_nothing_imports_the_command_line(module):
    assert not any(d.startswith("nnfit.cli") for d in GRAPH[module]), GRAPH[module]


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_capabilities_import_only_shared_layers(capability):
    for module, deps in GRAPH.items():
        if _package_of(module) != capability:
            continue
        for d in deps:
            other = _package_of(d)
            assert other == capability or other not in CAPABILITIES, f"{module} imports {d}"


def test_library_code_does_not_print():
    offenders = []
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("nnfit.cli") or name in ("nnfit.spectral.manager", "nnfit.__main__"):
            continue  # the command line prints; H5Manager keeps CubeFit's printing helpers
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders
