"""``CpuGate``: FIFO admission to the CPU-bound part of request handling.

Why
---
Under the GIL, dozens of request threads that all want to run Python get it in no
particular order: a thread returning from a system call can take the GIL ahead of threads
that have waited for milliseconds, again and again. With 64 busy keep-alive connections
that made the slowest 1 % of echo calls 20 to 40 times slower than the median. The gate
lets a few threads (``CPU_GATE_SLOTS``) at a time into the CPU-bound part of a request and
queues the rest in arrival order, each sleeping on its own lock, out of the GIL's way. A
few rather than one: every hand-over costs a thread switch, and with four slots a server
whose threads mostly wait (on tools, on the network) rarely queues at all, while one with
dozens of runnable threads still serves them in turn.

Rules
-----
* A thread enters the gate holding no other lock (the front end does it once it has a
  whole request head, and again after a read of the body), so a thread waiting for the
  gate can never hold something a holder needs. In lock-order terms the gate is first.
* Whoever may block leaves first: ``leave_gate()`` before a socket read and before
  streaming a response; a send holding the gate tries once without blocking and leaves
  only if the kernel cannot take the bytes; ``gate_paused()`` around user code
  (tool, resource, prompt and completion functions, which may sleep, call out or wait for
  an elicitation answer): the thread queues again when the function returns, so encoding
  the result is in turn too. Hooks that end a session or a call just leave.
* A safety net for blocking nobody foresaw: a waiter gives up after ``max_wait_s`` and
  runs ungated (counted as a timeout in ``stats()``), so a stuck holder costs others at
  most that much and never deadlocks them.

Which gate a thread holds is thread-local, so code far from the front end (the server's
tool dispatch) can leave it without knowing about it; with no gate held that is a no-op.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from .fifo import MutexStats

CPU_GATE_SLOTS = 4           # threads in the CPU-bound section at once
CPU_GATE_MAX_WAIT_S = 0.05   # a waiter runs ungated after this long (holders that blocked)

_held = threading.local()  # .gate: the CpuGate whose slot this thread holds, if any


class _Waiter:
    __slots__ = ("signal", "queued_at")

    def __init__(self) -> None:
        # One-shot wake signal, created held; released once, by the thread handing over a
        # slot (under the gate's lock); acquired only by the waiting thread.
        self.signal = threading.Lock()
        self.signal.acquire()
        self.queued_at = time.monotonic()


class CpuGate:
    """``slots`` threads at a time through the CPU-bound section; the rest in arrival order.

    A freed slot passes straight to the longest waiter (never free while someone waits, so
    a newcomer cannot barge). A waiter whose wait expires leaves the queue and runs ungated,
    unless the hand-over raced the expiry, in which case it holds the slot."""

    __slots__ = ("_lock", "_free", "_waiters", "max_wait_s", "_admitted", "_queued",
                 "_timeouts", "_wait_s", "_max_wait_s")

    def __init__(self, slots: int = CPU_GATE_SLOTS, max_wait_s: float = CPU_GATE_MAX_WAIT_S) -> None:
        if slots < 1:
            raise ValueError("a CpuGate needs at least one slot")
        # Guards every field below; held for a few bytecodes, never while waiting.
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: deque[_Waiter] = deque()  # head = longest waiter = next holder
        self.max_wait_s = max_wait_s
        self._admitted = 0
        self._queued = 0
        self._timeouts = 0
        self._wait_s = 0.0
        self._max_wait_s = 0.0

    def enter(self) -> bool:
        """Wait for a slot (at most ``max_wait_s``); True if this thread now holds one.
        A thread already holding a slot (of any gate) does not take another."""
        if getattr(_held, "gate", None) is not None:
            return False
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                self._admitted += 1
                _held.gate = self
                return True
            waiter = _Waiter()
            self._waiters.append(waiter)
        if not waiter.signal.acquire(True, self.max_wait_s):
            with self._lock:
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # handed a slot just as the wait expired: it is ours
                    pass
                else:
                    self._timeouts += 1
                    return False
        _held.gate = self
        return True

    def _release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            waiter = self._waiters.popleft()
            waited = time.monotonic() - waiter.queued_at
            self._admitted += 1
            self._queued += 1
            self._wait_s += waited
            if waited > self._max_wait_s:
                self._max_wait_s = waited
            waiter.signal.release()

    def stats(self) -> MutexStats:
        """Counters: ``acquisitions`` admitted, ``contended`` admitted after queueing,
        ``timeouts`` waits that ran ungated, seconds queued, the queue's depth now."""
        with self._lock:
            return MutexStats(acquisitions=self._admitted, contended=self._queued,
                              timeouts=self._timeouts, total_wait_s=self._wait_s,
                              max_wait_s=self._max_wait_s, queue_depth=len(self._waiters))


class gate_paused:
    """``with gate_paused(): call_user_code()``: give up the slot this thread holds (if
    any) for the block and queue for one again afterwards (at the back: fair to others)."""

    __slots__ = ("_gate",)

    def __enter__(self) -> None:
        self._gate = gate = getattr(_held, "gate", None)
        if gate is not None:
            _held.gate = None
            gate._release()

    def __exit__(self, *exc_info: object) -> None:
        if self._gate is not None:
            self._gate.enter()


def held_gate() -> bool:
    """Whether the calling thread holds a slot of a gate."""
    return getattr(_held, "gate", None) is not None


def leave_gate() -> None:
    """Give up the slot the calling thread holds, if any (before it may block)."""
    gate = getattr(_held, "gate", None)
    if gate is not None:
        _held.gate = None
        gate._release()
