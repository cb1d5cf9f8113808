"""Every example under examples/ runs to completion and prints what it promises.

Each example crashes or stops its own workflow (``litedurable.testing.crash_at``, closing the
App, or SIGTERM to a worker process), resumes it in a fresh App on the same journal, and exits
non-zero if what it promises did not hold; ``queue_crawler.py`` runs once and checks its
rate limit against the recorded start times.
``quickstart.py`` has its own test, in ``test_readme.py``. Each runs on SQLite and on
PostgreSQL (the journal is the example's first argument), but two that keep side files beside
the journal file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import child_env

from litedurable._backends import is_server_url

pytestmark = pytest.mark.both_backends  # each example runs on SQLite and on PostgreSQL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "approval.py": "each request decided by what came first, across the restart: True",
    "bounded_concurrency.py": "decisions kept across the crash: True",
    "crash_testing.py": "bug found by the crash test, fix passes: True",
    "fallback.py": "fallback decision kept across the crash: True",
    "fan_out_partial_failures.py": "same outcome as the crash-free run: True",
    "map_reduce.py": "completion order kept across the crash: True",
    "parallel_wait_all.py": "committed steps run again: none",
    "parent_children.py": "attached child cancelled, detached child still pending: True",
    "payment_webhook.py": "each payment settled once, while its workflow was down: True",
    "queue_accounts.py": "each account's events once, strictly in order, across the restart: True",
    "queue_crawler.py": "every page fetched once, no faster than the rate limit: True",
    "queue_fanout.py": "every job ran once, at most 8 at a time: True",
    "queue_worker.py": "every job done exactly once across the SIGTERM: True",
    "race_fastest.py": "decision kept across the crash: True",
    "race_timeout.py": "decision kept across the crash: True",
    "racing_strategies.py": "winning strategy kept across the crash: True",
    "scheduled_job.py": "each firing ran exactly once: True",
    "steering_children.py": "every command taken once, in order, across the crash: True",
    "token_stream.py": "the reader saw every token once, across the writer's crash: True",
    "workflow_timeout.py": "deadline honoured across the restart, then resumed: True",
}

OWNED_ELSEWHERE = {"quickstart.py"}


def test_every_example_has_an_expectation() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py")} - OWNED_ELSEWHERE
    assert found == set(EXPECTED)


# These keep files beside the journal's path (a ledger, a worker's output, an approval flag),
# so they take a file's path, not a URL.
BESIDE_THE_FILE = {"queue_worker.py", "workflow_timeout.py"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path, db_path: str) -> None:
    if is_server_url(db_path) and name in BESIDE_THE_FILE:
        pytest.skip(f"{name} keeps its side files beside the journal file")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), db_path],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env(),
    )
    report = f"exit code {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert EXPECTED[name] in done.stdout.splitlines(), report
    assert is_server_url(db_path) or Path(db_path).exists(), report
