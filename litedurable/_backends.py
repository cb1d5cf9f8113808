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


# A URL of another scheme (postgresql+psycopg://, POSTGRESQL://, " postgresql://"), and a libpq
# key=value string: taken for file names, they opened (or created) an SQLite file so named.
_OTHER_URL = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_KEYWORDS = re.compile(
    r"\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|options|"
    r"connect_timeout|application_name)\s*=", re.IGNORECASE)


def is_server_url(location: str) -> bool:
    """Whether ``location`` names a database server rather than a file.

    Raises:
        JournalError: ``location`` is neither: a URL of another scheme, a libpq ``key=value``
            connection string, or a ``postgresql://`` URL that cannot be parsed. The message
            never repeats the location (it may hold a password).
    """
    if location.startswith(_SCHEMES):
        try:
            urllib.parse.urlsplit(location).port  # noqa: B018  (parses host and port)
        except ValueError as exc:
            raise JournalError(f"the {location.split('://')[0]}:// URL cannot be parsed "
                               f"({exc}): check its host (an IPv6 address in [brackets]) "
                               "and its port") from None
        return True
    other = _OTHER_URL.match(location)
    if other is not None:
        what = ("a URL with spaces before it" if location[0].isspace()
                else f"a {other.group(1)}:// URL")
        raise JournalError(
            f"{what} is not a journal location: give a file path (an SQLite journal) or a "
            "PostgreSQL URL spelled postgresql://user@host:port/db")
    if _KEYWORDS.match(location):
        raise JournalError(
            "a key=value connection string is not a journal location: write it as a URL, "
            "postgresql://user@host:port/dbname (put the password in PGPASSWORD or a passfile)")
    return False


def describe_location(location: str) -> str:
    """``location`` for messages: a file's absolute path, or for a server URL
    ``postgresql://user@host:port/db (schema name)``: never the password (nor any other
    connection option). The PostgreSQL driver says its journal the same way
    (``litedurable._postgres.driver.describe``)."""
    if not is_server_url(location):
        return os.path.abspath(location)
    url, schema = _split_schema(location)
    parts = urllib.parse.urlsplit(url)
    given = dict(urllib.parse.parse_qsl(parts.query))  # libpq's query parameters win
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = given.get("user") or (urllib.parse.unquote(parts.username) if parts.username
                                 else None)
    host = given.get("host") or given.get("hostaddr")
    port = given.get("port")
    if host is None:  # the URL's own host[:port]
        where = urllib.parse.unquote(netloc)
        if port:
            where = f"{where.rsplit(':', 1)[0] if _PORT.search(where) else where}:{port}"
    else:
        where = f"{host}{f':{port}' if port else ''}"
    dbname = given.get("dbname") or urllib.parse.unquote(parts.path.lstrip("/"))
    return f"postgresql://{f'{user}@' if user else ''}{where}/{dbname} (schema {schema})"


_PORT = re.compile(r":\d*$")


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
        named = [v for k, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query,
                                                      keep_blank_values=True) if k == "schema"]
        if len(named) > 1:
            raise JournalError(f"{describe_location(location)} names {len(named)} schemas "
                               f"({', '.join(map(repr, named))}): give ?schema= once")
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
    # Not urlunsplit: it drops the "//" of an empty host (postgresql:///db?host=/run/pg).
    url = f"{parts.scheme}://{parts.netloc}{parts.path}{f'?{rest}' if rest else ''}"
    return url + (f"#{parts.fragment}" if parts.fragment else ""), schema
