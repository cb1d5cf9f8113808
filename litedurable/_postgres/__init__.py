"""The PostgreSQL journal (psycopg 3 + psycopg-pool): the only package that imports psycopg.

``ld.App("postgresql://user@host/db")`` (``?schema=name`` picks the schema, default
``litedurable``) opens it through ``_backends.open_storage``, which imports this package on
first use (``pip install 'litedurable[postgres]'``).

STATUS (issue 17, in progress; not merged into main):

* Done: every operation of ``litedurable._storage.Storage`` (``backup`` refuses, naming
  ``pg_dump``), with the SQLite backend's semantics, checksums and export records; fencing,
  claims, the parent rule and queue limits that hold under concurrency (``storage.py``);
  LISTEN/NOTIFY for ``changed_elsewhere``; schema migrations in one transaction under an
  advisory lock, a newer schema refused; read-only opens (the CLI's ``--db postgresql://``
  and the UI's, which keeps one pool for its life); a lost COMMIT re-read, never assumed; a
  dropped connection replaced; an unreachable server reported within seconds (opening: libpq's
  ``connect_timeout``, 5 s unless the DSN says; a call: ``driver.PROBE_AFTER`` plus that) and
  a server that comes back reconnected to (``tests/test_postgres_ops.py`` stops and starts
  one); the journal named ``postgresql://user@host:port/db (schema name)``, never a password.
* Tested: ``tests/test_postgres_storage.py`` (the storage contract on both backends; racing
  threads, checked to fail against an unlocked fence, an unserialized dequeue and a tree read
  before it is locked), ``tests/test_postgres_app.py``, and the App-level suites marked
  ``both_backends`` (workflows, messages, queues, concurrency, schedules, lifecycle, api,
  cross-process, consumers SIGKILLed while draining a queue, two processes recovering one
  journal), on a throwaway server the tests start (``tests/conftest.py``).
* Not done: group commit (each operation is its own transaction; ``record_step`` is one
  autocommit statement, ~1.7x a raw INSERT+COMMIT round trip on a local server); leases and
  heartbeats judged by the database clock (the protocol passes the App's ``now``, so
  machines must keep their clocks close); several machines under a kill/stop nemesis; a
  network that drops packets on an open connection (no TCP keepalive/``tcp_user_timeout``
  is set: a call on such a connection waits for the kernel to give up);
  ``.ci/run`` installing the extra and making these tests mandatory
  (``LITEDURABLE_REQUIRE_POSTGRES=1`` fails instead of skipping); the README's "Beyond one
  machine" section; benchmarks against DBOS.
"""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
