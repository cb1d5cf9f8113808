"""Word count as map/reduce: map chunks in parallel, reduce them in completion order.

Shows ``ld.as_completed``: each yield is a recorded decision, so the reduce folds the chunks
in the same order on every replay (the journal row names the candidates and the winner). The
script crashes right after the second yield is recorded; in the next process the chunks
finish in a different order, yet the resumed workflow folds them in the recorded order.

    python examples/map_reduce.py [journal.db]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping

import litedurable as ld
from litedurable.testing import crash_at

CHUNKS = [
    "the cat sat on the mat",
    "the dog sat on the log and the cat ran",
    "a fox and a dog met the cat",
    "the end",
]


def make_app(path: str, delays: list[float]) -> tuple[ld.App, Callable[[], list[str]]]:
    app = ld.App(path)

    @app.step(name="count_words")
    def count_words(index: int) -> dict[str, int]:
        time.sleep(delays[index])
        return dict(Counter(CHUNKS[index].split()))

    @app.workflow(name="word_count")
    def word_count() -> list[str]:
        futures = [ld.go(count_words, i) for i in range(len(CHUNKS))]
        totals: Counter[str] = Counter()
        order = []
        for done in ld.as_completed(futures):
            order.append(futures.index(done))
            totals.update(done.result())
        top = ", ".join(f"{word}={n}" for word, n in totals.most_common(3))
        return [f"folded chunks in order {order}", f"top words: {top}"]

    return app, word_count


def main(path: str) -> None:
    workflow_id = f"wordcount-{uuid.uuid4().hex[:8]}"
    before: list[tuple[object, object]] = []

    def watch(point: str, info: Mapping[str, object]) -> None:
        if point == "after_decision":
            before.append((info["step"], info["winner"]))

    app, word_count = make_app(path, delays=[0.03, 0.0, 0.015, 0.045])
    switch = crash_at(app, "after_decision", nth=2, observer=watch)
    with app:
        app.start(word_count, workflow_id=workflow_id)
        if not switch.wait():
            sys.exit("the workflow never reached its second decision")
    print(f"crashed after {len(before)} recorded yields: (step, winner) {before}")

    app, word_count = make_app(path, delays=[0.0, 0.03, 0.045, 0.015])  # a new finishing order
    with app:
        for line in app.handle(workflow_id).result(timeout=30):
            print(line)
        after = [(s.step, s.winner) for s in app.steps(workflow_id) if s.kind == "as_completed"]
    kept = after[: len(before)] == before
    print(f"completion order kept across the crash: {kept}")
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "map_reduce.db"))
