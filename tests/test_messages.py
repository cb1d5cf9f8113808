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

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL


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

    @app.workflow()
    def late_comer() -> None:
        ld.recv("never")

    with app:
        with pytest.raises(ld.WorkflowNotFoundError, match="nobody"):
            app.send("nobody", "hi")
        h = app.start(lost, workflow_id="lost")
        eventually(lambda: waiting(app, "lost"), "the recv")
        app.start(late_comer, workflow_id="nobody")  # exists now: the replay must not send
        app.send("lost", 1, topic="go")
        assert h.result(timeout=30) == "ok"
        assert mailbox(app, "nobody") == []
        app.cancel("nobody")
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


# -- events -------------------------------------------------------------------------------------


def test_event_latest_wins_and_get_event_waits_or_times_out(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def publisher() -> None:
        ld.recv("first")
        ld.set_event("state", "one")
        ld.set_event("state", "two")
        ld.recv("never")

    with app:
        app.start(publisher, workflow_id="pub")
        with pytest.raises(ld.WaitTimeoutError):
            app.get_event("pub", "state", timeout=0.05)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(
            app.get_event("pub", "state", timeout=60)))
        reader.start()
        app.send("pub", 1, topic="first")
        reader.join(60)
        assert got and got[0] in ("one", "two")
        eventually(lambda: app.get_event("pub", "state") == "two", "the latest value")
        with pytest.raises(ld.WorkflowNotFoundError):
            app.get_event("nobody", "state", timeout=1)
        app.cancel("pub")


def test_event_read_in_another_workflow_is_recorded(db_path):
    app = ld.App(db_path, suspend_after=0)

    @app.workflow()
    def source() -> None:
        ld.set_event("v", 1)
        ld.recv("change")
        ld.set_event("v", 2)
        ld.recv("never")

    @app.workflow()
    def watcher() -> tuple[Any, Any]:
        first = ld.get_event("source", "v", timeout=60)
        ld.recv("go")  # the event changes while this waits; the replay must see 1
        return first, ld.event("source", "v").result()

    with app:
        app.start(source, workflow_id="source")
        h = app.start(watcher, workflow_id="watcher")
        eventually(lambda: waiting(app, "watcher"), "the watcher to read the event")
        app.send("source", 0, topic="change")
        eventually(lambda: app.get_event("source", "v") == 2, "the event to change")
        app.send("watcher", 0, topic="go")
        assert h.result(timeout=30) == (1, 2)
        app.cancel("source")


# -- streams ------------------------------------------------------------------------------------


