"""Messages are exactly-once across crashes (issue 14): generated sender/receiver programs.

A sender workflow sends generated messages over topics ``a`` and ``b`` to a receiver workflow
that receives them with ``recv``, message futures, timeouts and ``select`` over both topics
plus a timer (``message_programs.py``). The App is crashed at a generated crash point (the
message points ``before_send``/``after_send``/``before_receive``/``after_receive`` among them)
and reopened; before it is, a late message is sent to topic ``c``, on which the receiver has
only ever timed out. Then:

* every message sent is received exactly once (no loss, no duplicate), in the order sent per
  topic, and the journal holds each sent message once, consumed;
* every decision the receiver's code saw (a message, a timeout, a select winner) is the same in
  every run of its code after the restart: in particular a receive that timed out before the
  crash still times out, although the late message is waiting.

A negative control re-decides replayed timeouts (the ``redecide_timeout`` defect) and must be
caught. A last test runs the sender and the receiver in two processes SIGKILLed at random.
The first property also runs on PostgreSQL (fewer examples).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from journals import Journals, fewer_examples
from message_programs import build, counts_of
from scratch import scratch_dir
from support import child_env, inspect_journal

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._storage import MessageRow, StepRow
from litedurable.testing import CRASH_POINTS, Crash, FakeClock, crash_at

CHILD = Path(__file__).with_name("message_programs.py")
# The points these workflows pass (they run no steps; "recovery" is a launch's, not a run's).
POINTS = [p for p in CRASH_POINTS
          if p not in ("before_step", "after_body", "after_commit", "recovery")]

messages_st = st.lists(st.sampled_from("ab"), min_size=1, max_size=6).map(
    lambda topics: [[t, f"{t}{i}"] for i, t in enumerate(topics)])
ops_st = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["recv", "future"]), st.sampled_from("ab")),
        st.tuples(st.just("timeout"), st.sampled_from("abc")),
        st.tuples(st.just("select"), st.sampled_from([0, 3600])),
    ).map(list),
    max_size=5,
)
crash_st = st.tuples(st.sampled_from(POINTS), st.integers(1, 4))


class Observed:
    """What the receiver's code saw at each decision index, in every run of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[int, list[Any]] = defaultdict(list)

    def __call__(self, index: int, event: Any) -> None:
        with self.lock:
            self.events[index].append(event)

    def redecided(self) -> list[str]:
        return [f"decision {i} seen as {seen}" for i, seen in sorted(self.events.items())
                if any(e != seen[0] for e in seen)]


def run(path: str, messages: list[list[str]], ops: list[list[Any]],
        crash: tuple[str, int], defects: tuple[str, ...] = (),
        topic: str | None = None) -> list[str]:
    """Run the pair with a crash at ``crash``, reopen, finish; the invariants broken."""
    observed = Observed()
    app, sender, receiver = build(path, observed, clock=FakeClock(), workers=2,
                                  suspend_after=0.5)
    app.faults.inject(*defects)
    switch = crash_at(app, crash[0], nth=crash[1],  # only at receives on ``topic``, if given
                      when=None if topic is None else lambda info: info.get("name") == topic)
    with app:
        handles = [app.start(receiver, ops, counts_of(messages), workflow_id="receiver")]
        with contextlib.suppress(Crash):  # the receiver may crash the App first
            handles.append(app.start(sender, messages, workflow_id="sender"))
        while not switch.fired.is_set() and any(
                h.status() == ld.Status.PENDING for h in handles):
            switch.fired.wait(0.005)
    fired = switch.fired.is_set()
    before = journal(path)
    if fired:  # while the App is down: the late message, on a topic only ever timed out on
        storage = open_storage(path)
        try:
            storage.send_message(destination="receiver", topic="c", payload=b'"late"',
                                 now=0.0, key="late")
        finally:
            storage.close()
    app, sender, _ = build(path, observed, clock=FakeClock(), workers=2, suspend_after=0.5)
    app.faults.inject(*defects)
    with app:
        app.start(sender, messages, workflow_id="sender")  # idempotent
        try:
            got = app.handle("receiver").result(30)
            app.handle("sender").result(30)
        except Exception as exc:
            return [f"the pair did not finish: {exc!r}"]
    mailbox, steps = journal(path)
    problems = observed.redecided() + decisions(got, steps)
    problems += [f"step {row.step} changed in the restart: {row} became {steps.get(row.step)}"
                 for row in before[1].values()
                 if row.finished_at is not None and steps.get(row.step) != row]
    received = [e for e in got if e[0] == "recv"]
    for topic in "ab":
        sent = [v for t, v in messages if t == topic]
        taken = [v for _, t, v in received if t == topic]
        if taken != sent:
            problems.append(f"topic {topic}: received {taken}, sent {sent}")
    stored = sorted(m.payload.decode() for m in mailbox if m.sender == "sender")
    if stored != sorted(json.dumps(v) for _, v in messages):
        problems.append(f"the journal holds {stored} for the messages sent {messages}")
    unread = [m for m in mailbox if m.sender == "sender" and m.consumed_step is None]
    if unread:
        problems.append(f"messages never consumed: {unread}")
    late = [v for _, t, v in received if t == "c"]
    if late not in ([], ["late"]):
        problems.append(f"the late message was received as {late}")
    return problems


def journal(path: str) -> tuple[list[MessageRow], dict[int, StepRow]]:
    """The receiver's mailbox and journal rows, read from the file."""
    storage = inspect_journal(path)
    try:
        return storage.mailbox("receiver"), {r.step: r for r in storage.load_steps("receiver")}
    finally:
        storage.close()


