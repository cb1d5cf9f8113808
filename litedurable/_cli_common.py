"""What every ``litedurable`` command shares: opening the journal, the refusals and their
exit codes, JSON output, argument parsing of times, loading an application.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import time
from typing import Any

from . import _format as fmt
from . import _views as views
from ._app import App
from ._backends import is_server_url, open_storage, shown_location
from ._errors import (
    DurableError,
    JournalCorruptError,
    JournalError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from ._registry import WorkflowDef
from ._storage import NoJournalError, Storage, WorkflowRow
from ._types import check_workflow_id

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
    """No file at ``--db`` (no journal in that schema of a PostgreSQL database): the command
    must not create one."""


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
    server = is_server_url(args.db)  # a PostgreSQL URL: no file to look for
    if not create and not server and not os.path.exists(args.db):
        raise _NoJournal(f"no journal file at {args.db!r}; pass its path with --db PATH (or "
                         f"set ${ENV_DB})")
    # A command that writes checks through a reading connection first: opening one that
    # writes may already change the file (a copy made by `backup` is switched to WAL mode).
    # On PostgreSQL the read-only open also refuses a schema that holds no journal (a typo in
    # ?schema= must not create an empty one), unless the command creates the journal.
    probing = write and (not create if server else os.path.exists(args.db))
    try:
        journal = open_storage(args.db, readonly=not write or probing,
                               busy_timeout=args.busy_timeout)
    except NoJournalError as exc:  # none in that schema: "not found", as a missing file is
        raise _NoJournal(str(exc)) from None
    try:
        problem = journal.quick_check()
    except BaseException:
        journal.close()
        raise
    if probing and problem == "ok":
        journal.close()
        return open_storage(args.db, busy_timeout=args.busy_timeout)
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


def _find(journal: Storage, workflow_id: str) -> WorkflowRow:
    row = journal.get_workflow(check_workflow_id(workflow_id))
    if row is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}; see `litedurable list`")
    return row


# -- show, steps, tree, result, watch -------------------------------------------------------

def _app_journal(args: argparse.Namespace, command: str) -> App:
    """Load ``--app`` and point ``args.db`` at its journal (a different ``--db`` is refused)."""
    if args.app is None:
        raise _Usage(f"{command} needs --app MODULE:APP (the application that defines the "
                     "workflow, to encode its arguments)")
    app = _load_app(args.app, command)
    if args.db_given and not _same_file(args.db, app.path):
        raise _Usage(f"--db {shown_location(args.db)} is not the journal {args.app} opens "
                     f"({shown_location(app.path)}); drop --db, or change the journal the App "
                     "opens")
    args.db = app.path
    return app


def _definition(app: App, label: str, name: str) -> WorkflowDef:
    definition = app.registry.workflows.get(name)
    if definition is None:
        known = ", ".join(sorted(app.registry.workflows)) or "none"
        raise _Usage(f"{label} registers no workflow named {name!r} (it registers: {known})")
    return definition


def _app_version(args: argparse.Namespace) -> str | None:
    """``--app-version``, refused here if it could not be stored or shown."""
    version: str | None = args.app_version
    if version is not None and (not version or "\0" in version):
        raise _Usage(f"--app-version must be a non-empty label, not {version!r}")
    return version


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


def _same_file(a: str, b: str) -> bool:
    if is_server_url(a) or is_server_url(b):
        return a == b
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


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


