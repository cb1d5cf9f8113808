"""Messages, events, streams and promises, attacked as a demanding user would.

Each test checks one promise of ``litedurable/_messages.py`` (issue 14) end to end through the
public API; the journal is read through the storage API where the App has no public read.
Replays are forced with ``suspend_after=0`` (every wait gives its thread back, so the
workflow is replayed on each wake-up) or by closing the App and launching a new one on the file.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from support import eventually

import litedurable as ld


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Order:
    item: str
    qty: int


def mailbox(app: ld.App, workflow_id: str) -> list[Any]:
    storage, _ = app._parts()
    return storage.mailbox(workflow_id)


def status(app: ld.App, workflow_id: str) -> str:
    return app.handle(workflow_id).status()


def waiting(app: ld.App, workflow_id: str, kind: str = "message") -> bool:
    """The workflow has recorded an open receive (it is blocked on it)."""
    return any(s.kind == kind and s.finished_at is None for s in app.steps(workflow_id))


# -- messages -----------------------------------------------------------------------------------


def test_fifo_per_topic_and_topics_isolated(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def inbox() -> tuple[list[Any], list[Any], list[Any]]:
        a = [ld.recv("a") for _ in range(3)]
        b = [ld.recv("b") for _ in range(2)]
        default = [ld.recv(), ld.recv("")]
        return a, b, default

    with app:
        wid = "inbox"
        h = app.start(inbox, workflow_id=wid)
        for n in range(3):
            app.send(wid, f"b{n}", topic="b")  # b gets one more than it reads
            app.send(wid, f"a{n}", topic="a")
        app.send(wid, "d1", topic="")
        app.send(wid, "d2")
        assert h.result(timeout=30) == (["a0", "a1", "a2"], ["b0", "b1"], ["d1", "d2"])
        left = [m for m in mailbox(app, wid) if m.consumed_step is None]
        assert [(m.topic, m.payload) for m in left] == [("b", b'"b2"')]


def test_recv_waits_for_a_later_send_from_outside_and_from_a_workflow(db_path):
    app = ld.App(db_path, suspend_after=0)

    @app.workflow()
    def receiver() -> list[Any]:
        return [ld.recv("x"), ld.recv("x")]

    @app.workflow()
    def sender(to: str) -> None:
        ld.send(to, "from a workflow", topic="x")

    with app:
        h = app.start(receiver, workflow_id="r")
        eventually(lambda: waiting(app, "r"), "the receiver to block in recv")
        app.send("r", "from outside", topic="x")
        eventually(lambda: len([s for s in app.steps("r") if s.kind == "message"]) == 2,
                   "the second recv")
        app.run(sender, "r")
        assert h.result(timeout=30) == ["from outside", "from a workflow"]


def test_type_reads_dataclass_and_enum_back_and_wrong_type_is_serialization_error(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def typed() -> tuple[Order, Color]:
        return ld.recv("o", type=Order), ld.recv("c", type=Color)

    @app.workflow()
    def mistyped() -> Any:
        return ld.recv(type=Order)

    with app:
        h = app.start(typed, workflow_id="typed")
        app.send("typed", Order("tea", 2), topic="o")
        app.send("typed", Color.BLUE, topic="c")
        order, color = h.result(timeout=30)
        assert order == Order("tea", 2) and color is Color.BLUE
        bad = app.start(mistyped, workflow_id="mistyped")
        app.send("mistyped", 42)
        with pytest.raises(ld.SerializationError):
            bad.result(timeout=30)


def build_racer(db_path: str, gate: threading.Event) -> tuple[ld.App, Any]:
    app = ld.App(db_path, suspend_after=0)

    @app.step(name="slow")
    def slow() -> str:
        gate.wait(60)
        return "step"

    @app.workflow(name="child")
    def child() -> str:
        return ld.recv("child-go")

    @app.workflow(name="racer")
    def racer(use_as_completed: bool) -> tuple[int, Any, Any]:
        kid = app.start(child, workflow_id=ld.workflow_id() + "-kid")
        futures = [ld.go(slow), ld.after(3600), kid, ld.message("other"), ld.message("main")]
        won = next(ld.as_completed(futures)) if use_as_completed else ld.select(futures)
        after = ld.recv("after")  # blocks again: the decision is replayed after this
        return futures.index(won), won.result(), after

    return app, racer


@pytest.mark.parametrize("use_as_completed", [False, True])
def test_message_raced_with_step_timer_child_and_other_topic_replays_same_winner(
        db_path, use_as_completed):
    gate = threading.Event()
    wid = f"racer-{use_as_completed}"
    app, racer = build_racer(db_path, gate)
    with app:
        app.start(racer, use_as_completed, workflow_id=wid)
        eventually(lambda: waiting(app, wid), "the race to start")
        app.send(wid, "main wins", topic="main")
        eventually(lambda: any(s.kind == "message" and s.name == "after"
                               for s in app.steps(wid)), "the decision and the next recv")
        # every other candidate settles now: a replay that re-decided would pick another
        app.send(wid, "late", topic="other")
        gate.set()
        app.send(wid + "-kid", "done", topic="child-go")
        eventually(lambda: app.handle(wid + "-kid").status() == ld.Status.SUCCEEDED,
                   "the child to finish")
    app, racer = build_racer(db_path, gate)  # a new process on the file replays the race
    with app:
        app.send(wid, "then", topic="after")
        assert app.handle(wid).result(timeout=30) == (4, "main wins", "then")


def test_losing_message_future_keeps_its_message(db_path):
    app = ld.App(db_path, suspend_after=0)

    @app.workflow()
    def loser() -> tuple[str, Any, Any]:
        a, b = ld.message("a"), ld.message("b")
        won = ld.select([a, b])
        ld.recv("go")  # b's message arrives meanwhile; a replay happens after this wake-up
        return ("a" if won is a else "b"), won.result(), (b if won is a else a).result()

    with app:
        h = app.start(loser, workflow_id="loser")
        eventually(lambda: waiting(app, "loser"), "the race")
        app.send("loser", "A", topic="a")
        eventually(lambda: any(s.name == "go" for s in app.steps("loser")), "the decision")
        app.send("loser", "B", topic="b")
        app.send("loser", "next", topic="go")
        assert h.result(timeout=30) == ("a", "A", "B")


def test_recv_timeout_is_recorded_and_late_message_goes_to_next_recv(db_path):
    app = ld.App(db_path, suspend_after=0)

    @app.workflow()
    def impatient() -> tuple[str, Any]:
        try:
            first = ld.recv("t", timeout=0.05)
        except ld.WaitTimeoutError:
            first = "timed out"
        ld.recv("go")  # the late message arrives while this waits; then a replay
        return first, ld.recv("t", timeout=30)

    with app:
        h = app.start(impatient, workflow_id="imp")
        eventually(lambda: any(s.name == "go" for s in app.steps("imp")), "the timeout")
        app.send("imp", "late", topic="t")
        app.send("imp", "go", topic="go")
        assert h.result(timeout=30) == ("timed out", "late")


def test_outside_send_idempotency_key_dedups_per_destination(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def keep() -> None:
        ld.recv("never")

    with app:
        app.start(keep, workflow_id="k1")
        app.start(keep, workflow_id="k2")
        assert app.send("k1", "m", idempotency_key="key") is True
        assert app.send("k1", "m again", idempotency_key="key") is False
        assert app.send("k2", "m", idempotency_key="key") is True
        assert [m.payload for m in mailbox(app, "k1")] == [b'"m"']
        assert [m.payload for m in mailbox(app, "k2")] == [b'"m"']
        app.cancel("k1")
        app.cancel("k2")


def test_send_to_unknown_workflow(db_path):
    app = ld.App(db_path, suspend_after=0)
    sends = []

    @app.workflow()
    def lost() -> str:
        try:
            ld.send("nobody", "hi")
        except ld.WorkflowNotFoundError as exc:
            sends.append(str(exc))
        ld.recv("go")  # replay after this wake-up must raise again from the record
        return "ok"

    with app:
        with pytest.raises(ld.WorkflowNotFoundError, match="nobody"):
            app.send("nobody", "hi")
        h = app.start(lost, workflow_id="lost")
        eventually(lambda: waiting(app, "lost"), "the recv")
        app.send("lost", 1, topic="go")
        assert h.result(timeout=30) == "ok"
        assert len(sends) == 2, sends  # first run and the replay both raised
        assert [s.kind for s in app.steps("lost")][:1] == ["send"]
        assert app.steps("lost")[0].error is not None


def test_send_to_finished_workflow_is_kept_unread(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def quick() -> int:
        return 1

    with app:
        assert app.run(quick, workflow_id="q") == 1
        assert app.send("q", "too late") is True
        (row,) = mailbox(app, "q")
        assert row.consumed_step is None
        assert app.handle("q").result(timeout=5) == 1


def build_sender(db_path: str) -> tuple[ld.App, Any, Any]:
    app = ld.App(db_path)

    @app.workflow(name="sink")
    def sink() -> None:
        ld.recv("never")

    @app.workflow(name="sender")
    def sender() -> str:
        ld.send("sink", "once", topic="t")
        return ld.recv("go")

    return app, sink, sender


def test_send_inside_workflow_is_exactly_once_across_restart(db_path):
    app, sink, sender = build_sender(db_path)
    with app:
        app.start(sink, workflow_id="sink")
        app.start(sender, workflow_id="sender")
        eventually(lambda: waiting(app, "sender"), "the sender to block after sending")
    app, sink, sender = build_sender(db_path)
    with app:
        app.send("sender", "go", topic="go")
        assert app.handle("sender").result(timeout=30) == "go"
        assert [(m.topic, m.payload, m.sender) for m in mailbox(app, "sink")] == [
            ("t", b'"once"', "sender")]
        app.cancel("sink")
