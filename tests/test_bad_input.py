"""Bad input and faults the journal owns: each gets its specific exception, modifies nothing, and
leaves every previously committed outcome readable.

Journals are opened only through apsw here: the stdlib ``sqlite3`` module links another SQLite,
and two SQLite libraries on one WAL file corrupt it.

The tests of damaged, locked or full files are SQLite's by nature; those of bad ids, hostile
names, a read-only journal and recorded errors are marked ``both_backends``.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import sys
import uuid
from pathlib import Path

import apsw
import pytest

import litedurable as ld
from litedurable._backends import open_storage
from litedurable._lease import HOST, pid_namespace
from litedurable._sqlite import SqliteStorage
from litedurable._storage import OwnerRow


def _build(path: str, **options) -> tuple[ld.App, object]:
    app = ld.App(path, app_version="v1", **options)

    @app.step(name="echo_step")
    def echo_step(text: str) -> str:
        return text.upper()

    @app.workflow(name="echo")
    def echo(text: str) -> str:
        return "got " + echo_step(text)

    return app, echo


def _seed(path: str, count: int = 3, size: int = 10) -> dict[str, str]:
    """A journal holding ``count`` finished workflows; returns their ids and results."""
    app, echo = _build(path)
    expected = {}
    with app:
        for k in range(count):
            text = f"value-{k}-" + "v" * size
            expected[f"wf-{k}"] = app.run(echo, text, workflow_id=f"wf-{k}")
    return expected


def _assert_readable(path: str, expected: dict[str, str]) -> None:
    """Every workflow in ``expected`` is in the file with its result."""
    app, _ = _build(path)
    with app:
        for wid, result in expected.items():
            assert app.handle(wid).result(timeout=30) == result
        assert {w.workflow_id for w in app.list_workflows()} >= set(expected)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# -- damaged files --------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["header", "mid-page", "whole-pages"])
def test_truncated_file(tmp_path, cut):
    path = str(tmp_path / "j.db")
    expected = _seed(path, count=20, size=3000)
    backup = tmp_path / "backup" / "j.db"
    backup.parent.mkdir()
    shutil.copy(path, backup)
    size = os.path.getsize(path)
    page = int.from_bytes(Path(path).read_bytes()[16:18], "big")  # the header's page size
    new_size = {"header": 50, "mid-page": size - 100, "whole-pages": (size // page // 2) * page}
    os.truncate(path, new_size[cut])
    damaged = Path(path).read_bytes()

    app, _ = _build(path)
    with pytest.raises(ld.JournalCorruptError, match=r"truncated|not an SQLite|damaged"):
        app.launch()
    assert Path(path).read_bytes() == damaged  # the failed open wrote nothing
    with pytest.raises(ld.AppClosedError):
        app.list_workflows()
    _assert_readable(str(backup), expected)  # the backup the message asks for is whole


@pytest.mark.parametrize(
    "content", [os.urandom(8192), b"hello, not a database\n" * 50], ids=["random", "text"]
)
def test_garbage_file(db_path, content):
    Path(db_path).write_bytes(content)
    app, _ = _build(db_path)
    with pytest.raises(ld.JournalCorruptError, match="not an SQLite database"):
        app.launch()
    assert Path(db_path).read_bytes() == content


def test_foreign_sqlite_file(db_path):
    conn = apsw.Connection(db_path)
    conn.execute("CREATE TABLE inventory (sku TEXT PRIMARY KEY, qty INTEGER)")
    conn.execute("INSERT INTO inventory VALUES ('apple', 3), ('pear', 5)")
    conn.close()

    app, _ = _build(db_path)
    with pytest.raises(ld.JournalVersionError, match="another program"):
        app.launch()

    conn = apsw.Connection(db_path)
    try:
        assert conn.execute("SELECT * FROM inventory ORDER BY sku").fetchall() == [
            ("apple", 3),
            ("pear", 5),
        ]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema")]
        assert tables == ["inventory", "sqlite_autoindex_inventory_1"]
        assert conn.execute("PRAGMA application_id").fetchall() == [(0,)]
        assert conn.execute("PRAGMA user_version").fetchall() == [(0,)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
    finally:
        conn.close()


def _open_fds(path: str) -> list[str]:
    """Descriptors of this process open on ``path`` or its -wal/-shm files (Linux)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(path):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("damage", ["garbage", "foreign", "newer"])
