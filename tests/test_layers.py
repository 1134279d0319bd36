"""The import graph of `nudgekit`: no module-level import cycles, no import of a higher layer.

Every `import` / `from ... import` of a `nudgekit` module is an edge, function-level (lazy) ones
included; `from pkg import name` is an edge to `pkg.name` when that is a module. Importing a
module does not count as importing its parent packages; imports under `if TYPE_CHECKING:` do
not count. The layers are `nudgekit.layers.LAYERS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import nudgekit
from nudgekit.layers import LAYERS, area, layer_of

ROOT = Path(nudgekit.__file__).parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` (never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_edges(root: Path = ROOT) -> dict[str, set[tuple[str, int]]]:
    """`{module: {(imported nudgekit module, line)}}` for every module under `root`."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    edges: dict[str, set[tuple[str, int]]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[tuple[str, int]] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {(a.name, node.lineno) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add((sub if sub in files else target, node.lineno))
        edges[mod] = {(t, line) for t, line in out if t.split(".")[0] == root.name and t != mod}
    return edges


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(edges: Mapping[str, Iterable[tuple[str, int]]]) -> list[str]:
    """Edges from a module to another package of the same or a higher layer."""
    bad = []
    for mod, targets in sorted(edges.items()):
        for target, line in sorted(targets):
            if area(target) != area(mod) and layer_of(target) >= layer_of(mod):
                bad.append(
                    f"{mod}:{line} -> {target} (layer {layer_of(mod)} -> {layer_of(target)})"
                )
    return bad


def package_graph(edges: Mapping[str, Iterable[tuple[str, int]]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, targets in edges.items():
        graph.setdefault(area(mod), set()).update(
            area(t) for t, _ in targets if area(t) != area(mod)
        )
    return graph


@pytest.fixture(scope="module")
def edges():
    return import_edges()


def test_every_package_has_a_layer(edges):
    missing = sorted({area(m) for m in edges} - {n for names in LAYERS for n in names} - {""})
    assert not missing, f"packages in no layer of nudgekit.layers.LAYERS: {missing}"


def test_no_module_import_cycles(edges):
    found = cycles({m: {t for t, _ in ts} for m, ts in edges.items()})
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_package_import_cycles(edges):
    found = cycles(package_graph(edges))
    assert not found, "package import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_of_a_peer_or_higher_layer(edges):
    bad = upward(edges)
    assert not bad, "imports of a peer or higher layer:\n" + "\n".join(bad)


def test_the_checks_see_cycles_and_upward_imports(tmp_path):
    pkg = tmp_path / "nudgekit"
    (pkg / "eval").mkdir(parents=True)
    (pkg / "nudging").mkdir()
    for name in ("", "eval/", "nudging/"):
        (pkg / f"{name}__init__.py").write_text("")
    (pkg / "eval" / "a.py").write_text("def f():\n    from nudgekit.nudging import b\n")
    (pkg / "nudging" / "b.py").write_text("from ..eval.a import f\n")
    edges = import_edges(pkg)
    assert edges["nudgekit.eval.a"] == {("nudgekit.nudging.b", 2)}
    assert edges["nudgekit.nudging.b"] == {("nudgekit.eval.a", 1)}
    assert cycles({m: {t for t, _ in ts} for m, ts in edges.items()}) == [
        ["nudgekit.eval.a", "nudgekit.nudging.b"]
    ]
    assert upward(edges) == ["nudgekit.nudging.b:1 -> nudgekit.eval.a (layer 6 -> 7)"]
