"""Waiting on and cancelling a workflow that runs in another process on the same file.

A child process runs the workflow; this process opens its own App on the file (another app
version, so it never claims the child's work) and waits or cancels. The other process learns of
the cancellation through its commit watcher (``PRAGMA data_version``), so a step running there
sees ``ld.cancelled()`` without any write of its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import child_env, eventually

import litedurable as ld

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import litedurable as ld

    path, workflow_id, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    app = ld.App(path, app_version="worker")

    @app.step(name="tick")
    def tick(n: int) -> int:
        return n + 1

    @app.step(name="wait_for_gate")
    def wait_for_gate() -> str:
        Path(str(gate) + ".started").touch()
        while not gate.exists():
            if ld.cancelled():
                return "saw the cancellation"
            time.sleep(0.001)
        return "gate opened"

    @app.workflow(name="remote")
    def remote() -> str:
        return wait_for_gate().upper()

    @app.workflow(name="busy")
    def busy() -> str:
        n = 0
        Path(str(gate) + ".started").touch()
        while True:  # steps back to back: only a cancellation ends this
            n = tick(n)

    with app:
        handle = app.start(busy if workflow_id.startswith("busy") else remote,
                           workflow_id=workflow_id)
        try:
            handle.result(timeout=60)
        except ld.WorkflowCancelledError:
            pass
        # The step's row lands after the cancellation; wait for it before closing.
        deadline = time.monotonic() + 60
        while not app.steps(workflow_id) and time.monotonic() < deadline:
            time.sleep(0.001)
        if workflow_id.startswith("busy"):  # a step in flight may still land; then nothing
            time.sleep(0.1)
            ticks = len(app.steps(workflow_id))
            time.sleep(0.2)
            assert len(app.steps(workflow_id)) == ticks, "the cancelled workflow kept stepping"
    """
)


def _start_worker(
    tmp_path: Path, db_path: str, workflow_id: str
) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    gate = tmp_path / f"{workflow_id}.gate"
    worker = subprocess.Popen([sys.executable, str(script), db_path, workflow_id, str(gate)],
                              env=child_env())
    return worker, gate


def _handle_when_started(app: ld.App, workflow_id: str, gate: Path) -> ld.Handle[object]:
    """The workflow's handle once the worker's step (or loop) is running."""
    started = Path(str(gate) + ".started")
    # the timeout is a hang guard for the child's interpreter start-up
    eventually(started.exists, "the worker to start its workflow", timeout=60)
    return app.handle(workflow_id)


@pytest.fixture
def watcher(db_path: str):
    with ld.App(db_path, app_version="watcher") as app:
        yield app


def test_result_waits_for_a_workflow_running_in_another_process(tmp_path, db_path, watcher):
    worker, gate = _start_worker(tmp_path, db_path, "remote-1")
    try:
        handle = _handle_when_started(watcher, "remote-1", gate)
        with pytest.raises(ld.WaitTimeoutError):
            handle.result(timeout=0.05)
        gate.touch()
        assert handle.result(timeout=60) == "GATE OPENED"
        assert handle.status() is ld.Status.SUCCEEDED
    finally:
        gate.touch()
        assert worker.wait(60) == 0


def test_cancel_reaches_a_step_running_in_another_process(tmp_path, db_path, watcher):
    worker, gate = _start_worker(tmp_path, db_path, "remote-2")
    try:
        handle = _handle_when_started(watcher, "remote-2", gate)
        assert handle.cancel() is True
        with pytest.raises(ld.WorkflowCancelledError, match="remote-2"):
            handle.result(timeout=60)
        assert worker.wait(60) == 0  # its step returned because it saw ld.cancelled()
        [step] = watcher.steps("remote-2")
    finally:
        gate.touch()
        worker.wait(60)
    assert step.output == "saw the cancellation"
    assert handle.status() is ld.Status.CANCELLED  # the worker's late outcome was refused


def test_cancel_stops_a_workflow_busy_recording_steps_in_another_process(
    tmp_path, db_path, watcher
):
    worker, gate = _start_worker(tmp_path, db_path, "busy-1")
    try:
        handle = _handle_when_started(watcher, "busy-1", gate)
        assert handle.cancel() is True
        # The worker exits only if its run stopped stepping (it checks for 0.2 s), which
        # needs the cancellation to reach a process whose writer is never idle.
        assert worker.wait(60) == 0
    finally:
        gate.touch()
        worker.wait(60)
    assert handle.status() is ld.Status.CANCELLED
