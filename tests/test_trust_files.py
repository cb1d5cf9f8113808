"""Issue 12, helper "files": the journal file under concurrent opens, deletion and damage, and
the ``litedurable`` command's edges (items 13, 14, 15, 16, 23)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import litedurable as ld
from litedurable._journal import Journal

# Several processes open one brand-new path at the same moment, many rounds over. Forked from a
# fresh interpreter (no threads there, so fork is safe), each child reports what it raised.
_OPEN_RACE = textwrap.dedent('''
    import multiprocessing as mp, os, sys
    from litedurable._journal import Journal

    def opener(path, barrier, queue):
        try:
            barrier.wait()
            Journal(path, busy_timeout=30.0).close()
            queue.put("")
        except BaseException as exc:
            queue.put(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")

    ctx = mp.get_context("fork")
    rounds, width, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    failures = []
    for r in range(rounds):
        path = os.path.join(folder, f"race-{r}.db")
        barrier, queue = ctx.Barrier(width), ctx.Queue()
        procs = [ctx.Process(target=opener, args=(path, barrier, queue)) for _ in range(width)]
        for p in procs:
            p.start()
        failures += [m for m in (queue.get(timeout=120) for _ in procs) if m]
        for p in procs:
            p.join()
    print(len(failures))
    for m in failures[:5]:
        print(m)
''')


def test_processes_opening_a_new_journal_at_once_all_succeed(tmp_path: Path) -> None:
    """Issue 12 item 13: concurrent first opens of one new file retry within the busy timeout
    (``journal_mode=WAL`` gets SQLITE_BUSY without the busy handler) and never raise a raw OS
    error from the header check."""
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_RACE, "250", "6", str(tmp_path)],
        capture_output=True, text=True, timeout=170,
    )
    assert done.returncode == 0, done.stderr
    count, *messages = done.stdout.splitlines()
    assert count == "0", messages


def _doubling_app(path: Path) -> tuple[ld.App, Any]:
    app = ld.App(path)

    @app.step(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="twice")
    def twice(x: int) -> int:
        return double(double(x))

    return app, twice


def _ids(path: Path) -> set[str]:
    with Journal(str(path), readonly=True) as journal:
        return {row.workflow_id for row in journal.list_workflows(limit=1000)}


def test_a_journal_deleted_under_a_running_app_refuses_the_next_write(tmp_path: Path) -> None:
    """Issue 12 item 14: after ``os.remove(db)`` a start is refused, not acknowledged and then
    lost with the unlinked file."""
    db = tmp_path / "gone.db"
    app, twice = _doubling_app(db)
    with app:
        assert app.run(twice, 1, workflow_id="before") == 4
        os.remove(db)
        with pytest.raises(ld.JournalError, match=r"gone\.db") as refused:
            app.start(twice, 2, workflow_id="after").result(timeout=60)
        assert "deleted" in str(refused.value) or "replaced" in str(refused.value)
        # Every later write is refused too, without touching the file.
        with pytest.raises(ld.JournalError, match=r"gone\.db"):
            app.start(twice, 3, workflow_id="later")
    app, twice = _doubling_app(db)
    with app:  # a new file at the path, with nothing of the deleted one replayed into it
        assert app.run(twice, 4, workflow_id="fresh") == 16
    assert _ids(db) == {"fresh"}


def test_a_backup_restored_under_a_running_app_is_not_overwritten(tmp_path: Path) -> None:
    """Issue 12 item 14: after ``os.replace(backup, db)`` the App refuses to write, and the WAL
    it leaves is not replayed over the restored file."""
    db = tmp_path / "live.db"
    backup = tmp_path / "backup.db"
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="in-backup")
    shutil.copyfile(db, backup)  # closed: everything is checkpointed into the main file
    app, twice = _doubling_app(db)
    with app:
        assert app.run(twice, 2, workflow_id="after-backup") == 8
        os.replace(backup, db)
        with pytest.raises(ld.JournalError, match=r"live\.db"):
            app.start(twice, 3, workflow_id="after-restore").result(timeout=60)
    assert _ids(db) == {"in-backup"}
    with Journal(str(db)) as journal:
        assert journal.integrity_check() == "ok"
    app, twice = _doubling_app(db)
    with app:  # the restored file works as a journal again
        assert app.run(twice, 4, workflow_id="on-restored") == 16
    assert _ids(db) == {"in-backup", "on-restored"}
