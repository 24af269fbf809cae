"""``WsConnection``: a WebSocket connection on threads of its own, for WSGI servers without
parking (werkzeug, gunicorn); see ``websocket.py``.

Theory of operation
-------------------
The WSGI call (the server's connection thread) checks the upgrade, opens the session,
writes the ``101`` itself on the raw socket (``werkzeug.socket`` or ``gunicorn.socket``) and
then reads frames on that same thread (``wsframe.FrameParser``): no reader thread of a
WebSocket library in between. Each message goes to a ``MessageStream``.

The *reader role*: exactly one thread at a time reads the socket. When a request arrives and
it is the session's only one, the reader runs it itself (``feed(..., inline=...)``), as the
HTTP front end does: no thread switch between the bytes and the reply, which is why a
WebSocket call costs less than an HTTP one. While it runs, nobody reads; so the reader
first registers with the ``_Watchdog``: a request still running after ``WS_INLINE_GRACE_S``
loses the role (the generation number ``_gen`` moves on) and a new reader thread takes over,
so cancellations, pings, answers to our own elicitation/sampling requests and further calls
flow again within a few milliseconds. The old thread finishes its request, sees that its
generation is stale and leaves. Requests that arrive while another one is running go to
the session's worker pool, as before: only the request/response rhythm runs inline.

The thread whose read loop sees the end (close frame, EOF, protocol error, session closed
by the store, shutdown) closes the stream (cancelling in-flight calls) and the session and
sets ``_ended``; the WSGI call waits for that before it returns and the front end closes
the socket. Writes (replies from any thread, pongs, close frames) all go through the
stream's ``write_lock``: one frame at a time, each ``send`` bounded by ``WS_WRITE_TIMEOUT_S``
as on a parked connection; a peer that reads nothing for that long is cut off.

The session lives as long as the socket: an open, pinged connection is never idle to the
store's reaper, and a session the store closes anyway (shutdown) ends its connection within
``WS_RECEIVE_POLL_S``.
"""
from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import Any, Callable

from ..errors import InvalidRequest
from ..protocol import jsonrpc
from ..service import Service
from ..sessions import Session
from . import ws_parked, wsframe
from .stream import MessageStream
from .ws_liveness import PING, Liveness

log = logging.getLogger("mcpsync.websocket")

WS_RECEIVE_POLL_S = 1.0     # the reader wakes this often to look at the session and shutdown
WS_INLINE_GRACE_S = 0.005   # a request run by the reader keeps the socket unread this long
RECV_BYTES = 65536


class _Watchdog:
    """Hands the reader role on when a request run by the reader takes long.

    One per process, on a thread started on demand that checks every ``WS_INLINE_GRACE_S``
    and ends after a second without inline requests. ``_lock`` guards ``_busy`` (connections
    whose reader is running a request), ``_thread`` and ``_last_watch``; ``unwatch`` takes it
    inside a connection's ``_lock`` (order: connection ``_lock`` → watchdog ``_lock``); the
    watchdog thread never holds it while taking a connection's lock.
    """

    IDLE_EXIT_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[WsConnection, None] = {}
        self._thread: threading.Thread | None = None
        self._last_watch = 0.0

    def watch(self, conn: "WsConnection", now: float) -> None:
        """``conn``'s reader started running a request at ``now`` (its ``_busy_since``)."""
        with self._lock:
            self._busy[conn] = None
            self._last_watch = now
            if self._thread is not None:
                return
            thread = self._thread = threading.Thread(target=self._run, daemon=True,
                                                     name="mcpsync-ws-watchdog")
        thread.start()

    def unwatch(self, conn: "WsConnection") -> None:
        """Called with ``conn._lock`` held."""
        with self._lock:
            self._busy.pop(conn, None)

    def _run(self) -> None:
        tick = threading.Event()  # never set: a bounded, interruption-free sleep
        while True:
            tick.wait(WS_INLINE_GRACE_S)
            now = time.monotonic()
            with self._lock:
                if not self._busy and now - self._last_watch > self.IDLE_EXIT_S:
                    self._thread = None
                    return
                candidates = list(self._busy)
            for conn in candidates:
                conn._take_over_if_overdue(now)


_watchdog = _Watchdog()


