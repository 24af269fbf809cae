"""``KeyedMutex``: one ``FIFOMutex`` per key, created on demand and dropped when unused.

Theory of operation
-------------------
A dict maps each key in use to an entry: its ``FIFOMutex`` and a reference count of the
threads holding or waiting for it. One internal ``threading.Lock`` (the *map lock*) guards
the dict and every count.

* ``acquire(key)`` takes the map lock, finds or creates the entry, counts itself in, drops
  the map lock and only then waits on the entry's mutex. So different keys never block each
  other, and an entry cannot vanish under a thread that counted itself in.
* ``release(key)`` and a wait that fails (timeout, interrupt) count themselves out under
  the map lock; the count reaching 0 removes the entry. The dict therefore holds exactly the
  keys held or waited on, and memory does not grow with the number of distinct keys seen.

Lock order: the map lock may be held while a key's mutex is *released* (that never blocks),
never while one is acquired; a mutex's state lock is never held while taking the map lock.
"""
from __future__ import annotations

import threading
from typing import Generic, Hashable, TypeVar

from mcpsync.errors import MutexTimeout

from .fifo import FIFOMutex

K = TypeVar("K", bound=Hashable)


class _Entry:
    """A key's mutex and the number of threads holding or waiting for it (map lock guards)."""

    __slots__ = ("mutex", "refs")

    def __init__(self) -> None:
        self.mutex = FIFOMutex()
        self.refs = 0


class KeyedMutex(Generic[K]):
    """Mutual exclusion per key: ``with keyed.hold(key, timeout=5.0): ...``.

    Each key behaves as a ``FIFOMutex`` (FIFO, not reentrant, owner-only release); holders
    of different keys never wait for each other.
    """

    __slots__ = ("_lock", "_entries")

    def __init__(self) -> None:
        # The map lock: guards _entries and every _Entry.refs. Taken briefly by acquire(),
        # release(), locked() and __len__(); never held while waiting for a key's mutex.
        self._lock = threading.Lock()
        self._entries: dict[K, _Entry] = {}

    def acquire(self, key: K, timeout: float | None = None) -> bool:
        """Take ``key``'s mutex; True once owned, False on timeout.

        Blocks for at most ``timeout`` seconds (``None`` waits forever; 0 only tries).
        Raises ``ValueError`` for a negative timeout and ``RuntimeError`` if the calling
        thread already holds ``key``.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.refs += 1
        acquired = False
        try:
            acquired = entry.mutex.acquire(True, timeout)
        finally:
            if not acquired:
                self._count_out(key, entry)
        return acquired

    def release(self, key: K) -> None:
        """Release ``key``, handing it to its longest waiter if any. Never blocks.

        Raises ``RuntimeError`` if the calling thread does not hold ``key``.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                raise RuntimeError(f"release of key {key!r}, which nobody holds")
            entry.mutex.release()  # raises RuntimeError, changing nothing, for a non-owner
            entry.refs -= 1
            if entry.refs == 0:
                del self._entries[key]

    def hold(self, key: K, timeout: float | None = None) -> _Hold[K]:
        """A context manager holding ``key``; entering blocks up to ``timeout`` seconds.

        Entering raises ``MutexTimeout`` if the key could not be taken in time.
        """
        return _Hold(self, key, timeout)

    def locked(self, key: K) -> bool:
        """True while some thread holds ``key`` (a snapshot)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.mutex.locked()

    def __len__(self) -> int:
        """The number of keys currently held or waited on."""
        with self._lock:
            return len(self._entries)

    def _count_out(self, key: K, entry: _Entry) -> None:
        """Drop a waiter that will not hold ``key``; remove the entry if it was the last."""
        with self._lock:
            entry.refs -= 1
            if entry.refs == 0:
                del self._entries[key]


class _Hold(Generic[K]):
    """The context manager returned by ``KeyedMutex.hold``; single use."""

    __slots__ = ("_keyed", "_key", "_timeout")

    def __init__(self, keyed: KeyedMutex[K], key: K, timeout: float | None) -> None:
        self._keyed = keyed
        self._key = key
        self._timeout = timeout

    def __enter__(self) -> None:
        if not self._keyed.acquire(self._key, self._timeout):
            raise MutexTimeout(f"timed out after {self._timeout} s waiting for key {self._key!r}")

    def __exit__(self, *exc_info: object) -> None:
        self._keyed.release(self._key)
