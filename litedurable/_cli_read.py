"""The ``litedurable`` commands that read a journal: list, count, show, steps, tree, result,
watch, queues, schedules, check, backup, export and the timeline page. None of them imports
the application's code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import webbrowser

from . import _format as fmt
from . import _views as views
from ._backends import is_server_url, shown_location
from ._cli_common import (
    CODEC,
    POLL,
    REREAD,
    _emit,
    _filters,
    _find,
    _journal,
    _print_json,
    _Refused,
    _Timeout,
    _Usage,
)
from ._errors import JournalError, WorkflowNotFoundError, passes
from ._records import queue_info, schedule_info, step_info, workflow_info
from ._storage import Storage, WorkflowRow
from ._types import QueueInfo, Status
from ._ui import export_html, serve


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
        row = _find(journal, args.workflow_id)
        steps = [step_info(r, CODEC) for r in journal.load_steps(args.workflow_id)]
    if _emit(args, [views.step_json(s) for s in steps]):
        return 0
    ended = row.updated_at if Status(row.status).is_terminal else None
    print("\n".join(views.steps_table(steps, time.time(), ended)))
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
            row = _reread(journal, args.workflow_id, deadline)
    if row.status == Status.SUCCEEDED:
        _print_json(None if row.output is None else CODEC.display(row.output))
        return 0
    summary = CODEC.error_summary(row.error) if row.error else "(no error recorded)"
    print(f"litedurable: workflow {args.workflow_id!r} {row.status}: {summary}", file=sys.stderr)
    tb = CODEC.error_traceback(row.error) if row.error else ""
    if "Traceback (most recent call last)" in tb:  # not a bare "Type: message" said twice
        print(tb.rstrip(), file=sys.stderr)
    return 1


def _reread(journal: Storage, workflow_id: str, deadline: float | None) -> WorkflowRow:
    """The workflow read again, as ``Handle.result`` waits: a journal that stops answering
    (a server restarting) is waited through, said once, until ``deadline``."""
    said = False
    while True:
        try:
            return _find(journal, workflow_id)
        except JournalError as exc:
            if not passes(exc) or (deadline is not None and time.monotonic() >= deadline):
                raise
            if not said:
                print(f"litedurable: waiting for workflow {workflow_id!r}, still: {exc}",
                      file=sys.stderr)
                said = True
            time.sleep(POLL)


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


def _list_schedules(args: argparse.Namespace) -> int:
    now = time.time()
    with _journal(args) as journal:
        infos = [schedule_info(row, now) for row in journal.schedules()]
    if _emit(args, [views.fields(i) for i in infos]):
        return 0
    if not infos:
        print(f"no schedules in {shown_location(args.db)}")
        return 0
    rows = [(i.name, i.workflow, i.cron, i.tz or "UTC", "paused" if i.paused else "active",
             "never" if i.last_fire is None else fmt.iso(i.last_fire),
             "-" if i.next_fire is None else
             f"{fmt.iso(i.next_fire)} ({fmt.relative(i.next_fire, now)})") for i in infos]
    print("\n".join(fmt.table(["SCHEDULE", "WORKFLOW", "CRON", "TZ", "STATE", "LAST FIRE",
                               "NEXT FIRE"], rows, [24, 24, 20, 20, 6, 25])))
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    now = time.time()
    with _journal(args) as journal:
        infos = [queue_info(stats) for stats in journal.queue_stats(now)]
    if _emit(args, [{**views.fields(q), "oldest_wait_seconds": _waited(q, now)} for q in infos]):
        return 0
    if not infos:
        print(f"no queues in "
              f"{shown_location(args.db)} (a queue is listed once an App that declares it has "
              "launched on this journal)")
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


def cmd_backup(args: argparse.Namespace) -> int:
    folder = os.path.dirname(os.path.abspath(args.out)) if args.out else ""
    if not args.out or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        # Said here: SQLite would blame the journal, or (an empty name) copy to a temp file.
        raise _Usage(f"cannot write a backup to {args.out!r}: name a new file in a writable "
                     "directory (nothing was written)")
    if os.path.lexists(args.out):
        raise _Refused(f"{args.out} exists; a backup is written to a new file (nothing was "
                       "written)")
    with _journal(args) as journal:
        journal.backup(args.out)
    print(f"backed up {shown_location(args.db)} to {args.out} (one consistent snapshot)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _journal(args) as journal:
        problems = journal.check()
    args.damaged = args.damaged or bool(problems)
    if args.json:
        _print_json({"ok": not problems, "problems": problems})
    elif problems:
        print(f"{shown_location(args.db)}: {len(problems)} problem(s):")
        print("\n".join(f"  {p}" for p in problems))
    else:
        checked = ("every row's checksum" if is_server_url(args.db)
                   else "SQLite integrity check, and every row's checksum")
        print(f"{shown_location(args.db)}: ok ({checked})")
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
        try:
            with open(args.output, "x", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise _Usage(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"exported {len(records)} workflow(s) to {args.output}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the timeline page (until Ctrl-C), or write one workflow's page to a file."""
    if args.export:
        workflow_id, out = args.export
        with _journal(args) as journal:
            _find(journal, workflow_id)
            page = export_html(journal, workflow_id)
        assert page is not None
        try:
            with open(out, "w", encoding="utf-8") as f:
                f.write(page)
        except OSError as exc:
            raise _Usage(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"wrote the timeline of {workflow_id!r} to {out}")
        return 0
    if args.port > 65535:
        raise _Usage(f"--port must be a TCP port (0 to 65535), not {args.port}")
    _journal(args).close()  # the file exists and is readable: refuse now, not per request
    try:
        server = serve(args.db, args.port, busy_timeout=args.busy_timeout)
    except OSError as exc:  # the port is taken (or privileged)
        raise _Usage(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}; pass "
                     "another --port (0: any free port)") from None
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving {shown_location(args.db)} read-only at {url} (Ctrl-C stops)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


