"""The package's layering: no import cycle, no private names across modules, arrows one way.

The import graph is read from the source with ``ast`` (every ``import`` statement, those inside
functions too: a deferred import is still a dependency), so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tats"

#: Which sub-package may import which (scripts -> cli/train -> sampling -> gpt -> vqgan -> io;
#: data and metrics know no model; io knows no metric). cli and train are side by side and import
#: neither each other. The top-level modules (``tats.precision``, ``tats.distributed``, ``tats.faults``,
#: ``tats.lazy``) sit below every sub-package.
MAY_IMPORT = {
    "cli": {"sampling", "gpt", "vqgan", "data", "metrics", "io"},
    "train": {"sampling", "gpt", "vqgan", "data", "metrics", "io"},
    "sampling": {"gpt", "vqgan", "data", "metrics", "io"},
    "gpt": {"vqgan", "data", "metrics", "io"},
    "vqgan": {"data", "metrics", "io"},  # (the perceptual loss is LPIPS)
    "metrics": {"data", "io"},
    "data": {"io"},
    "io": set(),
}

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module of ``tats``."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_layers_import_one_way():
    """Module by module, and so package by package: no cycle between the sub-packages either."""
    wrong = sorted(
        f"{src} imports {dst}"
        for src, targets in import_graph().items()
        for dst in targets
        if layer(src) and layer(dst) and layer(src) != layer(dst) and layer(dst) not in MAY_IMPORT[layer(src)]
    )
    # the top-level modules (precision, distributed, faults) sit below every layer
    wrong += sorted(f"{src} imports {dst}" for src, targets in import_graph().items()
                    if src.count(".") == 1 and layer(src) is None for dst in targets if layer(dst))
    assert wrong == []
    packages = {name: set(MAY_IMPORT[name]) for name in MAY_IMPORT}
    assert find_cycle(packages) is None


def test_no_module_imports_another_modules_private_name():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tats"):
                found += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert found == []


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
