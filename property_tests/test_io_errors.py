"""D1-D4 under injected I/O errors, in the style of SQLite's own exhaustive fault loops.

For each canonical workflow (``go`` + ``select`` + a failing step caught + a retried step; one
whose failing step fails the workflow; an ``as_completed`` fan-out after a durable sleep) the
loop makes the k-th write, truncate or sync of the journal's files fail, with ``SQLITE_IOERR``
or ``SQLITE_FULL``, for k = 1, 2, ... until a run makes fewer calls than k (no fault left to
inject). The fault is transient: the next call succeeds, as when space is freed. After each
run the file is reopened by a plain App, which must finish the workflow, and then:

* the fault surfaced as a litedurable ``JournalError`` (from ``launch`` or ``start``) or the
  workflow completed anyway (the engine recovers its own stalled workflows); never a hang, a
  raw apsw exception, a leaked thread or a connection left open;
* D1: the outcome (value, or exception type and message) and the journal (kind, name and
  output of each step) equal the fault-free run's;
* D2/D4: no step whose commit was acknowledged runs again or is missing, step numbers have no
  gaps, ``integrity_check`` is ok and every checksum verifies.

The first canonical workflow starts from a file that does not exist (faults hit its creation
and migration too); the others start from an existing, empty journal.

Negative control: an engine that treats a commit that raised as written (no re-read) must be
caught: a step it acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import apsw
import pytest
from powerloss import Disk, Fault, close_leaked, mounted
from scratch import scratch_dir
from support import engine_thread_names

import litedurable as ld
from litedurable._errors import JournalError
from litedurable._sqlite import SqliteStorage
from litedurable.testing import FakeClock

LONG = os.environ.get("LITEDURABLE_PROFILE") == "long"
WORKFLOW_ID = "canonical"
Outcome = tuple[str, Any]  # ("value", v) or ("error", "Type: message")


@dataclass(frozen=True)
class Canonical:
    name: str
    args: tuple[Any, ...]
    fresh_file: bool  # start from no file at all (else from an existing empty journal)


CANONICAL = [
    Canonical("checkout", (["ab", "cde", "f"],), fresh_file=True),
    Canonical("refund", ("gh",), fresh_file=False),
    Canonical("gather", (["i", "jk", "lmn"],), fresh_file=False),
]


def build(path: str, vfs: str | None) -> tuple[ld.App, dict[str, Callable[..., Any]]]:
    """The canonical workflows. A short lease: a workflow that stopped on a journal error is
    resumed by the App's own recovery within ~50 ms."""
    app = ld.App(path, vfs=vfs, clock=FakeClock(), workers=2, lease=0.05,
                 app_version="io-errors")
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    @app.step()
    def price(item: str) -> int:
        return len(item) * 10

    @app.step()
    def reserve(item: str) -> str:
        raise ValueError(f"{item} is out of stock")

    @app.step(retries=ld.Retry(max_attempts=3, initial=0.0))
    def flaky(n: int) -> int:
        key = ld.idempotency_key()
        with lock:
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] == 1:
                raise ConnectionError("transient: the first attempt of each run fails")
        return n

    @app.workflow(name="checkout")
    def checkout(items: list[str]) -> int:
        first = ld.go(price, items[0])
        total: int = ld.select([first, ld.after(3600)]).result()
        try:
            reserve(items[1])
        except ValueError:
            total += 1
        total += sum(ld.wait_all([ld.go(price, item) for item in items]))
        return total + flaky(2)

    @app.workflow(name="refund")
    def refund(item: str) -> int:
        ld.sleep(0)
        price(item)
        reserve(item)  # fails the workflow: its outcome is this error
        return 0

    @app.workflow(name="gather")
    def gather(items: list[str]) -> int:
        ld.sleep(0)
        futures = [ld.go(price, item) for item in items]
        return sum(f.result() for f in ld.as_completed(futures))

    return app, {"checkout": checkout, "refund": refund, "gather": gather}


