"""Which storage serves a location: the one place that knows the backends.

The App and the CLI ask ``open_storage`` and get a ``Storage``; they never import a backend.
A file path is an SQLite journal (``litedurable._sqlite``); a server database will be told
apart by its URL (``postgresql://``) here.
"""

from __future__ import annotations

from ._faults import Faults
from ._sqlite import SqliteStorage
from ._storage import Durability, Storage

__all__ = ["open_storage"]


def open_storage(
    location: str, *, durability: Durability = "full", busy_timeout: float = 5.0,
    vfs: str | None = None, readonly: bool = False, faults: Faults | None = None,
) -> Storage:
    """Open the journal at ``location`` with the backend that serves it."""
    return SqliteStorage(location, durability=durability, busy_timeout=busy_timeout, vfs=vfs,
                         readonly=readonly, faults=faults)
