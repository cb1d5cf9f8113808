"""Public helpers for testing durable workflows: a fake clock and crash injection.

* ``FakeClock`` — pass ``App(..., clock=FakeClock())`` and ``advance()`` it instead of sleeping;
  durable sleeps, timers, select timeouts and retry delays all read it.
* ``crash_at(app, point, nth=1)`` — make the App "die" the ``nth`` time the engine reaches a
  named crash point (``CRASH_POINTS``): a ``Crash`` is raised there and the journal refuses
  every later write, exactly as if the process had been killed at that instant. Close the App,
  open a new one on the same file, and check what survived.
* ``crash_test(make_app, ...)`` — run a workflow crash-free, then once per crash point and
  occurrence with a crash there followed by recovery, and check that every run ends with the
  same result and the same journal shape and that no step body ran after its completion was
  committed. The first failure is reported with a readable explanation.
* ``crash_schedules()`` — a Hypothesis strategy of crash lists for ``crash_test(...,
  crashes=...)``, so Hypothesis chooses (and shrinks) where a workflow crashes. Needs the
  ``hypothesis`` package (a test dependency; everything else here works without it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._app import App
from ._clock import FakeClock
from ._faults import CRASH_POINTS

try:  # optional: only crash_schedules() needs it
    from hypothesis import strategies as _st
except ImportError:  # pragma: no cover - exercised only without the test extras
    _st = None  # type: ignore[assignment]

__all__ = [
    "CRASH_POINTS",
    "Crash",
    "CrashSwitch",
    "CrashTestError",
    "CrashTestResult",
    "FakeClock",
    "NoPostgresError",
    "crash_at",
    "crash_schedules",
    "crash_test",
    "postgres_server",
]


class Crash(BaseException):
    """A simulated process death at a crash point (a ``BaseException``: nothing catches it)."""


@dataclass
class CrashSwitch:
    """What ``crash_at`` installed: ``fired`` is set once the crash happened."""

    point: str
    nth: int
    fired: threading.Event = field(default_factory=threading.Event)
    info: Mapping[str, object] = field(default_factory=dict)

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the crash happened (True) or ``timeout`` seconds passed (False)."""
        return self.fired.wait(timeout)


def crash_at(
    app: App,
    point: str,
    *,
    nth: int = 1,
    when: Callable[[Mapping[str, object]], bool] | None = None,
    observer: Callable[[str, Mapping[str, object]], None] | None = None,
) -> CrashSwitch:
    """Crash ``app`` the ``nth`` time it reaches ``point`` (and ``when(info)`` holds).

    ``observer`` (optional) sees every crash point the engine passes, before the crash check.
    """
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}; choose one of {', '.join(CRASH_POINTS)}")
    switch = CrashSwitch(point, nth)
    lock = threading.Lock()
    seen = 0

    def hook(at: str, info: Mapping[str, object]) -> None:
        nonlocal seen
        if observer is not None:
            observer(at, info)
        if at != point or (when is not None and not when(info)):
            return
        with lock:
            seen += 1
            hit = seen == nth
        if hit:
            message = f"simulated crash at {point} (occurrence {nth}): {dict(info)}"
            app._simulate_crash(lambda: Crash(message))
            switch.info = dict(info)
            switch.fired.set()
            raise Crash(message)

    app.faults.callback = hook
    return switch


class CrashTestError(AssertionError):
    """A crash point at which the workflow did not recover to the crash-free outcome."""


@dataclass(frozen=True)
class CrashTestResult:
    """What ``crash_test`` did: the crash-free outcome and each crash it injected."""

    outcome: tuple[str, Any]
    crashes: list[tuple[str, int]]


AppFactory = Callable[[str], tuple[App, Callable[..., Any]]]


