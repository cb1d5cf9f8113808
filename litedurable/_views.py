"""What the ``litedurable`` command shows of a workflow: one snapshot (JSON-able, no
relative times, so two snapshots differ only when the workflow changed), its text view, its
steps as a table, and its children as a tree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from . import _format as fmt
from ._codec import Codec
from ._records import step_info, workflow_info
from ._storage import MessageRow, PromiseRow, Storage, WorkflowRow
from ._types import Status, StepInfo, StepKind

__all__ = ["fields", "show_text", "snapshot", "step_json", "steps_table", "topic", "tree",
           "tree_lines"]

CODEC = Codec(1 << 30)


def fields(record: Any) -> dict[str, Any]:
    """A dataclass record as a dict of its fields."""
    return {k: getattr(record, k) for k in record.__dataclass_fields__}


LONGEST = 400
"""Characters of a value the text views show (``--json`` has it whole)."""


def _value(value: Any, limit: int = LONGEST) -> str:
    """A value as one line of JSON, cut at ``limit`` characters with a note saying so."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters; --json has them)"


def topic(stored: str) -> str | None:
    """A stored topic as the API names it: ``""`` is the default topic, ``None``."""
    return stored or None


_TIME_KINDS = {StepKind.NOW, StepKind.SLEEP, StepKind.AFTER}
"""Steps whose output is an instant (epoch seconds): shown as ISO 8601."""


def _step_output(step: StepInfo) -> Any:
    if step.kind in _TIME_KINDS and isinstance(step.output, int | float):
        return fmt.iso(step.output, precise=True)
    return step.output


def _winner_step(step: StepInfo) -> int | None:
    """The step number of a select's winner (None: the timeout won, or not decided yet)."""
    if step.candidates is None or step.winner is None or not 0 <= step.winner < len(
            step.candidates):
        return None
    return step.candidates[step.winner]


def _seconds_between(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())


def step_json(step: StepInfo) -> dict[str, Any]:
    shown = fields(step)
    shown["output"] = _step_output(step)
    shown["duration_seconds"] = _seconds_between(step.started_at, step.finished_at)
    shown["attempts"] = [{"started_at": start, "finished_at": end, "error": error}
                         for start, end, error in step.attempts]
    if step.candidates is not None:
        shown["winner_step"] = _winner_step(step)
    return shown


def _step_outcome(step: StepInfo, now: float, ended: float | None = None) -> str:
    """What a step did, in one line: its output, its error, a select's decision, a timer."""
    if step.candidates is not None:
        candidates = ", ".join(str(c) for c in step.candidates)
        if step.finished_at is None:
            return f"waiting on candidates {candidates}"
        won = _winner_step(step)
        return f"candidates {candidates}; " + (
            f"winner step {won}" if won is not None else "the timeout won")
    if step.error:
        return f"error {step.error}"
    if step.kind in (StepKind.SLEEP, StepKind.AFTER) and isinstance(step.output, int | float):
        if ended is not None and step.output > ended:  # a timer that lost, or was cut short
            return f"never woke: its workflow ended first (it was due {fmt.iso(step.output)})"
        verb = "wakes" if step.output > now else "woke"
        return f"{verb} at {fmt.iso(step.output)} ({fmt.relative(step.output, now)})"
    if step.kind == StepKind.NOW and isinstance(step.output, int | float):
        return fmt.iso(step.output)
    if step.finished_at is None and step.output is None:
        return "(running or waiting)"
    return _value(step.output, 100)


def steps_table(steps: list[StepInfo], now: float, ended: float | None = None) -> list[str]:
    """The steps as a table; ``ended``: when the workflow ended, if it has."""
    rows = []
    for s in steps:
        took = _seconds_between(s.started_at, s.finished_at)
        rows.append((s.step, s.kind, s.name, fmt.iso(s.started_at),
                     "-" if took is None else fmt.duration(took), 1 + len(s.attempts),
                     s.site or "-", s.owner or "-", _step_outcome(s, now, ended)[:LONGEST]))
    return fmt.table(["STEP", "KIND", "NAME", "STARTED", "DURATION", "ATTEMPTS", "SITE", "OWNER",
                      "OUTCOME"], rows, [6, 12, 24, 25, 12, 8, 24, 24])


def snapshot(journal: Storage, row: WorkflowRow) -> tuple[dict[str, Any], list[StepInfo]]:
    """Everything ``show`` says about a workflow, as JSON-able values (no relative times, so
    two snapshots differ only when the workflow changed), and its steps."""
    workflow_id = row.workflow_id
    info = workflow_info(row, CODEC)
    shown = fields(info)
    finished = info.updated_at if info.status.is_terminal else None
    shown["finished_at"] = finished
    shown["duration_seconds"] = _seconds_between(info.created_at, finished)
    shown["deadline"] = None if row.deadline is None else fmt.instant(row.deadline)
    shown["inputs"] = CODEC.display(row.inputs)
    shown["output"] = None if row.output is None else CODEC.display(row.output)
    shown["traceback"] = (CODEC.error_traceback(row.error) or None) if row.error else None
    steps = [step_info(r, CODEC) for r in journal.load_steps(workflow_id)]
    shown["steps"] = [step_json(s) for s in steps]
    shown["children"] = [{"workflow_id": c.workflow_id, "name": c.name, "status": c.status}
                          for c in reversed(journal.list_workflows(parent=workflow_id))]
    shown["messages"] = [_message(m) for m in journal.mailbox(workflow_id)]
    shown["events"] = {key: CODEC.display(value)
                        for key, value in journal.events(workflow_id).items()}
    shown["streams"] = {key: {"items": count, "closed": closed}
                         for key, (count, closed) in journal.streams(workflow_id).items()}
    shown["promises"] = [_promise(p) for p in journal.promises(workflow_id)]
    return shown, steps


