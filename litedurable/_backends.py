"""Which storage serves a location: the one place that knows the backends.

The App and the CLI ask ``open_storage`` and get a ``Storage``; they never import a backend.
A file path is an SQLite journal (``litedurable._sqlite``); a ``postgresql://`` (or
``postgres://``) URL is a PostgreSQL database (``litedurable._postgres``, with the
``litedurable[postgres]`` extra installed): its tables live in the schema ``litedurable``, or
the one named by a ``schema=`` query parameter (litedurable's own: removed before connecting).
"""

from __future__ import annotations

import importlib
import os
import re
import urllib.parse
from typing import cast

from ._errors import JournalError
from ._faults import Faults
from ._sqlite import SqliteStorage
from ._storage import Durability, Storage

__all__ = ["describe_location", "is_server_url", "open_storage", "shown_location"]

_SCHEMES = ("postgresql://", "postgres://")


def is_server_url(location: str) -> bool:
    """Whether ``location`` names a database server rather than a file."""
    return location.startswith(_SCHEMES)


def describe_location(location: str) -> str:
    """``location`` for messages: a file's absolute path, or a URL without its password."""
    if not is_server_url(location):
        return os.path.abspath(location)
    parts = urllib.parse.urlsplit(location)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    # libpq also takes the password as a query parameter (?password=...)
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def shown_location(location: str) -> str:
    """``location`` as given, for messages, but a URL without its password."""
    return describe_location(location) if is_server_url(location) else location


def open_storage(
    location: str, *, durability: Durability = "full", busy_timeout: float = 5.0,
    vfs: str | None = None, readonly: bool = False, faults: Faults | None = None,
) -> Storage:
    """Open the journal at ``location`` with the backend that serves it."""
    if is_server_url(location):
        # Imported on first use, not with litedurable: psycopg (an optional extra) costs
        # about 0.1 s of import time that SQLite users should not pay.
        try:
            backend = importlib.import_module("litedurable._postgres")
        except ImportError as exc:
            raise JournalError(f"{location.split('://')[0]}:// needs psycopg: "
                               "pip install 'litedurable[postgres]'") from exc
        if vfs is not None:
            raise ValueError("vfs= is an SQLite option; a PostgreSQL journal has none")
        dsn, schema = _split_schema(location)
        return cast(Storage, backend.PostgresStorage(
            dsn, schema=schema, durability=durability, timeout=max(busy_timeout, 30.0),
            faults=faults, readonly=readonly))
    return SqliteStorage(location, durability=durability, busy_timeout=busy_timeout, vfs=vfs,
                         readonly=readonly, faults=faults)


def _split_schema(url: str) -> tuple[str, str]:
    """The URL without litedurable's ``schema=`` parameter, and that schema."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "litedurable")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), schema
