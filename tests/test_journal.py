"""Group commit in the journal: batching, waking each writer with its own result, refusals."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from litedurable._errors import OwnershipLostError
from litedurable._sqlite import SqliteStorage
from litedurable._sqlite.sql import insert_steps_sql
from litedurable._storage import StepRow, checksum, step_checksum


def _one_batch(journal: SqliteStorage, writers: list[Callable[[], None]]) -> None:
    """Run ``writers`` in threads so that all their writes share one commit.

    A first write holds the lead (and the transaction) until every writer has queued behind
    it; then it is let go, and the queue is committed as one batch.
    """
    release = threading.Event()

    def blocking(conn: apsw.Connection) -> str:
        release.wait(30)
        return "leader"

    threads = [threading.Thread(target=journal.write, args=(blocking,))]
    threads[0].start()
    for _ in range(3000):  # the leader first, so the writers queue behind it
        with journal.commit._mutex:
            if journal.commit._committing:
                break
        time.sleep(0.01)
    threads += [threading.Thread(target=writer) for writer in writers]
    for t in threads[1:]:
        t.start()
    for _ in range(3000):
        with journal.commit._mutex:
            if len(journal.commit._queue) >= len(writers):
                break
        time.sleep(0.01)
    else:
        raise AssertionError(f"{len(writers)} writers never queued")
    release.set()
    for t in threads:
        t.join(30)


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    with SqliteStorage(str(tmp_path / "j.db"), durability="normal") as journal:
        journal.write(lambda conn: conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        yield journal


def test_writers_that_queue_during_a_commit_share_the_next_one_and_each_gets_its_value(
    journal: SqliteStorage,
) -> None:
    batches: list[int] = []
    commit = journal.commit._commit

    def counting(batch: Any) -> None:
        batches.append(len(batch))
        commit(batch)

    journal.commit._commit = counting  # type: ignore[method-assign]
    results: dict[int, Any] = {}

    def writer(k: int) -> Callable[[], None]:
        def insert(conn: apsw.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (k,))
            return k * 10

        return lambda: results.__setitem__(k, journal.write(insert))

    _one_batch(journal, [writer(k) for k in range(7)])
    assert batches == [1, 7]  # one transaction for everyone who waited
    assert results == {k: k * 10 for k in range(7)}
    count = journal.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchall()[0][0])
    assert count == 7
    assert not journal.commit._committing and not journal.commit._queue


def test_a_refused_write_fails_alone_and_leaves_nothing_behind(journal: SqliteStorage) -> None:
    outcomes: dict[int, Any] = {}

    def writer(k: int) -> Callable[[], None]:
        def insert(conn: apsw.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (k,))
            if k == 1:  # refused after writing: its row must not survive the batch
                raise OwnershipLostError(f"write {k} refused")
            return k

        def write() -> None:
            try:
                outcomes[k] = journal.write(insert)
            except OwnershipLostError as exc:
                outcomes[k] = exc

        return write

    _one_batch(journal, [writer(k) for k in range(3)])
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], OwnershipLostError)
    rows = journal.read(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")])
    assert rows == [0, 2]


def test_the_step_checksum_is_the_one_earlier_versions_wrote() -> None:
    # Files written before the spelled-out version must still verify: same CRC, part by part.
    for row in [
        StepRow("wf-1", 0, "step", "inc", b"1", None, None, 1.0, 2.0),
        StepRow("wf/é", 12, "select", "select", None, b'{"type":"E"}', b"[1,2]", 1.0, None),
        StepRow("", 3, "now", "now", b"", None, b"", 0.0, 0.0),
    ]:
        parts = (row.workflow_id, str(row.step), row.kind, row.name, row.output, row.error,
                 row.extra)
        crc = 0
        for part in parts:  # the original loop, one part at a time
            raw = part.encode() if isinstance(part, str) else (part or b"")
            crc = zlib.crc32(struct.pack("<q", -1 if part is None else len(raw)), crc)
            crc = zlib.crc32(raw, crc)
        assert step_checksum(row) == crc == checksum(*parts)


def _steps_in_a_batch(journal: SqliteStorage, owners: dict[str, str]) -> dict[str, Any]:
    """Record step 0 of each workflow in ``owners`` (as the given owner) in one batch."""
    for wid in owners:
        journal.insert_workflow(workflow_id=wid, name="wf", inputs=b"{}", now=1.0,
                                app_version="v", parent_id=None, owner="me")
    outcomes: dict[str, Any] = {}

    def writer(wid: str) -> Callable[[], None]:
        def write() -> None:
            row = StepRow(wid, 0, "step", "inc", b"1", None, None, 1.0, 2.0)
            try:
                outcomes[wid] = journal.record_step(row, owners[wid])
            except OwnershipLostError as exc:
                outcomes[wid] = exc

        return write

    _one_batch(journal, [writer(wid) for wid in owners])
    return outcomes


def test_a_batch_writes_its_step_rows_in_one_statement(journal: SqliteStorage) -> None:
    before = insert_steps_sql.cache_info()
    outcomes = _steps_in_a_batch(journal, {"a": "me", "b": "me", "c": "me"})
    assert outcomes == {"a": None, "b": None, "c": None}
    used = insert_steps_sql.cache_info()
    assert used.hits + used.misses == before.hits + before.misses + 1
    assert [len(journal.load_steps(w)) for w in "abc"] == [1, 1, 1]


def test_a_fenced_row_in_a_grouped_insert_fails_alone(journal: SqliteStorage) -> None:
    outcomes = _steps_in_a_batch(journal, {"a": "me", "b": "someone-else", "c": "me"})
    assert outcomes["a"] is None and outcomes["c"] is None
    assert isinstance(outcomes["b"], OwnershipLostError)
    assert [len(journal.load_steps(w)) for w in "abc"] == [1, 0, 1]
