"""What README.md shows and promises: its quick start is ``examples/quickstart.py`` and runs
twice with the same result, and its test command is the one CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import child_env


def test_readme_quickstart_is_the_example_file() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    example = (root / "examples" / "quickstart.py").read_text()
    assert f"```python\n{example}```" in readme


def test_readme_test_command_is_the_ci_command() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    assert "python -m pytest tests property_tests" in readme
    assert "python -m pytest tests property_tests" in ci


def test_quickstart_runs_twice_with_the_same_result(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    script = root / "examples" / "quickstart.py"
    outputs = [
        subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, check=True, env=child_env()).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith("receipt-42-1999-order-42:0")
    assert (tmp_path / "litedurable.db").exists()


def _section_example_output(tmp_path: Path, section: str) -> list[str]:
    """Run the first python block of README section ``section`` twice in a fresh directory;
    both runs must print the same lines, which are returned."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    text = readme[readme.index(f"## {section}"):]
    start = text.index("```python\n") + len("```python\n")
    script = tmp_path / "example.py"
    script.write_text(text[start:text.index("```", start)])
    outputs = [
        subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, check=True, env=child_env()).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1]
    return outputs[0].splitlines()


def test_readme_messages_example_runs_twice_with_the_same_result(tmp_path: Path) -> None:
    """The messages section's example runs as written; a second run (the workflow finished,
    the message resent with its idempotency key, the promise settled again) prints the same."""
    assert _section_example_output(tmp_path, "Messages, events, streams, promises") == [
        "['checking', 'the', 'budget']", "120 approved by ada, paid with receipt-981",
    ]


def test_readme_queues_example_runs_twice_with_the_same_result(tmp_path: Path) -> None:
    """The queues section's example runs as written; a second run (the parent finished, the
    trailer enqueued again with its dedup key freed) prints the same."""
    assert _section_example_output(tmp_path, "Queues") == [
        "['intro.mp4', 'talk.mp4', 'outro.mp4', 'credits.mp4']", "duplicate refused: True",
        "trailer.mp4",
    ]
