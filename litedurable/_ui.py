"""The timeline page: ``litedurable ui`` serves it, ``litedurable ui --export`` writes it.

A read-only view of a journal file, from the file alone (no user code is imported): the list of
workflows, and one workflow's journal drawn as a timeline by ``ui/app.js``. The server is the
standard library's, bound to 127.0.0.1; it answers GET (and HEAD) only, and every refresh
sees what other processes committed since: an SQLite file is opened read-only for each request,
a PostgreSQL journal once for the server's life (a pool of connections in autocommit, shared by
the request threads; closed by ``server_close``). It serves:

* ``/``, ``/app.js``, ``/style.css``: the page, files of the package (no CDN, no build step);
* ``/api/workflows?status=&name=&queue=&limit=&offset=``: workflows, newest first;
* ``/api/workflows/<id>``: one workflow with its steps, children (nested, from its ``child``
  steps), mailbox, events, streams and promises.

Times are ISO 8601 with their zone (UTC, milliseconds); durations are seconds. An export is the
page with its CSS, its script and one workflow's JSON inlined: one file to attach to a report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._backends import is_server_url, open_storage
from ._clock import to_datetime
from ._codec import Codec
from ._errors import DurableError, InvalidIdError
from ._storage import StepRow, Storage, WorkflowRow
from ._types import Status, check_workflow_id

__all__ = ["detail", "export_html", "serve", "summary"]

STATIC = Path(__file__).parent / "ui"
FILES = {"/": ("index.html", "text/html"), "/index.html": ("index.html", "text/html"),
         "/app.js": ("app.js", "text/javascript"), "/style.css": ("style.css", "text/css")}
MAX_CHILDREN = 300  # descendants loaded for one workflow page (in step order, depth first)
_codec = Codec(1 << 30)


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with milliseconds (what ``Date.parse`` reads); None
    for None and for an instant no date can show (beyond year 9999)."""
    try:
        return None if epoch is None else to_datetime(epoch).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return None


def summary(row: WorkflowRow, now: float) -> dict[str, Any]:
    """A workflow for the list: status, name, times, and its duration so far (seconds)."""
    running = row.status in (Status.PENDING, Status.ENQUEUED)
    return {
        "workflow_id": row.workflow_id, "name": row.name, "status": row.status,
        "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
        "duration": max(0.0, (now if running else row.updated_at) - row.created_at),
        "parent_id": row.parent_id, "owner": row.owner, "app_version": row.app_version,
        "recovery_attempts": row.recovery_attempts, "deadline": iso(row.deadline),
        "error": None if row.error is None else _codec.error_summary(row.error),
    }


def _step(row: StepRow, now: float, ended: float | None) -> dict[str, Any]:
    """A step row for the timeline (values in display form, as ``_records.step_info`` shows)."""
    extra = json.loads(row.extra) if row.extra else {}
    output = None if row.output is None else _codec.display(row.output)
    # sleep/after record their absolute wake-up instant as the output; a select with a
    # timeout its deadline in ``extra``.
    wake = output if row.kind in ("sleep", "after") and isinstance(output, int | float) else None
    if wake is None and extra.get("deadline") is not None:
        wake = extra["deadline"]
    return {
        "step": row.step, "kind": row.kind, "name": row.name, "site": row.site,
        "owner": row.owner, "started_at": iso(row.started_at), "finished_at": iso(row.finished_at),
        "attempts": [{"started_at": iso(start), "finished_at": iso(end), "error": error}
                     for start, end, error in (json.loads(row.attempts) if row.attempts else [])],
        "output": output,
        "error": None if row.error is None else _codec.error_summary(row.error),
        "traceback": None if row.error is None else _codec.error_traceback(row.error) or None,
        # Numbers only: the page puts these in markup, and the journal is not trusted code.
        "candidates": _ints(extra.get("candidates")), "winner": _int(extra.get("winner")),
        # A timer of a workflow that ended before it was due never fires: not "still to come".
        "wake_at": iso(wake), "future": wake is not None and wake > now and ended is None,
        "unfired": wake is not None and ended is not None and wake > ended,
        "ended_at": iso(ended),  # where an unfired timer's bar stops
        "child_id": output if row.kind == "child" and isinstance(output, str) else None,
    }


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ints(value: object) -> list[int] | None:
    if not isinstance(value, list):
        return None
    return [n for n in (_int(v) for v in value) if n is not None]


