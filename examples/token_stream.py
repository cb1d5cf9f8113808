"""Stream an answer token by token to another process, which reads it live; the writer crashes.

Shows ``ld.write_stream``/``ld.close_stream`` in a workflow and ``app.read_stream`` in another
process, which follows the stream as it is written (woken by each commit, no polling). Each
token is a step and each write is journaled with it, so when the writer crashes after its
fourth token and a new App resumes it, no token is written twice: the reader, which kept
waiting across the crash, sees every token exactly once, and stops when the stream is closed.

    python examples/token_stream.py [journal.db]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import crash_at

ANSWER = "A durable workflow keeps its place in the journal , so a crash only pauses it ."


def make_app(path: str) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="next_token")
    def next_token(prompt: str, position: int) -> str | None:
        time.sleep(0.01)  # the model thinking
        words = ANSWER.split()
        return words[position] if position < len(words) else None

    @app.workflow(name="answer")
    def answer(prompt: str) -> str:
        tokens: list[str] = []
        while (token := next_token(prompt, len(tokens))) is not None:
            ld.write_stream("tokens", token)
            tokens.append(token)
        ld.close_stream("tokens")
        return " ".join(tokens)

    return app, answer


def reader(path: str, workflow_id: str) -> None:
    """The other process: print each token as it comes, until the stream is closed."""
    with ld.App(path) as app:
        for token in app.read_stream(workflow_id, "tokens", timeout=60):
            print(token, flush=True)


def main(path: str) -> None:
    workflow_id = f"answer-{uuid.uuid4().hex[:8]}"
    app, answer = make_app(path)
    switch = crash_at(app, "after_commit", nth=4)  # the fourth token, before it is written
    with app:
        app.start(answer, "what does a journal do?", workflow_id=workflow_id)
        if not switch.wait(30):
            sys.exit("the workflow never reached its fourth token")
    print("the writer crashed after its fourth token; a reader process starts")

    proc = subprocess.Popen([sys.executable, __file__, "--read", path, workflow_id],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = [proc.stdout.readline().strip() for _ in range(3)]  # what was written before
    print(f"the reader has {seen}, and waits; a new App resumes the writer")
    app, _ = make_app(path)
    with app:
        result = app.handle(workflow_id).result(timeout=30)
    seen += proc.stdout.read().split()
    proc.wait(timeout=30)
    print(f"the reader (pid {proc.pid}) saw: {' '.join(seen)}")
    ok = seen == result.split() == ANSWER.split() and proc.returncode == 0
    print(f"the reader saw every token once, across the writer's crash: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read"]:
        reader(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "token_stream.db"))
