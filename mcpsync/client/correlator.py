"""Matching what a server sends to the requests we made: ``Correlator`` and ``Call``.

Theory of operation
-------------------
Every request a ``ClientSession`` sends is a ``Call`` with a fresh id from the correlator
(ids are per connection; a hub's downstream ids never go upstream). The thread that made
the call waits in ``Call.next`` for *events*: the response, a progress notification
(matched by the fresh progress token put in the request), a log message, a request from
the server to relay (sampling, elicitation, roots), a cancellation, the connection's loss,
or the deadline. That thread handles each event itself, so everything done for the caller
(progress, relays, cancellation) happens on the caller's own thread (the hub's worker
serving the downstream request), holding no lock. A finished call takes no more events
(``put`` says so), and the events left in its queue are handed back by ``finish``, so a
request that arrives as its call ends is still answered by somebody.

Where the messages come from depends on the transport: a stdio or WebSocket reader thread
routes each message into the right call (``Call.put``); a Streamable HTTP call instead
carries a ``pump`` that reads the call's own response stream on the waiting thread, and an
``interrupt`` that unblocks that read (cancellation, shutdown).

``Correlator._lock`` guards the id counter and the id/token -> call maps; ``Call._cond``
guards one call's event queue. Neither is held while anything else runs.
"""
from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from ..errors import ConnectionClosed

log = logging.getLogger("mcpsync.client")

# Event kinds a Call delivers to its waiter.
RESPONSE = "response"      # payload: the response or error message
PROGRESS = "progress"      # payload: the notification's params
LOG = "log"                # payload: the notifications/message params
REQUEST = "request"        # payload: a request from the upstream to relay downstream
CANCELLED = "cancelled"    # the downstream client cancelled; payload: None
CLOSED = "closed"          # payload: the ConnectionClosed to raise
EXPIRED = "expired"        # HTTP: the upstream forgot our session (404); payload: None
TIMEOUT = "timeout"        # the deadline passed; payload: None

Event = tuple[str, Any]


class Call:
    """One request in flight to an upstream, and its queue of events."""

    def __init__(self, rid: int, method: str, ctx: Any, token: str | None) -> None:
        self.id = rid
        self.method = method
        self.ctx = ctx                  # the Caller it serves, or None (the session's own request)
        self.token = token              # the upstream progress token, if progress is wanted
        self.started = time.monotonic()
        # Guards _events and _finished; notified by put() (reader threads, the cancelling thread).
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[Event] = deque()
        self._finished = False
        # Streamable HTTP: pump(timeout_s) reads more of this call's response on the waiting
        # thread and returns False at the end of the stream (raises TimeoutError when nothing
        # came in time); interrupt() unblocks it from another thread. Written by the waiting
        # thread (and interrupt read by others: a plain attribute swap).
        self.pump: Callable[[float | None], bool] | None = None
        self.interrupt: Callable[[], None] | None = None

    def put(self, kind: str, payload: Any = None) -> bool:
        """Queue an event for the waiting thread; False once the call is finished."""
        with self._cond:
            if self._finished:
                return False
            self._events.append((kind, payload))
            self._cond.notify()
        return True

    def finish(self) -> list[Event]:
        """Take no more events; returns those nobody took."""
        with self._cond:
            self._finished = True
            left = list(self._events)
            self._events.clear()
        return left

    def next(self, deadline: float | None) -> Event:
        """The next event; ``(TIMEOUT, None)`` once ``deadline`` (monotonic) passes. Blocks."""
        while True:
            with self._cond:
                if self._events:
                    return self._events.popleft()
                pump = self.pump
                if pump is None:
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if not self._cond.wait_for(lambda: self._events, timeout):
                        return (TIMEOUT, None)
                    return self._events.popleft()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return (TIMEOUT, None)
            try:
                more = pump(remaining)
            except TimeoutError:
                return (TIMEOUT, None)
            if not more:
                self.pump = None
                with self._cond:
                    if not self._events:
                        self._events.append((CLOSED, ConnectionClosed(
                            "the upstream ended its response stream without a response")))

    def wait_quiet(self, seconds: float) -> None:
        """Wait up to ``seconds`` unless an event arrives first (a pause a cancellation ends)."""
        with self._cond:
            self._cond.wait_for(lambda: self._events, seconds)

    def wake(self) -> None:
        """Unblock a pump read in progress (the caller has put the reason first)."""
        interrupt = self.interrupt
        if interrupt is not None:
            try:
                interrupt()
            except OSError:
                pass


class Correlator:
    """Ids, progress tokens and the calls in flight on one upstream connection."""

    def __init__(self, name: str, token_prefix: str = "hub") -> None:
        self.name = name
        self.token_prefix = token_prefix   # progress tokens are "<prefix>-<id>"
        # Guards _ids, _calls, _tokens and closed; a few dict operations, never held while a
        # call is woken or anything is sent.
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._calls: dict[int, Call] = {}
        self._tokens: dict[str, Call] = {}
        self.closed: str | None = None   # why the connection is gone, once it is

    def open(self, method: str, ctx: Any = None, *, progress: bool = False) -> Call:
        with self._lock:
            if self.closed is not None:
                raise ConnectionClosed(f"upstream {self.name!r}: {self.closed}")
            rid = next(self._ids)
            token = f"{self.token_prefix}-{rid}" if progress else None
            call = Call(rid, method, ctx, token)
            self._calls[rid] = call
            if token is not None:
                self._tokens[token] = call
        return call

    def finish(self, call: Call) -> list[Event]:
        """Forget ``call``; returns the events left in its queue (``Call.finish``)."""
        with self._lock:
            self._calls.pop(call.id, None)
            if call.token is not None:
                self._tokens.pop(call.token, None)
        return call.finish()

    def get(self, rid: Any) -> Call | None:
        with self._lock:
            return self._calls.get(rid) if type(rid) is int else None

    def by_token(self, token: Any) -> Call | None:
        with self._lock:
            return self._tokens.get(token) if isinstance(token, str) else None

    def inflight(self) -> list[Call]:
        with self._lock:
            return list(self._calls.values())

    def sole_client_call(self) -> Call | None:
        """The call a message the transport did not tie to any request belongs to: the newest
        call in flight when all calls with a downstream client serve the same client session,
        else None (ambiguous: nothing is relayed to the wrong client)."""
        with self._lock:
            calls = [c for c in self._calls.values() if c.ctx is not None]
        if not calls:
            return None
        conns = {id(c.ctx.conn) for c in calls}
        if len(conns) != 1:
            return None
        return max(calls, key=lambda c: c.started)

    def close(self, reason: str) -> None:
        """The connection is gone: fail every call in flight (and every later ``open``)."""
        with self._lock:
            if self.closed is None:
                self.closed = reason
            calls = list(self._calls.values())
        for call in calls:
            call.put(CLOSED, ConnectionClosed(f"upstream {self.name!r}: {reason}"))
            call.wake()


def shutdown_socket(sock: socket.socket | None) -> None:
    """Unblock a thread reading ``sock`` (from another thread): both directions shut down."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