def test_failed_open_holds_no_file_open(db_path, damage):
    if damage == "garbage":
        Path(db_path).write_bytes(b"\xff" * 4096)
    else:
        conn = apsw.Connection(db_path)
        if damage == "foreign":
            conn.execute("CREATE TABLE t (x)")
        else:
            conn.execute("PRAGMA user_version = 999")
        conn.close()
    assert _open_fds(db_path) == []
    app, _ = _build(db_path)
    with pytest.raises(ld.JournalError) as info:
        app.launch()
    assert _open_fds(db_path) == [], info.value  # even while the traceback is alive


def test_newer_schema_is_refused_and_left_alone(db_path):
    expected = _seed(db_path)
    conn = apsw.Connection(db_path)
    (version,) = conn.execute("PRAGMA user_version").fetchall()[0]
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = Path(db_path).read_bytes()

    app, _ = _build(db_path)
    with pytest.raises(ld.JournalVersionError, match="newer litedurable") as info:
        app.launch()
    assert "999" in str(info.value)
    assert Path(db_path).read_bytes() == before
    with pytest.raises(ld.JournalVersionError):
        SqliteStorage(db_path, readonly=True)

    conn = apsw.Connection(db_path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    _assert_readable(db_path, expected)


def _flip_marker(path: str, marker: bytes) -> None:
    raw = bytearray(Path(path).read_bytes())
    assert raw.count(marker) == 1, "the marker must appear exactly once in the file"
    at = raw.index(marker)
    raw[at] ^= 0x01  # "M" -> "L": same length, still valid UTF-8 and JSON
    Path(path).write_bytes(bytes(raw))


def test_flipped_step_payload_byte(db_path):
    expected = _seed(db_path)
    app, echo = _build(db_path)
    with app:
        app.run(echo, "marker-7f3a9c", workflow_id="victim")
    assert not Path(db_path + "-wal").exists()  # everything is in the main file
    # the quoted upper-case marker is only in the step's output (the input is lower case and
    # the workflow's result is "got ...")
    _flip_marker(db_path, b'"MARKER-7F3A9C"')

    app, _ = _build(db_path)
    with app:
        with pytest.raises(ld.JournalCorruptError, match="checksum") as info:
            app.steps("victim")
        assert "victim" in str(info.value) and "step 0" in str(info.value)
        assert app.handle("victim").result(timeout=30) == "got MARKER-7F3A9C"
        for wid, result in expected.items():
            assert app.handle(wid).result(timeout=30) == result
            assert [s.output for s in app.steps(wid)] == [result.removeprefix("got ")]


def test_flipped_workflow_payload_byte(db_path):
    expected = _seed(db_path)
    app, echo = _build(db_path)
    with app:
        app.run(echo, "x", workflow_id="victim-MARKER-51c2")
    _flip_marker(db_path, b'"got X"')  # the workflow's recorded result

    app, _ = _build(db_path)
    with app:
        with pytest.raises(ld.JournalCorruptError, match="checksum"):
            app.handle("victim-MARKER-51c2")
        for wid, result in expected.items():
            assert app.handle(wid).result(timeout=30) == result


# -- resource faults ------------------------------------------------------------------------


def test_disk_full(db_path):
    expected = _seed(db_path)
    app, echo = _build(db_path)
    with app:
        # max_page_count is a per-connection limit, so it is set on the App's own writer.
        writer = app._storage.driver.writer
        (pages,) = writer.execute("PRAGMA page_count").fetchall()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(ld.JournalFullError, match="full") as info:
            app.start(echo, "y" * 200_000, workflow_id="too-big")
        assert "intact" in str(info.value)
        with pytest.raises(ld.WorkflowNotFoundError):
            app.handle("too-big")
        for wid, result in expected.items():
            assert app.handle(wid).result(timeout=30) == result
        writer.execute("PRAGMA max_page_count = 1073741823")
        assert app.run(echo, "small", workflow_id="after-full") == "got SMALL"
    _assert_readable(db_path, {**expected, "after-full": "got SMALL"})
    conn = apsw.Connection(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_locked_past_busy_timeout(db_path):
    expected = _seed(db_path)
    app, echo = _build(db_path, busy_timeout=0.2)
    other = apsw.Connection(db_path)
    try:
        with app:
            other.execute("BEGIN EXCLUSIVE")
            try:
                with pytest.raises(ld.JournalLockedError, match="busy timeout"):
                    app.start(echo, "blocked", workflow_id="blocked")
                for wid, result in expected.items():  # reads still work under the lock
                    assert app.handle(wid).result(timeout=30) == result
            finally:
                other.execute("COMMIT")
            assert app.run(echo, "free", workflow_id="blocked") == "got FREE"

        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(ld.JournalLockedError):
                app.launch()
        finally:
            other.execute("COMMIT")
    finally:
        other.close()
    _assert_readable(db_path, {**expected, "blocked": "got FREE"})


@pytest.mark.both_backends
def test_read_only_journal(db_path):
    expected = _seed(db_path)
    journal = open_storage(db_path, readonly=True)
    try:
        assert journal.get_workflow("wf-0") is not None
        with pytest.raises(ld.JournalReadOnlyError, match="read-only"):
            journal.heartbeat(OwnerRow("someone", HOST, os.getpid(), 1.0, None, pid_namespace()))
        with pytest.raises(ld.JournalReadOnlyError):
            journal.insert_workflow(
                workflow_id="new",
                name="echo",
                inputs=b'{"args":[],"kwargs":{}}',
                now=1.0,
                app_version="v1",
                parent_id=None,
                owner="someone",
            )
        assert journal.get_workflow("new") is None
        assert len(journal.load_steps("wf-0")) == 1
    finally:
        journal.close()
    _assert_readable(db_path, expected)


def test_read_only_open_of_a_missing_file(tmp_path):
    missing = str(tmp_path / "missing.db")
    with pytest.raises(ld.JournalReadOnlyError):
        SqliteStorage(missing, readonly=True)
    assert not os.path.exists(missing)


# -- ids and names --------------------------------------------------------------------------

BAD_IDS = [
    pytest.param(42, id="int"),
    pytest.param(b"bytes-id", id="bytes"),
    pytest.param(uuid.UUID(int=7), id="uuid"),
    pytest.param("", id="empty"),
    pytest.param("x" * 513, id="513-chars"),
    pytest.param("a\0b", id="nul"),
    pytest.param("\ud800", id="lone-surrogate"),
]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.both_backends
def test_bad_workflow_ids(db_path, bad):
    expected = _seed(db_path, count=1)
    app, echo = _build(db_path)
    with app:
        with pytest.raises(ld.InvalidIdError, match="workflow_id") as info:
            app.start(echo, "x", workflow_id=bad)
        assert isinstance(info.value, ValueError)
        with pytest.raises(ld.InvalidIdError):
            app.handle(bad)
        with pytest.raises(ld.InvalidIdError):
            app.fork("wf-0", 0, new_id=bad)
        assert [w.workflow_id for w in app.list_workflows()] == ["wf-0"]
    _assert_readable(db_path, expected)


@pytest.mark.both_backends
def test_longest_allowed_id(db_path):
    app, echo = _build(db_path)
    with app:
        assert app.run(echo, "x", workflow_id="i" * 512) == "got X"
        assert app.handle("i" * 512).status() is ld.Status.SUCCEEDED


SQL_NASTY = "x'); DROP TABLE workflows;--"


@pytest.mark.both_backends
def test_sql_metacharacters_in_ids_and_names(db_path):
    app = ld.App(db_path)
    step_name = "st\"ep'; DELETE FROM steps;--"
    workflow_name = "wf'); DROP TABLE steps;--"

    @app.step(name=step_name)
    def nasty_step(text: str) -> str:
        return text + "%_'\""

    @app.workflow(name=workflow_name)
    def nasty(text: str) -> str:
        return nasty_step(text)

    ids = [SQL_NASTY, "%", "_", "' OR '1'='1", "robert'); --", "ünï\u2603"]
    with app:
        for wid in ids:
            assert app.run(nasty, wid, workflow_id=wid) == wid + "%_'\""
        assert sorted(w.workflow_id for w in app.list_workflows(name=workflow_name)) == sorted(ids)
        assert app.list_workflows(name="%") == []
        assert app.handle("%").result() == "%%_'\""
        [row] = app.steps(SQL_NASTY)
        assert (row.name, row.output) == (step_name, SQL_NASTY + "%_'\"")
        with pytest.raises(ld.WorkflowNotFoundError):
            app.handle("' OR 1=1 --")
    with open_storage(db_path, readonly=True) as journal:  # no table was dropped
        assert journal.check() == []
        assert sorted(w.workflow_id for w in journal.list_workflows()) == sorted(ids)
        assert [len(journal.load_steps(wid)) for wid in ids] == [1] * len(ids)


# -- file mode and code from the file -------------------------------------------------------


def test_new_journal_file_mode_is_0600(db_path):
    app, echo = _build(db_path)
    with app:
        app.run(echo, "x")
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(db_path + suffix).st_mode)
            assert mode == 0o600, (suffix, oct(mode))


def test_pragmas_are_safe(db_path):
    journal = SqliteStorage(db_path)
    try:
        conn = journal.driver.reader
        assert conn.execute("PRAGMA trusted_schema").fetchall() == [(0,)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert conn.execute("PRAGMA application_id").fetchall() == [(0x4C445552,)]
        assert journal.integrity_check() == "ok"
    finally:
        journal.close()


VENDOR_MODULE = """
from pathlib import Path

with open({marker!r}, "a") as f:
    f.write("imported\\n")


class VendorError(Exception):
    pass
"""


@pytest.mark.both_backends
def test_opening_a_journal_never_imports_modules_named_in_it(tmp_path, db_path, monkeypatch):
    name = f"ld_vendor_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imports.txt"
    (tmp_path / f"{name}.py").write_text(VENDOR_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, so an import would succeed
    vendor = importlib.import_module(name)
    assert marker.read_text() == "imported\n"

    def build() -> tuple[ld.App, object]:
        app = ld.App(db_path, app_version="v1")

        @app.step(name="call_vendor")
        def call_vendor() -> None:
            raise vendor.VendorError("vendor down")

        @app.workflow(name="uses_vendor")
        def uses_vendor() -> None:
            call_vendor()

        return app, uses_vendor

    app, uses_vendor = build()
    with app, pytest.raises(vendor.VendorError):
        app.run(uses_vendor, workflow_id="v")

    monkeypatch.delitem(sys.modules, name)
    app, _ = build()
    with app:
        with pytest.raises(ld.RecordedError) as info:
            app.handle("v").result(timeout=30)
        assert info.value.type_name == f"{name}.VendorError"
        assert "vendor down" in str(info.value)
        assert "VendorError" in info.value.traceback
        [row] = app.steps("v")
        assert row.error == f"{name}.VendorError: vendor down"
        [listed] = app.list_workflows()
        assert listed.error == f"{name}.VendorError: vendor down"
    assert name not in sys.modules
    assert marker.read_text() == "imported\n"  # imported once, by the test, never by the engine


@pytest.mark.parametrize("location, said", [
    ("host=127.0.0.1 port=5432 user=app password=hunter2 dbname=orders", "key=value"),
    ("postgresql+psycopg://app:hunter2@127.0.0.1/orders", "postgresql+psycopg://"),
    ("POSTGRESQL://app:hunter2@127.0.0.1/orders", "POSTGRESQL://"),
    (" postgresql://app:hunter2@127.0.0.1/orders", "spaces before it"),
    ("postgresql://app:hunter2@[::1/orders", "cannot be parsed"),
    ("postgresql://app:hunter2@h:99999999/orders", "cannot be parsed"),
])
def test_a_location_that_is_neither_a_file_nor_a_postgresql_url_is_refused(
        tmp_path, monkeypatch, capsys, location, said):
    """A libpq key=value string or a URL of another spelling (SQLAlchemy's
    postgresql+psycopg://, upper case, a leading space) was taken for a file name: the App
    opened a new SQLite journal so named, password and all, and the user believed they were
    on PostgreSQL. A URL urllib cannot parse escaped as a bare ValueError."""
    from litedurable._cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ld.JournalError, match=re.escape(said)) as refused:
        ld.App(location).launch()
    assert "hunter2" not in str(refused.value)
    assert main(["--db", location, "list"]) == 4
    err = capsys.readouterr().err
    assert said in err and "hunter2" not in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no file was created under any part of it
