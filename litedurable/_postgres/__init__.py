"""The PostgreSQL journal (psycopg 3 + psycopg-pool): the only package that imports psycopg.

``ld.App("postgresql://user@host/db")`` (``?schema=name`` picks the schema, default
``litedurable``) opens it through ``_backends.open_storage``, which imports this package on
first use (``pip install 'litedurable[postgres]'``).

The modules, in layers: ``sql.py`` (the schema, its migrations, every statement),
``driver.py`` (the pool, the LISTEN listener and the notifier threads, transactions, errors,
timeouts), ``commit.py`` (the group commit of step rows), ``storage.py`` (``PostgresStorage``:
every operation of ``litedurable._storage.Storage``), ``transfer.py`` (check, export,
import). What differs from the SQLite journal, and why:

* Fencing holds under READ COMMITTED by row locks, not by snapshot reads: a step row's write
  share-locks its workflow row where its owner is the writer (one batch: each row once, in id
  order); outcomes, claims and cancels are UPDATEs with owner and status in their WHERE. A
  claim skips rows another transaction holds (``SKIP LOCKED``); a dequeue serializes on its
  queue's advisory lock (the limits are a shared budget).
* Leases are judged by the server's clock (``Storage.owners`` returns its now with the rows),
  so machines need not agree on the time; a pid is judged only on its own host and pid
  namespace. Other instants the protocol passes (created/updated, deadlines, timers, queue
  rate windows) are the App's clock, as on SQLite: keep the machines' clocks close for those.
* Other processes hear of a commit by ``NOTIFY``, sent after it by the notifier (one for many
  commits), and re-read the tables; a notification lost costs a poll a second later.
* ``backup`` refuses (use ``pg_dump``); the power-loss and I/O-error test VFS, and the
  injected defects of ``litedurable._faults`` but ``wall_clock_leases``, are SQLite's only.
* A call fails within about ``driver.PROBE_AFTER + driver.CONNECT_TIMEOUT`` seconds when the
  server is gone; TCP keepalives find a vanished peer in about 30 s. A connection the server
  closed while it was idle (a restart, ``pg_terminate_backend``) is replaced before use.
* Step rows go out on a connection of their own (one write in flight at a time): a step is
  one round trip, with no pool checkout in it.

Tested on a throwaway server the tests start (``tests/conftest.py``): the storage contract on
both backends (``tests/test_postgres_storage.py``, racing threads shown to fail against an
unlocked fence, an unserialized dequeue and a tree read before it is locked), the group commit
(``tests/test_postgres_commit.py``), operations (``tests/test_postgres_ops.py``), several
"machines" with skewed clocks under a SIGKILL/SIGSTOP nemesis (``tests/test_machines.py``),
and every App-level suite marked ``both_backends``.
"""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
