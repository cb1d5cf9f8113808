"""Workflow and step definitions, by name, for one App.

A name is what the journal records and what replay checks, so names are unique per App and
default to the function's qualified name. The default app version is a hash of the registered
workflows' source: pending workflows are recovered only by code that can replay them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._codec import return_hint
from ._errors import UsageError
from ._types import Retry

__all__ = ["Registry", "StepDef", "WorkflowDef", "callable_name"]


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
        definition = StepDef(name or callable_name(fn), fn, retry)
        _check_name(definition.name, "step")
        if definition.name in self.steps:
            raise UsageError(
                f"a step named {definition.name!r} is already registered on this App; give one "
                "of them another name with @app.step(name=...)"
            )
        self.steps[definition.name] = definition
        return definition

    def version(self) -> str:
        """A short hash of every registered workflow's name and source code."""
        digest = hashlib.sha256()
        for name in sorted(self.workflows):
            fn = self.workflows[name].fn
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):
                code = getattr(fn, "__code__", None)
                source = repr(code.co_code) if code is not None else name
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        return digest.hexdigest()[:16]


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name:
        raise UsageError(f"a {what} name must be a non-empty string without NUL, got {name!r}")
