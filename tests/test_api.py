"""The public surface: names, exception tree, Status, decorator misuse, calls outside a workflow."""

from __future__ import annotations

import enum
import pickle

import pytest

import litedurable as ld
import litedurable.testing
from litedurable import _errors

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

EXPECTED_ALL = [
    "App",
    "AppClosedError",
    "CATCH_UP_LIMIT",
    "ChildHandle",
    "Clock",
    "DurableError",
    "EventNotSetError",
    "Future",
    "Handle",
    "InvalidIdError",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "JournalReadOnlyError",
    "JournalVersionError",
    "NonDeterminismError",
    "NotInWorkflowError",
    "OwnershipLostError",
    "Promise",
    "PromiseNotFoundError",
    "PromiseRejectedError",
    "Queue",
    "QueueArgumentError",
    "QueueDeduplicatedError",
    "QueueInfo",
    "RecordedError",
    "Retry",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SerializationError",
    "Status",
    "StepCancelledError",
    "StepInfo",
    "SystemClock",
    "UsageError",
    "WaitTimeoutError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowExhaustedError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowTimedOutError",
    "after",
    "as_completed",
    "cancelled",
    "close_stream",
    "event",
    "get_event",
    "go",
    "idempotency_key",
    "is_replaying",
    "logger",
    "message",
    "named",
    "now",
    "promise",
    "random",
    "recv",
    "run",
    "select",
    "send",
    "set_event",
    "sleep",
    "uuid4",
    "wait_all",
    "workflow_id",
    "write_stream",
]

EXCEPTIONS = [getattr(ld, name) for name in _errors.__all__]


def test_all_is_pinned():
    assert sorted(ld.__all__) == EXPECTED_ALL
    assert len(set(ld.__all__)) == len(ld.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_public_name_importable(name):
    namespace: dict[str, object] = {}
    exec(f"from litedurable import {name}", namespace)
    assert namespace[name] is getattr(ld, name)


def test_public_classes_report_public_module():
    for name in ("App", "Handle", "Future", "Retry", "Status", "DurableError", "UsageError"):
        assert getattr(ld, name).__module__ == "litedurable", name


def test_design_names_exist():
    for name in (
        "launch",
        "close",
        "start",
        "run",
        "handle",
        "list_workflows",
        "steps",
        "cancel",
        "resume",
        "fork",
        "workflow",
        "step",
    ):
        assert callable(getattr(ld.App, name)), name
    for name in ("result", "status", "cancel"):
        assert callable(getattr(ld.Handle, name)), name
    for name in ("result", "done", "exception", "cancel"):
        assert callable(getattr(ld.Future, name)), name
    assert callable(litedurable.testing.crash_at)
    assert callable(litedurable.testing.crash_test)
    assert callable(litedurable.testing.FakeClock)


def test_every_exception_is_public_and_a_durable_error():
    assert set(_errors.__all__) <= set(ld.__all__)
    for cls in EXCEPTIONS:
        assert issubclass(cls, ld.DurableError), cls
        assert issubclass(cls, Exception), cls
    assert issubclass(ld.DurableError, Exception)


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (ld.WorkflowNotFoundError, LookupError),
        (ld.WaitTimeoutError, TimeoutError),
        (ld.SerializationError, TypeError),
        (ld.WorkflowConflictError, ValueError),
        (ld.InvalidIdError, ValueError),
        (ld.UsageError, TypeError),
        (ld.NotInWorkflowError, RuntimeError),
        (ld.JournalCorruptError, ld.JournalError),
        (ld.JournalVersionError, ld.JournalError),
        (ld.JournalLockedError, ld.JournalError),
        (ld.JournalFullError, ld.JournalError),
        (ld.JournalReadOnlyError, ld.JournalError),
        (ld.OwnershipLostError, ld.JournalError),
    ],
)
def test_exception_bases(cls, base):
    assert issubclass(cls, base)
    assert issubclass(cls, ld.DurableError)


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_exception_pickles(cls):
    exc = cls(f"something about {cls.__name__}")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert back.args == exc.args
    assert str(back) == str(exc)
    assert back.__dict__ == exc.__dict__


def test_exception_extra_fields_pickle():
    exc = ld.NonDeterminismError(
        "changed", workflow_id="wf-1", step=3, recorded="step a", called="step b"
    )
    back = pickle.loads(pickle.dumps(exc))
    assert (back.workflow_id, back.step, back.recorded, back.called) == (
        "wf-1",
        3,
        "step a",
        "step b",
    )
    rec = pickle.loads(pickle.dumps(ld.RecordedError("X: y", type_name="m.X", traceback="tb")))
    assert (rec.type_name, rec.traceback, str(rec)) == ("m.X", "tb", "X: y")


def test_status_is_str_enum_with_the_full_set():
    assert issubclass(ld.Status, enum.StrEnum)
    assert [s.value for s in ld.Status] == [
        "pending",
        "succeeded",
        "failed",
        "cancelled",
        "nondeterministic",
        "exhausted",
        "enqueued",
    ]
    assert ld.Status("failed") is ld.Status.FAILED
    assert ld.Status.SUCCEEDED == "succeeded"
    assert not ld.Status.PENDING.is_terminal and not ld.Status.ENQUEUED.is_terminal
    assert all(s.is_terminal for s in ld.Status
               if s not in (ld.Status.PENDING, ld.Status.ENQUEUED))