def test_stream_follows_live_writes_resumes_and_ends_on_close(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def writer() -> list[int]:
        positions = []
        for n in range(5):
            ld.recv("next")
            positions.append(ld.write_stream("s", n))
        ld.close_stream("s")
        ld.close_stream("s")  # twice is fine
        try:
            ld.write_stream("s", 99)
        except ld.UsageError as exc:
            assert "close" in str(exc)
            positions.append(-1)
        ld.recv("never")
        return positions

    with app:
        app.start(writer, workflow_id="w")
        seen: list[Any] = []
        reader = threading.Thread(target=lambda: seen.extend(
            app.read_stream("w", "s", timeout=60)))
        reader.start()  # before anything is written
        for n in range(5):
            app.send("w", n, topic="next")
            eventually(lambda n=n: n in seen, f"item {n} to reach the reader")
        reader.join(60)
        assert not reader.is_alive() and seen == [0, 1, 2, 3, 4]
        assert list(app.read_stream("w", "s", offset=3)) == [3, 4]
        # past the close marker: ends at once (it used to wait forever for an item)
        assert list(app.read_stream("w", "s", offset=9)) == []
        eventually(lambda: any(s.kind == "message" and s.name == "never"
                               for s in app.steps("w")), "the writer to finish writing")
        storage, _ = app._parts()
        assert storage.streams("w") == {"s": (5, True)}
        app.cancel("w")


def test_stream_ends_when_workflow_ends_and_times_out_between_items(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def writer() -> None:
        ld.write_stream("s", "a")
        ld.recv("end")

    with app:
        h = app.start(writer, workflow_id="w")
        items = app.read_stream("w", "s", timeout=0.1)
        assert next(items) == "a"
        with pytest.raises(ld.WaitTimeoutError):
            next(items)
        app.send("w", 0, topic="end")
        h.result(timeout=30)
        assert list(app.read_stream("w", "s", timeout=60)) == ["a"]  # unclosed, yet ends
        with pytest.raises(ld.WorkflowNotFoundError):
            app.read_stream("nobody", "s")
        with pytest.raises(ValueError):
            app.read_stream("w", "s", offset=-1)
        with pytest.raises(ValueError):
            app.read_stream("w", "s", offset=True)


# -- promises -----------------------------------------------------------------------------------


def test_promise_stable_id_resolve_once_and_rejection(db_path):
    app = ld.App(db_path, suspend_after=0)
    ids: list[str] = []

    @app.workflow()
    def approval() -> tuple[str, Any]:
        p = ld.promise()
        ids.append(p.id)
        return p.id, p.result()

    @app.workflow()
    def rejected() -> str:
        p = ld.promise()
        ld.set_event("id", p.id)
        try:
            p.result()
        except ld.PromiseRejectedError as exc:
            return str(exc)
        return "resolved?"

    with app:
        h = app.start(approval, workflow_id="ap")
        eventually(lambda: ids, "the promise")
        assert app.resolve(ids[0], {"ok": True}) is True
        assert app.resolve(ids[0], "again") is False
        assert app.reject(ids[0], "no") is False
        pid, value = h.result(timeout=30)
        assert value == {"ok": True} and pid == ids[0]
        assert len(ids) >= 2 and set(ids) == {pid}  # replayed at least once, same id
        r = app.start(rejected, workflow_id="rej")
        rid = app.get_event("rej", "id", timeout=30)
        assert app.reject(rid, "denied") is True
        assert "denied" in r.result(timeout=30)
        with pytest.raises(ld.PromiseNotFoundError):
            app.resolve("no-such-promise", 1)
        with pytest.raises(ld.PromiseNotFoundError):
            app.reject("no-such-promise", "x")


def build_promise_app(db_path: str) -> tuple[ld.App, Any]:
    app = ld.App(db_path)

    @app.workflow(name="waits")
    def waits() -> Any:
        p = ld.promise()
        ld.set_event("id", p.id)
        won = ld.select([p, ld.after(3600)])
        return won.result()

    return app, waits


def test_promise_resolved_while_app_closed_resumes_on_next_launch(db_path):
    app, waits = build_promise_app(db_path)
    with app:
        app.start(waits, workflow_id="pw")
        pid = app.get_event("pw", "id", timeout=30)
    other = ld.App(db_path, app_version="other")  # runs nothing of the first version
    with other:
        assert other.resolve(pid, "approved") is True
    app, waits = build_promise_app(db_path)
    with app:
        assert app.handle("pw").result(timeout=30) == "approved"


def test_promise_loses_to_timer(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def waits() -> str:
        p = ld.promise()
        try:
            ld.select([p], timeout=0.05)
        except ld.WaitTimeoutError:
            return "timer"
        return "promise"

    with app:
        assert app.run(waits) == "timer"


# -- from a step body, and bad input -----------------------------------------------------------


@pytest.mark.parametrize(("name", "call"), [
    ("send", lambda: ld.send("anyone", 1)), ("set_event", lambda: ld.set_event("k", 1)),
    ("write_stream", lambda: ld.write_stream("s", 1)), ("recv", lambda: ld.recv())])
def test_messaging_calls_from_a_step_body_are_usage_errors(db_path, name, call):
    app = ld.App(db_path)

    @app.step()
    def body() -> None:
        call()

    @app.workflow()
    def wf() -> None:
        body()

    with app:
        with pytest.raises(ld.UsageError) as info:
            app.run(wf)
        assert f"ld.{name}() was called inside step" in str(info.value)
        assert "from the workflow function itself" in str(info.value)


def test_bad_input_writes_nothing(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def bad(what: str) -> None:
        if what == "event":
            ld.set_event("k", object())
        elif what == "stream":
            ld.write_stream("s", object())
        elif what == "send":
            ld.send(ld.workflow_id(), object())
        elif what == "topic":
            ld.recv(topic=3)  # type: ignore[arg-type]
        elif what == "key":
            ld.set_event("", 1)

    @app.workflow()
    def keep() -> None:
        ld.recv("never")

    with app:
        app.start(keep, workflow_id="keep")
        with pytest.raises(ld.SerializationError):
            app.send("keep", object())
        with pytest.raises(TypeError):
            app.send("keep", 1, topic=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            app.send("keep", 1, idempotency_key="")
        with pytest.raises(TypeError):
            app.get_event("keep", "")
        with pytest.raises(TypeError):
            app.resolve("")  # type: ignore[call-arg]
        assert mailbox(app, "keep") == []
        for what, error in [("event", ld.SerializationError), ("stream", ld.SerializationError),
                            ("send", ld.SerializationError), ("topic", TypeError),
                            ("key", TypeError)]:
            with pytest.raises(error):
                app.run(bad, what, workflow_id=what)
        storage, _ = app._parts()
        assert storage.events("event") == {} and storage.streams("stream") == {}
        assert mailbox(app, "send") == []
        app.cancel("keep")
    with pytest.raises(ld.AppClosedError):
        app.send("keep", 1)
    with pytest.raises(ld.AppClosedError):
        app.get_event("keep", "k")
    with pytest.raises(ld.AppClosedError):
        app.resolve("p", 1)


def test_outside_only_calls_inside_a_workflow(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def inside(call: str) -> None:
        if call == "read_stream":
            app.read_stream(ld.workflow_id(), "s")
        else:
            app.resolve("p", 1)

    with app:
        for call in ("read_stream", "resolve"):
            with pytest.raises(ld.UsageError):
                app.run(inside, call, workflow_id=call)


# -- retention and fork ------------------------------------------------------------------------


def test_gc_removes_messages_events_streams_and_promises(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def full() -> None:
        ld.set_event("k", 1)
        ld.write_stream("s", 1)
        ld.promise()
        ld.recv()

    with app:
        h = app.start(full, workflow_id="full")
        app.send("full", "m")
        h.result(timeout=30)
        app.send("full", "unread")
        storage, _ = app._parts()
        assert storage.events("full") and storage.streams("full") and storage.promises("full")
        assert app.gc(0) == 1
        assert mailbox(app, "full") == []
        assert storage.events("full") == {} and storage.streams("full") == {}
        assert storage.promises("full") == []


def test_fork_copies_events_and_first_stream_items_only(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def steps() -> None:
        ld.set_event("k", "first")
        ld.write_stream("s", 0)
        ld.set_event("k", "second")  # step 2: the fork starts here
        ld.write_stream("s", 1)
        ld.recv("end")

    with app:
        h = app.start(steps, workflow_id="orig")
        eventually(lambda: waiting(app, "orig"), "the original to block")
        # another version: this App leaves the fork alone, so the file shows what was copied
        app.fork("orig", 2, new_id="forked", app_version="elsewhere")
        storage, _ = app._parts()
        assert storage.get_workflow("forked").status == ld.Status.PENDING
        assert app.codec.decode(storage.events("forked")["k"], Any, "k") == "first"
        assert storage.streams("forked") == {"s": (1, False)}
        assert next(app.read_stream("forked", "s", timeout=0.2)) == 0
        assert mailbox(app, "forked") == []
        app.send("orig", 0, topic="end")
        h.result(timeout=30)
        app.cancel("forked")


def test_type_hint_for_events_and_promises(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def typed() -> tuple[Color, Order]:
        p = ld.promise(type=Order)
        ld.set_event("color", Color.RED)
        ld.set_event("pid", p.id)
        return ld.get_event(ld.workflow_id(), "color", type=Color), p.result()

    with app:
        h = app.start(typed, workflow_id="typed")
        assert app.get_event("typed", "color", timeout=30, type=Color) is Color.RED
        assert app.get_event("typed", "color") == "red"  # no hint: the stored JSON
        app.resolve(app.get_event("typed", "pid", timeout=30), Order("pen", 3))
        color, order = h.result(timeout=30)
        assert color is Color.RED and order == Order("pen", 3)
