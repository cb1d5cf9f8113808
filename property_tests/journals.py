"""Fresh journals for one generated example, on SQLite or on PostgreSQL (issue 17: the same
properties hold on both backends).

A property test takes ``journals``: a context manager that yields ``make(name)``, a fresh
journal location per name, removed (SQLite) or left in a throwaway server (PostgreSQL) on
exit. ``fewer_examples`` is the settings of the PostgreSQL variants: a generated example
there costs a schema and a server round trip per commit, so they draw fewer of them (the
profile's count over 10, at least 8); the SQLite variants keep the profile's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from hypothesis import settings
from scratch import scratch_dir
from support import schema_urls

Maker = Callable[[str], str]
Journals = Callable[[], AbstractContextManager[Maker]]

fewer_examples = settings(max_examples=max(8, settings.default.max_examples // 10))


@contextlib.contextmanager
def sqlite_journals() -> Iterator[Maker]:
    """Files in a fresh scratch directory, removed on exit."""
    with scratch_dir() as d:
        yield lambda name: os.path.join(d, f"{name}.db")


def postgres_journals(dsn: str) -> Journals:
    """Fresh schemas of the server at ``dsn`` (one per name and example)."""

    @contextlib.contextmanager
    def journals() -> Iterator[Maker]:
        yield schema_urls(dsn, "p_")

    return journals
