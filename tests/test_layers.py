"""The layers of docs/architecture.md hold: no import cycle among grpo_cli's modules (imports inside functions and
under TYPE_CHECKING count: they hide a loop, they do not remove it), nothing below `commands/` imports
`commands/` or Typer, and the compat modules import nothing of grpo-cli above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "grpo_cli"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (`from a import b` names a and a.b)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            named |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
    return named


MODULES = _modules()
GRAPH = {
    name: {other for other in _imports(name, path) if other in MODULES and other not in (name, "grpo_cli")}
    for name, path in MODULES.items()
}
CLI = ("grpo_cli.cli", "grpo_cli.__main__", "grpo_cli.commands")


def _is_cli(name: str) -> bool:
    return name.startswith(CLI)


def _cycle() -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for other in sorted(GRAPH[node]):
            if state.get(other) == 1:
                return [*path[path.index(other) :], other]
            if other not in state and (found := visit(other)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_function_local_imports():
    """The graph is only as good as its reading: a lazy import inside a function is an edge."""
    assert "grpo_cli.workflows.train" in GRAPH["grpo_cli.pipeline"]  # imported inside pipeline.train


def test_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle())


def test_nothing_below_the_commands_imports_them_or_typer():
    upward = sorted(f"{a} -> {b}" for a, bs in GRAPH.items() if not _is_cli(a) for b in bs if _is_cli(b))
    assert not upward
    typer_users = sorted(
        name
        for name, path in MODULES.items()
        if not _is_cli(name) and any(n == "typer" or n.startswith("typer.") for n in _imports(name, path))
    )
    assert not typer_users


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("grpo_cli.compat")))
def test_compat_modules_sit_at_the_bottom(name):
    above = sorted(GRAPH[name] - {"grpo_cli.compat", "grpo_cli.errors"})
    assert not above, f"{name} imports {above}"
