"""The package layout's rules, checked from the source: no import circle anywhere in ``grader/``
(function-level imports included), and no import that runs against the data flow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "grader"

# room -> the rooms its modules may import (besides itself and the leaves)
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "config": {"contracts"},
    "intake": {"contracts", "config"},
    "worker": {"contracts"},
    "sandbox": {"contracts", "config"},
    "checks": {"contracts", "config", "intake"},
    "grading": {"contracts", "config", "intake", "sandbox", "checks"},
    "report": {"contracts", "config"},
    "records": {"contracts", "config"},
    "ci": {"contracts", "config", "report", "records"},
    "gradebook": {"contracts", "config", "report", "records", "checks", "grading", "sandbox"},
    "commands": {
        "contracts",
        "config",
        "intake",
        "sandbox",
        "worker",
        "grading",
        "checks",
        "report",
        "records",
        "ci",
        "gradebook",
    },
    "cli": {"commands"},
}
LEAVES = {"grader", "grader.errors", "grader.exitcodes"}  # importable from anywhere
LEAF_ALLOWED = {"grader.errors": {"contracts"}}  # a leaf's own dependencies


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``grader`` module a file imports, at module level or inside functions.

    ``from grader.x import y`` counts as importing ``grader.x.y`` when that is a module, else
    ``grader.x``; relative imports are resolved against the file's package.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m == "grader" or m.startswith("grader.")}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports_of(p) & MODULES for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or with a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target in LEAVES and module not in LEAVES:
                continue
            if module in LEAVES:
                allowed = LEAF_ALLOWED.get(module, set())
                if target not in LEAVES and room(target) not in allowed:
                    wrong.append(f"{module} -> {target}")
                continue
            if room(target) == room(module):
                continue
            if room(target) not in ALLOWED.get(room(module), set()):
                wrong.append(f"{module} -> {target}")
    return wrong


def test_every_module_lives_in_a_known_room() -> None:
    homeless = sorted(m for m in GRAPH if m not in LEAVES and room(m) not in ALLOWED)
    assert not homeless, f"modules outside the layout's rooms: {homeless}"


def test_no_import_circle_anywhere() -> None:
    assert cycles(GRAPH) == []


def test_no_import_runs_against_the_data_flow() -> None:
    assert against_the_flow(GRAPH) == []


def test_the_worker_imports_nothing_of_the_host() -> None:
    worker = {m: t for m, t in GRAPH.items() if room(m) == "worker"}
    assert worker, "the worker package was not found"
    assert all(room(t) in {"worker", "contracts"} or t in LEAVES for targets in worker.values() for t in targets)


def test_the_checks_catch_what_they_are_for() -> None:
    """The graph checks themselves fail on a circle, a back edge and a contract importing an implementation."""
    assert cycles({"grader.a.x": {"grader.a.y"}, "grader.a.y": {"grader.a.x"}}) == [["grader.a.x", "grader.a.y"]]
    assert cycles({"grader.a.x": {"grader.a.x"}}) == [["grader.a.x"]]
    assert against_the_flow({"grader.worker.session": {"grader.grading.figures"}}) == [
        "grader.worker.session -> grader.grading.figures"
    ]
    assert against_the_flow({"grader.contracts.job": {"grader.config.assignment"}}) == [
        "grader.contracts.job -> grader.config.assignment"
    ]
    assert against_the_flow({"grader.errors": {"grader.sandbox.base"}}) == ["grader.errors -> grader.sandbox.base"]
    assert against_the_flow({"grader.grading.pipeline": {"grader.checks.engine", "grader.errors"}}) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_its_job(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return  # an empty __init__ of a room whose job the README and its modules say
    assert ast.get_docstring(ast.parse(text)), f"{path} has no module docstring"
