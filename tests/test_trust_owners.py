"""Owner leases and recovery under hostile conditions (issue 12, items 5 to 8).

Who may take a pending workflow over from its owner: an owner judged by its own lease, not by
the reader's (item 5); a pid check trusted only inside the owner's own pid namespace (item 6);
a child made by ``fork()`` that does not inherit its parent's list of live owners (item 7); and a
``resume()`` right after ``cancel()`` that does not wait on the cancelled run's leftovers (item 8).

Real time appears only as hang guards; every assertion is about what happened (a ledger of step
bodies, who owns a workflow), never about how long it took.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from support import child_env, eventually

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._lease import HOST
from litedurable._sqlite import SqliteStorage
from litedurable._sqlite.sql import APPLICATION_ID, MIGRATIONS
from litedurable._storage import OwnerRow

# Each test that takes ``db_path`` runs on SQLite and on PostgreSQL (the lease rules are the
# same on both); the one that builds a schema-2 file is SQLite-only by nature.
pytestmark = pytest.mark.both_backends

WORKFLOW_INPUTS = b'{"args": [], "kwargs": {}}'
HANG = 60.0  # seconds: a guard against hangs, never a performance expectation


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _dead_pid() -> int:
    """A pid that no process has here (a reaped child's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=child_env())
    proc.wait()
    return proc.pid


def _foreign_owner(path: str, owner: str, *, pid: int, heartbeat: float,
                   columns: dict[str, object]) -> None:
    """Write an owner row and a pending workflow ``w`` it owns, as another process would
    (through the storage interface, so on either backend; a column not given stays NULL, as
    in a row an older litedurable wrote)."""
    with open_storage(path) as journal:
        journal.insert_workflow(
            workflow_id="w", name="wf", inputs=WORKFLOW_INPUTS, now=time.time(),
            app_version="v1", parent_id=None, owner=owner,
        )
        journal.heartbeat(OwnerRow(owner, HOST, pid, heartbeat, **columns))  # type: ignore[arg-type]
        # heartbeat() stamps the journal's clock, as for a live owner: set the instant given.
        backdate = ("UPDATE owners SET heartbeat = {p} WHERE owner = {p}", (heartbeat, owner))
        if isinstance(journal, SqliteStorage):
            journal.commit.write(lambda conn: conn.execute(backdate[0].format(p="?"),
                                                           backdate[1]))
        else:
            journal.driver.write(lambda conn: conn.execute(backdate[0].format(p="%s"),
                                                           backdate[1]))


def _owner_of(path: str, workflow_id: str) -> str | None:
    with open_storage(path, readonly=True) as journal:
        row = journal.get_workflow(workflow_id)
        assert row is not None
        return row.owner


def _plain_app(path: str, *, lease: float) -> ld.App:
    app = ld.App(path, app_version="v1", lease=lease)

    @app.workflow(name="wf")
    def wf() -> str:
        return "ran"

    return app


# -- item 5: each owner is judged by its own lease --------------------------------------------


def test_an_owner_row_is_judged_by_its_own_lease_not_the_readers(db_path):
    """Issue 12 item 5: a heartbeat 2 s old is fresh for an owner whose lease is 10 s, even to
    an App whose own lease is 0.5 s. The owner's pid is alive here, so only the lease decides."""
    _foreign_owner(db_path, "other-owner", pid=os.getppid(), heartbeat=time.time() - 2.0,
                   columns={"lease": 10.0})
    app = _plain_app(db_path, lease=0.5)
    with app:
        assert app.recover() == []
    assert _owner_of(db_path, "w") == "other-owner"


A_PROCESS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import litedurable as ld

    path, ledger, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    app = ld.App(path, app_version="v1", lease=10.0)

    @app.step(name="long")
    def long() -> str:
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"start {os.getpid()}\\n".encode())
        os.close(fd)
        deadline = time.monotonic() + 120  # a hang guard: the test opens the gate
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        return "done"

    @app.workflow(name="slow")
    def slow() -> str:
        return long()

    with app:
        print(app.start(slow, workflow_id="w").result(timeout=120), flush=True)
    """
)


@pytest.mark.sqlite_only("10 s of real heartbeats; the lease rule it checks is backend-neutral "
                         "and test_an_owner_row_is_judged_by_its_own_lease_not_the_readers "
                         "runs it on PostgreSQL")
@pytest.mark.timeout(150)
def test_a_shorter_lease_never_takes_over_a_live_owner_running_a_long_step(tmp_path, db_path):
    """Issue 12 item 5: process A (lease 10 s) runs a step longer than B's lease; B (lease
    0.5 s) recovers while A's heartbeat is older than 0.5 s and must not take the workflow."""
    script, ledger, gate = tmp_path / "a.py", tmp_path / "ledger.txt", tmp_path / "gate"
    script.write_text(A_PROCESS)
    a = subprocess.Popen([sys.executable, str(script), db_path, str(ledger), str(gate)],
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        eventually(lambda: _lines(ledger), "A to start its step", timeout=HANG)
        b = ld.App(db_path, app_version="v1", lease=0.5)

        @b.step(name="long")
        def long() -> str:
            with open(ledger, "a") as file:
                file.write(f"start {os.getpid()}\n")
            return "done here"

        @b.workflow(name="slow")
        def slow() -> str:
            return long()

        with b:

            def heartbeat_age() -> float:
                with open_storage(db_path, readonly=True) as journal:
                    owners = journal.owners()
                rows = [r for r in owners.rows.values() if r.pid == a.pid]
                # A claim deletes the owner rows it found dead: B's own heartbeat loop (it
                # recovers every 0.5 s) may have got there first.
                assert rows, "B presumed A dead and took its workflow over"
                return owners.now - rows[0].heartbeat

            # A beats every lease/3 (3.3 s): wait for a moment its heartbeat is older than
            # B's lease, then let B judge it (several times, so a beat in between cannot hide it).
            claimed: list[str] = []
            for _ in range(3):
                eventually(lambda: heartbeat_age() > 0.6, "A's heartbeat to age past 0.5 s",
                           timeout=HANG)
                claimed += b.recover()
                eventually(lambda: heartbeat_age() < 0.6, "A's next heartbeat", timeout=HANG)
            assert claimed == [], "B took over a workflow whose owner is alive"
            gate.touch()
            out, err = a.communicate(timeout=120)
            assert a.returncode == 0, err
            assert out.strip() == "done"
        assert _lines(ledger) == [f"start {a.pid}"]  # the step body ran once, in A
    finally:
        gate.touch()
        if a.poll() is None:
            a.kill()
            a.communicate(timeout=60)


def _old_journal(path: str) -> None:
    """A journal as schema 2 wrote it: no lease nor pid namespace in the owner rows."""
    conn = apsw.Connection(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            for sql in MIGRATIONS[:2]:
                conn.execute(sql)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("PRAGMA user_version=2")
    finally:
        conn.close()


def test_an_owner_row_without_a_lease_is_judged_by_the_readers_lease(db_path):
    """Issue 12 item 5: an owner row that carries no lease (an older litedurable's) is judged
    by the reader's lease: 100 s of silence is dead to a 10 s lease."""
    _foreign_owner(db_path, "old-owner", pid=os.getppid(), heartbeat=time.time() - 100.0,
                   columns={})
    app = _plain_app(db_path, lease=10.0)
    with app:
        assert app.handle("w").result(timeout=60) == "ran"


def test_an_old_owner_row_without_a_lease_is_judged_by_the_readers_lease(tmp_path):
    """Issue 12 item 5: a schema-2 journal migrates forward; its owner rows carry no lease,
    so the reader's lease judges them as before: 100 s of silence is dead to a 10 s lease.
    SQLite-only by nature: it builds the schema-2 file itself."""
    db_path = str(tmp_path / "journal.db")
    _old_journal(db_path)
    _foreign_owner(db_path, "old-owner", pid=os.getppid(), heartbeat=time.time() - 100.0,
                   columns={})
    app = _plain_app(db_path, lease=10.0)
    with app:
        assert app.handle("w").result(timeout=60) == "ran"
    conn = apsw.Connection(db_path)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(owners)")}
        assert {"lease", "pid_namespace"} <= columns
    finally:
        conn.close()


@pytest.mark.parametrize("lease", [0, -1.0, float("nan"), float("inf"), True, "10"])
def test_a_lease_that_cannot_be_kept_is_refused(db_path, lease):
    """Issue 12 item 5 (hostile input): every owner is now judged by the lease it stores, so a
    lease that is zero, negative, NaN, infinite or not a number is refused up front."""
    with pytest.raises((ValueError, TypeError), match="lease"):
        ld.App(db_path, lease=lease)


def test_the_longest_lease_is_stored_and_honoured(db_path):
    """Issue 12 item 5 (hostile input): the longest lease an App takes (1e300 is refused up
    front, as every App duration past ``MAX_SETTING``) must not crash the heartbeat."""
    with pytest.raises(ValueError, match="lease"):
        ld.App(db_path, lease=1e300)
    app = ld.App(db_path, lease=1e6)

    @app.workflow(name="wf")
    def wf() -> str:
        return "ran"

    with app:
        assert app.run(wf) == "ran"
        with open_storage(db_path, readonly=True) as journal:
            [row] = journal.owners().rows.values()
        assert row.lease == 1e6


# -- item 6: a pid check is trusted only in the owner's own pid namespace -----------------------


def test_a_dead_pid_in_another_pid_namespace_does_not_override_a_fresh_heartbeat(db_path):
    """Issue 12 item 6: an owner in another pid namespace (a container sharing the volume and
    the host name) has a pid that means nothing here; its fresh heartbeat keeps it alive."""
    _foreign_owner(db_path, "container-owner", pid=_dead_pid(), heartbeat=time.time(),
                   columns={"lease": 30.0, "pid_namespace": "0-other-boot/pid:[1]"})
    app = _plain_app(db_path, lease=30.0)
    with app:
        assert app.recover() == []
    assert _owner_of(db_path, "w") == "container-owner"


def test_a_pid_check_without_a_namespace_on_record_is_not_trusted(db_path):
    """Issue 12 item 6: an owner row that does not say its pid namespace (an old row) is not
    pid-checked: only its lease can declare it dead."""
    _foreign_owner(db_path, "unknown-owner", pid=_dead_pid(), heartbeat=time.time(),
                   columns={"lease": 30.0})
    app = _plain_app(db_path, lease=30.0)
    with app:
        assert app.recover() == []
    assert _owner_of(db_path, "w") == "unknown-owner"


def test_a_dead_pid_in_this_pid_namespace_is_still_taken_over_at_once(db_path):
    """Issue 12 item 6, the other side: in our own namespace a dead pid is proof of death, so
    a killed owner's workflows do not wait for its lease to lapse."""
    from litedurable._lease import pid_namespace

    _foreign_owner(db_path, "killed-owner", pid=_dead_pid(), heartbeat=time.time(),
                   columns={"lease": 30.0, "pid_namespace": pid_namespace()})
    app = _plain_app(db_path, lease=30.0)
    with app:
        assert app.handle("w").result(timeout=60) == "ran"


def test_the_heartbeat_does_not_recover_beside_a_launch_still_recovering(db_path):
    """Launch starts the heartbeat before its recovery (a long recovery must not let the lease
    lapse), and the heartbeat recovers once per lease. Both ran at once: a workflow launch had
    claimed but not yet resumed looked like one of ours that had stopped, was claimed again,
    and counted a second recovery attempt; with a limit of 1 it was parked ``exhausted`` at
    its very first recovery, while it ran."""
    _foreign_owner(db_path, "dead-owner", pid=_dead_pid(), heartbeat=time.time() - 100.0,
                   columns={"lease": 1.0})
    app = ld.App(db_path, app_version="v1", lease=0.05, max_recovery_attempts=1)

    @app.workflow(name="wf")
    def wf() -> str:
        ld.sleep(0.3)
        return "ran"

    recoveries: list[str] = []

    def slow_recovery(point: str, info: object) -> None:
        if point == "recovery":  # claimed, not resumed yet: a recovery longer than the lease
            recoveries.append(threading.current_thread().name)
            time.sleep(0.5)

    app.faults.callback = slow_recovery
    with app:
        assert app.handle("w").result(timeout=HANG) == "ran"
    assert recoveries == ["MainThread"]


def test_our_own_pid_in_another_pid_namespace_is_not_us(db_path):
    """Issue 12 item 6: a container's process may have our very pid; that is no proof that its
    App belonged to this process and closed."""
    _foreign_owner(db_path, "same-pid-owner", pid=os.getpid(), heartbeat=time.time(),
                   columns={"lease": 30.0, "pid_namespace": "0-other-boot/pid:[1]"})
    app = _plain_app(db_path, lease=30.0)
    with app:
        assert app.recover() == []
    assert _owner_of(db_path, "w") == "same-pid-owner"


NAMESPACED_READER = textwrap.dedent(
    """
    import json, os, sys
    import litedurable as ld

    path = sys.argv[1]
    app = ld.App(path, app_version="v1", lease=30.0)

    @app.step(name="long")
    def long() -> str:
        return "ran in the other namespace"

    @app.workflow(name="slow")
    def slow() -> str:
        return long()

    with app:
        claimed = app.recover()
        [info] = [i for i in app.list_workflows() if i.workflow_id == "w"]
        print(json.dumps({"pid": os.getpid(), "claimed": claimed, "owner": info.owner}))
    """
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.timeout(150)
@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare --pid --fork` (root, Linux)")
def test_a_live_owner_is_not_taken_over_from_another_pid_namespace(tmp_path, db_path):
    """Issue 12 item 6, for real: this process owns a workflow inside a long step; a process in
    a new pid namespace (same host name, same file) recovers and must leave it alone."""
    app = ld.App(db_path, app_version="v1", lease=30.0)
    started, gate = threading.Event(), threading.Event()
    runs = Counter[str]()

    @app.step(name="long")
    def long() -> str:
        runs["long"] += 1
        started.set()
        assert gate.wait(120)  # a hang guard
        return "ran here"

    @app.workflow(name="slow")
    def slow() -> str:
        return long()

    with app:
        handle = app.start(slow, workflow_id="w")
        assert started.wait(60)
        script = tmp_path / "reader.py"
        script.write_text(NAMESPACED_READER)
        done = subprocess.run(["unshare", "--pid", "--fork", sys.executable, str(script),
                               db_path], env=child_env(), capture_output=True, text=True,
                              timeout=120)
        gate.set()
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["pid"] != os.getpid()  # it really ran in a pid namespace of its own
        assert report["claimed"] == [] and report["owner"] == app._owner
        assert handle.result(timeout=60) == "ran here"
    assert runs == {"long": 1}


# -- item 7: a child made by fork() starts with no live owners ----------------------------------


FORKING_PARENT = textwrap.dedent(
    """
    import os, sys, time, threading
    from pathlib import Path
    import litedurable as ld

    path, out, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    first_pid = os.getpid()
    started = threading.Event()

    def build():
        app = ld.App(path, app_version="v1", lease=30.0)

        @app.step(name="work")
        def work() -> str:
            if os.getpid() == first_pid:
                started.set()
                threading.Event().wait(3600)  # the parent dies inside this step
            return f"finished by {os.getpid()}"

        @app.workflow(name="job")
        def job() -> str:
            return work()

        return app, job

    app, job = build()
    app.launch()
    app.start(job, workflow_id="w")
    assert started.wait(120)
    child = os.fork()
    if child:
        (out.parent / "child.pid").write_text(str(child))
        os._exit(0)  # the parent crashes: no close, its owner row and heartbeat stay fresh
    try:
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:  # until the parent is reaped
            time.sleep(0.005)
        fresh, fresh_job = build()
        with fresh:
            try:
                text = fresh.handle("w").result(timeout=30)
            except BaseException as exc:
                text = f"not taken over: {type(exc).__name__}: {exc}"
        out.write_text(text)
    finally:
        os._exit(0)
    """
)


@pytest.mark.timeout(150)
def test_a_forked_child_takes_over_its_crashed_parents_workflows(tmp_path, db_path):
    """Issue 12 item 7: the parent dies inside a step right after fork(); its child opens a new
    App on the file, and the parent's token inherited through fork() must not look alive."""
    script, out, go = tmp_path / "parent.py", tmp_path / "out.txt", tmp_path / "go"
    script.write_text(FORKING_PARENT)
    parent = subprocess.Popen([sys.executable, str(script), db_path, str(out), str(go)],
                              env=child_env())
    child_pid = None
    try:
        assert parent.wait(120) == 0  # reaped: its pid is gone, not a zombie
        child_pid = int((tmp_path / "child.pid").read_text())
        go.touch()
        text = eventually(lambda: out.exists() and out.read_text(), "the child's report",
                          timeout=120)
        assert text == f"finished by {child_pid}"
    finally:
        go.touch()
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)


def test_fork_clears_the_live_owners_in_the_child(db_path):
    """Issue 12 item 7, in this process: after fork() the child's registry of live owners is
    empty (the child must exit with os._exit and touch no inherited connection)."""
    from litedurable import _lease

    app = _plain_app(db_path, lease=30.0)
    with app:
        assert app._owner in _lease._LIVE_OWNERS
        read, write = os.pipe()
        with warnings.catch_warnings():  # fork() with threads running: this child only reads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child
            try:
                os.write(write, json.dumps(sorted(_lease._LIVE_OWNERS)).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            seen = json.loads(pipe.read())
        os.waitpid(pid, 0)
        assert seen == []
        assert app._owner in _lease._LIVE_OWNERS  # the parent's is untouched


# -- item 8: resume() right after cancel() ------------------------------------------------------


@pytest.fixture
def unwinding_app(db_path) -> Iterator[tuple[ld.App, dict[str, Any]]]:
    """An App whose workflow ``both`` catches its cancellation and blocks in its cleanup until
    the test lets it go, so a resume() lands while the cancelled run still unwinds."""
    app = ld.App(db_path, lease=3600.0)  # no periodic recovery may rescue a stalled run
    state: dict[str, Any] = {
        "unwinding": threading.Event(), "release": threading.Event(),
        "gate": threading.Event(), "lock": threading.Lock(), "active": Counter[str](),
        "most": Counter[str](), "runs": Counter[str](), "ledger": [],
        "ignore_cancel": set(), "late_value": False,
    }

    @app.step(name="fetch")
    def fetch(part: str) -> str:
        with state["lock"]:
            state["runs"][part] += 1
            state["active"][part] += 1
            state["most"][part] = max(state["most"][part], state["active"][part])
            state["ledger"].append(f"start {part}")
        try:
            while not state["gate"].is_set():
                if ld.cancelled() and part not in state["ignore_cancel"]:
                    state["ledger"].append(f"interrupted {part}")
                    raise ConnectionAbortedError(f"{part} interrupted")
                time.sleep(0.001)
            if ld.cancelled() and not state["late_value"]:  # released after the cancel
                state["ledger"].append(f"interrupted {part}")
                raise ConnectionAbortedError(f"{part} interrupted late")
            return part
        finally:
            with state["lock"]:
                state["active"][part] -= 1

    @app.workflow(name="both")
    def both() -> list[str]:
        try:
            return ld.wait_all([ld.go(fetch, "a"), ld.go(fetch, "b")])
        except ld.WorkflowCancelledError:
            state["unwinding"].set()
            assert state["release"].wait(60)  # a hang guard
            raise

    state["both"] = both
    with app:
        yield app, state


@pytest.mark.timeout(120)
def test_resume_right_after_cancel_finishes_without_waiting_for_a_lease(unwinding_app):
    """Issue 12 item 8: the resumed run must not attach to the cancelled run's abandoned
    ``go`` tasks (which end unrecorded) and stall until a recovery rescues it."""
    app, state = unwinding_app
    handle = app.start(state["both"], workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start",
               timeout=HANG)
    handle.cancel()
    assert state["unwinding"].wait(60)
    eventually(lambda: {"interrupted a", "interrupted b"} <= set(state["ledger"]),
               "both bodies to see the cancellation", timeout=HANG)
    resumed = app.resume("w")  # the cancelled run is still in its cleanup
    state["gate"].set()
    state["release"].set()
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"] == {"a": 2, "b": 2}


@pytest.mark.timeout(120)
def test_resume_right_after_cancel_never_runs_a_step_body_twice_at_once(unwinding_app):
    """Issue 12 item 8: a step body of the cancelled run that ignores cancellation and is still
    running when the workflow is resumed is waited for, not started a second time beside it;
    as it ends unrecorded (it raised), the resumed run then runs it again."""
    app, state = unwinding_app
    state["ignore_cancel"].add("b")
    handle = app.start(state["both"], workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start",
               timeout=HANG)
    handle.cancel()
    assert state["unwinding"].wait(60)
    eventually(lambda: "interrupted a" in state["ledger"], "step a to see the cancellation",
               timeout=HANG)
    resumed = app.resume("w")
    state["release"].set()  # the cancelled run ends; the resumed one starts its steps
    eventually(lambda: state["runs"]["a"] == 2, "the resumed run to rerun step a", timeout=HANG)
    assert state["runs"]["b"] == 1  # b's first body is still running: not started again
    state["gate"].set()  # b's first body ends, raising (its workflow was cancelled)
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"] == {"a": 2, "b": 2}
    assert state["most"] == {"a": 1, "b": 1}  # never two bodies of one step at once


@pytest.mark.timeout(120)
def test_resume_right_after_cancel_keeps_what_a_late_step_body_returned(unwinding_app):
    """Issue 12 item 8: a body of the cancelled run that still returns a value records it
    (values are kept, see StepScope); the resumed run uses that value and does not rerun it."""
    app, state = unwinding_app
    state["ignore_cancel"].add("b")
    handle = app.start(state["both"], workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start",
               timeout=HANG)
    handle.cancel()
    assert state["unwinding"].wait(60)
    eventually(lambda: "interrupted a" in state["ledger"], "step a to see the cancellation",
               timeout=HANG)
    resumed = app.resume("w")
    state["release"].set()
    eventually(lambda: state["runs"]["a"] == 2, "the resumed run to rerun step a", timeout=HANG)
    state["late_value"] = True  # b's first body now returns its value instead of raising
    state["gate"].set()
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"]["b"] == 1


@pytest.mark.timeout(120)
def test_resume_after_the_cancelled_run_stopped_still_waits_for_its_running_body(
        unwinding_app):
    """Issue 12 item 8: the cancelled run has ended and its slot is gone, but a body that
    ignores cancellation still runs; a resume then must not start that step beside it."""
    app, state = unwinding_app
    state["ignore_cancel"].add("b")
    state["release"].set()  # the cancelled run ends at once
    handle = app.start(state["both"], workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start",
               timeout=HANG)
    handle.cancel()
    runtime = app._runtime
    assert runtime is not None
    eventually(lambda: not runtime.is_active("w"), "the cancelled run to stop", timeout=HANG)
    resumed = app.resume("w")
    eventually(lambda: state["runs"]["a"] == 2, "the resumed run to rerun step a", timeout=HANG)
    assert state["runs"]["b"] == 1  # b's first body is still running: not started again
    state["gate"].set()
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"] == {"a": 2, "b": 2}
    assert state["most"] == {"a": 1, "b": 1}


@pytest.mark.timeout(120)
def test_resume_cancel_resume_passes_a_late_value_to_the_last_run(unwinding_app):
    """Issue 12 item 8: resumed, cancelled and resumed again while b's first body runs on;
    when that body finally returns a value, the last run gets it and b never runs again."""
    app, state = unwinding_app
    state["ignore_cancel"].add("b")
    state["release"].set()
    both = state["both"]
    handle = app.start(both, workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start",
               timeout=HANG)
    for round_ in (2, 3):
        handle.cancel()
        resumed = app.resume("w")
        eventually(lambda r=round_: state["runs"]["a"] == r, f"run {round_} to rerun step a",
                   timeout=HANG)
    state["late_value"] = True  # b's first body returns its value instead of raising
    state["gate"].set()
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"] == {"a": 3, "b": 1}


@pytest.mark.timeout(120)
def test_a_run_cancelled_and_resumed_before_it_looks_still_ends_as_cancelled(unwinding_app):
    """Issue 12 item 8: cancel() and resume() both land before the running workflow wakes to
    look for interrupts (forced here by holding its run's condition, which its wait needs to
    return). That run must still stop as cancelled so the resumed run starts at once; it used
    to find no cancellation (resume() had dropped it), wait on as if never cancelled, then
    suspend, dropping the resume: nothing ran until b's first body ended."""
    app, state = unwinding_app
    state["ignore_cancel"].add("b")
    state["release"].set()
    handle = app.start(state["both"], workflow_id="w")
    eventually(lambda: state["runs"]["a"] and state["runs"]["b"], "both steps to start")
    runtime = app._runtime
    assert runtime is not None
    run = runtime._slots["w"].run
    assert run is not None
    try:
        with run.cond:  # reentrant: cancel() and resume() may notify the run from here
            handle.cancel()
            resumed = app.resume("w")
        eventually(lambda: state["runs"]["a"] == 2, "the resumed run to rerun step a", timeout=20)
        assert state["runs"]["b"] == 1  # b's first body is still running: not started again
    finally:
        state["gate"].set()  # b's first body ends, raising (its workflow was cancelled)
    assert resumed.result(timeout=60) == ["a", "b"]
    assert state["runs"] == {"a": 2, "b": 2}
    assert state["most"] == {"a": 1, "b": 1}


@pytest.mark.timeout(120)
def test_a_resume_during_a_suspending_run_drives_the_resumed_run_at_once(db_path):
    """Issue 12 item 8: the run was already unwinding to suspend (waiting on its steps) when
    cancel() and resume() landed. The resume must drive the workflow again as soon as that
    run is gone, not leave it suspended until the cancelled run's steps end (b's body here
    ignores cancellation, so it would wait for the test's gate)."""
    app = ld.App(db_path, lease=3600.0, suspend_after=0.05)
    runs: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    gate, unwinding, proceed = threading.Event(), threading.Event(), threading.Event()

    @app.step(name="fetch")
    def fetch(part: str) -> str:
        runs[part] += 1
        try:
            while not gate.is_set():
                if ld.cancelled() and part == "a":
                    raise ConnectionAbortedError("a interrupted")
                time.sleep(0.001)
            return part
        finally:
            ended[part] += 1

    @app.workflow(name="both")
    def both() -> list[str]:
        try:
            return ld.wait_all([ld.go(fetch, "a"), ld.go(fetch, "b")])
        finally:
            if not unwinding.is_set():  # the first run, suspending: hold it mid-unwind
                unwinding.set()
                assert proceed.wait(60)  # a hang guard

    with app:
        try:
            handle = app.start(both, workflow_id="w")
            assert unwinding.wait(60)
            eventually(lambda: runs["a"] and runs["b"], "both steps to start")
            handle.cancel()
            # a's first body ends now; no step settles from here on to wake the workflow
            eventually(lambda: ended["a"] == 1, "step a to see the cancellation")
            resumed = app.resume("w")
            proceed.set()
            eventually(lambda: runs["a"] == 2, "the resumed run to rerun step a", timeout=20)
            assert runs["b"] == 1
        finally:
            proceed.set()
            gate.set()
        assert resumed.result(timeout=60) == ["a", "b"]
        assert runs == {"a": 2, "b": 1}  # b's first body returned its value: kept


def test_a_failing_heartbeat_is_reported_once_and_its_recovery_too(caplog):
    """A journal away for a while (a PostgreSQL server restarting, a file on a network share
    gone) logged "heartbeat failed" every beat (lease/3 s) for as long as it was away. It is
    now one warning that says what is at stake (the lease), then one when it works again."""
    from litedurable._errors import JournalError
    from litedurable._faults import Faults
    from litedurable._lease import Lease

    class Away:
        def __init__(self) -> None:
            self.calls = 0

        def heartbeat(self, row: OwnerRow) -> None:
            self.calls += 1
            if self.calls <= 6:
                raise JournalError("the database cannot be reached (simulated)")

    storage = Away()
    lease = Lease(storage, 0.15, Faults())  # type: ignore[arg-type]
    caplog.set_level("WARNING", logger="litedurable")
    lease.start(lambda: 0)
    try:
        eventually(lambda: storage.calls >= 8, what="eight heartbeats")
    finally:
        lease.stop()
    said = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert len(said) == 2, said
    assert "failed" in said[0] and "0.15 s (the lease)" in said[0] and "take over" in said[0]
    assert "works again" in said[1]


def test_a_hurried_recovery_waits_for_the_journal_then_runs_at_once():
    """``Lease.hurry`` (a run stopped on a journal error) recovers as soon as the journal
    answers, not at the next lease (600 s here: past the hang guard), retrying while the
    heartbeat fails. Workflows that made progress since their last claim (attempt 1) are taken
    back at once however often it happens: after a dozen server restarts a few seconds apart,
    a pace that doubled per hurry waited minutes."""
    from litedurable._errors import JournalError
    from litedurable._faults import Faults
    from litedurable._lease import Lease

    class Flaky:
        def __init__(self) -> None:
            self.away = 0  # heartbeats still to fail

        def heartbeat(self, row: OwnerRow) -> None:
            if self.away:
                self.away -= 1
                raise JournalError("the database cannot be reached (simulated)")

    storage = Flaky()
    recoveries = []

    def recover() -> int:
        recoveries.append(storage.away)
        return 1  # what it claimed had recorded a step since its last claim

    lease = Lease(storage, 600.0, Faults())  # type: ignore[arg-type]
    lease.start(recover)
    try:
        storage.away = 3
        lease.hurry()
        eventually(lambda: recoveries, "a hurried recovery")
        assert recoveries == [0]  # only once the heartbeat worked again
        for n in range(2, 14):
            lease.hurry()
            eventually(lambda n=n: len(recoveries) == n, f"hurried recovery {n}")
    finally:
        lease.stop()
