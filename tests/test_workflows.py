"""Workflow behaviour: ids as idempotency keys, outcomes, retries, recorded values, serialization,
waiting, and the management views (status, list_workflows, steps)."""

from __future__ import annotations

import contextlib
import enum
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from support import crash_then_close

import litedurable as ld
from litedurable.testing import FakeClock, crash_at

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

# -- value types (module level so type hints resolve) --------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Line:
    sku: str
    qty: int


@dataclass(frozen=True)
class Order:
    id: str
    lines: list[Line]
    placed: datetime
    color: Color


@attrs.frozen
class Receipt:
    order_id: str
    total: int
    colors: tuple[Color, ...]
    at: datetime


class Declined(Exception):
    """A user exception with a two-argument constructor."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


# -- ids are idempotency keys ---------------------------------------------------------------


def test_same_id_twice_runs_once(db_path):
    app = ld.App(db_path)
    effects: Counter[str] = Counter()

    @app.step(name="charge")
    def charge(cents: int) -> int:
        effects["charge"] += 1
        return cents

    @app.workflow(name="checkout")
    def checkout(cents: int) -> str:
        effects["body"] += 1
        return f"charged {charge(cents)}"

    with app:
        first = app.start(checkout, 100, workflow_id="order-1")
        assert first.result(timeout=30) == "charged 100"
        second = app.start(checkout, 999, workflow_id="order-1")  # arguments are not compared
        assert second == first and second.workflow_id == "order-1"
        assert second.result(timeout=30) == "charged 100"
        assert app.run(checkout, 5, workflow_id="order-1") == "charged 100"
        assert len(app.list_workflows()) == 1
    assert effects == {"charge": 1, "body": 1}

    with ld.App(db_path) as again:  # across a reopen too
        assert again.handle("order-1").result(timeout=30) == "charged 100"
    assert effects == {"charge": 1, "body": 1}


def _race_start(pairs: list[tuple[ld.App, object]], n_threads: int) -> list[ld.Handle]:
    """Start workflow id "the-one" from ``n_threads`` threads released at once by a barrier."""
    barrier = threading.Barrier(n_threads)
    handles: list[ld.Handle] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def starter(app: ld.App, wf) -> None:
        try:
            barrier.wait(30)
            handle = app.start(wf, workflow_id="the-one")
            with lock:
                handles.append(handle)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [
        threading.Thread(target=starter, args=pairs[i % len(pairs)]) for i in range(n_threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return handles


def test_same_id_from_eight_threads_is_one_workflow(db_path):
    app = ld.App(db_path)
    effects: Counter[str] = Counter()

    @app.workflow(name="once")
    def once() -> str:
        effects["body"] += 1
        return "done"

    with app:
        handles = _race_start([(app, once)], 8)
        assert len(handles) == 8
        assert {h.workflow_id for h in handles} == {"the-one"}
        assert [h.result(timeout=30) for h in handles] == ["done"] * 8
        assert [w.workflow_id for w in app.list_workflows()] == ["the-one"]
    assert effects == {"body": 1}


def test_same_id_from_two_apps_on_one_file_is_one_workflow(db_path):
    effects: Counter[str] = Counter()
    pairs = []
    for _ in range(2):
        app = ld.App(db_path, app_version="v1")

        @app.workflow(name="once")
        def once() -> str:
            effects["body"] += 1
            return "done"

        pairs.append((app, once))
    (first, _), (second, _) = pairs
    with first, second:
        handles = _race_start(pairs, 8)
        assert [h.result(timeout=30) for h in handles] == ["done"] * 8
        assert len(second.list_workflows()) == 1
    assert effects == {"body": 1}


def test_different_workflow_on_an_existing_id_conflicts(db_path):
    app = ld.App(db_path)

    @app.workflow(name="pay")
    def pay() -> int:
        return 1

    @app.workflow(name="refund")
    def refund() -> int:
        return 2

    with app:
        assert app.run(pay, workflow_id="x-1") == 1
        with pytest.raises(ld.WorkflowConflictError, match="x-1") as info:
            app.start(refund, workflow_id="x-1")
        assert isinstance(info.value, ValueError)
        assert app.handle("x-1").result() == 1
        assert [w.name for w in app.list_workflows()] == ["pay"]


# -- outcomes -------------------------------------------------------------------------------


def test_failed_workflow_reraises_original_exception(db_path):
    def build() -> tuple[ld.App, object, object]:
        app = ld.App(db_path, app_version="v1")

        @app.workflow(name="missing")
        def missing() -> None:
            raise KeyError("sku-9")

        @app.workflow(name="declined")
        def declined() -> None:
            raise Declined("card declined", 402)

        return app, missing, declined

    app, missing, declined = build()
    with app:
        with pytest.raises(KeyError) as info:
            app.run(missing, workflow_id="m")
        assert info.value.args == ("sku-9",)
        with pytest.raises(Declined) as info2:
            app.run(declined, workflow_id="d")
        assert info2.value.args == ("card declined", 402)
        assert app.handle("m").status() is ld.Status.FAILED
    app, _, _ = build()
    with app:
        with pytest.raises(KeyError):
            app.handle("m").result(timeout=30)
        with pytest.raises(Declined) as info3:
            app.handle("d").result(timeout=30)
        assert type(info3.value) is Declined and info3.value.args == ("card declined", 402)
        [failed] = app.list_workflows(name="declined")
        assert failed.error is not None and "Declined" in failed.error


def test_decorated_workflow_called_directly_runs_it(db_path):
    app = ld.App(db_path)

    @app.workflow(name="double")
    def double(x: int) -> int:
        return 2 * x

    with app:
        assert double(21) == 42
        [info] = app.list_workflows()
        assert info.status is ld.Status.SUCCEEDED and info.name == "double"


# -- retries --------------------------------------------------------------------------------


def _build_retrying(path: str, counts: Counter[str]) -> tuple[ld.App, object, object]:
    app = ld.App(path, clock=FakeClock(), app_version="v1")

    @app.step(name="charge", retries=ld.Retry(max_attempts=4, initial=0))
    def charge() -> None:
        counts["charge"] += 1
        raise Declined("card declined", 402)

    @app.step(name="ship")
    def ship() -> str:
        counts["ship"] += 1
        return "shipped"

    @app.workflow(name="catches")
    def catches() -> list[object]:
        try:
            charge()
        except Declined as exc:
            caught: list[object] = [type(exc).__name__, *exc.args]
        return [*caught, ship()]

    @app.workflow(name="lets_through")
    def lets_through() -> None:
        charge()

    return app, catches, lets_through


def test_retry_exhausted_lets_user_exception_through_live_and_on_replay(db_path):
    counts: Counter[str] = Counter()
    app, catches, lets_through = _build_retrying(db_path, counts)
    switch = crash_at(app, "before_step", when=lambda info: info["name"] == "ship")
    crash_then_close(app, switch, lambda a: a.start(catches, workflow_id="c"))
    assert counts == {"charge": 4}

    app, catches, lets_through = _build_retrying(db_path, counts)
    with app:
        # replay: the recorded Declined is rebuilt and caught by the same except clause
        assert app.handle("c").result(timeout=30) == ["Declined", "card declined", 402, "shipped"]
        with pytest.raises(Declined) as info:
            app.run(lets_through, workflow_id="t")
        assert type(info.value) is Declined and info.value.args == ("card declined", 402)
        assert info.value.__cause__ is None
        [row] = app.steps("t")
        assert row.error is not None and row.error.endswith("Declined: ('card declined', 402)")
    assert counts == {"charge": 8, "ship": 1}

    app, _, _ = _build_retrying(db_path, counts)
    with app, pytest.raises(Declined):
        app.handle("t").result(timeout=30)
    assert counts == {"charge": 8, "ship": 1}


@pytest.mark.timeout(60)
def test_retry_backoff_waits_on_the_injected_clock(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)
    attempts: list[float] = []

    # Delays of 1000 s and 2000 s: a wait on real time would hang the test.
    @app.step(
        name="flaky",
        retries=ld.Retry(max_attempts=3, initial=1000, backoff=2, max_interval=10_000),
    )
    def flaky() -> None:
        attempts.append(clock.now())
        raise Declined("still down", 503)

    @app.workflow(name="wf")
    def wf() -> None:
        flaky()

    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            clock.advance(100)
            stop.wait(0.001)

    with app:
        handle = app.start(wf)
        thread = threading.Thread(target=ticker)
        thread.start()
        try:
            with pytest.raises(Declined):
                handle.result(timeout=50)
        finally:
            stop.set()
            thread.join()
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 1000
    assert attempts[2] - attempts[1] >= 2000


def test_retry_on_is_respected(db_path):
    app = ld.App(db_path, clock=FakeClock())
    counts: Counter[str] = Counter()
    policy = ld.Retry(max_attempts=5, initial=0, retry_on=(ConnectionError,))

    @app.step(name="wrong_kind", retries=policy)
    def wrong_kind() -> None:
        counts["wrong_kind"] += 1
        raise ValueError("not retried")

    @app.step(name="always_down", retries=policy)
    def always_down() -> None:
        counts["always_down"] += 1
        raise ConnectionError("down")

    @app.step(name="recovers", retries=policy)
    def recovers() -> str:
        counts["recovers"] += 1
        if counts["recovers"] < 3:
            raise ConnectionRefusedError("not yet")  # a subclass is retried too
        return "up"

    @app.workflow(name="wf")
    def wf() -> list[str]:
        out = []
        for step in (wrong_kind, always_down, recovers):
            try:
                out.append(step())
            except Exception as exc:
                out.append(type(exc).__name__)
        return out

    with app:
        assert app.run(wf) == ["ValueError", "ConnectionError", "up"]
    assert counts == {"wrong_kind": 1, "always_down": 5, "recovers": 3}


def test_step_without_retries_runs_once(db_path):
    app = ld.App(db_path)
    counts: Counter[str] = Counter()

    @app.step(name="once")
    def once() -> None:
        counts["once"] += 1
        raise ConnectionError("down")

    @app.workflow(name="wf")
    def wf() -> None:
        once()

    with app, pytest.raises(ConnectionError):
        app.run(wf)
    assert counts == {"once": 1}


# -- recorded values ------------------------------------------------------------------------


def _build_recording(path: str, clock: FakeClock, seen: list, counts: Counter[str]):
    app = ld.App(path, clock=clock, app_version="v1")

    @app.step(name="later")
    def later() -> int:
        counts["later"] += 1
        return 7

    @app.workflow(name="wf")
    def wf() -> list[object]:
        values = (ld.now(), ld.uuid4(), ld.random(), ld.workflow_id())
        seen.append(values)
        later()
        when, ident, number, wid = values
        return [when.isoformat(), str(ident), number, wid]

    return app, wf


def test_now_uuid_random_workflow_id_are_recorded(db_path):
    seen: list = []
    counts: Counter[str] = Counter()
    clock = FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    app, wf = _build_recording(db_path, clock, seen, counts)
    switch = crash_at(app, "before_step", when=lambda info: info["name"] == "later")
    crash_then_close(app, switch, lambda a: a.start(wf, workflow_id="rec-1"))
    assert len(seen) == 1 and counts == {}

    clock.advance(3600)  # a replay that read the clock again would see another time
    app, wf = _build_recording(db_path, clock, seen, counts)
    with app:
        result = app.handle("rec-1").result(timeout=30)
        kinds = [(s.step, s.kind) for s in app.steps("rec-1")]
    assert len(seen) == 2 and seen[0] == seen[1]
    when, ident, number, wid = seen[0]
    assert when == datetime(2025, 3, 1, 12, 0, tzinfo=UTC) and when.tzinfo is not None
    assert isinstance(ident, uuid.UUID) and ident.version == 4
    assert isinstance(number, float) and 0.0 <= number < 1.0
    assert wid == "rec-1"
    assert result == [when.isoformat(), str(ident), number, "rec-1"]
    assert kinds == [(0, "now"), (1, "uuid4"), (2, "random"), (3, "step")]
    assert counts == {"later": 1}


# -- serialization --------------------------------------------------------------------------

ORDER = Order(
    id="o-1",
    lines=[Line("apple", 2), Line("pear", 1)],
    placed=datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2))),
    color=Color.BLUE,
)
EXTRA = {"k": [(1, Color.RED), (2, Color.BLUE)], "empty": []}
RECEIPT = Receipt("o-1", 3, (Color.BLUE, Color.RED), datetime(2025, 1, 1, tzinfo=UTC))


def _build_typed(path: str, seen: list, counts: Counter[str]):
    app = ld.App(path, app_version="v1")

    @app.step(name="price")
    def price(order: Order) -> Receipt:
        counts["price"] += 1
        total = sum(line.qty for line in order.lines)
        return Receipt(order.id, total, (order.color, Color.RED), datetime(2025, 1, 1, tzinfo=UTC))

    @app.step(name="nested")
    def nested() -> dict[str, list[tuple[int, Color]]]:
        counts["nested"] += 1
        return {"k": [(1, Color.RED), (2, Color.BLUE)], "empty": []}

    @app.workflow(name="typed")
    def typed(order: Order, extra: dict[str, list[tuple[int, Color]]]) -> Receipt:
        receipt = price(order)
        got = nested()
        seen.append((order, extra, receipt, got))
        return receipt

    return app, typed


def test_values_round_trip_through_type_hints(db_path):
    seen: list = []
    counts: Counter[str] = Counter()
    app, typed = _build_typed(db_path, seen, counts)
    switch = crash_at(app, "before_outcome")
    crash_then_close(app, switch, lambda a: a.start(typed, ORDER, EXTRA, workflow_id="t-1"))

    app, typed = _build_typed(db_path, seen, counts)
    with app:
        result = app.handle("t-1").result(timeout=30)
    assert counts == {"price": 1, "nested": 1}
    assert len(seen) == 2  # live, then replayed from the journal
    for order, extra, receipt, got in seen:
        assert order == ORDER and type(order.lines[0]) is Line
        assert order.placed.utcoffset() == timedelta(hours=2)
        assert extra == EXTRA and type(extra["k"][0]) is tuple
        assert receipt == RECEIPT and type(receipt) is Receipt
        assert receipt.at.tzinfo is not None
        assert got == EXTRA and type(got["k"][1][1]) is Color
    assert result == RECEIPT and type(result) is Receipt and type(result.colors) is tuple


def test_unserializable_input_fails_start_and_writes_nothing(db_path):
    app = ld.App(db_path)

    @app.workflow(name="wf")
    def wf(thing: object) -> None:
        pass

    with app:
        with pytest.raises(ld.SerializationError, match="wf") as info:
            app.start(wf, object(), workflow_id="never")
        assert isinstance(info.value, TypeError)
        with pytest.raises(ld.SerializationError):
            app.start(wf, thing=lambda: 1)
        assert app.list_workflows() == []
        with pytest.raises(ld.WorkflowNotFoundError):
            app.handle("never")


def _build_bad_output(path: str, counts: Counter[str], value_factory, **options):
    app = ld.App(path, app_version="v1", **options)

    @app.step(name="make_value")
    def make_value() -> object:
        counts["make_value"] += 1
        return value_factory()

    @app.workflow(name="wf")
    def wf() -> str:
        counts["body"] += 1
        make_value()
        return "unreachable"

    return app, wf


@pytest.mark.parametrize(
    ("factory", "options", "pattern"),
    [
        (object, {}, "cannot serialize"),
        (lambda: {"a": [1, threading.Lock()]}, {}, "cannot serialize"),
        (lambda: "x" * 5000, {"max_payload_bytes": 1000}, "limit"),
    ],
    ids=["object", "lock-inside", "oversized"],
)
def test_unserializable_step_output_fails_the_workflow_once(db_path, factory, options, pattern):
    counts: Counter[str] = Counter()
    app, wf = _build_bad_output(db_path, counts, factory, **options)
    with app:
        handle = app.start(wf, workflow_id="bad-out")
        with pytest.raises(ld.SerializationError, match=pattern) as info:
            handle.result(timeout=30)
        assert "step 0" in str(info.value) and "make_value" in str(info.value)
        assert handle.status() is ld.Status.FAILED
        [row] = app.steps("bad-out")
        assert row.error is not None and row.error.startswith("litedurable.SerializationError: ")
        assert row.output is None
    assert counts == {"make_value": 1, "body": 1}

    app, wf = _build_bad_output(db_path, counts, factory, **options)
    with app:
        with pytest.raises(ld.SerializationError):
            app.handle("bad-out").result(timeout=30)
        assert app.handle("bad-out").status() is ld.Status.FAILED
    assert counts == {"make_value": 1, "body": 1}


def test_oversized_input_and_result(db_path):
    app = ld.App(db_path, max_payload_bytes=1000)

    @app.workflow(name="echo")
    def echo(text: str) -> str:
        return text * 10

    with app:
        with pytest.raises(ld.SerializationError, match="limit"):
            app.start(echo, "y" * 2000)
        assert app.list_workflows() == []
        with pytest.raises(ld.SerializationError, match="limit"):
            app.run(echo, "z" * 200, workflow_id="big-result")
        assert app.handle("big-result").status() is ld.Status.FAILED


# -- waiting and reading --------------------------------------------------------------------


def test_result_timeout_then_result(db_path):
    app = ld.App(db_path)
    gate = threading.Event()

    @app.step(name="wait_for_gate")
    def wait_for_gate() -> str:
        assert gate.wait(30)
        return "opened"

    @app.workflow(name="wf")
    def wf() -> str:
        return wait_for_gate()

    with app:
        handle = app.start(wf, workflow_id="slow")
        with pytest.raises(ld.WaitTimeoutError, match="slow") as info:
            handle.result(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(ld.WaitTimeoutError):
            handle.result(timeout=timedelta(milliseconds=10))
        assert handle.status() is ld.Status.PENDING
        gate.set()
        assert handle.result(timeout=30) == "opened"
        assert handle.status() is ld.Status.SUCCEEDED


def test_unknown_handle(db_path):
    with ld.App(db_path) as app:
        with pytest.raises(ld.WorkflowNotFoundError, match="nope") as info:
            app.handle("nope")
        assert isinstance(info.value, LookupError)
        with pytest.raises(ld.WorkflowNotFoundError):
            app.steps("nope")
        with pytest.raises(ld.WorkflowNotFoundError):
            app.cancel("nope")


def test_status_through_a_life(db_path):
    app = ld.App(db_path)
    gate = threading.Event()
    entered = threading.Event()

    @app.step(name="blocker")
    def blocker() -> None:
        entered.set()
        assert gate.wait(30)

    @app.workflow(name="ok")
    def ok() -> None:
        blocker()

    @app.workflow(name="boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with app:
        handle = app.start(ok, workflow_id="life")
        assert entered.wait(30)
        status = handle.status()
        assert status is ld.Status.PENDING and isinstance(status, ld.Status)
        gate.set()
        handle.result(timeout=30)
        assert handle.status() is ld.Status.SUCCEEDED
        with pytest.raises(RuntimeError):
            app.run(boom, workflow_id="dies")
        assert app.handle("dies").status() == "failed"


def test_cancel_a_pending_workflow(db_path):
    app = ld.App(db_path)
    gate = threading.Event()
    entered = threading.Event()

    @app.step(name="blocker")
    def blocker() -> None:
        entered.set()
        assert gate.wait(30)

    @app.workflow(name="wf")
    def wf() -> None:
        blocker()

    with app:
        handle = app.start(wf, workflow_id="to-cancel")
        assert entered.wait(30)
        handle.cancel()
        assert handle.status() is ld.Status.CANCELLED
        with pytest.raises(ld.WorkflowCancelledError):
            handle.result(timeout=30)
        gate.set()


def test_list_workflows_filters(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock, app_version="v7")

    @app.workflow(name="good")
    def good() -> int:
        return 1

    @app.workflow(name="bad")
    def bad() -> int:
        raise ValueError("nope")

    with app:
        for wid, wf in (("a", good), ("b", bad), ("c", good)):
            handle = app.start(wf, workflow_id=wid)
            with pytest.raises(ValueError) if wf is bad else contextlib.nullcontext():
                handle.result(timeout=30)
            clock.advance(10)

        def ids(**filters) -> list[str]:
            return [w.workflow_id for w in app.list_workflows(**filters)]

        assert ids() == ["c", "b", "a"]  # newest first
        assert ids(status="failed") == ["b"]
        assert ids(status=ld.Status.SUCCEEDED) == ["c", "a"]
        assert ids(status=ld.Status.PENDING) == []
        assert ids(name="good") == ["c", "a"]
        assert ids(name="good", status="failed") == []
        assert ids(limit=2) == ["c", "b"]
        assert ids(limit=1, offset=1) == ["b"]
        assert ids(app_version="v7") == ["c", "b", "a"]
        assert ids(app_version="other") == []
        with pytest.raises(ValueError):
            app.list_workflows(status="no-such-status")

        by_id = {w.workflow_id: w for w in app.list_workflows()}
    a, b = by_id["a"], by_id["b"]
    assert isinstance(a, ld.WorkflowInfo)
    assert (a.name, a.status, a.app_version, a.parent_id, a.error) == (
        "good",
        ld.Status.SUCCEEDED,
        "v7",
        None,
        None,
    )
    assert a.created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert by_id["c"].created_at == a.created_at + timedelta(seconds=20)
    assert b.status is ld.Status.FAILED and b.error == "ValueError: nope"


def test_steps_view(db_path):
    clock = FakeClock()
    app = ld.App(db_path, clock=clock)

    @app.step(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.step(name="fail")
    def fail() -> None:
        raise ValueError("bad input")

    @app.workflow(name="wf")
    def wf() -> int:
        total = add(1, 2)  # 0
        a = ld.go(add, 10, 20)  # 1
        timer = ld.after(3600)  # 2
        winner = ld.select([a, timer])  # 3
        with contextlib.suppress(ValueError):
            fail()  # 4
        ld.sleep(0)  # 5
        return total + winner.result()

    with app:
        assert app.run(wf, workflow_id="s") == 33
        steps = app.steps("s")
    assert [(s.step, s.kind, s.name) for s in steps] == [
        (0, "step", "add"),
        (1, "go", "add"),
        (2, "after", "after"),
        (3, "select", "select"),
        (4, "step", "fail"),
        (5, "sleep", "sleep"),
    ]
    assert all(isinstance(s, ld.StepInfo) and s.workflow_id == "s" for s in steps)
    assert steps[0].output == 3 and steps[0].error is None
    assert steps[1].output == 30
    assert steps[3].candidates == [1, 2] and steps[3].winner == 0
    assert steps[4].error == "ValueError: bad input" and steps[4].output is None
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert steps[2].output == start.timestamp() + 3600  # the recorded deadline
    assert all(s.started_at == start and s.finished_at == start for s in steps)
