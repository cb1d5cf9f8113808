"""Resize a batch of images in parallel and collect the results in order with ``wait_all``.

Shows ``ld.go`` fan-out and ``ld.wait_all`` (values in argument order, whatever order the
steps finish in). The script crashes right after the third step's result is committed, then
resumes in a "new process": steps committed before the crash are never run again (their
journaled results are reused); a step that was still in flight runs again (at least once).
``ld.idempotency_key()`` names each step execution, so the output can show exactly that.

    python examples/parallel_wait_all.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping

import litedurable as ld
from litedurable.testing import crash_at

IMAGES = ["cat.png", "dog.png", "owl.png", "fox.png", "elk.png", "yak.png"]
RUNS: Counter[str] = Counter()  # step key -> times its body ran, across both "processes"
LOCK = threading.Lock()


def make_app(path: str) -> tuple[ld.App, Callable[[list[str]], list[str]]]:
    app = ld.App(path)

    @app.step(name="thumbnail")
    def thumbnail(image: str) -> str:
        with LOCK:
            RUNS[ld.idempotency_key()] += 1
        time.sleep(0.002 * len(image) * (1 + IMAGES.index(image) % 3))
        return image.replace(".png", "-128.png")

    @app.workflow(name="thumbnails")
    def thumbnails(images: list[str]) -> list[str]:
        return ld.wait_all([ld.go(thumbnail, image) for image in images])

    return app, thumbnails


def main(path: str) -> None:
    workflow_id = f"thumbs-{uuid.uuid4().hex[:8]}"
    committed: set[str] = set()

    def watch(point: str, info: Mapping[str, object]) -> None:
        if point == "after_commit":
            committed.add(f"{info['workflow_id']}:{info['step']}")

    app, thumbnails = make_app(path)
    switch = crash_at(app, "after_commit", nth=3, observer=watch)
    with app:
        app.start(thumbnails, IMAGES, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never committed three steps")
    print(f"crashed after {len(committed)} of {len(IMAGES)} steps were committed")

    app, thumbnails = make_app(path)
    with app:
        print("result:", app.handle(workflow_id).result(timeout=30))
    again = sorted(k for k in committed if RUNS[k] > 1)
    rerun = sorted(k for k, n in RUNS.items() if n > 1)
    print(f"in flight at the crash, so run again: {rerun or 'none'}")
    print(f"committed steps run again: {again or 'none'}")
    sys.exit(0 if not again else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "parallel_wait_all.db"))
