"""The CLI shows a workflow's mailbox, events, streams and promises, and ``gc`` removes them;
on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._cli import main

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL


def _make_app(db: str) -> tuple[ld.App, Callable[[], str], Callable[[str], None]]:
    app = ld.App(db)

    @app.workflow(name="inbox")
    def inbox() -> str:
        ld.set_event("state", {"stage": "waiting"})
        ld.write_stream("log", "a")
        ld.write_stream("log", "b")
        ld.close_stream("log")
        ld.write_stream("live", 1)
        paid, refused = ld.promise(), ld.promise()
        ld.set_event("promises", [paid.id, refused.id])
        command = ld.recv("go")
        ld.set_event("received", command)
        return f"{command} {paid.result()}"

    @app.workflow(name="sender")
    def sender(to: str) -> None:
        ld.send(to, "hello", topic="go")

    return app, inbox, sender


def _waiting_inbox(db: str) -> tuple[str, str]:
    """``inbox-1`` pending on its first promise, with one message read and one unread."""
    app, inbox, sender = _make_app(db)
    with app:
        app.start(inbox, workflow_id="inbox-1")
        paid, refused = app.get_event("inbox-1", "promises", timeout=60)
        assert app.reject(refused, "no funds")
        assert app.send("inbox-1", {"late": True}, idempotency_key="k-1")
        app.run(sender, "inbox-1", workflow_id="sender-1")
        assert app.get_event("inbox-1", "received", timeout=60) == "hello"
    return paid, refused


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_show_lists_mailbox_events_streams_and_promises(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    paid, refused = _waiting_inbox(db)
    assert main(["--db", str(db), "steps", "inbox-1", "--json"]) == 0
    steps = _json(capsys)
    assert isinstance(steps, list)
    received_at = [s["step"] for s in steps if s["kind"] == "message"]
    assert len(received_at) == 1

    assert main(["--db", str(db), "show", "inbox-1", "--json"]) == 0
    shown = _json(capsys)
    assert isinstance(shown, dict)
    assert shown["status"] == "pending"
    messages = [{k: m[k] for k in ("topic", "message", "sender", "read", "read_by_step",
                                   "idempotency_key")} for m in shown["messages"]]
    assert messages == [
        {"topic": None, "message": {"late": True}, "sender": None, "read": False,
         "read_by_step": None, "idempotency_key": "k-1"},
        {"topic": "go", "message": "hello", "sender": "sender-1", "read": True,
         "read_by_step": received_at[0], "idempotency_key": messages[1]["idempotency_key"]},
    ]
    assert shown["messages"][0]["read_at"] is None and shown["messages"][1]["read_at"]
    assert shown["events"] == {"state": {"stage": "waiting"}, "promises": [paid, refused],
                               "received": "hello"}
    assert shown["streams"] == {"log": {"items": 2, "closed": True},
                                "live": {"items": 1, "closed": False}}
    promises = {p["promise_id"]: p for p in shown["promises"]}
    assert set(promises) == {paid, refused}
    assert (promises[paid]["settled"], promises[paid]["value"], promises[paid]["error"]) == (
        False, None, None)
    assert promises[refused]["settled"] and promises[refused]["value"] is None
    assert "no funds" in promises[refused]["error"]

    # A workflow with none of these shows them empty.
    assert main(["--db", str(db), "show", "sender-1", "--json"]) == 0
    shown = _json(capsys)
    assert isinstance(shown, dict)
    assert (shown["messages"], shown["events"], shown["streams"], shown["promises"]) == (
        [], {}, {}, [])


def test_list_shows_the_topics_with_unread_messages(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    _waiting_inbox(db)
    assert main(["--db", str(db), "list", "--json"]) == 0
    listed = _json(capsys)
    assert isinstance(listed, list)
    assert {w["workflow_id"]: w["unread_topics"] for w in listed} == {
        "inbox-1": [None], "sender-1": []}
    assert main(["--db", str(db), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-3:] == ["UNREAD", "MESSAGES", "ON"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["inbox-1"].endswith("(default topic)")
    assert not rows["sender-1"].endswith(")")


def test_gc_removes_a_finished_workflows_messages_events_streams_and_promises(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    paid, refused = _waiting_inbox(db)
    assert main(["--db", str(db), "gc", "--older-than", "0"]) == 0
    assert "deleted 1 finished workflow(s)" in capsys.readouterr().out  # sender-1 only

    with open_storage(str(db), readonly=True) as journal:  # inbox-1 is pending: all kept
        assert len(journal.mailbox("inbox-1")) == 2
        assert len(journal.promises("inbox-1")) == 2
        assert journal.events("inbox-1") and journal.streams("inbox-1")

    app, _, _ = _make_app(db)
    with app:
        assert app.resolve(paid, "r-1")
        assert app.handle("inbox-1").result(timeout=60) == "hello r-1"
    assert main(["--db", str(db), "gc", "--older-than", "0"]) == 0
    assert "deleted 1 finished workflow(s)" in capsys.readouterr().out
    assert main(["--db", str(db), "show", "inbox-1"]) == 3
    with open_storage(str(db), readonly=True) as journal:
        assert journal.mailbox("inbox-1") == []
        assert journal.events("inbox-1") == {}
        assert journal.streams("inbox-1") == {}
        assert journal.promises("inbox-1") == []
        assert journal.get_promise(paid) is None and journal.get_promise(refused) is None
