"""Summarize a profile of a workload: where its time goes, function by function, in percent.

    py-spy record --subprocesses --idle --threads -f raw -o spy.txt -- \\
        python benchmarks/run.py --only a --repeat 1
    python benchmarks/profile_summary.py spy.txt --thread litedurable-workflow

    python benchmarks/run.py --only a --repeat 1 --profile prof/
    python benchmarks/profile_summary.py prof/a-litedurable-full.pstats

For py-spy's raw (collapsed-stack) output, percentages are of the samples kept by the filters
(``--thread``: a thread-name prefix; ``--match``/``--exclude``: a substring some frame must
/ must not contain, process and thread frames included), so
with ``--idle`` they are shares of wall time of those threads. For a ``.pstats`` file (the
runner's ``--profile``, cProfile on every thread) they are shares of the summed thread time
(waits included: a lock ``acquire`` is where a blocked thread's time goes).
"""

from __future__ import annotations

import argparse
import pstats
import re
import sys
from collections import Counter

_LOCATION = re.compile(r" \((?:.*/)?([^/]+:\d+)\)$")


def _short(frame: str) -> str:
    """``fn (path/to/file.py:12)`` -> ``fn (file.py)``: the same function at any line."""
    match = _LOCATION.search(frame)
    if match is None:
        return frame
    return frame[: match.start()] + f" ({match.group(1).rsplit(':', 1)[0]})"


def spy(path: str, thread: str | None, match: str | None, exclude: str | None, top: int,
        lines: bool) -> None:
    """Self and inclusive shares per function from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if thread is not None and not any(
                fr.startswith("thread (") and fr.split(": ", 1)[-1].startswith(thread)
                for fr in frames
            ):
                continue
            if match is not None and not any(match in fr for fr in frames):
                continue
            if exclude is not None and any(exclude in fr for fr in frames):
                continue
            count = int(count_text)
            code = [fr if lines else _short(fr) for fr in frames
                    if not fr.startswith(("process ", "thread ("))]
            if not code:
                continue
            total += count
            own[code[-1]] += count
            for name in set(code):
                inclusive[name] += count
    print(f"{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"-- top {top} by {title} time")
        for name, count in counter.most_common(top):
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")


def cprofile(path: str, top: int) -> None:
    """Self and cumulative shares per function from a .pstats file."""
    stats = pstats.Stats(path)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values()) or 1.0  # every thread's time
    rows: list[tuple[str, float, float]] = [
        (f"{fn} ({file.rsplit('/', 1)[-1]})", float(tt), float(ct))
        for (file, _, fn), (_, _, tt, ct, _) in raw.items()
    ]
    print(f"{total:.3f} s of profiled time (all threads)")
    for title, own in (("self", True), ("cumulative", False)):
        print(f"-- top {top} by {title} time")
        for name, tt, ct in sorted(rows, key=lambda r: -(r[1] if own else r[2]))[:top]:
            print(f"{100 * (tt if own else ct) / total:6.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("profile", help="py-spy raw output, or a .pstats file")
    parser.add_argument("--thread", help="py-spy: keep threads whose name starts with this")
    parser.add_argument("--match", help="py-spy: keep stacks with a frame containing this")
    parser.add_argument("--exclude", help="py-spy: drop stacks with a frame containing this "
                        "(process frames included: 'victim' drops workload d's victim)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--lines", action="store_true", help="py-spy: keep line numbers")
    args = parser.parse_args()
    if args.profile.endswith(".pstats"):
        cprofile(args.profile, args.top)
    else:
        spy(args.profile, args.thread, args.match, args.exclude, args.top, args.lines)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into head
        sys.stderr.close()
