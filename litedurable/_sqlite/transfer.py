"""Moving and checking a journal as a whole: backup, check, export and import.

* ``backup`` writes a consistent copy while workflows run (``VACUUM INTO`` reads one snapshot).
* ``check`` is SQLite's ``integrity_check`` and then every row's checksum, each damaged row
  named (``quick_check`` only sees damage SQLite itself can; bytes changed inside a payload
  only show in the checksums).
* ``export``/``import`` move workflows between journals as JSON records: the workflow row and
  every row that belongs to it (steps, mailbox, events, streams, promises), ids and checksums
  kept, so a record altered on the way is reported as damaged when read, never replayed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import apsw

from .._errors import JournalError, WorkflowConflictError
from .._export import EXPORT_FORMAT, VERIFIERS, checked_record, describe_row, from_json, to_json
from . import sql
from .driver import Driver

__all__ = ["EXPORT_FORMAT", "backup", "check", "export_workflow", "import_workflows"]


# table -> (the column naming the workflow a row belongs to, the order rows are kept in).
# Children are workflows of their own (exported by their own ids).
_BELONGING = {"steps": ("workflow_id", "step"), "messages": ("destination", "seq"),
              "events": ("workflow_id", "key"), "streams": ("workflow_id", "key, position"),
              "promises": ("workflow_id", "step, promise_id")}
_NOT_CARRIED = {"workflows": {"owner"}, "messages": {"seq"}}
"""Columns an import does not take: the exporting owner means nothing in another journal
(an imported pending workflow is recovered by whichever App runs it), and a message's
sequence number is the importing mailbox's to give (the export's order is kept)."""


def backup(driver: Driver, destination: str) -> None:
    """Write a consistent copy of the journal to ``destination`` (which must not exist)."""
    if os.path.exists(destination):
        raise FileExistsError(f"{destination} exists; a backup is written to a new file")
    driver.read(lambda conn: conn.execute(sql.VACUUM_INTO, (destination,)))


def check(driver: Driver, path: str) -> list[str]:
    """Every problem found in the journal (empty: sound), damaged rows by name."""

    def run(conn: apsw.Connection) -> list[str]:
        found = [r[0] for r in conn.execute(sql.INTEGRITY_CHECK)]
        problems = [] if found == ["ok"] else [f"SQLite: {line}" for line in found]
        tables = {r[0] for r in conn.execute(sql.TABLES)}
        for table, verify in VERIFIERS.items():
            if table not in tables:
                continue
            for row in conn.execute(sql.ALL_ROWS.format(table=table)):
                named = dict(zip(_columns(conn, table), row, strict=True))
                if verify(named) != named["checksum"]:
                    problems.append(f"{describe_row(table, named)} in {path} fails its checksum")
        return problems

    return driver.read(run)


def export_workflow(driver: Driver, workflow_id: str) -> dict[str, Any] | None:
    """The workflow and every row that belongs to it as a JSON-able record, or None."""

    def read(conn: apsw.Connection) -> dict[str, Any] | None:
        tables = {r[0] for r in conn.execute(sql.TABLES)}
        (workflow,) = _rows(conn, "workflows", "workflow_id", "workflow_id",
                            workflow_id) or (None,)
        if workflow is None:
            return None
        record: dict[str, Any] = {"format": EXPORT_FORMAT, "workflow": workflow}
        for table, (column, order) in _BELONGING.items():
            if table in tables:
                record[table] = _rows(conn, table, column, order, workflow_id)
        return record

    return driver.read(read)


def import_workflows(driver: Driver,
                     write: Callable[[Callable[[apsw.Connection], None]], None],
                     records: list[dict[str, Any]]) -> list[str]:
    """Insert exported workflows and their rows, all in one transaction: every record or none
    (a child whose parent was refused must not land under another workflow of that id); their
    ids, in order.

    Raises:
        WorkflowConflictError: an id exists here, or twice in ``records`` (nothing is written).
        JournalError: a record is not an export this version reads (nothing is written).
    """
    checked = [(checked_record(record), record) for record in records]
    ids = [workflow_id for workflow_id, _ in checked]

    def insert(conn: apsw.Connection) -> None:
        taken = [wid for wid in ids if conn.execute(sql.WORKFLOW_EXISTS, (wid,)).fetchall()]
        taken += sorted({wid for wid in ids if ids.count(wid) > 1} - set(taken))
        if taken:
            which = (f"workflow {taken[0]!r} already exists" if len(taken) == 1 else
                     f"{len(taken)} workflows already exist ({', '.join(map(repr, taken))})")
            raise WorkflowConflictError(
                f"{which} in {driver.path} (or twice in the import); nothing was imported "
                "(delete them there first, or import into another journal)")
        for workflow_id, record in checked:
            _insert_record(conn, driver.path, workflow_id, record)

    write(insert)
    return ids


def _insert_record(conn: apsw.Connection, path: str, workflow_id: str,
                   record: dict[str, Any]) -> None:
    try:
        _insert(conn, "workflows", record["workflow"])
        for table, (column, _) in _BELONGING.items():
            for row in record.get(table) or ():
                if not isinstance(row, dict) or row.get(column) != workflow_id:
                    raise JournalError(f"a {table} row of the record of {workflow_id!r} "
                                       "belongs to another workflow")
                _insert(conn, table, row)
    except apsw.ConstraintError as clash:
        raise WorkflowConflictError(
            f"workflow {workflow_id!r} clashes with rows already in {path} "
            f"({clash}): a dedup key held there by an enqueued or running workflow, or a "
            "promise id that exists; nothing was imported") from None


# -- rows as JSON ---------------------------------------------------------------------------


def _columns(conn: apsw.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(sql.TABLE_COLUMNS.format(table=table))]


def _rows(conn: apsw.Connection, table: str, column: str, order: str,
          value: str) -> list[dict[str, Any]]:
    names = _columns(conn, table)
    statement = sql.ROWS_OF.format(table=table, column=column, order=order)
    return [{name: to_json(v) for name, v in zip(names, r, strict=True)
             if name not in _NOT_CARRIED.get(table, ())}
            for r in conn.execute(statement, (value,))]


def _insert(conn: apsw.Connection, table: str, row: dict[str, Any]) -> None:
    known = set(_columns(conn, table))
    unknown = sorted(set(row) - known)
    if unknown:
        raise JournalError(f"the record's {table} rows have columns this journal does not "
                           f"know ({', '.join(unknown)}): it was exported by a newer litedurable")
    names = [n for n in row if n not in _NOT_CARRIED.get(table, ())]
    marks = ", ".join("?" * len(names))
    conn.execute(sql.INSERT_ROW.format(table=table, columns=", ".join(names), marks=marks),
                 [from_json(row[n]) for n in names])
