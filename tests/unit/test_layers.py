"""The package's imports follow its layers, and no modules or packages import each other.

Every module under src/pyserving is parsed (not imported), and every `import` in it counts,
at module level or inside a function, under `if TYPE_CHECKING:` or not: a deferred import
is still a dependency. A module may import its own layer or a lower one. Registry strings
resolved with importlib at run time (the platform table in `platforms/__init__.py`) are not
imports: the registry names its implementations without depending on them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Callable

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "pyserving"

# Low to high. Each entry names packages or modules (a package covers everything in it).
# A top-level module not named here (an application module that assembles the server out
# of the front ends, like a `pyserving/model_server.py`) is in APPLICATION: above the
# front ends, below the command line.
APPLICATION = "application"
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Error codes, the options, small helpers, protobuf messages and codecs.
    ("foundation", (ROOT, "pyserving.errors", "pyserving.options", "pyserving.util", "pyserving.protos")),
    # Version management (loader harness, aspired versions) and where versions come from.
    ("core", ("pyserving.core", "pyserving.sources")),
    # The Servable contract, its implementations, and what a request means for a servable.
    ("platforms", ("pyserving.platforms",)),
    # Batching wraps any platform's servable.
    ("batching", ("pyserving.batching",)),
    # Metrics, health and watchdogs: read the layers below, never drive them.
    ("monitoring", ("pyserving.monitoring",)),
    # The transport-neutral server: model configuration, admission, inference service.
    ("server", ("pyserving.server",)),
    # Who may call what (credentials, scopes) and TLS material: asked by the front ends.
    ("auth", ("pyserving.auth",)),
    # The REST and gRPC front ends.
    ("api", ("pyserving.api",)),
    (APPLICATION, ()),
    # Worker processes under a supervisor: several servers as one.
    ("workers", ("pyserving.workers",)),
    ("cli", ("pyserving.cli", "pyserving.__main__")),
)

# Imports that break the table and cannot be fixed yet: importer -> (imported package or
# module, why). Each must still occur, so the list shrinks as they are fixed.
KNOWN_EXCEPTIONS: dict[str, tuple[str, str]] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / ROOT).rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported pyserving module, line) for every import statement in the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in modules else source, node.lineno))
    return [(target, line) for target, line in found if target == ROOT or target.startswith(ROOT + ".")]


def _graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line}, pyserving modules only, self-imports left out."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for target, line in _imports(name, path, modules):
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def _within(name: str, prefix: str) -> bool:
    return name == prefix or (prefix != ROOT and name.startswith(prefix + "."))


def _layer(name: str) -> int | None:
    """Index in LAYERS; None for a module in a subpackage no layer names."""
    for index, (_, members) in enumerate(LAYERS):
        if any(_within(name, member) for member in members):
            return index
    if name.count(".") == 1 and not (SRC / ROOT / name.split(".")[1]).is_dir():
        return [layer for layer, _ in LAYERS].index(APPLICATION)
    return None


def _excepted(importer: str, imported: str) -> bool:
    known = KNOWN_EXCEPTIONS.get(importer)
    return known is not None and _within(imported, known[0])


def _package(name: str) -> str:
    """The package a module belongs to; a top-level module stands for itself."""
    path = SRC / Path(*name.split("."))
    if path.is_dir() or name.count(".") <= 1:
        return name
    return name.rpartition(".")[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _edges(graph: dict[str, dict[str, int]], key: Callable[[str], str] = lambda name: name, *,
           with_exceptions: bool = True) -> dict[str, set[str]]:
    """The import graph collapsed by `key`; `with_exceptions=False` leaves the known exceptions out."""
    edges: dict[str, set[str]] = defaultdict(set)
    for importer, targets in graph.items():
        for imported in targets:
            if (with_exceptions or not _excepted(importer, imported)) and key(importer) != key(imported):
                edges[key(importer)].add(key(imported))
    return edges


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in _modules() if _layer(name) is None)
    assert not unplaced, f"add these to LAYERS in {Path(__file__).name}: {unplaced}"


def test_no_import_runs_upward():
    names = [layer for layer, _ in LAYERS]
    problems = []
    for importer, targets in sorted(_graph().items()):
        for imported, line in sorted(targets.items()):
            low, high = _layer(importer), _layer(imported)
            if low is not None and high is not None and high > low and not _excepted(importer, imported):
                problems.append(f"{importer}:{line} ({names[low]}) imports {imported} ({names[high]})")
    assert not problems, "imports from a lower layer to a higher one:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    cycles = _cycles(_edges(_graph()))
    assert not cycles, "modules importing each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_packages():
    # A known exception runs upward, so it closes a loop between two packages by definition
    # (server <-> api); that loop is the exception itself, reported there.
    cycles = _cycles(_edges(_graph(), _package, with_exceptions=False))
    assert not cycles, "packages importing each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_known_exceptions_still_occur():
    graph = _graph()
    stale = [importer for importer, (target, _) in KNOWN_EXCEPTIONS.items()
             if not any(_within(imported, target) for imported in graph.get(importer, {}))]
    assert not stale, f"fixed, remove from KNOWN_EXCEPTIONS: {stale}"


def test_the_checks_see_deferred_and_upward_imports(tmp_path, monkeypatch):
    """The walker finds an import inside a function, resolves `from package import module`,
    and the checks report a cycle and an upward import."""
    package = tmp_path / ROOT
    for sub in ("errors.py", "server/__init__.py", "server/a.py", "api/__init__.py", "api/b.py"):
        (package / sub).parent.mkdir(parents=True, exist_ok=True)
        (package / sub).write_text("")
    (package / "server/a.py").write_text("def f():\n    from pyserving.api import b\n")
    (package / "api/b.py").write_text("from pyserving.server.a import f\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    graph = _graph()
    assert graph["pyserving.server.a"] == {"pyserving.api.b": 2}
    assert _cycles(_edges(graph)) == [["pyserving.api.b", "pyserving.server.a"]]
    assert _layer("pyserving.server.a") < _layer("pyserving.api.b")


def test_front_ends_reach_the_server_only_through_the_data_plane():
    """A front end calls `PredictionService`; it never reaches past it into the core, so a
    new front end needs nothing below api/."""
    reaching = []
    for name, path in _modules().items():
        if name.startswith("pyserving.api."):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if ".core." in line and "pyserving.core." not in line:
                    reaching.append(f"{name}:{number}: {line.strip()}")
    assert not reaching, "\n".join(reaching)
