"""Several machines on one PostgreSQL journal, under a nemesis (issue 17 items 4 and 7).

Four worker processes (``machine_worker.py``), each its own App on one schema, each posing as
another machine: its own host name (so no pid check applies, only leases decide) and its own
wall clock, one of them an hour ahead and one an hour behind (leases are judged by the
database's clock, so that must not matter). A 1 s lease. Each starts its share of 40
workflows of 5 steps; each step body appends its start and end to its process's ledger, with
a nonce unique to that execution, which the step returns (so the journal's row names the very
execution it recorded).

The nemesis, in this process, repeats: SIGSTOP the worker busiest in step bodies, SIGKILL
another and start a fresh one for its machine, and SIGCONT the stopped one after three
leases (its workflows were taken over meanwhile; when it goes on, its late writes must be
refused).

The checks, at the end, use no timing tolerance (every time compared is the one machine's
real clock, on the causal order the journal imposes):

* every workflow succeeded, its result the outputs of its five step rows, one row per step;
* each row names an execution of that step by the row's owner that ended (the recorded one);
* no recorded step ran again: any other execution that started after the recorded one ended
  is by another owner, in a process SIGSTOPped before it started, that did not go on to a
  next step of that workflow (the next thing it learnt about it was a refused write, or
  nothing). An
  owner that claimed the workflow after the row was written has read the row and must not
  run the step; one that owned it before can only run it after that if it was presumed dead
  meanwhile (a live owner never is: checked below), and then its write is refused;
* ownership moved only away from a killed or stopped process (a live owner's workflow was
  never taken), and a stopped process, continued, recorded nothing of a workflow taken from
  it: in each workflow's rows an owner change is from a killed or stopped owner;
* the nemesis did something: a workflow was taken over (two owners in its rows) and a
  stopped process was fenced.

The negative control runs the workers with the ``wall_clock_leases`` defect (the old verdict,
by the machine's own clock): the machine an hour ahead takes every live owner's workflows,
and the checks must say so.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import child_env, eventually

from litedurable._backends import open_storage
from litedurable._storage import StepRow, WorkflowRow

WORKER = Path(__file__).with_name("machine_worker.py")
MACHINES = 4
SKEWS = (0.0, 3600.0, -3600.0, 1800.0)  # each machine's wall clock, against the real one
LEASE = 1.0
WORKFLOWS = 40  # 10 per machine (machine_worker.PER_WORKER)
STEPS = 5  # machine_worker.STEPS
ROUNDS = 4
HANG = 120.0  # only turns a hang into a failure


@dataclass
class Run:
    """What a scenario left behind: the journal's rows and every process's ledger."""

    workflows: dict[str, WorkflowRow]
    steps: dict[str, list[StepRow]]
    ledgers: dict[int, list[dict[str, Any]]]  # pid -> events, in the order written
    killed: set[int] = field(default_factory=set)
    # pid -> (when SIGSTOP was sent, when SIGCONT was) of its first stop (each is stopped once
    # while a machine that was not is left; after that, one may be stopped again)
    stopped: dict[int, tuple[float, float]] = field(default_factory=dict)


class Machines:
    """The worker processes: started, SIGKILLed, SIGSTOPped and continued, stopped."""

    def __init__(self, url: str, tmp: Path, t0: float, pace: float, defect: str | None) -> None:
        self.url, self.tmp, self.t0, self.pace, self.defect = url, tmp, t0, pace, defect
        self.stop_file = tmp / "stop"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # machine -> its live process
        self.all: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.stopped: dict[int, tuple[float, float]] = {}

    def start(self, k: int) -> None:
        args = [sys.executable, str(WORKER), self.url, str(k), str(SKEWS[k]), str(self.tmp),
                str(self.t0), str(self.pace), str(self.stop_file), str(LEASE)]
        proc = subprocess.Popen([*args, *([self.defect] if self.defect else [])],
                                env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.procs[k] = proc
        self.all.append(proc)

    def kill(self, k: int) -> None:
        proc = self.procs[k]
        proc.kill()
        proc.wait()
        self.killed.add(proc.pid)
        self.start(k)

    def busiest(self, among: list[int]) -> int:
        """The machine (of ``among``) whose process has the most step bodies running now, by
        its ledger: stopping it leaves workflows in flight to take over and fence."""
        def running(k: int) -> int:
            open_ = set()
            for event in _read_ledger(self.tmp, self.procs[k].pid):
                if event["ev"] == "start":
                    open_.add(event["nonce"])
                elif event["ev"] == "end":
                    open_.discard(event["nonce"])
            return len(open_)

        return max(among, key=running)

    def shut_down(self) -> None:
        """Touch the stop file; each worker closes its App and exits (SIGKILL on a hang)."""
        self.stop_file.touch()
        for proc in self.all:
            if proc.returncode is not None:
                continue
            os.kill(proc.pid, signal.SIGCONT)  # harmless unless it is stopped
            try:
                _, err = proc.communicate(timeout=HANG)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise AssertionError(f"worker {proc.pid} did not stop") from None
            assert proc.returncode == 0, f"worker {proc.pid} failed:\n{err.decode()}"
        for proc in self.all:
            if proc.stdout:
                proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()


def _read_ledger(tmp: Path, pid: int) -> list[dict[str, Any]]:
    events = []
    for path in tmp.glob(f"ledger-*-{pid}.jsonl"):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
    return events


def _finished(url: str) -> int:
    with open_storage(url, readonly=True) as journal:
        return journal.count_workflows().get("succeeded", 0)


def _scenario(url: str, tmp: Path, *, defect: str | None = None, nemesis: bool = True,
              pace: float = 0.3) -> Run:
    """Run the machines (the nemesis too, if ``nemesis``) until every workflow succeeded;
    ``pace``: seconds between two workflows' starts (all machines together)."""
    rng = random.Random(os.getpid())
    open_storage(url).close()  # the schema exists before four workers race to create it
    machines = Machines(url, tmp, time.time() + 1.5, pace, defect)
    try:
        for k in range(MACHINES):
            machines.start(k)
        for _ in range(ROUNDS if nemesis else 0):
            if _finished(url) == WORKFLOWS:
                break
            time.sleep(0.5)
            fresh = [k for k in range(MACHINES) if machines.procs[k].pid not in machines.stopped]
            stop = machines.busiest(fresh or list(range(MACHINES)))
            stopped = machines.procs[stop]
            stop_sent = time.time()
            stopped.send_signal(signal.SIGSTOP)
            machines.kill(rng.choice([k for k in range(MACHINES) if k != stop]))
            time.sleep(3 * LEASE)  # its lease lapses; the others take its workflows over
            machines.stopped.setdefault(stopped.pid, (stop_sent, time.time()))
            stopped.send_signal(signal.SIGCONT)
        eventually(lambda: _finished(url) == WORKFLOWS, "every workflow to succeed",
                   timeout=HANG, every=0.1)
    finally:
        machines.shut_down()
    with open_storage(url, readonly=True) as journal:
        workflows = {row.workflow_id: row for row in journal.list_workflows()}
        steps = {wid: journal.load_steps(wid) for wid in workflows}
    ledgers = {proc.pid: _read_ledger(tmp, proc.pid) for proc in machines.all}
    return Run(workflows, steps, ledgers, machines.killed, machines.stopped)


