"""Operating a PostgreSQL journal: a server that cannot be reached, or goes away and comes back;
messages that name the journal (with its schema, never the password); the page server's one
pool. ``postgres_dsn`` (conftest) is the shared throwaway server; the tests that stop a server
start their own (``bouncing``), so the other tests keep theirs.

No test here asserts a duration: a call that waits too long (the 130 s libpq default to connect
to a silent server; 9 retries of a 30 s pool wait when the server went away) is caught by the
hang guard (``faulthandler_timeout``), and the message says which wait ended (``timeout
expired``: libpq's ``connect_timeout``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import child_env, eventually

import litedurable as ld
from litedurable import _ui
from litedurable._backends import _split_schema, describe_location
from litedurable._cli import main
from litedurable._storage import Storage
from litedurable.testing import NoPostgresError, postgres_server

pytest.importorskip("psycopg")
import psycopg  # after the skip: the optional extra

from litedurable._postgres.driver import describe

SECRET = "s3cretPW"
HOLD = 30.0  # a hang guard only


def _url(dsn: str, schema: str, *, password: bool = True) -> str:
    """``dsn`` naming ``schema``, with a password (the test servers trust any)."""
    parts = urllib.parse.urlsplit(dsn)
    user, host = parts.netloc.rsplit("@", 1)
    netloc = f"{user}:{SECRET}@{host}" if password else parts.netloc
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=f"schema={schema}"))


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


# -- a server that can be stopped and started again -------------------------------------------


class Bouncing:
    """A throwaway server of this test module's own, stopped and started with ``pg_ctl`` as
    the user it runs as (``litedurable.testing.postgres_server`` started it)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            def show(name: str) -> str:
                row = conn.execute(f"SHOW {name}").fetchone()
                assert row is not None
                return str(row[0])
            self.data, port = show("data_directory"), show("port")
            sockets = show("unix_socket_directories")
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                check=True).stdout.strip()
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", self.data, *args], check=True,
                       capture_output=True)

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._ctl("-o", self.options, "-l", os.path.join(os.path.dirname(self.data), "log"),
                  "-w", "start")


@pytest.fixture(scope="module")
def bouncing(postgres_dsn: str) -> Iterator[Bouncing]:
    """A server of its own (``postgres_dsn`` only to skip where there is none)."""
    if os.environ.get("LITEDURABLE_TEST_POSTGRES"):
        pytest.skip("stops and starts a server of its own: needs the machine's binaries")
    try:
        with postgres_server(fsync="off") as dsn:
            yield Bouncing(dsn)  # stopped or not, postgres_server removes it
    except NoPostgresError as missing:
        pytest.skip(str(missing))


# -- a server that cannot be reached -----------------------------------------------------------


def _free_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _assert_names_the_server(message: str, port: int, schema: str) -> None:
    assert f"@127.0.0.1:{port}/db (schema {schema})" in message, message
    assert "is the server running" in message and "check the DSN" in message, message
    assert SECRET not in message


def test_opening_a_server_that_refuses_says_where_and_what_to_do(
        capsys: pytest.CaptureFixture[str]) -> None:
    port, schema = _free_port(), _schema()
    url = f"postgresql://bob:{SECRET}@127.0.0.1:{port}/db?schema={schema}"
    with pytest.raises(ld.JournalError) as refused, ld.App(url):
        pass
    _assert_names_the_server(str(refused.value), port, schema)
    for command in (["list"], ["show", "some-id"], ["cancel", "some-id"], ["queues"]):
        assert main(["--db", url, *command]) == 4, command  # the journal cannot be used
        _assert_names_the_server(capsys.readouterr().err, port, schema)


