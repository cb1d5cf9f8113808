"""The PostgreSQL journal (psycopg 3 + psycopg-pool): the only package that imports psycopg.

STATUS (work in progress, issue 17): ``PostgresStorage`` implements every operation of
``litedurable._storage.Storage`` (``backup`` refuses, naming ``pg_dump``), checked by the
storage-level contract suite ``tests/test_postgres_storage.py``, which runs the same assertions
on the SQLite backend. It is NOT wired into ``open_storage``/``App`` yet: the App-level
suites have not been run on it.

Next steps: run the App-level suites parametrized over both backends and wire
``open_storage("postgresql://...")``; group commit (batches in pipeline mode, multi-row step
inserts) and NOTIFY batching; leases and heartbeats by the database clock; a multi-process
nemesis test; ``.ci/run`` making the PostgreSQL tests mandatory; benchmarks against DBOS.
"""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
