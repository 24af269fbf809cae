"""``RedisTaskStore``: the ``TaskStore`` of a deployment, in Redis, with leases.

Theory of operation
-------------------
Keys (``P`` is the backend's prefix, ``mcpsync`` by default)::

    P:task:<id>             hash  r: the record (JSON), v: revision, s: status, a: principal key
    P:tasks:expiry          zset  id -> expiresAt (seconds): the total count and TTL sweeps
    P:tasks:lease           zset  id -> lease deadline (ms, Redis server time): unfinished tasks
    P:tasks:active:<a>      set   a principal's unfinished task ids (its limit)
    P:events                channel: every write, as {"o": instance, "k": "task", "r": record}

Every write is one Lua script, so a compare-and-set on ``v`` and its announcement on
``P:events`` happen together and in write order; records are never decoded in Lua (a
JSON round trip there would turn ``[]`` into ``{}``). A write is announced to this
process's watchers at once, on the writing thread, and to the other instances through
the channel (``on_event``, called by the backend's subscriber; our own events are skipped
there). Announcements of one task reach the watchers in revision order: an older revision
arriving after a newer one is dropped.

Leases: the instance that creates a task runs it, and its backend thread renews the lease
of each of its unfinished tasks every ``lease_s / 3`` (``renew``), in Redis server time, as
long as the task manager still holds the task (``alive``).
Whoever reads an unfinished task whose lease has passed (``get``), or finds it in the
periodic sweep (``reap_dead``, any instance), marks it ``failed`` with a compare-and-set,
so of several instances noticing one wins; a tool still running on a live but cut-off
instance then loses its own final write. Clocks of the machines are never compared.

Errors: any Redis failure becomes ``StateUnavailable``; nothing is retried here (the task
manager's callers answer the client, who tries again).

Lock: ``RedisTaskStore._lock`` guards the set of tasks this process runs (leases to renew)
and the last revision announced per task; a leaf, never held across Redis or a callback.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Collection

from ..tasks.store import FAILED, TERMINAL, TaskLimitError, TaskRecord
from .backend import StateUnavailable

log = logging.getLogger("mcpsync.state")

TASK_LEASE_S = 15.0          # a task whose instance stopped renewing for this long is failed
KEY_SLACK_MS = 300_000       # task keys outlive their TTL this long in Redis (sweeps drop them first)
SEEN_REVISIONS = 10_000      # tasks whose last announced revision is remembered (ordering)
DEAD_SWEEP_BATCH = 100       # lapsed leases examined per sweep
LOST_ERROR = {"code": -32603, "message": "Internal error: the instance running the task "
                                         "stopped (its lease expired)"}

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: task, expiry, lease, active. ARGV: id, json, status, principal key, expiresAt,
# max total, max per principal, lease ms, key ttl ms, channel, event head.
_CREATE = _NOW_MS + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'duplicate' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return 'total' end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[7]) then return 'principal' end
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', 0, 's', ARGV[3], 'a', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[10], ARGV[11] .. ARGV[2] .. '}')
return 'ok'
"""

# KEYS: task, lease, active. ARGV: id, json, expected revision, status, terminal (1/0),
# channel, event head.
_REPLACE = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v or tonumber(v) ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', tonumber(ARGV[3]) + 1, 's', ARGV[4])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
end
redis.call('PUBLISH', ARGV[6], ARGV[7] .. ARGV[2] .. '}')
return 1
"""

# KEYS: task, lease. ARGV: id. Returns {json, 1 if live}, or nil.
_GET = """
local cur = redis.call('HMGET', KEYS[1], 'r', 's')
if not cur[1] then return nil end
local s = cur[2]
if s == 'completed' or s == 'failed' or s == 'cancelled' then return {cur[1], 1} end
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
""" + _NOW_MS + """
if deadline and tonumber(deadline) >= now then return {cur[1], 1} end
return {cur[1], 0}
"""

# KEYS: task, expiry, lease. ARGV: id, active-set key prefix. Returns 1 if it existed.
_DELETE = """
local a = redis.call('HGET', KEYS[1], 'a')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if a then redis.call('SREM', ARGV[2] .. a, ARGV[1]) end
return redis.call('DEL', KEYS[1])
"""

# KEYS: lease. ARGV: lease ms, ids... Renews the leases still held; returns the ids whose
# lease is gone (the task finished or was failed by someone else).
_RENEW = _NOW_MS + """
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(gone, ARGV[i])
  end
end
return gone
"""

# KEYS: lease. ARGV: batch. The ids whose lease has passed.
_LAPSED = _NOW_MS + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
"""


