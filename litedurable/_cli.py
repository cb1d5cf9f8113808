"""The ``litedurable`` command: read and manage a journal file.

Every command but ``replay`` works on the file alone and never imports user code: a journal can
be inspected on a machine that does not have the application. ``resume`` and ``fork`` mark
workflows for the application's next recovery (at its next launch, or within one lease period
if it is running).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ._app import App, replay_check, step_info, workflow_info
from ._clock import to_datetime
from ._codec import Codec
from ._demo import main as demo
from ._errors import DurableError
from ._journal import Journal
from ._runtime import cancel_tree
from ._types import Status

__all__ = ["main"]


def _journal(args: argparse.Namespace, *, write: bool = False) -> Journal:
    if not os.path.exists(args.db):
        raise DurableError(f"no journal file at {args.db!r}; pass its path with --db PATH")
    return Journal(args.db, readonly=not write, busy_timeout=args.busy_timeout)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def cmd_list(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        rows = journal.list_workflows(status=args.status, name=args.name, limit=args.limit)
    codec = Codec(1 << 30)
    infos = [workflow_info(row, codec) for row in rows]
    if args.json:
        _print_json([{k: getattr(i, k) for k in i.__dataclass_fields__} for i in infos])
        return 0
    print(f"{'WORKFLOW ID':<40} {'NAME':<24} {'STATUS':<16} UPDATED")
    for i in infos:
        print(f"{i.workflow_id:<40} {i.name:<24} {i.status:<16} {i.updated_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _find(journal: Journal, workflow_id: str) -> Any:
    row = journal.get_workflow(workflow_id)
    if row is None:
        raise DurableError(f"no workflow with id {workflow_id!r}; see `litedurable list`")
    return row


def cmd_show(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        row = _find(journal, args.workflow_id)
    info = workflow_info(row, Codec(1 << 30))
    fields = {k: getattr(info, k) for k in info.__dataclass_fields__}
    fields["inputs"] = json.loads(row.inputs)
    fields["output"] = None if row.output is None else json.loads(row.output)
    _print_json(fields)
    return 0


def cmd_steps(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        _find(journal, args.workflow_id)
        steps = [step_info(r, Codec(1 << 30)) for r in journal.load_steps(args.workflow_id)]
    if args.json:
        _print_json([{k: getattr(s, k) for k in s.__dataclass_fields__} for s in steps])
        return 0
    print(f"{'STEP':>4}  {'KIND':<12} {'NAME':<24} OUTCOME")
    for s in steps:
        outcome = f"error {s.error}" if s.error else json.dumps(s.output, default=str)
        if s.candidates is not None:
            outcome += f"  (candidates {s.candidates}, winner {s.winner})"
        print(f"{s.step:>4}  {s.kind:<12} {s.name:<24} {outcome[:100]}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        rows = journal.schedules()
    print(f"{'SCHEDULE':<24} {'WORKFLOW':<24} {'CRON':<20} {'TZ':<16} {'STATE':<8} LAST FIRE")
    for r in rows:
        last = "never" if r.last_fire is None else f"{to_datetime(r.last_fire):%Y-%m-%d %H:%M:%S}Z"
        print(f"{r.name:<24} {r.workflow:<24} {r.cron:<20} {r.tz or 'UTC':<16} "
              f"{'paused' if r.paused else 'active':<8} {last}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        _find(journal, args.workflow_id)
        done = cancel_tree(journal, Codec(1 << 30), args.workflow_id, time.time())
    print(f"cancelled {len(done)} workflow(s): {', '.join(done) or 'none were pending'}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        row = _find(journal, args.workflow_id)
        version = _app_version(args)
        if row.status == Status.PENDING and version is not None:
            journal.resume(args.workflow_id, time.time(), owner=None, app_version=version)
            print(f"workflow {args.workflow_id!r} is pending and now records app version "
                  f"{version!r}; an application of that version recovers it once its owner is "
                  "gone")
            return 0
        if row.status in (Status.PENDING, Status.SUCCEEDED):
            print(f"workflow {args.workflow_id!r} is {row.status}; nothing to resume")
            return 0
        journal.resume(args.workflow_id, time.time(), owner=None, app_version=version)
    print(f"workflow {args.workflow_id!r} is pending again; the application resumes it at its "
          "next launch (or within one lease period if it is running)")
    return 0


def _app_version(args: argparse.Namespace) -> str | None:
    """``--app-version``, refused here if it could not be stored or shown."""
    version: str | None = args.app_version
    if version is not None and (not version or "\0" in version):
        raise DurableError(f"--app-version must be a non-empty label, not {version!r}")
    return version


def cmd_fork(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        row = _find(journal, args.workflow_id)
        target = args.new_id or str(uuid.uuid4())
        version = _app_version(args)
        copied = journal.fork(row, target, args.from_step, now=time.time(),
                              app_version=row.app_version if version is None else version,
                              owner=None)
    print(f"forked {args.workflow_id!r} into {target!r} ({copied} step rows copied); the "
          "application runs it at its next recovery")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        deleted = journal.delete_finished(time.time() - args.older_than)
    print(f"deleted {deleted} finished workflow(s) older than {args.older_than:g} s")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    module_name, _, attr = args.app.partition(":")
    if not attr:
        raise DurableError("replay needs MODULE:APP, e.g. `litedurable replay myjobs:app`")
    sys.path.insert(0, ".")
    app = getattr(importlib.import_module(module_name), attr)
    if not isinstance(app, App):
        raise DurableError(f"{args.app} is a {type(app).__name__}, not a litedurable.App")
    with _journal(args) as journal:
        ids = args.workflow_ids or [r.workflow_id for r in journal.list_workflows()]
        failures = 0
        for wid in ids:
            problem = replay_check(app, journal, _find(journal, wid))
            failures += problem is not None
            print(f"{wid}: {'ok' if problem is None else problem}")
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo(args.db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litedurable", description="Inspect and manage a litedurable journal file."
    )
    parser.add_argument("--db", default="litedurable.db",
                        help="journal file (default: litedurable.db)")
    parser.add_argument("--busy-timeout", type=float, default=5.0,
                        help="seconds to wait for another process's lock")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list workflows, newest first")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--name")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="show one workflow: status, inputs, output, error")
    p.add_argument("workflow_id")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("steps", help="show a workflow's journal, step by step")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_steps)

    p = sub.add_parser("schedules", help="list cron schedules, paused or active")
    p.set_defaults(fn=cmd_schedules)

    p = sub.add_parser("cancel", help="cancel a workflow and its non-detached children")
    p.add_argument("workflow_id")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("resume", help="make a cancelled/failed/exhausted workflow pending again")
    p.add_argument("workflow_id")
    p.add_argument("--app-version", help="record this app version on it (and on the children "
                   "resumed with it); moves a pending workflow too")
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser("fork", help="copy a workflow's steps below N into a new workflow")
    p.add_argument("workflow_id")
    p.add_argument("from_step", type=int)
    p.add_argument("--new-id", help="id of the new workflow (default: a random UUID)")
    p.add_argument("--app-version",
                   help="app version of the new workflow (default: the source's)")
    p.set_defaults(fn=cmd_fork)

    p = sub.add_parser("gc", help="delete finished workflows older than a given age")
    p.add_argument("--older-than", type=float, required=True, metavar="SECONDS")
    p.set_defaults(fn=cmd_gc)

    p = sub.add_parser("replay", help="replay recorded workflows against code, offline "
                                      "(imports MODULE; runs no step bodies; writes nothing)")
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("workflow_ids", nargs="*")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("demo", help="run a workflow in a child process, kill it, resume it")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except DurableError as exc:
        print(f"litedurable: error: {exc}", file=sys.stderr)
        return 2
