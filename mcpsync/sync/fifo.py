"""``FIFOMutex``: a non-reentrant mutex that grants ownership strictly in arrival order.

Theory of operation
-------------------
``threading.Lock`` promises nothing about who gets it next: a thread that has just released
it can take it straight back while others have been waiting for seconds. Writers to the
registry must not starve, so this mutex hands the lock over explicitly:

* Ownership is an inner ``threading.Lock`` (``_held``), held exactly while some thread
  owns the mutex. A second lock, the *state lock*, guards the queue of waiters and every
  hand-off; it is only ever held for a few bytecodes and never while waiting. Uncontended
  acquires and releases do not take it.
* An uncontended ``acquire`` looks at the queue and, finding it empty, makes one
  non-blocking acquire of ``_held``: no state lock, no clock read. A thread that cannot
  take it that way appends a ``_Waiter`` record to the tail of the deque under the state
  lock, then (still under it, and only if its record is the head) tries ``_held`` once more,
  and otherwise blocks on the record's own lock, which was acquired when the record was
  created. This one-shot signal is the trick ``threading.Condition`` uses; it wakes exactly
  one chosen thread.
* ``release()`` with waiters queued pops the head under the state lock, makes it the owner,
  marks it ``granted`` and releases its signal, leaving ``_held`` held: the mutex is never
  free in between, so a thread arriving at that moment sees it taken and queues behind
  everyone else: no barging.
* ``release()`` with nobody queued frees ``_held`` without the state lock, then looks at
  the queue again. A thread may have queued in between; being the head, it tried ``_held``
  after queueing. If that try came before the unlock it failed, and the second look sees
  the record: the releaser then takes the state lock, takes ``_held`` back if it is still
  free and hands it to whoever is head by then. If the try came after the unlock it either
  succeeded or lost to a newcomer that had looked at the queue before the record was
  appended; that newcomer's own release sees the record and hands over. Either way nobody
  stays queued behind a free mutex (no lost wake-up).
* A newcomer looks at the queue before it tries ``_held``: once a record is queued, every
  thread that calls ``acquire`` afterwards queues behind it. Only calls that overlap may be
  ordered either way, as with any mutex.

Invariant: ``_held`` is free with records queued only inside a release's unlock-and-look
window, which that release closes; no code relies on the state lock to exclude it.

Memory ordering: the waiter appends then tries ``_held``, the releaser unlocks then reads
the queue. With the GIL these steps are sequentially consistent; a free-threaded build
needs a failed ``Lock.acquire`` to order like a barrier, which CPython 3.13t does not
promise (the deque's internal lock on ``append`` provides it there today).

A waiter that times out removes itself from the deque under the state lock, so it can never
be granted afterwards. If the grant and the timeout race (``release()`` granted the record
just as the waiter's wait expired), ``granted`` is authoritative: the waiter owns the mutex
and ``acquire`` returns True. That is the simplest correct answer: passing ownership on
would also be correct, but would report a failure for a wait that in fact succeeded.

Ownership is by thread: only the owning thread may release, and an owner acquiring again
gets ``RuntimeError`` instead of a deadlock. (Thread idents are recycled once a thread
exits; a thread that dies holding the mutex is a bug this class does not try to detect.)
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

WAIT_BUCKETS_S = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)  # upper bounds of the wait histogram

_get_ident = threading.get_ident
_monotonic = time.monotonic


class MutexStats(NamedTuple):
    """A consistent snapshot of a ``FIFOMutex``'s counters (taken under its state lock)."""

    acquisitions: int  # successful acquisitions, contended or not
    contended: int  # acquisitions that blocked in the queue until they were granted
    timeouts: int  # queued waits that gave up without being granted
    total_wait_s: float  # seconds spent queued by the contended acquisitions, summed
    max_wait_s: float  # longest single queued wait of a contended acquisition, seconds
    queue_depth: int  # threads queued right now, not counting the owner
    wait_buckets: tuple[int, ...] = ()  # contended waits per WAIT_BUCKETS_S bound (last: above all)


class _Waiter:
    """One queued ``acquire``: whose it is, when it queued, and its one-shot wake signal."""

    __slots__ = ("ident", "queued_at", "granted", "signal")

    def __init__(self, ident: int, queued_at: float) -> None:
        self.ident = ident
        self.queued_at = queued_at
        # Written only by the releasing thread, under the mutex's state lock; read by the
        # waiter under the same lock when its wait ends without the signal.
        self.granted = False
        # One-shot wake signal: created held; released exactly once, by the thread that
        # grants this waiter ownership (under the state lock); acquired only by the waiter.
        self.signal = threading.Lock()
        self.signal.acquire()


