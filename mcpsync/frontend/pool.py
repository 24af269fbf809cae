"""``WorkerPool``: named threads that run whole requests, a few at a time, in arrival order.

Why
---
Under the GIL, dozens of runnable request threads get the interpreter in no particular
order, and with 64 busy connections the slowest 1 % of calls took 20 to 40 times the
median. The pool keeps the number of requests that *run Python* at once to ``slots``
(``Limits.workers``, default 8) and starts the others in the order they arrived.

Slots and threads
-----------------
A task (one complete request, from the dispatcher) needs a slot and a thread. A thread
that runs a task holds a slot, except while it waits: around user code (a tool, resource,
prompt or completion function, a session hook: ``mcpsync.sync.blocking.may_block``), around
a socket wait, and for the rest of a streamed response (``leave_slot``). A waiting worker's
slot goes to the next in line, and the worker queues for one again when its wait ends. So
blocking tools still run side by side: the pool grows an extra thread for the next request
while a worker is parked, up to ``max_threads`` threads in all (the in-flight bound;
``Limits.max_threads``, default 1,024). Threads beyond ``slots`` that stay idle for
``IDLE_THREAD_S`` exit.

Parking is deferred: most user code (an echo, a dict lookup) returns within microseconds,
and handing the slot over and queueing for it again would cost two thread switches each
time. So a worker entering ``may_block()`` keeps its slot, marked *parked*; the slot is
taken from it (``_steal_locked``) only once somebody waits for one and the worker has been
parked for ``PARK_GRACE_S``. The *reclaimer* (the dispatcher, which loops anyway: it calls
``reclaim`` each turn and sleeps no longer than the next steal is due) does this; a worker
queueing for a slot steals for itself; while no reclaimer is awake to come back in time, a
worker that parks with somebody waiting gives its slot up at once, and without any
reclaimer at all a waiter takes a parked slot whatever its age.

The pool also remembers, per ``may_block(key)`` (a tool's function), whether that code's
last block outlasted the grace: then its next one hands the slot on at once instead of
making others wait out the grace (a tool that sleeps 20 ms would otherwise cost every
waiter half a millisecond).

Order: arrival order of the requests. Queued tasks and parked workers that want their
slot back are ordered by their request's sequence number (a resuming request is older than
every task that arrived after it); a freed slot goes to the oldest (a task only if a
thread is free or may be started), so nobody barges. The thread that ends a task takes the
next queued task itself, with its slot: under load workers loop without a thread switch.

Locks: ``_lock`` guards every field of the pool and of its ``_Worker``s (slot flags, task
hand-over, the queues, counters). It is held for a few operations, never across a task,
a wait or a thread start; each worker sleeps on its own ``signal`` lock, released by
whoever hands it a task or a slot (under ``_lock``). The only other lock touched under it
is such a ``signal``: released, or taken back by its own worker right after it was
released (``_task_done``, ``_idle_wait``: never a wait).

A worker that has waited ``RESUME_MAX_WAIT_S`` for its slot back runs without one (counted
as an overdraft in ``stats()``): a slot holder stuck in a wait nobody marked then costs the
others that long at most, and can never deadlock them. Queued tasks are bounded by the
dispatcher instead (``Limits.queue_timeout``: 503).

Thread creation is injectable (``start_thread``), so tests can count, refuse or delay it.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Hashable

from ..sync.blocking import current_hook, install_hook
from .ticket import (CANCELLED as _CANCELLED, QUEUED as _QUEUED, RUNNING as _RUNNING,
                     Joinable, PoolStats, StartThread, Ticket, start_daemon_thread)

log = logging.getLogger("mcpsync.http")

IDLE_THREAD_S = 30.0       # an idle thread beyond `slots` exits after this long
RESUME_MAX_WAIT_S = 1.0    # a parked worker waiting longer for its slot runs without one
PARK_GRACE_S = 0.0005      # a parked worker keeps its slot this long even if others wait
LONG_KEYS_MAX = 1024       # code (keys) remembered to block longer than the grace
SPAWN_BACKOFF_S = 1.0      # after a failed thread start, none is tried for this long


_NEXT_REQUEST: Hashable = ("mcpsync", "next-request")  # the block key of `waiting_idle`


class _Worker:
    """One pool thread, and the hook installed on it (``may_block()`` on that thread)."""

    __slots__ = ("pool", "name", "signal", "task", "has_slot", "paused", "parked_at", "depth",
                 "thread", "key", "block_key", "blocked_at")

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self.pool = pool
        self.name = name
        # Created held; released (under the pool's _lock) by whoever hands this worker a
        # task or its slot back; acquired only by the worker's own thread.
        self.signal = threading.Lock()
        self.signal.acquire()
        self.task: Ticket | None = None
        self.has_slot = False
        self.paused = False     # lost its slot inside may_block(); takes one back on exit
        self.parked_at = 0.0    # in may_block() still holding its slot: since when (else 0)
        self.depth = 0          # nesting of may_block() on this thread
        self.thread: Joinable | None = None
        self.key: Hashable = None        # set by may_block(key) just before __enter__
        self.block_key: Hashable = None  # the outermost block's key ...
        self.blocked_at = 0.0            # ... and when it began

    @property
    def seq(self) -> int:
        """Its request's place in the arrival order."""
        return self.task.seq if self.task is not None else -1

    def __lt__(self, other: _Worker) -> bool:  # (for the resume heap: ties never happen)
        return self.seq < other.seq

    def __enter__(self) -> None:
        self.depth += 1
        if self.depth == 1 and self.has_slot:
            self.block_key = self.key
            self.pool._park(self)

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if self.depth == 0 and (self.parked_at or self.paused):
            self.pool._resume(self)


