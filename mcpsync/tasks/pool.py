"""``TaskPool``: a bounded set of named threads that run tasks, owned and joined."""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("mcpsync.tasks")

TASK_THREADS = 8          # threads running tasks at once; more tasks wait their turn
IDLE_EXIT_S = 60.0        # a thread with nothing to run this long ends (a new one starts on demand)


class TaskPool:
    """Runs ``submit``-ted jobs on at most ``threads`` threads named ``mcpsync-task-<n>``,
    started on demand. A job must not raise (the runner catches everything); ``close``
    stops taking jobs, drops the queued ones (calling their ``drop`` callbacks) and joins
    the threads."""

    def __init__(self, threads: int = TASK_THREADS, *, idle_exit_s: float = IDLE_EXIT_S) -> None:
        if threads < 1:
            raise ValueError("a task pool needs at least one thread")
        self.size = threads
        self.idle_exit_s = idle_exit_s
        # Guards the queue, the thread list, the idle count and `closed`; workers wait on it.
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[tuple[Callable[[], object], Callable[[], object]]] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._serial = 0
        self.closed = False

    def submit(self, job: Callable[[], object], drop: Callable[[], object]) -> None:
        """Queue ``job``; ``drop()`` is called instead if the pool closes before it runs.
        Raises ``RuntimeError`` once the pool is closed."""
        start = None
        with self._cond:
            if self.closed:
                raise RuntimeError("the task pool is closed")
            self._queue.append((job, drop))
            if self._idle:
                self._cond.notify()
            elif len(self._threads) < self.size:
                self._serial += 1
                start = threading.Thread(target=self._work, name=f"mcpsync-task-{self._serial}",
                                         daemon=True)
                self._threads.append(start)
        if start is not None:
            start.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                self._idle += 1
                self._cond.wait_for(lambda: bool(self._queue) or self.closed, self.idle_exit_s)
                self._idle -= 1
                if not self._queue:  # closed, or idle too long: this thread ends
                    self._threads.remove(me)
                    return
                job, _drop = self._queue.popleft()
            try:
                job()
            except Exception:  # the runner catches everything; this is a last line of defence
                log.exception("a task job raised")

    def running(self) -> int:
        with self._cond:
            return len(self._threads) - self._idle

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking jobs, drop the queued ones, wait up to ``timeout`` s for the running
        ones to return. True if every thread ended."""
        with self._cond:
            self.closed = True
            dropped = list(self._queue)
            self._queue.clear()
            threads = list(self._threads)
            self._cond.notify_all()
        for _job, drop in dropped:
            try:
                drop()
            except Exception:
                log.exception("dropping a queued task failed")
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