class FIFOMutex:
    """A mutex granted in strict arrival order, with direct hand-off and no barging.

    Not reentrant: the owner acquiring again raises ``RuntimeError``. Only the owner may
    release. Use as a context manager or with ``acquire()``/``release()``.
    """

    __slots__ = ("_state", "_held", "_owner", "_waiters", "_acquisitions", "_contended",
                 "_timeouts", "_total_wait_s", "_max_wait_s", "_wait_buckets")

    def __init__(self) -> None:
        # The state lock: guards changes to the queue and the hand-off. Taken by a release
        # that finds waiters, by a queued acquire, stats() and by a waiter whose wait ended;
        # never held while blocking. Unlocked reads of the queue are only emptiness checks.
        self._state = threading.Lock()
        # Ownership itself: held exactly while some thread owns the mutex (or, for a few
        # bytecodes, by a releaser handing it to a thread that queued during its unlock).
        # Uncontended acquires and releases take and free it without the state lock; with
        # waiters queued, release() leaves it held and hands ownership over, so a thread
        # that calls acquire() after another is queued never gets ahead of it.
        self._held = threading.Lock()
        self._owner: int | None = None  # written only by the owner or by the hand-off
        self._waiters: deque[_Waiter] = deque()  # head = longest waiter = next owner
        self._acquisitions = 0
        self._contended = 0
        self._timeouts = 0
        self._total_wait_s = 0.0
        self._max_wait_s = 0.0
        self._wait_buckets = [0] * (len(WAIT_BUCKETS_S) + 1)  # a histogram of contended waits

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the mutex; True once owned, False if not owned (non-blocking or timed out).

        Blocks (unless ``blocking`` is False) for at most ``timeout`` seconds; ``None`` or
        -1 waits forever. ``timeout=0`` is a try-lock: it never queues. Raises ``ValueError``
        for another negative timeout or a timeout with ``blocking=False`` (as
        ``threading.Lock`` does) and ``RuntimeError`` if the calling thread already owns it.
        """
        if timeout is None:
            # The common call, uncontended: nobody queued and ``_held`` free.
            if not self._waiters and self._held.acquire(False):
                self._owner = _get_ident()
                self._acquisitions += 1
                return True
            timeout = -1
        elif not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        elif timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number, -1 or None")
        me = _get_ident()
        if not self._waiters and self._held.acquire(False):
            # Fast path: nobody queued and free, so taking it is fair. Counters are written
            # by the owner only (or under the state lock during a hand-off).
            self._owner = me
            self._acquisitions += 1
            return True
        if self._owner == me:
            raise RuntimeError("FIFOMutex is not reentrant")
        if not blocking or timeout == 0:
            return False
        waiter = _Waiter(me, _monotonic())
        with self._state:
            # Queue first, then try once more: a release that freed ``_held`` before this
            # append is caught by the try; one that frees it after sees the record (its
            # second look at the queue) and hands over. Only the head may take it.
            self._waiters.append(waiter)
            if self._waiters[0] is waiter and self._held.acquire(False):
                self._waiters.popleft()
                self._owner = me
                self._acquisitions += 1
                return True
        try:
            # A Lock wait has no spurious wake-ups: True means the signal was released, and
            # that only happens after this waiter was granted ownership.
            if timeout == -1:
                signalled = waiter.signal.acquire()
            else:
                signalled = waiter.signal.acquire(True, timeout)
        except BaseException:
            # Interrupted (KeyboardInterrupt in the main thread...): leave no dead record in
            # the queue, and pass on ownership if it had already been granted to us.
            with self._state:
                if waiter.granted:
                    self._release_locked()
                else:
                    self._waiters.remove(waiter)
                    self._timeouts += 1
            raise
        if signalled:
            return True
        with self._state:
            if waiter.granted:
                # Granted just as the wait expired: we own the mutex; report it.
                return True
            self._waiters.remove(waiter)
            self._timeouts += 1
            return False

    def release(self) -> None:
        """Give the mutex to the longest waiter, or free it if nobody waits. Never blocks.

        Raises ``RuntimeError`` if the calling thread is not the owner.
        """
        if self._owner != _get_ident():
            if not self._held.locked():
                raise RuntimeError("release of an unlocked FIFOMutex")
            raise RuntimeError("FIFOMutex released by a thread that does not own it")
        if not self._waiters:
            # Nobody queued: unlock without the state lock. A thread may queue between the
            # look above and the unlock; having queued, it tries ``_held`` (under the state
            # lock) before it blocks. If its try came before this unlock, the second look
            # below sees its record and hands the mutex over on its behalf.
            self._owner = None
            self._held.release()
            if not self._waiters:
                return
            with self._state:
                if self._waiters and self._held.acquire(False):
                    self._release_locked()
                # else: the head took it itself, or a newcomer holds it and will hand over
            return
        with self._state:
            self._release_locked()

    def _release_locked(self) -> None:
        """Hand off to the head waiter or unlock. Caller holds the state lock and owns."""
        if self._waiters:
            waiter = self._waiters.popleft()
            self._owner = waiter.ident
            waiter.granted = True
            waited = _monotonic() - waiter.queued_at
            self._acquisitions += 1
            self._contended += 1
            self._total_wait_s += waited
            if waited > self._max_wait_s:
                self._max_wait_s = waited
            slot = 0
            while slot < len(WAIT_BUCKETS_S) and waited > WAIT_BUCKETS_S[slot]:
                slot += 1
            self._wait_buckets[slot] += 1
            waiter.signal.release()
        else:
            self._owner = None
            self._held.release()

    def locked(self) -> bool:
        """True while some thread owns the mutex (a racy snapshot, as for ``threading.Lock``)."""
        return self._held.locked()

    def stats(self) -> MutexStats:
        """A consistent snapshot of the counters and the current queue depth."""
        with self._state:
            return MutexStats(
                acquisitions=self._acquisitions,
                contended=self._contended,
                timeouts=self._timeouts,
                total_wait_s=self._total_wait_s,
                max_wait_s=self._max_wait_s,
                queue_depth=len(self._waiters),
                wait_buckets=tuple(self._wait_buckets),
            )

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        with self._state:
            state = f"locked owner={self._owner}" if self._held.locked() else "unlocked"
            return f"<FIFOMutex {state} waiters={len(self._waiters)}>"