def outcome(handle: ld.Handle[Any], timeout: float) -> Outcome:
    """The workflow's outcome; ``WaitTimeoutError`` and journal errors propagate."""
    try:
        return ("value", handle.result(timeout=timeout))
    except (ld.WaitTimeoutError, JournalError):
        raise
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


Shape = list[tuple[int, str, str, Any]]


def journal_shape(journal: SqliteStorage, problems: list[str]) -> Shape:
    """(step, kind, name, output of step/go rows) for every row; checks D4 on the way."""
    integrity = journal.integrity_check()
    if integrity != "ok":
        problems.append(f"G1: integrity_check says {integrity}")
    rows = journal.load_steps(WORKFLOW_ID)  # verifies every checksum
    numbers = [r.step for r in rows]
    if numbers != list(range(len(rows))):
        problems.append(f"D4: step numbers {numbers} have gaps")
    return [
        (r.step, r.kind, r.name,
         json.loads(r.output) if r.kind in ("step", "go") and r.output else None)
        for r in rows
    ]


@dataclass
class Run:
    outcome: Outcome
    shape: Shape
    calls: int  # mutating calls the faulty phase made
    injected: int  # faults injected (0: k was past the end)
    surfaced: str  # how the fault showed: completed, or where a JournalError came out
    problems: list[str] = field(default_factory=list)


class Watch:
    """D2 across both phases: no step body starts after its commit was acknowledged."""

    def __init__(self) -> None:
        self.committed: set[tuple[object, object]] = set()
        self.problems: list[str] = []

    def __call__(self, at: str, info: Mapping[str, object]) -> None:
        key = (info.get("workflow_id"), info.get("step"))
        if at == "before_step" and key in self.committed:
            self.problems.append(f"D2: step {key[1]} started after its commit was acknowledged")
        if at == "after_commit":
            self.committed.add(key)


@contextlib.contextmanager
def swallowed_faults() -> Iterator[list[BaseException]]:
    """Collect the injected faults that apsw could not raise because SQLite reported success.

    apsw hands a VFS exception that no API call returned to ``sys.unraisablehook``; anything
    else goes on to the previous hook.
    """
    swallowed: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, apsw.Error) and "injected fault" in str(exc):
            swallowed.append(exc)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield swallowed
    finally:
        sys.unraisablehook = previous


def faulty_phase(path: str, canonical: Canonical, disk: Disk, watch: Watch,
                 problems: list[str], defects: tuple[str, ...] = ()) -> str:
    """Run the workflow through the faulty disk; return how the fault surfaced."""
    with mounted(disk) as vfs, swallowed_faults() as swallowed:
        app, workflows = build(path, vfs)
        app.faults.callback = watch
        app.faults.inject(*defects)
        surfaced = "completed"
        try:
            app.launch()
        except JournalError as exc:
            surfaced = f"launch raised {type(exc).__name__}"
            if engine_thread_names():
                problems.append(
                    f"D6: launch raised but left threads running: {engine_thread_names()}")
        else:
            try:
                handle = app.start(workflows[canonical.name], *canonical.args,
                                   workflow_id=WORKFLOW_ID)
                outcome(handle, timeout=10)
            except ld.WaitTimeoutError:
                problems.append("hang: the workflow did not finish within 10 s after the fault")
            except JournalError as exc:
                surfaced = f"start raised {type(exc).__name__}"
        finally:
            try:
                app.close()
            except Exception as exc:
                problems.append(f"close raised {type(exc).__name__}: {exc}")
            leaked = close_leaked(vfs)
            if leaked:
                problems.append(f"close left connections open on {leaked}")
    if swallowed:
        problems.append(f"swallowed: the engine never saw {swallowed}")
    return surfaced


def new_journal(root: str, name: str, canonical: Canonical) -> str:
    """A path for the run: no file, or an empty journal, as ``canonical`` asks."""
    path = os.path.join(root, f"{name}.db")
    if not canonical.fresh_file:
        with ld.App(path):
            pass
    return path