def crash_test(
    make_app: AppFactory,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    points: Sequence[str] = CRASH_POINTS,
    max_occurrences: int = 20,
    crashes: Sequence[tuple[str, int]] | None = None,
    timeout: float = 30.0,
) -> CrashTestResult:
    """Crash-test one workflow at every crash point it passes.

    ``make_app(path)`` must build a fresh (not launched) App on ``path`` and return it with the
    workflow to start. Inject a ``FakeClock`` and avoid ``ld.now()``/``ld.random()`` in the
    result if results must compare equal across runs.

    For the crash-free run and then each (point, occurrence) up to ``max_occurrences``: start
    the workflow on a new file, crash there, reopen, finish. Checks that the result (value or
    exception type and message) and the journal's (kind, name) sequence equal the crash-free
    run's, and that no step body started after its completion row was committed.

    ``crashes`` replaces that sweep with the given (point, occurrence) pairs, each tried in a
    run of its own; one the workflow never reaches is skipped (see ``crash_schedules``).

    Raises:
        CrashTestError: naming the first crash point that broke an invariant, and how.
    """
    kwargs = dict(kwargs or {})
    root = tempfile.mkdtemp(prefix="litedurable-crash-")
    try:
        counts: dict[str, int] = dict.fromkeys(CRASH_POINTS, 0)

        def count(at: str, _info: Mapping[str, object]) -> None:
            if at in counts:
                counts[at] += 1

        reference = _one_run(make_app, os.path.join(root, "reference.db"), args, kwargs,
                             None, count, timeout)
        if crashes is None:
            sweep = [(point, nth) for point in points
                     for nth in range(1, min(counts[point], max_occurrences) + 1)]
        else:
            sweep = [(point, nth) for point, nth in crashes
                     if _known_point(point) and nth <= counts.get(point, 0)]
        done: list[tuple[str, int]] = []
        for index, (point, nth) in enumerate(sweep):
            path = os.path.join(root, f"{index}-{point}-{nth}.db")
            got = _one_run(make_app, path, args, kwargs, (point, nth), None, timeout)
            done.append((point, nth))
            where = f"crash at {point!r} (occurrence {nth})"
            if got.problem:
                raise CrashTestError(f"{where}: {got.problem}")
            if got.outcome != reference.outcome:
                raise CrashTestError(
                    f"{where}: the recovered workflow ended with {got.outcome!r}, but the "
                    f"crash-free run ended with {reference.outcome!r}. Something outside a "
                    "step (time, randomness, I/O, global state) changed the workflow's path; "
                    "move it into a step or use ld.now()/ld.random()."
                )
            if got.shape != reference.shape:
                raise CrashTestError(
                    f"{where}: the journal differs from the crash-free run's.\n"
                    f"  crash-free: {reference.shape}\n  recovered:  {got.shape}\n"
                    "The workflow took another path after recovery: a decision was made "
                    "outside the journal."
                )
        return CrashTestResult(reference.outcome, done)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _known_point(point: str) -> bool:
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}; choose one of {', '.join(CRASH_POINTS)}")
    return True


def crash_schedules(
    *, points: Sequence[str] = CRASH_POINTS, max_occurrence: int = 8, max_crashes: int = 3
) -> Any:
    """A Hypothesis strategy of crash lists for ``crash_test(..., crashes=...)``.

    Each list holds 1 to ``max_crashes`` (point, occurrence) pairs; occurrences a workflow
    never reaches are skipped by ``crash_test``, so the strategy needs no knowledge of the
    workflow. Hypothesis shrinks a failure to the simplest crash that shows it::

        @given(crash_schedules())
        def test_checkout_survives_crashes(crashes):
            crash_test(make_app, ("order-7",), crashes=crashes)
    """
    if _st is None:
        raise ImportError("crash_schedules() needs Hypothesis: pip install hypothesis")
    for point in points:
        _known_point(point)
    pair = _st.tuples(_st.sampled_from(list(points)), _st.integers(1, max_occurrence))
    return _st.lists(pair, min_size=1, max_size=max_crashes)


@dataclass
class _Run:
    outcome: tuple[str, Any]
    shape: list[tuple[int, str, str]]
    problem: str | None


