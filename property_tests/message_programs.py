"""The sender and receiver workflows of ``test_message_properties`` (also run as a child).

The sender sends its list of ``(topic, value)`` to workflow ``receiver``. The receiver runs a
program of receive operations over topics ``a`` and ``b`` (the sender's) and ``c`` (which only
a late message from outside ever reaches):

* ``("recv", t)``: ``ld.recv(t)``; ``("future", t)``: ``ld.message(t).result()``;
* ``("timeout", t)``: ``ld.recv(t, timeout=0)`` (a message, or a recorded timeout);
* ``("select", delay)``: ``select`` over ``message("a")``, ``message("b")`` and
  ``after(delay)``; then both message futures' results (a loser keeps what it consumed).

Then it drains ``a`` and ``b`` up to the counts sent, and ends with ``recv("c", timeout=0)``.
Every decision the workflow code sees (including on replays) is passed to ``observe(index,
event)``, outside the journal, so a test can check that a replay decides as the first run did.

Run as a child: ``python message_programs.py DB ROLE`` (ROLE ``receiver`` or ``sender``) with
the program (``messages``, ``ops``, the sender's ``pace`` in seconds per message) as JSON on
stdin; it prints ``launched`` and then ``done``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import litedurable as ld

Observe = Callable[[int, Any], None]


def build(path: str, observe: Observe, **options: Any) -> tuple[ld.App, Any, Any]:
    app = ld.App(path, app_version="messages", **options)

    @app.workflow(name="sender")
    def sender(messages: list[list[str]], pace: float = 0.0) -> int:
        for topic, value in messages:
            time.sleep(pace)  # a test's pacing, so a kill finds the pair at work (not journaled)
            ld.send("receiver", value, topic=topic)
        return len(messages)

    @app.workflow(name="receiver")
    def receiver(ops: list[list[Any]], counts: dict[str, int]) -> list[list[Any]]:
        seen: list[list[Any]] = []
        got = {"a": 0, "b": 0}

        def took(topic: str, value: str) -> None:
            if topic in got:
                got[topic] += 1
            seen.append(["recv", topic, value])
            observe(len(seen) - 1, seen[-1])

        for op, arg in ops:
            if op in ("recv", "future") and got[arg] >= counts[arg]:
                continue  # nothing more will come on this topic
            if op == "recv":
                took(arg, ld.recv(arg))
            elif op == "future":
                took(arg, ld.message(arg).result())
            elif op == "timeout":
                try:
                    took(arg, ld.recv(arg, timeout=0))
                except ld.WaitTimeoutError:
                    seen.append(["timeout", arg])
                    observe(len(seen) - 1, seen[-1])
            elif op == "select":
                if got["a"] >= counts["a"] or got["b"] >= counts["b"]:
                    continue
                fa, fb = ld.message("a"), ld.message("b")
                winner = ld.select([fa, fb, ld.after(arg)])
                seen.append(["select", [fa, fb].index(winner) if winner in (fa, fb) else 2])
                observe(len(seen) - 1, seen[-1])
                took("a", fa.result())
                took("b", fb.result())
        for topic in ("a", "b"):
            while got[topic] < counts[topic]:
                took(topic, ld.recv(topic))
        try:
            took("c", ld.recv("c", timeout=0))
        except ld.WaitTimeoutError:
            seen.append(["timeout", "c"])
            observe(len(seen) - 1, seen[-1])
        return seen

    return app, sender, receiver


def counts_of(messages: list[list[str]]) -> dict[str, int]:
    return {t: sum(1 for topic, _ in messages if topic == t) for t in ("a", "b")}


def main(path: str, role: str) -> None:
    program = json.load(sys.stdin)
    app, sender, receiver = build(path, lambda i, e: None, workers=2)
    app.launch()
    if role == "receiver":
        handle = app.start(receiver, program["ops"], counts_of(program["messages"]),
                           workflow_id="receiver")
    else:
        handle = app.start(sender, program["messages"], program.get("pace", 0.0),
                           workflow_id="sender")
    print("launched", flush=True)
    handle.result()
    print("done", flush=True)
    app.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
