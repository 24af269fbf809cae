"""``CpuGate``: FIFO admission to the CPU-bound part of request handling.

Why
---
Under the GIL, dozens of request threads that all want to run Python get it in no
particular order: a thread returning from a system call can take the GIL ahead of threads
that have waited for milliseconds, again and again. With 64 busy keep-alive connections
that made the slowest 1 % of echo calls 20 to 40 times slower than the median. The gate
puts the parse-and-dispatch part of each request in a queue (a ``FIFOMutex``): one thread
at a time, in arrival order; the others sleep on their own lock, out of the GIL's way.

Rules
-----
* A thread enters the gate holding no other lock (the front end does it once it has a
  whole request head, and again after a read of the body), so a thread waiting for the gate can never hold something the
  gate's holder needs. In lock-order terms the gate is always first.
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

from .fifo import FIFOMutex, MutexStats

CPU_GATE_MAX_WAIT_S = 0.05  # a waiter runs ungated after this long (a holder that blocked)

_held = threading.local()  # .gate: the CpuGate this thread holds, if any


class CpuGate:
    """One thread at a time through the CPU-bound section, in arrival order."""

    __slots__ = ("_mutex", "max_wait_s")

    def __init__(self, max_wait_s: float = CPU_GATE_MAX_WAIT_S) -> None:
        self._mutex = FIFOMutex()  # the queue; held by the thread in the section
        self.max_wait_s = max_wait_s

    def enter(self) -> bool:
        """Wait for the section (at most ``max_wait_s``); True if this thread now holds it.
        A thread already holding a gate does not enter another."""
        if getattr(_held, "gate", None) is not None:
            return False
        if self._mutex.acquire(True, self.max_wait_s):
            _held.gate = self
            return True
        return False

    def stats(self) -> MutexStats:
        """The queue's counters; ``timeouts`` are the waits that ran ungated."""
        return self._mutex.stats()


class gate_paused:
    """``with gate_paused(): call_user_code()``: leave the gate this thread holds (if any)
    for the block and queue for it again afterwards (at the back: fair to the others)."""

    __slots__ = ("_gate",)

    def __enter__(self) -> None:
        self._gate = gate = getattr(_held, "gate", None)
        if gate is not None:
            _held.gate = None
            gate._mutex.release()

    def __exit__(self, *exc_info: object) -> None:
        if self._gate is not None:
            self._gate.enter()


def held_gate() -> bool:
    """Whether the calling thread holds a gate."""
    return getattr(_held, "gate", None) is not None


def leave_gate() -> None:
    """Leave the gate the calling thread holds, if any (before it may block)."""
    gate = getattr(_held, "gate", None)
    if gate is not None:
        _held.gate = None
        gate._mutex.release()
