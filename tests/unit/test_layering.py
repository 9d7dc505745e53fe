"""The top-level packages form a DAG: ``common <- scheduler <- storage <- mesh <- shuffle <- disco``.

``storage`` (DDFS: the ring, tags, repair planner, volumes) sits below ``mesh`` because the node
core composes its pure cores and the data port serves its volumes.

A package may import only packages below it (to its left): ``common`` (the exception tree)
imports nothing of the project, and ``disco`` (Disco's public names, the client) sits on top.
Checked by reading every module's import statements with ``ast``: ``import x.y`` and
``from x import y`` at any depth, including imports inside functions. Relative imports stay in
their own package and make no edge.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["common", "scheduler", "storage", "mesh", "shuffle", "disco"]  # lowest first
RANK = {name: rank for rank, name in enumerate(ORDER)}

def packages() -> list[str]:
    """Every top-level package of the checkout (a directory with an ``__init__.py``)."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(source: Path) -> set[str]:
    """The top-level names ``source`` imports absolutely, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) package pairs, each with the modules that make it."""
    graph: dict[tuple[str, str], list[str]] = {}
    for package in ORDER:
        for source in modules(package):
            rel = source.relative_to(ROOT).as_posix()
            for target in imported_packages(source) & set(ORDER) - {package}:
                graph.setdefault((package, target), []).append(rel)
    return graph


def upward(graph) -> dict[tuple[str, str], list[str]]:
    return {(a, b): where for (a, b), where in graph.items() if RANK[a] < RANK[b]}


def test_every_package_has_a_place_in_the_order():
    assert set(packages()) == set(ORDER), "put a new top-level package into ORDER"


def test_the_walk_sees_imports_inside_functions():
    found = imported_packages(ROOT / "disco" / "core.py")  # imports mesh.transfer late
    assert {"disco", "mesh"} <= found


def test_common_imports_no_project_package():
    assert not {target for (source, target) in edges() if source == "common"}


def test_every_edge_points_down_the_order():
    assert upward(edges()) == {}, "a package imports one above it (see ORDER)"


def test_the_package_graph_has_no_cycle():
    graph = edges()
    order = {name: rank for rank, name in enumerate(_topological(ORDER, graph))}
    assert all(order[a] > order[b] for a, b in graph), graph


def _topological(names: list[str], graph) -> list[str]:
    """Dependencies first; raises AssertionError on a cycle."""
    done: list[str] = []
    left = set(names)
    while left:
        ready = {n for n in left if not any(a == n and b in left for a, b in graph)}
        assert ready, f"import cycle among {sorted(left)}"
        done += sorted(ready)
        left -= ready
    return done
