"""The SQLite backend of the storage interface: the only package that imports apsw.

``driver`` opens, checks and migrates the file and lends its connections; ``commit`` is the
group commit every write goes through; ``sql`` names every statement; ``storage`` is
``SqliteStorage``, the operations of ``litedurable._storage.Storage`` on top of them.
"""

from .storage import SqliteStorage

__all__ = ["SqliteStorage"]
