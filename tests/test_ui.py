"""`litedurable ui`: the JSON API, the export, the server's limits, and the page in Chromium.

The journal is made once by real workflows (``ui_journal.py``): a race of two ``go`` steps and
a one-hour timer, a retried step, a child, a failed step, a recovery by a second App, a failed
workflow, and a pending one whose sleep is not due yet.

The browser test needs ``chromium`` on PATH (Debian's package; ``.ci/run`` installs it). It
skips without it, unless ``LITEDURABLE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a
failure. ``LITEDURABLE_UPDATE_SCREENSHOT=1`` also writes the screenshot to docs/timeline.png.

The module's journal is an SQLite file (a test checks the server leaves its bytes alone);
``test_postgres_attack`` serves a PostgreSQL one. The tests marked ``both_backends`` (a live
journal another App writes, a crafted row) run on both.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from support import child_env, eventually
from ui_journal import make_journal

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._cli import main
from litedurable._ui import serve

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_journal(tmp_path_factory.mktemp("ui") / "ui.db")


@pytest.fixture(scope="module")
def port(journal: Path) -> Iterator[int]:
    """A page server for the journal, on a free port of 127.0.0.1."""
    server = serve(str(journal), 0)
    thread = threading.Thread(target=server.serve_forever, name="ui-test-server")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(port: int, path: str, method: str = "GET",
            host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None,
                     headers={} if host is None else {"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port: int, path: str, expect: int = 200) -> Any:
    status, headers, body = request(port, path)
    assert (status, headers["Content-Type"]) == (expect, "application/json"), body
    return json.loads(body)


def by_step(workflow: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {s["step"]: s for s in workflow["steps"]}


# -- the JSON API ---------------------------------------------------------------------------


def test_list_newest_first_with_filters_and_pages(port: int) -> None:
    listed = get_json(port, "/api/workflows")
    ids = [w["workflow_id"] for w in listed["workflows"]]
    assert sorted(ids) == ["nap-1", "order-1", "order-1-invoice", "refund-1"]
    created = [w["created_at"] for w in listed["workflows"]]
    assert created == sorted(created, reverse=True)
    assert all(c.endswith("+00:00") and "T" in c for c in created)
    assert listed["more"] is False
    statuses = {w["workflow_id"]: w["status"] for w in listed["workflows"]}
    assert statuses == {"nap-1": "pending", "order-1": "succeeded",
                        "order-1-invoice": "succeeded", "refund-1": "failed"}
    assert all(w["duration"] >= 0 for w in listed["workflows"])

    failed = get_json(port, "/api/workflows?status=failed")["workflows"]
    assert [(w["workflow_id"], w["error"]) for w in failed] == [
        ("refund-1", "ValueError: card declined for refund of 5")]
    assert [w["workflow_id"] for w in get_json(port, "/api/workflows?name=nap")["workflows"]] \
        == ["nap-1"]
    assert get_json(port, "/api/workflows?queue=nothing")["workflows"] == []
    first = get_json(port, "/api/workflows?limit=1")
    second = get_json(port, "/api/workflows?limit=1&offset=1")
    assert first["more"] is True
    assert [w["workflow_id"] for w in first["workflows"] + second["workflows"]] == ids[:2]


@pytest.mark.parametrize("query", ["status=bogus", "limit=-1", "limit=x", "offset=1.5"])
def test_list_refuses_bad_filters(port: int, query: str) -> None:
    assert "error" in get_json(port, f"/api/workflows?{query}", expect=400)


def test_a_workflow_with_its_race_retry_child_failure_and_recovery(port: int) -> None:
    order = get_json(port, "/api/workflows/order-1")
    steps = by_step(order)
    kinds = [s["kind"] for s in order["steps"]]
    assert kinds == ["step", "go", "go", "after", "select", "step", "child", "wait", "step",
                     "message", "step", "sleep"]
    race = next(s for s in order["steps"] if s["kind"] == "select")
    assert (race["candidates"], race["winner"]) == ([1, 2, 3], 0)  # the fast branch won
    timer = steps[3]
    # The timer lost the race and the workflow ended before it was due: it never fires.
    assert timer["wake_at"] > order["updated_at"]
    assert (timer["future"], timer["unfired"]) == (False, True)
    charge = steps[5]
    assert [a["error"] for a in charge["attempts"]] == [
        "ConnectionError: payment gateway timeout (try 1)",
        "ConnectionError: payment gateway timeout (try 2)"]
    assert charge["output"] == "charged 1999" and charge["site"].startswith("ui_journal.py:")
    assert all(a["started_at"] <= a["finished_at"] for a in charge["attempts"])
    failed = steps[8]
    assert failed["error"] == "ValueError: card declined for refund of 1"
    assert "raise ValueError" in failed["traceback"]
    assert steps[6]["child_id"] == "order-1-invoice"
    [child] = order["children"]
    assert (child["workflow_id"], child["parent_id"], child["status"]) == (
        "order-1-invoice", "order-1", "succeeded")
    assert [s["output"] for s in child["steps"]] == ["reserved invoice 1999"]
    # The second App took it over while it waited for the message: what the first recorded
    # was replayed by the second, whose steps ran live.
    first, second = order["owners"]
    assert [s["owner"] for s in order["steps"]] == [first] * 9 + [second] * 3
    assert [s["replayed"] for s in order["steps"]] == [True] * 9 + [False] * 3
    assert order["recovery_attempts"] == 1
    assert [(m["topic"], m["message"], m["read_by_step"]) for m in order["messages"]] == [
        ("approve", "ada", 9)]
    assert order["inputs"] == {"args": [1999], "kwargs": {}}


def test_a_failed_workflow_and_a_sleep_not_yet_due(port: int) -> None:
    refund = get_json(port, "/api/workflows/refund-1")
    assert refund["status"] == "failed"
    assert refund["error"] == "ValueError: card declined for refund of 5"
    assert "card declined" in refund["traceback"]
    nap = get_json(port, "/api/workflows/nap-1")
    assert nap["status"] == "pending"
    sleep = by_step(nap)[1]
    assert sleep["kind"] == "sleep" and sleep["future"] is True
    assert sleep["wake_at"] > nap["now"]


def test_unknown_and_bad_ids(port: int) -> None:
    assert "no workflow" in get_json(port, "/api/workflows/nobody", expect=404)["error"]
    assert "error" in get_json(port, "/api/workflows/a%00b", expect=400)
    assert "error" in get_json(port, "/api/nothing", expect=404)


# -- the server ------------------------------------------------------------------------------


def test_serves_the_page_from_the_package(port: int) -> None:
    status, headers, body = request(port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="app.js"></script>' in body
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = request(port, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    assert request(port, "/", "HEAD")[2] == b""


def test_binds_loopback_and_answers_only_reads(journal: Path, port: int) -> None:
    server = serve(str(journal), 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/workflows/order-1", "/api/workflows", "/"):
            status, headers, body = request(port, path, method)
            assert (status, headers["Allow"]) == (405, "GET, HEAD"), (method, path)
            assert "read-only" in json.loads(body)["error"]
    get_json(port, "/api/workflows/order-1")
    # Only to its own address: a page of another name resolved to 127.0.0.1 reads nothing.
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
        status, _, body = request(port, "/api/workflows", host=host)
        assert status == 403 and b"order-1" not in body, host
    assert request(port, "/api/workflows", host=f"localhost:{port}")[0] == 200
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before
    with open_storage(str(journal), readonly=True) as storage:
        assert storage.get_workflow("order-1") is not None  # still a sound journal


@pytest.mark.both_backends
def test_follows_a_journal_another_app_is_writing(db_path: str) -> None:
    """Each request reads what is committed now: a waiting workflow, then its outcome."""
    db = db_path
    app = ld.App(db)

    @app.workflow(name="waiter")
    def waiter() -> str:
        return f"got {ld.recv('go')}"

    server = serve(str(db), 0)
    thread = threading.Thread(target=server.serve_forever, name="ui-test-server")
    thread.start()
    try:
        with app:
            handle = app.start(waiter, workflow_id="w-1")
            port = server.server_address[1]
            waiting = eventually(
                lambda: [s for s in get_json(port, "/api/workflows/w-1")["steps"]
                         if s["kind"] == "message"], "the workflow to wait for its message")
            assert waiting[0]["finished_at"] is None  # an open row: still waiting
            assert get_json(port, "/api/workflows?status=pending")["workflows"][0][
                "workflow_id"] == "w-1"
            app.send("w-1", "yes", topic="go")
            assert handle.result(timeout=30) == "got yes"
            done = get_json(port, "/api/workflows/w-1")
            assert (done["status"], done["output"]) == ("succeeded", "got yes")
            assert done["steps"][0]["finished_at"] is not None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_ui_command_serves_until_interrupted(journal: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "litedurable", "--db", str(journal), "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        assert len(get_json(int(match.group(1)), "/api/workflows")["workflows"]) == 4
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_ui_command_refuses_a_missing_file_and_a_bad_port(tmp_path: Path) -> None:
    assert main(["--db", str(tmp_path / "none.db"), "ui", "--port", "0"]) == 3
    assert main(["--db", str(tmp_path / "none.db"), "ui", "--port", "70000"]) == 2


def test_the_package_ships_the_page_and_every_subpackage() -> None:
    """An installed litedurable (not this checkout) has the page's files and its backend.

    Regression: ``packages`` listed ``litedurable`` alone, so a wheel had no ``_sqlite`` and
    ``import litedurable`` failed once installed; the tests import this checkout and missed it.
    """
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = REPO / "litedurable"
    subpackages = {"litedurable"} | {f"litedurable.{p.parent.name}"
                                     for p in package.glob("*/__init__.py")}
    assert subpackages <= set(setup["packages"])
    page = [p.relative_to(package).as_posix() for p in (package / "ui").iterdir()]
    assert sorted(page) == ["ui/app.js", "ui/index.html", "ui/style.css"]
    globs = setup["package-data"]["litedurable"]
    assert all(any(fnmatch(f, g) for g in globs) for f in page)


# -- the export -------------------------------------------------------------------------------


def exported(journal: Path, workflow_id: str, out: Path) -> str:
    assert main(["--db", str(journal), "ui", "--export", workflow_id, str(out)]) == 0
    return out.read_text()


def test_export_is_one_self_contained_file(journal: Path, tmp_path: Path) -> None:
    page = exported(journal, "order-1", tmp_path / "order.html")
    assert not re.search(r"https?://", page)  # nothing to fetch: no CDN, no server
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "<style>" in page and "window.LITEDURABLE_DATA = " in page
    data = json.loads(page.split("window.LITEDURABLE_DATA = ", 1)[1].split(";</script>", 1)[0])
    assert data["workflow_id"] == "order-1"
    assert [c["workflow_id"] for c in data["children"]] == ["order-1-invoice"]
    assert by_step(data)[8]["error"] == "ValueError: card declined for refund of 1"
    # A value that spells a closing tag cannot end the script element early.
    assert page.count("</script>") == 2


def test_export_of_an_unknown_workflow_writes_nothing(journal: Path, tmp_path: Path) -> None:
    out = tmp_path / "none.html"
    assert main(["--db", str(journal), "ui", "--export", "nobody", str(out)]) == 3
    assert not out.exists()


# -- in a real browser -------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("LITEDURABLE_REQUIRE_BROWSER") == "1":
            pytest.fail("LITEDURABLE_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH: install Debian's `chromium` package to run this test")
    return found


def browse(url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless Chromium (3 s of virtual time for the script); its stdout."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", f"--user-data-dir={profile}",
         "--virtual-time-budget=3000", "--window-size=1400,900", *extra, url],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(url: str, profile: Path) -> str:
    """The DOM after the script ran, without the script itself (its text names every class)."""
    dom = browse(url, profile, "--dump-dom")
    return re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)


def elements(dom: str, classes: str, **attrs: str) -> list[str]:
    """The start tags in ``dom`` whose class list holds all of ``classes`` (and ``attrs``)."""
    found = []
    for tag in re.findall(r"<[a-z]+\b[^>]*>", dom):
        names = re.search(r'class="([^"]*)"', tag)
        if names and set(classes.split()) <= set(names.group(1).split()) and all(
                f'{k.replace("_", "-")}="{v}"' in tag for k, v in attrs.items()):
            found.append(tag)
    return found


def test_timeline_renders_in_chromium(journal: Path, tmp_path: Path) -> None:
    chromium()
    page = tmp_path / "order.html"
    exported(journal, "order-1", page)
    dom = rendered(page.as_uri(), tmp_path / "profile")
    # Lanes: the workflow's own, one per go branch and per after timer, the child's.
    assert len(elements(dom, "lane lane-workflow")) == 2
    assert len(elements(dom, "lane lane-workflow", data_wf="order-1-invoice")) == 1
    assert len(elements(dom, "lane lane-branch", data_wf="order-1")) == 3
    # The race: a select mark; the fast branch won, the slow one lost and went on.
    assert elements(dom, "select-mark", data_step="4", data_winner_step="1")
    assert elements(dom, "step kind-go winner", data_step="1")
    assert elements(dom, "step kind-go loser", data_step="2")
    assert elements(dom, "connector winner", data_candidate="1")
    # The one-hour timer, still to fire, and the retried step's failed attempts.
    assert elements(dom, "step kind-after timer", data_step="3")
    assert not elements(dom, "step kind-after timer future", data_step="3")  # ended first
    assert len(elements(dom, "attempt")) == 2
    # The failed step, its traceback below; the recovery, and the replayed steps.
    assert elements(dom, "step kind-step failed", data_step="8")
    assert re.search(r'<pre class="traceback">[^<]*card declined for refund of 1', dom)
    assert len(elements(dom, "recovery", data_wf="order-1")) == 1
    assert len(elements(dom, "step replayed", data_wf="order-1")) >= 5

    # A step named in the address is selected: its details (call site, owner, attempts) show.
    chosen = rendered(page.as_uri() + "#?step=5", tmp_path / "profile")
    assert elements(chosen, "step selected", data_wf="order-1", data_step="5")
    details = chosen.split('id="details"', 1)[1].split("</div>", 1)[0]
    assert "step 5 · step" in details and "ui_journal.py:" in details
    assert details.count("ConnectionError: payment gateway timeout") == 2
    child_step = rendered(page.as_uri() + "#?step=order-1-invoice:0", tmp_path / "profile")
    assert elements(child_step, "step selected", data_wf="order-1-invoice", data_step="0")

    shot = tmp_path / "timeline.png"
    browse(page.as_uri() + "#?step=5", tmp_path / "profile", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LITEDURABLE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "timeline.png")


def test_served_pages_render_in_chromium(port: int, tmp_path: Path) -> None:
    chromium()
    listing = rendered(f"http://127.0.0.1:{port}/#/", tmp_path / "profile")
    assert len(elements(listing, "workflow-row")) == 4
    nap = rendered(f"http://127.0.0.1:{port}/#/wf/nap-1", tmp_path / "profile")
    assert elements(nap, "step kind-sleep timer future", data_step="1")
    assert elements(nap, "now-line")  # pending: the page marks the present


@pytest.mark.both_backends
def test_a_crafted_select_row_reaches_the_page_as_numbers_only(db_path: str) -> None:
    """The journal is data, not code: a select row whose candidates are markup (checksum and
    all valid) must not put that markup into the page (found by the code review)."""
    from litedurable._storage import StepRow
    from litedurable._ui import detail

    evil = '"><img src=x onerror="document.title=1">'
    with open_storage(db_path) as journal:
        journal.insert_workflow(workflow_id="w", name="n", inputs=b'{"args":[],"kwargs":{}}',
                                now=1.0, app_version="v", parent_id=None, owner="me")
        extra = json.dumps({"candidates": [evil, 1], "winner": evil}).encode()
        journal.record_step(StepRow("w", 0, "select", "select", b"0", None, extra, 1.0, 2.0),
                            "me")
        found = detail(journal, "w", now=3.0)
    assert found is not None
    (step,) = found["steps"]
    assert (step["candidates"], step["winner"]) == ([1], None)
    script = (Path(ld.__file__).parent / "ui" / "app.js").read_text()
    assert 'data-candidate="${esc(c)}"' in script and 'data-step="${s.step}"' not in script
