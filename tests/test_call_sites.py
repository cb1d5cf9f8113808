"""What a timeline and a NonDeterminismError need from the journal (schema 7): each journaled
call's call site, the owner that recorded it, and a retried step's failed attempts."""

from __future__ import annotations

import inspect
from pathlib import Path

import apsw
import pytest
from support import eventually

import litedurable as ld
from litedurable._sqlite import SqliteStorage
from litedurable._storage import StepRow


def _line_of(marker: str) -> int:
    source, first = inspect.getsourcelines(_workflows)
    return first + next(i for i, line in enumerate(source) if marker in line)


def _workflows(app: ld.App) -> object:
    failures = iter([ValueError("first"), KeyError("second")])

    @app.step(retries=ld.Retry(max_attempts=3, initial=0.0))
    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "third time"

    @app.workflow(name="sites")
    def sites() -> str:
        value = flaky()  # SITE: flaky
        ld.go(lambda: 1).result()  # SITE: go
        ld.now()  # SITE: now
        return value

    return sites


@pytest.mark.both_backends
def test_each_call_records_its_site_owner_and_failed_attempts(db_path: str) -> None:
    app = ld.App(db_path)
    sites = _workflows(app)
    with app:
        assert app.start(sites, workflow_id="s").result(timeout=10) == "third time"
        steps = app.steps("s")
        owner = app._owner
    here = Path(__file__).name
    assert [s.site for s in steps] == [
        f"{here}:{_line_of('SITE: flaky')}", f"{here}:{_line_of('SITE: go')}",
        f"{here}:{_line_of('SITE: now')}",
    ]
    assert {s.owner for s in steps} == {owner}
    assert [error for _, _, error in steps[0].attempts] == ["ValueError: first",
                                                            "KeyError: 'second'"]
    assert all(start <= end for start, end, _ in steps[0].attempts)
    assert steps[0].attempts[0][0] >= steps[0].started_at
    assert steps[1].attempts == [] and steps[2].attempts == []


@pytest.mark.both_backends
def test_a_nondeterminism_error_names_where_each_call_was_made(db_path: str) -> None:
    path = db_path
    first = ld.App(path)

    @first.workflow(name="w")
    def recorded() -> None:
        ld.uuid4()
        ld.sleep(3600)

    with first:
        first.start(recorded, workflow_id="w")
        eventually(lambda: len(first.steps("w")) == 2, "the uuid and the sleep are recorded")

    second = ld.App(path)

    @second.workflow(name="w")
    def changed() -> None:
        ld.now()

    with second, pytest.raises(ld.NonDeterminismError) as caught:
        second.handle("w").result(timeout=10)
    here = Path(__file__).name
    message = str(caught.value)
    recorded_line = inspect.getsourcelines(recorded)[1] + 2
    changed_line = inspect.getsourcelines(changed)[1] + 2
    assert f"uuid4 'uuid4' (at {here}:{recorded_line})" in message
    assert f"(at {here}:{changed_line})" in message


def test_a_journal_from_before_schema_7_reads_with_no_sites(tmp_path: Path) -> None:
    """A read-only open (the CLI's) cannot migrate: an older file's steps read as they are.
    SQLite-only by nature: it makes the schema-6 file itself."""
    path = str(tmp_path / "old.db")
    with SqliteStorage(path) as journal:
        journal.insert_workflow(workflow_id="a", name="n", inputs=b"[]", now=1.0,
                                app_version="v", parent_id=None, owner="me")
        journal.record_step(StepRow("a", 0, "step", "s", b"1", None, None, 1.0, 2.0,
                                    "x.py:1"), "me")
    conn = apsw.Connection(path)
    for column in ("site", "attempts", "owner"):
        conn.execute(f"ALTER TABLE steps DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 6")
    conn.close()
    with SqliteStorage(path, readonly=True) as journal:
        (step,) = journal.load_steps("a")
    assert (step.output, step.site, step.owner, step.attempts) == (b"1", None, None, None)


@pytest.mark.both_backends
def test_a_retried_failure_that_cannot_be_printed_is_recorded_as_unprintable(
        db_path: str) -> None:
    """An exception whose ``str()`` raises must not break the retry loop that records it."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    app = ld.App(db_path)
    calls = [0]

    @app.step(retries=ld.Retry(max_attempts=2, initial=0.0))
    def flaky() -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise Unprintable()
        return 7

    @app.workflow(name="w")
    def w() -> int:
        return flaky()

    with app:
        assert app.run(w, workflow_id="u") == 7
        (step,) = app.steps("u")
    assert [error for _, _, error in step.attempts] == [
        "Unprintable: <unprintable Unprintable object>"]
