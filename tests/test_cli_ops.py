"""The operations CLI (issue 16 part 1) on journals made by real workflows: ``--db`` anywhere
and ``$LITEDURABLE_DB``, ISO 8601 times, ``list`` filters and its footer, ``count``, ``show``
as text, ``tree``, ``result``, ``watch``, ``schedules`` actions, ``start``, ``gc``,
``backup``, ``check``, ``export``/``import``.

Each test runs on SQLite and on PostgreSQL (the CLI takes a ``postgresql://`` URL as its
``--db``), but ``backup`` (``pg_dump``'s job on a server) and a row changed behind the
journal's back through SQLite."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest
from support import child_env, cli_exit, eventually, journal_ids

import litedurable as ld
from litedurable import _format as fmt
from litedurable._backends import is_server_url, open_storage
from litedurable._cli import build_parser, main

JOBS = '''
import litedurable as ld

app = ld.App({path!r})
tries = {{"n": 0}}

@app.step()
def inc(x: int) -> int:
    return x + 1

@app.step(retries=ld.Retry(max_attempts=3, initial=0.01))
def flaky() -> str:
    tries["n"] += 1
    if tries["n"] % 3:
        raise RuntimeError(f"try {{tries['n']}}")
    return "ok"

@app.workflow(name="child")
def child(x: int) -> int:
    return inc(x)

@app.workflow(name="parent")
def parent(x: int) -> int:
    ld.now()
    a = ld.go(inc, x)
    b = ld.after(3600)
    won = ld.select([a, b])
    c = app.start(child, 5)
    flaky()
    return c.result() + won.result()

@app.workflow(name="boom")
def boom() -> None:
    raise ValueError("bad input")

@app.workflow(name="job")
def job(fire_at: object) -> str:
    return "fired"

app.schedule("nightly", job, "0 0 2 * * *", tz="Europe/Paris")
work = app.queue("work", concurrency=2)
'''

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

LONG_ID = "order-" + "x" * 70
EPOCH = re.compile(r"\b1[6-9]\d{8}\.\d+")  # an epoch float, which no output should show


def _jobs(directory: Path, module: str, db: str) -> tuple[str, dict[str, Any]]:
    """Write module ``module`` (the workflows above, on the journal ``db``) into
    ``directory`` and load it."""
    path = directory / f"{module}.py"
    path.write_text(JOBS.format(path=str(db)))
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return db, namespace


def _run_all(namespace: dict[str, Any]) -> None:
    app = namespace["app"]
    with app:
        assert app.run(namespace["parent"], 1, workflow_id="p-1") == 8
        with pytest.raises(ValueError):
            app.run(namespace["boom"], workflow_id="b-1")
        app.run(namespace["child"], 1, workflow_id=LONG_ID)


@pytest.fixture(scope="module")
def journals() -> dict[str, str]:
    """The read-only journal of each backend, made once for the module."""
    return {}


@pytest.fixture
def journal(journals: dict[str, str], db_backend: str, new_db: Callable[[str], str],
            tmp_path_factory: pytest.TempPathFactory) -> str:
    """A journal (read only by the tests using it): ``p-1`` (now, go, after, select, a child
    ``p-1/4``, a step retried twice), ``b-1`` failed, and a child workflow with a long id.
    Made once per backend (the first test's ``new_db`` names it; nothing deletes it)."""
    if db_backend not in journals:
        db, namespace = _jobs(tmp_path_factory.mktemp("ops"), "ops_jobs_ro", new_db("ops"))
        _run_all(namespace)
        journals[db_backend] = db
    return journals[db_backend]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          new_db: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    """A journal of its own (for the commands that write) and the importable ``MODULE:APP``
    that made it, from the current directory."""
    module = f"ops_jobs_{abs(hash(str(tmp_path)))}"
    db, namespace = _jobs(tmp_path, module, new_db("ops"))
    _run_all(namespace)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield db, f"{module}:app"
    sys.modules.pop(module, None)


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)




# -- global options -------------------------------------------------------------------------


