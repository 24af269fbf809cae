"""What the worker pool hands around: a ``Ticket`` per submitted task, ``PoolStats``, and
how it starts threads (``StartThread``: injectable, so tests can count, refuse or delay
thread starts)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

QUEUED, RUNNING, CANCELLED = range(3)  # a Ticket's state


class Joinable(Protocol):
    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


StartThread = Callable[[Callable[[], None], str], Joinable]


def start_daemon_thread(target: Callable[[], None], name: str) -> Joinable:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class Ticket:
    """A submitted task: ``fn(arg)`` once a slot and a thread are free."""

    __slots__ = ("fn", "arg", "seq", "queued_at", "state", "expirable")

    def __init__(self, fn: Callable[[Any], None], arg: Any, seq: int, now: float,
                 expirable: bool = True) -> None:
        self.fn = fn
        self.arg = arg
        self.seq = seq
        self.queued_at = now
        self.state = QUEUED
        self.expirable = expirable  # may be withdrawn after the queue timeout (a request)


@dataclass(frozen=True)
class PoolStats:
    slots: int
    busy_slots: int       # slots held now
    threads: int          # worker threads alive (idle, running, parked)
    idle_threads: int
    queued: int           # tasks waiting for a slot or a thread
    resuming: int         # parked workers waiting for their slot back
    started: int          # tasks started since creation
    waited: int           # ... of which had to queue
    overdrafts: int       # parked workers that ran on without a slot (RESUME_MAX_WAIT_S)
    spawn_failures: int
    parked: int           # workers in may_block() that still hold their slot
    steals: int           # slots taken from parked workers for others
