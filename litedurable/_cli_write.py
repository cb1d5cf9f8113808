"""The ``litedurable`` commands that change a journal or run an application: cancel, resume,
fork, gc, import, start, schedules pause/resume/remove/trigger, replay, worker and demo.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import _format as fmt
from ._app import UNVERSIONED, App, replay_check
from ._backends import describe_location, shown_location
from ._cli_common import (
    _app_journal,
    _app_version,
    _definition,
    _find,
    _journal,
    _load_app,
    _NotFound,
    _Refused,
    _same_file,
    _Usage,
)
from ._cli_read import (
    _limit,
    _list_schedules,
)
from ._codec import Codec
from ._cron import Cron
from ._demo import main as demo
from ._errors import (
    JournalError,
    WorkflowCancelledError,
    WorkflowConflictError,
)
from ._queues import Queue
from ._registry import WorkflowDef
from ._storage import QueueEntry, QueueSpec, Storage
from ._types import Status, check_workflow_id


def cmd_schedules(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "list":
        if args.schedule is not None:
            raise _Usage("`schedules list` takes no NAME; pause, resume, remove and trigger do")
        return _list_schedules(args)
    if args.schedule is None:
        raise _Usage(f"`schedules {action}` needs the schedule's NAME (see `litedurable "
                     "schedules`)")
    if action == "trigger":
        return _trigger(args)
    with _journal(args, write=True) as journal:
        done = (journal.delete_schedule(args.schedule) if action == "remove" else
                journal.pause_schedule(args.schedule, action == "pause", time.time()))
    if not done:
        raise _NotFound(f"no schedule named {args.schedule!r} in "
                        f"{shown_location(args.db)}; see `litedurable "
                        "schedules`")
    print({"pause": f"schedule {args.schedule!r} is paused: no process starts its firings",
           "resume": f"schedule {args.schedule!r} is active again, from its next fire time "
                     "(firings missed while paused are not made up)",
           "remove": f"schedule {args.schedule!r} is removed; firings already started go on "
                     "(an App that declares it in code stores it again at its next launch)",
           }[action])
    return 0


def _place(app: App, journal: Storage, definition: WorkflowDef, workflow_id: str,
           args_: Sequence[Any], kwargs: dict[str, Any], queue: QueueEntry | None) -> str:
    """Write workflow ``definition(*args_, **kwargs)`` owned by no process (or enqueued) and
    say who runs it; an existing id of the same name is left as it is."""
    inputs = app.codec.encode_args(definition.fn, args_, kwargs,
                                   f"the arguments of workflow {definition.name!r}")
    now = time.time()
    deadline = None if definition.timeout is None or queue is not None else (
        now + definition.timeout)
    version = UNVERSIONED if app._app_version is None else app._app_version
    created, row = journal.insert_workflow(
        workflow_id=workflow_id, name=definition.name, inputs=inputs, now=now,
        app_version=version, parent_id=None, owner=None, deadline=deadline, queue=queue)
    if row.name != definition.name:
        raise WorkflowConflictError(f"workflow id {workflow_id!r} already belongs to a "
                                    f"{row.name!r} workflow, not {definition.name!r}; use "
                                    "another id")
    if not created:
        return f"workflow {workflow_id!r} already exists ({row.status}); nothing was started"
    if queue is not None:
        return (f"enqueued workflow {workflow_id!r} on queue {queue.queue!r}; a worker "
                "consuming that queue runs it")
    return (f"started workflow {workflow_id!r} ({definition.name}), owned by no process yet: "
            "a running App of this journal takes it within one lease period, or at its next "
            "launch")


def _trigger(args: argparse.Namespace) -> int:
    app = _app_journal(args, "schedules trigger")
    with _journal(args, write=True) as journal:
        row = next((r for r in journal.schedules() if r.name == args.schedule), None)
        if row is None:
            raise _NotFound(f"no schedule named {args.schedule!r} in "
                            f"{shown_location(args.db)}; see "
                            "`litedurable schedules`")
        definition = _definition(app, args.app, row.workflow)
        fire = datetime.now(Cron(row.cron, row.tz).zone).replace(microsecond=0)
        print(_place(app, journal, definition, f"{row.name}@{fire.isoformat()}", (fire,), {},
                     None))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    try:
        given = json.loads(args.args)
    except ValueError as exc:
        raise _Usage(f"--args is not JSON ({exc}); pass a list of positional arguments or an "
                     "object of keyword arguments, e.g. --args '[1, \"a\"]'") from None
    if not isinstance(given, list | dict):
        given = [given]
    if args.queue is None and (args.priority is not None or args.partition_key is not None):
        raise _Usage("--priority and --partition-key apply to an enqueue: add --queue QUEUE")
    positional = given if isinstance(given, list) else []
    keywords = given if isinstance(given, dict) else {}
    app = _app_journal(args, "start")
    definition = _definition(app, args.app, args.workflow)
    try:
        inspect.signature(definition.fn).bind(*positional, **keywords)
    except TypeError as exc:
        raise _Usage(f"--args do not fit workflow {definition.name!r}: {exc}") from None
    workflow_id = str(uuid.uuid4()) if args.id is None else check_workflow_id(args.id)
    with _journal(args, write=True, create=True) as journal:
        entry = None
        if args.queue is not None:
            spec = app._queues.get(args.queue) or next(
                (s.spec for s in journal.queue_stats(time.time())
                 if s.spec.name == args.queue), None)
            if spec is None:
                raise _Usage(f"no queue named {args.queue!r}: {args.app} does not declare it "
                             "and no App has declared it on this journal")
            try:
                entry = Queue(app, spec).entry(args.priority or 0, None, args.partition_key,
                                               definition.timeout)
            except ValueError as exc:
                raise _Usage(str(exc)) from None
        print(_place(app, journal, definition, workflow_id, positional, keywords, entry))
    print(workflow_id)
    return 0


# -- queues ---------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        row = _find(journal, args.workflow_id)
        done = journal.cancel_tree(
            args.workflow_id,
            Codec(1 << 30).encode_error(
                WorkflowCancelledError(f"workflow {args.workflow_id!r} was cancelled")),
            time.time(),
        )
    if not done:
        raise _Refused(f"workflow {args.workflow_id!r} is {row.status} and none of its children "
                       "is pending or enqueued: nothing to cancel, nothing was changed")
    print(f"cancelled {len(done)} workflow(s): {', '.join(done)}")
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
        if row.status == Status.ENQUEUED and version is not None:
            journal.resume(args.workflow_id, time.time(), owner=None, app_version=version)
            print(f"workflow {args.workflow_id!r} is enqueued and now records app version "
                  f"{version!r}; a worker of that version consuming its queue runs it")
            return 0
        if row.status in (Status.PENDING, Status.ENQUEUED, Status.SUCCEEDED):
            raise _Refused(f"workflow {args.workflow_id!r} is {row.status}: nothing to resume, "
                           "nothing was changed (resume makes a cancelled, failed, exhausted or "
                           "nondeterministic workflow pending again, or enqueued again if it came "
                           "from a queue)")
        journal.resume(args.workflow_id, time.time(), owner=None, app_version=version)
        now = journal.get_workflow(args.workflow_id)
    if now is not None and now.status == Status.ENQUEUED:
        print(f"workflow {args.workflow_id!r} went back to its queue (enqueued again); a worker "
              "consuming that queue runs it, after the workflows ahead of it")
        return 0
    print(f"workflow {args.workflow_id!r} is pending again; the application resumes it at its "
          "next launch (or within one lease period if it is running)")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    # The checks of App.fork, made before the file is opened.
    if args.from_step < 0:
        raise _Usage(f"from_step must be an int >= 0, got {args.from_step}")
    target = str(uuid.uuid4()) if args.new_id is None else check_workflow_id(args.new_id)
    with _journal(args, write=True) as journal:
        row = _find(journal, args.workflow_id)
        version = _app_version(args)
        copied = journal.fork(row, target, args.from_step, now=time.time(),
                              app_version=row.app_version if version is None else version,
                              owner=None)
    print(f"forked {args.workflow_id!r} into {target!r} ({copied} step rows copied); the "
          "application runs it at its next recovery")
    return 0


# -- gc, backup, check, export, import ------------------------------------------------------


def cmd_gc(args: argparse.Namespace) -> int:
    before = time.time() - args.older_than
    age = fmt.duration(args.older_than)
    if args.dry_run:
        with _journal(args) as journal:
            rows = journal.list_workflows()
        # As delete_finished: a child its unfinished parent may still wait for stays.
        unfinished = {r.workflow_id for r in rows if not Status(r.status).is_terminal}
        ids = [r.workflow_id for r in rows if Status(r.status).is_terminal
               and r.updated_at < before and r.parent_id not in unfinished]
        print(f"would delete {len(ids)} finished workflow(s) not updated for {age} (since "
              f"{fmt.iso(before)}); nothing was deleted")
        for wid in ids:
            print(f"  {wid}")
        return 0
    with _journal(args, write=True) as journal:
        deleted = journal.delete_finished(before)
    print(f"deleted {deleted} finished workflow(s) not updated for {age} (since "
          f"{fmt.iso(before)})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(args.file, encoding="utf-8") as source:
                lines = source.read().splitlines()
    except OSError as exc:
        raise _Usage(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _Usage(f"{args.file} is not text (UTF-8 JSON lines written by `litedurable "
                     "export`); nothing was imported") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise _Usage(f"{args.file} line {number} is not JSON ({exc}); nothing was "
                         "imported") from None
        if not isinstance(record, dict) or not isinstance(record.get("workflow"), dict):
            raise _Usage(f"{args.file} line {number} is not a `litedurable export` record; "
                         "nothing was imported")
        records.append(record)
    if not records:
        print(f"{args.file} holds no workflows; nothing was imported")
        return 0
    with _journal(args, write=True, create=True) as journal:
        try:  # every record or none: a child must not land under another workflow's id
            imported = journal.import_workflows(records)
        except WorkflowConflictError as exc:
            raise _Refused(str(exc)) from None
        except JournalError as exc:
            if type(exc) is not JournalError:  # the journal's own trouble
                raise
            raise _Usage(f"{args.file} holds a record this litedurable cannot import ({exc}); "
                         "nothing was imported") from None
    print(f"imported {len(imported)} workflow(s): {', '.join(imported)}")
    return 0


# -- replay, worker, demo -------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    app = _load_app(args.app, "replay")
    with _journal(args) as journal:
        if args.workflow_ids:
            rows = [_find(journal, wid) for wid in args.workflow_ids]
        else:  # every workflow this App's code can replay; the others are not its own
            everything = journal.list_workflows()
            rows = [r for r in everything if r.name in app.registry.workflows]
            others = sorted({r.name for r in everything} - set(app.registry.workflows))
            if others:
                print(f"skipped {len(everything) - len(rows)} workflow(s) of names {args.app} "
                      f"does not register: {', '.join(others)}")
        failures = 0
        for row in rows:
            problem = replay_check(app, journal, row)
            failures += problem is not None
            print(f"{row.workflow_id}: {'ok' if problem is None else problem}")
    return 1 if failures else 0


def cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(message)s")
    app = _load_app(args.app, "worker")
    if args.db_given and not _same_file(args.db, app.path):
        raise _Usage(f"--db {shown_location(args.db)} is not the journal {args.app} opens "
                     f"({shown_location(app.path)}); a worker serves its App's own journal: drop "
                     "--db, or change the journal the App opens")
    # A signal before serve() has its own handlers is kept, not fatal: the worker then
    # closes as serve() would (serve() restores these handlers when it returns).
    caught: list[int] = []

    def early(signum: int, _frame: object) -> None:
        caught.append(signum)
        app._serving.set()  # serve() returns at once if it had begun

    previous = {signum: signal.signal(signum, early)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.launch()
        with app._lock:
            queues = list(app._queues.values())
            schedules = sorted(app._schedules.values(), key=lambda row: row.name)
        print(f"worker {args.app} serving {describe_location(app.path)} (pid {os.getpid()})")
        for spec in queues:
            print(f"  queue {spec.name}: {_describe_queue(spec)}")
        for row in schedules:
            print(f"  schedule {row.name}: {row.workflow} at {row.cron!r} ({row.tz or 'UTC'})")
        if not queues and not schedules:
            print("  no queues or schedules declared: recovers pending workflows only")
        print("stop it with SIGINT (Ctrl-C) or SIGTERM; pending work stays in the journal for "
              "the next start", flush=True)
        if not caught:
            app.serve()  # until SIGINT or SIGTERM, then a graceful close
    finally:
        app.close()  # a no-op after serve(); closes a launch that failed halfway
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"worker stopped; {describe_location(app.path)} keeps what is left for the next start",
          flush=True)
    return 0


def _describe_queue(spec: QueueSpec) -> str:
    parts = [f"concurrency {_limit(spec.concurrency)}",
             f"per worker {_limit(spec.worker_concurrency)}",
             "rate limit " + ("-" if spec.rate_limit is None else
                              f"{spec.rate_limit[0]} per {spec.rate_limit[1]:g} s")]
    if spec.partitioned:
        parts.append("partitioned (concurrency per partition key)")
    return ", ".join(parts)


def cmd_demo(args: argparse.Namespace) -> int:
    return demo(args.db)


# -- arguments ------------------------------------------------------------------------------


