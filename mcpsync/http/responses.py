"""The response to one Streamable HTTP POST that carries a request; it is the request's sink.

``PostResponse`` (handshake era, a session) is JSON unless the handler sends something
before its reply (progress, a log message, a request to the client); then it switches to
SSE through WSGI's ``write()``, and every event is also logged in the session's
``SessionStreams`` so a client that lost the stream resumes it (``GET`` + ``Last-Event-ID``).
``ModernResponse`` (2026-07-28) is the same without a log: a failed write means the client
closed the stream, which in that revision cancels the request. It can also carry a
message source on its own (``follow``: a ``subscriptions/listen`` stream): the handler
returns at once, and the response body is a ``FollowedStream`` that takes the source's
messages whenever it is woken (parked by the front end: no thread while it waits) and
ends with the handler's reply once the source has ended.

Each response's ``_lock`` serializes its writes (the request's thread, and any thread its
tool starts, and the shutdown timer's abort); it is held across one ``write`` call, which
under mcpsync's front end takes the pool's lock (``leave_slot``) and ``Exchange._lock``
and may wait for the peer up to the write timeout (60 s) per stall. ``PostResponse`` also
takes its session's ``SessionStreams._cond`` under it to log the event.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Protocol

from ..core.connection import ServerConnection
from ..errors import ConnectionClosed
from ..protocol import jsonrpc, modern, versions
from ..protocol.dispatch import encode_outgoing
from . import sse
from .base import JSON_HEADER, SSE_HEADERS, STATUS, EventStream, StartResponse, json_reply

log = logging.getLogger("mcpsync.http")


class _Abortable:
    """What both POST responses share for shutdown: ``abort(message)``, which admission
    control calls past the grace period. It answers the request with an error at once (the
    whole JSON response, or the final SSE event) and cancels it; the handler's own
    ``finish`` then writes nothing. Subclasses set ``_lock``, ``_conn`` and ``_rid`` (the
    request's connection and id; None when the id is unreadable) and say how an error goes
    out (``_abort_write``, with ``_lock`` held)."""

    _lock: threading.Lock
    _conn: ServerConnection
    _rid: Any
    _aborted = False
    _finished = False

    def abort(self, message: str) -> None:
        with self._lock:
            if self._finished or self._aborted:
                return
            self._aborted = True
            self._abort_write(jsonrpc.error_response(self._rid, ConnectionClosed(message)))
        if self._rid is not None:
            self._conn.cancel(self._rid, message)

    def _abort_write(self, reply: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _whole(start_response: StartResponse, reply: dict[str, Any],
               extra: list[tuple[str, str]]) -> None:
        """Send ``reply`` as a complete JSON response from outside the app's return path."""
        body = encode_outgoing(reply) or b""
        write = start_response(STATUS[200], [JSON_HEADER, ("Content-Length", str(len(body))), *extra])
        try:
            write(body)
        except (OSError, ValueError) as exc:
            log.debug("could not answer an aborted request: %s", exc)


class PostResponse(_Abortable):
    """The response to one POST that carries a request: JSON unless something must be sent
    before the reply, then SSE through WSGI's ``write()``. It is the request's sink.

    ``_lock`` serializes writes to this response (the request's thread, and any thread the
    tool starts that reports progress); it is held across one ``write`` call (see the
    module docstring for what is taken under it).
    """

    def __init__(self, streams: sse.SessionStreams, conn: ServerConnection, rid: Any,
                 start_response: StartResponse, cors: list[tuple[str, str]], can_sse: bool,
                 retry_ms: int) -> None:
        self._streams = streams
        self._conn = conn
        self._rid = rid
        self._start_response = start_response
        self._cors = cors
        self._can_sse = can_sse
        self._retry_ms = retry_ms
        self._lock = threading.Lock()
        self._write: Callable[[bytes], Any] | None = None
        self._log: sse.StreamLog | None = None
        self._live = False

    def _start(self) -> None:
        """Switch to SSE (call with ``_lock`` held)."""
        self._log = self._streams.open_stream()
        self._write = self._start_response("200 OK", [*SSE_HEADERS, *self._cors])
        self._live = True
        if versions.features(self._conn.version).sse_priming:
            self._emit(sse.priming(f"{self._log.id}.0", self._retry_ms))

    def _emit(self, data: bytes) -> None:
        assert self._log is not None
        if not self._live or self._write is None:
            return
        if not self._streams.owns(self._log, 0):  # a resuming GET took the stream over
            self._live = False
            return
        try:
            self._write(data)
        except (OSError, ValueError) as exc:  # the client went away; it may resume
            log.debug("SSE write failed: %s", exc)
            self._live = False
            assert self._log is not None
            self._streams.detach(self._log)

    def __call__(self, msg: dict[str, Any]) -> None:
        """A message about the running request (this object is the request's sink)."""
        if not self._can_sse:
            self._streams.push(msg)  # the client takes no SSE here: use its GET stream
            return
        with self._lock:
            if self._log is None:
                self._start()
            assert self._log is not None
            self._emit(self._streams.append(self._log, msg))

    def close_stream(self) -> None:
        """End the live stream early; the rest is logged for a resuming GET."""
        if not self._can_sse:
            return
        with self._lock:
            if self._log is None:
                self._start()
            assert self._log is not None
            if self._live:
                self._live = False
                self._streams.detach(self._log)

    def _abort_write(self, reply: dict[str, Any]) -> None:
        if self._log is None:
            self._whole(self._start_response, reply, self._cors)
        else:
            self._emit(self._streams.append(self._log, reply, final=True))

    def finish(self, reply: Any) -> Iterable[bytes]:
        with self._lock:
            self._finished = True
            if self._aborted:
                return []
            if self._log is None:
                if reply is None:  # cancelled before anything was sent
                    self._start_response("202 Accepted", [("Content-Length", "0"),
                                                          *self._cors])
                    return []
                return json_reply(self._start_response, 200, reply, self._cors)
            if reply is not None:
                self._emit(self._streams.append(self._log, reply, final=True))
            else:
                self._streams.finish(self._log)
            if self._live:
                self._live = False
                self._streams.detach(self._log)
            return []


class MessageSource(Protocol):
    """Messages a response carries on its own (``core.broadcast.Listener``)."""

    def attach(self, wake: Callable[[], None]) -> None: ...

    def take(self) -> list[dict[str, Any]] | None: ...

    def close(self) -> None: ...


def sse_message(msg: Any) -> bytes:
    """One message as an SSE event without an id (the 2026-07-28 streams)."""
    return sse_event(encode_outgoing(msg, modern.encode_response) or b"null")


def sse_event(data: bytes) -> bytes:
    """An encoded message as an SSE event without an id."""
    return b"event: message\ndata: " + data + b"\n\n"


class FollowedStream(EventStream):
    """The body of a response that follows a ``MessageSource``: its messages as they come,
    a keep-alive comment every ``SSE_KEEPALIVE_S``, then ``final`` (the request's reply)
    once the source has ended. Closing it closes the source (the client went away)."""

    tick_s = sse.SSE_KEEPALIVE_S

    def __init__(self, source: MessageSource, final: bytes | None) -> None:
        self._source = source
        self._final = final
        self._over = False
        self._keepalive = False

    def attach(self, wake: Callable[[], None]) -> None:
        self._source.attach(wake)

    def poll(self) -> bytes | None:
        if self._over:
            return None
        msgs = self._source.take()
        if msgs is None:
            self._over = True
            return self._final
        if msgs:
            self._keepalive = False
            return b"".join(sse_message(m) for m in msgs)
        if self._keepalive:
            self._keepalive = False
            return sse.KEEPALIVE
        return b""

    def tick(self) -> None:
        self._keepalive = True

    def close(self) -> None:
        self._source.close()


class ModernResponse(_Abortable):
    """The response to a modern-era (2026-07-28) request: JSON, or SSE through ``write()`` once the
    handler sends something first (progress, log messages, a listen stream). There is no
    event log and no resumption; a failed write means the client closed the stream, which
    in this revision cancels the request (``rid`` on ``conn``, the request's own)."""

    # Until the first write: no SSE stream yet, the client there, no source followed.
    _write: Callable[[bytes], Any] | None = None
    _live = True
    _source: MessageSource | None = None

    def __init__(self, start_response: StartResponse, cors: list[tuple[str, str]],
                 can_sse: bool, conn: ServerConnection, rid: Any) -> None:
        self._start_response = start_response
        self._cors = cors
        self._can_sse = can_sse
        self._conn = conn
        self._rid = rid
        # Serializes writes to this response (the stream write lock); held for one write.
        self._lock = threading.Lock()

    def _cancel(self) -> None:
        self._conn.cancel(self._rid, "stream closed")

    def follow(self, source: MessageSource) -> bool:
        """Carry ``source``'s messages from now on, without the handler's thread; the reply
        ends the stream after them (see the module docstring). False if this response
        cannot: a JSON-only client, or an SSE stream already started by ``write()``."""
        with self._lock:
            if not self._can_sse or self._write is not None or self._source is not None \
                    or self._finished:
                return False
            self._source = source
            return True

    def _emit(self, data: bytes) -> bool:
        """Write once SSE has started (call with ``_lock`` held). True when this write found
        the client gone: the caller cancels the request *after* releasing the lock, since
        cancellation runs callbacks that may write to this very stream."""
        if self._write is None:
            self._write = self._start_response("200 OK", [*SSE_HEADERS, *self._cors])
        if not self._live:
            return False
        try:
            self._write(data)
        except (OSError, ValueError) as exc:
            log.debug("stream closed by the client: %s", exc)
            self._live = False
            return True
        return False

    def __call__(self, msg: dict[str, Any]) -> None:
        if not self._can_sse:
            return  # a JSON-only client gets the reply alone
        data = encode_outgoing(msg, modern.encode_response)  # once: None for one to drop
        if data is None:
            return
        with self._lock:
            gone = self._emit(sse_event(data))
        if gone:
            self._cancel()

    def keepalive(self) -> None:
        """A comment on an idle stream; it also finds out whether the client is still there."""
        with self._lock:
            gone = self._write is not None and self._emit(sse.KEEPALIVE)
        if gone:
            self._cancel()

    def _abort_write(self, reply: dict[str, Any]) -> None:
        if self._write is None:
            self._whole(self._start_response, reply, self._cors)
        else:
            self._emit(sse_message(reply))

    def finish(self, reply: Any) -> Iterable[bytes]:
        with self._lock:
            self._finished = True
            if self._aborted:
                return []
            if self._source is not None:  # a followed source: the reply comes after it
                self._start_response("200 OK", [*SSE_HEADERS, *self._cors])
                return FollowedStream(self._source, None if reply is None else sse_message(reply))
            if self._write is None:
                if reply is None:
                    self._start_response("202 Accepted", [("Content-Length", "0"), *self._cors])
                    return []
                status = modern.http_status(reply["error"]) if "error" in reply else 200
                return json_reply(self._start_response, status, reply, self._cors,
                                  modern.encode_response)
            if reply is not None:  # the request is over: a failed write has nothing to cancel
                self._emit(sse_message(reply))
            return []
