"""Shared fixtures: a journal path per test, and a guard against leaked engine threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def db_path(tmp_path) -> str:
    """A fresh journal path inside the test's temporary directory."""
    return str(tmp_path / "journal.db")


def _engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("litedurable-")}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves any ``litedurable-*`` thread running after it returns.

    Every App a test opens must be closed, and ``close()`` joins the threads it started. A
    thread still finishing its last instruction gets a bounded join before the check.
    """
    before = _engine_threads()
    yield
    leaked = _engine_threads() - before
    for thread in leaked:
        thread.join(5.0)
    alive = sorted(t.name for t in leaked if t.is_alive())
    assert not alive, f"threads left running after the test: {alive}"
