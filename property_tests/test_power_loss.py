"""G2/D4 under simulated power loss: what ``durability="full"`` and ``"normal"`` keep.

Workflows of inline steps run on a journal opened through ``powerloss.PowerLossVFS``, in one or
two App sessions (a reboot in between exercises the checkpoint at close and the WAL restart).
After a Hypothesis-chosen number of writes/syncs the power goes off: every later write fails,
the App dies with it, and the files are rewritten as the disk would hold them after the cut
(unsynced changes lost, a prefix kept, a random subset kept, or the last one torn). The test
records every acknowledgement the App gave before the cut: ``start`` returned, a step call
returned its value to the workflow, ``Handle.result`` returned the outcome. Then:

* **G1**: the file opens without repair, ``integrity_check`` is ok, every checksum verifies and
  each workflow's step numbers are a gap-free prefix;
* **D4/G2 full**: every acknowledgement survives the cut;
* **G2 normal**: only a suffix of them may be lost: an acknowledgement given before a later
  commit began survives whenever that later commit does;
* **D2 + recovery**: reopening with a plain App completes every workflow with the crash-free
  result, re-running only steps whose rows the cut lost, and leaves a gap-free journal.

Negative controls: an fsync that lies and ``synchronous=OFF`` under ``durability="full"`` must
be caught, and ``"normal"`` must be seen to lose acknowledgements (so the model is not vacuous).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import apsw
from hypothesis import event, given
from hypothesis import strategies as st
from powerloss import CutReport, Disk, Mode, close_leaked, mounted
from scratch import scratch_dir

import litedurable as ld
from litedurable._errors import DurableError
from litedurable._sqlite import SqliteStorage
from litedurable.testing import Crash, FakeClock

Durability = Literal["full", "normal"]
Workload = list[list[int]]  # one list of step inputs per workflow

# What an App may raise once the power is off under it.
DIED: tuple[type[BaseException], ...] = (Crash, DurableError, apsw.Error)

workloads = st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=5), min_size=1,
                     max_size=3)


@dataclass(frozen=True)
class Ack:
    """Something the App acknowledged; it was committed between ``begun`` and ``acked``."""

    kind: Literal["start", "step", "outcome"]
    workflow_id: str
    step: int
    value: int
    begun: int  # logical time before the call whose commit this acknowledges
    acked: int  # logical time once the acknowledgement was seen


@dataclass
class Recorder:
    """Acknowledgements and step-body executions, on one logical clock shared by all threads."""

    powered: Callable[[], bool] = lambda: True  # a dead machine acknowledges nothing
    acks: list[Ack] = field(default_factory=list)
    bodies: list[tuple[str, int]] = field(default_factory=list)
    returning: dict[str, int] = field(default_factory=dict)  # workflow id -> time of return
    _clock: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> int:
        with self._lock:
            return next(self._clock)

    def ack(self, kind: Literal["start", "step", "outcome"], workflow_id: str, step: int,
            value: int, begun: int) -> None:
        with self._lock:
            if self.powered():
                self.acks.append(Ack(kind, workflow_id, step, value, begun, next(self._clock)))

    def body(self, key: str) -> None:
        workflow_id, step = key.rsplit(":", 1)
        with self._lock:
            self.bodies.append((workflow_id, int(step)))


def step_value(x: int) -> int:
    return x * 3 + 1


def expected(inputs: list[int]) -> int:
    return sum(step_value(x) for x in inputs)


def build(path: str, recorder: Recorder, durability: Durability, vfs: str | None,
          defects: tuple[str, ...] = ()) -> tuple[ld.App, Callable[..., int]]:
    app = ld.App(path, durability=durability, vfs=vfs, clock=FakeClock(), workers=2,
                 app_version="power-loss")
    app.faults.inject(*defects)

    @app.step()
    def value(x: int) -> int:
        recorder.body(ld.idempotency_key())
        return step_value(x)

    @app.workflow(name="job")
    def job(inputs: list[int]) -> int:
        wid = ld.workflow_id()
        total = 0
        for i, x in enumerate(inputs):
            begun = recorder.tick()
            got = value(x)
            recorder.ack("step", wid, i, got, begun)
            total += got
        recorder.returning[wid] = recorder.tick()
        return total

    return app, job


def ids(workload: Workload) -> list[str]:
    return [f"wf-{i}" for i in range(len(workload))]


def result_unless_cut(handle: ld.Handle[int], disk: Disk) -> int:
    """The workflow's result; ``Crash`` as soon as the power is off (it never comes then)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return handle.result(timeout=0.02)
        except ld.WaitTimeoutError:
            if not disk.powered:
                raise Crash("the power went off while waiting") from None
            if time.monotonic() > deadline:
                raise


