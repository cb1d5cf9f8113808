"""Issue 12, helper "files": the journal file under concurrent opens, deletion and damage, and
the ``litedurable`` command's edges (items 13, 14, 15, 16, 23). The file's own troubles are
SQLite's by nature; the command's edges (tests marked ``both_backends``) run on PostgreSQL too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import apsw
import pytest
from support import child_env, eventually

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._sqlite import SqliteStorage

# Several processes open one brand-new path at the same moment, many rounds over. Forked from a
# fresh interpreter (no threads there, so fork is safe), each child reports what it raised.
_OPEN_RACE = textwrap.dedent('''
    import multiprocessing as mp, os, sys
    from litedurable._sqlite import SqliteStorage

    def opener(path, barrier, queue):
        try:
            barrier.wait()
            SqliteStorage(path, busy_timeout=30.0).close()
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
        capture_output=True, text=True, timeout=170, env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    count, *messages = done.stdout.splitlines()
    assert count == "0", messages


def _doubling_app(path: Path | str) -> tuple[ld.App, Any]:
    app = ld.App(path)

    @app.step(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="twice")
    def twice(x: int) -> int:
        return double(double(x))

    return app, twice


def _ids(path: Path | str) -> set[str]:
    with open_storage(str(path), readonly=True) as journal:
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


def test_a_wal_deleted_under_a_running_app_refuses_the_next_write(tmp_path: Path) -> None:
    """Issue 12 item 14 (sibling, found by the attack review): deleting only ``-wal`` left
    the App acknowledging commits that lived in an unlinked file, lost at the next crash."""
    db = tmp_path / "nowal.db"
    app, twice = _doubling_app(db)
    with app:
        assert app.run(twice, 1, workflow_id="before") == 4
        os.remove(f"{db}-wal")
        with pytest.raises(ld.JournalError, match="write-ahead log"):
            app.start(twice, 2, workflow_id="after").result(timeout=60)
    # The clean close wrote what the unlinked log held into the journal: nothing acknowledged
    # was lost (the refused start may be there too, unacknowledged, like any unknown outcome).
    assert "before" in _ids(db)


def test_waiting_on_a_workflow_whose_journal_was_deleted_says_why(tmp_path: Path) -> None:
    """Issue 12 item 14 (sibling): a workflow already running when its file is deleted has its
    next step refused, so it can never finish; ``result()`` waited forever instead of saying so."""
    db = tmp_path / "gone.db"
    app = ld.App(db)
    gate = threading.Event()

    @app.step(name="wait_for_gate")
    def wait_for_gate() -> int:
        gate.wait(60)
        return 1

    @app.workflow(name="gated")
    def gated() -> int:
        return wait_for_gate()

    with app:
        handle = app.start(gated, workflow_id="running")
        eventually(lambda: app._runtime.is_active("running"), "the workflow to run", timeout=60)
        os.remove(db)
        gate.set()
        with pytest.raises(ld.JournalError, match="deleted"):
            handle.result(timeout=60)


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
    with SqliteStorage(str(db)) as journal:
        assert journal.integrity_check() == "ok"
    app, twice = _doubling_app(db)
    with app:  # the restored file works as a journal again
        assert app.run(twice, 4, workflow_id="on-restored") == 16
    assert _ids(db) == {"in-backup", "on-restored"}


# -- the litedurable command ------------------------------------------------------------------


def _cli(*args: str) -> int:
    """The command's exit status, whether ``main`` returns it or argparse exits with it."""
    from litedurable._cli import main

    try:
        return main(list(args))
    except SystemExit as exit_info:  # argparse refuses its own arguments this way
        assert isinstance(exit_info.code, int)
        return exit_info.code


