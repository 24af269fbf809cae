"""The layering rules of ARCHITECTURE.md, checked by walking every module's imports."""
from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "mcpsync"

# layer prefix -> (allowed stdlib/third-party top-level modules or None for "any stdlib",
#                  forbidden top-level modules, allowed mcpsync-internal prefixes)
FORBIDDEN_IN_PROTOCOL = {"threading", "socket", "socketserver", "subprocess", "werkzeug",
                         "simple_websocket", "asyncio", "select", "selectors", "http",
                         "concurrent", "multiprocessing", "queue"}
SYNC_ALLOWED = {"threading", "collections", "time", "typing", "__future__", "dataclasses"}


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """(absolute dotted module, level) for every import in the file; relative ones resolved."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        package = parts
    else:
        package = parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    out += [(f"{mod}.{a.name}", node.level) for a in node.names]
                else:
                    out.append((mod, node.level))
            else:
                out.append((node.module or "", 0))
    return out


def _modules(sub: str) -> list[pathlib.Path]:
    root = PKG / sub
    if root.is_dir():
        return sorted(root.rglob("*.py"))
    module = root.with_suffix(".py")
    return [module] if module.exists() else []


@pytest.mark.parametrize("path", _modules("protocol"), ids=lambda p: p.name)
def test_protocol_core_is_sans_io(path: pathlib.Path) -> None:
    for mod, _ in _imports(path):
        top = mod.split(".")[0]
        assert top not in FORBIDDEN_IN_PROTOCOL, f"{path.name} imports {mod}"
        if top == "mcpsync":
            assert mod.startswith(("mcpsync.protocol", "mcpsync.errors")), f"{path.name} imports {mod}"


@pytest.mark.parametrize("path", _modules("sync"), ids=lambda p: p.name)
def test_sync_imports_only_threading_and_errors(path: pathlib.Path) -> None:
    for mod, _ in _imports(path):
        top = mod.split(".")[0]
        if top == "mcpsync":
            assert mod.startswith(("mcpsync.sync", "mcpsync.errors")), f"{path.name} imports {mod}"
        else:
            assert top in SYNC_ALLOWED, f"{path.name} imports {mod}"


@pytest.mark.parametrize("name", ["h1", "response", "limits"])
def test_http_parser_is_sans_io(name: str) -> None:
    for mod, _ in _imports(PKG / "frontend" / f"{name}.py"):
        top = mod.split(".")[0]
        assert top not in FORBIDDEN_IN_PROTOCOL, f"frontend/{name}.py imports {mod}"
        if top == "mcpsync":
            assert mod.startswith("mcpsync.frontend"), f"frontend/{name}.py imports {mod}"


def test_front_end_knows_no_domain_module_and_none_knows_it() -> None:
    """The front end hosts any WSGI app and reaches domain code only through the
    ``sync.blocking`` hook; server, connection, hub and the transports never see it."""
    for path in _modules("frontend"):
        for mod, _ in _imports(path):
            if mod.startswith("mcpsync"):
                assert mod.startswith(("mcpsync.frontend", "mcpsync.sync")), f"{path.name} imports {mod}"
    for path in sorted(PKG.rglob("*.py")):
        if "frontend" in path.parts or path.name in ("run.py", "__main__.py", "serve.py"):
            continue
        for mod, _ in _imports(path):
            assert not mod.startswith("mcpsync.frontend"), f"{path} imports {mod}"


def test_hub_never_imports_transports_or_werkzeug() -> None:
    for path in _modules("hub"):
        for mod, _ in _imports(path):
            assert not mod.startswith(("mcpsync.transports", "mcpsync.http", "mcpsync.streams",
                                       "werkzeug")), f"{path.name} imports {mod}"


def test_state_never_imports_transports_app_or_cli() -> None:
    for path in _modules("state"):  # the shared state sits below the app and the transports
        for mod, _ in _imports(path):
            assert not mod.startswith(("mcpsync.http", "mcpsync.streams", "mcpsync.service",
                                       "mcpsync.__main__", "mcpsync.run", "werkzeug")), f"{path.name} imports {mod}"


@pytest.mark.parametrize("leaf", ["errors"])
def test_leaf_modules_import_nothing_internal(leaf: str) -> None:
    for mod, _ in _imports(PKG / f"{leaf}.py"):
        assert not mod.startswith("mcpsync"), f"{leaf}.py imports {mod}"


def test_lower_layers_never_import_upper_ones() -> None:
    upper = ("mcpsync.transports", "mcpsync.http", "mcpsync.streams", "mcpsync.__main__",
             "mcpsync.service")
    for sub in ("protocol", "sync", "sessions", "errors"):
        for path in _modules(sub):
            for mod, _ in _imports(path):
                assert not mod.startswith(upper), f"{path} imports {mod}"


# ---- the whole graph: layers (transitively) and circles ------------------------------------

# Bottom to top. A module may import (at run time) only modules of its own group or of a
# lower layer, so every chain of imports goes down; ARCHITECTURE.md draws the same stack.
LAYERS: list[set[str]] = [
    {"errors", "_version"},
    {"protocol", "sync", "inputs", "schema", "sessions", "metrics", "auth", "semconv"},
    {"telemetry"},         # OpenTelemetry's only importer; client and core call into it
    {"content", "admission", "frontend", "client"},
    {"core"},
    {"tasks"},
    {"server", "state"},
    {"service", "target", "hub"},
    {"streams"},
    {"http"},
    {"run"},
    {""},                  # the package itself (mcpsync/__init__.py): the public names
    {"examples"},          # example servers, written against the public names
    {"__main__"},          # the CLI (its embedded default is examples.everything)
]
RANK = {group: i for i, layer in enumerate(LAYERS) for group in layer}
MODULES = {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
           for p in PKG.rglob("*.py")}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """The mcpsync modules ``path`` imports: (at run time, only under TYPE_CHECKING)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.parts[-1] != "__init__" else list(rel.parts[:-1])
    runtime: set[str] = set()
    typing_only: set[str] = set()

    def resolve(mod: str, names: list[str]) -> set[str]:
        found = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES}
        if len(found) < len(names):
            while mod and mod not in MODULES:
                mod = mod.rpartition(".")[0]
            if mod:
                found.add(mod)
        return {m for m in found if m.startswith("mcpsync")}

    def visit(node: ast.AST, typing: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = typing or (isinstance(child, ast.If) and isinstance(child.test, ast.Name)
                               and child.test.id == "TYPE_CHECKING")
            into = typing_only if inner else runtime
            if isinstance(child, ast.Import):
                for alias in child.names:
                    into |= resolve(alias.name, [])
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                into |= resolve(mod, [a.name for a in child.names])
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    me = ".".join(rel.parts).removesuffix(".__init__")
    return runtime - {me}, typing_only - runtime - {me}


GRAPH = {name: _edges(path) for name, path in MODULES.items()}


def test_every_group_has_a_layer() -> None:
    missing = sorted({_group(m) for m in MODULES} - set(RANK))
    assert not missing, f"place {missing} in LAYERS (and in ARCHITECTURE.md)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module: str) -> None:
    runtime, typing_only = GRAPH[module]
    rank, group = RANK[_group(module)], _group(module)
    for dep in sorted(runtime):
        if _group(dep) != group:
            assert RANK[_group(dep)] < rank, f"{module} (layer {rank}) imports {dep} (layer {RANK[_group(dep)]})"
    for dep in sorted(typing_only):  # annotations may name a peer of the same layer, never above
        assert RANK[_group(dep)] <= rank, f"{module} names {dep} (a higher layer) even for typing"


def _reach(start: str) -> set[str]:
    """Every module importing ``start`` loads, directly or not (run-time imports)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in GRAPH[todo.pop()][0]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m) == "protocol"))
def test_protocol_core_is_sans_io_transitively(module: str) -> None:
    outside = sorted(m for m in _reach(module) if _group(m) not in ("protocol", "errors"))
    assert not outside, f"{module} reaches {outside}"


def test_hub_and_client_never_reach_the_transports_transitively() -> None:
    for module in (m for m in MODULES if _group(m) in ("hub", "client")):
        bad = sorted(m for m in _reach(module) if _group(m) in ("http", "streams", "frontend", "run", "service"))
        assert not bad, f"{module} reaches {bad}"


def _circles(runtime_only: bool) -> list[list[str]]:
    """Strongly connected components (of more than one module) of the import graph."""
    edges = {m: GRAPH[m][0] | (set() if runtime_only else GRAPH[m][1]) for m in GRAPH}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_no_import_circle_at_run_time() -> None:
    assert _circles(runtime_only=True) == []


def test_type_only_circles_stay_inside_one_package() -> None:
    """Annotations may name each other inside a package (core.context ↔ core.connection),
    never across packages."""
    for circle in _circles(runtime_only=False):
        packages = {m.rpartition(".")[0] for m in circle}
        assert len(packages) == 1, f"an import circle across packages: {circle}"


# Modules being split right now, with the length they may not grow past.
SPLITTING: dict[str, int] = {}   # a module being split may be allowed more for a while


def test_no_module_is_over_600_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > SPLITTING.get(name, 600)}
    assert not long, long


# ---- ARCHITECTURE.md, where a machine can check it -------------------------------------------

ARCHITECTURE = PKG.parent / "ARCHITECTURE.md"


def test_every_module_is_in_the_module_map() -> None:
    """ARCHITECTURE.md names every module file by its path (``mcpsync/core/connection.py``)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
                     if f"`{p.relative_to(PKG.parent).as_posix()}`" not in text)
    assert not missing, f"add to ARCHITECTURE.md's module map: {missing}"


def test_the_layers_drawing_is_LAYERS() -> None:
    """The drawing in ARCHITECTURE.md ("layer | groups | what" rows, top layer first) has
    the groups of ``LAYERS``, layer by layer (``__init__`` is the package itself)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    drawn: dict[int, set[str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            drawn[int(parts[0])] = {"" if g == "__init__" else g for g in parts[1].split()}
    assert drawn == dict(enumerate(LAYERS))
    numbers = [int(p.split("|")[0]) for p in text.splitlines()
               if p.count("|") == 2 and p.split("|")[0].strip().isdigit()]
    assert numbers == sorted(numbers, reverse=True), "draw the top layer first"
