"""The fault seam's defects: each one is read by the engine, and only known names are injected.

A defect that nothing consults would make its negative control pass without breaking
anything; a misspelt name must fail loudly instead of injecting nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import litedurable
from litedurable._faults import DEFECTS, Faults

PACKAGE = Path(litedurable.__file__).parent


def consulted() -> dict[str, list[str]]:
    """Every ``broken("<name>")`` in the package (outside the seam itself), by name."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_faults.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"""\bbroken\(\s*["']([^"']+)["']\s*\)""", text):
            line = text.count("\n", 0, match.start()) + 1
            found.setdefault(match.group(1), []).append(f"{path.relative_to(PACKAGE)}:{line}")
    return found


def test_every_defect_is_consulted_at_exactly_one_place() -> None:
    found = consulted()
    assert {name: found.get(name, []) for name in DEFECTS if len(found.get(name, [])) != 1} == {}
    assert sorted(set(found) - set(DEFECTS)) == []  # the engine reads no name the seam lacks


def test_every_defect_says_what_it_breaks() -> None:
    assert all(re.fullmatch(r"[a-z_]+", name) and len(text) > 40 for name, text in DEFECTS.items())


def test_inject_refuses_unknown_names_and_injects_nothing() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match=r"unknown defect.*no_such_defect.*choose from no_fence"):
        faults.inject("no_fence", "no_such_defect")
    assert faults.defects == frozenset()
    assert faults.callback is None


def test_inject_switches_defects_on_by_name() -> None:
    faults = Faults()
    assert not faults.defects  # production: the engine's checks stop at this attribute
    faults.inject("no_sync")
    faults.inject("no_fence")
    assert faults.broken("no_sync") and faults.broken("no_fence")
    assert not faults.broken("no_reread")
    assert faults.callback is not None  # a step defect is read where crash points fire


def test_injecting_nothing_changes_nothing() -> None:
    faults = Faults()
    faults.inject()
    assert faults.defects == frozenset() and faults.callback is None
