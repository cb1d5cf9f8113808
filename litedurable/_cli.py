"""The ``litedurable`` command: read and manage a journal file.

Every command but ``replay``, ``worker``, ``start`` and ``schedules trigger`` works on the file
alone and never imports user code: a journal can be inspected on a machine that does not have
the application. ``worker MODULE:APP`` imports the application and serves it (``App.serve``)
until SIGINT or SIGTERM. ``start`` and ``schedules trigger`` import it to find the workflow and
encode its arguments, then write the workflow into the journal owned by no process (or
enqueued); a running App (a worker) of the file takes it within one lease period, or at its
next launch. ``resume`` and ``fork`` mark workflows for the application's next recovery in the
same way.

The journal is ``--db PATH`` (before or after the command), else ``$LITEDURABLE_DB``, else
``litedurable.db``. Times are ISO 8601 with their zone; tables say durations as a person does
("in 3 h 12 min", "2 min ago"); every read command takes ``--json`` (lists: ``--jsonl`` too).

Commands that write (``cancel``, ``resume``, ``fork``, ``gc``, ``import``, ``start``,
``schedules pause|resume|remove|trigger``) run SQLite's ``quick_check`` first and refuse a
damaged file; the read commands check it too and say so on stderr (exit 4) after showing what
they could read.

Exit status (also in ``litedurable --help``)::

  0    done
  1    refused or found a problem: cancel/resume of a workflow in a state that does not
       allow it, fork or import onto a taken id, backup onto an existing file, replay
       found a difference; `result` of a workflow that failed or was cancelled
  2    usage: bad arguments, a bad --from-step or --new-id, a MODULE:APP that cannot be
       imported (or names no App), a --db that is not the App's file, a bad export file
  3    not found: no journal file at --db, no workflow or schedule with that name
  4    the journal cannot be used: damaged (`check` found a problem), locked past
       --busy-timeout, read-only, or written by another program or a newer litedurable
  5    timeout: `result --timeout` passed before the workflow ended
  130  interrupted (Ctrl-C), e.g. to stop `watch`
  141  the output was closed early (``litedurable list | head``); stops quietly, as a
       process killed by SIGPIPE would
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import logging
import os
import signal
import sys
import time
import uuid
import webbrowser
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import _format as fmt
from . import _views as views
from ._app import UNVERSIONED, App, replay_check
from ._backends import open_storage
from ._codec import Codec
from ._cron import Cron
from ._demo import main as demo
from ._errors import (
    DurableError,
    JournalCorruptError,
    JournalError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from ._queues import Queue
from ._records import queue_info, schedule_info, step_info, workflow_info
from ._registry import WorkflowDef
from ._storage import QueueEntry, QueueSpec, Storage, WorkflowRow
from ._types import QueueInfo, Status, check_workflow_id
from ._ui import export_html, serve

__all__ = ["main"]


EXIT_STATUS = """exit status:
  0    done
  1    refused or found a problem (cancel/resume of a workflow in a state that does not
       allow it, fork or import onto a taken id, backup onto an existing file, replay found
       a difference); `result` of a workflow that failed or was cancelled
  2    usage: bad arguments, a bad --from-step or --new-id, a MODULE:APP that cannot be
       imported (or names no App), a --db that is not the App's file, a bad export file
  3    not found: no journal file at --db, no workflow or schedule with that name
  4    the journal cannot be used: damaged (`check` found a problem), locked past
       --busy-timeout, read-only, or written by another program or a newer litedurable
  5    timeout: `result --timeout` passed before the workflow ended
  130  interrupted (Ctrl-C), e.g. to stop `watch`
  141  the output was closed early (litedurable list | head)

the journal: --db PATH (before or after the command), else $LITEDURABLE_DB, else
litedurable.db. Times are ISO 8601 with their zone.
"""

DEFAULT_DB = "litedurable.db"
ENV_DB = "LITEDURABLE_DB"
POLL = 0.1
"""Seconds between two looks at the file by ``result`` and ``watch`` (no App, no watcher)."""
REREAD = 2.0
"""Seconds after which ``watch`` reads the workflow again even if the file looks unchanged."""
CODEC = views.CODEC
"""Decodes for display only: a reader without the application structures nothing back."""


class _Refused(DurableError):
    """The command ran and changed nothing, because the workflow's state does not allow it."""


