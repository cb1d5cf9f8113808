"""Issue 12 ("Trust"), the API items: versions (17), static typing (18), reserved parameter
names (19), ``async def`` refusal (20), replay-aware logging (22)."""

from __future__ import annotations

import functools
import logging
import os
import pathlib

import pytest
from support import crash_then_close, eventually

import litedurable as ld
import litedurable.testing
from litedurable._runtime import SlotState

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

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


# -- item 17: app_version=None recovers everything; explicit versions gate -------------------


def _counting_app(path: str, counts: dict[str, int], *, extra: bool = False,
                  **options: object) -> tuple[ld.App, object]:
    """An App with one two-step workflow ``job``; ``extra`` adds an unrelated workflow, the
    kind of edit that used to change the default (source hash) version."""
    app = ld.App(path, **options)  # type: ignore[arg-type]

    @app.step(name="first")
    def first(x: int) -> int:
        counts["first"] = counts.get("first", 0) + 1
        return x + 1

    @app.step(name="second")
    def second(x: int) -> int:
        counts["second"] = counts.get("second", 0) + 1
        return x * 10

    @app.workflow(name="job")
    def job(x: int) -> int:
        return second(first(x))

    if extra:

        @app.workflow(name="unrelated")
        def unrelated() -> str:
            # a comment and a new workflow: the code changed, the job did not
            return "new"

    return app, job


def _crash_after_first_step(app: ld.App, job: object, workflow_id: str) -> None:
    switch = ld.testing.crash_at(app, "before_step", nth=2)  # "first" recorded, "second" not

    def start(a: ld.App) -> None:
        a.start(job, 4, workflow_id=workflow_id)  # type: ignore[arg-type]

    crash_then_close(app, switch, start)


def test_default_version_recovers_after_an_unrelated_code_edit(db_path):
    """Issue 12 item 17: with the default ``app_version=None`` an edit elsewhere in the code no
    longer orphans a pending workflow: the next launch recovers it and ``result()`` returns."""
    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts)
    _crash_after_first_step(app, job, "orphan-1")
    assert counts == {"first": 1}
    app, _ = _counting_app(db_path, counts, extra=True)
    with app:
        assert app.handle("orphan-1").result(timeout=60) == 50  # the timeout is a hang guard
    assert counts == {"first": 1, "second": 1}


def test_default_version_recovers_workflows_of_any_recorded_version(db_path, caplog):
    """Issue 12 item 17: an unversioned App recovers workflows an explicitly versioned App left
    pending, logs no "other versions" warning, and records the documented literal on new ones."""
    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts, app_version="v6")
    _crash_after_first_step(app, job, "from-v6")
    app, job = _counting_app(db_path, counts)
    with caplog.at_level(logging.WARNING, logger="litedurable"), app:
        assert app.handle("from-v6").result(timeout=60) == 50
        assert app.start(job, 1, workflow_id="new-one").result(timeout=60) == 20  # type: ignore[arg-type]
        versions = {i.workflow_id: i.app_version for i in app.list_workflows()}
    assert "other app versions" not in caplog.text
    assert versions == {"from-v6": "v6", "new-one": "unversioned"}


def test_explicit_version_gates_recovery_and_logs_the_others(db_path, caplog):
    """Issue 12 item 17: ``app_version="v7"`` opts into gating: a pending v6 workflow is left
    alone and the launch logs the count and versions; ``resume(id, app_version="v7")`` moves it
    to v7, and this App then recovers it."""
    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts, app_version="v6")
    _crash_after_first_step(app, job, "old")
    app, _ = _counting_app(db_path, counts, app_version="v7")
    with caplog.at_level(logging.WARNING, logger="litedurable"), app:
        assert "1 pending workflow(s) belong to other app versions (v6: 1)" in caplog.text
        assert app.recover() == []
        assert counts == {"first": 1}
        assert app.handle("old").status() == ld.Status.PENDING
        app.resume("old", app_version="v7")
        assert app.handle("old").result(timeout=60) == 50
        assert [i.app_version for i in app.list_workflows()] == ["v7"]
    assert counts == {"first": 1, "second": 1}


