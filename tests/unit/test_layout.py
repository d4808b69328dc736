"""The package layout is the architecture: no import cycles between cdc's modules, and the
pure layers (core, mapping) import nothing that talks to a server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "cdc"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> cdc modules it imports anywhere in its body (function-level imports count)."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != mod and n.startswith("cdc") and not mod.startswith(n + "."):
                    deps.add(n)
        graph[mod] = {d for d in deps if d != "cdc"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_can_fail() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("layer", ["cdc.core", "cdc.mapping"])
def test_pure_layers_import_no_io_layer(layer: str) -> None:
    io_layers = ("cdc.clients", "cdc.postgres", "cdc.mirrors", "cdc.stack", "cdc.api", "cdc.cli", "cdc.observe")
    bad = {m: sorted(d for d in deps if d.startswith(io_layers))
           for m, deps in import_graph().items() if m.startswith(layer)}
    assert not {m: d for m, d in bad.items() if d}


def test_test_files_have_unique_basenames() -> None:
    """pytest imports test files by basename (no packages under tests/): two test_x.py in
    different folders make the whole `pytest tests` run fail at collection."""
    from collections import Counter
    root = Path(__file__).resolve().parents[1]
    counts = Counter(p.name for p in root.rglob("test_*.py"))
    assert [n for n, c in counts.items() if c > 1] == []
