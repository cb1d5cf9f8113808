"""The package's layering (STYLE.md): a module imports only from modules on lower layers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import litedurable

PACKAGE = Path(litedurable.__file__).parent

LAYERS: list[set[str]] = [
    {"_errors"},
    {"_types"},
    {"_clock", "_codec", "_pool", "_context", "_faults", "_cron", "_telemetry", "_format"},
    {"_storage", "_registry"},
    {"_export"},  # the export record and per-table checksums, the same for every backend
    {"_sqlite", "_postgres", "_records"},  # the backends: the engine never imports them
    {"_backends", "_timers", "_lease", "_scheduler"},
    {"_steps"},
    {"_run"},
    {"_runtime"},
    {"_concurrency", "_replay"},
    {"_children", "_messages", "_queues"},
    {"_handle"},
    {"_app"},
    {"_demo", "testing", "_views"},
    {"_ui"},  # the timeline page: reads a journal through _backends, as _cli does
    {"_cli_common"},  # what every command shares
    {"_cli_read"},  # commands that read a journal
    {"_cli_write"},  # commands that change one or run an application
    {"_cli"},  # the parser and main
    {"__init__", "__main__"},
]
ENGINE = {"_steps", "_run", "_runtime", "_concurrency", "_children", "_messages", "_queues",
          "_handle",
          "_app",
          "_lease", "_timers", "_scheduler", "_replay"}
"""Modules that must reach storage only through ``_storage.Storage``: never a backend."""


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if module in names:
            return i
    raise AssertionError(f"litedurable/{module}.py is not placed in a layer of this test")


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (a subpackage's own modules count as itself)."""
    inside = path.parent != PACKAGE  # a file of a subpackage: its relative imports go up one more
    tree = ast.parse(path.read_text())
    # Imports for annotations only (``if TYPE_CHECKING:``) may name a higher layer: a run's
    # type names its runtime, a handle's its App; nothing is imported when the code runs.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        level = node.level - (1 if inside else 0)
        if node.level and level == 0:
            found.add(path.parent.name)  # ``from . import sql``: its own subpackage
        elif level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif node.module and node.module.startswith("litedurable."):
            found.add(node.module.split(".")[1])
    return found


def _modules() -> list[tuple[str, Path]]:
    """(module, file) of every module; a subpackage's files count as the subpackage."""
    found = [(path.stem, path) for path in sorted(PACKAGE.glob("*.py"))]
    for package in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        found += [(package.name, path) for path in sorted(package.glob("*.py"))]
    return found


def test_every_module_imports_only_lower_layers() -> None:
    problems = []
    for module, path in _modules():
        here = _layer(module)
        for imported in _imports(path):
            if imported == module:
                continue
            if _layer(imported) >= here:
                problems.append(f"{path.name} of {module} (layer {here}) imports {imported} "
                                f"(layer {_layer(imported)})")
            if module in ENGINE and imported in ("_sqlite", "_postgres"):
                problems.append(f"{module} imports a backend ({imported}); use _storage.Storage")
    assert problems == []


def test_only_the_sqlite_backend_imports_apsw() -> None:
    users = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            if any(n.split(".")[0] in ("apsw", "sqlite3") for n in names):
                users.append(module)
    assert sorted(set(users)) == ["_sqlite"]


def test_only_the_postgres_backend_imports_psycopg() -> None:
    users = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            if any(n.split(".")[0] in ("psycopg", "psycopg_pool") for n in names):
                users.append(module)
    assert sorted(set(users)) == ["_postgres"]


def test_no_function_local_imports() -> None:
    local = []
    for _, path in _modules():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        local.append(f"{path.stem}.{fn.name}")
    assert local == []


def test_sql_lives_only_in_the_statement_catalogue() -> None:
    """Every SQL statement is a named constant of ``_sqlite/sql.py``; other modules bind them
    (transaction control aside), so the backend's whole vocabulary reads in one place."""
    statement = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|PRAGMA|WITH)\b")
    found = []
    for _, path in _modules():
        if path.name == "sql.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            parts = node.values if isinstance(node, ast.JoinedStr) else [node]
            for part in parts:
                if (isinstance(part, ast.Constant) and isinstance(part.value, str)
                        and statement.match(part.value)):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
