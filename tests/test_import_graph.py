"""The house rules of the source tree: no import cycle and no module over 800 lines.

The import graph is read from the source (AST), over cai_core, cai_components (components/)
and cai_pipelines (pipelines/), counting the imports made inside functions as well. A module
importing `a.b.c` imports `a.b.c` and the `__init__` of `a.b` and `a` (Python runs them first),
except the packages the importer itself lives in (they are already being imported).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"cai_core": ROOT / "cai_core", "cai_components": ROOT / "components", "cai_pipelines": ROOT / "pipelines"}
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the three packages."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules of the three packages that one import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's own package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    # `from a.b import c` of the submodule c needs a.b only as c's parent; a name defined in a.b needs a.b itself
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_ancestors(name)) | ({name} if is_package else set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, is_package, known):
                while target and target not in known:  # `import a.b.c` of a name inside a.b: the module a.b
                    target = target.rpartition(".")[0]
                if not target:
                    continue
                implied = [t for t in _ancestors(target) if t not in own]
                graph[name].update(t for t in [target, *implied] if t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) for every strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan, iteratively (the graph is deep enough for recursion limits)
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_a_cycle(graph, component) for component in components]


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles (counting function-level imports and parent packages):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found)


def test_no_module_over_800_lines():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{k} ({v})" for k, v in sorted(long.items()))


def test_the_graph_sees_function_level_imports_and_parent_packages():
    graph = import_graph()
    assert "cai_core.runtime.engine" in graph["cai_components.clean"]  # imported inside the component function
    assert "cai_core.runtime" in graph["cai_components.clean"]  # ... and its parent package
    assert "cai_core.config" in graph["cai_core.stages.gate"]  # config.base: through its package __init__
    assert "cai_core.config" not in graph["cai_core.config.run"]  # its own package is not an import
