"""Simulated power loss and injected I/O faults for SQLite files: an apsw VFS written in Python.

A disk keeps a write for sure only once ``fsync`` has returned; until then the operating system
may lose any of the writes made since the previous sync, keep some and not others, or tear one
part-way. ``Disk`` models exactly that for every file SQLite opens through ``PowerLossVFS`` (the
main database, its ``-wal``, a rollback ``-journal``): each write and truncate goes through to the
real file at once (the page cache, which this and other connections read), and is also kept in a
per-file list of changes not yet followed by ``xSync``. ``Disk.power_cut`` then rewrites every
file as stable storage would hold it after the cut, in one of four ``Mode``s, and deletes the
``-shm`` files (shared memory is never durable; SQLite rebuilds it from the WAL).

The power goes off after the n-th mutating call (write, truncate or sync), or when
``pull_plug`` is called; ``on_cut`` lets the test kill the App at that instant. Nothing the
process does afterwards reaches stable storage (it still sees its own writes, so it winds down
on its own), and ``power_cut`` restores every file as of the cut. The same ``Disk`` injects
faults instead: a ``Fault`` (``SQLITE_IOERR`` or ``SQLITE_FULL``) at the k-th mutating call.
An ``fsync`` that lies (``honest_sync=False``) reports success and makes nothing durable: the
negative control the power-loss suite must catch.

Deleting a file is treated as durable at once (SQLite syncs what it must before it deletes a
journal or WAL), and files opened without a name (temporary files) are not tracked.
"""

from __future__ import annotations

import contextlib
import enum
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import apsw

__all__ = ["CutReport", "Disk", "Fault", "Mode", "PowerLossVFS", "close_leaked", "mounted"]


class Mode(enum.StrEnum):
    """What stable storage holds of the writes not yet synced when the power is cut."""

    LOSE_ALL = "lose_all"  # none of them: only synced data survives
    PREFIX = "prefix"  # the first k of them, in the order they were issued (k random)
    SUBSET = "subset"  # a random subset of them (each kept with probability 1/2)
    TORN = "torn"  # the first k of them, and the next one torn (a random part of its bytes)


@dataclass(frozen=True)
class Fault:
    """Fail the ``at``-th mutating call (write, truncate or sync; 1-based) with ``error``."""

    at: int
    error: type[apsw.Error]  # apsw.IOError (SQLITE_IOERR) or apsw.FullError (SQLITE_FULL)


@dataclass(frozen=True)
class _Change:
    seq: int  # issue order across all files
    path: str
    offset: int  # where a write starts, or the new size for a truncate
    data: bytes | None  # None for a truncate


@dataclass
class _FileState:
    durable: bytearray  # the file as stable storage holds it (as of its last sync)
    pending: list[_Change] = field(default_factory=list)  # changes since that sync


@dataclass(frozen=True)
class CutReport:
    """What a power cut did to the unsynced changes."""

    kept: int
    lost: int
    torn: int


class Disk:
    """Stable storage versus page cache for the files opened through a ``PowerLossVFS``.

    Args:
        cut_after: cut the power once this many mutating calls have been made (None: never).
        on_cut: called once, at the instant the power goes off (e.g. to freeze the App).
        fault: one injected ``Fault`` (independent of the power cut).
        honest_sync: False makes ``xSync`` report success without making anything durable.
    """

    def __init__(
        self,
        *,
        cut_after: int | None = None,
        on_cut: Callable[[], None] | None = None,
        fault: Fault | None = None,
        honest_sync: bool = True,
    ) -> None:
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.fault = fault
        self.honest_sync = honest_sync
        self.calls = 0  # mutating calls that reached the disk so far
        self.log: list[tuple[str, str]] = []  # (write|truncate|sync, file name) of each one
        self.faults_injected = 0
        self.powered = True
        self._files: dict[str, _FileState] = {}
        self._ghosts: set[str] = set()  # files first opened after the cut
        self._seq = 0
        self._lock = threading.RLock()

    # -- what the VFS calls ---------------------------------------------------------------

    def opened(self, path: str) -> None:
        """Start tracking ``path``; a file not tracked yet is durable as it is on disk now."""
        with self._lock:
            if path in self._files:
                return
            if not self.powered:  # created by the dead process: it will not exist after the cut
                self._ghosts.add(path)
                return
            try:
                with open(path, "rb") as f:
                    content = bytearray(f.read())
            except FileNotFoundError:
                content = bytearray()
            self._files[path] = _FileState(content)

    def change(self, path: str, offset: int, data: bytes | None,
               perform: Callable[[], None]) -> None:
        """A write (``data``) or truncate (``data`` None): admit it, do it, remember it."""
        with self._lock:
            recorded = self._admit("write" if data is not None else "truncate", path)
            perform()
            if recorded:
                self._seq += 1
                self._files[path].pending.append(_Change(self._seq, path, offset, data))

    def sync(self, path: str, perform: Callable[[], None]) -> None:
        """An fsync: every pending change of ``path`` becomes durable (unless syncs lie)."""
        with self._lock:
            if not self._admit("sync", path) or not self.honest_sync:
                return
            perform()
            state = self._files[path]
            for change in state.pending:
                _apply(state.durable, change, None)
            state.pending.clear()

    def deleted(self, path: str, perform: Callable[[], None]) -> None:
        """A file deleted: durable at once (before the cut), and no longer tracked."""
        with self._lock:
            perform()
            if self.powered:
                self._files.pop(path, None)

    def _admit(self, what: str, path: str) -> bool:
        """Count a mutating call; True if the disk keeps track of it, False after the cut.

        After the cut the dead process still sees its own writes (they go to the files, as to
        a page cache that is about to vanish) so it stops on its own, but none is recorded:
        ``power_cut`` restores every file as of the cut.
        """
        if not self.powered or path in self._ghosts:
            return False
        if self.cut_after is not None and self.calls >= self.cut_after:
            self.pull_plug()
            return False
        self.calls += 1
        self.log.append((what, os.path.basename(path)))
        fault = self.fault
        if fault is not None and self.calls == fault.at:
            self.faults_injected += 1
            raise fault.error(
                f"injected fault at mutating call {self.calls}: {what} of "
                f"{os.path.basename(path)}"
            )
        return True

    def pull_plug(self) -> None:
        """Cut the power now: from here on nothing reaches the disk."""
        with self._lock:
            if self.powered:
                self.powered = False
                if self.on_cut is not None:
                    self.on_cut()

    # -- the cut --------------------------------------------------------------------------

    def power_cut(self, mode: Mode, rng: random.Random, *, prefix: int | None = None
                  ) -> CutReport:
        """Rewrite every tracked file as stable storage holds it after the cut (now, if the
        power is still on); delete the ``-shm`` files and files created after the cut.

        Call it with every connection closed. Afterwards the files are durable as they are
        (the disk is powered again, with nothing pending). ``prefix`` fixes how many unsynced
        changes ``PREFIX`` and ``TORN`` keep (default: a random number).
        """
        with self._lock:
            self.powered = False
            pending = sorted(
                (c for state in self._files.values() for c in state.pending), key=lambda c: c.seq
            )
            keep, torn = _survivors(pending, mode, rng, prefix)
            images = {path: bytearray(state.durable) for path, state in self._files.items()}
            for change in pending:
                if change.seq in keep:
                    _apply(images[change.path], change, torn.get(change.seq))
            for ghost in self._ghosts:
                if os.path.exists(ghost):
                    os.remove(ghost)
            self._ghosts.clear()
            for path, image in images.items():
                with open(path, "wb") as f:
                    f.write(image)
                    f.flush()
                    os.fsync(f.fileno())
                shm = f"{path}-shm"
                if os.path.exists(shm):
                    os.remove(shm)
                self._files[path] = _FileState(image)
            self.powered = True
            self.cut_after = None
            return CutReport(kept=len(keep) - len(torn), lost=len(pending) - len(keep),
                             torn=len(torn))


