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
  is tested; the UI's is not); a lost COMMIT re-read, never assumed; a dropped connection
  replaced.
* Tested: ``tests/test_postgres_storage.py`` (the storage contract on both backends; racing
  threads, checked to fail against an unlocked fence, an unserialized dequeue and a tree read
  before it is locked), ``tests/test_postgres_app.py``, and the App-level suites marked
  ``both_backends`` (workflows, messages, queues, concurrency, schedules, lifecycle, api,
  cross-process, consumers SIGKILLed while draining a queue, two processes recovering one
  journal), on a throwaway server the tests start (``tests/conftest.py``).
* Leases: heartbeats are stamped and judged by the server's clock (``Storage.owners``
  returns the server's now with the rows), so machines sharing the database need not agree
  on the time; a pid is judged only on its own host. Tested with judges whose clocks are an
  hour off (``tests/test_postgres_storage.py``) and by ``tests/test_machines.py``: four
  worker processes posing as machines with skewed clocks, SIGKILLed and SIGSTOPped.
* Not done: group commit (each operation is its own transaction; ``record_step`` is one
  autocommit statement, ~1.7x a raw INSERT+COMMIT round trip on a local server); the other
  times the protocol passes (``now``: created/updated, deadlines, queue rate windows) are
  still the App's clock; ``.ci/run`` installing the extra and making these tests mandatory
  (``LITEDURABLE_REQUIRE_POSTGRES=1`` fails instead of skipping); the README's "Beyond one
  machine" section; the App's own messages name its location as given (a password in the
  URL would show: use a passfile or PGPASSWORD); benchmarks against DBOS.
"""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
