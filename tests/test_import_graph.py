"""The modules of the fleet package import each other without a cycle.

Every module under the fleet package is parsed with ``ast``; each import of
a fleet module, at the top of the file or inside a function (an import put
in a function to dodge a cycle still is one), is an edge:

- ``import fleet.a.b`` / ``from fleet.a import b``: to ``fleet.a.b`` if that
  is a module, else (``b`` a name defined in ``fleet.a``) to ``fleet.a``;
- plus, for ``fleet.a.b``, an edge to each package on the way (``fleet.a``)
  that does not contain the importing module: importing into another
  package runs that package's ``__init__``. (The root package ``fleet``,
  which contains every module, is reached that way by all of them and is
  left out, as is a package from its own submodules.)

The extension module ``fleet._core`` imports nothing of fleet.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set

import pytest

import fleet

ROOT = "fleet"


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(fleet.__file__))


def _modules(pkg_dir: str) -> Dict[str, str]:
    """Module name -> file, for every .py file of the package, plus the
    extension module (found by its stub or its shared library) as ''."""
    out: Dict[str, str] = {}
    base = os.path.dirname(pkg_dir)
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, base)
            if f.endswith(".py"):
                name = rel[:-3].replace(os.sep, ".")
                if name.endswith(".__init__"):
                    name = name[: -len(".__init__")]
                out[name] = path
            elif f.startswith("_core.") and (f.endswith(".so") or f.endswith(".pyi")):
                out[f"{ROOT}._core"] = ""
    return out


def _is_package(name: str, modules: Dict[str, str]) -> bool:
    return modules.get(name, "").endswith("__init__.py")


def _targets(importer: str, full: str, modules: Dict[str, str]) -> Set[str]:
    """Edges for an import of `full` (a module, or a name in a module)."""
    name = full
    while name and name not in modules:
        name = name.rpartition(".")[0]
    if not name:
        return set()
    out = {name}
    parts = name.split(".")
    for i in range(2, len(parts)):  # packages on the way, below the root
        pkg = ".".join(parts[:i])
        if not (importer == pkg or importer.startswith(pkg + ".")):
            out.add(pkg)
    return out


def _imports(name: str, path: str, modules: Dict[str, str]) -> Set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    out: Set[str] = set()
    for node in ast.walk(tree):  # every import, at any depth
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    out |= _targets(name, alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{node.module}" if node.module else pkg
            else:
                base = node.module or ""
            if not (base == ROOT or base.startswith(ROOT + ".")):
                continue
            for alias in node.names:
                out |= _targets(name, f"{base}.{alias.name}", modules)
    out.discard(name)
    return out


def import_graph(pkg_dir: Optional[str] = None) -> Dict[str, Set[str]]:
    modules = _modules(pkg_dir or _package_dir())
    return {m: (_imports(m, p, modules) if p else set()) for m, p in modules.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """A cycle as [a, b, ..., a], or None (iterative DFS, three colours)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(nxt, BLACK) == GREY:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    for m in ("fleet", "fleet._private.api", "fleet._private.worker_main", "fleet.actor",
              "fleet.util.placement_group", "fleet._core"):
        assert m in graph, m
    # Top-level and function-level imports both count.
    assert "fleet._private.api" in graph["fleet"]
    assert "fleet.actor" in graph["fleet.remote_function"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles(tmp_path):
    pkg = tmp_path / ROOT
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from fleet import b\n")
    (pkg / "b.py").write_text("def f():\n    from fleet.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\n")
    cycle = find_cycle(import_graph(str(pkg)))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"fleet.a", "fleet.b", "fleet.sub.c"}
    # A package reached from outside: its __init__ runs (an edge to it).
    (pkg / "sub" / "c.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from fleet import a\n")
    cycle = find_cycle(import_graph(str(pkg)))
    assert cycle is not None and "fleet.sub" in cycle


@pytest.mark.parametrize("module", ["fleet._private.state", "fleet._private.task_context",
                                    "fleet.exceptions", "fleet._private.version"])
def test_bottom_layers_import_no_upper_layer(module):
    allowed = {"fleet._core", "fleet._private.state", "fleet._private"}
    assert import_graph()[module] <= allowed