class _Usage(DurableError):
    """An argument the parser accepted but the command cannot use."""


class _NoJournal(DurableError, LookupError):
    """No file at ``--db``: the command must not create one."""


class _NotFound(DurableError, LookupError):
    """No schedule (or other named thing) by that name."""


class _Timeout(DurableError):
    """``result --timeout`` passed before the workflow ended."""


def _exit_code(exc: DurableError) -> int:
    # Conflict before usage: WorkflowConflictError is a ValueError, as InvalidIdError is.
    if isinstance(exc, JournalError):
        return 4
    if isinstance(exc, WorkflowNotFoundError | _NoJournal | _NotFound):
        return 3
    if isinstance(exc, WorkflowConflictError | _Refused):
        return 1
    if isinstance(exc, _Timeout):
        return 5
    return 2


def _journal(args: argparse.Namespace, *, write: bool = False, create: bool = False) -> Storage:
    """Open ``--db``, after SQLite's ``quick_check``: a command that writes refuses a damaged
    file (writing could spread the damage, or delete rows it misreads); one that reads goes on
    but says so and exits 4, so a script does not take a partial answer for the whole."""
    if not create and not os.path.exists(args.db):
        raise _NoJournal(f"no journal file at {args.db!r}; pass its path with --db PATH (or "
                         f"set ${ENV_DB})")
    journal = open_storage(args.db, readonly=not write, busy_timeout=args.busy_timeout)
    try:
        problem = journal.quick_check()
    except BaseException:
        journal.close()
        raise
    if problem != "ok":
        summary = "; ".join(problem.splitlines()[:3])
        if write:
            journal.close()
            raise JournalCorruptError(
                f"{args.db} is damaged (SQLite quick_check: {summary}); this command writes, "
                "so it refused and changed nothing. Restore a backup; the read commands "
                "(list, show, steps) still show what is readable."
            )
        args.damaged = True
        print(f"litedurable: warning: {args.db} is damaged (SQLite quick_check: {summary}); "
              "what is shown may be incomplete. Restore a backup.", file=sys.stderr)
    return journal


def _print_json(value: Any) -> None:
    print(fmt.json_text(value))


def _emit(args: argparse.Namespace, items: list[dict[str, Any]]) -> bool:
    """Print ``items`` as JSON (``--json``) or JSON lines (``--jsonl``); False: neither asked."""
    if getattr(args, "jsonl", False):
        for item in items:
            print(fmt.json_text(item, indent=None))
        return True
    if args.json:
        _print_json(items)
        return True
    return False


# -- list, count ----------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow filters of ``list`` and ``count`` (storage keywords)."""
    now = time.time()
    filters = {"status": args.status, "name": args.name, "queue": args.queue,
               "parent": args.parent, "app_version": args.app_version}
    for key in ("since", "until"):
        text = getattr(args, key)
        if text is not None:
            try:
                filters[key] = fmt.moment(text, now)
            except ValueError as exc:
                raise _Usage(f"--{key}: {exc}") from None
    return {k: v for k, v in filters.items() if v is not None}


