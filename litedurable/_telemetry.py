"""Tracing: an OpenTelemetry span per workflow run and per step execution (``litedurable[otel]``).

Opt-in, as in DBOS (tracing is set in its config) and Temporal (a ``TracingInterceptor`` is
added to the worker): ``ld.App(path, tracing=True)`` traces through the global
``TracerProvider`` (``opentelemetry.trace.set_tracer_provider``), ``tracing=provider``
through the one given. Off by default, even when OpenTelemetry is installed and configured:
an App someone else's process embeds makes no spans it was not asked for. ``tracing=`` with
OpenTelemetry missing fails when the App is made (``pip install 'litedurable[otel]'``).

What is traced (all attribute names under ``litedurable.``):

* **a workflow run**: span ``workflow <name>``, one per time a run thread drives the
  workflow here (a workflow that suspends and is driven again, or is recovered, has several).
  Attributes ``workflow_id``, ``workflow_name``, ``run`` (the owner token of the App that
  ran it), ``parent_id`` (for a child), ``outcome`` (how this run ended: ``succeeded``,
  ``failed``, ``cancelled``, ``nondeterministic``, ``suspended``, ``closing``),
  ``replayed_steps`` and ``live_steps`` (journaled calls this run replayed, and made live).
  Status ERROR with the error for ``failed`` and ``nondeterministic`` (an engine failure
  raised out of the run is recorded as an exception). A child workflow's run span is a child
  of its parent's latest run span when the parent ran in this App; a later run of the same
  workflow links to the span of the run before it.
* **a step execution** (inline or ``go``, run live): span ``step <name>``, a child of its
  workflow's run span (passed explicitly: a ``go`` step runs on a pool thread), current while
  the body runs so spans the body makes nest under it. Attributes ``workflow_id``, ``step``
  (its number in the journal), ``step_name``, ``kind`` (``step``/``go``), ``attempt``
  (attempts made, 1 without retries), ``replayed`` (False), ``run``. Each failed attempt
  that was retried is an event ``attempt failed``; a step whose outcome is an error has
  status ERROR and the exception recorded.
* **a replayed journaled call** (a step, a sleep, a child start...): no span of its own (a
  replayed step runs nothing, and a long workflow replays thousands of them), but an event
  ``replayed`` on the run span with ``step``, ``kind``, ``name`` and ``replayed`` (True).

Spans measure real time, not the App's injected clock. The engine pays one attribute check
per step and per run when tracing is off (``Steps.tracer``, ``Runtime.tracer``), and this
module is imported without OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import UsageError

try:
    from opentelemetry import trace as otel
except ImportError:  # the extra is not installed: tracing= is refused, nothing else changes
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["TERMINAL_ENDINGS", "Tracer", "available", "check_tracing", "replayed"]

TERMINAL_ENDINGS = frozenset({"succeeded", "failed", "cancelled", "nondeterministic"})
"""Run endings after which the workflow has no further run here."""

_ERROR_ENDINGS = frozenset({"failed", "nondeterministic"})


class _Run(Protocol):
    """What a run span reads of a workflow run (``_run.WorkflowRun``, a higher layer)."""

    workflow_id: str
    next_step: int
    recorded: dict[int, Any]
    span: Any

    @property
    def row(self) -> Any: ...


class _Task(Protocol):
    """What a step span reads of a step execution (``_steps.StepTask``)."""

    workflow_id: str
    step: int
    kind: str
    name: str
    attempts: list[tuple[float, float, str]] | None


def available() -> bool:
    """Whether OpenTelemetry (the ``otel`` extra) can be imported."""
    return otel is not None


def check_tracing(tracing: object) -> None:
    """Refuse an ``App(tracing=...)`` that cannot work, where the App is made."""
    if tracing is False or tracing is None:
        return
    if otel is None:
        raise UsageError(
            "App(tracing=...) needs OpenTelemetry, which is not installed: "
            "pip install 'litedurable[otel]'"
        )
    if tracing is not True and not callable(getattr(tracing, "get_tracer", None)):
        raise UsageError(
            "App(tracing=...) takes True (the global TracerProvider), False, or an "
            f"opentelemetry TracerProvider, not {type(tracing).__name__}"
        )


class Tracer:
    """One launched App's spans. Made only when tracing is on (OpenTelemetry imported).

    ``_latest`` holds, by workflow id, the span of the latest run of each workflow driven
    here that has not ended: its steps (on any thread) and its children's runs are parented
    to it, and its next run links to it. Plain dict operations, atomic under the GIL: run
    threads write it, step threads read it.
    """

    def __init__(self, tracing: bool | TracerProvider, owner: str) -> None:
        assert otel is not None
        provider = otel.get_tracer_provider() if tracing is True else tracing
        try:
            version: str | None = metadata.version("litedurable")
        except metadata.PackageNotFoundError:  # run from a checkout that is not installed
            version = None
        self._tracer = provider.get_tracer("litedurable", version)  # type: ignore[union-attr]
        self._owner = owner
        self._latest: dict[str, Span] = {}

    def run_workflow(self, run: _Run,
                     body: Callable[[], tuple[str, BaseException | None]]) -> None:
        """Call ``body`` (the run) inside its span; record how it ended."""
        assert otel is not None
        row = run.row
        wid = run.workflow_id
        parent = self._latest.get(row.parent_id) if row.parent_id is not None else None
        before = self._latest.get(wid)
        links = [otel.Link(before.get_span_context())] if before is not None else None
        attributes: dict[str, str] = {
            "litedurable.workflow_id": wid,
            "litedurable.workflow_name": row.name,
            "litedurable.run": self._owner,
        }
        if row.parent_id is not None:
            attributes["litedurable.parent_id"] = row.parent_id
        ended = False
        with self._tracer.start_as_current_span(
            f"workflow {row.name}",
            context=otel.set_span_in_context(parent) if parent is not None else None,
            links=links, attributes=attributes,
        ) as span:
            self._latest[wid] = run.span = span
            try:
                ending, error = body()
                ended = ending in TERMINAL_ENDINGS
            except BaseException:
                ended = True  # an engine failure: this run is over, whatever comes next
                raise
            finally:
                replayed = sum(1 for step in run.recorded if step < run.next_step)
                span.set_attribute("litedurable.replayed_steps", replayed)
                span.set_attribute("litedurable.live_steps", run.next_step - replayed)
                if ended and self._latest.get(wid) is span:
                    del self._latest[wid]
            span.set_attribute("litedurable.outcome", ending)
            if ending in _ERROR_ENDINGS and error is not None:
                span.record_exception(error)
                span.set_status(otel.Status(otel.StatusCode.ERROR, _describe(error)))

    @contextmanager
    def step(self, task: _Task) -> Iterator[Callable[[BaseException | None], None]]:
        """A live step execution's span, current inside; yields ``done(error)`` to call with
        the step's recorded outcome."""
        assert otel is not None
        run_span = self._latest.get(task.workflow_id)
        with self._tracer.start_as_current_span(
            f"step {task.name}",
            context=otel.set_span_in_context(run_span) if run_span is not None else None,
            attributes={
                "litedurable.workflow_id": task.workflow_id,
                "litedurable.step": task.step,
                "litedurable.step_name": task.name,
                "litedurable.kind": str(task.kind),
                "litedurable.replayed": False,
                "litedurable.run": self._owner,
            },
        ) as span:

            def done(error: BaseException | None) -> None:
                assert otel is not None
                failed = task.attempts or ()
                for number, (_, _, text) in enumerate(failed, 1):
                    span.add_event("attempt failed", {"litedurable.attempt": number,
                                                      "litedurable.error": text})
                span.set_attribute("litedurable.attempt", len(failed) + 1)
                if error is not None:
                    span.record_exception(error)
                    span.set_status(otel.Status(otel.StatusCode.ERROR, _describe(error)))

            yield done


def replayed(span: Span, step: int, kind: str, name: str) -> None:
    """A journaled call of the run ``span`` traces was replayed: an event on that span."""
    span.add_event("replayed", {
        "litedurable.step": step, "litedurable.kind": str(kind), "litedurable.name": name,
        "litedurable.replayed": True,
    })


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
