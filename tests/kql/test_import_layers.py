"""The compiler's modules import only downward: no import cycle in kql/, not even a hidden one.

Every import statement of every module counts: at module level, inside a function, and under
`if TYPE_CHECKING:` (a type-only import back up is still a dependency on the layer above, and
the next refactor turns it into a real one). Plugins (evaluate, search, FileProfile) and the
operator families register themselves in tables; the compiler imports them, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

KQL = Path(__file__).resolve().parents[2] / "kql"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The kql module an imported dotted name loads last (a package's __init__ if not a submodule)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = KQL) -> dict[str, set[str]]:
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from kql import functions` loads kql.functions; `from kql.x import name` loads kql.x
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                dep = _resolve(t, modules)
                if dep is not None and dep != mod:
                    graph[mod].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_in_kql() -> None:
    graph = import_graph()
    assert len(graph) > 10, "the kql package was not found"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in kql/: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    # The checker must catch the hidden kinds, or the test above proves nothing.
    pkg = tmp_path / "kql"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from kql.ops import plugin\n")
    (pkg / "ops" / "plugin.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..top import Compiler\n")
    (pkg / "top.py").write_text("from kql import low\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle == ["kql.low", "kql.ops.plugin", "kql.top", "kql.low"]
    (pkg / "ops" / "plugin.py").write_text("import kql.low\n")
    assert find_cycle(import_graph(pkg)) == ["kql.low", "kql.ops.plugin", "kql.low"]
    (pkg / "ops" / "plugin.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg)) is None


def test_plugins_and_operator_families_do_not_import_the_compiler() -> None:
    graph = import_graph()
    top = {"kql", "kql.api", "kql.compiler", "kql.cli", "kql.testing"}
    for mod, deps in graph.items():
        if mod in top:
            continue
        assert not deps & top, f"{mod} imports {sorted(deps & top)}, which sit above it"
