"""The storage contract, on both backends: the same assertions for SQLite and PostgreSQL.

Each test gets a ``journal`` factory opening storages on one fresh journal (an SQLite file,
or a PostgreSQL schema of its own); two storages on one journal stand for two processes.

PostgreSQL: ``LITEDURABLE_TEST_POSTGRES`` (a DSN) when set; otherwise a throwaway server is
started for the session from the binaries ``pg_config --bindir`` names (``initdb`` +
``pg_ctl`` in a temporary directory on a free port; as root, run as the ``postgres`` system
user). Without either, the PostgreSQL half skips, saying why.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import litedurable as ld
from litedurable._faults import Faults
from litedurable._sqlite import SqliteStorage
from litedurable._storage import (
    Deduplicated,
    OwnerRow,
    ParentNotPending,
    QueueEntry,
    QueueSpec,
    ScheduleRow,
    StepRow,
    Storage,
)

try:
    import psycopg

    from litedurable._postgres import PostgresStorage
    from litedurable._postgres import sql as pg_sql
except ImportError:  # the extra is not installed
    psycopg = None  # type: ignore[assignment]
    PostgresStorage = None  # type: ignore[assignment,misc]
    pg_sql = None  # type: ignore[assignment]

Opener = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Opener]:
    """Opens storages on one fresh journal of the backend; closes them after the test."""
    opened: list[Any] = []
    if request.param == "sqlite":
        path = str(tmp_path / "journal.db")

        def open_one() -> Any:
            opened.append(SqliteStorage(path))
            return opened[-1]
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        schema = f"t_{uuid.uuid4().hex[:12]}"

        def open_one() -> Any:
            opened.append(PostgresStorage(dsn, schema=schema))
            return opened[-1]

    yield open_one
    for storage in opened:
        storage.close()


@pytest.fixture
def store(journal: Opener) -> Storage:
    storage: Storage = journal()
    return storage


def _start(s: Storage, wid: str, owner: str = "me", *, parent: str | None = None,
           detached: bool = False, queue: QueueEntry | None = None,
           now: float = 1.0, name: str = "wf") -> tuple[bool, Any]:
    return s.insert_workflow(workflow_id=wid, name=name, inputs=b"in:" + wid.encode(),
                             now=now, app_version="v1", parent_id=parent, owner=owner,
                             detached=detached, queue=queue)


def _step(wid: str, n: int, output: bytes = b"out", *, kind: str = "step",
          finished: float | None = 2.0, name: str = "s") -> StepRow:
    return StepRow(wid, n, kind, name, output, None, None, 1.0, finished)


# -- workflows ------------------------------------------------------------------------------


def test_insert_get_load_and_list(store: Storage) -> None:
    created, row = _start(store, "a")
    assert created and row.status == "pending" and row.owner == "me"
    assert store.get_workflow("a") == row
    again, existing = _start(store, "a", "other")
    assert not again and existing == row
    assert store.get_workflow("nope") is None
    assert store.load_workflow("nope") == (None, [])
    store.record_step(_step("a", 1, b"one"), "me")
    store.record_step(_step("a", 0, b"zero"), "me")
    got, steps = store.load_workflow("a")
    assert got == row and [(s.step, s.output, s.owner) for s in steps] == [
        (0, b"zero", "me"), (1, b"one", "me")]
    assert store.load_steps("a") == steps
    _start(store, "b", now=2.0, name="other")
    assert [r.workflow_id for r in store.list_workflows()] == ["b", "a"]
    assert [r.workflow_id for r in store.list_workflows(name="wf")] == ["a"]
    assert [r.workflow_id for r in store.list_workflows(since=1.5)] == ["b"]
    assert [r.workflow_id for r in store.list_workflows(limit=1, offset=1)] == ["a"]
    assert store.count_workflows() == {"pending": 2}
    assert store.statuses(["a", "b", "zz"]) == {"a": "pending", "b": "pending"}
    assert store.pending(None) == [("a", "wf", "me"), ("b", "other", "me")]
    assert store.pending_by_version() == {"v1": 2}


def test_record_step_is_fenced_on_the_owner(journal: Opener) -> None:
    mine, theirs = journal(), journal()
    _start(mine, "w", "A")
    mine.record_step(_step("w", 0), "A")
    assert theirs.claim([("w", "A")], "B") == {"w": 1}
    with pytest.raises(ld.OwnershipLostError):
        mine.record_step(_step("w", 1), "A")
    theirs.record_step(_step("w", 1, b"B's"), "B")
    assert [(s.step, s.owner) for s in mine.load_steps("w")] == [(0, "A"), (1, "B")]
    # A stale run that took the workflow back cannot overwrite a finished step...
    theirs.claim([("w", "B")], "A")
    with pytest.raises(ld.OwnershipLostError):
        mine.record_step(_step("w", 1, b"stale"), "A")
    mine.record_step(_step("w", 1, b"B's"), "A")  # ...but the same outcome again is fine
    with pytest.raises(ld.WorkflowNotFoundError):
        mine.record_step(_step("ghost", 0), "A")


def test_an_open_step_row_is_completed(store: Storage) -> None:
    _start(store, "w")
    store.record_step(_step("w", 0, b"", kind="select", finished=None), "me")
    assert store.load_steps("w")[0].finished_at is None
    store.record_step(_step("w", 0, b"decided", kind="select", finished=3.0), "me")
    (row,) = store.load_steps("w")
    assert (row.output, row.finished_at) == (b"decided", 3.0)


def test_finish_workflow(store: Storage) -> None:
    _, row = _start(store, "w")
    with pytest.raises(ld.OwnershipLostError):
        store.finish_workflow("w", "someone", status="succeeded", output=b"x", error=None,
                              now=2.0)
    assert store.finish_workflow("w", "me", status="succeeded", output=b"x", error=None,
                                 now=2.0, known=row)
    assert not store.finish_workflow("w", "me", status="failed", output=None, error=b"e",
                                     now=3.0)
    done = store.get_workflow("w")
    assert done is not None and (done.status, done.output) == ("succeeded", b"x")
    _start(store, "u")
    assert store.finish_workflow("u", None, status="failed", output=None, error=b"e", now=2.0)


def test_cancel_tree_resume_and_the_parent_rule(store: Storage) -> None:
    _start(store, "root")
    _start(store, "child", parent="root")
    _start(store, "grandchild", parent="child")
    _start(store, "loose", parent="root", detached=True)
    _start(store, "done", parent="root")
    store.finish_workflow("done", "me", status="succeeded", output=b"", error=None, now=2.0)
    assert set(store.cancel_tree("root", b"cancelled", 3.0)) == {"root", "child", "grandchild"}
    assert store.statuses(["root", "child", "grandchild", "loose", "done"]) == {
        "root": "cancelled", "child": "cancelled", "grandchild": "cancelled",
        "loose": "pending", "done": "succeeded"}
    assert store.cancel_tree("root", b"again", 4.0) == []
    with pytest.raises(ParentNotPending) as refused:
        _start(store, "late", parent="child")
    assert refused.value.parent.status == "cancelled"
    assert store.get_workflow("late") is None
    assert not store.finish_workflow("child", "me", status="succeeded", output=b"",
                                     error=None, now=5.0)
    assert sorted(store.resume("root", 6.0, owner="new")) == ["child", "grandchild", "root"]
    root = store.get_workflow("root")
    assert root is not None and (root.status, root.owner) == ("pending", "new")
    assert store.resume("done", 7.0, owner="new") == []
    with pytest.raises(ld.WorkflowNotFoundError):
        store.resume("ghost", 7.0, owner="new")


def test_fork_copies_steps_events_and_streams(store: Storage) -> None:
    _, source = _start(store, "src")
    store.record_step(_step("src", 0, b"zero"), "me")
    store.set_event("src", "k", b"v", 1.0, _step("src", 1, b"v", kind="set_event", name="k"),
                    "me")
    store.write_stream("src", "s", b"item", 1.0, _step("src", 2, kind="write_stream",
                                                       name="s"), "me")
    store.record_step(_step("src", 3, b"three"), "me")
    assert store.fork(source, "copy", 3, now=5.0, app_version="v2", owner="me") == 3
    copy, steps = store.load_workflow("copy")
    assert copy is not None and (copy.status, copy.app_version, copy.inputs) == (
        "pending", "v2", source.inputs)
    assert [s.step for s in steps] == [0, 1, 2]
    assert store.events("copy") == {"k": b"v"}
    assert store.read_stream("copy", "s", 0, 10) == ([(0, b"item")], False)
    with pytest.raises(ld.WorkflowConflictError):
        store.fork(source, "copy", 1, now=6.0, app_version="v2", owner="me")


def test_delete_finished(store: Storage) -> None:
    _start(store, "old")
    store.record_step(_step("old", 0), "me")
    store.finish_workflow("old", "me", status="succeeded", output=b"", error=None, now=2.0)
    _start(store, "running")
    assert store.delete_finished(10.0) == 1
    assert store.get_workflow("old") is None and store.load_steps("old") == []
    assert store.get_workflow("running") is not None


# -- concurrency: claims, fences, dequeues ---------------------------------------------------


def test_two_claimers_never_both_win(journal: Opener) -> None:
    first, second = journal(), journal()
    ids = [f"w{i}" for i in range(40)]
    for wid in ids:
        _start(first, wid, "dead")
    won: dict[str, list[dict[str, int]]] = {"B": [], "C": []}
    barrier = threading.Barrier(2)

    def claim(storage: Any, owner: str) -> None:
        barrier.wait()
        for wid in ids:  # one at a time: many chances to interleave
            won[owner].append(storage.claim([(wid, "dead")], owner))

    threads = [threading.Thread(target=claim, args=(s, o))
               for s, o in ((first, "B"), (second, "C"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = {wid: [o for o in won for got in won[o] if wid in got] for wid in ids}
    assert all(len(w) == 1 for w in winners.values()), winners
    owners = {row.workflow_id: row.owner for row in first.list_workflows()}
    assert owners == {wid: w[0] for wid, w in winners.items()}


@pytest.mark.parametrize("round_", range(4))
def test_a_claimed_workflow_takes_no_step_from_its_former_owner(journal: Opener,
                                                                round_: int) -> None:
    """A former owner's step racing the claim: either before it, or refused (on PostgreSQL,
    an unlocked ``EXISTS`` fence reads a snapshot and lets a step in after the claim)."""
    mine, theirs = journal(), journal()
    _start(mine, "w", "A")
    acked: list[int] = []
    started = threading.Event()

    def run() -> None:
        n = 0
        with contextlib.suppress(ld.OwnershipLostError):
            while n < 100_000:
                mine.record_step(_step("w", n), "A")
                acked.append(n)
                n += 1
                if n == 5 + round_:
                    started.set()
        started.set()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    for _ in range(1000):  # a claim skips a row a step write holds locked: it comes again
        if theirs.claim([("w", "A")], "B") == {"w": 1}:
            break
    else:
        pytest.fail("the claim never found the row free")
    seen = max(s.step for s in theirs.load_steps("w"))
    thread.join()
    steps = theirs.load_steps("w")
    late = [s.step for s in steps if s.owner == "A" and s.step > seen]
    assert late == []  # nothing of A's was written after the claim committed
    assert [s.step for s in steps] == acked  # and every acknowledged step is there


@pytest.mark.parametrize("round_", range(3))
def test_a_tree_cancelled_while_children_are_started_leaves_none_pending(
        journal: Opener, round_: int) -> None:
    """Children and grandchildren started while another connection cancels the tree: each
    start either lands before the cancel (and is cancelled with it) or is refused."""
    starter, canceller = journal(), journal()
    _start(starter, "root")
    made: list[str] = []
    going = threading.Event()

    def start_children() -> None:
        with contextlib.suppress(ParentNotPending):
            for i in range(100_000):
                _start(starter, f"c{i}", parent="root")
                made.append(f"c{i}")
                _start(starter, f"g{i}", parent=f"c{i}")
                made.append(f"g{i}")
                if i == 3 + round_:
                    going.set()
        going.set()

    thread = threading.Thread(target=start_children)
    thread.start()
    going.wait()
    cancelled = canceller.cancel_tree("root", b"stop", 5.0)
    thread.join()
    statuses = canceller.statuses(made)
    assert [wid for wid, status in statuses.items() if status != "cancelled"] == []
    assert sorted(cancelled) == sorted(["root", *made])


def test_dequeue_limits_hold_across_racing_consumers(journal: Opener) -> None:
    consumers = [journal() for _ in range(4)]
    spec = QueueSpec("q", concurrency=3, worker_concurrency=2)
    for i in range(24):
        _start(consumers[0], f"j{i:02}", queue=QueueEntry("q"), now=float(i))
    taken: list[str] = []
    rounds = 0
    while len(taken) < 24:
        rounds += 1
        assert rounds < 50
        barrier = threading.Barrier(len(consumers))
        got: dict[int, list[str]] = {}

        def take(i: int, barrier: threading.Barrier, got: dict[int, list[str]]) -> None:
            barrier.wait()
            got[i] = consumers[i].dequeue(spec, f"c{i}", clock=lambda: 100.0, limit=10,
                                          names=["wf"], app_version=None).workflow_ids

        threads = [threading.Thread(target=take, args=(i, barrier, got))
                   for i in range(len(consumers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        this_round = [wid for ids in got.values() for wid in ids]
        assert 1 <= len(this_round) <= 3, got  # the global limit, never exceeded
        assert all(len(ids) <= 2 for ids in got.values()), got  # each consumer's limit
        running = consumers[0].list_workflows(status="pending", queue="q")
        assert len(running) == len(this_round)
        for i, ids in got.items():
            for wid in ids:
                assert consumers[0].finish_workflow(wid, f"c{i}", status="succeeded",
                                                    output=b"", error=None, now=101.0)
        taken += this_round
    assert sorted(taken) == [f"j{i:02}" for i in range(24)]  # each exactly once


def test_rate_limit_holds_across_racing_consumers(journal: Opener) -> None:
    consumers = [journal() for _ in range(4)]
    spec = QueueSpec("r", rate_limit=(5, 1000.0))
    for i in range(20):
        _start(consumers[0], f"r{i:02}", queue=QueueEntry("r"), now=float(i))
    barrier = threading.Barrier(len(consumers))
    got: dict[int, Any] = {}

    def take(i: int) -> None:
        barrier.wait()
        got[i] = consumers[i].dequeue(spec, f"c{i}", clock=lambda: 50.0, limit=10, names=["wf"],
                                      app_version=None)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(consumers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [wid for d in got.values() for wid in d.workflow_ids]
    assert sorted(ids) == [f"r{i:02}" for i in range(5)]  # the oldest five, once each
    assert consumers[0].dequeue(spec, "late", clock=lambda: 60.0, limit=10, names=["wf"],
                                app_version=None).reopens_at == 1050.0
    (stats,) = consumers[0].queue_stats(60.0)
    assert (stats.enqueued, stats.running, stats.started_recently) == (15, 5, 5)


def test_dequeue_order_partitions_timeout_and_requeue(store: Storage) -> None:
    _start(store, "low", queue=QueueEntry("q", priority=5), now=1.0)
    _start(store, "high", queue=QueueEntry("q", priority=1, timeout=10.0), now=2.0)
    _start(store, "other", queue=QueueEntry("q"), now=3.0, name="unknown")
    got = store.dequeue(QueueSpec("q"), "me", clock=lambda: 20.0, limit=10, names=["wf"],
                        app_version=None)
    assert got.workflow_ids == ["high", "low"]
    high = store.get_workflow("high")
    assert high is not None and (high.status, high.owner, high.deadline) == ("pending", "me",
                                                                             30.0)
    assert store.requeue(["high", "low", "other"], "me", 21.0) == ["high", "low"] or sorted(
        store.requeue(["high"], "me", 21.0)) == []
    for i, key in enumerate(["a", "a", "b"]):
        _start(store, f"p{i}", queue=QueueEntry("pq", partition_key=key), now=10.0 + i)
    spec = QueueSpec("pq", concurrency=1, partitioned=True)
    assert store.dequeue(spec, "me", clock=lambda: 30.0, limit=10, names=["wf"],
                         app_version=None).workflow_ids == ["p0", "p2"]


def test_dedup_keys(store: Storage) -> None:
    entry = QueueEntry("q", dedup_key="k")
    assert _start(store, "first", queue=entry)[0]
    with pytest.raises(Deduplicated) as held:
        _start(store, "second", queue=entry)
    assert held.value.existing_id == "first"
    assert store.get_workflow("second") is None
    store.dequeue(QueueSpec("q"), "me", clock=lambda: 2.0, limit=1, names=["wf"], app_version=None)
    with pytest.raises(Deduplicated):
        _start(store, "third", queue=entry)
    store.finish_workflow("first", "me", status="succeeded", output=b"", error=None, now=3.0)
    assert _start(store, "fourth", queue=entry)[0]  # the key freed when its holder ended


# -- messages, events, streams, promises ------------------------------------------------------


def test_messages(store: Storage) -> None:
    _start(store, "w")
    assert store.send_message(destination="ghost", topic="t", payload=b"x", now=1.0,
                              key=None) is None
    assert store.send_message(destination="w", topic="t", payload=b"1", now=1.0, key="k")
    assert store.send_message(destination="w", topic="t", payload=b"dup", now=1.0,
                              key="k") is False
    assert store.send_message(destination="w", topic="u", payload=b"2", now=2.0, key=None)
    assert store.unread_topics("w") == {"t", "u"}
    taken = store.take_message("w", "t", _step("w", 0, b"", kind="recv", finished=None), "me",
                               open_row=True)
    assert taken == b"1"
    assert store.take_message("w", "t", _step("w", 1, b"", kind="recv", finished=None), "me",
                              open_row=True) is None
    assert store.load_steps("w")[1].finished_at is None  # the open row
    with pytest.raises(ld.OwnershipLostError):
        store.take_message("w", "u", _step("w", 2, b"", kind="recv"), "thief", open_row=False)
    assert store.unread_topics("w") == {"u"}  # the refused take consumed nothing
    box = store.mailbox("w")
    assert [(m.payload, m.consumed_step) for m in box] == [(b"1", 0), (b"2", None)]


def test_events_streams_and_promises(store: Storage) -> None:
    _start(store, "w")
    store.set_event("w", "k", b"v1", 1.0, _step("w", 0, kind="set_event", name="k"), "me")
    store.set_event("w", "k", b"v2", 1.0, _step("w", 1, kind="set_event", name="k"), "me")
    assert store.get_event("w", "k") == b"v2" and store.get_event("w", "x") is None
    assert store.events("w") == {"k": b"v2"}
    assert store.write_stream("w", "s", b"a", 1.0, _step("w", 2), "me") == 0
    assert store.write_stream("w", "s", b"b", 1.0, _step("w", 3), "me") == 1
    assert store.write_stream("w", "s", None, 1.0, _step("w", 4), "me") == 2
    assert store.write_stream("w", "s", b"c", 1.0, _step("w", 5), "me") is None
    assert store.read_stream("w", "s", 0, 10) == ([(0, b"a"), (1, b"b")], True)
    assert store.read_stream("w", "s", 1, 1) == ([(1, b"b")], False)
    assert store.read_stream("w", "s", 5, 10) == ([], True)
    assert store.streams("w") == {"s": (2, True)}
    store.create_promise("p", "w", 1.0, _step("w", 5, kind="promise"), "me")
    assert store.settle_promise("nope", output=b"x", error=None, now=2.0) is None
    settled = store.settle_promise("p", output=b"x", error=None, now=2.0)
    assert settled is not None and settled[1] and settled[0].output == b"x"
    again = store.settle_promise("p", output=b"y", error=None, now=3.0)
    assert again is not None and not again[1] and again[0].output == b"x"
    promise = store.get_promise("p")
    assert promise is not None and (promise.output, promise.settled_at) == (b"x", 2.0)
    assert [p.promise_id for p in store.promises("w")] == ["p"]


# -- owners and schedules ---------------------------------------------------------------------


def test_owners_claim_forget_and_release(store: Storage) -> None:
    store.heartbeat(OwnerRow("me", "host", 1, 1.0, 30.0, "ns"))
    first = store.owners().rows["me"]
    store.heartbeat(OwnerRow("me", "host", 1, 5.0, 30.0, "ns"))
    store.heartbeat(OwnerRow("dead", "host", 2, 1.0, 30.0, None))
    again = store.owners().rows["me"]
    assert again.heartbeat >= first.heartbeat  # refreshed (by the journal's clock)
    assert again == OwnerRow("me", "host", 1, again.heartbeat, 30.0, "ns")
    _start(store, "w", "dead")
    store.record_step(_step("w", 0), "dead")
    seen = store.owners().rows["dead"].heartbeat
    store.heartbeat(OwnerRow("back", "host", 3, 1.0, 30.0, None))
    back = store.owners().rows["back"].heartbeat
    store.heartbeat(OwnerRow("back", "host", 3, 1.0, 30.0, None))  # it beat again since
    while store.owners().rows["back"].heartbeat <= back:  # (a clock tick apart)
        store.heartbeat(OwnerRow("back", "host", 3, 1.0, 30.0, None))
    assert store.claim([("w", "dead"), ("ghost", None)], "me",
                       forget=[("dead", seen), ("back", back)]) == {"w": 1}
    assert set(store.owners().rows) == {"me", "back"}  # the owner that came back kept its row
    assert store.claim([("w", "me")], "me") == {"w": 2}  # no progress: attempts count up
    store.record_step(_step("w", 1), "me")
    assert store.claim([("w", "me")], "me") == {"w": 1}  # progress resets them
    store.release("me")
    row = store.get_workflow("w")
    assert row is not None and row.owner is None and set(store.owners().rows) == {"back"}
    assert store.claim([("w", None)], "next") == {"w": 2}


def test_heartbeats_are_stamped_by_the_journals_clock_not_the_callers(journal: Opener) -> None:
    """Issue 17 item 4: the heartbeat instant is the journal's clock (the database server's on
    PostgreSQL), whatever the writer's clock says, and ``owners`` reads that clock with the
    rows: a heartbeat's age never mixes two machines' clocks."""
    writer, judge = journal(), journal()
    assert judge.owners().rows == {}  # the clock is read with no owner rows too
    before = judge.owners().now
    writer.heartbeat(OwnerRow("ahead", "machine-a", 1, 1e12, 1.0, None))  # a clock far ahead
    writer.heartbeat(OwnerRow("behind", "machine-b", 2, -1e12, 1.0, None))  # and far behind
    after = judge.owners()
    for owner in ("ahead", "behind"):  # stamped between the two reads of the journal's clock
        assert before <= after.rows[owner].heartbeat <= after.now, owner
    assert after.now >= before


class _SkewedTime:
    """``litedurable._lease.time`` on a machine whose wall clock is ``skew`` seconds off."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew

    def monotonic(self) -> float:
        return time.monotonic()


