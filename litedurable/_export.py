"""The export record: a workflow and every row that belongs to it, as JSON, the same for every
backend (a record exported from an SQLite file imports into PostgreSQL and back).

Rows are carried column by column as stored, bytes as ``{"base64": ...}``, checksums
included, so a record altered on the way is reported as damaged when read, never replayed.
Also here: each table's checksum, recomputed from a row as ``check`` verifies it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ._errors import JournalError
from ._storage import (
    StepRow,
    checksum,
    message_checksum,
    promise_checksum,
    step_checksum,
    workflow_checksum,
)
from ._types import Status

__all__ = ["EXPORT_FORMAT", "VERIFIERS", "checked_record", "describe_row", "from_json",
           "to_json"]

EXPORT_FORMAT = 1
"""The version of an export record (``"format"``); an import refuses one it does not know."""


def checked_record(record: object) -> str:
    """The workflow id of an export record this version can import (``JournalError``
    otherwise: nothing may be written from it)."""
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise JournalError(f"not a litedurable export record (format {EXPORT_FORMAT})")
    workflow = record.get("workflow")
    if not isinstance(workflow, dict) or not isinstance(workflow.get("workflow_id"), str):
        raise JournalError("an export record without its workflow row")
    workflow_id: str = workflow["workflow_id"]
    # The status is outside the checksum: an unknown one would break every later listing.
    if workflow.get("status") not in {status.value for status in Status}:
        raise JournalError(f"the record of {workflow_id!r} has an unknown status "
                           f"{workflow.get('status')!r}")
    return workflow_id


def to_json(value: Any) -> Any:
    return {"base64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    return value


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


VERIFIERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "workflows": lambda r: workflow_checksum(r["workflow_id"], r["name"], bytes(r["inputs"]),
                                             _b(r["output"]), _b(r["error"])),
    "steps": lambda r: step_checksum(StepRow(
        r["workflow_id"], r["step"], r["kind"], r["name"], _b(r["output"]), _b(r["error"]),
        _b(r["extra"]), r["started_at"], r["finished_at"])),
    "messages": lambda r: message_checksum(r["destination"], r["topic"], bytes(r["payload"])),
    "events": lambda r: checksum(r["workflow_id"], r["key"], bytes(r["value"])),
    "streams": lambda r: checksum(r["workflow_id"], r["key"], str(r["position"]),
                                  _b(r["value"])),
    "promises": lambda r: promise_checksum(r["promise_id"], r["workflow_id"], _b(r["output"]),
                                           _b(r["error"])),
}
"""Each table's checksum of a row (a dict by column), as it was computed when written."""


def describe_row(table: str, row: dict[str, Any]) -> str:
    """A row as a person names it: "step 4 of workflow 'w1'"."""
    if table == "workflows":
        return f"workflow {row['workflow_id']!r}"
    if table == "steps":
        return f"step {row['step']} of workflow {row['workflow_id']!r}"
    if table == "messages":
        return f"message {row['seq']} to workflow {row['destination']!r}"
    if table == "promises":
        return f"promise {row['promise_id']!r}"
    return f"{table[:-1]} {row['key']!r} of workflow {row['workflow_id']!r}"