def test_opening_a_server_that_never_answers_ends_at_the_connect_timeout() -> None:
    """A host that takes the TCP connection and says nothing (a wedged server, a firewall
    that drops): libpq waited 130 s by default; now ``CONNECT_TIMEOUT``."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the handshakes; nobody ever answers
        port, schema = int(silent.getsockname()[1]), _schema()
        url = f"postgresql://bob:{SECRET}@127.0.0.1:{port}/db?schema={schema}"
        with pytest.raises(ld.JournalError) as silence, ld.App(url):
            pass
    assert "timeout expired" in str(silence.value)  # libpq's connect_timeout ended the wait
    _assert_names_the_server(str(silence.value), port, schema)


def test_a_running_app_reports_a_server_gone_away_and_works_once_it_is_back(
        bouncing: Bouncing) -> None:
    schema = _schema()
    app = ld.App(_url(bouncing.dsn, schema))
    ran: list[int] = []

    @app.workflow()
    def record(n: int) -> int:
        ran.append(n)
        return n

    with app:
        assert app.start(record, 1).result(timeout=HOLD) == 1
        bouncing.stop()
        try:
            for call in (lambda: app.start(record, 2), lambda: app.list_workflows(),
                         lambda: app.handle("no-such-id").status()):
                with pytest.raises(ld.JournalError) as gone:
                    call()
                message = str(gone.value)
                assert f"(schema {schema})" in message and SECRET not in message, message
                assert "is the server running" in message, message
        finally:
            bouncing.start()

        def works() -> Any:  # a pooled connection lost while away may fail one more call
            try:
                return app.start(record, 3).result(timeout=HOLD)
            except ld.JournalError:
                return None

        assert eventually(works, "the App to work again once the server is back",
                          timeout=HOLD) == 3
    assert 2 not in ran and ran.count(1) == 1 and 3 in ran


def test_a_run_stopped_by_a_server_restart_resumes_once_the_server_is_back(
        bouncing: Bouncing) -> None:
    """A step whose record failed because the server went away stopped its run, and the App
    took its own workflow back only at its next recovery, a lease later (10 s by default,
    here 600 s: past the hang guard). A run stopped on a journal error now hurries the
    recovery: the workflow runs again as soon as the server answers."""
    app = ld.App(_url(bouncing.dsn, _schema()), lease=600)
    ran: list[str] = []
    inside, gate = threading.Event(), threading.Event()

    @app.step()
    def first() -> str:
        ran.append("first")
        return "a"

    @app.step()
    def second() -> str:
        ran.append("second")
        inside.set()
        assert gate.wait(HOLD)
        return "b"

    @app.workflow()
    def two() -> str:
        return first() + second()

    with app:
        handle = app.start(two)
        assert inside.wait(HOLD)
        bouncing.stop()
        try:
            gate.set()  # the step returns; its record finds the server away: the run stops
            eventually(lambda: not app._parts()[1].is_active(handle.workflow_id),
                       "the run to stop", timeout=HOLD)
        finally:
            bouncing.start()
        assert eventually(lambda: _result_or_none(handle), "the workflow to finish",
                          timeout=HOLD) == "ab"
    assert ran == ["first", "second", "second"]  # the unrecorded step ran again, once


def test_a_result_waited_for_rides_through_a_server_restart(
        bouncing: Bouncing, caplog: pytest.LogCaptureFixture) -> None:
    """``handle.result()`` raised "cannot be reached" when the server restarted during the
    wait, though the workflow went on and finished: the wait now goes on through it (and
    says so once), as a DBOS ``get_result`` does."""
    app = ld.App(_url(bouncing.dsn, _schema()))
    gate = threading.Event()

    @app.workflow()
    def waits() -> str:
        assert gate.wait(HOLD)
        return "done"

    caplog.set_level("WARNING", logger="litedurable")
    got: list[object] = []
    with app:
        handle = app.start(waits)
        waiter = threading.Thread(target=lambda: got.append(_outcome(handle)))
        waiter.start()
        bouncing.stop()
        try:
            eventually(lambda: any("still:" in r.getMessage() for r in caplog.records),
                       "the wait to find the server away", timeout=HOLD)
        finally:
            bouncing.start()
        gate.set()
        waiter.join(HOLD)
    assert got == ["done"]


def test_the_cli_result_rides_through_a_server_restart(
        bouncing: Bouncing, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``litedurable result ID --timeout 60`` exited 4 at its first poll that found the
    server restarting; it now waits on, as ``Handle.result()`` does, and says so once."""
    from litedurable import _cli_read

    url = _url(bouncing.dsn, _schema())
    app = ld.App(url)
    gate, read = threading.Event(), threading.Event()
    real_find = _cli_read._find

    def find(journal: Any, workflow_id: str) -> Any:
        row = real_find(journal, workflow_id)
        read.set()  # the command has read the workflow once: its wait began
        return row

    monkeypatch.setattr(_cli_read, "_find", find)

    @app.workflow()
    def waits() -> str:
        assert gate.wait(HOLD)
        return "done"

    codes: list[int] = []
    with app:
        handle = app.start(waits)
        command = threading.Thread(target=lambda: codes.append(
            main(["--db", url, "result", handle.workflow_id, "--timeout", str(HOLD)])))
        command.start()
        assert read.wait(HOLD)
        bouncing.stop()
        try:
            eventually(lambda: "still:" in capsys.readouterr().err or None,
                       "the command to find the server away", timeout=HOLD)
        finally:
            bouncing.start()
        gate.set()
        command.join(HOLD)
    assert codes == [0]
    assert '"done"' in capsys.readouterr().out


def _outcome(handle: ld.Handle[str]) -> object:
    try:
        return handle.result(timeout=HOLD)
    except Exception as exc:  # what the test reports
        return exc