def run_until_cut(path: str, workload: Workload, durability: Durability, disk: Disk, vfs: str,
                  reboot_at: int, *, cut_before_close: bool = False,
                  defects: tuple[str, ...] = ()) -> Recorder:
    """Run the workload in up to two sessions (an engine with ``defects``); stop where the
    disk loses power."""
    recorder = Recorder(powered=lambda: disk.powered)
    jobs = list(zip(ids(workload), workload, strict=True))
    for session in (jobs[:reboot_at], jobs[reboot_at:]):
        if not session or not disk.powered:
            continue
        app, job = build(path, recorder, durability, vfs, defects)
        disk.on_cut = lambda app=app: app._simulate_crash(lambda: Crash("the power went off"))
        try:
            app.launch()
            handles = []
            for wid, inputs in session:
                begun = recorder.tick()
                handles.append((wid, app.start(job, inputs, workflow_id=wid)))
                recorder.ack("start", wid, -1, 0, begun)
            for wid, handle in handles:
                result = result_unless_cut(handle, disk)
                recorder.ack("outcome", wid, -1, result, recorder.returning[wid])
            if cut_before_close:
                disk.pull_plug()
            app.close()
        except DIED:
            if disk.powered:
                raise
            with contextlib.suppress(*DIED):
                app.close()
        leaked = close_leaked(vfs)  # a process that lost power leaks nothing: it is gone
        assert not (leaked and disk.powered), f"App.close() left connections open: {leaked}"
    return recorder


@dataclass
class Snapshot:
    """What the journal holds right after the cut, before any recovery."""

    steps: dict[tuple[str, int], int]
    outcomes: dict[str, int]
    workflows: set[str]


def inspect(path: str, durability: Durability, workflow_ids: list[str],
            problems: list[str], when: str) -> Snapshot | None:
    """Open the file with no App (as a restart would) and check it is sound."""
    snapshot = Snapshot({}, {}, set())
    try:
        with SqliteStorage(path, durability=durability) as journal:
            integrity = journal.integrity_check()
            if integrity != "ok":
                problems.append(f"G1 ({when}): integrity_check says {integrity}")
            for wid in workflow_ids:
                row = journal.get_workflow(wid)  # verifies the workflow checksum
                if row is None:
                    continue
                snapshot.workflows.add(wid)
                if row.status == ld.Status.SUCCEEDED and row.output is not None:
                    snapshot.outcomes[wid] = json.loads(row.output)
                steps = journal.load_steps(wid)  # verifies every step checksum
                numbers = [s.step for s in steps]
                if numbers != list(range(len(numbers))):
                    problems.append(f"D4 ({when}): {wid} has step numbers {numbers}")
                for s in steps:
                    assert s.output is not None
                    snapshot.steps[wid, s.step] = json.loads(s.output)
    except DurableError as exc:
        problems.append(f"G1 ({when}): reopening the journal failed: {type(exc).__name__}: {exc}")
        return None
    return snapshot


def survived(ack: Ack, snapshot: Snapshot) -> bool:
    if ack.kind == "start":
        return ack.workflow_id in snapshot.workflows
    if ack.kind == "outcome":
        return snapshot.outcomes.get(ack.workflow_id) == ack.value
    return snapshot.steps.get((ack.workflow_id, ack.step)) == ack.value


@dataclass
class Verdict:
    problems: list[str]
    acks: int
    lost: int  # acknowledgements the cut took (-1: the file could not be inspected)
    mid_run: bool  # the power went off before the workload finished and the App closed
    cut: CutReport  # what happened to the writes not yet synced


def check_power_loss(workload: Workload, durability: Durability, cut_after: int | None,
                     mode: Mode, seed: int, *, reboot_at: int = 0, honest_sync: bool = True,
                     cut_before_close: bool = False, defects: tuple[str, ...] = ()) -> Verdict:
    """Run, cut the power, inspect, recover; return every broken invariant."""
    problems: list[str] = []
    workflow_ids = ids(workload)
    with scratch_dir() as d:
        path = os.path.join(d, "journal.db")
        disk = Disk(cut_after=cut_after, honest_sync=honest_sync)
        with mounted(disk) as vfs:
            recorder = run_until_cut(path, workload, durability, disk, vfs, reboot_at,
                                     cut_before_close=cut_before_close, defects=defects)
            mid_run = not disk.powered
            cut = disk.power_cut(mode, random.Random(seed))
        snapshot = inspect(path, durability, workflow_ids, problems, "after the cut")
        if snapshot is None:
            return Verdict(problems, len(recorder.acks), -1, mid_run, cut)
        lost = [a for a in recorder.acks if not survived(a, snapshot)]
        kept = [a for a in recorder.acks if survived(a, snapshot)]
        if durability == "full":
            problems += [f"D4: acknowledged {a} was lost by the cut" for a in lost]
        else:
            problems += [
                f"G2: {a} was lost although {b}, begun after it was acknowledged, survived"
                for a in lost for b in kept if b.begun > a.acked
            ]
        problems += recover(path, workload, durability, snapshot)
        inspect(path, durability, workflow_ids, problems, "after recovery")
    return Verdict(problems, len(recorder.acks), len(lost), mid_run, cut)


