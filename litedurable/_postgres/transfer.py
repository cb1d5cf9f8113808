"""Checking a PostgreSQL journal, and moving workflows in and out of it.

* ``check``: every row's checksum, each damaged row named (PostgreSQL's own page checks are
  the server's: ``amcheck``, data checksums; not run here).
* ``export``/``import``: the same JSON records as the SQLite backend (``_sqlite/transfer.py``),
  the same tables and column names, so a workflow moves between the backends either way.
  ``workflows.seq`` (enqueue order here) is not carried, as the exporting owner and a
  message's sequence number are not.
"""

from __future__ import annotations

from typing import Any

import psycopg.errors
from psycopg import sql as pgsql

from .._errors import JournalError, WorkflowConflictError
from .._export import EXPORT_FORMAT, VERIFIERS, checked_record, describe_row, from_json, to_json
from . import sql
from .driver import Connection, Driver

__all__ = ["EXPORT_FORMAT", "check", "export_workflow", "import_workflows"]


_BELONGING = {"steps": ("workflow_id", ("step",)), "messages": ("destination", ("seq",)),
              "events": ("workflow_id", ("key",)),
              "streams": ("workflow_id", ("key", "position")),
              "promises": ("workflow_id", ("step", "promise_id"))}
_NOT_CARRIED = {"workflows": {"owner", "seq"}, "messages": {"seq"}}


def check(driver: Driver) -> list[str]:
    """Every row that fails its checksum, by name (empty: sound)."""

    def run(conn: Connection) -> list[str]:
        problems = []
        for table, verify in VERIFIERS.items():
            cur = conn.execute(pgsql.SQL(sql.ALL_ROWS).format(
                table=pgsql.Identifier(table)))
            names = [d.name for d in cur.description or ()]
            for row in cur.fetchall():
                named = dict(zip(names, row, strict=True))
                if verify(named) != named["checksum"]:
                    problems.append(f"{describe_row(table, named)} in {driver.path} fails its "
                                    "checksum")
        return problems

    return driver.read(run)


def export_workflow(driver: Driver, workflow_id: str) -> dict[str, Any] | None:
    """The workflow and every row that belongs to it as a JSON-able record, or None."""

    def read(conn: Connection) -> dict[str, Any] | None:
        (workflow,) = _rows(conn, "workflows", "workflow_id", ("workflow_id",),
                            workflow_id) or (None,)
        if workflow is None:
            return None
        record: dict[str, Any] = {"format": EXPORT_FORMAT, "workflow": workflow}
        for table, (column, order) in _BELONGING.items():
            record[table] = _rows(conn, table, column, order, workflow_id)
        return record

    return driver.read(read)


def import_workflows(driver: Driver, records: list[dict[str, Any]]) -> list[str]:
    """Insert exported workflows and their rows, all in one transaction: every record or
    none; their ids, in order (as the SQLite backend's ``import_workflows``).

    Raises ``WorkflowConflictError`` (an id exists here or twice in ``records``, or a row
    clashes with one here) and ``JournalError`` (a record this version cannot read); nothing
    is written either way."""
    checked = [(checked_record(record), record) for record in records]
    ids = [workflow_id for workflow_id, _ in checked]

    def insert(conn: Connection) -> None:
        taken = [wid for wid in ids if conn.execute(sql.WORKFLOW_EXISTS, (wid,)).fetchall()]
        taken += sorted({wid for wid in ids if ids.count(wid) > 1} - set(taken))
        if taken:
            which = (f"workflow {taken[0]!r} already exists" if len(taken) == 1 else
                     f"{len(taken)} workflows already exist ({', '.join(map(repr, taken))})")
            raise WorkflowConflictError(
                f"{which} in {driver.path} (or twice in the import); nothing was imported "
                "(delete them there first, or import into another journal)")
        for workflow_id, record in checked:
            try:
                with conn.transaction():  # a savepoint: a clash is reported by its record
                    _insert_record(conn, driver.schema, workflow_id, record)
            except psycopg.errors.UniqueViolation as clash:
                raise WorkflowConflictError(
                    f"workflow {workflow_id!r} clashes with rows already in {driver.path} "
                    f"({clash}): a dedup key held there by an enqueued or running workflow, "
                    "or a promise id that exists; nothing was imported") from None

    driver.write(insert)
    return ids


def _insert_record(conn: Connection, schema: str, workflow_id: str,
                   record: dict[str, Any]) -> None:
    _insert(conn, schema, "workflows", record["workflow"])
    for table, (column, _) in _BELONGING.items():
        for row in record.get(table) or ():
            if not isinstance(row, dict) or row.get(column) != workflow_id:
                raise JournalError(f"a {table} row of the record of {workflow_id!r} "
                                   "belongs to another workflow")
            _insert(conn, schema, table, row)


def _rows(conn: Connection, table: str, column: str, order: tuple[str, ...],
          value: str) -> list[dict[str, Any]]:
    statement = pgsql.SQL(sql.ROWS_OF).format(
        table=pgsql.Identifier(table), column=pgsql.Identifier(column),
        order=pgsql.SQL(", ").join(pgsql.Identifier(o) for o in order))
    cur = conn.execute(statement, (value,))
    names = [d.name for d in cur.description or ()]
    return [{name: to_json(v) for name, v in zip(names, r, strict=True)
             if name not in _NOT_CARRIED.get(table, ())}
            for r in cur.fetchall()]


def _insert(conn: Connection, schema: str, table: str, row: dict[str, Any]) -> None:
    known = {r[0] for r in conn.execute(sql.TABLE_COLUMNS, (schema, table))}
    unknown = sorted(set(row) - known)
    if unknown:
        raise JournalError(f"the record's {table} rows have columns this journal does not "
                           f"know ({', '.join(unknown)}): it was exported by a newer litedurable")
    names = [n for n in row if n not in _NOT_CARRIED.get(table, ())]
    statement = pgsql.SQL(sql.INSERT_ROW).format(
        table=pgsql.Identifier(table),
        columns=pgsql.SQL(", ").join(pgsql.Identifier(n) for n in names),
        marks=pgsql.SQL(", ").join(pgsql.Placeholder() for _ in names))
    conn.execute(statement, [from_json(row[n]) for n in names])
