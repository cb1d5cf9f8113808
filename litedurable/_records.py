"""Records: journal rows as the public, read-only views (``WorkflowInfo``, ``StepInfo``,
``ScheduleInfo``, ``QueueInfo``) that ``App`` listings and the CLI hand out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ._clock import to_datetime
from ._codec import Codec
from ._cron import Cron
from ._storage import QueueStats, ScheduleRow, StepRow, WorkflowRow
from ._types import QueueInfo, ScheduleInfo, Status, StepInfo, WorkflowInfo

__all__ = ["queue_info", "schedule_info", "step_info", "workflow_info"]


def workflow_info(row: WorkflowRow, codec: Codec) -> WorkflowInfo:
    """A journal workflow row as the public record."""
    return WorkflowInfo(
        workflow_id=row.workflow_id, name=row.name, status=Status(row.status),
        created_at=to_datetime(row.created_at), updated_at=to_datetime(row.updated_at),
        app_version=row.app_version, parent_id=row.parent_id, owner=row.owner,
        recovery_attempts=row.recovery_attempts,
        error=None if row.error is None else codec.error_summary(row.error),
    )


def step_info(row: StepRow, codec: Codec) -> StepInfo:
    """A journal step row as the public record (output as plain JSON, tags made readable)."""
    extra = json.loads(row.extra) if row.extra else {}
    return StepInfo(
        workflow_id=row.workflow_id, step=row.step, kind=row.kind, name=row.name,
        output=None if row.output is None else codec.display(row.output),
        error=None if row.error is None else codec.error_summary(row.error),
        started_at=to_datetime(row.started_at),
        finished_at=None if row.finished_at is None else to_datetime(row.finished_at),
        candidates=extra.get("candidates"), winner=extra.get("winner"),
        site=row.site, owner=row.owner,
        attempts=[(to_datetime(start), to_datetime(end), error) for start, end, error
                  in json.loads(row.attempts)] if row.attempts else [],
    )


def schedule_info(row: ScheduleRow, now: float) -> ScheduleInfo:
    """A schedule row as the public record, with its next fire after ``now``."""
    cron = Cron(row.cron, row.tz)
    return ScheduleInfo(
        name=row.name, workflow=row.workflow, cron=row.cron, tz=row.tz,
        catch_up=row.catch_up, paused=row.paused,
        last_fire=None if row.last_fire is None else
        datetime.fromtimestamp(row.last_fire, cron.zone),
        next_fire=None if row.paused else cron.after(now),
    )


def queue_info(stats: QueueStats) -> QueueInfo:
    """A queue's limits and counts as the public record."""
    spec = stats.spec
    return QueueInfo(
        name=spec.name, concurrency=spec.concurrency,
        worker_concurrency=spec.worker_concurrency, rate_limit=spec.rate_limit,
        partitioned=spec.partitioned, enqueued=stats.enqueued, running=stats.running,
        started_last_minute=stats.started_recently,
        oldest_enqueued_at=None if stats.oldest_enqueued_at is None else
        datetime.fromtimestamp(stats.oldest_enqueued_at, UTC),
    )
