"""The threading contract (``litedurable/_runtime.py``'s docstring) names every thread and
every lock, condition and event the package creates: a new one must be written down there."""

from __future__ import annotations

import ast
from pathlib import Path

import litedurable
from litedurable import _runtime

PACKAGE = Path(litedurable.__file__).parent
CONTRACT = _runtime.__doc__ or ""
PRIMITIVES = {"Lock", "RLock", "Condition", "Event", "Semaphore", "BoundedSemaphore"}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "testing.py")


def _primitive(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "threading"
            and node.func.attr in PRIMITIVES)


def _locks() -> set[str]:
    """``Class.attribute`` (or ``NAME`` at module level) of every lock-like object made."""
    found = set()
    for path in _sources():
        tree = ast.parse(path.read_text())
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            for node in ast.walk(cls):
                if isinstance(node, ast.Assign | ast.AnnAssign) and _primitive(node.value):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        if isinstance(target, ast.Attribute):
                            found.add(f"{cls.name}.{target.attr}")
        for node in tree.body:
            if isinstance(node, ast.Assign) and _primitive(node.value):
                found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


def _thread_names() -> set[str]:
    """The names given to threads and pools (a pool's threads add ``-N``)."""
    names = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            given = [k.value for k in node.keywords if k.arg == "name"]
            if func == "WorkerPool" and len(node.args) > 1:
                given.append(node.args[1])
            if func in ("Thread", "WorkerPool"):
                names.update(g.value for g in given if isinstance(g, ast.Constant))
    return names


def test_every_lock_condition_and_event_is_in_the_contract() -> None:
    locks = _locks()
    assert "Runtime._lock" in locks and "GroupCommit._mutex" in locks  # the scan works
    missing = []
    for name in sorted(locks):
        owner, _, attr = name.rpartition(".")
        spelled = {f"``{name}``", f"``{owner}.{attr.lstrip('_')}``"}  # a property may front it
        if not any(s in CONTRACT for s in spelled):
            missing.append(name)
    assert missing == [], f"add these to the threading contract in _runtime.py: {missing}"


def test_every_thread_is_in_the_contract() -> None:
    names = _thread_names()
    assert {"litedurable-timer", "litedurable-step", "litedurable-workflow"} <= names
    missing = sorted(name for name in names if f"``{name}" not in CONTRACT)
    assert missing == [], f"add these threads to the threading contract in _runtime.py: {missing}"
