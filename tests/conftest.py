"""Shared fixtures: a journal path per test, and a guard against leaked engine threads."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``support`` (the helpers the test files share) lives here; make it importable whatever
# pytest's import mode (property_tests/conftest.py does the same).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import engine_threads, leaked_engine_threads


@pytest.fixture
def db_path(tmp_path) -> str:
    """A fresh journal path inside the test's temporary directory."""
    return str(tmp_path / "journal.db")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves any ``litedurable-*`` thread running after it returns.

    Every App a test opens must be closed, and ``close()`` joins the threads it started. A
    thread still finishing its last instruction gets a bounded join before the check.
    """
    before = engine_threads()
    yield
    alive = leaked_engine_threads(before)
    assert not alive, f"threads left running after the test: {alive}"