def test_resume_and_fork_move_a_finished_workflow_to_another_version(db_path):
    """Issue 12 item 17: ``resume``/``fork`` take ``app_version=``; a version this gated App
    does not run is left pending for an App of that version (not run here)."""
    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts, app_version="v1")
    with app:
        handle = app.start(job, 1, workflow_id="w")  # type: ignore[arg-type]
        assert handle.result(timeout=60) == 20
        app.fork("w", 1, new_id="w-v2", app_version="v2")
        app.fork("w", 1, new_id="w-v1")
        assert app.handle("w-v1").result(timeout=60) == 20
        assert app.handle("w-v2").status() == ld.Status.PENDING  # left for a v2 App
        app.cancel("w-v2")
        app.resume("w-v2", app_version="v2")
        assert app.handle("w-v2").status() == ld.Status.PENDING  # still not run here
        versions = {i.workflow_id: i.app_version for i in app.list_workflows()}
    assert versions == {"w": "v1", "w-v1": "v1", "w-v2": "v2"}
    app, _ = _counting_app(db_path, counts, app_version="v2")
    with app:
        assert app.handle("w-v2").result(timeout=60) == 20
    assert counts == {"first": 1, "second": 3}


def test_cli_resume_and_fork_take_app_version(db_path, capsys):
    """Issue 12 item 17: ``litedurable resume/fork --app-version V`` set the recorded version."""
    from litedurable._cli import main

    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts, app_version="v1")
    with app:
        app.start(job, 1, workflow_id="w").result(timeout=60)  # type: ignore[arg-type]
    # Forked and cancelled while no App runs, so it cannot finish before the cancel lands.
    assert main(["--db", db_path, "fork", "w", "1", "--new-id", "w2"]) == 0
    assert main(["--db", db_path, "cancel", "w2"]) == 0
    assert main(["--db", db_path, "fork", "w", "1", "--new-id", "w3", "--app-version", "v9"]) == 0
    assert main(["--db", db_path, "resume", "w2", "--app-version", "v9"]) == 0
    app, _ = _counting_app(db_path, counts, app_version="v9")
    with app:
        assert app.handle("w2").result(timeout=60) == 20
        assert app.handle("w3").result(timeout=60) == 20
        versions = {i.workflow_id: i.app_version for i in app.list_workflows()}
    assert versions == {"w": "v1", "w2": "v9", "w3": "v9"}


@pytest.mark.parametrize("bad", ["", 7, "a\0b", "v\ud800"])
def test_bad_app_version_is_refused(db_path, bad):
    """Issue 12 item 17: a version that cannot be stored or shown is refused where it is given."""
    with pytest.raises((ld.UsageError, ValueError), match="app_version"):
        ld.App(db_path, app_version=bad)


# -- item 22: replay-aware logging ---------------------------------------------------------


def _suspended(app: ld.App, workflow_id: str) -> bool:
    runtime = app._runtime
    assert runtime is not None
    with runtime._lock:
        slot = runtime._slots.get(workflow_id)
        return slot is not None and slot.state is SlotState.SUSPENDED


