"""The source's layout: the runtime's packages import only those below them, and no two files of
the runtime or the model import each other, however indirectly (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

from tests.conftest import ROOT

#: the runtime's packages from the bottom up: each may import those before it, never one after
RUNTIME_LAYERS = ("data", "distributed", "records", "state", "training", "run")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (ROOT / "lagdsl").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> nx.DiGraph:
    """Every import of a lagdsl module by another, wherever it stands (in a function, under
    `if TYPE_CHECKING:`): an edge from the importer to the module imported (`from P import M`
    imports module P.M where there is one, else the package P)."""
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph.add_edges_from((name, target) for target in targets if target in modules and target != name)
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["lagdsl", "runtime"] or len(parts) < 3:
        return None
    return RUNTIME_LAYERS.index(parts[2])


@pytest.mark.parametrize("package", ["lagdsl.runtime", "lagdsl.model"])
def test_no_two_files_import_each_other(package: str) -> None:
    graph = import_graph()
    inside = graph.subgraph(n for n in graph if n == package or n.startswith(package + "."))
    cycles = list(nx.simple_cycles(inside))
    assert not cycles, f"files that import each other: {cycles[:5]}"


def test_every_runtime_package_imports_only_those_below_it() -> None:
    graph = import_graph()
    upward = [
        (a, b) for a, b in graph.edges if (la := _layer(a)) is not None and (lb := _layer(b)) is not None and lb > la
    ]
    assert not upward, f"imports of a package above the importer: {upward}"


def test_every_runtime_module_sits_in_a_named_package() -> None:
    """A newcomer finds each concept in the folder its name promises: no loose module at the top."""
    runtime = ROOT / "lagdsl" / "runtime"
    loose = sorted(p.name for p in runtime.glob("*.py") if p.name != "__init__.py")
    assert not loose
    assert sorted(p.name for p in runtime.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(RUNTIME_LAYERS)
    for layer in RUNTIME_LAYERS:
        doc = ast.get_docstring(ast.parse((runtime / layer / "__init__.py").read_text()))
        where = f"runtime/{layer}/__init__.py"
        assert doc and "import" in doc.lower(), f"{where} must say what lives there and what it may import"


def test_the_graph_sees_imports_in_functions_and_under_type_checking() -> None:
    """The checks above can fail: the graph finds a type-only import in a function."""
    graph = import_graph()
    assert graph.has_edge("lagdsl.runtime.state.train_state", "lagdsl.runtime.distributed.moves")
    assert graph.has_edge("lagdsl.cli.training", "lagdsl.runtime.distributed.world")  # inside a function
    assert graph.has_edge("lagdsl.runtime.state.checkpoint", "lagdsl.runtime.state.dcp")  # under TYPE_CHECKING


def test_the_model_imports_neither_the_operators_nor_the_runtime() -> None:
    graph = import_graph()
    above = [
        (a, b)
        for a, b in graph.edges
        if a.startswith("lagdsl.model") and b.startswith(("lagdsl.ops", "lagdsl.runtime", "lagdsl.cli"))
    ]
    assert not above, f"the model imports what builds on it: {above}"