@dataclass(frozen=True)
class Execution:
    pid: int
    owner: str
    workflow_id: str
    step: int
    nonce: str
    start: float
    end: float | None
    index: int  # of its start event in its process's ledger


def _executions(run: Run) -> dict[str, Execution]:
    found: dict[str, Execution] = {}
    for pid, events in run.ledgers.items():
        ends = {e["nonce"]: e["t"] for e in events if e["ev"] == "end"}
        for i, e in enumerate(events):
            if e["ev"] == "start":
                found[e["nonce"]] = Execution(pid, e["owner"], e["w"], e["step"], e["nonce"],
                                              e["t"], ends.get(e["nonce"]), i)
    return found


def _learnt_next(run: Run, ex: Execution) -> str | None:
    """What ``ex``'s process learnt next about its workflow after ``ex`` started: "fenced"
    (a write refused), "start" (it ran another of its steps), or None (nothing)."""
    for event in run.ledgers[ex.pid][ex.index + 1:]:
        if event.get("w") == ex.workflow_id and event["ev"] in ("fenced", "start"):
            return str(event["ev"])
    return None


def violations(run: Run) -> list[str]:
    """Everything the run did that litedurable promises not to (empty: it kept its word)."""
    found: list[str] = []
    executions = _executions(run)
    by_step: dict[tuple[str, int], list[Execution]] = defaultdict(list)
    for ex in executions.values():
        by_step[(ex.workflow_id, ex.step)].append(ex)
    owners_of = {pid: {e["owner"] for e in events if e["ev"] == "start"}
                 for pid, events in run.ledgers.items()}
    presumable = {o for pid in (*run.killed, *run.stopped) for o in owners_of.get(pid, ())}

    if len(run.workflows) != WORKFLOWS:
        found.append(f"{len(run.workflows)} workflows in the journal, not {WORKFLOWS}")
    for wid, wf in sorted(run.workflows.items()):
        rows = run.steps[wid]
        if [r.step for r in rows] != list(range(STEPS)):
            found.append(f"{wid}: step rows {[r.step for r in rows]}, not 0..{STEPS - 1}")
            continue
        nonces = [json.loads(r.output or b"null") for r in rows]
        if wf.status != "succeeded" or json.loads(wf.output or b"null") != nonces:
            found.append(f"{wid}: {wf.status} with {wf.output!r}, not the rows' {nonces}")
        for row, nonce in zip(rows, nonces, strict=True):
            recorded = executions.get(nonce)
            if (recorded is None or recorded.end is None or recorded.owner != row.owner
                    or (recorded.workflow_id, recorded.step) != (wid, row.step)):
                found.append(f"{wid} step {row.step}: recorded by {row.owner} as {nonce}, "
                             f"which is not an execution of it by that owner that ended "
                             f"({recorded})")
                continue
            assert recorded.end is not None
            for ex in by_step[(wid, row.step)]:
                if ex is recorded or ex.start < recorded.end:
                    continue  # ran before the recorded execution ended (cut, or fenced)
                learnt = _learnt_next(run, ex)
                if (ex.owner != row.owner and ex.pid in run.stopped
                        and run.stopped[ex.pid][0] <= ex.start and learnt != "start"):
                    # Its process was stopped before (so presumed dead: it may run a step
                    # late); the next thing it learnt of the workflow was a refused write (or
                    # nothing: killed, or closed, before it tried). It never went on to a
                    # next step. (A killed process runs nothing late: it is dead by then.)
                    continue
                found.append(f"{wid} step {row.step} ran again after it was recorded: {ex} "
                             f"(recorded: {recorded}; its process learnt next: {learnt})")
        owners = [r.owner for r in rows]
        for before, after in itertools.pairwise(owners):
            if before != after and before not in presumable:
                found.append(f"{wid}: {after} took it over from {before}, which was neither "
                             f"killed nor stopped (owners by step: {owners})")
    return found