class WsConnection:
    """One WebSocket connection: its socket, parser, session stream and reader role."""

    def __init__(self, service: Service, session: Session, sock: Any, *, max_message_bytes: int,
                 ping_interval_s: float | None, close_timeout_s: float) -> None:
        self._service = service
        self._session = session
        self._sock = sock
        self._liveness = Liveness(ping_interval_s)
        self._close_timeout_s = close_timeout_s
        self._parser = wsframe.FrameParser(max_message_bytes)  # used by the reader only
        self.stream = MessageStream(service.server, self._write_text, name="ws",
                                    conn=service.connection(session),
                                    admission=service.admission, admission_key=session.id)
        # The reader role: guards _gen (the generation whose thread may read) and
        # _busy_since (when the reader started running a request; None while it reads).
        # Held for a few assignments; the watchdog's lock may be taken inside it.
        self._lock = threading.Lock()
        self._gen = 0
        self._busy_since: float | None = None
        self._ended = threading.Event()  # set once the connection is over and cleaned up
        self._closing_at: float | None = None  # when we sent our close frame (reader only)
        self._poller = select.poll()  # the socket's readability; used by the reader only
        self._poller.register(sock.fileno(), select.POLLIN)
        # Bounds every send (the reader polls before it reads, so reads never wait on it).
        sock.settimeout(ws_parked.WS_WRITE_TIMEOUT_S)

    # --- writing (any thread) -----------------------------------------------------------------

    def _write_text(self, data: bytes) -> None:
        """The stream's writer (called with ``stream.write_lock`` held)."""
        self._send(wsframe.encode_frame(wsframe.OP_TEXT, data))

    def _send_control(self, frame: bytes) -> None:
        self.stream.send_raw(lambda: self._send(frame))

    def _send(self, frame: bytes) -> None:
        """One frame. Each ``send`` waits at most the write timeout (the socket's), so a
        peer that reads slowly gets a big frame piece by piece, and one that took nothing
        for that long is cut off (the reader then sees the end and closes the session)."""
        view = memoryview(frame)
        try:
            while view:
                view = view[self._sock.send(view):]
        except socket.timeout:
            log.info("WebSocket peer read nothing for %g s: connection cut", ws_parked.WS_WRITE_TIMEOUT_S)
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            raise

    def _start_close(self, code: int, reason: str) -> None:
        """Send our close frame (once); the reader then waits for the peer's."""
        if self._closing_at is None:
            self._closing_at = time.monotonic()
            self._send_control(wsframe.close_frame(code, reason))

    # --- the reader role ----------------------------------------------------------------------

    def run(self) -> None:
        """Serve the connection on the calling (WSGI) thread until it is over."""
        self._read_loop(0)
        self._ended.wait()

    def _take_over_if_overdue(self, now: float) -> None:
        """The watchdog's check: start a new reader if the current one is stuck in a request."""
        with self._lock:
            since = self._busy_since
            if since is None or now - since < WS_INLINE_GRACE_S:
                return
            self._gen += 1
            gen = self._gen
            self._busy_since = None
            _watchdog.unwatch(self)
        try:
            threading.Thread(target=self._read_loop, args=(gen,), name="mcpsync-ws-reader",
                             daemon=True).start()
        except RuntimeError:  # interpreter shutting down: nobody will read again
            self._finish()

    def _run_inline(self, gen: int, job: Callable[[], None]) -> None:
        now = time.monotonic()
        with self._lock:
            self._busy_since = now
        # Only this thread adds the entry, and only the watchdog (after the entry exists) or
        # this thread (below) removes it, both under self._lock: no lost or stale entries.
        _watchdog.watch(self, now)
        try:
            job()
        finally:
            with self._lock:
                if self._gen == gen:
                    self._busy_since = None
                    _watchdog.unwatch(self)

    def _is_reader(self, gen: int) -> bool:
        with self._lock:
            return self._gen == gen

    def _read_loop(self, gen: int) -> None:
        """Read and handle messages while this thread holds the reader role ``gen``."""
        inline = lambda job: self._run_inline(gen, job)  # noqa: E731 - one per reader
        try:
            while True:
                item = self._next_item()
                if item is None:
                    break
                op, payload = item
                if op == wsframe.OP_BINARY:
                    self.stream.send(jsonrpc.error_response(None, InvalidRequest(
                        "Invalid Request: binary frames are not accepted; send JSON text frames")))
                    continue
                self._service.store.touch(self._session.id)
                self.stream.feed(payload, inline)
                if not self._is_reader(gen):
                    return  # a new reader took over while we ran a request
        except Exception:  # a bug: end this connection, keep the server
            log.exception("WebSocket reader failed")
        self._finish()

    def _next_item(self) -> tuple[int, bytes | str] | None:
        """The next text or binary message; None once the connection is to end. Handles
        control frames, the closing handshake, pings and the periodic checks."""
        while True:
            try:
                item = self._parser.next()
            except wsframe.FrameError as exc:
                log.debug("WebSocket protocol error: %s", exc.reason)
                self._start_close(exc.code, exc.reason)
                return None
            if item is not None:
                op, payload = item
                if op == wsframe.OP_PING:
                    self._send_control(wsframe.encode_frame(wsframe.OP_PONG, payload))  # type: ignore[arg-type]
                elif op == wsframe.OP_CLOSE:
                    if self._closing_at is None:  # echo their close (RFC 6455 5.5.1)
                        self._start_close(wsframe.close_code(payload), "")  # type: ignore[arg-type]
                    return None
                elif op != wsframe.OP_PONG and self._closing_at is None:
                    return item
                continue
            if not self._wait_readable():
                return None
            try:
                data = self._sock.recv(RECV_BYTES)
            except OSError:
                data = b""
            if not data:
                return None
            self._liveness.heard()
            self._parser.feed(data)

    def _wait_readable(self) -> bool:
        """Block until the socket has bytes (True) or the connection is to end (False),
        doing the periodic checks every ``WS_RECEIVE_POLL_S``."""
        while True:
            now = time.monotonic()
            if self._closing_at is not None:
                deadline = self._closing_at + self._close_timeout_s
                if now >= deadline:
                    return False
                wait = deadline - now
            else:
                wait = WS_RECEIVE_POLL_S
                if self._liveness.ping_interval_s:
                    wait = min(wait, max(0.0, self._liveness.next_ping - now))
            try:
                if self._poller.poll(int(wait * 1000) + 1):
                    return True
            except OSError:
                return False
            if self._closing_at is not None:
                continue
            due = self._liveness.check(self._session, self.stream, self._service.draining,
                                       time.monotonic())
            if due is PING:
                self._send_control(wsframe.encode_frame(wsframe.OP_PING))
                self._service.store.touch(self._session.id)  # alive: pinged and answering
            elif due is not None:
                self._start_close(*due)

    def _finish(self) -> None:
        """End the connection: cancel calls, close the session, release ``run``."""
        if self._ended.is_set():
            return
        try:
            self.stream.close()
            self._service.close_session(self._session.id)
        finally:
            self._ended.set()
