"""``RedisBackend``: the shared state of a deployment in Redis (``--state-url redis://…``).

Theory of operation
-------------------
Two connections' worth of work, on two threads this object owns and joins:

* ``mcpsync-state-subscriber`` holds one pub/sub connection subscribed to ``P:events`` and
  hands every message to the tasks store (``"k": "task"``, written by its Lua scripts) or
  to the bus subscribers (everything else). When the connection breaks it reconnects with
  a capped backoff and asks the tasks store to re-announce the tasks this process runs
  (``RedisTaskStore.resync``), so a task thread waiting for an answer misses none.
* ``mcpsync-state-worker`` publishes the bus's outgoing messages (queued by ``publish``,
  which never blocks a tool on Redis: at most ``OUTBOX_MAX`` wait, the oldest dropped
  first) and, every ``lease_s / 3`` seconds, renews the leases of this process's tasks,
  fails the tasks whose lease lapsed (any instance's) and runs the ``every_tick`` jobs.

Other commands run on the caller's thread through redis-py's thread-safe connection pool,
with short socket timeouts and no retries: Redis out of reach turns into
``StateUnavailable`` within ``COMMAND_TIMEOUT_S`` and the client is told to try again.
Nothing here is on the path of a plain tool call.

URL: ``redis://[:PASSWORD@]HOST:PORT/DB``, ``rediss://…`` (TLS) or ``unix://PATH?db=N``,
plus mcpsync's own query parameters ``prefix`` (key namespace, default ``mcpsync``: one
Redis database can hold several deployments) and ``task_lease_s`` (default 15).

Lock: ``RedisBackend._cond`` guards the outbox, the started and stopping flags and the
job and subscriber lists; a leaf, never held across Redis or a callback.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from ..tasks.store import TaskStore
from .backend import Message, StateUnavailable
from .redis_tasks import TASK_LEASE_S, RedisTaskStore

log = logging.getLogger("mcpsync.state")

COMMAND_TIMEOUT_S = 2.0       # one Redis command, socket timeout
CONNECT_TIMEOUT_S = 1.0       # opening a connection to Redis
SUBSCRIBE_POLL_S = 0.25       # the subscriber checks for shutdown this often
PUBSUB_PING_S = 5             # the subscriber's idle connection is checked this often (s)
RECONNECT_MIN_S = 0.1         # first wait before the subscriber reconnects
RECONNECT_MAX_S = 2.0         # longest wait between reconnection attempts
OUTBOX_MAX = 1_000            # bus messages waiting to be published (oldest dropped past it)
MAX_TICK_S = 5.0              # the worker's periodic jobs run at least this often
JOIN_TIMEOUT_S = 5.0          # close(): how long to wait for each thread
OWN_PARAMS = ("prefix", "task_lease_s")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_url(url: str) -> tuple[str, str, float]:
    """(the URL for redis-py, key prefix, task lease in seconds); ``ConfigError`` if bad."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OWN_PARAMS}
    prefix = own.get("prefix", "mcpsync")
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError("--state-url", "prefix must be a non-empty word")
    try:
        lease_s = float(own.get("task_lease_s", TASK_LEASE_S))
    except ValueError:
        raise ConfigError("--state-url", "task_lease_s must be a number of seconds") from None
    if not 0.3 <= lease_s <= 3600:
        raise ConfigError("--state-url", "task_lease_s must be between 0.3 and 3600 seconds")
    rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMS])
    return urlunsplit(parts._replace(query=rest)), prefix, lease_s


