"""The fault seam: where tests make an App fail on purpose, by name, without patching it.

Three kinds of fault, each consulted at one place in the engine:

* **Crash points** (``CRASH_POINTS``): the engine calls ``fire(point, **info)`` at each; a test's
  ``callback`` may raise there (``litedurable.testing.crash_at``). An exception raised there is
  remembered in ``crashed``: from then on the App counts as dead, so a workflow function it
  unwinds is not recorded as failed by it (what a real crash would leave).
* **Death** (``kill``): every later write of the storage raises the given crash instead of
  reaching the file, exactly as if the process had been killed at that instant. ``dead`` says
  so, and the engine's threads then stop quietly (a dead process logs nothing).
* **Defects** (``DEFECTS``): deliberately broken variants of a guarantee, for negative
  controls: a crash suite must be shown to catch the engine that breaks what it checks.

One ``Faults`` belongs to one App and is shared by its storage and runtime. With no callback,
no death and no defect (every production App), each check is one attribute read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["CRASH_POINTS", "DEFECTS", "Faults"]

CRASH_POINTS: tuple[str, ...] = (
    "before_step",  # a step's number is taken, its body has not started
    "after_body",  # the body returned or raised; its row is not written
    "after_commit",  # the step row is durable; the caller has not seen the value
    "before_decision",  # a select chose its winner; the decision is not written
    "after_decision",  # the decision is durable; code after the select has not run
    "before_send",  # ld.send's step number is taken; the message and its row are not written
    "after_send",  # the message and the sender's step row are durable; send has not returned
    "before_receive",  # a message future is about to try to consume its topic's oldest message
    "after_receive",  # a message is consumed and recorded; the workflow has not seen it
    "before_outcome",  # the workflow function returned; its outcome is not written
    "after_outcome",  # the workflow's outcome is durable
    "recovery",  # launch() claimed pending workflows and is about to resume them
)

DEFECTS: Mapping[str, str] = {
    "no_fence": "the storage accepts step rows from a workflow's former owner (no owner "
                "fence, and no refusal of a step row someone else already completed)",
    "record_before_body": "a step's row is committed (with the value None) before its body "
                          "runs, so a crash after the commit leaves a completed step whose "
                          "body never ended (G3: at most once instead of at least once)",
    "decision_after_branch": "the storage holds a select's decision back and commits it with "
                             "the workflow's next row after it, once the code after the "
                             "select has run (D3: a crash in between lets replay re-decide)",
    "lost_step_rows": "the storage acknowledges the rows of inline steps without writing "
                      "them (D2: a step whose commit was acknowledged runs again)",
    "no_reread": "a commit whose outcome is unknown (it raised) is taken as written, without "
                 "re-reading the file (D4: an acknowledged row may be missing)",
    "no_sync": "the journal is opened with synchronous=OFF whatever its durability (G2: a "
               "power loss loses acknowledged commits even with durability='full')",
    "racy_dequeue": "a dequeue counts what its queue runs and picks its workflows in a read, "
                    "then claims them in a separate write that does not check they are still "
                    "enqueued (consumers racing exceed the queue's limits and start one "
                    "queued workflow twice)",
    "wall_clock_leases": "the lease verdict compares the owner rows with this machine's wall "
                         "clock instead of the journal's (issue 17 item 4: on several "
                         "machines, one whose clock runs ahead presumes every live owner dead "
                         "and takes their workflows over)",
    "redecide_timeout": "a replayed select (or recv/get_event) that timed out waits again: a "
                        "message or event that arrived since the crash wins instead",
}
"""The deliberately broken variants a negative control may switch on, and what each breaks.

Each is read at exactly one place in the engine, as ``faults.broken(name)``, where production
never gets or pays one attribute read at most (``tests/test_faults.py`` checks the one place)."""


class Faults:
    """The faults injected into one App (none, outside tests)."""

    __slots__ = ("_death", "callback", "crashed", "defects")

    def __init__(self) -> None:
        self.callback: Callable[[str, Mapping[str, object]], None] | None = None
        self.crashed: BaseException | None = None
        self.defects: frozenset[str] = frozenset()
        self._death: Callable[[], BaseException] | None = None

    # -- crash points ---------------------------------------------------------------------

    def fire(self, point: str, **info: object) -> None:
        """The engine reached crash point ``point``; the test's callback may raise here."""
        callback = self.callback
        if callback is not None:
            try:
                callback(point, info)
            except BaseException as exc:
                self.crashed = exc
                raise

    # -- death ----------------------------------------------------------------------------

    def kill(self, crash: Callable[[], BaseException]) -> None:
        """From now on every write raises ``crash()``: an in-process stand-in for death."""
        self._death = crash

    @property
    def dead(self) -> bool:
        """True once ``kill`` was called: nothing the App does reaches the file any more."""
        return self._death is not None

    def check_alive(self) -> None:
        """Raise the simulated crash if the App was killed (storage calls this before writing)."""
        if self._death is not None:
            raise self._death()

    def revive(self) -> None:
        """A new launch: the crash simulated in an earlier one is over (defects stay)."""
        self._death = None
        self.crashed = None

    # -- defects --------------------------------------------------------------------------

    def inject(self, *defects: str) -> None:
        """Switch on deliberately broken behaviours by name (negative controls only).

        Inject them before ``launch``: ``no_sync`` is read when the journal is opened. A step's
        defect is read where its crash points fire, so a no-op callback is installed if the
        test set none.

        Raises:
            ValueError: for a name not in ``DEFECTS`` (nothing is injected then).
        """
        unknown = sorted(set(defects) - set(DEFECTS))
        if unknown:
            raise ValueError(
                f"unknown defect(s) {', '.join(unknown)}; choose from {', '.join(DEFECTS)}"
            )
        self.defects = self.defects | frozenset(defects)
        if defects and self.callback is None:  # a step's defect is read where crash points fire
            self.callback = _ignore

    def broken(self, defect: str) -> bool:
        """Whether the defect ``defect`` was injected (one set lookup)."""
        return defect in self.defects


def _ignore(point: str, info: Mapping[str, object]) -> None:
    """The callback of an App with defects and no crash test: its crash points do nothing."""
