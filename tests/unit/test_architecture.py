"""The import graph follows docs/architecture.md: data flows one way, no circles, no private imports.

The graph is read from the source with `ast` (module-level and function-level
imports alike, since a lazy import is still a dependency), so the test needs no
heavy package and fails on the first edge that breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edgecnn"

# Lowest first (docs/architecture.md, "The flow"): a module may import its own layer and the layers below.
LAYERS = [
    {"edgecnn", "edgecnn.kinds", "edgecnn.errors", "edgecnn.paths", "edgecnn.targets", "edgecnn.artifacts"},
    {"edgecnn.data"},
    {"edgecnn.runner"},
    {"edgecnn.frameworks", "edgecnn.zoo", "edgecnn.source", "edgecnn.contract", "edgecnn.train"},
    {"edgecnn.prune", "edgecnn.quantize", "edgecnn.emulate"},
    {"edgecnn.compile"},
    {"edgecnn.bench"},
    {"edgecnn.report", "edgecnn.render", "edgecnn.cli", "edgecnn.__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "guest" not in p.parts}


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every edgecnn import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("edgecnn")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgecnn"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                # `from edgecnn.compile import cache` imports the submodule; `from edgecnn.x import f` a name.
                found.append((sub, "", node.lineno) if sub in modules else (node.module, a.name, node.lineno))
    return found


def _layer(module: str) -> int:
    best = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (rank, len(name))
    assert best is not None, f"{module} is in no layer of docs/architecture.md; add it to LAYERS"
    return best[0]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for target, imported, line in _imports(path, modules):
            if target != name:
                graph[name].add(target)
            if imported.startswith("_") and not imported.startswith("__") and target != name:
                private.append(f"{name}:{line} imports {target}.{imported}")
    return graph, private


def test_no_module_imports_a_private_name_of_another():
    _, private = _graph()
    assert not private, "\n".join(private)


def test_lower_layers_never_import_higher_ones():
    graph, _ = _graph()
    # The package root is a facade: its lazy `edgecnn.quantize(...)` attribute reaches up on purpose.
    wrong = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
             for m, targets in graph.items() if m != "edgecnn" for t in targets if _layer(t) > _layer(m)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_stage_imports_bench_or_the_cli():
    graph, _ = _graph()
    wrong = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
             if t.split(".")[:2] in (["edgecnn", "bench"], ["edgecnn", "cli"])
             and m.split(".")[:2] not in (["edgecnn", "bench"], ["edgecnn", "cli"], ["edgecnn", "__main__"])]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles():
    graph, _ = _graph()
    # A package's __init__ importing its own submodules is how packages expose them; a circle is
    # anything else that leads back to where it started.
    edges = {m: {t for t in ts if t in graph and not (m != "edgecnn" and t.startswith(m + "."))}
             for m, ts in graph.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(" <-> ".join(sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "\n".join(circles)


def test_the_board_gets_every_module_the_runner_imports():
    """bench --device ships RUNNER_SOURCES to the board; a module missing there breaks every SSH run."""
    from edgecnn.bench.remote import RUNNER_SOURCES

    modules = _modules()
    shipped = {_module_name(PACKAGE / rel) for rel in RUNNER_SOURCES}
    needed, todo = set(), ["edgecnn.runner.__main__"]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        if name == "edgecnn":  # the root's lazy `edgecnn.quantize` facade is never used by the runner
            continue
        for target, _, _ in _imports(modules[name], modules):
            todo += [m for m in (target, target.rpartition(".")[0]) if m in modules]
    assert needed <= shipped, f"not shipped to the board: {sorted(needed - shipped)}"
    assert not any(m.startswith(("edgecnn.bench", "edgecnn.compile", "edgecnn.quantize")) for m in needed)
