"""Workflow and step definitions, by name, for one App.

A name is what the journal records and what replay checks, so names are unique per App and
default to the function's qualified name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._codec import return_hint
from ._errors import UsageError
from ._types import Retry

__all__ = ["ENQUEUE_KEYWORDS", "START_KEYWORDS", "Registry", "StepDef", "WorkflowDef",
           "callable_name", "enqueue_keyword_clash", "refuse_async"]

START_KEYWORDS = ("workflow_id", "timeout", "detached")
"""Keywords ``app.start``/``app.run`` consume; a workflow parameter of these names is refused."""

ENQUEUE_KEYWORDS = ("priority", "dedup_key", "partition_key")
"""Keywords ``Queue.enqueue`` consumes besides those: a workflow with a parameter of one of
these names is refused by ``enqueue`` (``enqueue_keyword_clash``)."""


def callable_name(fn: Callable[..., Any]) -> str:
    """A stable, readable name for any callable: a step's name unless one is given."""
    named = getattr(fn, "__litedurable_name__", None)
    if isinstance(named, str):
        return named
    if isinstance(fn, functools.partial):
        return callable_name(fn.func)
    qualname = getattr(fn, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    return type(fn).__qualname__


# The return hint of a definition not yet asked for it.
_UNRESOLVED: Any = object()


@dataclass(frozen=True, slots=True)
class StepDef:
    """A function decorated with ``@app.step()``."""

    name: str
    fn: Callable[..., Any]
    retry: Retry | None
    _hint: Any = field(default=_UNRESOLVED, init=False, repr=False, compare=False)

    @property
    def return_hint(self) -> Any:
        """The return annotation, resolved at first use (see ``_codec.return_hint``).

        Not at decoration: under ``from __future__ import annotations`` the type may be
        defined below the function. A hint that cannot be resolved then is a ``UsageError``.
        """
        return _resolved_hint(self)


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A function decorated with ``@app.workflow()``."""

    name: str
    fn: Callable[..., Any]
    max_recovery_attempts: int | None
    timeout: float | None = None
    """Seconds from start to the workflow's deadline (``@app.workflow(timeout=...)``)."""
    _hint: Any = field(default=_UNRESOLVED, init=False, repr=False, compare=False)

    @property
    def return_hint(self) -> Any:
        """The return annotation, resolved at first use (as ``StepDef.return_hint``)."""
        return _resolved_hint(self)


def _resolved_hint(definition: StepDef | WorkflowDef) -> Any:
    hint = definition._hint
    if hint is _UNRESOLVED:
        hint = return_hint(definition.fn)
        object.__setattr__(definition, "_hint", hint)  # frozen: a cache, not a change
    return hint


class Registry:
    """The workflows and steps one App knows, by name."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDef] = {}
        self.steps: dict[str, StepDef] = {}

    def add_workflow(
        self,
        fn: Callable[..., Any],
        name: str | None,
        max_recovery_attempts: int | None,
        timeout: float | None = None,
    ) -> WorkflowDef:
        refuse_async(fn, "workflow")
        _check_start_keywords(fn)
        definition = WorkflowDef(
            name or callable_name(fn), fn, max_recovery_attempts, timeout
        )
        _check_name(definition.name, "workflow")
        if definition.name in self.workflows:
            raise UsageError(
                f"a workflow named {definition.name!r} is already registered on this App; give "
                "one of them another name with @app.workflow(name=...)"
            )
        self.workflows[definition.name] = definition
        return definition

    def add_step(self, fn: Callable[..., Any], name: str | None, retry: Retry | None) -> StepDef:
        refuse_async(fn, "step")
        definition = StepDef(name or callable_name(fn), fn, retry)
        _check_name(definition.name, "step")
        if definition.name in self.steps:
            raise UsageError(
                f"a step named {definition.name!r} is already registered on this App; give one "
                "of them another name with @app.step(name=...)"
            )
        self.steps[definition.name] = definition
        return definition


def refuse_async(fn: Callable[..., Any], what: str) -> None:
    """Refuse an ``async def`` (or async generator, or async ``__call__``) as a ``what``.

    Calling one returns a coroutine, which is neither run nor serializable, so every run would
    fail later with a puzzling SerializationError; say it here, where the function is given.
    """
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    call = None if inspect.isroutine(target) or not callable(target) else type(target).__call__
    if any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
           for f in (target, call) if f is not None):
        raise UsageError(
            f"{callable_name(fn)} is an async function and cannot be a litedurable {what}: "
            "asyncio support is planned; until then write it as a plain def (call async "
            "libraries from it with asyncio.run(...) if you must)"
        )


def _check_start_keywords(fn: Callable[..., Any]) -> None:
    """Refuse a workflow parameter that ``app.start`` would take for itself.

    ``app.start(wf, x, timeout=5)`` consumes ``timeout``; a workflow parameter of that name
    would silently never receive it, so the collision is an error at decoration time.
    """
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): nothing to check
        return
    for parameter in parameters:
        if parameter.name in START_KEYWORDS and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
        ):
            raise UsageError(
                f"workflow {callable_name(fn)} has a parameter named {parameter.name!r}, but "
                f"app.start() and app.run() take {', '.join(START_KEYWORDS)} for themselves, so "
                f"it would never receive that argument; rename the parameter (for example "
                f"{parameter.name + '_'!r})"
            )


@functools.lru_cache(maxsize=1024)
def enqueue_keyword_clash(fn: Callable[..., Any]) -> str | None:
    """The first parameter of ``fn`` that ``Queue.enqueue`` would take for itself, if any.

    ``q.enqueue(wf, "x", priority=5)`` consumes ``priority``: a workflow parameter of that
    name would silently get its default (or be missing) instead.
    """
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): nothing to check
        return None
    for parameter in parameters:
        if parameter.name in ENQUEUE_KEYWORDS and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
        ):
            return parameter.name
    return None


def _check_name(name: object, what: str) -> None:
    ok = isinstance(name, str) and bool(name) and "\0" not in name
    if ok and isinstance(name, str):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: it could never be stored
            ok = False
    if not ok:
        raise UsageError(
            f"a {what} name must be a non-empty text string without NUL or lone surrogates, "
            f"got {name!r}"
        )
