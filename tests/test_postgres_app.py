"""The App on both backends: a few whole-App scenarios with an SQLite file and a PostgreSQL
schema (``postgres_dsn`` in conftest: a throwaway server, or a skip saying why).

The wider experiment: ``LITEDURABLE_TEST_DB=postgres pytest tests/...`` runs the App-level
suites with ``db_path`` a PostgreSQL URL (tests that open the file itself fail there).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._cli import main
from litedurable._storage import OwnerRow

HOLD = 30.0  # a hang guard only


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "journal.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield f"{dsn}?schema=t_{uuid.uuid4().hex[:12]}"


def test_steps_children_events_and_replay(location: str) -> None:
    calls: list[str] = []
    app = ld.App(location)

    @app.step(name="double")
    def double(n: int) -> int:
        calls.append(f"double {n}")
        return 2 * n

    @app.workflow(name="child")
    def child(n: int) -> int:
        return double(n) + 1

    @app.workflow(name="parent")
    def parent(n: int) -> list[int]:
        ld.set_event("progress", "half")
        first = double(n)
        return [first, app.start(child, first).result()]

    with app:
        handle = app.start(parent, 5, workflow_id="p")
        assert handle.result(timeout=HOLD) == [10, 21]
        assert app.get_event("p", "progress") == "half"
        assert app.start(parent, 5, workflow_id="p").result(timeout=HOLD) == [10, 21]
        assert handle.status() == ld.Status.SUCCEEDED
    assert calls == ["double 5", "double 10"]  # each step ran once


def test_a_message_from_another_app_wakes_the_workflow(location: str) -> None:
    waiting = ld.App(location)
    sender = ld.App(location)

    @waiting.workflow(name="inbox")
    def inbox() -> str:
        return str(ld.recv("greeting"))

    @sender.workflow(name="inbox")
    def inbox_elsewhere() -> str:
        raise AssertionError("never run by the sender")

    with waiting, sender:
        handle = waiting.start(inbox, workflow_id="i")
        sender.send("i", "hello", topic="greeting")
        assert handle.result(timeout=HOLD) == "hello"


def test_a_cancel_from_another_app_stops_the_workflow(location: str) -> None:
    runner = ld.App(location)
    other = ld.App(location)
    entered = threading.Event()

    @runner.workflow(name="forever")
    def forever() -> None:
        entered.set()
        ld.recv("never")

    with runner, other:
        handle = runner.start(forever, workflow_id="f")
        assert entered.wait(HOLD)
        assert other.cancel("f")
        with pytest.raises(ld.WorkflowCancelledError):
            handle.result(timeout=HOLD)
        assert handle.status() == ld.Status.CANCELLED


def test_the_cli_reads_and_writes_the_journal(location: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    app = ld.App(location)

    @app.step(name="inc")
    def inc(n: int) -> int:
        return n + 1

    @app.workflow(name="count")
    def count(n: int) -> int:
        return inc(inc(n))

    @app.workflow(name="stuck")
    def stuck() -> None:
        ld.recv("never")

    with app:
        assert app.start(count, 1, workflow_id="c").result(timeout=HOLD) == 3
        app.start(stuck, workflow_id="s")
    assert main(["--db", location, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((w["workflow_id"], w["status"]) for w in listed) == [
        ("c", "succeeded"), ("s", "pending")]
    assert main(["--db", location, "steps", "c", "--json"]) == 0
    assert [s["output"] for s in json.loads(capsys.readouterr().out)] == [2, 3]
    assert main(["--db", location, "cancel", "s"]) == 0
    capsys.readouterr()
    main(["--db", location, "show", "s", "--json"])
    assert '"status": "cancelled"' in capsys.readouterr().out


def test_a_read_only_open_refuses_writes_and_creates_nothing(postgres_dsn: str) -> None:
    url = f"{postgres_dsn}?schema=t_{uuid.uuid4().hex[:12]}"
    with pytest.raises(ld.JournalError, match="no litedurable journal"):
        open_storage(url, readonly=True)
    open_storage(url).close()  # created
    with open_storage(url, readonly=True) as journal:
        assert journal.list_workflows() == [] and journal.quick_check() == "ok"
        with pytest.raises(ld.JournalReadOnlyError):
            journal.heartbeat(OwnerRow("me", "host", 1, 1.0, 30.0, None))