def test_logger_drops_records_while_a_resumed_workflow_replays(db_path, caplog):
    """Issue 12 item 22: a suspended workflow resumed by replay runs its code outside steps
    again (the body below runs 3 times); ``ld.logger`` logs each message once and
    ``ld.is_replaying()`` says which executions were replays."""
    import threading

    gates = {"a": threading.Event(), "b": threading.Event()}
    bodies: list[str] = []
    seen: list[tuple[str, bool]] = []
    app = ld.App(db_path, app_version="v1", suspend_after=0.01)

    @app.step(name="gate")
    def gate(name: str) -> str:
        assert not ld.is_replaying()  # a step body only runs live
        assert gates[name].wait(60)
        return name

    @app.workflow(name="logged")
    def logged() -> str:
        bodies.append("start")
        seen.append(("start", ld.is_replaying()))
        ld.logger.info("start")
        first = ld.go(gate, "a")
        ld.logger.info("before a")
        seen.append(("before a", ld.is_replaying()))
        first.result()  # no step number: suspends here
        ld.logger.info("after a")
        seen.append(("after a", ld.is_replaying()))
        second = ld.go(gate, "b")
        ld.logger.info("before b")
        done = ld.wait_all([second])[0]
        ld.logger.info("done")
        seen.append(("done", ld.is_replaying()))
        return done

    assert not ld.is_replaying()  # outside a workflow
    with caplog.at_level(logging.INFO, logger="litedurable.workflow"), app:
        handle = app.start(logged, workflow_id="log-1")
        eventually(lambda: _suspended(app, "log-1"), "the workflow suspended on step a", timeout=60)
        gates["a"].set()
        eventually(lambda: ("after a", False) in seen and _suspended(app, "log-1"),
                   "the workflow suspended on step b", timeout=60)
        gates["b"].set()
        assert handle.result(timeout=60) == "b"
    assert bodies == ["start"] * 3  # the model: code outside steps runs again on each replay
    messages = [r.getMessage() for r in caplog.records if r.name == "litedurable.workflow"]
    assert messages == ["start", "before a", "after a", "before b", "done"]
    assert seen == [("start", False), ("before a", False),
                    ("start", True), ("before a", True), ("after a", False),
                    ("start", True), ("before a", True), ("after a", True), ("done", False)]


def test_logger_logs_normally_outside_workflows(caplog):
    """Issue 12 item 22: outside a workflow ``ld.logger`` is an ordinary logger."""
    with caplog.at_level(logging.INFO, logger="litedurable.workflow"):
        ld.logger.info("plain %d", 1)
    assert [r.getMessage() for r in caplog.records] == ["plain 1"]
    assert isinstance(ld.logger, logging.Logger) and ld.logger.name == "litedurable.workflow"


# -- item 18: the documented calls pass mypy --strict ----------------------------------------

_HERE = pathlib.Path(__file__).parent


def _mypy(*paths: str) -> tuple[str, int]:
    mypy_api = pytest.importorskip("mypy.api")
    out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", os.devnull,
                                     *paths])
    return out + err, status


def test_documented_calls_type_check_strictly():
    """Issue 12 item 18: ``app.start(wf, x, workflow_id=...)`` (also ``timeout=``,
    ``detached=``), ``app.run(..., workflow_id=...)`` and ``ld.select([child, ld.after(5)])``
    used to be mypy errors; tests/typing_check.py and the examples must now pass strict mypy."""
    report, status = _mypy(str(_HERE / "typing_check.py"), str(_HERE.parent / "examples"))
    assert status == 0, report


def test_wrong_workflow_arguments_and_results_are_still_type_errors(tmp_path):
    """Issue 12 item 18, negative control: the workflow's argument types are still checked
    when no start keyword is passed, and the return type always is."""
    bad = tmp_path / "bad_calls.py"
    bad.write_text(
        "import litedurable as ld\n"
        "app = ld.App('x.db')\n"
        "@app.workflow()\n"
        "def wf(n: int) -> int:\n"
        "    return n\n"
        "a = app.start(wf, 'not an int')\n"
        "b: str = app.start(wf, 1, workflow_id='x').result()\n"
        "c: str = app.run(wf, 1, timeout=3)\n"
    )
    report, status = _mypy(str(bad))
    assert status == 1
    assert "bad_calls.py:6: error" in report and "bad_calls.py:7: error" in report
    assert "bad_calls.py:8: error" in report


def test_unversioned_app_leaves_workflows_it_does_not_register(db_path):
    """Issue 12 item 17, found while attacking the fix: without version gating, an App must
    not claim an orphaned workflow whose name it does not register (another program on the
    same file does); it stays pending, unowned by it, for an App that registers it."""
    counts: dict[str, int] = {}
    app, job = _counting_app(db_path, counts)
    _crash_after_first_step(app, job, "theirs")
    other = ld.App(db_path)

    @other.workflow(name="something_else")
    def something_else() -> int:
        return 1

    with other:
        assert other.recover() == []
        info = {i.workflow_id: i for i in other.list_workflows()}["theirs"]
        assert info.status == ld.Status.PENDING and info.owner != other._owner
    app, _ = _counting_app(db_path, counts)
    with app:
        assert app.handle("theirs").result(timeout=60) == 50