def _result_or_none(handle: ld.Handle[str]) -> str | None:
    try:
        return handle.result(timeout=0.5)
    except (ld.JournalError, ld.WaitTimeoutError):  # a pooled connection lost while away
        return None


# -- messages name the journal with its schema ------------------------------------------------


@pytest.mark.parametrize("url", [
    "postgresql://bob:pw@127.0.0.1:5432/db?schema=x",
    "postgres://bob@h/db",
    "postgresql://h:5/db?password=pw&sslmode=require&schema=s_1",
    "postgresql:///db?host=/run/postgresql&port=5433",
    "postgresql://b%40x:p%3Aw@[::1]:5432/my%20db",
    "postgresql://h:1/d?user=alice&password=pw&connect_timeout=2",
])
def test_the_cli_and_the_driver_name_a_journal_alike(url: str) -> None:
    """``describe_location`` (no psycopg) and the driver's ``describe`` (libpq's parser) say
    the same thing: the CLI's messages and the storage's name one journal one way."""
    dsn, schema = _split_schema(url)
    shown = describe_location(url)
    assert shown == describe(dsn, schema)
    assert shown.endswith(f" (schema {schema})") and "pw" not in shown and "?" not in shown
    assert dsn.startswith(url.split("://")[0] + "://")  # the URL stays a URL without schema=


def test_cli_messages_name_the_schema_and_say_journal(
        postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    schema = _schema()
    url = _url(postgres_dsn, schema)
    where = describe_location(url)
    assert where.endswith(f"/postgres (schema {schema})") and SECRET not in where
    # A schema that holds no journal is "not found", as a missing file is (it was exit 4).
    assert main(["--db", url, "list"]) == 3
    err = capsys.readouterr().err
    assert f"no litedurable journal in {where}" in err and "file" not in err
    app = ld.App(url)

    @app.workflow()
    def wf() -> int:
        return 1

    with app:
        app.start(wf, workflow_id="w").result(timeout=HOLD)
    for command, shown in ((["check"], f"{where}: ok"), (["queues"], f"no queues in {where}"),
                           (["schedules"], f"no schedules in {where}")):
        assert main(["--db", url, *command]) == 0, command
        assert shown in capsys.readouterr().out, command
    assert main(["--db", url, "backup", "copy.db"]) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and SECRET not in err
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "journal file (default" not in usage and "a postgresql:// URL" in usage
    assert "(PostgreSQL: use pg_dump)" in usage


def test_the_demo_runs_on_a_postgresql_journal(postgres_dsn: str, tmp_path: Any) -> None:
    """It crashed with FileNotFoundError: its side-effect ledger was named after the journal
    (``postgresql://...?schema=x.demo-ledger``)."""
    schema = _schema()
    proc = subprocess.run(
        [sys.executable, "-m", "litedurable", "--db", _url(postgres_dsn, schema), "demo"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"(schema {schema})" in proc.stdout and SECRET not in proc.stdout
    assert "killed with SIGKILL" in proc.stdout and proc.stdout.count("body ran") == 5
    assert list(tmp_path.iterdir()) == []  # no ledger left behind, nor anything else


# -- the page server ---------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HOLD)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_the_page_server_opens_a_postgresql_journal_once(
        postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """It opened a storage (a pool, a listener, a schema check) for every request."""
    url = _url(postgres_dsn, _schema())
    app = ld.App(url)

    @app.workflow()
    def wf(n: int) -> int:
        return n

    with app:
        app.start(wf, 7, workflow_id="w").result(timeout=HOLD)
    opened: list[Storage] = []
    real: Callable[..., Storage] = _ui.open_storage

    def counting(*args: Any, **kwargs: Any) -> Storage:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(_ui, "open_storage", counting)
    server = _ui.serve(url, 0)
    thread = threading.Thread(target=server.serve_forever, name="ui-test-server")
    thread.start()
    port = server.server_address[1]
    answers: list[tuple[int, Any]] = []
    together = threading.Barrier(4)

    def several() -> None:
        together.wait(HOLD)  # the first requests come at once: one open among them
        for _ in range(3):
            answers.append(_get(port, "/api/workflows/w"))

    try:
        readers = [threading.Thread(target=several) for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(HOLD)
        answers += [_get(port, "/api/workflows"), _get(port, "/api/workflows/w"),
                    _get(port, "/api/workflows/no-such-id")]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(HOLD)
    assert [status for status, _ in answers] == [200] * 14 + [404]
    assert {body["output"] for _, body in answers[:12] + answers[13:14]} == {7}
    assert [w["workflow_id"] for w in answers[12][1]["workflows"]] == ["w"]
    assert len(opened) == 1  # one pool for 15 requests, the first 12 of them at once
    with pytest.raises(ld.AppClosedError):  # closed with the server
        opened[0].list_workflows()
