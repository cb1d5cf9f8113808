"""The ``litedurable`` command: read and manage a journal file.

Every command but ``replay`` and ``worker`` works on the file alone and never imports user
code: a journal can be inspected on a machine that does not have the application.
``worker MODULE:APP`` imports the application and serves it (``App.serve``) until SIGINT or
SIGTERM. ``resume`` and ``fork`` mark
workflows for the application's next recovery (at its next launch, or within one lease period
if it is running).

Commands that write (``cancel``, ``resume``, ``fork``, ``gc``) run SQLite's ``quick_check``
first and refuse a damaged file; the read commands check it too and say so on stderr (exit 4)
after showing what they could read.

Exit status (also in ``litedurable --help``)::

  0    done
  1    refused or found a problem: cancel/resume of a workflow in a state that does not
       allow it, fork onto a taken id, replay found a difference; nothing was changed
  2    usage: bad arguments, a bad --from-step or --new-id, a MODULE:APP that cannot be
       imported (or names no App), a --db that is not the worker's App's file
  3    not found: no journal file at --db, or no workflow with that id
  4    the journal cannot be used: damaged, locked past --busy-timeout, read-only, or
       written by another program or a newer litedurable
  141  the output was closed early (``litedurable list | head``); stops quietly, as a
       process killed by SIGPIPE would
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import uuid
import webbrowser
from collections.abc import Sequence
from typing import Any

from ._app import App, replay_check
from ._backends import describe_location, is_server_url, open_storage
from ._clock import to_datetime
from ._codec import Codec
from ._demo import main as demo
from ._errors import (
    DurableError,
    JournalCorruptError,
    JournalError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from ._records import queue_info, step_info, workflow_info
from ._storage import MessageRow, PromiseRow, QueueSpec, Storage
from ._types import QueueInfo, Status, check_workflow_id
from ._ui import export_html, serve

__all__ = ["main"]


EXIT_STATUS = """exit status:
  0    done
  1    refused or found a problem (cancel/resume of a workflow in a state that does not
       allow it, fork onto a taken id, replay found a difference); nothing was changed
  2    usage: bad arguments, a bad --from-step or --new-id, a MODULE:APP that cannot be
       imported (or names no App), a --db that is not the worker's App's file
  3    not found: no journal file at --db, or no workflow with that id
  4    the journal cannot be used: damaged, locked past --busy-timeout, read-only, or
       written by another program or a newer litedurable
  141  the output was closed early (litedurable list | head)
"""


class _Refused(DurableError):
    """The command ran and changed nothing, because the workflow's state does not allow it."""


class _Usage(DurableError):
    """An argument the parser accepted but the command cannot use."""


class _NoJournal(DurableError, LookupError):
    """No file at ``--db``: the command must not create one."""


def _exit_code(exc: DurableError) -> int:
    # Conflict before usage: WorkflowConflictError is a ValueError, as InvalidIdError is.
    if isinstance(exc, JournalError):
        return 4
    if isinstance(exc, WorkflowNotFoundError | _NoJournal):
        return 3
    if isinstance(exc, WorkflowConflictError | _Refused):
        return 1
    return 2


def _journal(args: argparse.Namespace, *, write: bool = False) -> Storage:
    """Open ``--db``, after SQLite's ``quick_check``: a command that writes refuses a damaged
    file (writing could spread the damage, or delete rows it misreads); one that reads goes on
    but says so and exits 4, so a script does not take a partial answer for the whole."""
    if not is_server_url(args.db) and not os.path.exists(args.db):
        raise _NoJournal(f"no journal file at {args.db!r}; pass its path with --db PATH")
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
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def cmd_list(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        rows = journal.list_workflows(status=args.status, name=args.name, queue=args.queue,
                                      limit=args.limit)
        # Pending and enqueued workflows only: one indexed read each, and a finished workflow
        # never reads its mailbox again.
        unread = {r.workflow_id: [_topic(t) for t in sorted(journal.unread_topics(r.workflow_id))]
                  for r in rows if r.status in (Status.PENDING, Status.ENQUEUED)}
    codec = Codec(1 << 30)
    infos = [workflow_info(row, codec) for row in rows]
    if args.json:
        _print_json([{**{k: getattr(i, k) for k in i.__dataclass_fields__},
                      "unread_topics": unread.get(i.workflow_id, [])} for i in infos])
        return 0
    print(f"{'WORKFLOW ID':<40} {'NAME':<24} {'STATUS':<16} {'UPDATED':<19} UNREAD MESSAGES ON")
    for i in infos:
        topics = ", ".join(t or "(default topic)" for t in unread.get(i.workflow_id, []))
        print(f"{i.workflow_id:<40} {i.name:<24} {i.status:<16} "
              f"{i.updated_at:%Y-%m-%d %H:%M:%S} {topics}".rstrip())
    return 0


def _topic(stored: str) -> str | None:
    """A stored topic as the API names it: ``""`` is the default topic, ``None``."""
    return stored or None


def _find(journal: Storage, workflow_id: str) -> Any:
    row = journal.get_workflow(check_workflow_id(workflow_id))
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}; see `litedurable list`")
    return row