def run(canonical: Canonical, fault: Fault | None, root: str,
        defects: tuple[str, ...] = ()) -> Run:
    """One faulty run (of an engine with ``defects``) and its clean reopen, on a new file."""
    path = new_journal(root, f"{canonical.name}-{fault.at if fault else 0}", canonical)
    problems: list[str] = []
    watch = Watch()
    disk = Disk(fault=fault)
    surfaced = faulty_phase(path, canonical, disk, watch, problems, defects)
    app, workflows = build(path, None)
    app.faults.callback = watch
    with app:
        handle = app.start(workflows[canonical.name], *canonical.args, workflow_id=WORKFLOW_ID)
        result = outcome(handle, timeout=10)
    with SqliteStorage(path) as journal:
        shape = journal_shape(journal, problems)
    lost = {key for key in watch.committed if key[1] not in {s[0] for s in shape}}
    problems += [f"D4: acknowledged step {key[1]} is missing" for key in sorted(lost, key=str)]
    return Run(result, shape, disk.calls, disk.faults_injected, surfaced,
               problems + watch.problems)


def fault_loop(canonical: Canonical, errors: list[type[apsw.Error]],
               defects: tuple[str, ...] = ()) -> Iterator[tuple[int, Run]]:
    """Fail call k = 1, 2, ... (cycling through ``errors``) until no fault is left to inject."""
    with scratch_dir() as root:
        k = 0
        while True:
            k += 1
            got = run(canonical, Fault(k, errors[k % len(errors)]), root, defects)
            yield k, got
            if got.injected == 0:
                return


@dataclass
class Tally:
    runs: int = 0
    faults: int = 0
    surfaced: dict[str, int] = field(default_factory=dict)  # how the faults showed


def check_exhaustively(canonical: Canonical, errors: list[type[apsw.Error]]) -> Tally:
    """Every run of the loop against the fault-free one; fails on any unknown problem."""
    with scratch_dir() as root:
        reference = run(canonical, None, root)
    assert reference.problems == [], reference.problems
    assert reference.surfaced == "completed"
    failures: list[str] = []
    tally = Tally()
    for k, got in fault_loop(canonical, errors):
        where = f"{canonical.name}, fault at call {k}"
        failures += [f"{where}: {problem}" for problem in got.problems]
        if got.outcome != reference.outcome:
            failures.append(f"{where}: D1: outcome {got.outcome} != {reference.outcome}")
        if got.shape != reference.shape:
            failures.append(f"{where}: D1: journal {got.shape} != {reference.shape}")
        tally.runs += 1
        tally.faults += got.injected
        tally.surfaced[got.surfaced] = tally.surfaced.get(got.surfaced, 0) + got.injected
    assert failures == [], "\n".join(failures)
    return tally


# The quick profile alternates the two errors over k; the long one runs each at every k.
ERROR_SETS = (
    [[apsw.IOError], [apsw.FullError]] if LONG else [[apsw.IOError, apsw.FullError]]
)


@pytest.mark.parametrize("errors", ERROR_SETS, ids=lambda e: "+".join(x.__name__ for x in e))
@pytest.mark.parametrize("canonical", CANONICAL, ids=lambda c: c.name)
def test_every_write_and_sync_may_fail(canonical: Canonical,
                                       errors: list[type[apsw.Error]]) -> None:
    tally = check_exhaustively(canonical, errors)
    print(f"{canonical.name}: {tally}")  # shown with -s: what the loop did
    assert tally.faults > 10, tally  # the loop really injected faults


def test_negative_control_a_failed_commit_taken_as_written_is_caught() -> None:
    """An engine that skips the re-read after a commit raised, assuming it was written."""
    caught = next(
        (got.problems for _, got in fault_loop(CANONICAL[1], [apsw.IOError], ("no_reread",))
         if any(p.startswith("D4: acknowledged step") for p in got.problems)),
        None,
    )
    assert caught is not None, "no fault made the broken engine lose an acknowledged step"


