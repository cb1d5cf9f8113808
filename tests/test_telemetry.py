"""Tracing (``App(tracing=...)``, ``litedurable._telemetry``): spans for workflow runs and steps.

Every test hands the App a ``TracerProvider`` of its own with an in-memory exporter, so no
global OpenTelemetry state is touched and the tests can run in any order.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from support import child_env, eventually

import litedurable as ld
from litedurable import _telemetry

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")

StatusCode = trace.StatusCode


@pytest.fixture
def exporter() -> Iterator[Any]:
    exp = in_memory.InMemorySpanExporter()
    yield exp
    exp.clear()


@pytest.fixture
def provider(exporter: Any) -> Iterator[Any]:
    prov = sdk_trace.TracerProvider()
    prov.add_span_processor(export.SimpleSpanProcessor(exporter))
    yield prov
    prov.shutdown()


def spans(exporter: Any, prefix: str = "") -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def one(found: Sequence[Any], name: str) -> Any:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, [s.name for s in found]
    return named[0]


def test_inline_steps_are_children_of_the_workflow_run(db_path: str, exporter: Any,
                                                       provider: Any) -> None:
    with ld.App(db_path, tracing=provider) as app:

        @app.step(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        @app.workflow(name="total")
        def total(n: int) -> int:
            return add(add(n, 1), 2)

        assert app.run(total, 10, workflow_id="t-1") == 13
        owner = app._lease.owner if app._lease else None

    run = one(spans(exporter), "workflow total")
    steps = spans(exporter, "step ")
    assert [s.name for s in steps] == ["step add", "step add"]
    assert dict(run.attributes) == {
        "litedurable.workflow_id": "t-1", "litedurable.workflow_name": "total",
        "litedurable.run": owner, "litedurable.outcome": "succeeded",
        "litedurable.replayed_steps": 0, "litedurable.live_steps": 2,
    }
    assert run.status.status_code == StatusCode.UNSET
    assert run.parent is None
    for number, step in enumerate(steps):
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        assert step.context.trace_id == run.context.trace_id
        assert dict(step.attributes) == {
            "litedurable.workflow_id": "t-1", "litedurable.step": number,
            "litedurable.step_name": "add", "litedurable.kind": "step",
            "litedurable.replayed": False, "litedurable.run": owner,
            "litedurable.attempt": 1,
        }


def test_a_go_step_on_the_pool_is_parented_to_its_run(db_path: str, exporter: Any,
                                                      provider: Any) -> None:
    threads: list[str] = []
    with ld.App(db_path, tracing=provider) as app:

        @app.workflow(name="fan")
        def fan() -> list[int]:
            def body(x: int) -> int:
                threads.append(threading.current_thread().name)
                # The step's span is current in its body: spans the body makes nest under it.
                with trace.get_tracer("user", tracer_provider=provider).start_as_current_span(
                        "user work"):
                    return x * 2

            futures = [ld.go(body, x) for x in (1, 2)]
            return [f.result() for f in futures]

        assert app.run(fan) == [2, 4]

    assert all(t.startswith("litedurable-step") for t in threads)
    run = one(spans(exporter), "workflow fan")
    steps = spans(exporter, "step ")
    assert len(steps) == 2
    for step in steps:
        assert step.parent.span_id == run.context.span_id
        assert step.attributes["litedurable.kind"] == "go"
    user = spans(exporter, "user work")
    assert len(user) == 2
    assert {u.parent.span_id for u in user} == {s.context.span_id for s in steps}


def test_a_retried_step_counts_its_attempts(db_path: str, exporter: Any,
                                            provider: Any) -> None:
    calls = []
    with ld.App(db_path, tracing=provider) as app:

        @app.step(name="flaky", retries=ld.Retry(max_attempts=5, initial=0))
        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError(f"try {len(calls)}")
            return "ok"

        @app.workflow(name="wf")
        def wf() -> str:
            return flaky()

        assert app.run(wf) == "ok"

    step = one(spans(exporter), "step flaky")
    assert step.attributes["litedurable.attempt"] == 3
    assert step.status.status_code == StatusCode.UNSET
    failed = [e for e in step.events if e.name == "attempt failed"]
    assert [(e.attributes["litedurable.attempt"], e.attributes["litedurable.error"])
            for e in failed] == [(1, "ConnectionError: try 1"), (2, "ConnectionError: try 2")]


def test_a_failed_step_and_workflow_have_error_status(db_path: str, exporter: Any,
                                                      provider: Any) -> None:
    with ld.App(db_path, tracing=provider) as app:

        @app.step(name="broken", retries=ld.Retry(max_attempts=2, initial=0))
        def broken() -> None:
            raise ValueError("no such order")

        @app.workflow(name="wf")
        def wf() -> None:
            broken()

        with pytest.raises(ValueError, match="no such order"):
            app.run(wf)

    step = one(spans(exporter), "step broken")
    assert step.status.status_code == StatusCode.ERROR
    assert step.status.description == "ValueError: no such order"
    assert step.attributes["litedurable.attempt"] == 2
    assert [e.attributes["exception.type"] for e in step.events
            if e.name == "exception"] == ["ValueError"]
    run = one(spans(exporter), "workflow wf")
    assert run.attributes["litedurable.outcome"] == "failed"
    assert run.status.status_code == StatusCode.ERROR


def test_a_child_workflow_run_is_a_child_of_its_parents_run(db_path: str, exporter: Any,
                                                            provider: Any) -> None:
    with ld.App(db_path, tracing=provider) as app:

        @app.step(name="work")
        def work(x: int) -> int:
            return x + 1

        @app.workflow(name="child")
        def child(x: int) -> int:
            return work(x)

        @app.workflow(name="parent")
        def parent() -> int:
            return app.start(child, 1, workflow_id="kid").result()

        assert app.run(parent, workflow_id="mom") == 2

    parent_span = one(spans(exporter), "workflow parent")
    child_span = one(spans(exporter), "workflow child")
    assert child_span.parent is not None
    assert child_span.parent.span_id == parent_span.context.span_id
    assert child_span.context.trace_id == parent_span.context.trace_id
    assert child_span.attributes["litedurable.parent_id"] == "mom"
    step = one(spans(exporter), "step work")
    assert step.parent.span_id == child_span.context.span_id


def test_a_resumed_run_links_to_the_run_before_and_marks_replayed_calls(
        db_path: str, exporter: Any, provider: Any) -> None:
    # suspend_after=0: the wait for the message unwinds the run at once (it suspends); the
    # message drives it again, and that run replays the step the first one ran.
    with ld.App(db_path, tracing=provider, suspend_after=0) as app:

        @app.step(name="first")
        def first() -> int:
            return 1

        @app.workflow(name="wf")
        def wf() -> int:
            return first() + ld.recv(topic="go", timeout=60)

        handle = app.start(wf, workflow_id="w")
        eventually(lambda: spans(exporter, "workflow "), "the first run's span")
        app.send("w", 41, topic="go")
        assert handle.result(timeout=30) == 42

    runs = spans(exporter, "workflow wf")
    assert len(runs) >= 2
    assert runs[0].attributes["litedurable.outcome"] == "suspended"
    assert runs[0].status.status_code == StatusCode.UNSET
    assert runs[-1].attributes["litedurable.outcome"] == "succeeded"
    assert runs[-1].links and runs[-1].links[0].context.span_id == runs[-2].context.span_id
    replayed = [e for e in runs[-1].events if e.name == "replayed"]
    assert replayed and dict(replayed[0].attributes) == {
        "litedurable.step": 0, "litedurable.kind": "step", "litedurable.name": "first",
        "litedurable.replayed": True,
    }
    assert runs[-1].attributes["litedurable.replayed_steps"] >= 1
    assert len(spans(exporter, "step first")) == 1  # replayed, not run again


def test_with_tracing_off_no_span_is_made(db_path: str, exporter: Any, provider: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with a global provider configured, an App without tracing= makes no span.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    with ld.App(db_path) as app:

        @app.step(name="add")
        def add(a: int) -> int:
            return a + 1

        @app.workflow(name="wf")
        def wf() -> int:
            return ld.go(add, add(1)).result()

        assert app.run(wf) == 3
        assert app._runtime is not None and app._runtime.tracer is None
    assert exporter.get_finished_spans() == ()


def test_tracing_true_uses_the_global_provider(db_path: str, exporter: Any, provider: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    with ld.App(db_path, tracing=True) as app:

        @app.workflow(name="wf")
        def wf() -> int:
            return 1

        assert app.run(wf) == 1
    assert [s.name for s in exporter.get_finished_spans()] == ["workflow wf"]


def test_bad_tracing_values_are_refused(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ld.UsageError, match="TracerProvider"):
        ld.App(db_path, tracing="yes")  # type: ignore[arg-type]
    monkeypatch.setattr(_telemetry, "otel", None)  # as if the otel extra were not installed
    with pytest.raises(ld.UsageError, match=r"litedurable\[otel\]"):
        ld.App(db_path, tracing=True)
    ld.App(db_path, tracing=False).close()  # off needs nothing


WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # the otel extra is not installed: its import fails
import litedurable as ld
from litedurable import _telemetry
assert not _telemetry.available()
with ld.App(sys.argv[1]) as app:
    @app.step(name="one")
    def one() -> int:
        return 1
    @app.workflow(name="wf")
    def wf() -> int:
        return one() + ld.go(one).result()
    print(app.run(wf))
try:
    ld.App(sys.argv[1], tracing=True)
except ld.UsageError as exc:
    print(exc)
"""


def test_without_opentelemetry_the_library_works_and_tracing_is_refused(db_path: str) -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_OTEL, db_path], capture_output=True,
                         text=True, timeout=120, check=True, env=child_env()).stdout
    assert out.splitlines() == [
        "2",
        "App(tracing=...) needs OpenTelemetry, which is not installed: "
        "pip install 'litedurable[otel]'",
    ]