def cmd_show(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        row = _find(journal, args.workflow_id)
        mailbox = journal.mailbox(row.workflow_id)
        events = journal.events(row.workflow_id)
        streams = journal.streams(row.workflow_id)
        promises = journal.promises(row.workflow_id)
    codec = Codec(1 << 30)
    info = workflow_info(row, codec)
    fields = {k: getattr(info, k) for k in info.__dataclass_fields__}
    fields["inputs"] = codec.display(row.inputs)
    fields["output"] = None if row.output is None else codec.display(row.output)
    fields["messages"] = [_message(m, codec) for m in mailbox]
    fields["events"] = {key: codec.display(value) for key, value in events.items()}
    fields["streams"] = {key: {"items": count, "closed": closed}
                         for key, (count, closed) in streams.items()}
    fields["promises"] = [_promise(p, codec) for p in promises]
    _print_json(fields)
    if row.error is not None and (tb := codec.error_traceback(row.error)):
        print(tb.rstrip())
    return 0


def _message(row: MessageRow, codec: Codec) -> dict[str, Any]:
    """A mailbox message for ``show``: read (and by which step) or unread."""
    return {
        "topic": _topic(row.topic), "message": codec.display(row.payload),
        "sender": row.sender, "sent_at": to_datetime(row.created_at),
        "read": row.consumed_step is not None, "read_by_step": row.consumed_step,
        "read_at": None if row.consumed_at is None else to_datetime(row.consumed_at),
        "idempotency_key": row.key,
    }


def _promise(row: PromiseRow, codec: Codec) -> dict[str, Any]:
    """A durable promise for ``show``: settled or not, with its value or error."""
    return {
        "promise_id": row.promise_id, "step": row.step, "settled": row.settled_at is not None,
        "value": None if row.output is None else codec.display(row.output),
        "error": None if row.error is None else codec.error_summary(row.error),
        "created_at": to_datetime(row.created_at),
        "settled_at": None if row.settled_at is None else to_datetime(row.settled_at),
    }


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


def cmd_queues(args: argparse.Namespace) -> int:
    now = time.time()
    with _journal(args) as journal:
        infos = [queue_info(stats) for stats in journal.queue_stats(now, 60.0)]
    if args.json:
        _print_json([{**{k: getattr(q, k) for k in q.__dataclass_fields__},
                      "oldest_wait_seconds": _waited(q, now)} for q in infos])
        return 0
    if not infos:
        print(f"no queues in {args.db} (a queue is listed once an App that declares it has "
              "launched on this file)")
        return 0
    print(f"{'QUEUE':<24} {'CONCURRENCY':>11} {'PER WORKER':>10} {'RATE LIMIT':>12} "
          f"{'PARTITIONED':<11} {'ENQUEUED':>8} {'RUNNING':>7} {'STARTED/MIN':>11} OLDEST WAIT")
    for q in infos:
        rate = "-" if q.rate_limit is None else f"{q.rate_limit[0]}/{q.rate_limit[1]:g}s"
        waited = _waited(q, now)
        print(f"{q.name:<24} {_limit(q.concurrency):>11} {_limit(q.worker_concurrency):>10} "
              f"{rate:>12} {'yes' if q.partitioned else 'no':<11} {q.enqueued:>8} "
              f"{q.running:>7} {q.started_last_minute:>11} "
              f"{'-' if waited is None else _duration(waited)}")
    return 0


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _waited(info: QueueInfo, now: float) -> float | None:
    """Seconds the queue's longest-waiting workflow has waited (None when nothing waits)."""
    if info.oldest_enqueued_at is None:
        return None
    return max(0.0, now - info.oldest_enqueued_at.timestamp())


def _duration(seconds: float) -> str:
    """A wait as a person reads it: ``3 s``, ``2 min``, ``5 h``, ``2 d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


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


def cmd_gc(args: argparse.Namespace) -> int:
    with _journal(args, write=True) as journal:
        deleted = journal.delete_finished(time.time() - args.older_than)
    print(f"deleted {deleted} finished workflow(s) older than {args.older_than:g} s")
    return 0


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


def _same_file(a: str, b: str) -> bool:
    if is_server_url(a) or is_server_url(b):
        return a == b
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


def _seconds(text: str) -> float:
    """An argparse type: seconds >= 0 (``inf`` allowed: "never"), not NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: an int >= 0, capped at SQLite's largest integer (which means "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return min(value, 2**63 - 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litedurable", description="Inspect and manage a litedurable journal file.",
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", default=None,
                        help="journal file (default: litedurable.db; the worker command uses "
                             "its App's file)")
    parser.add_argument("--busy-timeout", type=_seconds, default=5.0,
                        help="seconds to wait for another process's lock")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list workflows, newest first")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--name")
    p.add_argument("--queue", help="only workflows enqueued on this queue (waiting, running "
                                   "or finished)")
    p.add_argument("--limit", type=_count, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="show one workflow: status, inputs, output, error, and its "
                                    "messages, events, streams and promises")
    p.add_argument("workflow_id")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("steps", help="show a workflow's journal, step by step")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_steps)

    p = sub.add_parser("schedules", help="list cron schedules, paused or active")
    p.set_defaults(fn=cmd_schedules)

    p = sub.add_parser("queues", help="list queues: limits, enqueued, running, started in the "
                                      "last minute, oldest wait")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_queues)

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

    p = sub.add_parser("gc", help="delete finished workflows older than a given age")
    p.add_argument("--older-than", type=_seconds, required=True, metavar="SECONDS")
    p.set_defaults(fn=cmd_gc)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see ``EXIT_STATUS``)."""
    args = build_parser().parse_args(argv)
    args.db_given = args.db is not None
    if args.db is None:
        args.db = "litedurable.db"
    try:
        code: int = args.fn(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe must be seen by the handler below
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except DurableError as exc:
        print(f"litedurable: error: {_text(exc)}", file=sys.stderr)
        return _exit_code(exc)
    if code == 0 and getattr(args, "damaged", False):
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