def detail(journal: Storage, workflow_id: str, now: float | None = None, *,
           budget: list[int] | None = None) -> dict[str, Any] | None:
    """One workflow with everything the timeline draws; None if there is no such workflow.

    Its children come nested, as far as ``budget`` (a one-item list: how many descendants may
    still be loaded) allows; the ids of those left out are in their ``child`` steps."""
    now = time.time() if now is None else now
    budget = [MAX_CHILDREN] if budget is None else budget
    row = journal.get_workflow(workflow_id)
    if row is None:
        return None
    ended = row.updated_at if Status(row.status).is_terminal else None
    steps = [_step(s, now, ended) for s in journal.load_steps(workflow_id)]
    found = {**summary(row, now), "now": iso(now), "steps": steps,
             "inputs": _codec.display(row.inputs),
             "output": None if row.output is None else _codec.display(row.output),
             "traceback": None if row.error is None else _codec.error_traceback(row.error) or None}
    # Owners in the order they first recorded a step: a later one took the workflow over
    # (a recovery), and the steps an earlier one recorded were replayed by the later run.
    owners = list(dict.fromkeys(s["owner"] for s in steps if s["owner"]))
    last = owners[-1] if owners else row.owner
    for s in steps:
        s["replayed"] = s["owner"] is not None and s["owner"] != last
    found["owners"] = owners
    found["children"] = []
    for child_id in (s["child_id"] for s in steps if s["child_id"]):
        if budget[0] <= 0:
            break
        budget[0] -= 1
        if (child := detail(journal, child_id, now, budget=budget)) is not None:
            found["children"].append(child)
    found["messages"] = [
        {"topic": m.topic or None, "message": _codec.display(m.payload), "sender": m.sender,
         "sent_at": iso(m.created_at), "read_by_step": m.consumed_step,
         "read_at": iso(m.consumed_at)} for m in journal.mailbox(workflow_id)]
    found["events"] = {k: _codec.display(v) for k, v in journal.events(workflow_id).items()}
    found["streams"] = {k: {"items": n, "closed": closed}
                        for k, (n, closed) in journal.streams(workflow_id).items()}
    found["promises"] = [
        {"promise_id": p.promise_id, "step": p.step, "created_at": iso(p.created_at),
         "settled_at": iso(p.settled_at),
         "value": None if p.output is None else _codec.display(p.output),
         "error": None if p.error is None else _codec.error_summary(p.error)}
        for p in journal.promises(workflow_id)]
    return found


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` or ``<!--`` can close it)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def export_html(journal: Storage, workflow_id: str) -> str | None:
    """The page with its CSS, its script and ``workflow_id``'s JSON inlined (None: no such
    workflow). It opens from disk (``file://``) and fetches nothing."""
    found = detail(journal, workflow_id)
    if found is None:
        return None
    page = (STATIC / "index.html").read_text()
    css = (STATIC / "style.css").read_text()
    js = (STATIC / "app.js").read_text().replace("</", "<\\/")
    data = f"<script>window.LITEDURABLE_DATA = {_script_json(found)};</script>"
    page = page.replace('<link rel="stylesheet" href="style.css">', f"<style>\n{css}</style>")
    return page.replace('<script src="app.js"></script>', f"{data}\n<script>\n{js}</script>")


class _Problem(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _query_int(query: dict[str, list[str]], key: str, default: int, top: int) -> int:
    text = query.get(key, [str(default)])[-1]
    if not text.isdigit():
        raise _Problem(HTTPStatus.BAD_REQUEST, f"{key} must be a whole number >= 0, not {text!r}")
    return min(int(text), top)


def _list(journal: Storage, query: dict[str, list[str]]) -> dict[str, Any]:
    status = query.get("status", [""])[-1] or None
    if status is not None and status not in {s.value for s in Status}:
        raise _Problem(HTTPStatus.BAD_REQUEST, f"unknown status {status!r}")
    limit = _query_int(query, "limit", 100, 1000)
    offset = _query_int(query, "offset", 0, 2**62)
    rows = journal.list_workflows(status=status, name=query.get("name", [""])[-1] or None,
                                  queue=query.get("queue", [""])[-1] or None,
                                  limit=limit + 1, offset=offset)
    now = time.time()
    return {"workflows": [summary(r, now) for r in rows[:limit]], "now": iso(now),
            "limit": limit, "offset": offset, "more": len(rows) > limit}


class _Journal:
    """The journal the requests read: an SQLite file opened for each request (cheap, and a
    file replaced since is seen), a PostgreSQL journal opened at the first request and kept
    (opening one is a connection pool: connections, a listener, a schema check)."""

    def __init__(self, db: str, busy_timeout: float) -> None:
        self.db, self.busy_timeout = db, busy_timeout
        self._lock = threading.Lock()
        self._shared: Storage | None = None
        self._closed = False

    def read(self, fn: Callable[[Storage], Any]) -> Any:
        """``fn`` on the journal, opened read-only."""
        if not is_server_url(self.db):
            if not Path(self.db).exists():
                raise _Problem(HTTPStatus.NOT_FOUND, f"no journal file at {self.db!r}")
            with open_storage(self.db, readonly=True, busy_timeout=self.busy_timeout) as journal:
                return fn(journal)
        with self._lock:  # one open, however many requests come at once; a failed one is
            if self._closed:  # tried again by the next request
                raise _Problem(HTTPStatus.SERVICE_UNAVAILABLE, "the page server is closing")
            if self._shared is None:
                self._shared = open_storage(self.db, readonly=True,
                                            busy_timeout=self.busy_timeout)
            journal = self._shared
        return fn(journal)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            journal, self._shared = self._shared, None
        if journal is not None:
            journal.close()


class _Server(ThreadingHTTPServer):
    """The page's server: its request threads share ``journal``, closed with the server."""

    def __init__(self, address: tuple[str, int], journal: _Journal) -> None:
        self.journal = journal  # before binding: a refused bind calls server_close()
        super().__init__(address, handler(journal))

    def server_close(self) -> None:
        super().server_close()
        self.journal.close()


def handler(journal: _Journal) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``journal`` (read-only) and the page."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "litedurable-ui"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the command prints its address, not one line per refresh

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def _refuse(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "application/json",
                       _json({"error": "this page is read-only: only GET is served"}),
                       head=False, allow="GET, HEAD")

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def _answer(self, *, head: bool) -> None:
            url = urlsplit(self.path)
            try:
                self._check_host()
                if url.path in FILES:
                    name, kind = FILES[url.path]
                    body = (STATIC / name).read_bytes()
                    self._send(HTTPStatus.OK, f"{kind}; charset=utf-8", body, head=head)
                    return
                value = self._api(url.path, parse_qs(url.query))
                self._send(HTTPStatus.OK, "application/json", _json(value), head=head)
            except _Problem as problem:
                self._send(problem.status, "application/json",
                           _json({"error": str(problem)}), head=head)
            except DurableError as exc:  # a damaged, locked or foreign file
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json",
                           _json({"error": f"{type(exc).__name__}: {exc}"}), head=head)
            except Exception as exc:  # a row this page cannot read: say so, keep serving
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "application/json",
                           _json({"error": f"{type(exc).__name__}: {exc}"}), head=head)

        def _check_host(self) -> None:
            """Refuse a request addressed to another name (a DNS rebinding page that points
            its own domain at 127.0.0.1 must not read the journal through the browser)."""
            port = self.connection.getsockname()[1]  # the port this request came in on
            if self.headers.get("Host") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
                raise _Problem(HTTPStatus.FORBIDDEN, "this page answers only to "
                               f"http://127.0.0.1:{port}/ or http://localhost:{port}/")

        def _api(self, path: str, query: dict[str, list[str]]) -> Any:
            if path.rstrip("/") == "/api/workflows":
                return journal.read(lambda j: _list(j, query))
            if path.startswith("/api/workflows/"):
                workflow_id = unquote(path[len("/api/workflows/"):])
                try:
                    check_workflow_id(workflow_id)
                except InvalidIdError as exc:
                    raise _Problem(HTTPStatus.BAD_REQUEST, str(exc)) from None
                found = journal.read(lambda j: detail(j, workflow_id))
                if found is None:
                    raise _Problem(HTTPStatus.NOT_FOUND, f"no workflow with id {workflow_id!r}")
                return found
            raise _Problem(HTTPStatus.NOT_FOUND, f"nothing at {path}")

        def _send(self, status: HTTPStatus, kind: str, body: bytes, *, head: bool,
                  allow: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if allow:
                self.send_header("Allow", allow)
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str).encode()


def serve(db: str, port: int = 8765, *, busy_timeout: float = 5.0) -> ThreadingHTTPServer:
    """A server for the page of ``db`` on 127.0.0.1 (port 0: any free port), not yet serving:
    call ``serve_forever()`` on it, and ``server_close()`` after (it closes the journal)."""
    journal = _Journal(db, busy_timeout)
    server = _Server(("127.0.0.1", port), journal)
    server.daemon_threads = True
    return server
