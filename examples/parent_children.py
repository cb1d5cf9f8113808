"""A parent workflow fans out to child workflows, survives a crash, and cancels its children.

Shows ``app.start`` inside a workflow: each child start is a recorded step (the child's id is
``"<parent id>/<step>"``), and waiting on a child is a recorded ``wait`` step, so after a crash
the parent replays both and starts no child twice. Then a second parent is cancelled: its
children are cancelled with it, except the one started with ``detached=True``.

    python examples/parent_children.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import litedurable as ld
from litedurable.testing import crash_at

STARTED: Counter[str] = Counter()  # how often each child's first step ran, in this process
LOCK = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[str], int], Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="count_words")
    def count_words(chapter: str) -> int:
        with LOCK:
            STARTED[ld.workflow_id()] += 1
        return len(chapter.split())

    @app.workflow(name="chapter")
    def chapter(text: str) -> int:
        return count_words(text)

    @app.workflow(name="book")
    def book(title: str) -> int:
        chapters = [f"{title} part {n} " + "word " * n for n in range(1, 4)]
        children = [app.start(chapter, text) for text in chapters]
        return sum(child.result() for child in children)

    @app.workflow(name="review")
    def review(title: str) -> str:
        ld.sleep(3600)
        return f"reviewed {title}"

    @app.workflow(name="publisher")
    def publisher(title: str) -> str:
        app.start(review, title, workflow_id=f"{ld.workflow_id()}/audit", detached=True)
        app.start(review, title, workflow_id=f"{ld.workflow_id()}/proofread")
        ld.sleep(3600)
        return "published"

    return app, book, publisher


def wait_until_asleep(app: ld.App, *workflow_ids: str) -> None:
    for _ in range(3000):  # at most 30 s
        try:
            if all(any(s.kind == "sleep" for s in app.steps(w)) for w in workflow_ids):
                return
        except ld.WorkflowNotFoundError:
            pass
        threading.Event().wait(0.01)
    sys.exit(f"{workflow_ids} never went to sleep")


def main(path: str) -> None:
    book_id = f"book-{uuid.uuid4().hex[:8]}"
    app, book, _ = make_app(path)
    committed: set[str] = set()  # children whose step was durable before the crash

    def observe(point: str, info: object) -> None:
        if point == "after_commit" and isinstance(info, dict):
            committed.add(info["workflow_id"])

    third = f"{book_id}/2"
    switch = crash_at(app, "after_commit", when=lambda info: info["workflow_id"] == third,
                      observer=observe)
    with app:
        app.start(book, "Dune", workflow_id=book_id)
        if not switch.wait(30):
            sys.exit("the workflow never reached the crash point")
    print(f"crashed after the step of {third} committed; committed then: {sorted(committed)}")

    app, book, publisher = make_app(path)
    with app:
        words = app.handle(book_id).result(timeout=30)
        kids = sorted(w.workflow_id for w in app.list_workflows(name="chapter"))
        print(f"{words} words from {len(kids)} children: {', '.join(kids)}")
        rerun = [k for k in committed if STARTED[k] != 1]
        print(f"children started: {len(kids)}; committed child steps run again: {rerun or 'none'}")
        once = len(kids) == 3 and not rerun

        pub = app.start(publisher, "Dune", workflow_id=f"{book_id}-publisher")
        wait_until_asleep(app, pub.workflow_id, f"{pub.workflow_id}/audit",
                          f"{pub.workflow_id}/proofread")
        pub.cancel()
        statuses = {w.workflow_id.rsplit("/", 1)[-1]: str(w.status) for w in app.list_workflows()
                    if w.workflow_id.startswith(pub.workflow_id)}
        print(f"after cancelling the publisher: {statuses}")
        detached_lives = statuses == {
            "audit": "pending", "proofread": "cancelled", pub.workflow_id: "cancelled",
        }
        print(f"attached child cancelled, detached child still pending: {detached_lives}")
    sys.exit(0 if once and detached_lives else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "parent_children.db"))
