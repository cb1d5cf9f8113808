"""Messages, events, streams and promises between two processes on one file.

A child process runs the workflow (app version "worker"); this process opens its own App on
the file (another version, so it never claims the child's work) and sends, reads and resolves.
The child learns of this process's commits only through its commit watcher. Timeouts are hang
guards, never timing assertions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from support import child_env, eventually

import litedurable as ld

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

WORKER = textwrap.dedent(
    """
    import sys
    import litedurable as ld

    path, workflow_id = sys.argv[1], sys.argv[2]
    app = ld.App(path, app_version="worker")

    @app.workflow(name="flow")
    def flow() -> str:
        first = ld.recv("go")
        ld.set_event("got", first)
        for n in range(3):
            ld.write_stream("s", n)
            ld.recv("more")
        p = ld.promise()
        ld.set_event("pid", p.id)
        value = p.result()
        ld.write_stream("s", value)
        return f"{first}/{value}"

    with app:
        print(app.start(flow, workflow_id=workflow_id).result(timeout=120), flush=True)
    """
)


def _start(tmp_path: Path, db_path: str, workflow_id: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), db_path, workflow_id],
                            env=child_env(), stdout=subprocess.PIPE)


def _blocked_on(app: ld.App, workflow_id: str, topic: str, count: int = 1) -> bool:
    opened = [s for s in app.steps(workflow_id) if s.kind == "message" and s.name == topic]
    return len(opened) >= count and opened[-1].finished_at is None


def test_send_event_stream_and_promise_across_processes(tmp_path, db_path):
    worker = _start(tmp_path, db_path, "flow-1")
    try:
        with ld.App(db_path, app_version="watcher") as app:
            eventually(lambda: app.list_workflows() and _blocked_on(app, "flow-1", "go"),
                       "the worker's workflow to block in recv", timeout=60)
            items: list[Any] = []
            reader = threading.Thread(target=lambda: items.extend(
                app.read_stream("flow-1", "s", timeout=120)))
            reader.start()  # before anything is written
            assert app.send("flow-1", "hello", topic="go") is True
            assert app.get_event("flow-1", "got", timeout=60) == "hello"
            for n in range(3):
                eventually(lambda n=n: n in items, f"stream item {n} in this process",
                           timeout=60)
                eventually(lambda n=n: _blocked_on(app, "flow-1", "more", n + 1),
                           "the worker to wait for more", timeout=60)
                app.send("flow-1", n, topic="more")
            pid = app.get_event("flow-1", "pid", timeout=60)
            assert app.resolve(pid, "yes") is True
            assert app.handle("flow-1").result(timeout=60) == "hello/yes"
            reader.join(60)
            assert not reader.is_alive(), "the stream did not end with its workflow"
            assert items == [0, 1, 2, "yes"]
            assert app.resolve(pid, "again") is False
        out, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(60)
    assert worker.returncode == 0
    assert out.decode().strip() == "hello/yes"
