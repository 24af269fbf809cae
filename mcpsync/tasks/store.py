"""Task records and where they live: the ``TaskStore`` interface and its in-memory default.

Theory of operation
-------------------
A task record is plain JSON data (``TaskRecord``), so a store may keep it anywhere: this
process's memory (``MemoryTaskStore``) or a shared database, where a task created by one
process is read, updated or cancelled by another. Records are values: nobody mutates a
record they read; a writer builds a new dict and swaps it in with ``replace``, a
compare-and-set on the record's ``revision``. Two writers racing on one task (a cancel and
the tool's completion, an input answer and a cancel) therefore never both win: the loser
re-reads and decides again (``mcpsync.tasks.runtime.TaskManager._change``).

Every successful write is announced to the callbacks given to ``watch``, which is how the
thread running a task learns of a cancel or of new input answers: in memory, a direct
call after the write (no lock held); a shared store would publish the change instead.

Limits are checked in ``create``, atomically with the insert: a principal's unfinished
tasks, and all records kept (finished ones stay readable until their TTL).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Protocol

from ..errors import McpError

#: A task record: JSON-able fields (see ``new_record``).
TaskRecord = dict[str, Any]

WORKING = "working"
INPUT_REQUIRED = "input_required"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

TASK_LIMIT_CODE = -32003  # implementation-defined JSON-RPC server error: too many tasks


class TaskLimitError(McpError):
    """Creating a task would pass a limit (per principal, or in total)."""

    code = TASK_LIMIT_CODE


def new_record(task_id: str, principal: str | None, *, now: float, ttl_ms: int,
               poll_interval_ms: int, owner: str, tool: str) -> TaskRecord:
    """The seed record of a task (status ``working``, revision 0)."""
    return {"taskId": task_id, "principal": principal, "status": WORKING, "tool": tool,
            "createdAt": now, "lastUpdatedAt": now, "ttlMs": ttl_ms,
            "pollIntervalMs": poll_interval_ms, "expiresAt": now + ttl_ms / 1000.0,
            "inputRequests": {}, "inputResponses": {}, "owner": owner, "revision": 0}


class TaskStore(Protocol):
    """Where task records live. Every method is thread-safe and quick (no user code)."""

    def create(self, record: TaskRecord, *, max_per_principal: int, max_total: int) -> None:
        """Insert a new record, or raise ``TaskLimitError`` if the principal already has
        ``max_per_principal`` unfinished tasks or ``max_total`` records are kept."""

    def get(self, task_id: str) -> TaskRecord | None:
        """The current record (a value: do not mutate it), or None."""

    def replace(self, record: TaskRecord, *, expected_revision: int) -> bool:
        """Store ``record`` (with ``revision`` = expected + 1) if the stored revision is still
        ``expected_revision``; False if someone else wrote first or the task is gone."""

    def delete(self, task_id: str) -> bool:
        """Forget a task (TTL expiry); True if it existed."""

    def expired(self, now: float) -> list[str]:
        """Ids of the records whose ``expiresAt`` has passed."""

    def watch(self, callback: Callable[[TaskRecord], None]) -> None:
        """Call ``callback(record)`` after every successful write (create, replace), with no
        lock held, on some thread of this process."""


class MemoryTaskStore:
    """``TaskStore`` in this process's memory."""

    def __init__(self) -> None:
        # Guards _records and _active (a principal's unfinished task count); held for a few
        # dict operations, never across a callback.
        self._lock = threading.Lock()
        self._records: dict[str, TaskRecord] = {}
        self._active: dict[str | None, int] = {}
        self._watchers: list[Callable[[TaskRecord], None]] = []

    def watch(self, callback: Callable[[TaskRecord], None]) -> None:
        self._watchers.append(callback)

    def _announce(self, record: TaskRecord) -> None:
        for callback in self._watchers:
            callback(record)

    def create(self, record: TaskRecord, *, max_per_principal: int, max_total: int) -> None:
        principal = record["principal"]
        with self._lock:
            if len(self._records) >= max_total:
                raise TaskLimitError(f"Too many tasks: the server keeps at most {max_total}",
                                     {"limit": max_total, "scope": "server"})
            if self._active.get(principal, 0) >= max_per_principal:
                raise TaskLimitError(f"Too many tasks: at most {max_per_principal} unfinished "
                                     "tasks per client", {"limit": max_per_principal, "scope": "principal"})
            if record["taskId"] in self._records:
                raise ValueError("duplicate task id")
            self._records[record["taskId"]] = record
            self._active[principal] = self._active.get(principal, 0) + 1
        self._announce(record)

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            return self._records.get(task_id)

    def replace(self, record: TaskRecord, *, expected_revision: int) -> bool:
        task_id = record["taskId"]
        with self._lock:
            current = self._records.get(task_id)
            if current is None or current["revision"] != expected_revision:
                return False
            stored = {**record, "revision": expected_revision + 1}
            self._records[task_id] = stored
            if current["status"] not in TERMINAL and stored["status"] in TERMINAL:
                self._release(current["principal"])
        self._announce(stored)
        return True

    def delete(self, task_id: str) -> bool:
        with self._lock:
            current = self._records.pop(task_id, None)
            if current is not None and current["status"] not in TERMINAL:
                self._release(current["principal"])
        return current is not None

    def _release(self, principal: str | None) -> None:
        left = self._active.get(principal, 0) - 1
        if left > 0:
            self._active[principal] = left
        else:
            self._active.pop(principal, None)

    def expired(self, now: float) -> list[str]:
        with self._lock:
            return [tid for tid, rec in self._records.items() if rec["expiresAt"] <= now]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