def close_checkpoint_writes(canonical: Canonical) -> tuple[int, int]:
    """The call numbers of the first two writes of the checkpoint at close to the database."""
    with scratch_dir() as root:
        path = new_journal(root, "dry", canonical)
        disk = Disk()
        faulty_phase(path, canonical, disk, Watch(), [])
    name = os.path.basename(path)
    last_wal = max(i for i, (_, file) in enumerate(disk.log) if file == f"{name}-wal")
    first = disk.log.index(("write", name), last_wal)
    return first + 1, first + 2


def test_a_failed_checkpoint_at_close_closes_cleanly() -> None:
    """Disk full during the checkpoint at close loses nothing (the WAL keeps it all): close()
    logs it and finishes closing, never letting a raw ``apsw`` error out half way.
    """
    refund = CANONICAL[1]
    first, _ = close_checkpoint_writes(refund)
    with scratch_dir() as root:
        path = new_journal(root, "journal", refund)
        with mounted(Disk(fault=Fault(first, apsw.FullError))) as vfs:
            app, workflows = build(path, vfs)
            app.launch()
            try:
                outcome(app.start(workflows["refund"], "gh", workflow_id=WORKFLOW_ID), 10)
            finally:
                try:
                    with contextlib.suppress(JournalError):
                        app.close()
                finally:
                    close_leaked(vfs)


def test_reopen_after_a_failed_checkpoint_at_close() -> None:
    """The checkpoint at close wrote page 1 (its header now counts every page) and then the
    disk was full. No power was lost; the WAL holds every page, so the journal must open (as
    SQLite alone does) rather than be refused as truncated.
    """
    checkout = CANONICAL[0]  # on a new file: before the checkpoint, the database is 1 page
    _, second = close_checkpoint_writes(checkout)
    short_files = 0
    # Background threads (heartbeat, watcher) can shift the call count by a few between runs,
    # so try the calls around the one the dry run found, and count those that hit the spot.
    for at in range(second - 2, second + 6):
        with scratch_dir() as root:
            path = new_journal(root, "journal", checkout)
            faulty_phase(path, checkout, Disk(fault=Fault(at, apsw.FullError)), Watch(), [])
            if not (os.path.exists(path + "-wal") and shorter_than_its_header(path)):
                continue
            short_files += 1
            copy = os.path.join(root, "copy.db")
            for suffix in ("", "-wal"):
                shutil.copyfile(path + suffix, copy + suffix)
            raw = apsw.Connection(copy)  # SQLite alone, on a copy: it replays the WAL
            try:
                assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                assert raw.execute("SELECT status FROM workflows").fetchall() == [("succeeded",)]
            finally:
                raw.close()
            with SqliteStorage(path) as journal:
                assert journal.integrity_check() == "ok"
    assert short_files, "no fault left the database shorter than its header with a WAL"


def shorter_than_its_header(path: str) -> bool:
    with open(path, "rb") as f:
        header = f.read(100)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size  # how SQLite stores 64 KiB
    return int.from_bytes(header[28:32], "big") * page_size > os.path.getsize(path)


def test_a_failed_switch_to_wal_is_reported() -> None:
    """A new journal file starts in rollback mode; SQLite switches it to WAL through a rollback
    journal. Failing that journal's sync must come out as a ``JournalError`` (or the switch
    must succeed on a retry) with nothing swallowed.
    """
    with scratch_dir() as root:
        dry = Disk()
        with mounted(dry) as vfs:
            SqliteStorage(os.path.join(root, "dry.db"), vfs=vfs).close()
        sync = dry.log.index(("sync", "dry.db-journal")) + 1
        with mounted(Disk(fault=Fault(sync, apsw.IOError))) as vfs, \
                swallowed_faults() as swallowed, contextlib.suppress(JournalError):
            SqliteStorage(os.path.join(root, "new.db"), vfs=vfs).close()
        assert swallowed == []
