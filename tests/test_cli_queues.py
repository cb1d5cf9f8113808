"""The CLI and queues: ``queues``, ``list --queue``/``--status enqueued``, cancel and resume of
an enqueued workflow, and ``worker MODULE:APP`` as a real process stopped by SIGTERM; on
SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import child_env, eventually

import litedurable as ld
from litedurable._backends import shown_location
from litedurable._cli import main
from litedurable._format import duration

pytestmark = pytest.mark.both_backends  # each test that takes db_path runs on both backends


@pytest.fixture
def busy_queue(db_path: str) -> Iterator[tuple[str, ld.App, threading.Event]]:
    """A running App with queue ``crawl`` (concurrency 1): ``job-0`` runs, held in its step
    until the event is set; ``job-1`` to ``job-3`` wait enqueued behind it. Queue
    ``accounts`` (partitioned) is declared and empty."""
    db = db_path
    app = ld.App(db)
    release = threading.Event()

    @app.step(name="hold")
    def hold(n: int) -> int:
        release.wait(30)
        return n

    @app.workflow(name="fetch")
    def fetch(n: int) -> int:
        return hold(n)

    crawl = app.queue("crawl", concurrency=1, worker_concurrency=3, rate_limit=(10, 1.0))
    app.queue("accounts", concurrency=1, partitioned=True)
    with app:
        for n in range(4):
            crawl.enqueue(fetch, n, workflow_id=f"job-{n}")
        eventually(lambda: app.handle("job-0").status() == ld.Status.PENDING, "job-0 dequeued")
        try:
            yield db, app, release
        finally:
            release.set()


def test_queues_shows_limits_and_counts(
    busy_queue: tuple[str, ld.App, threading.Event], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, _ = busy_queue
    assert main(["--db", str(db), "queues", "--json"]) == 0
    listed = {q["name"]: q for q in json.loads(capsys.readouterr().out)}
    assert sorted(listed) == ["accounts", "crawl"]
    crawl, accounts = listed["crawl"], listed["accounts"]
    assert (crawl["concurrency"], crawl["worker_concurrency"], crawl["rate_limit"],
            crawl["partitioned"]) == (1, 3, [10, 1.0], False)
    assert (crawl["enqueued"], crawl["running"], crawl["started_last_minute"]) == (3, 1, 1)
    assert crawl["oldest_wait_seconds"] >= 0
    assert (accounts["partitioned"], accounts["enqueued"], accounts["running"],
            accounts["oldest_wait_seconds"]) == (True, 0, 0, None)

    assert main(["--db", str(db), "queues"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["QUEUE", "CONCURRENCY"]
    assert lines[1].split() == ["accounts", "1", "-", "-", "yes", "0", "0", "0", "-"]
    assert lines[2].split()[:8] == ["crawl", "1", "3", "10/1s", "no", "3", "1", "1"]
    assert lines[2].split()[-1] in ("ms", "s", "min")  # the oldest wait, "0 s" or "120 ms"


def test_queues_on_a_journal_without_queues(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(db)

    @app.workflow(name="noop")
    def noop() -> None: ...

    with app:
        app.run(noop)
    assert main(["--db", str(db), "queues"]) == 0
    assert capsys.readouterr().out.startswith(f"no queues in {shown_location(db)}")
    assert main(["--db", str(db), "queues", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_duration_reads_like_a_person_would_say_it() -> None:
    assert [duration(s) for s in (0, 0.4, 3.9, 59, 150, 7200, 7205, 11520, 200000, -90)] == [
        "0 s", "400 ms", "3 s", "59 s", "2 min 30 s", "2 h", "2 h", "3 h 12 min", "2 d 7 h",
        "1 min 30 s"]


def test_list_filters_by_queue_and_enqueued_status(
    busy_queue: tuple[str, ld.App, threading.Event], capsys: pytest.CaptureFixture[str]
) -> None:
    db, app, _ = busy_queue

    @app.workflow(name="other")
    def other() -> None: ...

    app.run(other, workflow_id="not-queued")
    assert main(["--db", str(db), "list", "--queue", "crawl", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["workflow_id"], r["status"]) for r in rows) == [
        ("job-0", "pending"), ("job-1", "enqueued"), ("job-2", "enqueued"),
        ("job-3", "enqueued")]
    assert main(["--db", str(db), "list", "--status", "enqueued"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[:3][0] for line in lines[1:]) == ["job-1", "job-2", "job-3"]
    assert all(line.split()[2] == "enqueued" for line in lines[1:])
    assert main(["--db", str(db), "list", "--queue", "accounts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cancel_an_enqueued_workflow_and_resume_it_into_its_queue(
    busy_queue: tuple[str, ld.App, threading.Event], capsys: pytest.CaptureFixture[str]
) -> None:
    db, app, release = busy_queue
    assert main(["--db", str(db), "cancel", "job-2"]) == 0
    assert "cancelled 1 workflow(s): job-2" in capsys.readouterr().out
    assert app.handle("job-2").status() == ld.Status.CANCELLED
    assert main(["--db", str(db), "cancel", "job-2"]) == 1  # nothing left to cancel
    assert "is cancelled" in capsys.readouterr().err
    assert main(["--db", str(db), "resume", "job-3"]) == 1  # enqueued: nothing to resume
    assert "job-3' is enqueued: nothing to resume" in capsys.readouterr().err

    assert main(["--db", str(db), "resume", "job-2"]) == 0
    assert "went back to its queue" in capsys.readouterr().out
    assert app.handle("job-2").status() == ld.Status.ENQUEUED
    release.set()  # the queue drains; the resumed workflow runs like the others
    assert [app.handle(f"job-{n}").result(timeout=30) for n in range(4)] == [0, 1, 2, 3]


def test_worker_refuses_what_it_cannot_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "served.py").write_text(textwrap.dedent(f"""
        import litedurable as ld
        app = ld.App({str(tmp_path / "served.db")!r})
        not_an_app = 42
    """))
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    cases = [
        ("served", "needs MODULE:APP"),
        ("served:", "needs MODULE:APP"),
        ("no_such_module:app", "cannot import 'no_such_module'"),
        ("broken_mod:app", "RuntimeError: boom at import"),
        ("served:nope", "has no attribute 'nope'"),
        ("served:not_an_app", "is a int, not a litedurable.App"),
    ]
    for spec, said in cases:
        assert main(["worker", spec]) == 2, spec
        assert said in capsys.readouterr().err, spec
    assert main(["--db", str(tmp_path / "elsewhere.db"), "worker", "served:app"]) == 2
    assert "is not the journal served:app opens" in capsys.readouterr().err
    assert not (tmp_path / "served.db").exists()  # nothing was launched


WORKER_MODULE = '''
import os
import time
from pathlib import Path

import litedurable as ld

HERE = Path(__file__).resolve().parent
app = ld.App(JOURNAL, grace=0.2)
jobs = app.queue("jobs", concurrency=2)


@app.step(name="do")
def do(n: int) -> int:
    # Jobs from GATED on wait for the gate file: the first worker stops with them unfinished.
    while n >= GATED and not (HERE / "gate").exists():
        time.sleep(0.002)
    with open(HERE / "ledger.txt", "a") as ledger:
        ledger.write(f"{n} {os.getpid()}\\n")
    return n


@app.workflow(name="job")
def job(n: int) -> int:
    return do(n)


@app.workflow(name="yearly")
def yearly(fire_at: object) -> None: ...


app.schedule("new-year", yearly, "0 0 1 1 *")
'''

JOBS, GATED = 20, 8


def _ledger(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    return [(int(n), int(pid)) for n, pid in
            (line.split() for line in path.read_text().splitlines())]


def _worker(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "litedurable", "worker", "queued_jobs:app", "--log-level",
         "warning"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> tuple[str, str]:
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, f"exit {worker.returncode}\n{out}\n{err}"
    assert "worker stopped" in out, out
    return out, err


def test_worker_consumes_stops_on_sigterm_and_a_second_start_finishes(tmp_path: Path,
                                                                     db_path: str) -> None:
    (tmp_path / "queued_jobs.py").write_text(
        WORKER_MODULE.replace("GATED", str(GATED)).replace("JOURNAL", repr(db_path)))
    ledger = tmp_path / "ledger.txt"
    # The test enqueues through a producer-only declaration (consume=False): the workers do
    # all the work.
    producer = ld.App(db_path)

    @producer.workflow(name="job")
    def job(n: int) -> int:
        raise AssertionError("the producer never runs a job")

    jobs = producer.queue("jobs", concurrency=2, consume=False)
    with producer:
        for n in range(JOBS):
            jobs.enqueue(job, n, workflow_id=f"job-{n}")

    first = _worker(tmp_path)
    assert first.stdout is not None
    assert "serving" in first.stdout.readline()
    assert "queue jobs: concurrency 2, per worker -, rate limit -" in first.stdout.readline()
    assert "schedule new-year: yearly at '0 0 1 1 *' (UTC)" in first.stdout.readline()
    eventually(lambda: len(_ledger(ledger)) >= GATED, lambda: f"ledger {_ledger(ledger)}")
    _stop(first)
    done = _ledger(ledger)
    assert sorted(n for n, _ in done) == list(range(GATED))  # the gated ones were cut short
    assert {pid for _, pid in done} == {first.pid}

    (tmp_path / "gate").touch()
    second = _worker(tmp_path)
    eventually(lambda: len(_ledger(ledger)) >= JOBS, lambda: f"ledger {_ledger(ledger)}")
    _stop(second)
    done = _ledger(ledger)
    assert sorted(n for n, _ in done) == list(range(JOBS))  # every job once: none lost or redone
    assert {pid for n, pid in done if n >= GATED} == {second.pid}
    with ld.App(db_path) as reader:
        statuses = {reader.handle(f"job-{n}").status() for n in range(JOBS)}
        assert statuses == {ld.Status.SUCCEEDED}