def _wait_for_the_journal_clock(store: Storage, owner: str, age: float) -> None:
    """Until ``owner``'s heartbeat is more than ``age`` old by the journal's clock."""
    for _ in range(10_000):
        owners = store.owners()
        if owners.now - owners.rows[owner].heartbeat > age:
            return
        time.sleep(0.01)
    raise AssertionError(f"the journal's clock never passed {owner!r}'s heartbeat + {age} s")


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_a_lease_verdict_uses_the_journals_clock_not_the_judges(
    journal: Opener, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    """A judge whose wall clock is an hour ahead does not presume a live owner dead (it took
    every live owner's workflows over, double execution); one an hour behind still takes a
    dead owner over once its lease passed (it never did). The owner is on another machine,
    so no pid check applies: only the lease decides."""
    from litedurable import _lease

    owner_store, judge_store = journal(), journal()
    monkeypatch.setattr(_lease, "time", _SkewedTime(skew))
    judge = _lease.Lease(judge_store, 30.0, Faults())
    live, dead = "machine-a:1:live", "machine-b:2:dead"
    owner_store.heartbeat(OwnerRow(dead, "machine-b", 2, 0.0, 0.2, None))
    _wait_for_the_journal_clock(judge_store, dead, 0.2)
    owner_store.heartbeat(OwnerRow(live, "machine-a", 1, 0.0, 30.0, None))
    for wid, holder in (("w-live", live), ("w-dead", dead)):
        _start(owner_store, wid, holder)
    verdicts = judge.verdicts()
    assert not verdicts.gone(live), "a live owner on another machine was presumed dead"
    assert verdicts.gone(dead), "an owner silent past its lease was not presumed dead"
    pending = owner_store.pending(None)
    assert judge.claim(pending, lambda name: True, lambda wid: False) == {"w-dead": 1}
    assert {w: o for w, _, o in judge_store.pending(None)} == {"w-live": live,
                                                               "w-dead": judge.owner}


def test_schedules(store: Storage) -> None:
    row = ScheduleRow("nightly", "wf", "0 3 * * *", None, True, False, None)
    store.upsert_schedule(row, 1.0)
    assert store.pause_schedule("nightly", True, 2.0)
    store.upsert_schedule(ScheduleRow("nightly", "wf2", "0 4 * * *", "UTC", False, False, None),
                          3.0)
    store.schedule_fired("nightly", 10.0)
    store.schedule_fired("nightly", 5.0)  # the last fire only grows
    (got,) = store.schedules()
    assert (got.workflow, got.cron, got.tz, got.paused, got.last_fire) == (
        "wf2", "0 4 * * *", "UTC", True, 10.0)
    assert not store.pause_schedule("ghost", True, 4.0)
    assert store.delete_schedule("nightly") and not store.delete_schedule("nightly")
    assert store.schedules() == []


# -- news, health, transfer ---------------------------------------------------------------------


def test_changed_elsewhere_sees_another_connections_commit(journal: Opener) -> None:
    watcher, writer = journal(), journal()
    watcher.changed_elsewhere()
    _start(writer, "w")
    for _ in range(3000):  # a notification may take a moment: a bound, not a timing
        if watcher.changed_elsewhere():
            break
        time.sleep(0.01)
    else:
        pytest.fail("another connection's commit was never reported")


def test_a_claim_skips_a_row_a_stopped_owners_open_transaction_holds(postgres_dsn: str) -> None:
    """A process stopped inside a transaction (SIGSTOP, a frozen VM) keeps its row locks until
    the server ends its session; recovery claims around them instead of waiting (it runs on
    the heartbeat thread: waiting, its own App would stop beating and look dead)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(postgres_dsn, schema=schema)
    stopped = psycopg.connect(postgres_dsn)
    try:
        for wid in ("held", "free"):
            _start(storage, wid, "dead")
        stopped.execute(f"SELECT 1 FROM {schema}.workflows WHERE workflow_id = 'held' FOR SHARE")
        got: list[dict[str, int]] = []
        claimer = threading.Thread(target=lambda: got.append(
            storage.claim([("held", "dead"), ("free", "dead")], "me")))
        claimer.start()
        claimer.join(60)  # a hang bound, not a timing: without SKIP LOCKED it waits forever
        assert not claimer.is_alive() and got == [{"free": 1}]
        stopped.rollback()  # the stopped owner's transaction ends: the next claim takes it
        assert storage.claim([("held", "dead")], "me") == {"held": 1}
        timeout = storage.driver.read(lambda conn: conn.execute(
            "SHOW idle_in_transaction_session_timeout").fetchall())
        assert timeout == [("15s",)]  # and the server ends such a session after a while
    finally:
        stopped.close()
        storage.close()


def test_a_dequeue_reads_its_clock_once_the_queue_is_locked(postgres_dsn: str) -> None:
    """A dequeue that waited for a peer's queue lock judges the limits, and dates what it
    takes, at the instant it got the lock, not the one it was called at (a queued workflow
    with a timeout was dequeued with a deadline already past)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(postgres_dsn, schema=schema)
    peer = psycopg.connect(postgres_dsn)
    try:
        _start(storage, "w", None, queue=QueueEntry("q", 0, None, None, 5.0))
        peer.execute(pg_sql.QUEUE_LOCK, (schema, "q"))  # a peer dequeuing from "q" right now
        now = [10.0]
        got: list[list[str]] = []
        taker = threading.Thread(target=lambda: got.append(storage.dequeue(
            QueueSpec("q"), "me", clock=lambda: now[0], limit=1, names=["wf"],
            app_version=None).workflow_ids))
        taker.start()
        time.sleep(0.2)  # (the taker waits on the lock: an order, not a timing assertion)
        now[0] = 100.0
        peer.rollback()
        taker.join(60)
        assert got == [["w"]]
        row = storage.get_workflow("w")
        assert row is not None and row.deadline == 105.0
    finally:
        peer.close()
        storage.close()


def test_a_lost_notification_costs_a_slow_poll_not_a_hang(postgres_dsn: str) -> None:
    """A writer killed between its commit and its notification (here: one that never
    notifies) is still seen by the others, at their fallback poll."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    watcher, writer = (PostgresStorage(postgres_dsn, schema=schema) for _ in range(2))
    try:
        writer.driver.announce = lambda: None  # type: ignore[method-assign]
        watcher.changed_elsewhere()
        _start(writer, "w")
        for _ in range(1000):  # FALLBACK_POLL is 1 s; 10 s is a bound, not a timing
            if watcher.changed_elsewhere():
                break
            time.sleep(0.01)
        else:
            pytest.fail("a commit whose notification was lost was never reported")
    finally:
        watcher.close()
        writer.close()


def test_export_import_and_check(journal: Opener, tmp_path: Any) -> None:
    store = journal()
    _start(store, "w")
    store.record_step(_step("w", 0, b"zero"), "me")
    store.send_message(destination="w", topic="t", payload=b"m", now=1.0, key=None)
    store.set_event("w", "k", b"v", 1.0, _step("w", 1, kind="set_event", name="k"), "me")
    record = store.export_workflow("w")
    assert record is not None and store.export_workflow("ghost") is None
    with pytest.raises(ld.WorkflowConflictError):
        store.import_workflows([record])
    # Into an SQLite journal (from PostgreSQL: the records are the same on both backends).
    other = SqliteStorage(str(tmp_path / "other.db"))
    try:
        assert other.import_workflows([record]) == ["w"]
        back = other.export_workflow("w")
        assert back is not None
        assert [s.output for s in other.load_steps("w")] == [b"zero", b"out"]
        assert back["steps"] == record["steps"] and back["events"] == record["events"]
        assert other.events("w") == {"k": b"v"}
    finally:
        other.close()
    assert store.check() == []
    assert store.quick_check() == "ok"


def test_check_names_a_damaged_row(journal: Opener) -> None:
    store = journal()
    _start(store, "w")
    store.record_step(_step("w", 0, b"zero"), "me")
    if isinstance(store, SqliteStorage):
        store.write(lambda conn: conn.execute("UPDATE steps SET output = x'00'"))
    else:
        store.driver.write(lambda conn: conn.execute("UPDATE steps SET output = '\\x00'"))
    assert store.check() == [f"step 0 of workflow 'w' in {store.path} fails its checksum"]
    with pytest.raises(ld.JournalCorruptError):
        store.load_steps("w")


def test_an_sqlite_export_imports_into_postgres(postgres_dsn: str, tmp_path: Any) -> None:
    source = SqliteStorage(str(tmp_path / "source.db"))
    target = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        _start(source, "w")
        source.record_step(_step("w", 0, b"zero"), "me")
        source.write_stream("w", "s", b"item", 1.0, _step("w", 1), "me")
        source.create_promise("p", "w", 1.0, _step("w", 2, kind="promise"), "me")
        record = source.export_workflow("w")
        assert record is not None and target.import_workflows([record]) == ["w"]
        assert target.load_steps("w") == source.load_steps("w")
        assert target.read_stream("w", "s", 0, 5) == ([(0, b"item")], False)
        assert target.get_promise("p") == source.get_promise("p")
        row = target.get_workflow("w")
        assert row is not None and row.owner is None  # the exporting owner is not carried
        assert target.check() == []
    finally:
        source.close()
        target.close()


# -- PostgreSQL only: the schema ----------------------------------------------------------------


def test_postgres_schema_opens_once_under_racing_opens_and_refuses_a_newer_one(
        postgres_dsn: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    opened: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStorage(postgres_dsn, schema=schema))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for storage in opened:
        storage.close()
    assert errors == [] and len(opened) == 4
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.schema_version SET version = 99")
    with pytest.raises(ld.JournalVersionError, match="newer"):
        PostgresStorage(postgres_dsn, schema=schema)
    with pytest.raises(ValueError):
        PostgresStorage(postgres_dsn, schema="Robert'); DROP")


# -- PostgreSQL only: a commit whose outcome is unknown is re-read ----------------------------


def test_a_commit_cut_off_before_it_committed_is_reported_not_written(
        postgres_dsn: str) -> None:
    """The connection dies inside COMMIT (a deferred trigger terminates its own backend):
    the re-read finds nothing, and the caller is told so; nothing is assumed."""
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        schema = storage.driver.schema
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(
                f"CREATE FUNCTION {schema}.die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.workflow_id = 'doomed' THEN "
                "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NULL; END $$")
            conn.execute(f"CREATE CONSTRAINT TRIGGER die AFTER INSERT ON {schema}.workflows "
                         "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "
                         f"{schema}.die()")
        with pytest.raises(ld.JournalError, match="nothing was written"):
            _start(storage, "doomed")
        assert storage.get_workflow("doomed") is None
        assert _start(storage, "fine")[0]  # the pool replaced the dead connection
    finally:
        storage.close()


def test_a_commit_acknowledgement_lost_after_it_committed_is_found_by_the_reread(
        postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    real = storage.driver.pool.connection
    armed = [True]

    class LosesTheAck:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        @contextlib.contextmanager
        def transaction(self) -> Iterator[None]:
            with self._conn.transaction():
                yield
            if armed[0]:
                armed[0] = False
                raise psycopg.OperationalError("server closed the connection (simulated)")

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            cursor = self._conn.execute(*args, **kwargs)
            if args[0] == pg_sql.NOTIFY:  # the notifier thread's, after a commit: not a write
                return cursor
            conn = getattr(self._conn, "connection", self._conn)  # a cursor's, or itself
            if armed[0] and conn.autocommit and not conn.info.transaction_status:
                armed[0] = False  # an autocommit statement ran (record_step): lose its answer
                raise psycopg.OperationalError("server closed the connection (simulated)")
            return cursor

    @contextlib.contextmanager
    def connection(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real(*args, **kwargs) as conn:
            yield LosesTheAck(conn)

    real_own = storage.driver._own_cursor

    def own_cursor() -> Any:  # the step writer's own connection (``autocommit(own=True)``)
        return LosesTheAck(real_own())

    monkeypatch.setattr(storage.driver.pool, "connection", connection)
    monkeypatch.setattr(storage.driver, "_own_cursor", own_cursor)
    try:
        created, row = _start(storage, "w")  # committed; the re-read finds it
        assert created and storage.get_workflow("w") == row
        armed[0] = True  # a write that cannot be re-read is reported, not assumed
        with pytest.raises(ld.JournalError, match="unknown"):
            storage.heartbeat(OwnerRow("me", "host", 1, 1.0, 30.0, None))
        assert set(storage.owners().rows) == {"me"}  # (it was written: unknown, not lost)
        armed[0] = True  # record_step is one autocommit statement: re-read by its checksum
        storage.record_step(_step("w", 0, b"zero"), "me")
        assert not armed[0] and [s.output for s in storage.load_steps("w")] == [b"zero"]
        armed[0] = True  # so is a finish whose row is known: re-read by its status
        assert storage.finish_workflow("w", "me", status="succeeded", output=b"r", error=None,
                                       now=3.0, known=row)
        assert not armed[0] and storage.get_workflow("w").status == "succeeded"
    finally:
        storage.close()


# -- PostgreSQL only: durability, errors ------------------------------------------------------


@pytest.mark.parametrize(("durability", "setting"), [("full", "on"), ("normal", "off")])
def test_durability_sets_synchronous_commit(postgres_dsn: str, durability: str,
                                            setting: str) -> None:
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}",
                              durability=durability)  # type: ignore[arg-type]
    try:
        found = storage.driver.read(
            lambda conn: conn.execute("SHOW synchronous_commit").fetchall())
        assert found == [(setting,)]
    finally:
        storage.close()


def test_an_unreachable_server_is_a_journal_error(postgres_dsn: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ld.JournalError, match="cannot be reached"):
            PostgresStorage(f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=5")


def test_connections_the_server_dropped_are_replaced(postgres_dsn: str) -> None:
    """Every backend of the storage terminated (a server restart, a failover, an idle
    timeout): the next read and the next write run on fresh connections, and the listener
    reconnects (reporting "changed", as it may have missed news meanwhile)."""
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        _start(storage, "before")
        storage.changed_elsewhere()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'").fetchall()
        assert killed[0][0] >= 2  # the pooled connection and the listener
        assert storage.get_workflow("before") is not None  # a read
        assert _start(storage, "after")[0]  # a write
        storage.record_step(_step("after", 0), "me")  # the autocommit path
        for _ in range(3000):  # a bound, not a timing
            if storage.changed_elsewhere():
                break
            time.sleep(0.01)
        else:
            pytest.fail("the listener never came back")
    finally:
        storage.close()


def test_the_first_writes_after_the_server_dropped_idle_connections_succeed(
        postgres_dsn: str) -> None:
    """A server restart (or ``pg_terminate_backend``, or a proxy's idle timeout) leaves the
    pooled connections and the step writer's own connection dead but idle. The first
    one-statement write on each (a top-level start, a step row, a finish) was sent on it, its
    answer lost, the re-read found nothing: ``JournalError: ... nothing was written``, once per
    dead connection. A dead idle connection is now found before use (its socket has the
    server's last words to read) and replaced."""
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        _start(storage, "before")
        storage.record_step(_step("before", 0), "me")  # the step writer's connection is open
        barrier = threading.Barrier(4)

        def busy() -> None:  # reads at once: the pool holds several connections
            barrier.wait(timeout=30)
            for _ in range(10):
                storage.get_workflow("before")

        threads = [threading.Thread(target=busy) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            pids = [pid for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall()]
            assert len(pids) >= 3  # pooled, the step writer's, the listener
            conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                         (pids,))
            for _ in range(3000):  # a bound, not a timing: until they are gone
                if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                    (pids,)).fetchall():
                    break
                time.sleep(0.01)
        for n in range(1, 4):  # one write per dead connection, and more
            storage.record_step(_step("before", n), "me")
        for wid in ("a", "b", "c", "d"):
            assert _start(storage, wid)[0]
            assert storage.finish_workflow(wid, "me", status="succeeded", output=b"r",
                                           error=None, now=3.0, known=storage.get_workflow(wid))
        assert [s.step for s in storage.load_steps("before")] == [0, 1, 2, 3]
    finally:
        storage.close()


# -- operations main added: owner-less starts, all-or-nothing imports, gc's parent rule -------


def test_an_ownerless_start_is_claimed_by_recovery(store: Storage) -> None:
    created, row = _start(store, "w", None)  # type: ignore[arg-type]
    assert created and row.owner is None and store.pending(None) == [("w", "wf", None)]
    assert store.claim([("w", None)], "me") == {"w": 1}


def test_import_workflows_is_every_record_or_none(store: Storage) -> None:
    for wid in ("kept", "gone"):
        _start(store, wid)
        store.record_step(_step(wid, 0), "me")
    store.finish_workflow("gone", "me", status="succeeded", output=b"", error=None, now=2.0)
    gone, kept = store.export_workflow("gone"), store.export_workflow("kept")
    assert gone is not None and kept is not None
    assert store.delete_finished(10.0) == 1
    with pytest.raises(ld.WorkflowConflictError, match="'kept'"):
        store.import_workflows([gone, kept])
    assert store.get_workflow("gone") is None  # nothing of the import was written
    with pytest.raises(ld.WorkflowConflictError, match="twice"):
        store.import_workflows([gone, gone])
    bad = dict(gone, workflow=dict(gone["workflow"], status="nonsense"))
    with pytest.raises(ld.JournalError, match="unknown status"):
        store.import_workflows([bad])
    assert store.import_workflows([gone]) == ["gone"]
    assert [s.step for s in store.load_steps("gone")] == [0]


def test_gc_keeps_a_finished_child_of_an_unfinished_parent(store: Storage) -> None:
    _start(store, "parent")
    _start(store, "child", parent="parent")
    store.finish_workflow("child", "me", status="succeeded", output=b"", error=None, now=2.0)
    assert store.delete_finished(10.0) == 0
    store.finish_workflow("parent", "me", status="succeeded", output=b"", error=None, now=3.0)
    assert store.delete_finished(10.0) == 2


def test_backup_of_a_postgres_journal_names_pg_dump(postgres_dsn: str) -> None:
    storage = PostgresStorage(postgres_dsn, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        with pytest.raises(ld.UsageError, match="pg_dump"):
            storage.backup("/tmp/never-written")
    finally:
        storage.close()
