"""The one ambient variable: which workflow run (or step body) the current code belongs to.

``go``, ``select``, ``sleep`` and friends find their workflow here instead of taking it as an
argument. The variable holds a ``Scope``; the runtime defines the concrete kinds (a workflow
run, a step body) as subclasses, so this module stays below it in the layering.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

__all__ = ["Scope", "current", "enter", "leave"]


class Scope:
    """Base of everything the context can hold; ``workflow_id`` is known in all of them."""

    __slots__ = ("workflow_id",)

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id


_current: ContextVar[Scope | None] = ContextVar("litedurable_scope", default=None)


def current() -> Scope | None:
    """The innermost scope of the calling thread/context, or None outside any workflow."""
    return _current.get()


def enter(scope: Scope | None) -> Token[Scope | None]:
    """Make ``scope`` current; pass the token to ``leave`` to restore the previous one."""
    return _current.set(scope)


def leave(token: Token[Scope | None]) -> None:
    _current.reset(token)