def decisions(got: list[list[Any]], steps: dict[int, StepRow]) -> list[str]:
    """Where what the receiver returned disagrees with the decisions its journal records."""
    selects = [json.loads(r.extra or b"{}") for _, r in sorted(steps.items())
               if r.kind == "select" and r.finished_at is not None]
    races = [d["winner"] for d in selects if len(d["candidates"]) == 3]
    timeouts = sum(1 for d in selects if len(d["candidates"]) == 1 and d["winner"] < 0)
    problems = []
    if [e[1] for e in got if e[0] == "select"] != races:
        problems.append(f"select winners {got} disagree with the journal's {races}")
    if sum(1 for e in got if e[0] == "timeout") != timeouts:
        problems.append(f"timeouts {got} disagree with the journal's {timeouts} timeouts")
    return problems


@given(messages=messages_st, ops=ops_st, crash=crash_st)
def test_messages_are_exactly_once_and_decisions_survive_a_crash(
    messages: list[list[str]], ops: list[list[Any]], crash: tuple[str, int]
) -> None:
    with scratch_dir() as d:
        assert run(os.path.join(d, "j.db"), messages, ops, crash) == []


@fewer_examples
@given(messages=messages_st, ops=ops_st, crash=crash_st)
def test_messages_are_exactly_once_and_decisions_survive_a_crash_on_postgres(
    pg_journals: Journals, messages: list[list[str]], ops: list[list[Any]],
    crash: tuple[str, int]
) -> None:
    with pg_journals() as make:
        assert run(make("j"), messages, ops, crash) == []


def test_negative_control_a_redecided_timeout_is_caught_on_postgres(
    pg_journals: Journals
) -> None:
    """The same check on PostgreSQL must catch the same defect (it is the engine's)."""
    program = ([["a", "a0"]], [["timeout", "c"], ["recv", "a"]])
    with pg_journals() as make:
        assert run(make("ok"), *program, ("after_decision", 1)) == []
        problems = run(make("broken"), *program, ("after_decision", 1),
                       defects=("redecide_timeout",))
    assert any(p.startswith("timeouts") for p in problems), problems


def test_negative_control_a_redecided_timeout_is_caught() -> None:
    """An engine whose replayed timeout waits again (the late message wins) must fail."""
    program = ([["a", "a0"]], [["timeout", "c"], ["recv", "a"]])
    with scratch_dir() as d:
        assert run(os.path.join(d, "ok.db"), *program, ("after_decision", 1)) == []
        problems = run(os.path.join(d, "broken.db"), *program, ("after_decision", 1),
                       defects=("redecide_timeout",))
    assert any(p.startswith("timeouts") for p in problems), problems
    # crashed after the code saw the timeout: the replay is seen deciding otherwise
    with scratch_dir() as d:
        problems = run(os.path.join(d, "seen.db"), *program, ("before_receive", 1),
                       defects=("redecide_timeout",), topic="a")
    assert "decision 0 seen as [['timeout', 'c'], ['recv', 'c', 'late']]" in problems, problems


def test_sigkilled_sender_and_receiver_processes_deliver_exactly_once() -> None:
    """Two processes on one file, SIGKILLed at random moments and restarted until done."""
    rng = random.Random(1414)
    messages = [[t, f"{t}{i}"] for i, t in enumerate(rng.choice("ab") for _ in range(200))]
    ops = [["select", 3600], ["recv", "a"], ["future", "b"], ["timeout", "a"],
           ["select", 0], ["recv", "b"]] * 3
    program = json.dumps({"messages": messages, "ops": ops, "pace": 0.005})
    with scratch_dir() as d:
        path = os.path.join(d, "j.db")
        procs: dict[str, subprocess.Popen[str]] = {}
        every: list[subprocess.Popen[str]] = []

        def spawn(role: str) -> None:
            proc = subprocess.Popen([sys.executable, str(CHILD), path, role],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, env=child_env())
            assert proc.stdin is not None
            proc.stdin.write(program)
            proc.stdin.close()
            procs[role] = proc
            every.append(proc)

        try:
            spawn("receiver")
            assert procs["receiver"].stdout is not None
            assert procs["receiver"].stdout.readline().strip() == "launched"
            launched = [procs["receiver"]]
            spawn("sender")
            live_kills = 0
            for _ in range(6):
                role = rng.choice(["sender", "receiver"])
                stdout = procs[role].stdout
                assert stdout is not None
                if procs[role] not in launched:
                    stdout.readline()  # "launched" (or nothing: it finished and exited)
                    launched.append(procs[role])
                threading.Event().wait(rng.uniform(0.0, 0.2))
                live_kills += procs[role].poll() is None
                procs[role].kill()
                procs[role].wait(30)
                spawn(role)
        finally:
            for proc in every:
                proc.kill()
                proc.wait(30)
                assert proc.stdout is not None
                proc.stdout.close()
        observed = Observed()
        app, _, _ = build(path, observed, workers=2)
        with app:  # recovers whatever the killed processes left pending
            got = app.handle("receiver").result(60)
            assert app.handle("sender").result(60) == len(messages)
        storage = inspect_journal(path)
        try:
            mailbox = storage.mailbox("receiver")
        finally:
            storage.close()
    assert live_kills > 0  # some SIGKILL found its process still at work
    assert observed.redecided() == []
    received = [e for e in got if e[0] == "recv"]
    for topic in "ab":
        assert [v for _, t, v in received if t == topic] == [
            v for t, v in messages if t == topic]
    assert len(mailbox) == len(messages)
    assert all(m.consumed_step is not None for m in mailbox)