def _nemesis_did_its_work(run: Run) -> list[str]:
    missing = []
    if not any(len({r.owner for r in rows}) > 1 for rows in run.steps.values()):
        missing.append("no workflow was taken over (every one has a single owner in its rows)")
    fenced = [e for pid, (_, cont) in run.stopped.items() for e in run.ledgers.get(pid, [])
              if e["ev"] == "fenced" and e["t"] >= cont]
    if not fenced:
        missing.append("no stopped process was fenced once continued")
    for e in fenced:  # the workflow it was fenced on went on under someone else
        rows = run.steps[e["w"]]
        if not any(r.owner not in {x["owner"] for x in run.ledgers[e["pid"]]
                                   if x["ev"] == "start"} for r in rows):
            missing.append(f"{e['w']}: its stopped owner was fenced, yet no other owner "
                           f"recorded any of its steps")
    return missing


@pytest.fixture
def url(postgres_dsn: str) -> str:
    sep = "&" if "?" in postgres_dsn else "?"
    return f"{postgres_dsn}{sep}schema=t_{uuid.uuid4().hex[:12]}"


def test_machines_under_kills_and_stops_keep_every_step_once(url: str, tmp_path: Path) -> None:
    run = _scenario(url, tmp_path)
    assert violations(run) == []
    assert _nemesis_did_its_work(run) == []
    _the_checks_can_fail(run)


def _the_checks_can_fail(run: Run) -> None:
    """The checks flag a recorded step run again by its recorder, one run again by an owner
    that was never presumed dead, and a workflow taken from a live owner (each written into
    a copy of the run's evidence)."""
    wid, rows = next((w, r) for w, r in sorted(run.steps.items()) if len(r) == STEPS)
    row = rows[1]
    recorded = _executions(run)[json.loads(row.output or b"null")]
    again = {"ev": "start", "pid": recorded.pid, "t": (recorded.end or 0) + 1e-3, "w": wid,
             "step": row.step, "nonce": "again", "owner": recorded.owner}
    rerun = dataclasses.replace(run, ledgers={**run.ledgers, recorded.pid: [
        *run.ledgers[recorded.pid], again]})
    assert any("ran again after it was recorded" in v for v in violations(rerun))
    live = {pid for pid in run.ledgers if pid not in run.killed and pid not in run.stopped}
    other = next(pid for pid in sorted(live) if pid != recorded.pid
                 and any(e["ev"] == "start" for e in run.ledgers[pid]))
    late = {**again, "pid": other, "owner": next(e["owner"] for e in run.ledgers[other]
                                                if e["ev"] == "start")}
    stranger = dataclasses.replace(run, ledgers={**run.ledgers, other: [*run.ledgers[other],
                                                                         late]})
    assert any("ran again after it was recorded" in v for v in violations(stranger))
    victim, thief = "machine-8:1:alive", "machine-9:2:thief"  # neither killed nor stopped
    taken = [r._replace(owner=victim if r.step < 2 else thief) for r in rows]
    stolen = dataclasses.replace(run, steps={**run.steps, wid: taken})
    assert any("neither killed nor stopped" in v for v in violations(stolen))


def test_the_checks_catch_leases_judged_by_each_machines_own_clock(url: str,
                                                                   tmp_path: Path) -> None:
    """Negative control: with the old verdict (``wall_clock_leases``) the machine an hour
    ahead presumes every live owner dead and takes their workflows (no nemesis needed)."""
    run = _scenario(url, tmp_path, defect="wall_clock_leases", nemesis=False, pace=0.15)
    found = violations(run)
    assert any("neither killed nor stopped" in v for v in found), found
