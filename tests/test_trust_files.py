"""Issue 12, helper "files": the journal file under concurrent opens, deletion and damage, and
the ``litedurable`` command's edges (items 13, 14, 15, 16, 23)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import litedurable as ld

# Several processes open one brand-new path at the same moment, many rounds over. Forked from a
# fresh interpreter (no threads there, so fork is safe), each child reports what it raised.
_OPEN_RACE = textwrap.dedent('''
    import multiprocessing as mp, os, sys
    from litedurable._journal import Journal

    def opener(path, barrier, queue):
        try:
            barrier.wait()
            Journal(path, busy_timeout=30.0).close()
            queue.put("")
        except BaseException as exc:
            queue.put(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")

    ctx = mp.get_context("fork")
    rounds, width, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    failures = []
    for r in range(rounds):
        path = os.path.join(folder, f"race-{r}.db")
        barrier, queue = ctx.Barrier(width), ctx.Queue()
        procs = [ctx.Process(target=opener, args=(path, barrier, queue)) for _ in range(width)]
        for p in procs:
            p.start()
        failures += [m for m in (queue.get(timeout=120) for _ in procs) if m]
        for p in procs:
            p.join()
    print(len(failures))
    for m in failures[:5]:
        print(m)
''')


def test_processes_opening_a_new_journal_at_once_all_succeed(tmp_path: Path) -> None:
    """Issue 12 item 13: concurrent first opens of one new file retry within the busy timeout
    (``journal_mode=WAL`` gets SQLITE_BUSY without the busy handler) and never raise a raw OS
    error from the header check."""
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_RACE, "250", "6", str(tmp_path)],
        capture_output=True, text=True, timeout=170,
    )
    assert done.returncode == 0, done.stderr
    count, *messages = done.stdout.splitlines()
    assert count == "0", messages
