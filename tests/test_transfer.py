"""Moving and checking whole journals (``_sqlite/transfer.py``, ``_postgres/transfer.py``):
backup while workflows run, ``check`` naming each damaged row, and export/import of workflows
between journals. Export and import run on both backends; the backup and the bytes changed
under SQLite are SQLite's by nature."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._sqlite import SqliteStorage


def _make(path: Path | str) -> None:
    app = ld.App(path)

    @app.workflow(name="w")
    def w(x: int) -> int:
        ld.set_event("e", x)
        ld.write_stream("s", x)
        ld.close_stream("s")
        ld.promise()
        return ld.run(lambda: x + 1)

    with app:
        assert app.run(w, 3, workflow_id="w1") == 4
        app.send("w1", "kept", topic="t")


@pytest.mark.both_backends
def test_export_then_import_keeps_ids_rows_and_checksums(new_db: Callable[[str], str]) -> None:
    _make(new_db("a"))
    with open_storage(new_db("a")) as source:
        record = json.loads(json.dumps(source.export_workflow("w1")))  # through JSON text
        steps, promises = source.load_steps("w1"), source.promises("w1")
        assert source.export_workflow("missing") is None
    with open_storage(new_db("b")) as target:
        assert target.import_workflows([record]) == ["w1"]
        row = target.get_workflow("w1")
        assert row is not None and (row.status, row.owner) == ("succeeded", None)
        assert target.load_steps("w1") == steps
        assert target.promises("w1") == promises
        assert [m.payload for m in target.mailbox("w1")] == [b'"kept"']
        assert target.events("w1") == {"e": b"3"} and target.streams("w1") == {"s": (1, True)}
        assert target.check() == []


@pytest.mark.both_backends
def test_an_import_onto_a_taken_id_writes_nothing(db_path: str) -> None:
    _make(db_path)
    with open_storage(db_path) as journal:
        record = journal.export_workflow("w1")
        assert record is not None
        before = journal.load_steps("w1")
        with pytest.raises(ld.WorkflowConflictError, match="already exists"):
            journal.import_workflows([record])
        assert journal.load_steps("w1") == before and len(journal.mailbox("w1")) == 1


@pytest.mark.parametrize("spoil", [
    lambda r: r.update(format=99),
    lambda r: r["steps"][0].update(workflow_id="other"),
    lambda r: r["steps"][0].update(colour="red"),
])
@pytest.mark.both_backends
def test_a_record_that_is_not_an_export_is_refused_whole(new_db: Callable[[str], str],
                                                         spoil) -> None:
    _make(new_db("a"))
    with open_storage(new_db("a")) as source:
        record = source.export_workflow("w1")
    assert record is not None
    spoil(record)
    with open_storage(new_db("b")) as target:
        with pytest.raises(ld.JournalError):
            target.import_workflows([record])
        assert target.get_workflow("w1") is None  # not even the workflow row


@pytest.mark.both_backends
def test_an_imported_pending_workflow_is_recovered_where_it_lands(
        new_db: Callable[[str], str]) -> None:
    source_path, target_path = new_db("a"), new_db("b")
    gate = threading.Event()

    def build(path: str) -> tuple[ld.App, object]:
        app = ld.App(path)

        @app.workflow(name="slow")
        def slow() -> str:
            first = ld.run(lambda: "recorded")
            ld.run(gate.wait, 30)
            return first

        return app, slow

    app, slow = build(source_path)
    with app:
        app.start(slow, workflow_id="p")
        with open_storage(source_path) as peek:
            while not peek.load_steps("p"):
                threading.Event().wait(0.01)
            record = peek.export_workflow("p")
        gate.set()
    with open_storage(target_path) as target:
        assert record is not None
        target.import_workflows([record])
    app, slow = build(target_path)
    with app:
        assert app.handle("p").result(timeout=10) == "recorded"


def test_check_names_a_payload_changed_under_sqlite(tmp_path: Path) -> None:
    """Bytes changed inside a payload: SQLite's own checks see nothing, the checksums do."""
    path = str(tmp_path / "a.db")
    _make(tmp_path / "a.db")
    conn = apsw.Connection(path)
    conn.execute("UPDATE steps SET output = X'3939' WHERE workflow_id = 'w1' AND step = 4")
    conn.execute("UPDATE events SET value = X'39' WHERE workflow_id = 'w1'")
    conn.close()
    with SqliteStorage(path) as journal:
        assert journal.quick_check() == "ok"
        problems = journal.check()
    assert problems == [
        f"step 4 of workflow 'w1' in {path} fails its checksum",
        f"event 'e' of workflow 'w1' in {path} fails its checksum",
    ]


def test_a_backup_taken_while_workflows_run_is_a_sound_journal(tmp_path: Path) -> None:
    app = ld.App(tmp_path / "a.db")

    @app.workflow(name="count")
    def count(n: int) -> int:
        for i in range(n):
            ld.run(lambda i=i: i)
        return n

    with app:
        handles = [app.start(count, 200, workflow_id=f"c{i}") for i in range(4)]
        with SqliteStorage(str(tmp_path / "a.db")) as journal:
            journal.backup(str(tmp_path / "copy.db"))
            with pytest.raises(FileExistsError):
                journal.backup(str(tmp_path / "copy.db"))
        assert [h.result(timeout=30) for h in handles] == [200] * 4
    with SqliteStorage(str(tmp_path / "copy.db")) as copy:
        assert copy.check() == []
        for i in range(4):
            row = copy.get_workflow(f"c{i}")
            assert row is not None  # each one's steps are a prefix: a consistent snapshot
            assert [s.step for s in copy.load_steps(f"c{i}")] == list(
                range(len(copy.load_steps(f"c{i}"))))
