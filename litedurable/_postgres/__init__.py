"""The PostgreSQL journal (psycopg 3 + psycopg-pool): the only package that imports psycopg.

``ld.App("postgresql://user@host/db")`` (``?schema=name`` picks the schema, default
``litedurable``) opens it through ``_backends.open_storage``, which imports this package on
first use (``pip install 'litedurable[postgres]'``).

STATUS (issue 17, in progress; see the branch's last report):

* Done: every operation of ``litedurable._storage.Storage`` (``backup`` refuses, naming
  ``pg_dump``), with the SQLite backend's semantics, checksums and export records; fencing,
  claims and queue limits that hold under concurrency (see ``storage.py``); LISTEN/NOTIFY
  for ``changed_elsewhere``; schema migrations under an advisory lock, a newer schema
  refused; a lost COMMIT re-read. Tested by ``tests/test_postgres_storage.py`` (the storage
  contract on both backends, racing threads, negative-checked against an unlocked fence and
  an unserialized dequeue), ``tests/test_postgres_app.py``, and every App-level suite marked
  ``both_backends`` (workflows, messages, queues, concurrency, schedules, lifecycle,
  cross-process, ...), run on a throwaway server the tests start.
* Not done: read-only opens (so the CLI's read commands and the UI refuse a PostgreSQL URL;
  the CLI also checks that ``--db`` is a file); group commit (each operation is its own
  transaction; ``record_step`` one autocommit statement, ~1.7x a raw INSERT+COMMIT round trip
  on a local server); leases and heartbeats judged by the database clock (the protocol passes
  the App's ``now``); a multi-machine nemesis test; ``.ci/run`` making these tests
  mandatory (``LITEDURABLE_REQUIRE_POSTGRES=1`` fails instead of skipping); the README's
  "Beyond one machine" section; benchmarks against DBOS.
"""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