class RedisBackend:
    """``StateBackend`` in Redis (see the module's doc for the URL)."""

    def __init__(self, url: str) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError("--state-url", "Redis needs the redis package: "
                                             "pip install 'mcpsync[redis]'") from None
        clean, self.prefix, self.lease_s = parse_url(url)
        self.name = _redact(clean)
        self.channel = f"{self.prefix}:events"
        options: dict[str, Any] = {"socket_timeout": COMMAND_TIMEOUT_S,
                                   "socket_connect_timeout": CONNECT_TIMEOUT_S,
                                   "retry": Retry(NoBackoff(), 0)}
        try:
            self.client = redis.Redis.from_url(clean, **options)
            self._sub_client = redis.Redis.from_url(clean, health_check_interval=PUBSUB_PING_S, **options)
        except ValueError as exc:
            raise ConfigError("--state-url", str(exc)) from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._store: RedisTaskStore | None = None
        self._up = True               # the last command answered (a plain flag; last writer wins)
        self._subscribed = False      # written by the subscriber thread only
        self.dropped = 0              # bus messages never published (written by the worker / under _cond)
        self._stop = threading.Event()  # set once by close(); the subscriber's waits end on it
        # Guards _outbox, _stopping, _threads, _jobs and _subscribers (a leaf; see the module doc).
        self._cond = threading.Condition()
        self._outbox: collections.deque[str] = collections.deque()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._jobs: list[Callable[[], None]] = []
        self._subscribers: list[Callable[[Message], None]] = []

    # ---- StateBackend -----------------------------------------------------------------------

    def task_store(self, instance: str) -> TaskStore:
        if self._store is None:
            self._store = RedisTaskStore(self.client, instance=instance, prefix=self.prefix,
                                         lease_s=self.lease_s, redis_errors=self._errors,
                                         on_result=self._answered)
        elif self._store.instance != instance:
            raise ValueError("one RedisBackend serves one instance")
        return self._store

    def publish(self, message: Message) -> None:
        data = json.dumps(message)
        with self._cond:
            if self._stopping:
                return
            if len(self._outbox) >= OUTBOX_MAX:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append(data)
            self._cond.notify_all()

    def subscribe(self, callback: Callable[[Message], None]) -> None:
        with self._cond:
            self._subscribers.append(callback)

    def shared_key(self, candidate: bytes) -> bytes:
        key = f"{self.prefix}:secret"
        try:
            self.client.set(key, candidate.hex(), nx=True)
            stored = self.client.get(key)
        except self._errors:
            self._answered(False)
            raise StateUnavailable("the shared key could not be read") from None
        self._answered(True)
        try:
            if stored is None:
                return candidate
            return bytes.fromhex(stored.decode() if isinstance(stored, bytes) else str(stored))
        except ValueError:
            log.error("state: %s holds a malformed shared key at %s; using this instance's", self.name, key)
            return candidate

    def every_tick(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._jobs.append(job)

    def healthy(self) -> bool:
        return self._up and self._subscribed

    def _answered(self, ok: bool) -> None:
        if ok != self._up:
            if ok:
                log.info("state: %s answers again", self.name)
            else:
                log.warning("state: %s does not answer: shared state is unavailable until it does", self.name)
        self._up = ok

    # ---- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._threads or self._stopping:
                return
            self._threads = [threading.Thread(target=self._subscribe_loop, name="mcpsync-state-subscriber", daemon=True),
                             threading.Thread(target=self._work_loop, name="mcpsync-state-worker", daemon=True)]
            threads = list(self._threads)
        for t in threads:
            t.start()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        self._stop.set()
        for t in threads:
            t.join(JOIN_TIMEOUT_S)
        for client in (self.client, self._sub_client):
            try:
                client.close()
            except Exception:
                log.debug("state: closing a Redis client failed", exc_info=True)

    def _subscribe_loop(self) -> None:
        backoff = RECONNECT_MIN_S
        connected_before = False
        while not self._stop.is_set():
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._subscribed = True
                self._answered(True)  # Redis is back (the first command after an outage)
                backoff = RECONNECT_MIN_S
                if connected_before and self._store is not None:
                    self._store.resync()
                connected_before = True
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=SUBSCRIBE_POLL_S)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except self._errors as exc:
                if self._subscribed:
                    log.warning("state: lost the subscription to %s (%s); reconnecting", self.name, exc)
                self._subscribed = False
            finally:
                try:
                    pubsub.close()
                except Exception:
                    log.debug("state: closing the pub/sub connection failed", exc_info=True)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)
        self._subscribed = False

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if type(message) is not dict:
            return
        if message.get("k") == "task":
            if self._store is not None:
                self._store.on_event(message)
            return
        with self._cond:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(message)
            except Exception:
                log.exception("state: a bus subscriber failed")

    def _work_loop(self) -> None:
        tick_s = min(self.lease_s / 3, MAX_TICK_S)
        next_tick = time.monotonic()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._outbox) or self._stopping, next_tick - time.monotonic())
                if self._stopping:
                    return
                batch = list(self._outbox)
                self._outbox.clear()
                jobs = list(self._jobs)
            if batch:
                self._send(batch)
            if time.monotonic() >= next_tick:
                self._maintain(jobs)
                next_tick = time.monotonic() + tick_s

    def _send(self, batch: list[str]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for data in batch:
                pipe.publish(self.channel, data)
            pipe.execute()
        except self._errors:
            self._answered(False)
            with self._cond:
                self.dropped += len(batch)
            return
        self._answered(True)

    def _maintain(self, jobs: list[Callable[[], None]]) -> None:
        store = self._store
        if store is not None:
            try:
                store.renew()
                store.reap_dead()
            except StateUnavailable:
                pass  # logged once by _answered; the next tick tries again
        for job in jobs:
            try:
                job()
            except Exception:
                log.exception("state: a periodic job failed")
