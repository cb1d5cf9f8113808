"""Shared machinery of the benchmark runner: isolated measurements, medians, targets, output.

Every measurement runs in a forked child of a lean parent (the parent imports the engines but
never opens a journal or starts a thread). That gives each workload a process of its own:
its peak RSS is its own (``ru_maxrss`` is a high-water mark, so an in-process figure would carry
the heaviest earlier workload), threads and global state (DBOS is a process-wide singleton)
never leak from one workload into the next, and a crash in one workload is reported with its
traceback instead of taking the run down.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import resource
import shutil
import statistics
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Target",
    "WorkloadError",
    "copy_database",
    "emit",
    "isolated",
    "median",
    "peak_rss_mb",
    "sig",
]

Record = dict[str, Any]


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports KiB)."""
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (JSON stays readable at any scale)."""
    if value == 0 or value != value:  # zero or NaN
        return value
    return float(f"{value:.{digits}g}")


def median(values: Sequence[float]) -> float:
    """The median of the repetitions (robust to one slow run on a shared machine)."""
    return float(statistics.median(values))


class WorkloadError(RuntimeError):
    """A workload failed in its child process; the message holds the child's traceback."""


class _ThreadProfiler:
    """cProfile for every thread started while it is active (cProfile alone sees one thread).

    Workflows, steps and the group-commit leader run on pool threads, so profiling only the
    calling thread would show the benchmark waiting. ``threading.setprofile`` installs a hook
    each new thread runs first; the hook gives that thread a profiler of its own. The stats of
    all of them are merged at the end.
    """

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_here(self, *_: object) -> None:
        profile = cProfile.Profile()
        with self._lock:
            self._profiles.append(profile)
        profile.enable()

    def __enter__(self) -> _ThreadProfiler:
        threading.setprofile(self._start_here)
        self._start_here()
        return self

    def __exit__(self, *exc_info: object) -> None:
        threading.setprofile(None)
        for profile in self._profiles:
            profile.disable()

    def dump(self, path: str) -> None:
        with self._lock:
            profiles = [p for p in self._profiles if p.getstats()]
        if not profiles:
            return
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def isolated(
    fn: Callable[[], Any], *, profile_to: str | None = None
) -> tuple[Any, float]:
    """Run ``fn()`` in a forked child; return its (JSON-serializable) result and peak RSS (MB).

    With ``profile_to``, the child profiles every thread it starts (cProfile) and writes the
    merged stats there. Without ``os.fork`` (not POSIX) the call runs in this process.
    """
    if not hasattr(os, "fork"):
        return _call(fn, profile_to), peak_rss_mb()
    sys.stdout.flush()
    sys.stderr.flush()
    # The parent's objects out of the collector's sight: a collection in the child would
    # otherwise write to every one of them, copying each page the parent's heap has (a cold
    # fan-out measured 25-30 ms slower with psycopg imported in the parent).
    gc.freeze()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report through the pipe, never return into the runner
        os.close(read_end)
        code = 0
        try:
            payload: Record = {"ok": True, "value": _call(fn, profile_to), "rss": peak_rss_mb()}
        except BaseException:
            payload = {"ok": False, "error": traceback.format_exc()}
            code = 1
        try:
            with os.fdopen(write_end, "w") as pipe:
                json.dump(payload, pipe)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not raw:
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        raise WorkloadError(f"the workload's child process died without reporting ({how})")
    payload = json.loads(raw)
    if not payload["ok"]:
        raise WorkloadError(payload["error"])
    return payload["value"], float(payload["rss"])


def copy_database(source: str, target: str) -> None:
    """Copy an SQLite file as it is on disk after a crash: the file, its WAL and its shm."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(source + suffix):
            shutil.copyfile(source + suffix, target + suffix)


def _call(fn: Callable[[], Any], profile_to: str | None) -> Any:
    if profile_to is None:
        return fn()
    with _ThreadProfiler() as profiler:
        value = fn()
    profiler.dump(profile_to)
    return value


@dataclass(frozen=True)
class Target:
    """A target from issue 6's table: ``field op limit`` checked against a result line."""

    field: str
    op: str  # "<=", "<", ">=", ">"
    limit: float

    def met(self, record: Record) -> bool:
        value = float(record[self.field])
        return {
            "<=": value <= self.limit,
            "<": value < self.limit,
            ">=": value >= self.limit,
            ">": value > self.limit,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.limit:g}"


def emit(record: Record, targets: Sequence[Target] = ()) -> Record:
    """Print ``record`` as one JSON line, with its targets and whether each is met."""
    if targets:
        verdicts = {str(t): t.met(record) for t in targets}
        record["target"] = " and ".join(verdicts)
        record["met"] = all(verdicts.values())
        if len(verdicts) > 1:
            record["met_each"] = verdicts
    print(json.dumps(record), flush=True)
    return record