def _survivors(
    pending: list[_Change], mode: Mode, rng: random.Random, prefix: int | None
) -> tuple[set[int], dict[int, int]]:
    """The sequence numbers of the changes kept, and for torn ones how many bytes are kept."""
    if mode is Mode.LOSE_ALL or not pending:
        return set(), {}
    if mode is Mode.SUBSET:
        return {c.seq for c in pending if rng.random() < 0.5}, {}
    k = rng.randint(0, len(pending)) if prefix is None else min(prefix, len(pending))
    keep = {c.seq for c in pending[:k]}
    torn: dict[int, int] = {}
    if mode is Mode.TORN and k < len(pending):
        victim = pending[k]
        if victim.data is not None and len(victim.data) > 1:
            keep.add(victim.seq)
            torn[victim.seq] = rng.randint(1, len(victim.data) - 1)
    return keep, torn


def _apply(image: bytearray, change: _Change, prefix: int | None) -> None:
    """Apply a write (only its first ``prefix`` bytes if torn) or a truncate to ``image``."""
    if change.data is None:
        del image[change.offset:]
        image.extend(bytes(max(0, change.offset - len(image))))
        return
    data = change.data if prefix is None else change.data[:prefix]
    end = change.offset + len(data)
    if len(image) < change.offset:
        image.extend(bytes(change.offset - len(image)))
    image[change.offset:end] = data


class _File(apsw.VFSFile):
    """A file of the default VFS whose changes and syncs are reported to the ``Disk``."""

    def __init__(self, disk: Disk, path: str, name: apsw.URIFilename | str, flags: list[int]):
        super().__init__("", name, flags)
        self._disk = disk
        self._path = path
        disk.opened(path)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._disk.change(self._path, offset, bytes(data), lambda: super(_File, self).xWrite(
            data, offset))

    def xTruncate(self, newsize: int) -> None:
        self._disk.change(self._path, newsize, None,
                          lambda: super(_File, self).xTruncate(newsize))

    def xSync(self, flags: int) -> None:
        self._disk.sync(self._path, lambda: super(_File, self).xSync(flags))


class PowerLossVFS(apsw.VFS):
    """The default VFS, with every named file's changes tracked by ``disk``."""

    def __init__(self, name: str, disk: Disk) -> None:
        super().__init__(name, "")
        self.disk = disk

    def xOpen(self, name: apsw.URIFilename | str | None, flags: list[int]) -> apsw.VFSFile:
        if name is None:
            return apsw.VFSFile("", name, flags)
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        return _File(self.disk, path, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.disk.deleted(filename, lambda: super(PowerLossVFS, self).xDelete(filename, syncdir))


@contextmanager
def mounted(disk: Disk, name: str = "powerloss") -> Iterator[str]:
    """Register a ``PowerLossVFS`` over ``disk`` for the block; yields the VFS name.

    Every connection through it must be closed before the block ends (``close_leaked``).
    """
    vfs = PowerLossVFS(name, disk)
    try:
        yield name
    finally:
        vfs.unregister()


def close_leaked(vfs_name: str) -> list[str]:
    """Close connections still open through ``vfs_name``; return their file names.

    An App that was closed must leave none: a non-empty result is a leak to report.
    """
    leaked = [c for c in apsw.connections() if c.open_vfs == vfs_name]
    names = [conn.filename for conn in leaked]
    for conn in leaked:
        with contextlib.suppress(apsw.Error):
            conn.close()
    return names