@pytest.mark.both_backends
def test_fork_onto_an_existing_id_is_a_conflict(db_path: str) -> None:
    """Issue 12 item 16: ``App.fork(new_id=<taken>)`` raises ``WorkflowConflictError`` naming
    the id, not SQLite's ``ConstraintError``; the workflow holding the id is untouched."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="source")
        app.run(twice, 2, workflow_id="taken")
        with pytest.raises(ld.WorkflowConflictError, match="'taken'"):
            app.fork("source", 1, new_id="taken")
        assert app.handle("taken").result(timeout=60) == 8
        assert [s.step for s in app.steps("taken")] == [0, 1]


@pytest.mark.both_backends
def test_cli_fork_refuses_a_taken_id_and_a_bad_from_step(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 item 16: the CLI's ``fork`` says the id is taken (exit 1), and validates
    ``from_step`` and ``--new-id`` like the API (exit 2), changing nothing."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="source")
        app.run(twice, 2, workflow_id="taken")
    assert _cli("--db", str(db), "fork", "source", "1", "--new-id", "taken") == 1
    err = capsys.readouterr().err
    assert "'taken'" in err and "already" in err and "Traceback" not in err
    assert _cli("--db", str(db), "fork", "source", "-1", "--new-id", "neg") == 2
    assert "from_step" in capsys.readouterr().err
    assert _cli("--db", str(db), "fork", "source", "1", "--new-id", "") == 2
    assert "empty" in capsys.readouterr().err
    assert _ids(db) == {"source", "taken"}


def _damage_schedules_page(db: Path) -> None:
    """Overwrite the root page of the (unused) schedules table: damage ``quick_check`` sees,
    on a page ``gc`` never reads."""
    conn = apsw.Connection(str(db))  # read-write, so closing it checkpoints and drops the WAL
    try:
        root, page_size = conn.execute(
            "SELECT (SELECT rootpage FROM sqlite_schema WHERE name = 'schedules'), "
            "(SELECT page_size FROM pragma_page_size)").fetchall()[0]
    finally:
        conn.close()
    assert not Path(f"{db}-wal").exists()  # every page is in the main file
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_cli_write_commands_refuse_a_damaged_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 item 15: ``gc`` (and every command that writes) checks the file first and
    refuses a damaged one, exit 4, leaving it byte for byte as it was."""
    db = tmp_path / "damaged.db"
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="old")
    _damage_schedules_page(db)
    before = db.read_bytes()
    assert _cli("--db", str(db), "gc", "--older-than", "0") == 4
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err
    assert _cli("--db", str(db), "cancel", "old") == 4
    assert "damaged" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_cli_read_commands_say_the_file_is_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 item 15: a read command on a damaged file says so (stderr, exit 4), even when
    the rows it shows are readable, instead of a traceback or a silent success."""
    db = tmp_path / "damaged.db"
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="old")
    _damage_schedules_page(db)
    assert _cli("--db", str(db), "list") == 4
    captured = capsys.readouterr()
    assert "damaged" in captured.err and "old" in captured.out
    assert _cli("--db", str(db), "schedules") == 4
    assert "damaged" in capsys.readouterr().err


@pytest.mark.both_backends
def test_cli_exit_codes_tell_outcomes_apart(
    tmp_path: Path, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 item 23: not found is 3 (not the usage code 2); cancel and resume of a
    finished workflow change nothing and exit 1."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="done")
    assert _cli("--db", str(tmp_path / "missing.db"), "list") == 3
    assert "no journal file" in capsys.readouterr().err
    assert _cli("--db", str(db), "show", "nope") == 3
    assert _cli("--db", str(db), "cancel", "done") == 1
    assert "succeeded" in capsys.readouterr().err
    assert _cli("--db", str(db), "resume", "done") == 1
    assert "succeeded" in capsys.readouterr().err
    with open_storage(db, readonly=True) as journal:
        row = journal.get_workflow("done")
        assert row is not None and row.status == "succeeded"


def test_cli_help_documents_every_command_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 item 23: ``--help`` works for every command the parser has, and the top-level
    help lists the exit codes."""
    from litedurable import _cli

    sub = next(a for a in _cli.build_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        with pytest.raises(SystemExit) as exit_info:
            _cli.main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert f"usage: litedurable {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _cli.main(["--help"])
    out = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "4", "141"):
        assert f"\n  {code} " in out, code
    assert "EXIT_STATUS" in (_cli.__doc__ or ""), "the module docstring points at the one list"
    for code in ("0", "1", "2", "3", "4", "5", "130", "141"):
        assert f"\n  {code} " in _cli.EXIT_STATUS, code


