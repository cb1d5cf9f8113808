"""Messages, events, streams and promises attacked from the README and docstrings alone.

Each test is a defect found that way (or a guarantee probed hard enough to be worth keeping):
the test fails on the code before its fix.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import eventually

import litedurable as ld

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL


def waiting(app: ld.App, workflow_id: str, kind: str) -> bool:
    return any(s.kind == kind and s.finished_at is None for s in app.steps(workflow_id))


# -- a value of the wrong shape for type= -------------------------------------------------------
# The codec's text for a recorded value that no longer reads as its hint ("Did its type change
# since it was recorded? ... fork the workflow") blamed the workflow's code for what a sender
# did; a received value must be told as received, on the first run and on every replay.


@pytest.mark.parametrize("suspend_after", [2.0, 0.0])
def test_a_message_of_the_wrong_type_is_told_as_a_message(db_path, suspend_after):
    app = ld.App(db_path, suspend_after=suspend_after)

    @app.workflow()
    def counter() -> int:
        return ld.recv("n", type=int) + 1

    with app:
        early = app.start(counter, workflow_id="early")  # the message is there at creation
        app.send("early", "seven", topic="n")
        late = app.start(counter, workflow_id="late")  # it arrives while the workflow waits
        eventually(lambda: waiting(app, "late", "message"), "late waits in recv")
        app.send("late", "seven", topic="n")
        # each first run, then each replay (resume replays the recorded receive)
        for handle in (early, late, app.resume("early"), app.resume("late")):
            with pytest.raises(ld.SerializationError) as caught:
                handle.result(timeout=30)
            text = str(caught.value)
            assert "the message on topic 'n'" in text and "seven" in text, text
            assert "Did its type change" not in text, text


def test_a_promise_resolved_with_the_wrong_type_is_told_as_a_promise(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def pay() -> int:
        p = ld.promise(type=int)
        ld.set_event("pid", p.id)
        return p.result()

    with app:
        handle = app.start(pay, workflow_id="pay")
        pid = app.get_event("pay", "pid", timeout=30)
        assert app.resolve(pid, "not a number") is True
        with pytest.raises(ld.SerializationError) as caught:
            handle.result(timeout=30)
        text = str(caught.value)
        assert f"resolving promise {pid!r}" in text and "Did its type change" not in text, text


def test_an_event_of_the_wrong_type_is_told_as_an_event(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def publisher() -> None:
        ld.set_event("size", "large")

    @app.workflow()
    def reader(now: bool) -> Any:
        if not now:
            ld.recv("go")
        return ld.get_event("pub", "size", type=int)

    with app:
        app.start(publisher, workflow_id="pub").result(timeout=30)
        last = ""
        for now in (True, False, None):  # None: a replay of the recorded event (resume)
            handle = app.resume(last) if now is None else app.start(reader, now)
            last = handle.workflow_id
            if now is False:
                app.send(handle.workflow_id, None, topic="go")
            with pytest.raises(ld.SerializationError) as caught:
                handle.result(timeout=30)
            text = str(caught.value)
            assert "event 'size' of workflow 'pub'" in text, text
            assert "Did its type change" not in text, text


# -- a reader that never ends ---------------------------------------------------------------------


# app.get_event waited for an event a finished workflow can never set: without timeout= the
# caller hung forever, unlike read_stream, which ends when its workflow ends.
def test_get_event_of_a_finished_workflow_that_never_set_it_does_not_wait(db_path):
    app = ld.App(db_path)

    @app.workflow()
    def quiet() -> int:
        return 1

    with app:
        app.start(quiet, workflow_id="quiet").result(timeout=30)
        # timeout= only turns the hang into a failure: a fix raises at the first look
        with pytest.raises(ld.EventNotSetError, match=r"'quiet' ended \(succeeded\) without "
                           r"setting event 'never'.*app.resume"):
            app.get_event("quiet", "never", timeout=30)


# -- a fork waiting on the promise it replays ------------------------------------------------------
# A fork copies its source's journal rows, so its promise is the source's (same id). Settling it
# woke only the source's workflow id (``settle_promise`` -> ``Runtime.delivered``): a fork
# waiting in the same process slept forever.


@pytest.mark.parametrize("suspend_after", [2.0, 0.0])
def test_a_fork_waiting_on_its_sources_promise_is_woken_by_its_settlement(db_path,
                                                                         suspend_after):
    app = ld.App(db_path, suspend_after=suspend_after)

    @app.workflow()
    def payment() -> Any:
        p = ld.promise()
        ld.set_event("pid", p.id)
        return p.result()

    with app:
        app.start(payment, workflow_id="pay")
        pid = app.get_event("pay", "pid", timeout=30)
        assert app.cancel("pay")
        fork = app.fork("pay", 1, new_id="pay-fork")  # it replays the promise, sets the event
        assert app.get_event("pay-fork", "pid", timeout=30) == pid
        # the fork now goes on to wait on the promise; settling it first would not test the
        # wake-up, but it cannot make this test fail wrongly
        assert app.resolve(pid, "paid") is True
        assert fork.result(timeout=30) == "paid"


def test_an_object_with_no_json_form_is_refused_with_a_cause_that_says_so(db_path):
    # The cause read "maximum recursion depth exceeded in comparison" (Codec.encode).
    app = ld.App(db_path)

    @app.workflow()
    def idle() -> int:
        return ld.recv()

    with app:
        app.start(idle, workflow_id="idle")
        with pytest.raises(ld.SerializationError, match=r"type object.*no JSON form") as caught:
            app.send("idle", object())
        assert "recursion" not in str(caught.value)
        app.send("idle", 1)
        assert app.handle("idle").result(timeout=30) == 1