def test_db_before_or_after_the_command_and_from_the_environment(
    journal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = str(tmp_path / "missing.db")
    monkeypatch.delenv("LITEDURABLE_DB", raising=False)
    assert main(["list", "--db", str(journal), "--busy-timeout", "1", "--json"]) == 0
    assert len(_json(capsys)) == 4
    assert main(["--db", missing, "list", "--db", str(journal), "--json"]) == 0  # the later
    assert len(_json(capsys)) == 4
    monkeypatch.setenv("LITEDURABLE_DB", str(journal))
    assert main(["count", "--json"]) == 0
    assert _json(capsys)["total"] == 4
    assert main(["--db", missing, "count"]) == 3  # the flag wins over the environment
    assert "no journal file" in capsys.readouterr().err
    monkeypatch.setenv("LITEDURABLE_DB", missing)
    assert main(["count", "--db", str(journal)]) == 0
    assert main(["count"]) == 3


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert _out(capsys).strip() == f"litedurable {importlib.metadata.version('litedurable')}"


def test_help_names_every_exit_code_and_each_command_has_help(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = _out(capsys)
    for code in ("0", "1", "2", "3", "4", "5", "130", "141"):
        assert f"\n  {code} " in out, code
    assert "LITEDURABLE_DB" in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command, parser in sub.choices.items():  # type: ignore[union-attr]
        text = parser.format_help()
        assert parser.description and parser.description in " ".join(text.split()), command
        assert "--db" in text, command  # anywhere on the line


# -- list and count -------------------------------------------------------------------------


def test_list_filters(journal: str, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*argv: str) -> list[str]:
        assert main(["--db", str(journal), "list", "--json", *argv]) == 0
        return [w["workflow_id"] for w in _json(capsys)]

    assert ids() == [LONG_ID, "b-1", "p-1/4", "p-1"]  # newest first
    assert ids("--name", "child") == [LONG_ID, "p-1/4"]
    assert ids("--status", "failed") == ["b-1"]
    assert ids("--parent", "p-1") == ["p-1/4"]
    assert ids("--since", "1h") == ids()
    assert ids("--until", "1h") == []
    tomorrow = (datetime.now().astimezone() + timedelta(days=1)).isoformat()
    assert ids("--since", tomorrow) == []
    assert ids("--until", tomorrow) == ids()
    assert ids("--since", "2000-01-01") == ids()  # a date, UTC
    assert main(["--db", str(journal), "list", "--since", "yesterday"]) == 2
    assert "neither an ISO 8601 instant" in capsys.readouterr().err


def test_list_pages_and_says_how_many_more(journal: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(journal), "list", "--limit", "3"]) == 0
    lines = _out(capsys).splitlines()
    assert len(lines) == 5 and lines[-1] == "... 1 more; use --offset 3 or --limit (--limit 0: all)"
    assert main(["--db", str(journal), "list", "--limit", "3", "--offset", "3"]) == 0
    lines = _out(capsys).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["p-1"]  # the last one, no footer
    assert main(["--db", str(journal), "list", "--limit", "0", "--jsonl"]) == 0
    records = [json.loads(line) for line in _out(capsys).splitlines()]
    assert [r["workflow_id"] for r in records] == [LONG_ID, "b-1", "p-1/4", "p-1"]
    assert main(["--db", str(journal), "list", "--limit", "1", "--jsonl"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1  # the footer goes to stderr, not into the data
    assert "3 more" in captured.err


def test_list_keeps_its_columns_with_a_long_id(journal: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(journal), "list"]) == 0
    header, *rows = _out(capsys).splitlines()
    at = header.index("NAME")
    assert rows[0].startswith("order-xxx") and "…" in rows[0] and LONG_ID not in rows[0]
    assert [row[at:].split()[0] for row in rows] == ["child", "boom", "child", "parent"]
    created = header.index("CREATED")
    for row in rows:  # ISO 8601 with its zone
        stamp = row[created:].split()[0]
        assert datetime.fromisoformat(stamp).tzinfo is not None, stamp
    assert all(row.rstrip().endswith(" ago") or " now" in row for row in rows)


def test_count_by_status(journal: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(journal), "count", "--json"]) == 0
    counts = _json(capsys)
    assert (counts["succeeded"], counts["failed"], counts["pending"], counts["total"]) == (
        3, 1, 0, 4)
    assert main(["--db", str(journal), "count", "--name", "child"]) == 0
    assert [line.split() for line in _out(capsys).splitlines()] == [
        ["STATUS", "WORKFLOWS"], ["succeeded", "2"], ["total", "2"]]


# -- show, steps, tree ----------------------------------------------------------------------


def test_show_is_readable_text(journal: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(journal), "show", "p-1"]) == 0
    out = _out(capsys)
    assert not EPOCH.search(out), EPOCH.search(out)
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines()
                  if not line.startswith(" "))
    assert (fields["status"], fields["output"], fields["inputs"]) == (
        "succeeded", "8", '{"args": [1], "kwargs": {}}')
    assert "after" in fields["finished"]  # its duration
    assert "candidates 1, 2; winner step 1" in out  # the step, not the index 0
    assert "step 5 attempt 1 failed" in out and "RuntimeError: try 2" in out
    timers = out.split("\ntimers\n")[1].split("\n\n")[0]
    assert re.fullmatch(r"  step 2 after: never woke: its workflow ended first \(it was due "
                        r"\S+\)\n?", timers), timers
    assert "children\n  p-1/4  child  succeeded" in out
    assert main(["--db", str(journal), "show", "b-1"]) == 0
    out = _out(capsys)
    assert "error      ValueError: bad input" in out and "Traceback" in out