@pytest.mark.both_backends
def test_cli_output_into_a_closed_pipe_exits_quietly(db_path: str) -> None:
    """Issue 12 item 23: ``litedurable list | head`` does not print a ``BrokenPipeError``
    traceback; it stops with the status of a process killed by SIGPIPE (141)."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        for i in range(5):
            app.run(twice, i, workflow_id=f"wf-{i}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "litedurable", "--db", str(db), "list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the command prints its first line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


_OTHER_MODULE = '''
import litedurable as ld

app = ld.App({path!r})

@app.step(name={step!r})
def double(x: int) -> int:
    return 2 * x

@app.workflow(name="twice")
def twice(x: int) -> int:
    return double(double(x))
'''


@pytest.mark.both_backends
def test_cli_replay_reports_bad_modules_and_skips_unregistered_workflows(
    tmp_path: Path, db_path: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12 item 23: a module that cannot be imported is a usage error (exit 2, no
    traceback); with no ids, workflows the App does not register are skipped, not failed; a
    difference is reported without claiming the workflow was parked (replay writes nothing)."""
    db = db_path
    app, twice = _doubling_app(db)
    other = ld.App(db)

    @other.workflow(name="unrelated")
    def unrelated() -> int:
        return 1

    with app:
        app.run(twice, 1, workflow_id="t-1")
    with other:
        other.run(unrelated, workflow_id="u-1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "same_jobs.py").write_text(_OTHER_MODULE.format(path=str(db), step="double"))
    (tmp_path / "renamed_jobs.py").write_text(_OTHER_MODULE.format(path=str(db), step="dbl"))
    (tmp_path / "broken_jobs.py").write_text("import no_such_module_anywhere\n")

    assert _cli("--db", str(db), "replay", "no_such_jobs:app") == 2
    assert "no_such_jobs" in capsys.readouterr().err
    assert _cli("--db", str(db), "replay", "broken_jobs:app") == 2
    assert "no_such_module_anywhere" in capsys.readouterr().err
    assert _cli("--db", str(db), "replay", "same_jobs:nothing_here") == 2
    assert "nothing_here" in capsys.readouterr().err

    assert _cli("--db", str(db), "replay", "same_jobs:app") == 0
    out = capsys.readouterr().out
    assert "t-1: ok" in out and not any(line.startswith("u-1") for line in out.splitlines())
    assert "skipped 1" in out
    assert _cli("--db", str(db), "replay", "renamed_jobs:app") == 1
    out = capsys.readouterr().out
    assert "step 0" in out and "parked" not in out
    assert _cli("--db", str(db), "replay", "same_jobs:app", "u-1") == 1  # asked by id: a problem
    assert "not registered" in capsys.readouterr().out
    with open_storage(db, readonly=True) as journal:
        assert {r.workflow_id: r.status for r in journal.list_workflows()} == {
            "t-1": "succeeded", "u-1": "succeeded"}


@pytest.mark.both_backends
@pytest.mark.parametrize("argv", [
    ["gc", "--older-than", "nan"], ["gc", "--older-than", "-5"],
    ["--busy-timeout", "nan", "list"], ["--busy-timeout", "-1", "list"],
    ["list", "--limit", "-1"], ["show", "bad\udc80id"],
])
def test_cli_numbers_and_ids_out_of_range_are_usage_errors(
    db_path: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 items 16 and 23: NaN, negative and non-numeric arguments, and ids that cannot
    be stored, are usage errors (exit 2) with a message, never a raw ValueError/OverflowError
    and never a deletion (``gc --older-than -5`` used to delete every finished workflow)."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="done")
    assert _cli("--db", str(db), *argv) == 2
    assert "error" in capsys.readouterr().err
    assert _ids(db) == {"done"}


@pytest.mark.both_backends
def test_fork_from_a_step_past_sqlites_integers_copies_every_step(db_path: str) -> None:
    """Issue 12 item 16: a ``from_step`` too big for SQLite means "every step" (API and CLI
    alike), not an ``OverflowError``."""
    db = db_path
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="done")
        forked = app.fork("done", 10**30, new_id="api-fork")
        assert forked.result(timeout=60) == 4
        assert [s.step for s in app.steps("api-fork")] == [0, 1]
    assert _cli("--db", str(db), "fork", "done", str(10**30), "--new-id", "cli-fork") == 0
    assert _ids(db) == {"done", "api-fork", "cli-fork"}


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -rm (user namespaces)")
def test_cli_reads_a_journal_on_a_read_only_file_system(tmp_path: Path) -> None:
    """Issue 12 item 15: on a read-only file system (a private read-only bind mount) the read
    commands work, though SQLite cannot create the ``-shm`` a WAL file needs; ``gc`` says the
    file cannot be written (exit 4)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "j.db"
    app, twice = _doubling_app(db)
    with app:
        app.run(twice, 1, workflow_id="kept")
    assert not Path(f"{db}-shm").exists()  # a clean close removed it
    cli = f"{sys.executable} -m litedurable --db {db}"
    script = (f"mount -o bind,ro {folder} {folder} || exit 99; "
              f"{cli} list; echo list=$?; {cli} steps kept; echo steps=$?; "
              f"{cli} gc --older-than 0; echo gc=$?")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
                          env=child_env())
    assert "list=0" in done.stdout and "steps=0" in done.stdout, done.stdout + done.stderr
    assert "kept" in done.stdout and "double" in done.stdout
    assert "gc=4" in done.stdout and "Traceback" not in done.stderr
    assert _ids(db) == {"kept"}


def test_a_journal_in_a_missing_directory_is_a_journal_error(tmp_path: Path) -> None:
    """Issue 12 item 13 (same family: never a raw OS error from opening): a path whose
    directory does not exist raises ``JournalReadOnlyError`` naming the directory."""
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(ld.JournalReadOnlyError, match="does not exist"):
        SqliteStorage(str(missing / "j.db"))
    assert not missing.exists()


def test_header_check_survives_a_rollback_journal_deleted_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 13: the header check looked for ``-wal``/``-journal`` files, then read
    their size; another process deleting one in between raised a raw ``FileNotFoundError``.
    Here every such file "exists" when asked and is gone when measured."""
    db = tmp_path / "race.db"
    SqliteStorage(str(db)).close()
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda p: True if str(p).endswith(("-wal", "-journal")) else real_exists(p))
    SqliteStorage(str(db)).close()


def test_a_relative_journal_path_is_not_taken_for_moved_after_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 14, the other direction: the moved-file check must not refuse a file that
    is still there because the process changed directory after opening it by a relative path."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    app, twice = _doubling_app(Path("relative.db"))
    with app:
        assert app.run(twice, 1, workflow_id="before") == 4
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert app.run(twice, 2, workflow_id="after-chdir") == 8
    assert _ids(tmp_path / "relative.db") == {"before", "after-chdir"}
