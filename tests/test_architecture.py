"""The house rules: which room may import which, and no import cycles.

The rooms and their order are described in ``techrevati.runtime.telemetry``'s
docstring and in docs/contributing.md. Imports under ``if TYPE_CHECKING:`` are
left out (they never run); imports inside functions count, because they run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "techrevati.runtime"

PRIMITIVES = {
    f"{PKG}.{name}"
    for name in (
        "agent_events",
        "agent_lifecycle",
        "circuit_breaker",
        "guardrails",
        "handoffs",
        "permissions",
        "policy_engine",
        "quality_gate",
        "retry_policy",
        "usage_tracking",
        "sinks",
        "version",
        "pricing",
        "pricing.database",
        "pricing.names",
        "caller",
    )
}
FRONT = {f"{PKG}", f"{PKG}.__main__", f"{PKG}.orchestrator", f"{PKG}.otel"}
TELEMETRY_ROOMS = ("readings", "limits", "export", "calls", "report", "setup")

# room -> rooms it may import (its own room always allowed)
ALLOWED: dict[str, set[str]] = {
    "primitives": set(),
    "semconv": set(),
    "readings": {"primitives", "semconv"},
    "limits": {"primitives", "semconv", "readings"},
    "export": {"primitives", "semconv"},
    "calls": {"primitives", "semconv", "readings", "limits"},
    "fleet": {"primitives", "semconv", "limits", "calls"},
    "frameworks": {"primitives", "semconv", "readings", "limits", "calls"},
    "report": {"primitives", "semconv", "readings", "export"},
    "setup": {
        "primitives",
        "semconv",
        "readings",
        "limits",
        "export",
        "calls",
        "fleet",
        "frameworks",
        "report",
    },
    "front": {
        "primitives",
        "semconv",
        "readings",
        "limits",
        "export",
        "calls",
        "fleet",
        "frameworks",
        "report",
        "setup",
        "decorators",
    },
    "decorators": {"primitives", "semconv", "readings", "limits", "calls", "front"},
}


def room_of(module: str) -> str:
    if module in PRIMITIVES:
        return "primitives"
    if module in FRONT:
        return "front"
    rest = module.removeprefix(PKG + ".")
    head, _, tail = rest.partition(".")
    if head == "decorators":
        return "decorators"
    if head == "fleet":
        return "fleet"
    if head == "frameworks":
        return "frameworks"
    if head == "telemetry":
        room = tail.partition(".")[0]
        if room in TELEMETRY_ROOMS:
            return room
        return "semconv"  # telemetry/__init__ and telemetry/semconv
    raise AssertionError(f"{module} belongs to no room: add it to tests/test_architecture.py")


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, from {module: (source, is_package)}."""
    modules = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (source, is_package) in sources.items():
        package = module if is_package else module.rpartition(".")[0]
        for node in _imports(ast.parse(source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    if target:
                        graph[module].add(target)
                continue
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    graph[module].add(f"{base}.{alias.name}")
                elif base in modules:
                    graph[module].add(base)
    for module in graph:
        graph[module].discard(module)
    return graph


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        mine = room_of(module)
        for target in sorted(targets):
            theirs = room_of(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                problems.append(f"{module} ({mine}) imports {target} ({theirs})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def our_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for path in SRC.rglob("*.py"):
        name, is_package = module_name(path)
        if name != PKG and not name.startswith(PKG + "."):
            continue  # the bare ``techrevati`` namespace holds nothing
        sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def test_every_import_follows_the_room_rule() -> None:
    assert rule_breaks(import_graph(our_sources())) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph(our_sources())) == []


def test_no_folder_holds_more_than_16_modules() -> None:
    crowded = {
        str(folder.relative_to(SRC)): len(list(folder.glob("*.py")))
        for folder in SRC.rglob("*")
        if folder.is_dir() and len(list(folder.glob("*.py"))) > 16
    }
    assert crowded == {}


def test_every_room_says_what_it_owns_and_may_import() -> None:
    for room in TELEMETRY_ROOMS:
        doc = ast.get_docstring(
            ast.parse(
                (SRC / PKG.replace(".", "/") / "telemetry" / room / "__init__.py").read_text()
            )
        )
        assert doc and "May import" in doc, room


# The checks themselves must be able to fail.


def _fake(**modules: str) -> dict[str, tuple[str, bool]]:
    return {f"{PKG}.{name}": (source, False) for name, source in modules.items()}


def test_the_rule_check_catches_an_upward_import() -> None:
    sources = _fake(
        **{
            "telemetry.limits.ledger": "from ..calls import session\n",
            "telemetry.calls.session": "x = 1\n",
        }
    )
    assert rule_breaks(import_graph(sources)) == [
        f"{PKG}.telemetry.limits.ledger (limits) imports {PKG}.telemetry.calls.session (calls)"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def f():\n    from . import b\n",
            [[f"{PKG}.telemetry.calls.a", f"{PKG}.telemetry.calls.b"]],
        ),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n", []),
    ],
    ids=["deferred import counts", "TYPE_CHECKING import does not"],
)
def test_the_cycle_check_sees_deferred_imports_only(source: str, expected: list[list[str]]) -> None:
    sources = _fake(**{"telemetry.calls.a": source, "telemetry.calls.b": "from . import a\n"})
    assert cycles(import_graph(sources)) == expected
