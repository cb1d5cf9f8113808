"""The package's layering (STYLE.md): a module imports only from modules on lower layers."""

from __future__ import annotations

import ast
from pathlib import Path

import litedurable

PACKAGE = Path(litedurable.__file__).parent

LAYERS: list[set[str]] = [
    {"_errors", "_types"},
    {"_clock", "_codec", "_pool", "_context"},
    {"_journal"},
    {"_registry", "_schedule"},
    {"_runtime"},
    {"_concurrency"},
    {"_app"},
    {"_demo", "testing"},
    {"_cli"},
    {"__init__", "__main__"},
]


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if module in names:
            return i
    raise AssertionError(f"litedurable/{module}.py is not placed in a layer of this test")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
            "litedurable."
        ):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_imports_only_lower_layers() -> None:
    problems = []
    for path in sorted(PACKAGE.glob("*.py")):
        here = _layer(path.stem)
        for imported in _imports(path):
            if _layer(imported) >= here and imported != path.stem:
                problems.append(f"{path.stem} (layer {here}) imports {imported} "
                                f"(layer {_layer(imported)})")
    assert problems == []


def test_only_the_journal_imports_apsw() -> None:
    users = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            if any(n.split(".")[0] in ("apsw", "sqlite3") for n in names):
                users.append(path.stem)
    assert sorted(set(users)) == ["_journal"]


def test_no_function_local_imports() -> None:
    local = []
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        local.append(f"{path.stem}.{fn.name}")
    assert local == []
