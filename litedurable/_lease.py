"""Ownership across processes: owner tokens, the heartbeat, and presumed-dead verdicts.

Each launched App has an owner token and a heartbeat row stating its own lease. A pending
workflow whose owner is gone (no row, a heartbeat older than the owner's own lease, a dead pid
in this very pid namespace, or a closed App in this very process) may be claimed by
compare-and-swap on its owner; the former owner's late writes are then refused by the
storage's fence.

Time here is the journal's clock, never the App's injected clock nor (on a server database)
this machine's: the storage stamps each heartbeat with its clock, and ``owners()`` reads that
clock with the rows, so a heartbeat's age is one clock's difference (``Storage.owners``). On
PostgreSQL that is the server's clock: machines whose clocks disagree by an hour still agree on
who is alive (one ahead no longer presumes every live owner dead, one behind still takes a dead
owner's workflows over). On SQLite (one machine) it is the wall clock, ``time.time()``. A
test's ``FakeClock`` in one App would make every live owner look dead (or a dead one alive)
to the others.

A pid proves an owner dead only on the owner's own host and in its own pid namespace; on
another machine (or container) the lease alone decides.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable

from ._errors import AppClosedError
from ._faults import Faults
from ._storage import OwnerRow, Owners, Storage

__all__ = ["HOST", "Lease", "Verdicts", "pid_namespace"]

log = logging.getLogger("litedurable")

HOST = socket.gethostname()

# The heartbeat is written every lease/3 seconds, but never more often than MIN_BEAT (a write
# per beat) nor less often than MAX_BEAT (longer waits overflow the platform's timeouts). The
# lease an owner states in its row is the one it can keep: at least three beats.
MIN_BEAT = 0.05
MAX_BEAT = 3600.0
# After a run of this App stopped on a journal error (``Lease.hurry``), the heartbeat thread
# recovers as soon as the journal answers: HURRY_RETRY seconds after the last recovery, or
# twice as long per recovery attempt the workflows it last claimed had made without recording
# a step (up to the lease), so a run that fails the same way every time still takes a while
# to use up its recovery attempts, and one that made progress is taken back at once.
HURRY_RETRY = 0.25

# Owner tokens of the Apps launched and not closed in this process: a workflow owned by a token
# of this pid that is not here belongs to an App that closed or crashed, and is free to take.
_LIVE_OWNERS: set[str] = set()
# A child of fork() runs none of its parent's Apps (their threads did not cross the fork, their
# journals refuse it): were the parent's tokens kept, the child would never take over the
# workflows of a parent that died.
os.register_at_fork(after_in_child=_LIVE_OWNERS.clear)


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """Which pid space this process's pids belong to, or None when that cannot be told.

    Containers sharing a volume can share a host name too, and a pid in one container's
    namespace says nothing about a process in another's: ``kill(pid, 0)`` there may find no
    such process while the owner is alive. The namespace's inode alone is not enough either:
    the initial namespace has the same inode on every Linux boot, so the kernel's boot id is
    part of the name. Read on each call, not once: a child of ``fork()`` after ``unshare``
    lives in another namespace than its parent. Outside Linux there are no pid namespaces, so
    the platform stands for one (as the host name did alone before).
    """
    if not sys.platform.startswith("linux"):
        return sys.platform
    boot = _boot_id()
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else f"{boot}/{link}"


class Lease:
    """One launched App's ownership: its token, its heartbeat thread, its view of the others.

    Args:
        storage: where the heartbeat row is written and owner rows are read.
        lease: seconds without a heartbeat after which an owner is presumed dead.
        faults: a killed App's heartbeat stops quietly, as a dead process's would.
    """

    def __init__(self, storage: Storage, lease: float, faults: Faults) -> None:
        self.storage = storage
        self.lease = lease
        self.faults = faults
        self.beat = min(max(MIN_BEAT, lease / 3), MAX_BEAT)
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._wake = threading.Event()  # set to stop, or to hurry
        self._stopping = False
        self._hurried = False
        self._thread: threading.Thread | None = None

    @property
    def stated(self) -> float:
        """The lease written in the owner row: ``lease``, or three beats if longer."""
        return max(self.lease, 3 * self.beat)

    def heartbeat(self) -> None:
        """Write (or refresh) this owner's row, vouching for it for ``stated`` seconds (the
        storage stamps the instant with the journal's clock)."""
        self.storage.heartbeat(OwnerRow(self.owner, HOST, os.getpid(), time.time(), self.stated,
                                        pid_namespace()))

    def start(self, every_lease: Callable[[], int]) -> None:
        """Register the token as live here, then beat on the heartbeat thread, which also
        calls ``every_lease`` (recovery, returning the highest attempt count it claimed) once
        per ``lease`` seconds, or sooner when hurried."""
        _LIVE_OWNERS.add(self.owner)
        self._stopping = False
        self._wake.clear()
        self._thread = threading.Thread(target=self._loop, args=(every_lease,),
                                        name="litedurable-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread (the row stays until ``release`` or a claimer deletes it)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def end(self) -> None:
        """This App closed or died: its token no longer counts as live in this process."""
        _LIVE_OWNERS.discard(self.owner)

    def hurry(self) -> None:
        """A run of this App stopped on a journal error (a server restarting, a connection
        lost): recover as soon as the journal answers again instead of at the next lease. The
        stopped run is this App's and no longer running here, so the recovery claims it
        (counting an attempt) and runs it again."""
        self._hurried = True
        self._wake.set()

    def _loop(self, every_lease: Callable[[], int]) -> None:
        """Beat until stopped; recover once per lease, or sooner when hurried. A journal that
        fails (a server away) is reported once, and again when the beat works: not every
        ``beat`` seconds for as long as it is away."""
        last = time.monotonic()  # the last recovery
        gap = HURRY_RETRY  # the least time from the last recovery to a hurried one
        failing = False
        while True:
            wait = self.beat
            if self._hurried:  # the hurried recovery's time, or a retry while the beat fails
                due = last + gap - time.monotonic()
                wait = min(wait, max(due, HURRY_RETRY if failing else 0.0))
            self._wake.wait(wait)
            self._wake.clear()  # before reading the flags: a later hurry sets it again
            if self._stopping:
                return
            now = time.monotonic()
            hurried = False
            try:
                self.heartbeat()
                if failing:
                    failing = False
                    log.warning("litedurable: the heartbeat of %s works again", self.owner)
                if (self._hurried and now - last >= gap) or now - last >= self.lease:
                    hurried, self._hurried = self._hurried, False
                    last = now
                    attempts = every_lease()
                    gap = min(HURRY_RETRY * 2 ** min(max(attempts - 1, 0), 16), self.lease)
            except AppClosedError:
                return
            except BaseException as exc:
                if self.faults.dead:
                    return
                self._hurried = self._hurried or hurried  # it did not recover: again soon
                if not failing:
                    log.warning(
                        "litedurable: the heartbeat of %s failed (%s); retrying every %.3g s. "
                        "Once it has failed for %g s (the lease), other Apps on this journal "
                        "may take over this App's workflows", self.owner, exc, self.beat,
                        self.lease)
                else:
                    log.debug("litedurable: the heartbeat of %s failed again: %s",
                              self.owner, exc)
                failing = True

    def verdicts(self) -> Verdicts:
        """A judge of owners, from the owner rows as they are now."""
        owners = self.storage.owners()
        if self.faults.defects and self.faults.broken("wall_clock_leases"):  # negative control
            owners = Owners(owners.rows, time.time())
        return Verdicts(owners, self._lease_of)

    def claim(self, pending: list[tuple[str, str, str | None]], runs: Callable[[str], bool],
              running_here: Callable[[str], bool]) -> dict[str, int]:
        """Claim the workflows of ``pending`` (id, name, owner) that this App may take over:
        those it ``runs`` (by name) whose owner is presumed dead, and its own that are not
        ``running_here``. Returns the claimed ids with their recovery attempt counts.

        Ours but not running means its run stopped without recording an outcome (a journal
        error, say): claiming it from ourselves counts the attempt like any recovery, so a run
        that fails the same way every time ends ``exhausted`` instead of looping. Only names
        this App runs: without version gating, another program's workflows on the same file
        are pending too, and claiming them would strand them. The owner rows of the dead
        owners are deleted in the same write, unless they beat again since they were read (an
        owner back from a pause keeps its row, so others do not take its other workflows).
        """
        verdicts = self.verdicts()
        owner = self.owner
        claims = [(wid, holder) for wid, name, holder in pending
                  if runs(name) and ((holder == owner and not running_here(wid))
                                     or (holder != owner and verdicts.gone(holder)))]
        dead = sorted({(o, verdicts.rows[o].heartbeat) for _, o in claims
                       if o is not None and o != owner and o in verdicts.rows})
        return self.storage.claim(claims, owner, forget=dead) if claims else {}

    def _lease_of(self, row: OwnerRow) -> float:
        """How long ``row``'s owner may stay silent: the lease it stated, if it stated a usable
        one (rows written before schema 3 did not), else this App's."""
        lease = row.lease
        if lease is None or not math.isfinite(lease) or lease <= 0:  # not one an App states
            return self.lease
        return lease


class Verdicts:
    """Which owners are presumed dead, judged from one read of the owner rows (``rows``) and
    of the journal's clock (``now``): a heartbeat's age never mixes two machines' clocks.

    ``gone(owner)`` is True if ``owner``'s workflows may be claimed. Each owner is judged once
    (a thousand workflows of one dead owner cost one ``kill(0)``).
    """

    def __init__(self, owners: Owners, lease_of: Callable[[OwnerRow], float]) -> None:
        self.rows = owners.rows
        self._lease_of = lease_of
        self._now = owners.now
        self._namespace = pid_namespace()
        self._cache: dict[str | None, bool] = {}

    def gone(self, owner: str | None) -> bool:
        if owner not in self._cache:
            self._cache[owner] = self._presumed_dead(owner)
        return self._cache[owner]

    def _presumed_dead(self, owner: str | None) -> bool:
        if owner is None:
            return True
        if owner in _LIVE_OWNERS:
            return False
        row = self.rows.get(owner)
        if row is None or self._now - row.heartbeat > self._lease_of(row):
            return True
        # The heartbeat is fresh. Only a pid check that can be trusted may still prove the
        # owner dead: one in the owner's own pid namespace on this host. Elsewhere (another
        # container sharing host name and volume, an old row that does not say) the pid means
        # nothing here, and the lease alone decides.
        if row.host != HOST or row.pid_namespace is None or row.pid_namespace != self._namespace:
            return False
        return row.pid == os.getpid() or not _pid_alive(row.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
