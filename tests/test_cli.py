"""The `litedurable` command: every subcommand has help, reads the file, and reports errors.

The tests that take ``db_path`` run on SQLite and on PostgreSQL (``--db`` a URL), but the one
that rewrites a file to an older schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import child_env

import litedurable as ld
from litedurable._cli import build_parser, main

pytestmark = pytest.mark.both_backends  # each test that takes db_path runs on both backends

COMMANDS = [
    "list", "count", "show", "steps", "tree", "result", "watch", "schedules", "queues", "start",
    "cancel", "resume", "fork", "gc", "backup", "check", "export", "import", "replay", "worker",
    "ui", "demo",
]

WORKFLOW_MODULE = '''
import litedurable as ld

app = ld.App({path!r})

@app.step()
def {step}(x: int) -> int:
    return x + 1

@app.workflow(name="pipeline")
def pipeline(x: int) -> int:
    return {step}({step}(x))
'''


def _make_journal(tmp_path: Path, db: str, step: str = "inc") -> tuple[str, str]:
    module = tmp_path / "cli_jobs.py"
    module.write_text(WORKFLOW_MODULE.format(path=str(db), step=step))
    namespace: dict[str, object] = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, ld.App)
    with app:
        app.run(namespace["pipeline"], 1, workflow_id="wf-1")  # type: ignore[arg-type]
    return db, "wf-1"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: litedurable" in capsys.readouterr().out


def test_schedules_lists_paused_and_active(db_path: str, capsys: pytest.CaptureFixture[str]):
    db = db_path
    app = ld.App(db)

    @app.workflow(name="job")
    def job(fire_at: object) -> None: ...

    app.schedule("nightly", job, "0 0 2 * * *", tz="Europe/Paris")
    app.schedule("often", job, "*/5 * * * *")
    with app:
        app.pause_schedule("often")
    assert main(["--db", str(db), "schedules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["SCHEDULE", "WORKFLOW", "CRON"]
    assert lines[1].split()[:11] == ["nightly", "job", "0", "0", "2", "*", "*", "*",
                                     "Europe/Paris", "active", "never"]
    next_fire = lines[1].split()[11]  # ISO 8601 in the schedule's zone, 2:00 there
    assert next_fire.endswith(("T02:00:00+01:00", "T02:00:00+02:00")), next_fire
    assert lines[1].split()[12] == "(in"
    assert lines[2].split()[-3:] == ["paused", "never", "-"]


def test_parser_knows_exactly_the_contract_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)  # type: ignore[arg-type]


def test_list_show_steps(tmp_path: Path, db_path: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    db, wid = _make_journal(tmp_path, db_path)
    assert main(["--db", str(db), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(w["workflow_id"], w["status"]) for w in listed] == [(wid, "succeeded")]
    assert main(["--db", str(db), "show", wid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["output"] == 3 and shown["inputs"] == {"args": [1], "kwargs": {}}
    assert main(["--db", str(db), "steps", wid, "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)
    assert [(s["step"], s["kind"], s["name"], s["output"]) for s in steps] == [
        (0, "step", "inc", 2), (1, "step", "inc", 3)
    ]


def test_read_commands_read_a_journal_of_the_previous_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Schema 4 only dropped ``workflows.cancel_requested``, which no statement reads. Yet a
    read-only open refused every older file ("needs a schema upgrade"), so after upgrading
    litedurable, ``list``/``show``/``steps``/``replay`` refused every existing journal (on a
    read-only copy, for good) until an App had opened it read-write."""
    import apsw

    db, wid = _make_journal(tmp_path, str(tmp_path / "cli.db"))  # SQLite's by nature
    conn = apsw.Connection(str(db))  # the file as schema 3 left it
    try:
        conn.execute("ALTER TABLE workflows ADD COLUMN cancel_requested INTEGER NOT NULL "
                     "DEFAULT 0; PRAGMA user_version=3")
    finally:
        conn.close()
    assert main(["--db", str(db), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(w["workflow_id"], w["status"]) for w in listed] == [(wid, "succeeded")]
    assert main(["--db", str(db), "show", wid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == 3
    assert main(["--db", str(db), "steps", wid, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA user_version").fetchall() == [(3,)]  # read, not migrated
    finally:
        conn.close()


def test_unknown_id_and_missing_file_are_clear_errors(
    tmp_path: Path, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = _make_journal(tmp_path, db_path)
    assert main(["--db", str(db), "show", "nope"]) == 3  # not found (issue 12 item 23)
    assert "no workflow with id 'nope'" in capsys.readouterr().err
    assert main(["--db", str(tmp_path / "missing.db"), "list"]) == 3
    assert "no journal file" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_fork_and_gc(tmp_path: Path, db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    db, wid = _make_journal(tmp_path, db_path)
    assert main(["--db", str(db), "fork", wid, "1", "--new-id", "wf-2"]) == 0
    assert main(["--db", str(db), "steps", "wf-2", "--json"]) == 0
    out = capsys.readouterr().out
    assert [s["step"] for s in json.loads(out[out.index("["):])] == [0]
    assert main(["--db", str(db), "cancel", "wf-2"]) == 0
    assert "cancelled 1 workflow(s): wf-2" in capsys.readouterr().out
    assert main(["--db", str(db), "resume", "wf-2"]) == 0
    assert "pending again" in capsys.readouterr().out
    assert main(["--db", str(db), "gc", "--older-than", "0"]) == 0
    assert "deleted 1 finished workflow(s)" in capsys.readouterr().out  # wf-1; wf-2 is pending


def test_replay_passes_on_same_code_and_catches_a_changed_workflow(
    tmp_path: Path, db_path: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    db, wid = _make_journal(tmp_path, db_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["--db", str(db), "replay", "cli_jobs:app"]) == 0
    assert f"{wid}: ok" in capsys.readouterr().out
    # Negative control: the same journal against code whose step was renamed.
    (tmp_path / "cli_jobs2.py").write_text(WORKFLOW_MODULE.format(path=str(db), step="add_one"))
    assert main(["--db", str(db), "replay", "cli_jobs2:app"]) == 1
    out = capsys.readouterr().out
    assert "not deterministic" in out and "step 0" in out


def test_demo_kills_and_resumes(tmp_path: Path, db_path: str) -> None:
    """On PostgreSQL too: the demo put its side-effect ledger beside the journal's path, so
    ``--db postgresql://... demo`` failed with a FileNotFoundError traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "litedurable", "--db", db_path, "demo"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "killed with SIGKILL" in proc.stdout
    assert "never run again" in proc.stdout
    assert proc.stdout.count("body ran") == 5


def test_benchmark_runner_smoke(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["workload"] for r in records} >= {
        "raw_commit", "a_sequential_steps", "b_three_step_workflows", "c_fan_out",
        "sleeping_workflows", "queue_drain", "queue_latency", "queue_rate_limit",
    }




def test_benchmark_runner_postgres_smoke(tmp_path: Path, postgres_dsn: str) -> None:
    """``run.py --backend postgres`` on the test server: every engine's databases are fresh
    per repetition and dropped after, recovery re-runs no recorded step."""
    root = Path(__file__).resolve().parent.parent
    env = {**child_env(), "LITEDURABLE_BENCH_POSTGRES": postgres_dsn}
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "run.py"), "--quick", "--backend",
         "postgres", "--durability", "full", "--only", "a,b,d,e"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    by_name = {r["workload"]: r for r in records}
    assert set(by_name) == {"server", "raw_commit", "raw_commit_8_threads",
                            "a_sequential_steps", "b_three_step_workflows", "d_crash_recovery",
                            "e_big_journal"}
    assert by_name["raw_commit"]["engine"] == "psycopg"
    assert by_name["d_crash_recovery"]["reran_recorded_steps"] == 0
    assert by_name["d_crash_recovery"]["step_rows_at_kill"] >= 20 * 5
    assert by_name["e_big_journal"]["rows_in_file"] >= 2_000  # the clones read back (checked)
    import psycopg

    with psycopg.connect(postgres_dsn) as conn:  # every benchmark database was dropped
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'ldbench_%'").fetchone()
    assert left == (0,)
