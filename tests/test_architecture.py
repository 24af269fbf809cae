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
