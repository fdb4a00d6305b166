"""No import cycle between the modules of the edgeres package (read with the standard library's ast).

Every ``import`` counts, also those inside functions: a lazy import hides a cycle from the
interpreter, not from the design. A module importing its own ancestor package is not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "edgeres"


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for f in (root / PACKAGE).rglob("*.py"):
        parts = f.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imported_names(name: str, path: Path) -> set[str]:
    """Dotted names ``name`` imports (relative imports resolved), whether modules or attributes."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the edgeres modules it imports."""
    mods = _modules(root)

    def owner(dotted: str) -> str | None:  # the module that defines a dotted name
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {owner(t) for t in _imported_names(name, path) if t == PACKAGE or t.startswith(PACKAGE + ".")}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_lazy_relative_and_attribute_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from edgeres.top import thing\n")
    (pkg / "top.py").write_text("from edgeres.sub.leaf import f\nimport edgeres\n")
    graph = import_graph(tmp_path)
    assert graph["edgeres.sub.leaf"] == {"edgeres.top"} and graph["edgeres.top"] == {"edgeres.sub.leaf"}
    assert graph["edgeres.sub"] == {"edgeres.sub.leaf"}
    assert cycles(graph) == [["edgeres.sub.leaf", "edgeres.top"]]


def test_no_import_cycle_in_edgeres():
    graph = import_graph()
    assert len(graph) > 50 and graph["edgeres.cli"]  # the package was read
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
