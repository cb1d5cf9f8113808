"""Regressions found by attacking the PostgreSQL backend as a user moving from SQLite would
(``postgres_dsn`` in conftest: a throwaway server, or a skip saying why)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

import litedurable as ld
from litedurable._backends import describe_location
from litedurable._cli import main
from litedurable._ui import serve

SECRET = "s3cretPW"


def _with_password(dsn: str, *, in_query: bool = False) -> str:
    """``dsn`` (trust authentication: any password is accepted) with a password in it."""
    parts = urllib.parse.urlsplit(dsn)
    schema = f"schema=t_{uuid.uuid4().hex[:12]}"
    if in_query:
        return urllib.parse.urlunsplit(parts._replace(query=f"password={SECRET}&{schema}"))
    user, host = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{SECRET}@{host}",
                                                  query=schema))


@pytest.mark.parametrize("in_query", [False, True])
def test_a_password_is_never_shown(postgres_dsn: str, in_query: bool,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    dsn = _with_password(postgres_dsn, in_query=in_query)
    assert SECRET not in describe_location(dsn)
    app = ld.App(dsn)

    @app.workflow()
    def wf() -> int:
        return 1

    with app:
        assert app.start(wf).result(timeout=30) == 1
        with pytest.raises(ld.WorkflowNotFoundError) as found:
            app.handle("no-such-workflow").result(timeout=1)
        assert SECRET not in str(found.value)
    # The CLI's messages that name the journal.
    capsys.readouterr()
    assert main(["--db", dsn, "queues"]) == 0
    assert main(["--db", dsn, "schedules"]) == 0
    assert main(["--db", dsn, "check"]) == 0
    main(["--db", dsn, "schedules", "pause", "no-such-schedule"])
    out = capsys.readouterr()
    assert "no queues in" in out.out and "no schedule named" in out.err
    assert "SQLite" not in out.out  # `check` on PostgreSQL runs no SQLite integrity check
    assert SECRET not in out.out + out.err


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_ui_serves_a_postgresql_journal(postgres_dsn: str) -> None:
    """``litedurable ui --db postgresql://`` answered every API request with "no journal file
    at '<the URL, password included>'"."""
    dsn = _with_password(postgres_dsn)
    app = ld.App(dsn)

    @app.workflow()
    def wf() -> int:
        return 7

    with app:
        workflow_id = app.start(wf).workflow_id
        app.handle(workflow_id).result(timeout=30)
    server = serve(dsn, 0)
    thread = threading.Thread(target=server.serve_forever, name="ui-test-server")
    thread.start()
    try:
        port = server.server_address[1]
        status, body = _get(port, "/api/workflows")
        assert status == 200, body
        listed: Any = json.loads(body)
        assert [w["workflow_id"] for w in listed["workflows"]] == [workflow_id]
        status, body = _get(port, f"/api/workflows/{workflow_id}")
        assert status == 200, body
        assert json.loads(body)["status"] == "succeeded"
        assert SECRET.encode() not in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_write_command_does_not_create_a_mistyped_schema(
        postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """On SQLite `cancel` on a missing file is refused; on PostgreSQL it created an empty
    schema of that name (then said the workflow was not found)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    assert main(["--db", f"{postgres_dsn}?schema={schema}", "cancel", "some-id"]) != 0
    where = describe_location(f"{postgres_dsn}?schema={schema}")
    assert f"no litedurable journal in {where}" in capsys.readouterr().err
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                             (schema,)).fetchone()
    assert found == (0,)


def test_a_newer_schema_is_refused_read_only_too(
        postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only open (the CLI's) of a newer schema told the user to "open it read-write
    with the litedurable that wrote it, or a newer one, to migrate it"."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.schema_version (version integer)")
        conn.execute(f"INSERT INTO {schema}.schema_version VALUES (99)")
    location = f"{postgres_dsn}?schema={schema}"
    with pytest.raises(ld.JournalVersionError, match="upgrade litedurable"):
        ld.App(location).launch()
    assert main(["--db", location, "list"]) != 0
    assert "upgrade litedurable" in capsys.readouterr().err


def test_every_pooled_connection_dropped_at_once_is_not_an_error(postgres_dsn: str) -> None:
    """After the server dropped all the App's connections (a restart, pg_terminate_backend,
    a proxy's idle timeout) with the server up again, reads and writes failed ("the database
    cannot be reached"): a lost pooled connection was replaced only once."""
    psycopg = pytest.importorskip("psycopg")
    app = ld.App(f"{postgres_dsn}?schema=t_{uuid.uuid4().hex[:12]}")

    @app.workflow()
    def wf(n: int) -> int:
        return n

    with app:
        app.start(wf, 1).result(timeout=30)
        barrier = threading.Barrier(6)

        def busy() -> None:  # six reads at once: the pool holds several connections
            barrier.wait(timeout=30)
            for _ in range(20):
                app.list_workflows()

        threads = [threading.Thread(target=busy) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "pid <> pg_backend_pid() AND backend_type = 'client backend' AND "
                "datname = current_database()").fetchone()
        assert ended is not None and ended[0] >= 3
        assert len(app.list_workflows()) == 1
        assert app.start(wf, 2).result(timeout=30) == 2


@pytest.mark.parametrize("schema", ["Bad-Name", "a%20b", "", "x" * 49])
def test_a_bad_schema_name_is_an_error_message_not_a_traceback(
        postgres_dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``litedurable --db 'postgresql://...?schema=Bad-Name' list`` printed a ValueError
    traceback: the name was refused with a plain ValueError the CLI does not report."""
    url = f"{postgres_dsn}?schema={schema}"
    code = main(["--db", url, "list"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("litedurable: error: the schema name") and "?schema=name" in err
    with pytest.raises(ValueError, match="not a lowercase SQL identifier"):
        ld.App(url).launch()


def test_a_url_naming_two_schemas_is_refused(
        postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``?schema=a&schema=b`` opened schema ``a`` and ignored ``b`` without a word: which
    journal the user meant is a guess, so it is an error that says to give it once."""
    url = f"{postgres_dsn}?schema=t_{uuid.uuid4().hex[:8]}&schema=t_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ld.JournalError, match=r"names 2 schemas.*give \?schema= once"):
        ld.App(url).launch()
    assert main(["--db", url, "list"]) != 0
    assert "give ?schema= once" in capsys.readouterr().err


def test_the_notifier_outlives_a_server_that_is_away(postgres_dsn: str) -> None:
    """The notifier thread died of the ``JournalError`` its connection raises while the server
    is away (it caught psycopg's errors only): from then on the process never notified again,
    and every other process saw its commits only by its one-second fallback poll. Repro
    without the seam: stop the server, commit twice (the second finds the pool empty), start
    it again: ``Exception in thread litedurable-notify``."""
    url = f"{postgres_dsn}?schema=t_{uuid.uuid4().hex[:12]}"
    app = ld.App(url)
    with app, psycopg.connect(postgres_dsn, autocommit=True) as listener:
        driver = app._parts()[0].driver
        listener.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(driver.channel)))
        real = driver._connection
        failed = threading.Event()

        @contextlib.contextmanager
        def away() -> Iterator[Any]:
            failed.set()
            raise driver._unreachable(psycopg.OperationalError("connection refused"))
            yield  # pragma: no cover

        driver._connection = away  # type: ignore[method-assign]
        try:
            driver.announce()
            assert failed.wait(30)
        finally:
            driver._connection = real  # type: ignore[method-assign]
        list(listener.notifies(timeout=0.5))  # whatever was sent before the failure
        driver.announce()  # a later commit's notification still reaches the listeners
        heard = [n.payload for n in listener.notifies(timeout=30, stop_after=1)]
        assert heard == [driver.token]
        assert driver._notifier.is_alive()