def cmd_list(args: argparse.Namespace) -> int:
    filters = _filters(args)
    limit = None if args.limit == 0 else args.limit
    with _journal(args) as journal:
        rows = journal.list_workflows(**filters, limit=limit, offset=args.offset)
        total = sum(journal.count_workflows(**filters).values())
        # Pending and enqueued workflows only: one indexed read each, and a finished workflow
        # never reads its mailbox again.
        unread = {r.workflow_id: [views.topic(t)
                                  for t in sorted(journal.unread_topics(r.workflow_id))]
                  for r in rows if r.status in (Status.PENDING, Status.ENQUEUED)}
    infos = [workflow_info(row, CODEC) for row in rows]
    more = max(0, total - args.offset - len(rows))
    footer = (f"... {more} more; use --offset {args.offset + len(rows)} or --limit "
              f"(--limit 0: all)") if more else None
    if _emit(args, [{**views.fields(i), "unread_topics": unread.get(i.workflow_id, [])}
                    for i in infos]):
        if footer:
            print(footer, file=sys.stderr)
        return 0
    now = time.time()
    table = [(i.workflow_id, i.name, i.status, fmt.iso(i.created_at),
              fmt.relative(i.updated_at, now),
              ", ".join(t or "(default topic)" for t in unread.get(i.workflow_id, [])))
             for i in infos]
    for line in fmt.table(["WORKFLOW ID", "NAME", "STATUS", "CREATED", "UPDATED",
                           "UNREAD MESSAGES ON"], table, [36, 24, 16, 25, 16]):
        print(line)
    if footer:
        print(footer)
    elif not rows:
        print(f"no workflows match ({total} in all)" if args.offset else "no workflows match")
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        counts = journal.count_workflows(**_filters(args))
    by_status = {s.value: counts.get(s.value, 0) for s in Status}
    if args.json:
        _print_json({**by_status, "total": sum(counts.values())})
        return 0
    for line in fmt.table(["STATUS", "WORKFLOWS"],
                          [*((s, n) for s, n in by_status.items() if n),
                           ("total", sum(counts.values()))], [16]):
        print(line)
    return 0


def _find(journal: Storage, workflow_id: str) -> WorkflowRow:
    row = journal.get_workflow(check_workflow_id(workflow_id))
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}; see `litedurable list`")
    return row


# -- show, steps, tree, result, watch -------------------------------------------------------

def cmd_show(args: argparse.Namespace) -> int:
    if args.follow:
        return cmd_watch(args)
    with _journal(args) as journal:
        snap, steps = views.snapshot(journal, _find(journal, args.workflow_id))
    if args.json:
        _print_json(snap)
    else:
        print("\n".join(views.show_text(snap, steps, time.time())))
    return 0