def recover(path: str, workload: Workload, durability: Durability,
            snapshot: Snapshot) -> list[str]:
    """Reopen with a plain App, finish every workflow, and check what ran again."""
    problems: list[str] = []
    recorder = Recorder()
    app, job = build(path, recorder, durability, None)
    with app:
        for wid, inputs in zip(ids(workload), workload, strict=True):
            result = app.start(job, inputs, workflow_id=wid).result(timeout=30)
            if result != expected(inputs):
                problems.append(f"D1: {wid} ended with {result}, not {expected(inputs)}")
    problems += [f"D2: step {key} ran again although the cut kept its row"
                 for key in recorder.bodies if key in snapshot.steps]
    return problems


def mutating_calls(workload: Workload, durability: Durability, reboot_at: int) -> int:
    """How many writes and syncs the workload makes when the power stays on."""
    with scratch_dir() as d:
        disk = Disk()
        with mounted(disk) as vfs:
            run_until_cut(os.path.join(d, "journal.db"), workload, durability, disk, vfs,
                          reboot_at)
        return disk.calls


@given(
    workload=workloads,
    durability=st.sampled_from(["full", "normal"]),
    moment=st.floats(0, 1.05),
    mode=st.sampled_from(Mode),
    seed=st.integers(0, 2**16),
    reboot=st.integers(0, 3),
)
def test_power_cut_keeps_the_documented_contract(
    workload: Workload, durability: Durability, moment: float, mode: Mode, seed: int,
    reboot: int,
) -> None:
    """The cut comes at ``moment`` x the writes and syncs of an uncut run (past 1: after it)."""
    reboot_at = min(reboot, len(workload))
    cut_after = int(moment * mutating_calls(workload, durability, reboot_at))
    verdict = check_power_loss(workload, durability, cut_after, mode, seed, reboot_at=reboot_at)
    event(f"power cut {'during the run' if verdict.mid_run else 'after the App closed'}")
    event(f"{durability}: acknowledgements lost: {'some' if verdict.lost > 0 else 'none'}")
    event(f"unsynced writes at the cut: {'some lost' if verdict.cut.lost else 'none lost'}"
          f"{', one torn' if verdict.cut.torn else ''}")
    assert verdict.problems == []


WORKLOAD = [[1, 2, 3], [4, 5]]


def test_normal_durability_does_lose_acknowledgements_at_a_cut() -> None:
    """The simulator is not vacuous: with ``synchronous=NORMAL`` a cut loses recent commits."""
    verdict = check_power_loss(WORKLOAD, "normal", None, Mode.LOSE_ALL, 0, cut_before_close=True)
    assert verdict.problems == []
    assert verdict.lost > 0, verdict


def test_full_durability_keeps_them_at_the_same_cut() -> None:
    verdict = check_power_loss(WORKLOAD, "full", None, Mode.LOSE_ALL, 0, cut_before_close=True)
    assert verdict.problems == []
    assert verdict.lost == 0 and verdict.acks == 9, verdict  # 2 starts, 5 steps, 2 results


def test_negative_control_an_fsync_that_lies_is_caught() -> None:
    verdict = check_power_loss(WORKLOAD, "full", None, Mode.LOSE_ALL, 0, honest_sync=False,
                               cut_before_close=True)
    assert any(p.startswith("D4: acknowledged") for p in verdict.problems), verdict


def test_negative_control_synchronous_off_is_caught() -> None:
    verdict = check_power_loss(WORKLOAD, "full", None, Mode.LOSE_ALL, 0, cut_before_close=True,
                               defects=("no_sync",))
    assert any(p.startswith("D4: acknowledged") for p in verdict.problems), verdict


def test_reopen_after_a_cut_during_a_checkpoint() -> None:
    """The checkpoint at close wrote page 1 (the header, now counting every page) and the
    power went off before the other pages reached the disk. The WAL was synced and still holds
    them all, so SQLite opens the file with integrity "ok" and every row, and so must
    litedurable (G1: no repair needed after a crash at any instant).
    """
    with scratch_dir() as d:
        path = os.path.join(d, "journal.db")
        dry = Disk()
        with mounted(dry) as vfs:
            run_until_cut(path, [[1, 2]], "full", dry, vfs, 0)
        wal_synced = max(i for i, op in enumerate(dry.log) if op == ("sync", "journal.db-wal"))
        page_one = dry.log.index(("write", "journal.db"), wal_synced)
        os.remove(path)
        disk = Disk(cut_after=page_one + 1)
        with mounted(disk) as vfs:
            run_until_cut(path, [[1, 2]], "full", disk, vfs, 0)
            disk.power_cut(Mode.PREFIX, random.Random(0), prefix=1)
        copy = os.path.join(d, "copy.db")
        for suffix in ("", "-wal"):
            shutil.copyfile(path + suffix, copy + suffix)
        raw = apsw.Connection(copy)  # SQLite alone, on a copy: it replays the WAL
        try:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert raw.execute("SELECT count(*) FROM steps").fetchall() == [(2,)]
        finally:
            raw.close()
        with SqliteStorage(path) as journal:
            assert journal.integrity_check() == "ok"
