"""The suite's own import graph, read from the source (no module is imported to read it).

Three users: the layer rule's test (no module imports one from a higher layer, and the graph has
no cycle), the test that checks each DVC stage's ``deps`` against what its command imports, and
the evaluation cache key, which hashes the source of every module that shapes records
(:func:`source_digest`), so a rerun after a code change recomputes instead of reusing.

Only static imports count (``import x``, ``from x import y``, at any depth, including those
inside functions), except those under ``if TYPE_CHECKING:``. The method registry finds plug-ins
by name (``baselines`` and ``spt.model.method``, :mod:`spt.harness.method`); those are edges of
the plug-in mechanism, not of the import graph, and callers that need them add the plug-in's
module themselves.

Layers, lowest first; a module may import its own layer and the ones below
(docs/architecture.md):

0. ``spt`` (the package), ``spt.errors``, ``spt.numerics``, ``spt.artifacts``, ``spt.codegraph``,
   ``spt.config``
1. ``spt.sam``, ``spt.data``, ``spt.params``
2. ``spt.harness``
3. ``spt.training``, ``spt.model``, ``baselines``
4. ``spt.pretrain``, ``spt.reports``
5. ``spt.commands``, ``spt.cli``, ``spt.__main__`` (``python -m spt``)
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

#: The suite's top-level packages, whose modules form the graph.
PACKAGES = ("spt", "baselines")

#: Module-name prefix -> layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "spt": 0,
    "spt.errors": 0,
    "spt.numerics": 0,
    "spt.artifacts": 0,
    "spt.codegraph": 0,
    "spt.config": 0,
    "spt.sam": 1,
    "spt.data": 1,
    "spt.params": 1,
    "spt.harness": 2,
    "spt.training": 3,
    "spt.model": 3,
    "baselines": 3,
    "spt.pretrain": 4,
    "spt.reports": 4,
    "spt.commands": 5,
    "spt.cli": 5,
    "spt.__main__": 5,
}


def repository_root() -> Path:
    """The folder holding the ``spt`` and ``baselines`` packages."""
    return Path(__file__).resolve().parent.parent


def layer_of(module: str) -> int:
    """The layer of ``module`` (a dotted name inside :data:`PACKAGES`)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module}: in no layer of spt.codegraph.LAYERS; add its package there")


def module_files(root: Path | None = None) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of :data:`PACKAGES` under ``root``."""
    root = root or repository_root()
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names ``tree`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


@cache
def _graph_at(root: Path) -> dict[str, frozenset[str]]:
    files = module_files(root)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _imported_names(tree, module, path.name == "__init__.py")
        graph[module] = frozenset(n for n in names if n in files and n != module)
    return graph


def import_graph(root: Path | None = None) -> dict[str, frozenset[str]]:
    """Module -> the suite modules it imports (static imports only, see the module docstring)."""
    return _graph_at((root or repository_root()).resolve())


def closure(modules: Iterable[str], root: Path | None = None) -> set[str]:
    """``modules`` and every suite module they import, directly or not (packages whose
    submodules are imported count too: importing ``a.b`` runs ``a/__init__.py``)."""
    graph = import_graph(root)
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module not in graph:
            raise KeyError(f"{module}: not a module of {', '.join(PACKAGES)}")
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:end]) for end in range(1, len(parts)))
        todo.extend(graph[module])
    return seen


def cycles(root: Path | None = None) -> list[list[str]]:
    """Every strongly connected set of two or more modules (an import cycle), sorted."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return sorted(found)


def upward_imports(root: Path | None = None) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports one from a higher layer."""
    graph = import_graph(root)
    return sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def source_digest(modules: Iterable[str], root: Path | None = None) -> str:
    """sha256 over the source of ``modules`` and everything they import (:func:`closure`),
    file by file in name order: changes when any of that code changes, not otherwise."""
    files = module_files((root or repository_root()).resolve())
    digest = hashlib.sha256()
    for module in sorted(closure(modules, root)):
        digest.update(module.encode() + b"\0" + files[module].read_bytes() + b"\0")
    return digest.hexdigest()