def cmd_steps(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        _find(journal, args.workflow_id)
        steps = [step_info(r, CODEC) for r in journal.load_steps(args.workflow_id)]
    if _emit(args, [views.step_json(s) for s in steps]):
        return 0
    print("\n".join(views.steps_table(steps, time.time())))
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        tree = views.tree(journal, _find(journal, args.workflow_id))
    if args.json:
        _print_json(tree)
    else:
        print("\n".join(views.tree_lines(tree)))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _journal(args) as journal:
        row = _find(journal, args.workflow_id)
        while not Status(row.status).is_terminal:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise _Timeout(f"workflow {args.workflow_id!r} is still {row.status} after "
                               f"{args.timeout:g} s")
            time.sleep(POLL if left is None else min(POLL, left))
            row = _find(journal, args.workflow_id)
    if row.status == Status.SUCCEEDED:
        _print_json(None if row.output is None else CODEC.display(row.output))
        return 0
    summary = CODEC.error_summary(row.error) if row.error else "(no error recorded)"
    print(f"litedurable: workflow {args.workflow_id!r} {row.status}: {summary}", file=sys.stderr)
    if row.error and (tb := CODEC.error_traceback(row.error)):
        print(tb.rstrip(), file=sys.stderr)
    return 1


def cmd_watch(args: argparse.Namespace) -> int:
    """Print the workflow, then again each time it changes, until it ends (or Ctrl-C); with
    ``--json``, one JSON snapshot a line.

    A read-only reader has no commit counter to poll, so the file's (and its WAL's) size and
    modification time say when to read the workflow again; every ``REREAD`` seconds it is
    read anyway, in case a commit left both unchanged."""
    shown: str | None = None
    with _journal(args) as journal:
        while True:
            state, read_at = _file_state(args.db), time.monotonic()
            snap, steps = views.snapshot(journal, _find(journal, args.workflow_id))
            key = fmt.json_text(snap)
            if key != shown and args.json:  # JSON lines: one snapshot a line
                print(fmt.json_text(snap, indent=None), flush=True)
            elif key != shown:
                if shown is not None:
                    print(f"\n--- changed, {fmt.iso(time.time())} ---")
                print("\n".join(views.show_text(snap, steps, time.time())), flush=True)
            shown = key
            if Status(snap["status"]).is_terminal:
                return 0
            while _file_state(args.db) == state and time.monotonic() - read_at < REREAD:
                time.sleep(POLL)


def _file_state(path: str) -> tuple[tuple[int, int] | None, ...]:
    """(modification time, size) of the journal and its WAL: a commit changes one of them."""
    found: list[tuple[int, int] | None] = []
    for name in (path, path + "-wal"):
        try:
            stat = os.stat(name)
        except OSError:
            found.append(None)
        else:
            found.append((stat.st_mtime_ns, stat.st_size))
    return tuple(found)


# -- schedules, start -------------------------------------------------------------------------


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
        raise _NotFound(f"no schedule named {args.schedule!r} in {args.db}; see `litedurable "
                        "schedules`")
    print({"pause": f"schedule {args.schedule!r} is paused: no process starts its firings",
           "resume": f"schedule {args.schedule!r} is active again, from its next fire time "
                     "(firings missed while paused are not made up)",
           "remove": f"schedule {args.schedule!r} is removed; firings already started go on "
                     "(an App that declares it in code stores it again at its next launch)",
           }[action])
    return 0


def _list_schedules(args: argparse.Namespace) -> int:
    now = time.time()
    with _journal(args) as journal:
        infos = [schedule_info(row, now) for row in journal.schedules()]
    if _emit(args, [views.fields(i) for i in infos]):
        return 0
    if not infos:
        print(f"no schedules in {args.db}")
        return 0
    rows = [(i.name, i.workflow, i.cron, i.tz or "UTC", "paused" if i.paused else "active",
             "never" if i.last_fire is None else fmt.iso(i.last_fire),
             "-" if i.next_fire is None else
             f"{fmt.iso(i.next_fire)} ({fmt.relative(i.next_fire, now)})") for i in infos]
    print("\n".join(fmt.table(["SCHEDULE", "WORKFLOW", "CRON", "TZ", "STATE", "LAST FIRE",
                               "NEXT FIRE"], rows, [24, 24, 20, 20, 6, 25])))
    return 0


def _app_journal(args: argparse.Namespace, command: str) -> App:
    """Load ``--app`` and point ``args.db`` at its journal (a different ``--db`` is refused)."""
    if args.app is None:
        raise _Usage(f"{command} needs --app MODULE:APP (the application that defines the "
                     "workflow, to encode its arguments)")
    app = _load_app(args.app, command)
    if args.db_given and not _same_file(args.db, app.path):
        raise _Usage(f"--db {args.db} is not the journal {args.app} opens ({app.path}); drop "
                     "--db, or change the App's path")
    args.db = app.path
    return app


def _definition(app: App, label: str, name: str) -> WorkflowDef:
    definition = app.registry.workflows.get(name)
    if definition is None:
        known = ", ".join(sorted(app.registry.workflows)) or "none"
        raise _Usage(f"{label} registers no workflow named {name!r} (it registers: {known})")
    return definition


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
            raise _NotFound(f"no schedule named {args.schedule!r} in {args.db}; see "
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
                (s.spec for s in journal.queue_stats(time.time(), 60.0)
                 if s.spec.name == args.queue), None)
            if spec is None:
                raise _Usage(f"no queue named {args.queue!r}: {args.app} does not declare it "
                             "and no App has declared it on this journal")
            try:
                entry = Queue(app, spec).entry(args.priority, None, args.partition_key,
                                               definition.timeout)
            except ValueError as exc:
                raise _Usage(str(exc)) from None
        print(_place(app, journal, definition, workflow_id, positional, keywords, entry))
    print(workflow_id)
    return 0


# -- queues ---------------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    now = time.time()
    with _journal(args) as journal:
        infos = [queue_info(stats) for stats in journal.queue_stats(now, 60.0)]
    if _emit(args, [{**views.fields(q), "oldest_wait_seconds": _waited(q, now)} for q in infos]):
        return 0
    if not infos:
        print(f"no queues in {args.db} (a queue is listed once an App that declares it has "
              "launched on this file)")
        return 0
    rows = [(q.name, _limit(q.concurrency), _limit(q.worker_concurrency),
             "-" if q.rate_limit is None else f"{q.rate_limit[0]}/{q.rate_limit[1]:g}s",
             "yes" if q.partitioned else "no", q.enqueued, q.running, q.started_last_minute,
             "-" if (waited := _waited(q, now)) is None else fmt.duration(waited))
            for q in infos]
    print("\n".join(fmt.table(["QUEUE", "CONCURRENCY", "PER WORKER", "RATE LIMIT",
                               "PARTITIONED", "ENQUEUED", "RUNNING", "STARTED/MIN",
                               "OLDEST WAIT"], rows, [24, 11, 10, 12, 11, 8, 7, 11])))
    return 0


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _waited(info: QueueInfo, now: float) -> float | None:
    """Seconds the queue's longest-waiting workflow has waited (None when nothing waits)."""
    if info.oldest_enqueued_at is None:
        return None
    return max(0.0, now - info.oldest_enqueued_at.timestamp())


# -- cancel, resume, fork ---------------------------------------------------------------


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


def _app_version(args: argparse.Namespace) -> str | None:
    """``--app-version``, refused here if it could not be stored or shown."""
    version: str | None = args.app_version
    if version is not None and (not version or "\0" in version):
        raise _Usage(f"--app-version must be a non-empty label, not {version!r}")
    return version


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
            ids = [r.workflow_id for r in journal.list_workflows()
                   if Status(r.status).is_terminal and r.updated_at < before]
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


def cmd_backup(args: argparse.Namespace) -> int:
    if os.path.lexists(args.out):
        raise _Refused(f"{args.out} exists; a backup is written to a new file (nothing was "
                       "written)")
    with _journal(args) as journal:
        journal.backup(args.out)
    print(f"backed up {args.db} to {args.out} (one consistent snapshot)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        problems = journal.check()
    args.damaged = args.damaged or bool(problems)
    if args.json:
        _print_json({"ok": not problems, "problems": problems})
    elif problems:
        print(f"{args.db}: {len(problems)} problem(s):")
        print("\n".join(f"  {p}" for p in problems))
    else:
        print(f"{args.db}: ok (SQLite integrity check, and every row's checksum)")
    return 0


def _descendants(journal: Storage, workflow_id: str) -> list[str]:
    found = []
    for child in reversed(journal.list_workflows(parent=workflow_id)):
        found += [child.workflow_id, *_descendants(journal, child.workflow_id)]
    return found


def cmd_export(args: argparse.Namespace) -> int:
    if args.output is not None and os.path.lexists(args.output):
        raise _Refused(f"{args.output} exists; export writes a new file (nothing was written)")
    records = []
    with _journal(args) as journal:
        ids = [_find(journal, wid).workflow_id for wid in args.workflow_ids]
        if args.children:
            ids = [x for wid in ids for x in (wid, *_descendants(journal, wid))]
        for wid in dict.fromkeys(ids):  # once each, in order
            record = journal.export_workflow(wid)
            if record is None:  # deleted since it was found
                raise WorkflowNotFoundError(f"no workflow with id {wid!r}")
            records.append(record)
    text = "".join(fmt.json_text(r, indent=None) + "\n" for r in records)
    if args.output is None:
        sys.stdout.write(text)
    else:
        with open(args.output, "x", encoding="utf-8") as out:
            out.write(text)
        print(f"exported {len(records)} workflow(s) to {args.output}")
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
    imported, refused, unreadable = [], [], []
    with _journal(args, write=True, create=True) as journal:
        for record in records:
            try:
                imported.append(journal.import_workflow(record))
            except WorkflowConflictError:
                refused.append(str(record["workflow"].get("workflow_id")))
            except JournalError as exc:
                if type(exc) is not JournalError:  # the journal's own trouble: stop here
                    raise
                unreadable.append(f"{record['workflow'].get('workflow_id')!s}: {exc}")
    if imported:
        print(f"imported {len(imported)} workflow(s): {', '.join(imported)}")
    if unreadable:
        print("litedurable: records this litedurable cannot import (nothing of them was "
              "written):\n  " + "\n  ".join(unreadable), file=sys.stderr)
    if refused:
        print(f"litedurable: refused {len(refused)} workflow(s) whose id this journal has "
              f"already (nothing of them was written): {', '.join(refused)}", file=sys.stderr)
    if unreadable:
        return 2
    if refused:
        return 1
    if not imported:
        print(f"{args.file} holds no workflows; nothing was imported")
    return 0


# -- replay, worker, demo -------------------------------------------------------------------


def _load_app(spec: str, command: str) -> App:
    """Import ``MODULE:APP`` from the current directory (or ``sys.path``) and return the App."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise _Usage(f"{command} needs MODULE:APP (the module, a colon, the name of its App "
                     f"object), e.g. `litedurable {command} myjobs:app`; got {spec!r}")
    # The directory itself, not ".": a finder cached for "." may list another directory.
    sys.path.insert(0, os.getcwd())
    importlib.invalidate_caches()  # a module written a moment ago must be found
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # anything the user's module raises while importing is theirs
        raise _Usage(f"cannot import {module_name!r} (from {spec!r}): {_describe(exc)}. "
                     f"Run {command} from the directory the module is in, or fix the "
                     "module.") from exc
    if not hasattr(module, attr):
        raise _Usage(f"{spec}: module {module_name!r} has no attribute {attr!r}; name its App "
                     f"object, e.g. `litedurable {command} myjobs:app`")
    app = getattr(module, attr)
    if not isinstance(app, App):
        found = "nothing" if app is None else f"a {type(app).__name__}"
        raise _Usage(f"{spec}: {module_name}.{attr} is {found}, not a litedurable.App; "
                     f"name the App object, e.g. `litedurable {command} myjobs:app`")
    return app


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
        raise _Usage(f"--db {args.db} is not the journal {args.app} opens ({app.path}); a "
                     "worker serves its App's own file: drop --db, or change the App's path")
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
        print(f"worker {args.app} serving {os.path.abspath(app.path)} (pid {os.getpid()})")
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
    print(f"worker stopped; {os.path.abspath(app.path)} keeps what is left for the next start",
          flush=True)
    return 0


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def _describe_queue(spec: QueueSpec) -> str:
    parts = [f"concurrency {_limit(spec.concurrency)}",
             f"per worker {_limit(spec.worker_concurrency)}",
             "rate limit " + ("-" if spec.rate_limit is None else
                              f"{spec.rate_limit[0]} per {spec.rate_limit[1]:g} s")]
    if spec.partitioned:
        parts.append("partitioned (concurrency per partition key)")
    return ", ".join(parts)


def _text(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` itself raises."""
    try:
        return str(exc)
    except Exception:
        return "<its message cannot be printed>"


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception from user code, for one line of an error message."""
    text = _text(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the timeline page (until Ctrl-C), or write one workflow's page to a file."""
    if args.export:
        workflow_id, out = args.export
        with _journal(args) as journal:
            _find(journal, workflow_id)
            page = export_html(journal, workflow_id)
        assert page is not None
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote the timeline of {workflow_id!r} to {out}")
        return 0
    if args.port > 65535:
        raise _Usage(f"--port must be a TCP port (0 to 65535), not {args.port}")
    _journal(args).close()  # the file exists and is readable: refuse now, not per request
    server = serve(args.db, args.port, busy_timeout=args.busy_timeout)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving {args.db} read-only at {url} (Ctrl-C stops)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo(args.db)


# -- arguments ------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    """An argparse type: seconds >= 0 (``inf`` allowed: "never"), not NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def _age(text: str) -> float:
    """An argparse type: an age, ``30d``, ``12h``, ``90m``, ``45s`` or seconds; >= 0."""
    try:
        return fmt.age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    """An argparse type: an int >= 0, capped at SQLite's largest integer (which means "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return min(value, 2**63 - 1)


def _version() -> str:
    try:
        return importlib.metadata.version("litedurable")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def _journal_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--db`` and ``--busy-timeout``, on the main parser and on every command's (so they may
    come before or after the command; a command's own wins)."""
    if "--db" not in parser._option_string_actions:
        parser.add_argument("--db", default=default, metavar="PATH",
                            help=f"journal file (default: ${ENV_DB}, else {DEFAULT_DB}; worker, "
                                 "start and schedules trigger use their App's file)")
    if "--busy-timeout" not in parser._option_string_actions:
        parser.add_argument("--busy-timeout", type=_seconds, default=default, metavar="SECONDS",
                            help="seconds to wait for another process's lock (default 5)")


def _json_options(parser: argparse.ArgumentParser, *, lines: bool = False) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    if lines:
        parser.add_argument("--jsonl", action="store_true",
                            help="print JSON lines: one object per line")


def _workflow_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=[s.value for s in Status])
    parser.add_argument("--name", help="only workflows of this name")
    parser.add_argument("--queue", help="only workflows enqueued on this queue (waiting, "
                                        "running or finished)")
    parser.add_argument("--parent", metavar="ID", help="only the children of this workflow")
    parser.add_argument("--app-version", help="only workflows of this app version")
    parser.add_argument("--since", metavar="WHEN",
                        help="created at or after WHEN: ISO 8601 (2026-12-01, "
                             "2026-12-01T08:00:00+01:00; UTC without a zone) or an age ago "
                             "(1d, 3h, 30m, 45s)")
    parser.add_argument("--until", metavar="WHEN", help="created before WHEN (as --since)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litedurable", description="Inspect and manage a litedurable journal file.",
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"litedurable {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list workflows, newest first (filters, --limit/--offset)")
    _workflow_filters(p)
    p.add_argument("--limit", type=_count, default=50, help="at most this many (default 50; "
                                                            "0: all)")
    p.add_argument("--offset", type=_count, default=0, help="skip this many first")
    _json_options(p, lines=True)
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("count", help="count workflows by status (the filters of list)")
    _workflow_filters(p)
    _json_options(p)
    p.set_defaults(fn=cmd_count)

    p = sub.add_parser("show", help="show one workflow: inputs, outcome or error and its "
                                    "traceback, timings, steps, timers, children, messages, "
                                    "events, streams, promises (text; --json for JSON)")
    p.add_argument("workflow_id")
    p.add_argument("--follow", "-f", action="store_true",
                   help="print again each time it changes, until it ends (as watch)")
    _json_options(p)
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("steps", help="show a workflow's journal, step by step: duration, "
                                     "attempts, call site, owner, outcome")
    p.add_argument("workflow_id")
    _json_options(p, lines=True)
    p.set_defaults(fn=cmd_steps)

    p = sub.add_parser("tree", help="show a workflow and its children, as a tree with statuses")
    p.add_argument("workflow_id")
    _json_options(p)
    p.set_defaults(fn=cmd_tree)

    p = sub.add_parser("result", help="wait for a workflow to end and print its output as JSON "
                                      "(exit 1 and the error if it failed or was cancelled; 5 "
                                      "on timeout)")
    p.add_argument("workflow_id")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="give up after this long (exit 5); default: wait")
    p.set_defaults(fn=cmd_result)

    p = sub.add_parser("watch", help="show a workflow, then again each time it changes, until "
                                     "it ends (Ctrl-C stops)")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true", help="print JSON lines: a snapshot a line")
    p.set_defaults(fn=cmd_watch, follow=True)

    p = sub.add_parser("schedules", help="list cron schedules (the default), or pause, "
                                         "resume, remove or trigger one")
    p.add_argument("action", nargs="?", choices=["list", "pause", "resume", "remove", "trigger"],
                   help="list (default); pause/resume/remove NAME (in the journal, for every "
                        "process); trigger NAME --app MODULE:APP starts a firing now")
    p.add_argument("schedule", nargs="?", metavar="NAME")
    p.add_argument("--app", metavar="MODULE:APP", help="trigger: the application that defines "
                                                       "the schedule's workflow")
    _json_options(p, lines=True)
    p.set_defaults(fn=cmd_schedules)

    p = sub.add_parser("queues", help="list queues: limits, enqueued, running, started in the "
                                      "last minute, oldest wait")
    _json_options(p, lines=True)
    p.set_defaults(fn=cmd_queues)

    p = sub.add_parser("start", help="start workflow NAME of --app MODULE:APP (imports it) with "
                                     "--args; a running App of the journal runs it")
    p.add_argument("workflow", metavar="NAME", help="the workflow's registered name")
    p.add_argument("--app", metavar="MODULE:APP", required=True)
    p.add_argument("--args", default="[]", metavar="JSON",
                   help="a JSON list of positional arguments, or an object of keyword "
                        "arguments (default: [])")
    p.add_argument("--id", help="the workflow id (default: a random UUID); an existing id "
                                "of this workflow is left as it is")
    p.add_argument("--queue", help="enqueue it on this queue instead")
    p.add_argument("--priority", type=int, default=0, help="with --queue: lower runs first")
    p.add_argument("--partition-key", help="with --queue: on a partitioned queue")
    p.set_defaults(fn=cmd_start)

    p = sub.add_parser("cancel", help="cancel a workflow (running or enqueued) and its "
                                      "non-detached children")
    p.add_argument("workflow_id")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("resume", help="make a cancelled/failed/exhausted workflow pending again")
    p.add_argument("workflow_id")
    p.add_argument("--app-version", help="record this app version on it (and on the children "
                   "resumed with it); moves a pending workflow too")
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser("fork", help="copy a workflow's steps below N into a new workflow")
    p.add_argument("workflow_id")
    p.add_argument("from_step", type=_count)
    p.add_argument("--new-id", help="id of the new workflow (default: a random UUID)")
    p.add_argument("--app-version",
                   help="app version of the new workflow (default: the source's)")
    p.set_defaults(fn=cmd_fork)

    p = sub.add_parser("gc", help="delete finished workflows not updated for a given age")
    p.add_argument("--older-than", type=_age, required=True, metavar="AGE",
                   help="30d, 12h, 90m, 45s or seconds")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete "
                                                          "nothing")
    p.set_defaults(fn=cmd_gc)

    p = sub.add_parser("backup", help="write a consistent copy of the journal to a new file "
                                      "(while workflows run)")
    p.add_argument("out", metavar="OUT", help="the new file (refused if it exists)")
    p.set_defaults(fn=cmd_backup)

    p = sub.add_parser("check", help="check the journal: SQLite's integrity check and every "
                                     "row's checksum (exit 4 if damaged)")
    _json_options(p)
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("export", help="write workflows and their journals as JSON lines (for "
                                      "import into another journal)")
    p.add_argument("workflow_ids", nargs="+", metavar="ID")
    p.add_argument("-o", "--output", metavar="FILE", help="a new file (default: stdout)")
    p.add_argument("--children", action="store_true", help="with their descendants too")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import", help="import workflows exported with `export` (ids kept; an "
                                      "id this journal has is refused, exit 1)")
    p.add_argument("file", metavar="FILE", help="JSON lines written by export (- for stdin)")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("replay", help="replay recorded workflows against code, offline "
                                      "(imports MODULE; runs no step bodies; writes nothing)")
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("workflow_ids", nargs="*")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("worker", help="import MODULE:APP and serve it (consume its queues, fire "
                                      "its schedules, recover) until SIGINT or SIGTERM")
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"],
                   help="litedurable's log messages on stderr (default: info)")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("ui", help="serve the timeline page on 127.0.0.1 (read-only), or "
                                  "--export one workflow's page to a self-contained HTML file")
    p.add_argument("--port", type=_count, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--export", nargs=2, metavar=("ID", "OUT.html"),
                   help="write workflow ID's timeline to OUT.html (CSS, script and data inlined)")
    p.set_defaults(fn=cmd_ui)

    p = sub.add_parser("demo", help="run a workflow in a child process, kill it, resume it")
    p.set_defaults(fn=cmd_demo)

    # Add new commands above: each gets --db and --busy-timeout here, on its own parser too,
    # and its one-line help as the description of its own --help.
    _journal_options(parser, None)
    for command in sub.choices.values():
        _journal_options(command, argparse.SUPPRESS)
    for listed in sub._choices_actions:
        command = sub.choices[listed.dest]
        if command.description is None and listed.help:
            command.description = listed.help[0].upper() + listed.help[1:] + "."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see ``EXIT_STATUS``)."""
    args = build_parser().parse_args(argv)
    args.db_given = args.db is not None
    if args.db is None:
        args.db = os.environ.get(ENV_DB) or DEFAULT_DB
    if args.busy_timeout is None:
        args.busy_timeout = 5.0
    args.damaged = False
    try:
        code: int = args.fn(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe must be seen by the handler below
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except DurableError as exc:
        print(f"litedurable: error: {_text(exc)}", file=sys.stderr)
        return _exit_code(exc)
    if code == 0 and args.damaged:
        return 4
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again and
    print the ``BrokenPipeError`` traceback this is avoiding (Python ignores SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # no real stdout descriptor (captured in a test): nothing will flush to it