class IdleWait:
    """See ``WorkerPool.waiting_idle``; used by one worker thread."""

    __slots__ = ("pool", "worker", "kept")

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        worker = current_hook()
        self.worker = worker if type(worker) is _Worker and worker.pool is pool else None
        self.kept = True

    def __enter__(self) -> IdleWait:
        worker = self.worker
        if worker is not None and worker.depth == 0 and worker.has_slot:
            worker.block_key = _NEXT_REQUEST
            self.pool._park(worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        worker = self.worker
        if worker is None or worker.depth:
            return
        pool = self.pool
        with pool._lock:
            if worker.parked_at:  # nobody needed the slot: keep it
                del pool._parked[worker]
                worker.parked_at = 0.0
            elif worker.paused:   # taken: run on without one, and hand the work on
                worker.paused = False
                pool._returning -= 1
                self.kept = False


class WorkerPool:
    """See the module docstring. ``submit`` is called by the dispatcher; the rest of the
    API by anyone."""

    def __init__(self, slots: int, max_threads: int, *,
                 start_thread: StartThread = start_daemon_thread,
                 name_prefix: str = "mcpsync-worker") -> None:
        if slots < 1 or max_threads < slots:
            raise ValueError("a pool needs 1 <= slots <= max_threads")
        self.slots = slots
        self.max_threads = max_threads
        self._start_thread = start_thread
        self._prefix = name_prefix
        self._names = itertools.count(1)
        self._seqs = itertools.count()
        # Guards everything below and every _Worker's task/has_slot/paused/seq (see the
        # module docstring); never held across a task, a wait or a thread start.
        self._lock = threading.Lock()
        self._free = slots
        self._tasks: deque[Ticket] = deque()
        self._resumers: list[_Worker] = []   # a heap by request sequence: oldest first
        self._parked: dict[_Worker, None] = {}  # holding their slot in may_block(), oldest first
        # Keys whose last block outlasted the grace. Workers update it without _lock, one
        # dict operation at a time (atomic under the GIL); a lost update costs one grace.
        self._long: dict[Hashable, None] = {}
        self._reclaimer = False              # a reclaimer (the dispatcher) calls reclaim()
        self.reclaimer_awake = False         # ... and is not asleep: set by the reclaimer
        self._idle: list[_Worker] = []       # LIFO: the most recently busy thread runs next
        self._workers: set[_Worker] = set()  # alive (counted from the start request on)
        self._exited: list[Joinable] = []    # threads of workers that left, for joining
        self._queued = 0                     # tasks in _tasks not cancelled
        self._closing = False
        self._spawn_after = 0.0
        self._started = self._waited = self._overdrafts = self._spawn_failures = 0
        self._steals = 0
        self._returning = 0                  # idle waiters whose slot was taken (see IdleWait)
        self._starts: list[_Worker] = []     # threads to start once _lock is released

    # --- the dispatcher's side -------------------------------------------------------------

    def submit(self, fn: Callable[[Any], None], arg: Any = None, *,
               expirable: bool = True) -> Ticket:
        """Run ``fn(arg)`` on a worker thread once a slot is free, in submission order.
        ``expirable``: ``expire`` may withdraw it (a request, answered 503 instead); work
        that must run (a message already admitted) is not. Never blocks. RuntimeError
        after ``shutdown``."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the pool is shut down")
            ticket = Ticket(fn, arg, next(self._seqs), time.monotonic(), expirable)
            self._tasks.append(ticket)
            self._queued += 1
            starts = self._grant_locked()
            if ticket.state == _QUEUED:
                self._waited += 1
                if self._parked:
                    self._steal_locked(ticket.queued_at)
                    starts += self._starts
                    self._starts = []
        self._start(starts)
        return ticket

    def prestart(self) -> None:
        """Start the ``slots`` threads the pool keeps (idle until tasks come), so that
        the thread count does not creep up with the first requests."""
        with self._lock:
            starts = []
            while len(self._workers) < self.slots and not self._closing:
                worker = _Worker(self, f"{self._prefix}-{next(self._names)}")
                self._workers.add(worker)
                self._idle.append(worker)
                starts.append(worker)
        self._start(starts)

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a task that has not started; False if it has (or was withdrawn)."""
        with self._lock:
            if ticket.state != _QUEUED:
                return False
            ticket.state = _CANCELLED
            self._queued -= 1
            return True

    def expire(self, queued_before: float) -> list[Any]:
        """Withdraw the tasks queued before ``queued_before`` (monotonic) that have not
        started, oldest first; returns their ``arg``s (the dispatcher answers them 503)."""
        expired: list[Any] = []
        with self._lock:
            tasks = self._tasks
            kept: list[Ticket] = []
            while tasks and tasks[0].queued_at < queued_before:
                ticket = tasks.popleft()
                if ticket.state != _QUEUED:
                    continue
                if not ticket.expirable:
                    kept.append(ticket)  # it waits on, in its place
                    continue
                ticket.state = _CANCELLED
                self._queued -= 1
                expired.append(ticket.arg)
            tasks.extendleft(reversed(kept))
        return expired

    @property
    def queued(self) -> int:
        """Tasks waiting now (a hint: read without the lock)."""
        return self._queued

    @property
    def spare(self) -> bool:
        """Nobody waits for a slot or a thread now, and an idle thread is left for whoever
        comes next (a hint: read without the lock). A worker may then wait a moment for
        more work of its own (``waiting_idle``) without making the pool grow a thread."""
        return not self._queued and not self._resumers and bool(self._idle)

    # --- a worker's side ---------------------------------------------------------------------

    def leave_slot(self) -> None:
        """The calling worker gives up its slot for the rest of its task (a streamed
        response: its thread may now wait for events and for the peer). No-op elsewhere."""
        worker = current_hook()
        if type(worker) is _Worker and worker.pool is self and worker.has_slot:
            with self._lock:
                if worker.parked_at:
                    del self._parked[worker]
                    worker.parked_at = 0.0
                worker.has_slot = False
                self._free += 1
                starts = self._grant_locked()
            self._start(starts)

    def waiting_idle(self) -> IdleWait:
        """``with pool.waiting_idle() as wait:`` around a short wait of the calling worker
        for more work of its own (its connection's next request). The worker keeps its slot
        unless somebody needs it meanwhile (taken as from a parked worker); then it does not
        queue for it again: ``wait.kept`` is False and the worker should hand its work on
        (to the back of the line) instead of doing it."""
        return IdleWait(self)

    # --- parking (may_block) and the reclaimer ---------------------------------------------------

    def attach_reclaimer(self) -> None:
        """Somebody (the dispatcher) will call ``reclaim`` while anyone waits for a slot,
        and keep ``reclaimer_awake`` true while it will do so within ``PARK_GRACE_S``."""
        self._reclaimer = True

    def _park(self, worker: _Worker) -> None:
        now = worker.blocked_at = time.monotonic()
        try:
            slow = worker.block_key in self._long  # (a dict read: no lock needed)
        except TypeError:  # an unhashable key: no history
            worker.block_key = None
            slow = False
        with self._lock:
            if not slow and (self.reclaimer_awake or not self._waiting_locked()):
                worker.parked_at = now  # keep the slot; see _steal_locked
                self._parked[worker] = None
                return
            self._unslot_locked(worker)  # nobody would take the slot in time: give it up now
            starts = self._grant_locked()
        self._start(starts)

    def _waiting_locked(self) -> bool:
        """Somebody could use a slot now: a resuming worker, or a task that has a thread."""
        if self._resumers:
            return True
        tasks = self._tasks
        while tasks and tasks[0].state == _CANCELLED:
            tasks.popleft()
        return bool(tasks) and (bool(self._idle) or self._may_spawn_locked())

    def _steal_locked(self, now: float) -> float | None:
        """Take the slots of workers parked long enough (any age without a reclaimer) while
        somebody waits; hand them on. Returns when the next steal is due, or None."""
        while self._parked and self._waiting_locked():
            worker = next(iter(self._parked))
            due = worker.parked_at + PARK_GRACE_S
            if self._reclaimer and due > now:
                return due
            del self._parked[worker]
            worker.parked_at = 0.0
            self._unslot_locked(worker)
            self._steals += 1
            self._starts += self._grant_locked()
        return None

    def _unslot_locked(self, worker: _Worker) -> None:
        """Take the slot of ``worker``, which is in ``may_block()`` (or ``waiting_idle``)."""
        worker.has_slot = False
        worker.paused = True
        if worker.block_key is _NEXT_REQUEST:  # it will be idle within its short wait
            self._returning += 1
        self._free += 1

    def reclaim(self, now: float) -> float | None:
        """The reclaimer's turn: steal what is due; when the next steal will be due."""
        with self._lock:
            due = self._steal_locked(now)
            starts, self._starts = self._starts, []
        self._start(starts)
        return due

    @property
    def contended(self) -> bool:
        """Somebody may be waiting for a slot while a worker is parked (a hint, no lock)."""
        return bool(self._parked) and bool(self._tasks or self._resumers)

    def _resume(self, worker: _Worker) -> None:
        """The end of ``may_block()``: keep the slot if nobody took it, else queue for one in
        the request's arrival order. Blocks (a bounded wait)."""
        now = time.monotonic()
        deadline = now + RESUME_MAX_WAIT_S
        key = worker.block_key
        if key is _NEXT_REQUEST:
            pass
        elif now - worker.blocked_at >= PARK_GRACE_S:  # next time, hand the slot on at once
            if key not in self._long:
                if len(self._long) >= LONG_KEYS_MAX:
                    self._long.clear()
                self._long[key] = None
        elif key in self._long:
            self._long.pop(key, None)
        with self._lock:
            if worker.parked_at:  # nobody needed it: no hand-over, no switch
                del self._parked[worker]
                worker.parked_at = 0.0
                return
            worker.paused = False
            heapq.heappush(self._resumers, worker)
            self._starts += self._grant_locked()
            due = self._steal_locked(time.monotonic())
            starts, self._starts = self._starts, []
        self._start(starts)
        while True:
            now = time.monotonic()
            wait = deadline - now if due is None else min(due, deadline) - now
            if worker.signal.acquire(True, max(wait, 0.0)):
                return
            with self._lock:
                if worker.has_slot:  # handed a slot just as the wait expired: it is ours
                    break
                if time.monotonic() >= deadline:
                    self._resumers.remove(worker)
                    heapq.heapify(self._resumers)
                    self._overdrafts += 1
                    return
                due = self._steal_locked(time.monotonic())  # the reclaimer is late: do it
                starts, self._starts = self._starts, []
            self._start(starts)
        worker.signal.acquire()  # released under the lock already: returns at once

    def _run(self, worker: _Worker) -> None:
        install_hook(worker)
        try:
            while True:
                ticket = worker.task
                if ticket is not None:
                    try:
                        ticket.fn(ticket.arg)
                    except Exception:  # the task's own guard failed: keep the thread
                        log.exception("worker task failed")
                    if not self._task_done(worker):
                        return
                elif not self._idle_wait(worker):
                    return
        finally:
            install_hook(None)

    def _task_done(self, worker: _Worker) -> bool:
        """After a task: hand the slot on, or take the next task with it. False: exit."""
        with self._lock:
            worker.task = None
            worker.depth = 0
            worker.paused = False
            if worker.parked_at:  # (may_block() always ends first; kept consistent anyway)
                del self._parked[worker]
                worker.parked_at = 0.0
            if worker.has_slot:
                worker.has_slot = False
                self._free += 1
            if self._closing:
                self._retire_locked(worker)
                return False
            self._idle.append(worker)
            starts = self._grant_locked()
            if worker.task is not None:  # it took the next task itself: no wait, no switch
                worker.signal.acquire()
        self._start(starts)
        return True

    def _idle_wait(self, worker: _Worker) -> bool:
        """Wait for a task; False when the thread should exit."""
        while True:
            if worker.signal.acquire(True, IDLE_THREAD_S):
                with self._lock:
                    if worker.task is not None:
                        return True
                    if self._closing:
                        self._retire_locked(worker)
                        return False
                continue
            with self._lock:
                if worker.task is not None:  # handed one as the wait expired
                    worker.signal.acquire()
                    return True
                if self._closing or len(self._workers) > self.slots:
                    if worker in self._idle:  # (shutdown() empties the list itself)
                        self._idle.remove(worker)
                    self._retire_locked(worker)
                    return False

    def _retire_locked(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        if worker.thread is not None:
            self._exited.append(worker.thread)

    # --- granting slots ------------------------------------------------------------------------

    def _grant_locked(self) -> list[_Worker]:
        """Hand free slots to the longest waiters (see the module docstring). Returns new
        workers whose threads the caller starts once the lock is released."""
        starts: list[_Worker] = []
        tasks = self._tasks
        while self._free:
            while tasks and tasks[0].state == _CANCELLED:
                tasks.popleft()
            resumer = self._resumers[0] if self._resumers else None
            runnable = bool(tasks) and (bool(self._idle) or self._may_spawn_locked())
            if resumer is not None and (not runnable or resumer.seq < tasks[0].seq):
                heapq.heappop(self._resumers)
                self._free -= 1
                resumer.has_slot = True
                resumer.signal.release()
                continue
            if not runnable:
                break
            ticket = tasks.popleft()
            ticket.state = _RUNNING
            self._queued -= 1
            self._free -= 1
            self._started += 1
            if self._idle:
                worker = self._idle.pop()
                worker.task = ticket
                worker.has_slot = True
                worker.signal.release()
            else:  # a new thread, started by the caller; it begins with this task
                worker = _Worker(self, f"{self._prefix}-{next(self._names)}")
                worker.task = ticket
                worker.has_slot = True
                self._workers.add(worker)
                starts.append(worker)
        return starts

    def _may_spawn_locked(self) -> bool:
        """A new thread may start: under the bound, not backing off, and no thread is about
        to be idle anyway (a worker whose wait for its connection's next request lost its
        slot: it hands the request on and comes back within ``next_request_wait``)."""
        return (not self._closing and len(self._workers) < self.max_threads
                and not self._returning and time.monotonic() >= self._spawn_after)

    def _start(self, starts: list[_Worker]) -> None:
        for worker in starts:
            try:
                thread = self._start_thread(functools.partial(self._run, worker), worker.name)
            except Exception as exc:  # e.g. RuntimeError: can't start new thread
                log.error("cannot start a worker thread: %s", exc)
                self._unspawn(worker)
                continue
            with self._lock:
                worker.thread = thread
                if worker not in self._workers:  # it ran its task and left already
                    self._exited.append(thread)

    def _unspawn(self, worker: _Worker) -> None:
        """A worker whose thread did not start: its task goes back to the head of the queue."""
        with self._lock:
            self._workers.discard(worker)
            if worker in self._idle:  # prestarted: it had no task yet
                self._idle.remove(worker)
                self._spawn_failures += 1
                return
            self._spawn_failures += 1
            self._spawn_after = time.monotonic() + SPAWN_BACKOFF_S
            ticket = worker.task
            worker.task = None
            worker.has_slot = False
            self._free += 1
            self._started -= 1
            if ticket is not None:
                ticket.state = _QUEUED
                self._queued += 1
                self._tasks.appendleft(ticket)
            starts = self._grant_locked()  # idle threads may take it; no spawn for a while
        self._start(starts)

    # --- observing and stopping ----------------------------------------------------------------

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(slots=self.slots, busy_slots=self.slots - self._free,
                             threads=len(self._workers), idle_threads=len(self._idle),
                             queued=self._queued, resuming=len(self._resumers),
                             started=self._started, waited=self._waited,
                             overdrafts=self._overdrafts, spawn_failures=self._spawn_failures,
                             parked=len(self._parked), steals=self._steals)

    def shutdown(self, timeout: float) -> bool:
        """Refuse new tasks, drop queued ones, let running tasks finish and join every
        thread, waiting up to ``timeout`` in all. True if every thread has exited."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            for ticket in self._tasks:
                if ticket.state == _QUEUED:
                    ticket.state = _CANCELLED
            self._tasks.clear()
            self._queued = 0
            for worker in self._idle:
                worker.signal.release()
            self._idle.clear()
            # Parked workers waiting for a slot: let them on, there is no more order to keep.
            for resumer in self._resumers:
                resumer.signal.release()
            self._resumers.clear()
        me = threading.current_thread()
        while True:
            with self._lock:
                threads = [w.thread for w in self._workers if w.thread is not None]
                threads += self._exited
                self._exited = []
            threads = [t for t in threads if t is not me and t.is_alive()]
            if not threads:
                return True
            for thread in threads:
                thread.join(max(deadline - time.monotonic(), 0.0))
            if time.monotonic() >= deadline:
                return not any(t.is_alive() for t in threads)
