"""The import rules of docs/architecture.md, checked on the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level and inside functions alike (a lazy import still ties the two
modules together); only imports under ``if TYPE_CHECKING:`` are left out of the cycle check, since they
never run. Dynamic imports (``importlib.import_module(name)``, the CLI dispatcher's) are not seen.

(a) Nothing outside ``training/`` imports ``training``: the pipeline, the matcher and the bundle loader
    run without the training code.
(b) No import cycle between modules.
(c) Layers: a component imports only components of lower layers (``LAYERS``). Two components on one
    layer (``stream`` and the matching service in ``reid``) do not import each other.

Known exceptions are listed below with the reason and the fix; an entry that no longer matches an
import fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("privreid", "configs", "transport", "backends", "stream", "detectors", "anonymizer", "reid", "training")
TOP_MODULES = ("run_pipeline",)

# component (a package, or a subpackage/module that sits lower than the rest of its package) -> layer.
# A module belongs to the component of its longest matching prefix.
LAYERS: dict[str, int] = {
    # 0 - foundation: no project imports except each other's (configs) and nothing above
    "configs": 0,
    "transport": 0,
    "privreid.resources": 0,
    "privreid.registry": 0,
    "privreid.hashing": 0,
    # 1 - runtime backends (one ONNX-exportable network on torch / ONNX Runtime / OpenVINO / TensorRT), Re-ID
    #     models, datasets, metrics: torch/numpy code that any consumer of an embedding may load
    "backends": 1,
    "reid.models": 1,
    "reid.datasets": 1,
    "reid.metrics": 1,
    # 2 - person detectors and the tracker
    "detectors": 2,
    # 3 - anonymizers: baselines, learned bundles, redaction, privacy floor, audit, recovery
    "anonymizer": 3,
    # 4 - the two services: the camera pipeline and the matching service (the rest of reid/)
    "stream": 4,
    "reid": 4,
    # 5 - entry points and the research code: the CLI dispatcher, run_pipeline.py, training
    "privreid.cli": 5,
    "privreid.bench": 5,
    "run_pipeline": 5,
    "training": 5,
    # 6 - the Python API (privreid.api, re-exported by the privreid package): one-line calls onto the jobs,
    #     it runs run_pipeline's job; nothing in the project imports it
    "privreid": 6,
}

# (importer, imported module) -> why it is still there and how to remove it. Edges, not modules: a new
# import between the same packages is not covered.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}
KNOWN_LAYER_EDGES: dict[tuple[str, str], str] = {
    # The audit decodes both videos exactly as the pipeline does (stream.sources.open_source), lazily.
    # Fix: the audit is an application, not an anonymizer: move anonymizer/audit*.py up (e.g. to a
    # privreid.audit module next to the CLI), or move the video sources below the anonymizer.
    ("anonymizer.audit", "stream.sources"): "the audit reads videos with the pipeline's sources",
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the project module that runs (a module, or the package when a name is not a module)
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under `if TYPE_CHECKING:`


def _module_files() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    for name in TOP_MODULES:
        if (REPO_ROOT / f"{name}.py").is_file():
            mods[name] = REPO_ROOT / f"{name}.py"
    return mods


MODULES = _module_files()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _typing_only_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and any(
            isinstance(n, (ast.Name, ast.Attribute)) and getattr(n, "id", getattr(n, "attr", None)) == "TYPE_CHECKING"
            for n in ast.walk(node.test)
        ):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports_of(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = _typing_only_nodes(tree)
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                names = [f"{source}.{alias.name}" if alias.name != "*" else source for alias in child.names]
            else:
                yield from visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
                continue
            for name in names:
                target = _resolve(name)
                if target and target != module:
                    yield Import(module, target, child.lineno, lazy, id(child) in typing_only)

    yield from visit(tree, False)


IMPORTS: list[Import] = list(dict.fromkeys(imp for mod, path in MODULES.items() for imp in _imports_of(mod, path)))


def component(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise KeyError(f"{module} belongs to no component of LAYERS: add its package to tests/test_import_layers.py")


def _where(imp: Import) -> str:
    return f"{MODULES[imp.importer].relative_to(REPO_ROOT)}:{imp.line} imports {imp.target}" + (
        " (lazily)" if imp.lazy else ""
    )


# ---- (a) ---------------------------------------------------------------------------------------------------


def test_nothing_outside_training_imports_training():
    bad = [
        _where(i) for i in IMPORTS if i.target.split(".")[0] == "training" and i.importer.split(".")[0] != "training"
    ]
    assert not bad, "only training/ may import training:\n" + "\n".join(bad)


# ---- (b) ---------------------------------------------------------------------------------------------------


def _edges(skip: set[tuple[str, str]]) -> dict[str, set[str]]:
    """importer -> modules that run when it imports: the target and its packages (those not already
    running as the importer's own parents)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.typing_only or (imp.importer, imp.target) in skip:
            continue
        chain = [imp.target]
        while "." in chain[-1]:
            chain.append(chain[-1].rpartition(".")[0])
        for mod in chain:
            if mod in MODULES and not (imp.importer == mod or imp.importer.startswith(mod + ".")):
                graph[imp.importer].add(mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> b -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in components:
        start = min(comp)
        # shortest way back to start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier, seen, found = [start], {start}, None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.insert(1, v)
            v = prev.get(v)
        cycles.append(path + [start])
    return cycles


def test_cycle_finder_reports_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    cycles = _cycles(_edges(skip=set(KNOWN_CYCLE_EDGES)))
    assert not cycles, "import cycles (break them, e.g. by moving what both need into a lower module):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


# ---- (c) ---------------------------------------------------------------------------------------------------


def test_every_project_module_has_a_layer():
    for mod in MODULES:
        component(mod)


def test_components_import_only_lower_layers():
    bad = []
    for imp in IMPORTS:
        a, b = component(imp.importer), component(imp.target)
        if a == b or (imp.importer, imp.target) in KNOWN_LAYER_EDGES:
            continue
        if LAYERS[b] >= LAYERS[a]:
            bad.append(f"{_where(imp)}: {a} (layer {LAYERS[a]}) -> {b} (layer {LAYERS[b]})")
    assert not bad, "imports against the layers of docs/architecture.md:\n" + "\n".join(bad)


@pytest.mark.parametrize("edge", sorted({**KNOWN_CYCLE_EDGES, **KNOWN_LAYER_EDGES}), ids="->".join)
def test_known_exceptions_are_still_needed(edge):
    assert any((i.importer, i.target) == edge for i in IMPORTS), (
        f"{edge[0]} no longer imports {edge[1]}: remove the entry from tests/test_import_layers.py"
    )


# ---- packaging: what pip installs is what the layers describe -------------------------------------------------


def test_every_package_folder_is_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    folders |= {m.rpartition(".")[0] for m in MODULES if "." in m}
    assert folders <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"
    assert set(PACKAGES) <= listed
