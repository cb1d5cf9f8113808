"""What several test files need and used to write each for itself.

Imported as ``support`` from ``tests/`` and ``property_tests/`` alike: both ``conftest.py``
files put this folder on ``sys.path``, so the import does not depend on pytest's import mode
or on which folder is collected first.

* ``engine_threads`` / ``engine_thread_names`` / ``leaked_engine_threads``: the threads an
  App starts (every one is named ``litedurable-*``), to check that ``close()`` joined them.
* ``eventually``: poll until a condition holds, with a timeout that only guards against hangs.
* ``stored_status``: a workflow's status as the file holds it, read without an App.
* ``crash_then_close``: start work, wait for a simulated crash, close the dead App.
* ``child_env``: the environment for a Python subprocess that imports ``litedurable``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import litedurable as ld
from litedurable._backends import is_server_url, open_storage
from litedurable._sqlite import SqliteStorage
from litedurable._storage import Storage
from litedurable.testing import CrashSwitch

T = TypeVar("T")

ENGINE_THREAD_PREFIX = "litedurable-"


# -- engine threads -----------------------------------------------------------------------------


def engine_threads() -> list[threading.Thread]:
    """Every live thread an App started: the engine names each one ``litedurable-*``."""
    return [t for t in threading.enumerate() if t.name.startswith(ENGINE_THREAD_PREFIX)]


def engine_thread_names() -> list[str]:
    """The sorted names of ``engine_threads()``: what an assertion message should show."""
    return sorted(t.name for t in engine_threads())


def leaked_engine_threads(before: Collection[threading.Thread], join: float = 5.0) -> list[str]:
    """The names of engine threads started since ``before`` that are still alive.

    A thread still finishing its last instruction after ``close()`` returned gets a bounded
    ``join`` first, so only a thread that really stays counts as leaked.
    """
    leaked = [t for t in engine_threads() if t not in before]
    for thread in leaked:
        thread.join(join)
    return sorted(t.name for t in leaked if t.is_alive())


# -- waiting --------------------------------------------------------------------------------------


def eventually(check: Callable[[], T], what: str | Callable[[], str], *,
               timeout: float = 30.0, every: float = 0.005) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    The tests never assert how long something takes: ``timeout`` only turns a hang into a
    failure, so it is generous, and each caller keeps the one its file always used. ``what``
    names the awaited condition in the failure; a callable is called only then, to describe
    the state at that moment. ``every`` is the pause between checks.
    """
    limit = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > limit:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(every)


# -- the file and crashes -------------------------------------------------------------------------


def inspect_journal(path: str) -> Storage:
    """The journal at ``path`` opened to look at, without an App: a read-only SQLite file, or
    (``LITEDURABLE_TEST_DB=postgres``) the PostgreSQL schema the URL names."""
    return open_storage(path) if is_server_url(path) else SqliteStorage(path, readonly=True)


def stored_status(path: str, workflow_id: str) -> str:
    """The workflow's status as the file holds it, read without launching an App.

    After a simulated crash the App that crashed is unusable, and a new App would recover the
    workflow before it could be asked; a read-only ``SqliteStorage`` shows the file as it was left.
    """
    with inspect_journal(path) as journal:
        row = journal.get_workflow(workflow_id)
        assert row is not None
        return row.status


def crash_then_close(app: ld.App, switch: CrashSwitch,
                     start: Callable[[ld.App], Any] = lambda app: None,
                     timeout: float = 30.0) -> None:
    """Launch ``app``, ``start`` work on it, wait until ``switch`` fired, close the dead App.

    This stands for a process dying at the crash point: the crashed App writes nothing more,
    and closing it only joins its threads (which ``no_leaked_threads`` checks). The next App
    built on the same file plays the next process. The default ``start`` does nothing, for an
    App whose launch-time recovery runs into the crash by itself.
    """
    with app:
        start(app)
        assert switch.wait(timeout), "the crash point was never reached"


# -- child processes ------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This environment, with ``PYTHONPATH`` starting at the folder ``litedurable`` came from.

    A child Python process must import the same ``litedurable`` as the tests, and must find it
    when the package is not installed at all (pytest finds it through the current directory,
    which a script's child does not search). Children of the child inherit it.
    """
    env = dict(os.environ)
    root = str(Path(ld.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def cli_exit(argv: list[str]) -> int:
    """The CLI's exit status, also when argparse itself exits (a usage error)."""
    from litedurable._cli import main

    try:
        return main(argv)
    except SystemExit as exit_info:
        assert isinstance(exit_info.code, int)
        return exit_info.code


def journal_ids(db: Path | str) -> set[str]:
    """The ids of every workflow in the journal at ``db``, read without writing."""
    with open_storage(str(db), readonly=True) as store:
        return {r.workflow_id for r in store.list_workflows()}


def schema_urls(dsn: str, prefix: str) -> Callable[[str], str]:
    """A maker of ``postgresql://`` URLs of fresh schemas of the server at ``dsn``: one schema
    per name (the same name is the same journal), ``prefix`` then random hex."""
    sep = "&" if "?" in dsn else "?"
    schemas: dict[str, str] = {}

    def url(name: str) -> str:
        schema = schemas.setdefault(name, f"{prefix}{uuid.uuid4().hex[:12]}")
        return f"{dsn}{sep}schema={schema}"

    return url
