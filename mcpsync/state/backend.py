"""What the instances of one deployment share: the ``StateBackend`` interface and its
in-memory implementation.

Theory of operation
-------------------
One mcpsync process keeps everything in its own memory. Several processes behind a load
balancer, where any 2026-07-28 request may land on any of them, share three things through
a ``StateBackend``:

* the tasks store (a ``TaskStore``): a task created on one instance is read, answered and
  cancelled on any other; every write is announced to every instance (the store's
  ``watch``), which is how the instance running a task hears of a cancel made elsewhere;
* the notification bus: a message one instance ``publish``es reaches the callbacks given
  to ``subscribe`` on every instance (the publisher's own included: the bus skips its
  own messages, they were delivered locally already);
* the key that seals ``requestState`` and signs task ids (``shared_key``), when no
  ``MCPSYNC_SECRET`` is configured.

``MemoryBackend`` keeps all of it in this process: the default (one instance), and two
``Server`` objects in one process behave like two instances (the tests use that).
``mcpsync.state.redis_backend.RedisBackend`` keeps it in Redis.

A backend out of reach never crashes an instance: operations that need it raise
``StateUnavailable`` (a JSON-RPC error the client reads as "try again"), publishing drops
messages (notifications are best effort), and nothing on the path of a plain tool call
touches the backend.
"""
from __future__ import annotations

import logging
import secrets
import threading
from typing import Any, Callable, Protocol

from ..errors import McpError
from ..tasks.store import MemoryTaskStore, TaskStore

log = logging.getLogger("mcpsync.state")

STATE_UNAVAILABLE = -32006   # implementation-defined JSON-RPC server error
RETRY_AFTER_MS = 1000        # what a client is told to wait when the state store is out of reach

Message = dict[str, Any]


class StateUnavailable(McpError):
    """The shared state store cannot be reached: the operation did not happen; try again."""

    code = STATE_UNAVAILABLE

    def __init__(self, what: str) -> None:
        super().__init__(f"Shared state unavailable: {what}; try again shortly",
                         {"retryAfterMs": RETRY_AFTER_MS})


class StateBackend(Protocol):
    """Where the shared pieces of a deployment live. Methods are thread-safe."""

    #: the backend's location with any password removed (for logs and /metrics)
    name: str

    def task_store(self, instance: str) -> TaskStore:
        """The tasks store of this process; ``instance`` names it as the owner (the one that
        runs) of the tasks it creates."""

    def publish(self, message: Message) -> None:
        """Send ``message`` (JSON data) to the subscribers of every instance. Never blocks
        on the backend and never raises: a message that cannot be sent is dropped."""

    def subscribe(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback(message)`` for every published message, on a thread of this
        process, in publication order."""

    def shared_key(self, candidate: bytes) -> bytes:
        """The key every instance uses: the stored one, or ``candidate`` if none is stored yet
        (then it becomes the stored one). Raises ``StateUnavailable``."""

    def every_tick(self, job: Callable[[], None]) -> None:
        """Run ``job()`` periodically on the backend's own thread (key upkeep)."""

    def healthy(self) -> bool:
        """Whether the backend answered its last operations (for /metrics)."""

    def start(self) -> None:
        """Start the backend's threads (idempotent)."""

    def close(self) -> None:
        """Stop and join the backend's threads; release connections."""


class MemoryBackend:
    """``StateBackend`` in this process's memory: one tasks store and one bus for every
    ``Server`` attached to it. Messages are delivered on the publishing thread."""

    name = "memory://"

    def __init__(self) -> None:
        self._store = MemoryTaskStore()
        # Guards _subscribers and _key; taken for a list copy or an assignment, never
        # across a callback.
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[Message], None]] = []
        self._key: bytes | None = None

    def task_store(self, instance: str) -> TaskStore:
        return self._store

    def publish(self, message: Message) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(message)
            except Exception:
                log.exception("state: a subscriber failed")

    def subscribe(self, callback: Callable[[Message], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def shared_key(self, candidate: bytes) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = candidate
            return self._key

    def every_tick(self, job: Callable[[], None]) -> None:
        pass  # nothing here is ever lost, so there is nothing to keep up

    def healthy(self) -> bool:
        return True

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def random_key() -> bytes:
    """A fresh 256-bit key."""
    return secrets.token_bytes(32)