def principal_key(principal: Any) -> str:
    """A principal as a fixed-length key part (principals may be any JSON value)."""
    if principal is None:
        return "-"
    return hashlib.sha256(json.dumps(principal, sort_keys=True).encode()).hexdigest()[:32]


def lost_record(record: TaskRecord, now: float) -> TaskRecord:
    """``record`` failed because its instance stopped renewing the lease."""
    new = {k: v for k, v in record.items() if k not in ("result", "error", "statusMessage")}
    new.update(status=FAILED, inputRequests={}, inputResponses={}, error=LOST_ERROR,
               statusMessage="The instance running the task stopped",
               lastUpdatedAt=max(now, record["lastUpdatedAt"]))
    return new


class RedisTaskStore:
    """``TaskStore`` in Redis for instance ``instance``. ``client`` is a redis-py client
    (thread-safe, its own connection pool); ``redis_errors`` the exception class(es) that
    mean Redis failed; ``on_result(ok)`` tells the backend whether Redis answered."""

    def __init__(self, client: Any, *, instance: str, prefix: str, lease_s: float,
                 redis_errors: type[BaseException] | tuple[type[BaseException], ...],
                 on_result: Callable[[bool], None] = lambda ok: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.instance = instance
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.channel = f"{prefix}:events"
        self._errors = redis_errors
        self._on_result = on_result
        self._clock = clock
        self._event_head = '{"o":' + json.dumps(instance) + ',"k":"task","r":'
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)
        self._get = client.register_script(_GET)
        self._delete = client.register_script(_DELETE)
        self._renew = client.register_script(_RENEW)
        self._lapsed = client.register_script(_LAPSED)
        # Guards _mine (unfinished tasks this process runs: their leases are renewed here)
        # and _seen (task id -> last revision announced). Leaf; never across Redis or callbacks.
        self._lock = threading.Lock()
        self._mine: set[str] = set()
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._watchers: list[Callable[[TaskRecord], None]] = []
        # The tasks this process's threads still hold (TaskManager.running_ids); a task
        # whose thread ended without recording its outcome (the store was out of reach)
        # is renewed no more, so its lease lapses and it is failed.
        self.alive: Callable[[], Collection[str]] | None = None

    # ---- keys and calls -----------------------------------------------------------------

    def _task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def _active(self, principal: Any) -> str:
        return f"{self.prefix}:tasks:active:{principal_key(principal)}"

    @property
    def _expiry(self) -> str:
        return f"{self.prefix}:tasks:expiry"

    @property
    def _lease(self) -> str:
        return f"{self.prefix}:tasks:lease"

    def _call(self, script: Any, keys: list[str], args: list[Any], what: str) -> Any:
        try:
            out = script(keys=keys, args=args)
        except self._errors as exc:
            self._on_result(False)
            log.debug("state: %s failed: %s", what, exc)
            raise StateUnavailable(f"the tasks store could not {what}") from None
        self._on_result(True)
        return out

    # ---- TaskStore ----------------------------------------------------------------------

    def watch(self, callback: Callable[[TaskRecord], None]) -> None:
        self._watchers.append(callback)

    def create(self, record: TaskRecord, *, max_per_principal: int, max_total: int) -> None:
        task_id = record["taskId"]
        for attempt in (1, 2):
            outcome = self._call(self._create, [
                self._task(task_id), self._expiry, self._lease, self._active(record["principal"])], [
                task_id, json.dumps(record), record["status"], principal_key(record["principal"]),
                record["expiresAt"], max_total, max_per_principal, self.lease_ms,
                record["ttlMs"] + KEY_SLACK_MS, self.channel, self._event_head], "create a task")
            outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
            if outcome == "ok":
                break
            if outcome == "principal" and attempt == 1:
                self._reap_principal(record["principal"])  # lapsed leases count no more
                continue
            if outcome == "duplicate":
                raise ValueError("duplicate task id")
            if outcome == "total":
                raise TaskLimitError(f"Too many tasks: the server keeps at most {max_total}",
                                     {"limit": max_total, "scope": "server"})
            raise TaskLimitError(f"Too many tasks: at most {max_per_principal} unfinished "
                                 "tasks per client", {"limit": max_per_principal, "scope": "principal"})
        with self._lock:
            self._mine.add(task_id)
        self._announce(record)

    def get(self, task_id: str) -> TaskRecord | None:
        out = self._call(self._get, [self._task(task_id), self._lease], [task_id], "read a task")
        if out is None:
            return None
        record: TaskRecord = json.loads(out[0])
        if int(out[1]) == 1:
            return record
        lost = lost_record(record, self._clock())
        if self.replace(lost, expected_revision=record["revision"]):
            log.warning("task %s: its instance %s stopped; marked failed", task_id[:8], record.get("owner"))
            return {**lost, "revision": record["revision"] + 1}
        return self.get_plain(task_id)  # someone wrote first: that write stands

    def get_plain(self, task_id: str) -> TaskRecord | None:
        """The stored record as it is (no lease check)."""
        try:
            raw = self.client.hget(self._task(task_id), "r")
        except self._errors:
            self._on_result(False)
            raise StateUnavailable("the tasks store could not read a task") from None
        return None if raw is None else json.loads(raw)

    def replace(self, record: TaskRecord, *, expected_revision: int) -> bool:
        task_id = record["taskId"]
        stored = {**record, "revision": expected_revision + 1}
        terminal = stored["status"] in TERMINAL
        won = self._call(self._replace, [self._task(task_id), self._lease, self._active(record["principal"])], [
            task_id, json.dumps(stored), expected_revision, stored["status"], 1 if terminal else 0,
            self.channel, self._event_head], "update a task")
        if not won:
            return False
        if terminal:
            with self._lock:
                self._mine.discard(task_id)
        self._announce(stored)
        return True

    def delete(self, task_id: str) -> bool:
        with self._lock:
            self._mine.discard(task_id)
        return bool(self._call(self._delete, [self._task(task_id), self._expiry, self._lease],
                               [task_id, f"{self.prefix}:tasks:active:"], "delete a task"))

    def expired(self, now: float) -> list[str]:
        try:
            ids = self.client.zrangebyscore(self._expiry, "-inf", now)
        except self._errors:
            self._on_result(False)
            raise StateUnavailable("the tasks store could not list expired tasks") from None
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    # ---- announcements ------------------------------------------------------------------

    def on_event(self, message: dict[str, Any]) -> None:
        """A task event from the channel (the backend's subscriber thread)."""
        if message.get("o") == self.instance:
            return  # announced here when it was written
        record = message.get("r")
        if type(record) is dict and type(record.get("taskId")) is str:
            if record.get("status") in TERMINAL:
                with self._lock:
                    self._mine.discard(record["taskId"])
            self._announce(record)

    def _announce(self, record: TaskRecord) -> None:
        task_id, revision = record["taskId"], record.get("revision", 0)
        with self._lock:
            if self._seen.get(task_id, -1) >= revision:
                return  # an older write overtaken by a newer one already announced
            self._seen[task_id] = revision
            self._seen.move_to_end(task_id)
            while len(self._seen) > SEEN_REVISIONS:
                self._seen.popitem(last=False)
        for callback in self._watchers:
            try:
                callback(record)
            except Exception:
                log.exception("task watcher failed")

    def resync(self) -> None:
        """After the backend's subscriber reconnected: announce the current record of every
        task this process runs, so a change missed meanwhile still wakes its thread."""
        with self._lock:
            mine = list(self._mine)
        for task_id in mine:
            try:
                record = self.get(task_id)
            except StateUnavailable:
                return
            if record is not None:
                self._announce(record)

    # ---- leases (the backend's thread) ----------------------------------------------------

    def renew(self) -> None:
        """Extend the lease of every unfinished task this process runs."""
        alive = self.alive() if self.alive is not None else None
        with self._lock:
            if alive is not None:
                self._mine.intersection_update(alive)
            mine = list(self._mine)
        if not mine:
            return
        gone = self._call(self._renew, [self._lease], [self.lease_ms, *mine], "renew task leases")
        if gone:
            with self._lock:
                self._mine.difference_update(g.decode() if isinstance(g, bytes) else g for g in gone)

    def reap_dead(self) -> int:
        """Fail the unfinished tasks whose lease has passed (any instance may do this)."""
        lapsed = self._call(self._lapsed, [self._lease], [DEAD_SWEEP_BATCH], "list lapsed leases")
        for raw in lapsed:
            task_id = raw.decode() if isinstance(raw, bytes) else raw
            if self.get(task_id) is None:  # get() fails a lapsed task; a vanished one is forgotten
                try:
                    self.client.zrem(self._lease, task_id)
                except self._errors:
                    break
        return len(lapsed)

    def _reap_principal(self, principal: Any) -> None:
        try:
            ids = self.client.smembers(self._active(principal))
        except self._errors:
            return
        for raw in ids:
            task_id = raw.decode() if isinstance(raw, bytes) else raw
            if self.get(task_id) is None:  # its key expired: forget it
                try:
                    self.client.srem(self._active(principal), task_id)
                except self._errors:
                    return
