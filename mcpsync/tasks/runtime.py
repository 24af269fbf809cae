"""``TaskManager``: the tasks extension (SEP-2663) of one server, on plain threads.

Theory of operation
-------------------
A 2026-07-28 ``tools/call`` of a tool registered with ``task="optional"|"required"``, from
a request that declares the ``io.modelcontextprotocol/tasks`` extension, becomes a task:
``start`` writes the record to the store (so ``tasks/get`` resolves before the client
hears of it), queues the call on the ``TaskPool`` and answers a flat ``CreateTaskResult``.
The request's HTTP exchange ends there; the task lives on in the store and on its thread.

On its thread the tool runs with an ordinary ``Context`` (a throwaway connection, like a
stateless request's) whose ``task`` is a ``TaskHandle``. ``ctx.elicit/sample/list_roots/ask``
call ``TaskHandle.ask``: the record goes to ``input_required`` with the requests in
``inputRequests``, and the thread waits until ``tasks/update`` has stored an answer for each
(or the task is cancelled). The handle's event is set by the store's watch callback, so a
store shared between processes only has to publish its writes for this to keep working.

Every status change is a compare-and-set on the record's revision (``_change``), so of two
racing writers exactly one wins: a ``tasks/cancel`` that lands first makes the tool's
completion a no-op (the task stays ``cancelled``); a completion that lands first makes the
cancel a plain acknowledgement. A cancel is passed to the running tool through
``ServerConnection.cancel_call`` (``ctx.cancelled``, ``wait_cancelled``, ``on_cancel``).

Ids are 256-bit random (``secrets``) and bound to the principal that created the task: any
other principal is told "unknown task", exactly as for an id that never existed.

Lock: ``TaskManager._lock`` guards the map of tasks running in this process (id ->
handle) and the sweep time; it is a leaf, never held across the store, I/O or user code.
"""
from __future__ import annotations

import datetime
import logging
import secrets
import threading
import time
from typing import Any, Callable, Protocol

from ..errors import Cancelled, InvalidParams, McpError, MethodNotFound, MissingClientCapability
from ..core.connection import ServerConnection, _drop
from ..core.context import Context
from ..core.host import SessionHost
from ..core.registry import ToolDef
from ..protocol.modern import COMPLETE, TASKS_EXTENSION, has_tasks
from .pool import TASK_THREADS, TaskPool
from .store import (CANCELLED, COMPLETED, FAILED, INPUT_REQUIRED, TERMINAL, WORKING,
                    MemoryTaskStore, TaskRecord, TaskStore, new_record)