def _message(row: MessageRow) -> dict[str, Any]:
    """A mailbox message for ``show``: read (and by which step) or unread."""
    return {
        "topic": topic(row.topic), "message": CODEC.display(row.payload),
        "sender": row.sender, "sent_at": fmt.instant(row.created_at),
        "read": row.consumed_step is not None, "read_by_step": row.consumed_step,
        "read_at": None if row.consumed_at is None else fmt.instant(row.consumed_at),
        "idempotency_key": row.key,
    }


def _promise(row: PromiseRow) -> dict[str, Any]:
    """A durable promise for ``show``: settled or not, with its value or error."""
    return {
        "promise_id": row.promise_id, "step": row.step, "settled": row.settled_at is not None,
        "value": None if row.output is None else CODEC.display(row.output),
        "error": None if row.error is None else CODEC.error_summary(row.error),
        "created_at": fmt.instant(row.created_at),
        "settled_at": None if row.settled_at is None else fmt.instant(row.settled_at),
    }


def show_text(snap: dict[str, Any], steps: list[StepInfo], now: float) -> list[str]:
    """``show``'s readable view of a snapshot."""
    created, finished = snap["created_at"], snap["finished_at"]
    lines = [f"workflow   {snap['workflow_id']}", f"name       {snap['name']}",
             f"status     {snap['status']}",
             f"created    {fmt.iso(created)} ({fmt.relative(created, now)})"]
    if finished is not None:
        lines.append(f"finished   {fmt.iso(finished)} ({fmt.relative(finished, now)}), after "
                     f"{fmt.duration(snap['duration_seconds'])}")
    else:
        lines.append(f"updated    {fmt.iso(snap['updated_at'])} "
                     f"({fmt.relative(snap['updated_at'], now)})")
    if snap["deadline"] is not None:
        lines.append(f"deadline   {fmt.iso(snap['deadline'])} "
                     f"({fmt.relative(snap['deadline'], now)})")
    for label, key in (("parent", "parent_id"), ("owner", "owner")):
        if snap[key] is not None:
            lines.append(f"{label:<10} {snap[key]}")
    lines.append(f"app        {snap['app_version']}")
    if snap["recovery_attempts"]:
        lines.append(f"recovered  {snap['recovery_attempts']} time(s)")
    lines.append(f"inputs     {_value(snap['inputs'])}")
    if snap["error"] is not None:
        lines.append(f"error      {snap['error']}")
        lines += ["  " + line for line in (snap["traceback"] or "").rstrip().splitlines()]
    elif snap["status"] == Status.SUCCEEDED:
        lines.append(f"output     {_value(snap['output'])}")
    lines += ["", f"steps ({len(steps)})"]
    ended = (None if finished is None else finished.timestamp()
             if isinstance(finished, datetime) else datetime.fromisoformat(finished).timestamp())
    lines += ["  " + line for line in steps_table(steps, now, ended)] if steps else [
        "  none" if snap["finished_at"] is not None else "  none yet"]
    for s in steps:
        lines += [f"  step {s.step} attempt {n} failed after "
                  f"{fmt.duration(_seconds_between(start, end) or 0)}: {error}"
                  for n, (start, end, error) in enumerate(s.attempts, 1)]
    timers = [s for s in steps if s.kind in (StepKind.SLEEP, StepKind.AFTER)
              and isinstance(s.output, int | float)]
    if timers:
        lines += ["", "timers"]
        lines += [f"  step {t.step} {t.kind}: {_step_outcome(t, now, ended)}" for t in timers]
    if snap["children"]:
        lines += ["", "children"]
        lines += [f"  {c['workflow_id']}  {c['name']}  {c['status']}" for c in snap["children"]]
    if snap["messages"]:
        lines += ["", "messages"]
        for m in snap["messages"]:
            state = (f"read by step {m['read_by_step']}" if m["read"] else "unread")
            lines.append(f"  {m['topic'] or '(default topic)'}: {_value(m['message'])} from "
                         f"{m['sender'] or '(outside)'} at {fmt.iso(m['sent_at'])}, {state}")
    if snap["events"]:
        lines += ["", "events"]
        lines += [f"  {key} = {_value(value)}" for key, value in snap["events"].items()]
    if snap["streams"]:
        lines += ["", "streams"]
        lines += [f"  {key}: {s['items']} item(s), {'closed' if s['closed'] else 'open'}"
                  for key, s in snap["streams"].items()]
    if snap["promises"]:
        lines += ["", "promises"]
        for p in snap["promises"]:
            state = (("rejected: " + p["error"]) if p["error"] else
                     ("resolved: " + _value(p["value"]))) if p["settled"] else "unsettled"
            lines.append(f"  {p['promise_id']} (step {p['step']}): {state}")
    return lines


def tree(journal: Storage, row: WorkflowRow) -> dict[str, Any]:
    """A workflow and its descendants: id, name, status, children (oldest first)."""
    children = reversed(journal.list_workflows(parent=row.workflow_id))
    return {"workflow_id": row.workflow_id, "name": row.name, "status": row.status,
            "children": [tree(journal, child) for child in children]}


def tree_lines(node: dict[str, Any], prefix: str = "", last: bool = True,
                root: bool = True) -> Iterator[str]:
    branch = "" if root else ("└── " if last else "├── ")
    yield f"{prefix}{branch}{node['workflow_id']}  {node['name']}  {node['status']}"
    inner = prefix if root else prefix + ("    " if last else "│   ")
    children = node["children"]
    for i, child in enumerate(children):
        yield from tree_lines(child, inner, i == len(children) - 1, root=False)


