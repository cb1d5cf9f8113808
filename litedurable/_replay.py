"""Offline replay (``litedurable replay``): run recorded workflows against today's code.

No step body runs and nothing is written: every journaled call is answered from the journal,
and the replay stops quietly where the journal ends. What it reports is the first place the
code no longer makes the calls the journal recorded, or a different outcome.
"""

from __future__ import annotations

from ._clock import Clock
from ._codec import Codec
from ._context import enter, leave
from ._errors import NonDeterminismError
from ._faults import Faults
from ._registry import Registry
from ._run import Unwind, WorkflowRun
from ._runtime import Runtime
from ._storage import Storage, WorkflowRow
from ._types import Status

__all__ = ["replay_offline"]


def replay_offline(
    storage: Storage, codec: Codec, clock: Clock, registry: Registry, row: WorkflowRow
) -> str | None:
    """Replay a recorded workflow with no step bodies and no writes (``litedurable replay``).

    Returns None if the code reproduces the journal up to where it ends, else what differs.
    """
    definition = registry.workflows[row.name]
    runtime = Runtime(
        storage=storage, codec=codec, clock=clock, registry=registry, owner="offline-replay",
        app_version=row.app_version, workers=1, workflow_threads=1, suspend_after=0.0,
        faults=Faults(),
    )
    try:
        run = WorkflowRun(runtime, definition, row, storage.load_steps(row.workflow_id))
        run.replay_only = True
        token = enter(run)
        value: object = None
        raised: BaseException | None = None
        try:
            args, kwargs = codec.decode_args(definition.fn, row.inputs, "inputs")
            value = definition.fn(*args, **kwargs)
        except Unwind:
            return None
        except BaseException as exc:  # SystemExit too: a recorded outcome like any other
            raised = exc
        finally:
            leave(token)
        diverged = run.fatal or run.unreached(raised)
        if isinstance(diverged, NonDeterminismError):
            # Its own message says the workflow was parked; offline replay parks nothing.
            step = diverged.step
            return (
                f"not deterministic: step {step} was recorded as {diverged.recorded} but "
                f"the code now calls {diverged.called} (replay changed nothing). Restore the "
                f"code that started it, or fork it from before step {step} "
                f"(app.fork(id, from_step={step}))."
            )
        if raised is not None:
            if row.status == Status.FAILED:
                return None
            return (f"replay raised {type(raised).__name__}: {raised}, but the workflow is "
                    f"{row.status}")
        if (row.status == Status.SUCCEEDED and row.output is not None
                and codec.encode(value, "replayed result") != row.output):
            return "replay returned a different result than the one recorded"
        return None
    finally:
        runtime.shutdown(1.0)
