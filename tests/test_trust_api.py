"""Issue 12 ("Trust"), the API items: versions (17), static typing (18), reserved parameter
names (19), ``async def`` refusal (20), replay-aware logging (22)."""

from __future__ import annotations

import functools

import pytest

import litedurable as ld

# -- item 19: a workflow parameter that app.start would consume -----------------------------


@pytest.mark.parametrize("parameter", ["timeout", "workflow_id", "detached"])
def test_workflow_parameter_named_like_a_start_keyword_is_refused(db_path, parameter):
    """Issue 12 item 19: ``def wf(x, timeout)`` was silently given a deadline instead of its
    argument; now decorating it is a UsageError naming the function, the parameter and the fix."""
    app = ld.App(db_path)
    namespace: dict[str, object] = {}
    exec(f"def fetch(url, {parameter}=None):\n    return url\n", namespace)
    with pytest.raises(ld.UsageError) as info:
        app.workflow()(namespace["fetch"])  # type: ignore[arg-type]
    message = str(info.value)
    assert "fetch" in message and repr(parameter) in message and "rename" in message
    assert "fetch" not in app.registry.workflows  # nothing half-registered


def test_keyword_only_and_positional_only_start_keywords(db_path):
    """Issue 12 item 19: a keyword-only ``timeout`` collides too; a positional-only one cannot
    be passed by keyword, so it is allowed."""
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError, match="'timeout'"):

        @app.workflow()
        def kw_only(x: int, *, timeout: float = 1.0) -> int:
            return x

    @app.workflow()
    def pos_only(timeout: float, /) -> float:
        return timeout

    with app:
        assert app.run(pos_only, 2.5) == 2.5


def test_step_parameter_named_timeout_is_fine(db_path):
    """Issue 12 item 19: steps are called directly (no consumed keywords), so ``timeout`` is an
    ordinary parameter there and reaches the body."""
    app = ld.App(db_path)

    @app.step()
    def wait_for(timeout: float) -> float:
        return timeout

    @app.workflow()
    def wf() -> float:
        return wait_for(timeout=3.0)

    with app:
        assert app.run(wf) == 3.0


# -- item 20: async def is refused until asyncio is supported --------------------------------


async def _async_body(x: int) -> int:
    return x


async def _async_gen(x: int):  # type: ignore[no-untyped-def]
    yield x


class _AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


@pytest.mark.parametrize(
    "fn", [_async_body, _async_gen, functools.partial(_async_body, 1), _AsyncCallable()],
    ids=["coroutine", "async-generator", "partial", "async-__call__"],
)
@pytest.mark.parametrize("decorator", ["workflow", "step"])
def test_async_workflows_and_steps_are_refused_at_decoration(db_path, fn, decorator):
    """Issue 12 item 20: an ``async def`` workflow or step used to be accepted and then fail
    every run with "coroutine cannot be serialized"; now decoration says so at once."""
    app = ld.App(db_path)
    with pytest.raises(ld.UsageError) as info:
        getattr(app, decorator)()(fn)
    message = str(info.value)
    assert "async" in message and "asyncio support is planned" in message
    assert "plain def" in message
    assert not app.registry.workflows and not app.registry.steps


@pytest.mark.parametrize("call", ["go", "run"])
def test_async_callables_in_go_and_run_are_refused(db_path, call):
    """Issue 12 item 20: ``ld.go(async_fn)`` / ``ld.run(async_fn)`` inside a workflow raise a
    clear UsageError instead of recording a coroutine."""
    app = ld.App(db_path, app_version="v1")

    @app.workflow()
    def wf() -> str:
        try:
            if call == "go":
                ld.go(_async_body, 1)
            else:
                ld.run(_async_body, 1)
        except ld.UsageError as exc:
            return str(exc)
        return "accepted"

    with app:
        message = app.run(wf)
    assert "_async_body" in message and "asyncio support is planned" in message
