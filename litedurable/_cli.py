"""The ``litedurable`` command: read and manage a journal file. This module is the parser and
``main``; the commands are in ``_cli_read`` (reading) and ``_cli_write`` (changing a journal or
running an application), on what ``_cli_common`` shares.

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

Exit statuses: ``EXIT_STATUS`` below, printed at the end of ``litedurable --help``.
"""


from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO, cast

from ._cli_common import (
    DEFAULT_DB,
    ENV_DB,
    _age,
    _count,
    _exit_code,
    _seconds,
    _text,
)
from ._cli_read import (
    cmd_backup,
    cmd_check,
    cmd_count,
    cmd_export,
    cmd_list,
    cmd_queues,
    cmd_result,
    cmd_show,
    cmd_steps,
    cmd_tree,
    cmd_ui,
    cmd_watch,
)
from ._cli_write import (
    cmd_cancel,
    cmd_demo,
    cmd_fork,
    cmd_gc,
    cmd_import,
    cmd_replay,
    cmd_resume,
    cmd_schedules,
    cmd_start,
    cmd_worker,
)
from ._errors import (
    DurableError,
)
from ._types import Status

__all__ = ["main"]


EXIT_STATUS = """exit status:
  0    done
  1    refused or found a problem (cancel/resume of a workflow in a state that does not
       allow it, fork or import onto a taken id, backup onto an existing file, replay found
       a difference); `result` of a workflow that failed or was cancelled
  2    usage: bad arguments, a bad fork STEP or --new-id, a MODULE:APP that cannot be
       imported (or names no App), a --db that is not the App's file, a bad export file
  3    not found: no journal file at --db (on PostgreSQL: none in that schema), no workflow
       or schedule with that name
  4    the journal cannot be used: damaged (`check` found a problem), locked past
       --busy-timeout, read-only, or written by another program or a newer litedurable
  5    timeout: `result --timeout` passed before the workflow ended
  130  interrupted (Ctrl-C), e.g. to stop `watch`
  141  the output was closed early (litedurable list | head)

the journal: --db PATH (before or after the command), else $LITEDURABLE_DB, else
litedurable.db; a postgresql://user@host/db URL is a PostgreSQL journal (?schema=name, default
litedurable). Times are ISO 8601 with their zone.
"""

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
                            help=f"the journal: an SQLite file, or a postgresql:// URL (default: "
                                 f"${ENV_DB}, else {DEFAULT_DB}; worker, start and schedules "
                                 "trigger use their App's)")
    if "--busy-timeout" not in parser._option_string_actions:
        parser.add_argument("--busy-timeout", type=_seconds, default=default, metavar="SECONDS",
                            help="seconds to wait for another process's lock (default 5)")


def _json_options(parser: argparse.ArgumentParser, *, lines: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print JSON")
    if lines:
        group.add_argument("--jsonl", action="store_true",
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
        prog="litedurable",
        description="Inspect and manage a litedurable journal (an SQLite file, or a PostgreSQL "
                    "schema).",
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
    p.add_argument("--priority", type=int, help="with --queue: lower runs first (default 0)")
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

    p = sub.add_parser("gc", help="delete finished workflows not updated for a given age (a "
                                  "child whose parent is unfinished stays)")
    p.add_argument("--older-than", type=_age, required=True, metavar="AGE",
                   help="30d, 12h, 90m, 45s or seconds")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete "
                                                          "nothing")
    p.set_defaults(fn=cmd_gc)

    p = sub.add_parser("backup", help="write a consistent copy of an SQLite journal to a new "
                                      "file, while workflows run (PostgreSQL: use pg_dump)")
    p.add_argument("out", metavar="OUT", help="the new file (refused if it exists)")
    p.set_defaults(fn=cmd_backup)

    p = sub.add_parser("check", help="check the journal: every row's checksum, and SQLite's "
                                     "integrity check of a file (exit 4 if damaged)")
    _json_options(p)
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("export", help="write workflows and their journals as JSON lines (for "
                                      "import into another journal)")
    p.add_argument("workflow_ids", nargs="+", metavar="ID")
    p.add_argument("-o", "--output", metavar="FILE", help="a new file (default: stdout)")
    p.add_argument("--children", action="store_true", help="with their descendants too")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("import", help="import workflows exported with `export` (ids kept; all "
                                      "or nothing: if this journal has one of the ids, nothing "
                                      "is imported, exit 1)")
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


_CONTROLS = {c: f"\\u{c:04x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
             if c not in (0x09, 0x0A)}
"""Control characters (but tab and newline), each to be written as its visible JSON escape."""


class _Inert:
    """A text stream that writes control characters as ``\\u001b``-style escapes. Ids, names,
    values and error messages come from the journal, which anyone who can start a workflow
    writes: a terminal must not obey one (clear the screen, retitle the window, rewrite a
    line). In ``--json`` output these characters only occur inside strings, where the escape
    reads back as the same character."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(text.translate(_CONTROLS))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see ``EXIT_STATUS``)."""
    args = build_parser().parse_args(argv)
    if args.fn in (cmd_worker, cmd_demo):  # they print the application's own output
        return _main(args)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (cast(TextIO, _Inert(stream)) for stream in streams)
    try:
        return _main(args)
    finally:
        sys.stdout, sys.stderr = streams


def _main(args: argparse.Namespace) -> int:
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