class TaskHost(SessionHost, Protocol):
    """The server as its task manager sees it (``mcpsync.server.Server``): it runs a
    session's requests (a task's thread has a connection of its own), ``call_tool`` runs
    the tool, ``notify_task`` tells listen streams of a change."""

    def call_tool(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        ...

    def notify_task(self, record: TaskRecord) -> Any:
        ...

log = logging.getLogger("mcpsync.tasks")

TASK_TTL_MS = 3_600_000           # how long a task stays readable after it was created
POLL_INTERVAL_MS = 500            # the polling interval suggested to clients
MAX_TASKS_PER_PRINCIPAL = 100     # unfinished tasks of one principal
MAX_TASKS = 10_000                # task records kept (finished ones until their TTL)
SWEEP_INTERVAL_S = 30.0           # expired records are dropped at most this often (on create)
SHUTDOWN_JOIN_S = 5.0             # close(): how long to wait for task threads to return
CAS_RETRIES = 64                  # compare-and-set attempts before giving up (a bug if reached)


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def unknown_task() -> InvalidParams:
    return InvalidParams("Invalid params: unknown task")


def task_notification(record: TaskRecord) -> dict[str, Any]:
    """``notifications/tasks``: the whole ``DetailedTask``, as ``tasks/get`` would answer now."""
    params = wire_task(record)
    del params["resultType"]  # a result's field; a notification's params are the task itself
    return {"jsonrpc": "2.0", "method": "notifications/tasks", "params": params}


def wire_task(record: TaskRecord) -> dict[str, Any]:
    """A record as the wire's ``Task`` / ``DetailedTask`` (with resultType ``complete``)."""
    out: dict[str, Any] = {"resultType": COMPLETE, "taskId": record["taskId"],
                           "status": record["status"], "createdAt": iso(record["createdAt"]),
                           "lastUpdatedAt": iso(record["lastUpdatedAt"]),
                           "ttlMs": record["ttlMs"], "pollIntervalMs": record["pollIntervalMs"]}
    if record.get("statusMessage"):
        out["statusMessage"] = record["statusMessage"]
    status = record["status"]
    if status == INPUT_REQUIRED:
        out["inputRequests"] = record["inputRequests"]
    elif status == COMPLETED:
        out["result"] = record["result"]
    elif status == FAILED:
        out["error"] = record["error"]
    return out


class TaskHandle:
    """What a task's thread holds: its id, its Context, and the wait for input answers."""

    def __init__(self, manager: "TaskManager", task_id: str) -> None:
        self.manager = manager
        self.task_id = task_id
        self.ctx: Context | None = None
        # Set by the store's watch callback whenever this task's record changes; the task's
        # thread clears it before it reads the record, so no change is missed.
        self.changed = threading.Event()
        self._issued: set[str] = set()

    def ask(self, requests: dict[str, dict[str, Any]], timeout: float | None) -> dict[str, dict[str, Any]]:
        """Park the task in ``input_required`` with ``requests`` and block this thread until
        ``tasks/update`` has answered every one. Raises ``Cancelled`` if the task is cancelled
        (or expires) meanwhile, ``InvalidParams`` on an answer that is not an object."""
        keys: dict[str, str] = {}  # wire key -> the tool's key; wire keys are never reused
        for key in requests:
            wire, n = key, 1
            while wire in self._issued:
                n += 1
                wire = f"{key}-{n}"
            self._issued.add(wire)
            keys[wire] = key
        wanted = {wire: requests[key] for wire, key in keys.items()}

        def park(rec: TaskRecord) -> TaskRecord | None:
            if rec["status"] in TERMINAL:
                raise Cancelled()
            return {**rec, "status": INPUT_REQUIRED, "inputRequests": {**rec["inputRequests"], **wanted}}
        self.manager._change(self.task_id, park)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.changed.clear()
            rec = self.manager.store.get(self.task_id)
            if rec is None or rec["status"] in TERMINAL or (self.ctx is not None and self.ctx.cancelled):
                raise Cancelled()
            if all(w in rec["inputResponses"] for w in keys):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise McpError("the client did not answer the task's input requests in time")
            self.changed.wait(left)
        answers = {keys[w]: rec["inputResponses"][w] for w in keys}

        def consume(rec: TaskRecord) -> TaskRecord | None:
            if rec["status"] in TERMINAL:
                raise Cancelled()
            return {**rec, "inputResponses": {k: v for k, v in rec["inputResponses"].items() if k not in keys}}
        self.manager._change(self.task_id, consume)
        return answers


class TaskManager:
    """The tasks of one ``Server``: creation, ``tasks/get|update|cancel``, the thread pool,
    TTL expiry and shutdown. ``store`` defaults to memory; ``clock`` (seconds since the
    epoch) is injectable so tests can move time."""

    def __init__(self, server: TaskHost, *, store: TaskStore | None = None,
                 clock: Callable[[], float] = time.time, threads: int = TASK_THREADS,
                 ttl_ms: int = TASK_TTL_MS, poll_interval_ms: int = POLL_INTERVAL_MS,
                 max_per_principal: int = MAX_TASKS_PER_PRINCIPAL, max_tasks: int = MAX_TASKS,
                 instance: str | None = None, new_id: Callable[[], str] | None = None,
                 check_id: Callable[[str], bool] | None = None) -> None:
        self.server = server
        self.store: TaskStore = store if store is not None else MemoryTaskStore()
        self.clock = clock
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self.max_per_principal = max_per_principal
        self.max_tasks = max_tasks
        self.instance = instance or secrets.token_hex(8)  # this process, as the owner of the tasks it runs
        # Task ids: 256-bit random by default; shared state (mcpsync.state.keyring) signs them
        # so every instance refuses a made-up id without asking the store.
        self.new_id: Callable[[], str] = new_id or (lambda: secrets.token_urlsafe(32))
        self.check_id: Callable[[str], bool] = check_id or (lambda _task_id: True)
        self.pool = TaskPool(threads)
        # Guards _running (tasks of this process: id -> handle) and _last_sweep. Leaf lock.
        self._lock = threading.Lock()
        self._running: dict[str, TaskHandle] = {}
        self._last_sweep = 0.0
        # Every change also goes to the server's subscriptions/listen streams.
        self._listeners: list[Callable[[TaskRecord], Any]] = [server.notify_task]
        self.store.watch(self._on_change)

    # ---- creation -------------------------------------------------------------------------

    def route(self, tool: ToolDef, params: dict[str, Any], ctx: Context) -> dict[str, Any] | None:
        """Decide how a 2026-07-28 call of a task-capable tool runs: a ``CreateTaskResult``
        (the task has started), or None to run it on this thread (the client did not opt
        in and the tool allows that, or the tool defers its task to ``ctx.begin_task()``)."""
        if not has_tasks(ctx.client_capabilities):
            if tool.task == "required":
                raise MissingClientCapability(
                    f"Missing required client capability: tool {tool.name} runs only as a task",
                    {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
            return None
        if tool.defer_task:
            ctx.defer_task = True
            return None
        return self.start(tool, params, ctx, {})

    def start(self, tool: ToolDef, params: dict[str, Any], ctx: Context,
              answers: dict[str, Any]) -> dict[str, Any]:
        """Create the task (durably, limits checked), queue the tool on the pool and return
        the ``CreateTaskResult``. ``answers`` are input answers gathered before the task."""
        now = self.clock()
        self._sweep(now)
        task_id = self.new_id()
        record = new_record(task_id, ctx.principal, now=now, ttl_ms=self.ttl_ms,
                            poll_interval_ms=self.poll_interval_ms, owner=self.instance, tool=tool.name)
        handle = TaskHandle(self, task_id)
        with self._lock:
            self._running[task_id] = handle
        try:
            self.store.create(record, max_per_principal=self.max_per_principal, max_total=self.max_tasks)
        except BaseException:
            with self._lock:
                self._running.pop(task_id, None)
            raise
        envelope = {"version": ctx.version, "capabilities": ctx.client_capabilities,
                    "log_level": ctx.log_level, "principal": ctx.principal}
        call = {k: v for k, v in params.items() if k not in ("_meta", "inputResponses", "requestState")}
        try:
            self.pool.submit(lambda: self._run(handle, call, envelope, answers),
                             lambda: self._finish(task_id, CANCELLED, message="The server shut down"))
        except RuntimeError:  # closing: the task ends at once
            self._finish(task_id, CANCELLED, message="The server shut down")
        created = wire_task(record)
        created["resultType"] = "task"
        return created

    def _run(self, handle: TaskHandle, params: dict[str, Any], envelope: dict[str, Any],
             answers: dict[str, Any]) -> None:
        """The task's thread: run the tool, record how it ended. Never raises."""
        task_id = handle.task_id
        conn = ServerConnection(self.server)
        ctx = Context(conn, task_id, "tools/call", params, _drop)
        ctx.modern = True
        ctx.version = envelope["version"]
        ctx.client_capabilities = envelope["capabilities"]
        ctx.log_level = envelope["log_level"]
        ctx.principal = envelope["principal"]
        ctx.input_responses = answers
        ctx.task = handle
        handle.ctx = ctx
        try:
            rec = self.store.get(task_id)
            if rec is None or rec["status"] in TERMINAL:
                return  # cancelled (or expired) while queued
            try:
                result = self.server.call_tool(params, ctx)
            except Cancelled:
                self._finish(task_id, CANCELLED, message="The task was cancelled")
            except McpError as exc:
                self._finish(task_id, FAILED, error=exc.to_error())
            except Exception:
                log.exception("task %s: tool %r crashed", task_id[:8], params.get("name"))
                self._finish(task_id, FAILED, error={"code": -32603, "message": "Internal error: the tool crashed"})
            else:
                if ctx.cancelled:
                    self._finish(task_id, CANCELLED, message="The task was cancelled")
                else:
                    self._finish(task_id, COMPLETED, result={**result, "resultType": COMPLETE})
        except McpError as exc:  # the store refused (a shared store out of reach): one line
            log.warning("task %s: could not record its outcome: %s", task_id[:8], exc.message)
        except Exception:
            log.exception("task %s: could not record its outcome", task_id[:8])
        finally:
            with self._lock:
                self._running.pop(task_id, None)

    # ---- state changes ----------------------------------------------------------------------

    def _change(self, task_id: str, update: Callable[[TaskRecord], TaskRecord | None]) -> TaskRecord | None:
        """Compare-and-set loop: ``update(current)`` returns the new record (None: no change).
        Returns the record as stored after the change, or the current one (no change / the
        task is gone: None)."""
        for _ in range(CAS_RETRIES):
            current = self.store.get(task_id)
            if current is None:
                return None
            new = update(current)
            if new is None:
                return current
            new = {**new, "lastUpdatedAt": max(self.clock(), current["lastUpdatedAt"])}
            if self.store.replace(new, expected_revision=current["revision"]):
                return new
        raise RuntimeError(f"task {task_id[:8]}: compare-and-set kept losing")

    def _finish(self, task_id: str, status: str, *, result: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None, message: str | None = None) -> bool:
        """Move a task to a terminal status unless it already is in one. True if this won."""
        won = False

        def settle(rec: TaskRecord) -> TaskRecord | None:
            nonlocal won
            if rec["status"] in TERMINAL:
                return None
            won = True
            new = {k: v for k, v in rec.items() if k not in ("result", "error", "statusMessage")}
            new.update(status=status, inputRequests={}, inputResponses={})
            if result is not None:
                new["result"] = result
            if error is not None:
                new["error"] = error
            if message is not None:
                new["statusMessage"] = message
            return new
        self._change(task_id, settle)
        return won

    def _on_change(self, record: TaskRecord) -> None:
        """The store's watch callback: wake this process's thread of the task, stop it if
        the task was cancelled, tell listeners."""
        with self._lock:
            handle = self._running.get(record["taskId"])
        if handle is not None:
            handle.changed.set()
            ctx = handle.ctx
            if record["status"] == CANCELLED and ctx is not None and not ctx.cancelled:
                ctx.conn.cancel_call(ctx)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("task listener failed")

    def running_ids(self) -> frozenset[str]:
        """The tasks queued or running on this process's threads (a shared store renews
        their leases, and only theirs)."""
        with self._lock:
            return frozenset(self._running)

    def on_change(self, callback: Callable[[TaskRecord], Any]) -> None:
        """Call ``callback(record)`` on every change of any task (listen streams use it)."""
        self._listeners.append(callback)

    # ---- the tasks/* methods ------------------------------------------------------------------

    def _find(self, params: dict[str, Any], ctx: Context) -> TaskRecord | None:
        if not ctx.modern:
            raise MethodNotFound("Method not found: tasks/* exist in revision 2026-07-28 only")
        if not has_tasks(ctx.client_capabilities):
            raise MissingClientCapability(
                "Missing required client capability: the io.modelcontextprotocol/tasks extension",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
        task_id = params.get("taskId")
        if type(task_id) is not str:
            raise InvalidParams("Invalid params: taskId must be a string")
        rec = self.store.get(task_id) if self.check_id(task_id) else None
        if rec is None or rec["principal"] != ctx.principal:
            return None
        if rec["expiresAt"] <= self.clock():
            self._expire(task_id)
            return None
        return rec

    def owned(self, task_ids: list[Any], principal: str | None) -> list[str]:
        """Of ``task_ids``, the live tasks created by ``principal`` (the ones a listen stream
        may follow; others are left out of its acknowledgement, as unknown)."""
        now = self.clock()
        out = []
        for task_id in task_ids:
            rec = self.store.get(task_id) if type(task_id) is str and self.check_id(task_id) else None
            if rec is not None and rec["principal"] == principal and rec["expiresAt"] > now:
                out.append(task_id)
        return out

    def get(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        rec = self._find(params, ctx)
        if rec is None:
            raise unknown_task()
        return wire_task(rec)

    def update(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Store the answers to outstanding input requests; others are ignored. An empty
        acknowledgement, whatever the task id (as the extension asks)."""
        responses = params.get("inputResponses")
        if type(responses) is not dict:
            raise InvalidParams("Invalid params: inputResponses must be an object")
        rec = self._find(params, ctx)
        if rec is not None:
            def answer(rec: TaskRecord) -> TaskRecord | None:
                fresh = {k: v for k, v in responses.items() if k in rec["inputRequests"] and type(v) is dict}
                if not fresh or rec["status"] in TERMINAL:
                    return None
                pending = {k: v for k, v in rec["inputRequests"].items() if k not in fresh}
                return {**rec, "status": INPUT_REQUIRED if pending else WORKING, "inputRequests": pending,
                        "inputResponses": {**rec["inputResponses"], **fresh}}
            self._change(rec["taskId"], answer)
        return {"resultType": COMPLETE}

    def cancel(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Cancel a task: an empty acknowledgement (also for a finished task); -32602 for an
        unknown one."""
        rec = self._find(params, ctx)
        if rec is None:
            raise unknown_task()
        self._finish(rec["taskId"], CANCELLED, message="Cancelled by the client")
        return {"resultType": COMPLETE}

    # ---- expiry and shutdown --------------------------------------------------------------------

    def _expire(self, task_id: str) -> None:
        self._finish(task_id, CANCELLED, message="The task expired")  # stops a running tool
        self.store.delete(task_id)

    def _sweep(self, now: float) -> None:
        with self._lock:
            if now - self._last_sweep < SWEEP_INTERVAL_S:
                return
            self._last_sweep = now
        self.sweep(now)

    def sweep(self, now: float | None = None) -> int:
        """Drop every task whose TTL has passed (a running one is cancelled first)."""
        expired = self.store.expired(self.clock() if now is None else now)
        for task_id in expired:
            self._expire(task_id)
        return len(expired)

    def close(self, timeout: float = SHUTDOWN_JOIN_S) -> bool:
        """Shutdown: cancel this process's tasks (queued ones never start), join the pool's
        threads. True if they all returned within ``timeout``. The manager takes new tasks
        afterwards on fresh threads (a server object may be served again)."""
        with self._lock:
            running = list(self._running)
            pool, self.pool = self.pool, TaskPool(self.pool.size)  # the server stays usable
        for task_id in running:
            try:
                self._finish(task_id, CANCELLED, message="The server shut down")
            except Exception:  # a shared store out of reach: its lease expiry fails the task
                log.warning("shutdown: could not record task %s as cancelled", task_id[:8])
        return pool.close(timeout)
