"""Regressions found by driving the operations CLI as an operator would: an import is every
record or none, gc keeps a child its unfinished parent may still wait for, ages too large
for a date and unusable backup targets are usage errors, and journal text cannot steer the
terminal. Each test that takes ``db_path`` or ``new_db`` runs on SQLite and on PostgreSQL;
those of backups (pg_dump's job on a server) and of a damaged file are SQLite's."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import cli_exit, eventually, journal_ids

import litedurable as ld
from litedurable._cli import main

pytestmark = pytest.mark.both_backends  # each test that takes db_path runs on both backends


def _family(db: Path | str, tag: str) -> None:
    """``order-1`` (named ``tag``) with its child ``order-1/0``, both finished."""
    app = ld.App(str(db))

    @app.workflow(name=f"{tag}-child")
    def child() -> str:
        return f"{tag} child"

    @app.workflow(name=tag)
    def parent() -> str:
        return app.start(child).result()

    with app:
        assert app.run(parent, workflow_id="order-1") == f"{tag} child"


def test_an_import_that_clashes_writes_nothing_not_even_the_children(
    tmp_path: Path, new_db: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = new_db("a"), new_db("b")
    _family(source, "mine")
    target_app = ld.App(str(target))

    @target_app.workflow(name="theirs")
    def theirs() -> str:
        return "another order-1"

    with target_app:
        target_app.run(theirs, workflow_id="order-1")
    exported = tmp_path / "order.jsonl"
    assert main(["--db", str(source), "export", "order-1", "--children", "-o",
                 str(exported)]) == 0
    capsys.readouterr()
    assert main(["--db", str(target), "import", str(exported)]) == 1
    err = capsys.readouterr().err
    assert "order-1" in err and "nothing was imported" in err
    # The child is not left under the other journal's unrelated order-1.
    assert journal_ids(target) == {"order-1"}


def test_an_import_refuses_a_record_with_an_unknown_status_and_a_binary_file(
    tmp_path: Path, new_db: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = new_db("a"), new_db("b")
    _family(source, "mine")
    assert main(["--db", str(source), "export", "order-1", "--children"]) == 0
    records: list[dict[str, Any]] = [json.loads(line)
                                     for line in capsys.readouterr().out.splitlines()]
    records[1]["workflow"]["status"] = "bogus"  # outside the checksum
    altered = tmp_path / "altered.jsonl"
    altered.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["--db", str(target), "import", str(altered)]) == 2
    assert "unknown status 'bogus'" in capsys.readouterr().err
    assert journal_ids(target) == set()  # the good record was not written either

    binary = tmp_path / "garbage.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["--db", str(target), "import", str(binary)]) == 2
    assert "is not text" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["--db", str(tmp_path / "new.db"), "import", str(empty)]) == 0
    assert not (tmp_path / "new.db").exists()  # nothing to import makes no journal


def test_gc_keeps_a_finished_child_its_pending_parent_still_waits_for(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(str(db))

    @app.workflow(name="kid")
    def kid() -> str:
        return "kid's result"

    @app.workflow(name="dad")
    def dad() -> str:
        child = app.start(kid)
        ld.recv("go")  # the child finishes meanwhile; it is awaited only after this
        return child.result()

    @app.workflow(name="done")
    def done() -> str:
        return "old"

    with app:
        app.run(done, workflow_id="old-1")
        handle = app.start(dad, workflow_id="dad-1")
        child = eventually(lambda: "dad-1/0" in journal_ids(db) and app.handle("dad-1/0"),
                           "the child started")
        assert child.result(timeout=30) == "kid's result"
        assert main(["--db", str(db), "gc", "--older-than", "0", "--dry-run"]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert "would delete 1 finished" in listed[0] and [s.strip() for s in listed[1:]] == [
            "old-1"]
        assert main(["--db", str(db), "gc", "--older-than", "0"]) == 0
        assert "deleted 1 finished" in capsys.readouterr().out
        assert journal_ids(db) == {"dad-1", "dad-1/0"}
        app.send("dad-1", "now", topic="go")
        assert handle.result(timeout=30) == "kid's result"


def test_an_age_too_large_for_a_date_is_a_usage_error(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    _family(db, "mine")
    for command in (["gc", "--older-than", "99999999999d", "--dry-run"],
                    ["gc", "--older-than", "99999999999999999999"],
                    ["list", "--since", "99999999999d"]):
        assert cli_exit(["--db", str(db), *command]) == 2, command
        assert "Traceback" not in capsys.readouterr().err
    assert journal_ids(db) == {"order-1", "order-1/0"}


def test_backup_to_an_empty_name_or_a_missing_directory_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "j.db"
    _family(db, "mine")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["--db", str(db), "backup", ""]) == 2
    assert "cannot write a backup to ''" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "copy.db"
    assert main(["--db", str(db), "backup", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "j.db cannot" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_journal_text_cannot_steer_the_terminal(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(str(db))
    name = "w\x1b]0;owned\x07\x9b2J"

    @app.step("step\x1b[31m")
    def step(value: str) -> str:
        return value

    @app.workflow(name=name)
    def wf(value: str) -> str:
        step(value)
        raise ValueError("bad \x1b[2J\r input")

    with app, pytest.raises(ValueError):
        app.run(wf, "v\x1b[2J", workflow_id="esc\x1b[1m")
    for command in (["list"], ["show", "esc\x1b[1m"], ["steps", "esc\x1b[1m"],
                    ["result", "esc\x1b[1m"]):
        main(["--db", str(db), *command])
        captured = capsys.readouterr()
        for text in (captured.out, captured.err):
            assert not any(c in text for c in "\x1b\x07\x9b\r"), (command, text)
        assert "\\u001b" in captured.out + captured.err
    assert main(["--db", str(db), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == name  # JSON keeps it whole


def test_ui_on_a_taken_port_or_an_export_to_a_missing_directory_is_a_usage_error(
    tmp_path: Path, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    _family(db, "mine")
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--db", str(db), "ui", "--port", str(port)]) == 2
    finally:
        taken.close()
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err
    missing = tmp_path / "no" / "page.html"
    assert main(["--db", str(db), "ui", "--export", "order-1", str(missing)]) == 2
    assert f"cannot write {missing}" in capsys.readouterr().err
    assert main(["--db", str(db), "export", "order-1", "-o", str(missing)]) == 2
    assert f"cannot write {missing}" in capsys.readouterr().err


def test_a_cut_long_id_keeps_its_end_so_siblings_differ(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_path
    app = ld.App(str(db))
    long_id = "batch-" + "x" * 80

    @app.workflow(name="leaf")
    def leaf(i: int) -> int:
        return i

    @app.workflow(name="fan")
    def fan() -> int:
        return sum(app.start(leaf, i).result() for i in range(3))

    with app:
        assert app.run(fan, workflow_id=long_id) == 3
    assert main(["--db", str(db), "list", "--parent", long_id]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    firsts = [row.split()[0] for row in rows]
    assert len(set(firsts)) == 3 and all("…" in f and f.startswith("batch-x") for f in firsts)
    assert sorted(f[-2:] for f in firsts) == ["/0", "/2", "/4"]  # child ids: the step numbers


def test_a_command_that_writes_leaves_a_damaged_backup_byte_for_byte_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, copy = tmp_path / "j.db", tmp_path / "copy.db"
    _family(db, "mine")
    assert main(["--db", str(db), "backup", str(copy)]) == 0  # not in WAL mode, as copies are
    data = bytearray(copy.read_bytes())
    pages = len(data) // 4096
    assert pages >= 3
    data[4096 * (pages - 1):4096 * (pages - 1) + 64] = b"\xff" * 64  # a b-tree page's header
    copy.write_bytes(bytes(data))
    assert main(["--db", str(copy), "check"]) == 4
    exported = tmp_path / "e.jsonl"
    assert main(["--db", str(db), "export", "order-1", "-o", str(exported)]) == 0
    for command in (["cancel", "order-1"], ["resume", "order-1"], ["gc", "--older-than", "0"],
                    ["fork", "order-1", "0"], ["import", str(exported)]):
        assert main(["--db", str(copy), *command]) == 4, command
        assert "refused and changed nothing" in capsys.readouterr().err
        assert copy.read_bytes() == bytes(data), command


def test_start_with_a_priority_but_no_queue_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "j.db"
    module = f"ops_attack_start_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{module}.py").write_text(
        "import litedurable as ld\n"
        f"app = ld.App({str(db)!r})\n"
        "@app.workflow(name='job')\n"
        "def job(i: int) -> int:\n"
        "    return i\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        for extra in (["--priority", "3"], ["--partition-key", "acct-1"]):
            assert main(["start", "job", "--app", f"{module}:app", "--args", "[1]", *extra]) == 2
            assert "add --queue" in capsys.readouterr().err
        assert not db.exists()  # nothing was started
    finally:
        sys.modules.pop(module, None)