def _one_run(
    make_app: AppFactory,
    path: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    crash: tuple[str, int] | None,
    observer: Callable[[str, Mapping[str, object]], None] | None,
    timeout: float,
) -> _Run:
    committed: set[tuple[object, object]] = set()
    problems: list[str] = []
    workflow_id = "crash-test"

    def watch(at: str, info: Mapping[str, object]) -> None:
        key = (info.get("workflow_id"), info.get("step"))
        if at == "before_step" and key in committed:
            problems.append(
                f"step {key[1]} ({info.get('name')}) started again after its completion was "
                "committed"
            )
        if at == "after_commit":
            committed.add(key)
        if observer is not None:
            observer(at, info)

    app, wf = make_app(path)
    if crash is None:
        app.faults.callback = watch
        with app:
            app.start(wf, *args, workflow_id=workflow_id, **kwargs)
            return _finish(app, workflow_id, timeout, problems)
    switch = crash_at(app, crash[0], nth=crash[1], observer=watch)
    with app:
        handle = app.start(wf, *args, workflow_id=workflow_id, **kwargs)
        done = threading.Event()

        def wait_for_end() -> None:
            with contextlib.suppress(BaseException):  # the crash, or the App closing under it
                handle.result(timeout)
            done.set()

        waiter = threading.Thread(target=wait_for_end, daemon=True)
        waiter.start()
        while not (switch.fired.is_set() or done.is_set()):
            switch.fired.wait(0.01)
    waiter.join(timeout)
    app, wf = make_app(path)
    app.faults.callback = watch
    with app:
        return _finish(app, workflow_id, timeout, problems)


def _finish(app: App, workflow_id: str, timeout: float, problems: list[str]) -> _Run:
    outcome = _outcome(app, workflow_id, timeout)
    shape = [(s.step, s.kind, s.name) for s in app.steps(workflow_id)]
    return _Run(outcome, shape, problems[0] if problems else None)


def _outcome(app: App, workflow_id: str, timeout: float) -> tuple[str, Any]:
    try:
        return ("value", app.handle(workflow_id).result(timeout))
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


class NoPostgresError(RuntimeError):
    """``postgres_server`` cannot start a server here (the message says what is missing)."""


@contextlib.contextmanager
def postgres_server(**settings: str) -> Iterator[str]:
    """Start a throwaway PostgreSQL server for a test run; yields its admin DSN.

    Uses the machine's binaries (``pg_config --bindir``: ``initdb`` + ``pg_ctl``) in a
    temporary directory on a free port of 127.0.0.1, run as the ``postgres`` user when this
    process is root (the server refuses root). ``settings`` are server settings
    (``fsync="off"`` for fast tests). The server is stopped and its directory removed on exit.

    Raises:
        NoPostgresError: no binaries, or root without a ``postgres`` user.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise NoPostgresError("no PostgreSQL binaries (pg_config is not on PATH)")
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                            check=True).stdout.strip()
    initdb, pg_ctl = os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl")
    if not (os.path.exists(initdb) and os.path.exists(pg_ctl)):
        raise NoPostgresError(f"no initdb/pg_ctl in {bindir}")
    as_user: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    root = tempfile.mkdtemp(prefix="litedurable-pg-")
    try:
        if os.geteuid() == 0:  # the server refuses to run as root
            try:
                postgres = pwd.getpwnam("postgres")
            except KeyError:
                raise NoPostgresError("running as root, and there is no 'postgres' user to "
                                      "run the server as") from None
            os.chown(root, postgres.pw_uid, postgres.pw_gid)
            as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        data = os.path.join(root, "data")
        subprocess.run([*as_user, initdb, "-D", data, "-U", user, "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        options = " ".join([f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1",
                            *(f"-c {k}={v}" for k, v in settings.items())])
        subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l",
                        os.path.join(root, "log"), "-w", "start"], check=True,
                       capture_output=True)
        try:
            yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "fast", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