def test_retry_defaults_and_validation():
    r = ld.Retry()
    assert (r.max_attempts, r.initial, r.backoff, r.max_interval, r.retry_on) == (
        3,
        0.1,
        2.0,
        10.0,
        (Exception,),
    )
    assert [r.delay(k) for k in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert ld.Retry(initial=4, max_interval=5).delay(3) == 5
    with pytest.raises(ValueError):
        ld.Retry(max_attempts=0)
    with pytest.raises(ValueError):
        ld.Retry(backoff=0.5)


# -- decorator misuse ------------------------------------------------------------------------


def test_workflow_decorator_without_parentheses(db_path):
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError, match=r"@app\.workflow\(\)"):

        @app.workflow
        def wf() -> None:
            pass


def test_step_decorator_without_parentheses(db_path):
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError, match=r"@app\.step\(\)"):

        @app.step
        def st() -> None:
            pass


def test_duplicate_workflow_name(db_path):
    app = ld.App(db_path)

    @app.workflow(name="dup")
    def one() -> None:
        pass

    with pytest.raises(ld.UsageError, match="dup"):

        @app.workflow(name="dup")
        def two() -> None:
            pass


def test_duplicate_step_name(db_path):
    app = ld.App(db_path)

    @app.step(name="dup")
    def one() -> None:
        pass

    with pytest.raises(ld.UsageError, match="dup"):

        @app.step(name="dup")
        def two() -> None:
            pass


def test_same_names_on_two_apps_are_independent(new_db):
    first, second = ld.App(new_db("a")), ld.App(new_db("b"))
    for app in (first, second):

        @app.workflow(name="wf")
        def wf() -> int:
            return 1

        @app.step(name="st")
        def st() -> int:
            return 1


def test_retries_must_be_a_retry(db_path):
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError):
        app.step(retries=3)  # type: ignore[arg-type]


def test_starting_an_undecorated_function(db_path):
    def plain() -> None:
        pass

    with ld.App(db_path) as app, pytest.raises(ld.UsageError, match=r"@app\.workflow"):
        app.start(plain)


def test_app_not_launched(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def wf() -> None:
        pass

    with pytest.raises(ld.AppClosedError):
        app.start(wf)
    with pytest.raises(ld.AppClosedError):
        app.list_workflows()


# -- outside a workflow ---------------------------------------------------------------------


def _nothing() -> int:
    return 1


OUTSIDE_CALLS = {
    "go": lambda: ld.go(_nothing),
    "select": lambda: ld.select([]),
    "sleep": lambda: ld.sleep(0),
    "now": ld.now,
    "after": lambda: ld.after(1),
    "as_completed": lambda: ld.as_completed([]),
    "uuid4": ld.uuid4,
    "random": ld.random,
    "workflow_id": ld.workflow_id,
    "wait_all": lambda: ld.wait_all([]),
    "idempotency_key": ld.idempotency_key,
    "cancelled": ld.cancelled,
}


@pytest.mark.parametrize("name", sorted(OUTSIDE_CALLS))
def test_outside_a_workflow_raises_not_in_workflow(name):
    with pytest.raises(ld.NotInWorkflowError, match=r"inside a (workflow|step)") as info:
        OUTSIDE_CALLS[name]()
    assert isinstance(info.value, ld.DurableError)
    assert isinstance(info.value, RuntimeError)


def test_step_and_run_outside_a_workflow_are_plain_calls(db_path):
    app = ld.App(db_path)
    calls: list[tuple[int, int]] = []

    @app.step()
    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    assert add(2, 3) == 5  # not launched: no journal needed
    assert ld.run(add, 4, 5) == 9
    assert ld.run(lambda x: x * 2, 21) == 42
    assert calls == [(2, 3), (4, 5)]
    assert add.__name__ == "add"  # functools.wraps keeps the signature's metadata
    with app:
        assert add(1, 1) == 2
        assert app.list_workflows() == []


def test_idempotency_key_and_workflow_id_inside_steps(db_path):
    app = ld.App(db_path)
    seen: list[tuple[str, str]] = []

    @app.step(name="key")
    def key() -> str:
        seen.append((ld.workflow_id(), ld.idempotency_key()))
        return ld.idempotency_key()

    @app.workflow(name="wf")
    def wf() -> list[str]:
        ld.now()  # takes step 0
        inline = key()  # step 1
        pooled = ld.go(key)  # step 2
        in_run = ld.run(key)  # step 3
        return [inline, pooled.result(), in_run]

    with app:
        assert app.run(wf, workflow_id="order-7") == ["order-7:1", "order-7:2", "order-7:3"]
    assert sorted(seen) == [("order-7", f"order-7:{n}") for n in (1, 2, 3)]


def test_workflow_only_calls_inside_a_step_are_usage_errors(db_path):
    app = ld.App(db_path)

    @app.step(name="bad")
    def bad() -> str:
        try:
            ld.go(_nothing)
        except ld.UsageError as exc:
            return str(exc)
        return "no error"

    @app.workflow(name="wf")
    def wf() -> str:
        return bad()

    with app:
        message = app.run(wf)
    assert "step" in message and "workflow function" in message

