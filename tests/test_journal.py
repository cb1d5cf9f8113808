"""The journal on its own, with no App: group commit (batching, waking each writer with its own
result, refusals), the step checksum, and the journal side of recovery (claims, and reads on
connections of their own)."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

import litedurable as ld
from litedurable._errors import OwnershipLostError
from litedurable._lease import HOST, pid_namespace
from litedurable._sqlite import SqliteStorage
from litedurable._sqlite.sql import insert_steps_sql
from litedurable._storage import OwnerRow, StepRow, checksum, step_checksum


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


# -- the journal side of recovery: claims and reads ------------------------------------------


def _seed(journal: SqliteStorage, ids: list[str], owner: str | None) -> None:
    """Pending workflows owned by ``owner``, each with one recorded step (step 0)."""
    for wid in ids:
        journal.insert_workflow(workflow_id=wid, name="wf", inputs=b"[]", now=1.0,
                                app_version="v1", parent_id=None, owner=owner or "seed")
        journal.record_step(StepRow(wid, 0, "step", "s", b"1", None, None, 1.0, 1.0),
                            owner or "seed")
    if owner is None:
        journal.release("seed")


def test_claim_takes_only_workflows_whose_owner_is_still_the_expected_one(db_path):
    with SqliteStorage(db_path) as journal:
        _seed(journal, ["a", "b", "c", "d"], "dead")
        _seed(journal, ["e"], None)  # released by a clean close: owner NULL
        assert journal.claim([("b", "dead")], "other") == {"b": 1}  # b changed owner meanwhile
        journal.finish_workflow("c", "dead", status="succeeded", output=b"1", error=None,
                                now=2.0)
        journal.heartbeat(OwnerRow("dead", HOST, os.getpid(), 1.0, None, pid_namespace()))
        journal.heartbeat(OwnerRow("other", HOST, os.getpid(), 1.0, None, pid_namespace()))
        seen = journal.owners().rows["dead"].heartbeat
        taken = journal.claim([("e", None), ("d", "dead"), ("c", "dead"), ("b", "dead"),
                               ("a", "dead")], "me", forget=[("dead", seen)])
        assert set(journal.owners().rows) == {"other"}  # the dead owner's row went with the claim
        assert list(taken) == ["e", "d", "a"]  # in the order asked for; b and c left out
        assert taken == {"e": 1, "d": 1, "a": 1}
        owners = {wid: journal.get_workflow(wid).owner for wid in "abcde"}  # type: ignore[union-attr]
        assert owners == {"a": "me", "b": "other", "c": "dead", "d": "me", "e": "me"}
        assert journal.claim([("a", "dead")], "late") == {}  # a stale expectation takes nothing


def test_claim_carries_any_workflow_id_and_owner_through_sql_intact(db_path):
    odd = ['quote"s', "back\\slash", "emoji \U0001f600 and \u00e9", "[1, 2]", "null", " "]
    with SqliteStorage(db_path) as journal:
        for i, wid in enumerate(odd):
            _seed(journal, [wid], odd[-1 - i])
        taken = journal.claim([(wid, odd[-1 - i]) for i, wid in enumerate(odd)], "me")
        assert taken == dict.fromkeys(odd, 1)


def test_claim_counts_only_recoveries_without_progress(db_path):
    with SqliteStorage(db_path) as journal:
        _seed(journal, ["stuck", "moving"], "dead")
        journal.insert_workflow(workflow_id="empty", name="wf", inputs=b"[]", now=1.0,
                                app_version="v1", parent_id=None, owner="dead")
        both = [("stuck", "dead"), ("moving", "dead"), ("empty", "dead")]
        assert journal.claim(both, "r1") == {"stuck": 1, "moving": 1, "empty": 1}
        journal.record_step(StepRow("moving", 1, "step", "s", b"2", None, None, 2.0, 2.0), "r1")
        again = [("stuck", "r1"), ("moving", "r1"), ("empty", "r1")]
        assert journal.claim(again, "r2") == {"stuck": 2, "moving": 1, "empty": 2}
        journal.record_step(StepRow("empty", 0, "step", "s", b"1", None, None, 3.0, 3.0), "r2")
        third = [("stuck", "r2"), ("moving", "r2"), ("empty", "r2")]
        assert journal.claim(third, "r3") == {"stuck": 3, "moving": 2, "empty": 1}


def test_two_journals_claiming_at_once_never_both_take_a_workflow(db_path):
    ids = [f"wf-{i}" for i in range(300)]
    with SqliteStorage(db_path) as journal:
        _seed(journal, ids, "dead")
    barrier = threading.Barrier(2)
    taken: dict[str, dict[str, int]] = {}

    def race(me: str) -> None:
        with SqliteStorage(db_path, busy_timeout=30) as mine:
            barrier.wait()
            # Each claims in its own order, so neither simply finds the other done first.
            order = ids if me == "x" else ids[::-1]
            taken[me] = {}
            for start in range(0, len(order), 50):
                taken[me].update(mine.claim([(w, "dead") for w in order[start:start + 50]], me))

    threads = [threading.Thread(target=race, args=(me,)) for me in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not set(taken["x"]) & set(taken["y"])
    assert set(taken["x"]) | set(taken["y"]) == set(ids)
    with SqliteStorage(db_path, readonly=True) as journal:
        for me, claimed in taken.items():
            assert all(journal.get_workflow(w).owner == me for w in claimed)  # type: ignore[union-attr]


def test_load_workflow_reads_the_row_and_its_steps_together(db_path):
    with SqliteStorage(db_path) as journal:
        _seed(journal, ["a"], "me")
        journal.record_step(StepRow("a", 1, "step", "s", b"2", None, None, 2.0, 2.0), "me")
        row, steps = journal.load_workflow("a")
        assert row == journal.get_workflow("a")
        assert steps == journal.load_steps("a") and [s.step for s in steps] == [0, 1]
        assert journal.load_workflow("missing") == (None, [])


def _blocked_reads(journal: SqliteStorage, count: int) -> tuple[list[threading.Thread], Any, Any]:
    """``count`` reads that each hold their connection until ``release`` is set."""
    entered = threading.Semaphore(0)
    release = threading.Event()
    used: list[int] = []

    def hold(conn: apsw.Connection) -> None:
        used.append(id(conn))
        entered.release()
        assert release.wait(30)

    threads = [threading.Thread(target=journal.read, args=(hold,)) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, (entered, release), used


def test_concurrent_reads_run_on_connections_of_their_own_up_to_a_limit(db_path):
    with SqliteStorage(db_path) as journal:
        limit = journal.driver.max_readers
        assert limit >= 2
        threads, (entered, release), used = _blocked_reads(journal, limit + 2)
        for _ in range(limit):  # with one shared connection only the first would get in
            assert entered.acquire(timeout=10), "concurrent reads queued on one connection"
        assert not entered.acquire(timeout=0.2), "more readers than the limit were opened"
        assert len(set(used)) == limit
        release.set()
        for thread in threads:
            thread.join(10)
        assert len(used) == limit + 2 and len(set(used)) == limit  # the late ones reused them


def test_close_waits_for_reads_in_flight_and_refuses_later_ones(db_path):
    journal = SqliteStorage(db_path)
    threads, (entered, release), _ = _blocked_reads(journal, 2)
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
    closer = threading.Thread(target=journal.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() did not wait for the reads in flight"
    release.set()
    closer.join(10)
    for thread in threads:
        thread.join(10)
    assert not closer.is_alive()
    with pytest.raises(ld.AppClosedError):
        journal.read(lambda conn: None)


@pytest.mark.parametrize("readers", ["one", "many"])
def test_close_while_a_read_waits_for_a_reader_returns_and_refuses_that_read(
        db_path, monkeypatch, readers):
    journal = SqliteStorage(db_path)
    if readers == "one":  # the last read's return is then the only wake-up close() gets
        monkeypatch.setattr(journal.driver, "max_readers", 1)
    limit = journal.driver.max_readers
    threads, (entered, release), _ = _blocked_reads(journal, limit)
    for _ in range(limit):
        assert entered.acquire(timeout=10)
    refused: list[BaseException] = []

    def late_read() -> None:
        try:
            journal.read(lambda conn: None)
        except ld.AppClosedError as exc:
            refused.append(exc)

    waiter = threading.Thread(target=late_read)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # every reader is lent: it waits for one
    closer = threading.Thread(target=journal.close)
    closer.start()
    closer.join(0.2)
    release.set()
    for thread in (*threads, waiter, closer):
        thread.join(10)
    assert not closer.is_alive(), "close() missed the wake-up of the last read's return"
    assert not waiter.is_alive() and len(refused) == 1


def test_a_reader_that_cannot_be_opened_leaves_reads_sharing_the_open_one(db_path, monkeypatch):
    journal = SqliteStorage(db_path)
    try:
        def refuse(*args: object, **kwargs: object) -> apsw.Connection:
            raise apsw.CantOpenError("no more file descriptors")

        monkeypatch.setattr(journal.driver, "connect", refuse)
        threads, (entered, release), used = _blocked_reads(journal, 3)
        assert entered.acquire(timeout=10)
        assert not entered.acquire(timeout=0.2)  # the others wait for the one reader
        release.set()
        for thread in threads:
            thread.join(10)
        assert len(used) == 3 and set(used) == {id(journal.driver.reader)}
    finally:
        journal.close()
