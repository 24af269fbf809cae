"""Admission control: the one place every transport asks before it runs a request.

Theory of operation
-------------------
Every request from a client (Streamable HTTP in both eras, WebSocket, stdio, legacy
HTTP+SSE) is *admitted* before a thread runs it and *released* when its reply has been
handed to the transport (or dropped). ``initialize`` is the exception: no transport admits
it (it opens a session; sessions have quotas of their own). The HTTP transports and the
WebSocket share the ``Service``'s instance; a stdio stream has one of its own. Two limits
hold, whatever the transport:

* ``max_inflight``: requests running at once in the process (default 512);
* ``max_inflight_per_session``: requests running at once for one session key (default 64).

Past either, ``admit`` raises ``Overloaded`` and the transport refuses the request in its
own terms: HTTP 503 with ``Retry-After`` (``/mcp`` and legacy ``/messages``), a JSON-RPC
error (``Overloaded.error``) on message streams (WebSocket, stdio). A refusal on a message
stream is written by the reader thread itself, so a client that does not read its
replies stops being read too: that is the streams' backpressure.

On a message stream release comes after the reply's write, not after the handler
returns: a reply blocked on a client that does not read still counts, so such a client
cannot run more than its session's share however fast it sends. On HTTP a JSON reply is
released when the app returns it, before the front end sends its bytes: what the peer
does not take waits in the connection's buffer, not in a thread, and the connection is
not read again until it has taken it. An SSE response writes within the request, so it
is released after its last write.

``Admission._lock`` guards the total, the per-key counts and the abort table; it is held
for a few dict operations, never across I/O, and nothing is taken under it (a leaf in the
lock map). Notifications and responses are not requests and are never counted.

Shutdown: each admitted request may leave an ``abort(message)`` callable. At the end of the
grace period ``abort_all`` calls every one still in flight (outside the lock): the transport
answers that request with a JSON-RPC error saying the server is shutting down and cancels
it, so no call is cut off without an answer.

The same object records what was served (``observe``): request counts and durations per
transport, method and outcome in ``Metrics``, and the access log. Method labels come from a
closed set (the server's own method table, ``batch`` and ``other``), so a client cannot
create metric series, and logged values are escaped, so a client cannot forge log lines.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Collection, Hashable

from .errors import OVERLOADED, McpError
from .metrics import Metrics

log = logging.getLogger("mcpsync.admission")
access_log = logging.getLogger("mcpsync.access")  # one line per request at INFO

MAX_INFLIGHT = 512               # requests served at once in the process
MAX_INFLIGHT_PER_SESSION = 64    # the same, per session
RETRY_AFTER_S = 1                # what a refused client is told to wait
LOG_VALUE_CHARS = 128            # the longest client-chosen value an access-log line repeats


class Overloaded(McpError):
    """A request refused by admission control (JSON-RPC ``OVERLOADED`` on message streams,
    HTTP 503 + Retry-After on HTTP). ``scope`` is ``"session"`` or ``"server"``."""

    code = OVERLOADED

    def __init__(self, scope: str, limit: int) -> None:
        what = "for this session" if scope == "session" else "on this server"
        super().__init__(f"Server busy: {limit} requests are already in flight {what}; "
                         f"retry in {RETRY_AFTER_S} s",
                         {"scope": scope, "limit": limit, "retryAfterMs": RETRY_AFTER_S * 1000})
        self.scope = scope
        self.limit = limit


class Admission:
    """Counts of requests in flight, in total and per session key; see the module docstring.

    ``known_methods()`` returns the method names that may appear as metric labels (read at
    each observation, so methods added later count too)."""

    def __init__(self, *, max_inflight: int = MAX_INFLIGHT,
                 max_inflight_per_session: int = MAX_INFLIGHT_PER_SESSION,
                 metrics: Metrics | None = None,
                 known_methods: Callable[[], Collection[str]] = frozenset) -> None:
        if max_inflight < 1 or max_inflight_per_session < 1:
            raise ValueError("in-flight limits must be at least 1")
        self.max_inflight = max_inflight
        self.max_inflight_per_session = max_inflight_per_session
        self.metrics = metrics if metrics is not None else Metrics()
        self._known_methods = known_methods
        # Guards _total and _per_key; a few integer updates per request (a leaf lock).
        self._lock = threading.Lock()
        self._total = 0
        self._per_key: dict[Hashable, int] = {}
        self._aborts: dict[int, Callable[[str], None]] = {}  # ticket -> abort(message)
        self._tickets = itertools.count(1)
        self.refused_total = 0

    # ---- admission --------------------------------------------------------------------

    def admit(self, key: Hashable | None,
              abort: Callable[[str], None] | None = None) -> int:
        """Count one request in flight for ``key`` (None: counted in the total only), or
        raise ``Overloaded``. Returns the request's ticket; every successful call must be
        paired with ``release(key, ticket)``. ``abort(message)``, if given, answers and
        cancels the request at shutdown (see ``abort_all``)."""
        with self._lock:
            if self._total >= self.max_inflight:
                self.refused_total += 1
                raise Overloaded("server", self.max_inflight)
            if key is not None:
                mine = self._per_key.get(key, 0)
                if mine >= self.max_inflight_per_session:
                    self.refused_total += 1
                    raise Overloaded("session", self.max_inflight_per_session)
                self._per_key[key] = mine + 1
            self._total += 1
            ticket = next(self._tickets)
            if abort is not None:
                self._aborts[ticket] = abort
            return ticket

    def release(self, key: Hashable | None, ticket: int) -> None:
        with self._lock:
            self._aborts.pop(ticket, None)
            self._total -= 1
            if key is not None:
                left = self._per_key[key] - 1
                if left:
                    self._per_key[key] = left
                else:
                    del self._per_key[key]

    def abort_all(self, message: str) -> int:
        """Answer and cancel every request still in flight that left an abort (shutdown,
        past the grace period). Returns how many. Each abort runs once, outside the lock."""
        with self._lock:
            aborts = list(self._aborts.values())
            self._aborts.clear()
        for abort in aborts:
            try:
                abort(message)
            except Exception:  # one transport's failure must not keep the others unanswered
                log.exception("aborting a request at shutdown failed")
        return len(aborts)

    @property
    def inflight(self) -> int:
        return self._total

    def inflight_for(self, key: Hashable) -> int:
        with self._lock:
            return self._per_key.get(key, 0)

    # ---- what was served --------------------------------------------------------------

    def observe(self, transport: str, value: Any, reply: Any, seconds: float,
                session_id: str | None) -> None:
        """Record one served request (``value`` as received, ``reply`` as answered; None
        when it was cancelled) in the metrics and the access log."""
        if type(value) is dict:
            method = value.get("method")
            label = method if type(method) is str and method in self._known_methods() else "other"
        else:
            method = label = "batch"
        outcome = "cancelled" if reply is None else (
            "error" if type(reply) is dict and "error" in reply else "ok")
        self.metrics.observe(transport, label, outcome, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("transport=%s session=%s method=%s outcome=%s duration_ms=%.2f",
                            transport, (session_id or "-")[:8], loggable(method), outcome,
                            seconds * 1000)


def loggable(value: Any) -> str:
    """A client-chosen value for a log line: control characters (a newline would start a
    forged line) and backslashes escaped, quotes kept, cut at ``LOG_VALUE_CHARS``."""
    text = value if type(value) is str else repr(value)
    if len(text) > LOG_VALUE_CHARS:
        text = text[:LOG_VALUE_CHARS] + "…"
    if text.isprintable() and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii")