def test_show_json_has_iso_instants_and_named_winners(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", str(journal), "show", "p-1", "--json"]) == 0
    shown = _json(capsys)
    steps = {s["step"]: s for s in shown["steps"]}
    now, after, select = steps[0], steps[2], steps[3]
    assert (select["candidates"], select["winner"], select["winner_step"]) == ([1, 2], 0, 1)
    woke = datetime.fromisoformat(after["output"]) - datetime.fromisoformat(after["started_at"])
    assert abs(woke.total_seconds() - 3600) < 1
    assert datetime.fromisoformat(now["output"]).tzinfo is not None
    assert [a["error"] for a in steps[5]["attempts"]] == ["RuntimeError: try 1",
                                                           "RuntimeError: try 2"]
    assert steps[5]["site"].startswith("ops_jobs_ro.py:") and steps[5]["owner"]
    assert shown["children"] == [{"workflow_id": "p-1/4", "name": "child",
                                  "status": "succeeded"}]
    assert shown["duration_seconds"] >= 0
    instants = [shown["created_at"], shown["updated_at"], shown["finished_at"],
                *(s[k] for s in shown["steps"] for k in ("started_at", "finished_at"))]
    assert all(datetime.fromisoformat(t).tzinfo is not None for t in instants)
    assert not EPOCH.search(json.dumps(shown))


def test_text_views_cut_a_long_value_and_json_keeps_it(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(db)

    @app.step()
    def big() -> str:
        return "y" * 5000

    @app.workflow(name="large")
    def large() -> str:
        return big()

    with app:
        app.run(large, workflow_id="big-1")
    assert main(["--db", str(db), "show", "big-1"]) == 0
    out = _out(capsys)
    assert "y" * 5000 not in out and "more characters; --json has them" in out
    assert max(len(line) for line in out.splitlines()) < 600
    assert main(["--db", str(db), "show", "big-1", "--json"]) == 0
    shown = _json(capsys)
    assert shown["output"] == "y" * 5000 and shown["steps"][0]["output"] == "y" * 5000


def test_a_select_won_by_its_timeout_says_so(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(db)
    release = threading.Event()

    @app.step()
    def slow() -> int:
        assert release.wait(60)
        return 1

    @app.workflow(name="race")
    def race() -> str:
        try:
            ld.select([ld.go(slow)], timeout=0.01)
        except ld.WaitTimeoutError:
            return "timed out"
        return "won"

    with app:
        assert app.run(race, workflow_id="r-1") == "timed out"
        release.set()
    assert main(["--db", str(db), "steps", "r-1", "--json"]) == 0
    select = next(s for s in _json(capsys) if s["kind"] == "select")
    assert (select["candidates"], select["winner"], select["winner_step"]) == ([0], -1, None)
    assert main(["--db", str(db), "steps", "r-1"]) == 0
    assert "candidates 0; the timeout won" in _out(capsys)


def test_steps_text_and_jsonl(journal: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(journal), "steps", "p-1"]) == 0
    header, *rows = _out(capsys).splitlines()
    assert header.split() == ["STEP", "KIND", "NAME", "STARTED", "DURATION", "ATTEMPTS", "SITE",
                              "OWNER", "OUTCOME"]
    attempts = header.index("ATTEMPTS")
    assert [row[attempts:].split()[0] for row in rows] == ["1", "1", "1", "1", "1", "3", "1"]
    assert not EPOCH.search("\n".join(rows))
    assert main(["--db", str(journal), "steps", "p-1", "--jsonl"]) == 0
    assert [json.loads(line)["kind"] for line in _out(capsys).splitlines()] == [
        "now", "go", "after", "select", "child", "step", "wait"]


def test_tree(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = db_path
    app = ld.App(db)

    @app.workflow(name="leaf")
    def leaf() -> str:
        return "leaf"

    @app.workflow(name="mid")
    def mid() -> None:
        app.start(leaf).result()
        app.start(leaf).result()

    @app.workflow(name="top")
    def top() -> None:
        app.start(mid).result()
        app.start(leaf).result()

    with app:
        app.run(top, workflow_id="t")
    assert main(["--db", str(db), "tree", "t"]) == 0
    assert _out(capsys).splitlines() == [
        "t  top  succeeded",
        "├── t/0  mid  succeeded",
        "│   ├── t/0/0  leaf  succeeded",
        "│   └── t/0/2  leaf  succeeded",
        "└── t/2  leaf  succeeded",
    ]
    assert main(["--db", str(db), "tree", "t", "--json"]) == 0
    tree = _json(capsys)
    assert [c["workflow_id"] for c in tree["children"][0]["children"]] == ["t/0/0", "t/0/2"]
    assert main(["--db", str(db), "tree", "nope"]) == 3


# -- result and watch -----------------------------------------------------------------------


@pytest.fixture
def held(db_path: str) -> Iterator[tuple[str, threading.Event]]:
    """A running App whose workflow ``h-1`` waits in its step until the event is set."""
    db = db_path
    app = ld.App(db)
    release = threading.Event()

    @app.step()
    def hold() -> int:
        assert release.wait(60)
        return 42

    @app.workflow(name="held")
    def held_wf() -> int:
        return hold()

    with app:
        app.start(held_wf, workflow_id="h-1")
        eventually(lambda: app.steps("h-1") or True, "started")
        try:
            yield db, release
        finally:
            release.set()
        app.handle("h-1").result(timeout=60)


def test_result_prints_the_outcome_and_exits_by_it(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", str(journal), "result", "p-1"]) == 0
    assert _json(capsys) == 8
    assert main(["--db", str(journal), "result", "b-1"]) == 1
    err = capsys.readouterr().err
    assert "'b-1' failed: ValueError: bad input" in err and "Traceback" in err


def test_result_waits_and_times_out(held: tuple[str, threading.Event]) -> None:
    db, release = held
    assert main(["--db", str(db), "result", "h-1", "--timeout", "0.05"]) == 5
    out = io.StringIO()
    codes: list[int] = []

    def wait() -> None:
        with contextlib.redirect_stdout(out):
            codes.append(main(["--db", str(db), "result", "h-1"]))

    waiter = threading.Thread(target=wait)
    waiter.start()
    release.set()
    waiter.join(60)
    assert codes == [0] and json.loads(out.getvalue()) == 42


def test_watch_prints_each_change_until_the_end(held: tuple[str, threading.Event]) -> None:
    db, release = held
    out = io.StringIO()
    codes: list[int] = []

    def watch() -> None:
        with contextlib.redirect_stdout(out):
            codes.append(main(["--db", str(db), "watch", "h-1"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    eventually(lambda: "status     pending" in out.getvalue(), "the first view")
    release.set()
    watcher.join(60)
    assert codes == [0]
    first, *later = out.getvalue().split("\n--- changed, ")
    assert "status     pending" in first and later
    assert "status     succeeded" in later[-1] and "output     42" in later[-1]


def test_watch_json_prints_a_snapshot_a_line(held: tuple[str, threading.Event]) -> None:
    db, release = held
    out = io.StringIO()
    codes: list[int] = []

    def watch() -> None:
        with contextlib.redirect_stdout(out):
            codes.append(main(["--db", str(db), "watch", "h-1", "--json"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    eventually(lambda: out.getvalue().endswith("\n"), "the first snapshot")
    release.set()
    watcher.join(60)
    snapshots = [json.loads(line) for line in out.getvalue().splitlines()]
    assert codes == [0] and len(snapshots) >= 2
    assert (snapshots[0]["status"], snapshots[-1]["status"], snapshots[-1]["output"]) == (
        "pending", "succeeded", 42)
    assert all(a != b for a, b in itertools.pairwise(snapshots))  # changes only


def test_watch_in_another_process_stops_on_ctrl_c(held: tuple[str, threading.Event]) -> None:
    """``watch`` in its own process, reading a file this process is writing: SIGINT (Ctrl-C)
    stops it quietly with status 130, no traceback."""
    db, _ = held
    proc = subprocess.Popen(
        [sys.executable, "-m", "litedurable", "watch", "h-1", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None
        seen = []
        while not any("status     pending" in line for line in seen):
            line = proc.stdout.readline()
            assert line, f"watch ended early: {''.join(seen)}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_show_follow_on_a_finished_workflow_prints_once(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", str(journal), "show", "--follow", "p-1"]) == 0
    out = _out(capsys)
    assert out.count("workflow   p-1") == 1 and "--- changed" not in out


# -- schedules, start -----------------------------------------------------------------------


def test_schedules_list_pause_resume_remove(fresh: tuple[str, str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = fresh

    def listed() -> dict[str, Any]:
        assert main(["--db", str(db), "schedules", "--json"]) == 0
        return {s["name"]: s for s in _json(capsys)}

    nightly = listed()["nightly"]
    assert not nightly["paused"] and nightly["next_fire"].endswith(("+01:00", "+02:00"))
    assert main(["--db", str(db), "schedules", "pause", "nightly"]) == 0
    assert "paused" in _out(capsys)
    assert listed()["nightly"]["paused"] and listed()["nightly"]["next_fire"] is None
    assert main(["--db", str(db), "schedules", "resume", "nightly"]) == 0
    assert "active again" in _out(capsys)
    assert not listed()["nightly"]["paused"]
    assert main(["--db", str(db), "schedules", "pause", "weekly"]) == 3
    assert "no schedule named 'weekly'" in capsys.readouterr().err
    assert main(["--db", str(db), "schedules", "pause"]) == 2  # which one?
    assert main(["--db", str(db), "schedules", "remove", "nightly"]) == 0
    assert "removed" in _out(capsys)
    assert listed() == {}


def test_schedules_trigger_and_start_through_the_app(
    fresh: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, spec = fresh
    assert main(["--db", str(db), "schedules", "trigger", "nightly"]) == 2  # needs --app
    assert main(["schedules", "trigger", "nightly", "--app", spec]) == 0
    fired = [w for w in journal_ids(db) if w.startswith("nightly@")]
    assert len(fired) == 1 and datetime.fromisoformat(fired[0].split("@")[1]).tzinfo
    assert main(["start", "parent", "--app", spec, "--args", "[2]", "--id", "s-1"]) == 0
    assert "started workflow 's-1'" in _out(capsys)
    assert main(["start", "parent", "--app", spec, "--args", "[2]", "--id", "s-1"]) == 0
    assert "already exists" in _out(capsys)
    assert main(["start", "child", "--app", spec, "--args", '{"x": 10}', "--id", "s-2"]) == 0
    assert main(["start", "child", "--app", spec, "--args", "[20]", "--id", "q-1",
                 "--queue", "work"]) == 0
    assert "enqueued workflow 'q-1' on queue 'work'" in _out(capsys)
    assert main(["start", "child", "--app", spec, "--args", "[1", "--id", "s-3"]) == 2
    assert main(["start", "nope", "--app", spec]) == 2
    assert main(["start", "child", "--app", spec, "--args", '["a", "b"]']) == 2  # its arity
    assert main(["start", "child", "--app", spec, "--queue", "undeclared"]) == 2
    assert main(["start", "child", "--app", spec, "--args", "[1]", "--id", "p-1"]) == 1
    with open_storage(str(db), readonly=True) as store:
        rows = {wid: store.get_workflow(wid) for wid in ("s-1", "s-2", fired[0])}
        queued = store.get_workflow("q-1")
    assert all(r is not None and (r.status, r.owner) == ("pending", None)
               for r in rows.values())
    assert queued is not None and (queued.status, queued.owner) == ("enqueued", None)
    assert journal_ids(db) - {"p-1", "p-1/4", "b-1", LONG_ID} == {"s-1", "s-2", "q-1", fired[0]}

    # An App launched on the file (as a worker would) runs what the CLI started.
    _, namespace = _jobs(tmp_path, "ops_jobs_runner", db)
    with namespace["app"] as app:
        assert app.handle("s-1").result(timeout=60) == 9  # (5 + 1) + (2 + 1)
        assert app.handle("s-2").result(timeout=60) == 11
        assert app.handle(fired[0]).result(timeout=60) == "fired"
        assert app.handle("q-1").result(timeout=60) == 21


def test_start_refuses_a_db_that_is_not_the_apps(
    fresh: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, spec = fresh
    other = tmp_path / "other.db"
    assert main(["--db", str(other), "start", "child", "--app", spec]) == 2
    assert "is not the journal" in capsys.readouterr().err and not other.exists()


# -- gc, backup, check, export, import ------------------------------------------------------


def test_ages(capsys: pytest.CaptureFixture[str]) -> None:
    assert [fmt.age(t) for t in ("30d", "12h", "90m", "90min", "45s", "10", "1.5h")] == [
        30 * 86400, 12 * 3600, 5400, 5400, 45, 10, 5400]
    for bad in ("-5", "nan", "inf", "1w", "", "5 d ago"):
        with pytest.raises(ValueError):
            fmt.age(bad)


def test_gc_takes_an_age_and_a_dry_run(fresh: tuple[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = fresh
    before = journal_ids(db)
    assert main(["--db", str(db), "gc", "--older-than", "1d"]) == 0
    assert "deleted 0 finished workflow(s) not updated for 1 d" in _out(capsys)
    for bad in ("-5", "-1d", "nan", "3 weeks"):
        assert cli_exit(["--db", str(db), "gc", "--older-than", bad]) == 2, bad
    assert journal_ids(db) == before
    assert main(["--db", str(db), "gc", "--older-than", "0s", "--dry-run"]) == 0
    out = _out(capsys)
    assert "would delete 4 finished workflow(s)" in out and "nothing was deleted" in out
    assert {line.strip() for line in out.splitlines()[1:]} == before
    assert journal_ids(db) == before
    assert main(["--db", str(db), "gc", "--older-than", "0"]) == 0
    assert "deleted 4" in _out(capsys) and journal_ids(db) == set()


@pytest.mark.sqlite_only("a PostgreSQL journal is copied by pg_dump: test_postgres_storage")
def test_backup_writes_a_new_file_only(fresh: tuple[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = fresh
    copy = tmp_path / "copy.db"
    assert main(["--db", str(db), "backup", str(copy)]) == 0
    assert journal_ids(copy) == journal_ids(db)
    copy.write_bytes(b"mine")
    assert main(["--db", str(db), "backup", str(copy)]) == 1
    assert "exists" in capsys.readouterr().err and copy.read_bytes() == b"mine"


@pytest.mark.sqlite_only("changes a row through SQLite; test_postgres_storage damages one there")
def test_check_names_a_damaged_row_and_exits_4(fresh: tuple[str, str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = fresh
    assert main(["--db", str(db), "check"]) == 0
    assert ": ok" in _out(capsys)
    conn = apsw.Connection(str(db))
    try:  # a payload changed behind the journal's back: only its checksum can tell
        conn.execute("UPDATE workflows SET inputs = ? WHERE workflow_id = 'b-1'",
                     (b'{"args": [666], "kwargs": {}}',))
    finally:
        conn.close()
    assert main(["--db", str(db), "check"]) == 4
    out = _out(capsys)
    assert "1 problem(s)" in out and "b-1" in out and "checksum" in out
    assert main(["--db", str(db), "check", "--json"]) == 4
    report = _json(capsys)
    assert report["ok"] is False and len(report["problems"]) == 1


def test_export_and_import_between_journals(
    fresh: tuple[str, str], tmp_path: Path, new_db: Callable[[str], str],
    capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = fresh
    out = tmp_path / "p1.jsonl"
    assert main(["--db", str(db), "export", "p-1", "--children", "-o", str(out)]) == 0
    assert "exported 2 workflow(s)" in _out(capsys)
    assert [json.loads(line)["workflow"]["workflow_id"]
            for line in out.read_text().splitlines()] == ["p-1", "p-1/4"]
    assert main(["--db", str(db), "export", "p-1", "-o", str(out)]) == 1  # a new file only
    assert main(["--db", str(db), "export", "p-1", "nope"]) == 3

    other = new_db("other")
    assert main(["--db", str(other), "import", str(out)]) == 0
    assert "imported 2 workflow(s): p-1, p-1/4" in _out(capsys)
    for command in (["show", "p-1", "--json"], ["steps", "p-1", "--json"]):
        assert main(["--db", str(db), *command]) == 0
        original = _json(capsys)
        assert main(["--db", str(other), *command]) == 0
        assert _json(capsys) == original

    # b-1 is new there, p-1 is not: the import is refused whole (nothing written), exit 1.
    assert main(["--db", str(db), "export", "b-1", "p-1"]) == 0
    both = tmp_path / "both.jsonl"
    both.write_text(_out(capsys))
    assert main(["--db", str(other), "import", str(both)]) == 1
    captured = capsys.readouterr()
    assert "imported" not in captured.out
    assert "workflow 'p-1' already exists" in captured.err
    assert "nothing was imported" in captured.err
    assert journal_ids(other) == {"p-1", "p-1/4"}
    assert main(["--db", str(db), "export", "b-1"]) == 0
    (tmp_path / "b1.jsonl").write_text(_out(capsys))
    assert main(["--db", str(other), "import", str(tmp_path / "b1.jsonl")]) == 0
    assert journal_ids(other) == {"p-1", "p-1/4", "b-1"}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(both.read_text().splitlines()[0].replace("b-1", "c-1") + "\n{oops\n")
    assert main(["--db", str(other), "import", str(bad)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err
    assert journal_ids(other) == {"p-1", "p-1/4", "b-1"}  # nothing of the file was written


def test_read_commands_work_while_an_app_runs_workflows(
    held: tuple[str, threading.Event], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = held
    assert main(["--db", str(db), "list", "--status", "pending", "--json"]) == 0
    assert [w["workflow_id"] for w in _json(capsys)] == ["h-1"]
    assert main(["--db", str(db), "show", "h-1"]) == 0
    assert "status     pending" in _out(capsys)
    if not is_server_url(db):  # a server's journal is copied by pg_dump
        assert main(["--db", str(db), "backup", str(tmp_path / "b.db")]) == 0
        assert journal_ids(tmp_path / "b.db") == {"h-1"}
    assert main(["--db", str(db), "check"]) == 0
    assert main(["--db", str(db), "export", "h-1"]) == 0
    assert json.loads(_out(capsys).splitlines()[-1])["workflow"]["status"] == "pending"
