"""``ParkedWebSocket``: a WebSocket connection parked in mcpsync's HTTP front end.

Theory of operation
-------------------
The front end's dispatcher thread drives the connection, a ``sync.pollable.Duplex``: it
feeds what the peer sends (``feed``), parsed here by the sans-IO ``wsframe.FrameParser``;
pings are answered and a close frame is echoed at once, and whole messages wait in the
*inbox*. A *reader* job on the front end's worker pool (``environ["mcpsync.submit"]``)
takes them in order and hands each to the session's ``MessageStream``, as a reader thread
would: notifications, responses and ``initialize`` run on the reader; a request is
admitted and run by a job of its own, or by the reader itself when it is the session's
only one and the last message in. The reader role then ends before the request runs (the
next message starts a new reader job), so a long request never holds up the messages
behind it. An idle connection therefore costs its buffers, not a thread.

Writes from any thread (replies, notifications, our own requests to the client) are
frames appended to the *outbox*, which the dispatcher takes when it polls (``poll``) while
the connection's unsent bytes are under its write buffer. A writer waits (inside
``may_block``) while the outbox holds more than ``WS_OUTBOX_BYTES``, for at most
``WS_WRITE_TIMEOUT_S``. The inbox holds at most ``WS_INBOX_MESSAGES`` messages (or
``WS_INBOX_BYTES``) before the connection stops being read (``readable``): a client that
does not read its replies is not read either, after its session's in-flight share
(admission) at the latest.

Ticks: a ping every ``ping_interval_s`` (a peer silent for two intervals is dropped with
1008), the closing handshake's timeout, and, while the server drains (``drain``), a close
(1001) once no call is in flight. The session closing (the store, a shutdown) starts the
close at once. ``close()`` (the front end is done: the connection ended or was cut) hands
the cleanup -- cancelling the calls in flight, closing the session, whose hooks may block
-- to a worker.

``_lock`` guards the outbox, the inbox, the reader flag and the closing state; writers wait
for room on ``_room``, a Condition over it. Nothing else is taken under it, and wake-ups
happen after it is released.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from ..errors import InvalidRequest
from ..protocol import jsonrpc
from ..service import Service
from ..sessions import Session
from ..sync import may_block
from . import wsframe
from .stream import MessageStream
from .ws_liveness import PING, Liveness

log = logging.getLogger("mcpsync.websocket")

WS_OUTBOX_BYTES = 1 << 20     # frames waiting for the dispatcher before a writer waits
WS_WRITE_TIMEOUT_S = 60.0     # ... at most this long; then the write fails
WS_INBOX_MESSAGES = 64        # whole messages waiting for the reader before the peer is
WS_INBOX_BYTES = 8 << 20      # ... not read any more (or this many bytes of them)
DRAIN_CHECK_S = 0.1           # while the server drains: how often calls in flight are counted

Submit = Callable[[Callable[[], None]], None]


class ParkedWebSocket:
    """One WebSocket connection and its session, driven by the front end (see the module
    docstring). ``accept`` is the ``101`` response, the first bytes sent."""

    def __init__(self, service: Service, session: Session, *, accept: bytes, submit: Submit,
                 max_message_bytes: int, ping_interval_s: float | None,
                 close_timeout_s: float) -> None:
        self._service = service
        self._session = session
        self._submit = submit
        self._liveness = Liveness(ping_interval_s)
        self._close_timeout_s = close_timeout_s
        self._parser = wsframe.FrameParser(max_message_bytes)  # the dispatcher's only
        # Guards _out, _out_bytes, _inbox, _inbox_bytes, _reading, _closing_at, _over and
        # _closed; _room (over it) is where writers wait for the outbox to drain.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._out: list[bytes] = [accept]
        self._out_bytes = len(accept)
        self._inbox: deque[tuple[int, bytes | str]] = deque()
        self._inbox_bytes = 0
        self._reading = False                 # a reader job holds the reader role
        self._closing_at: float | None = None  # when our close frame was queued
        self._over = False                    # nothing more after the outbox: it ends
        self._closed = False                  # the front end is done with it
        self._draining = False
        self._broken = False                  # a protocol error: the rest is not parsed
        self._wake: Callable[[], None] = _nothing
        self.stream = MessageStream(service.server, self._write_text, name="ws",
                                    conn=service.connection(session),
                                    admission=service.admission, admission_key=session.id,
                                    executor=self._run_elsewhere)
        session.on_close(lambda _s: self._start_close(wsframe.CLOSE_GOING_AWAY, "session closed"))

    # --- the front end's side (the dispatcher thread) -----------------------------------------

    @property
    def tick_s(self) -> float | None:
        if self._closing_at is not None:
            return self._close_timeout_s
        if self._draining:
            return DRAIN_CHECK_S
        return self._liveness.ping_interval_s

    @property
    def readable(self) -> bool:
        return len(self._inbox) < WS_INBOX_MESSAGES and self._inbox_bytes < WS_INBOX_BYTES

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def feed(self, data: bytes) -> None:
        if not data:  # the peer closed the socket (without a close frame, or after one)
            with self._lock:
                self._over = True
            return
        if self._broken:
            return
        self._liveness.heard()
        self._parser.feed(data)
        start_reader = False
        while True:
            try:
                item = self._parser.next()
            except wsframe.FrameError as exc:
                log.debug("WebSocket protocol error: %s", exc.reason)
                self._broken = True
                self._start_close(exc.code, exc.reason)
                break
            if item is None:
                break
            op, payload = item
            if op == wsframe.OP_PING:
                self._queue(wsframe.encode_frame(wsframe.OP_PONG, payload))  # type: ignore[arg-type]
            elif op == wsframe.OP_CLOSE:  # echoed (RFC 6455 5.5.1)
                self._start_close(wsframe.close_code(payload), "")  # type: ignore[arg-type]
                with self._lock:
                    self._over = True  # the handshake is complete: end once the echo is out
                break
            elif op != wsframe.OP_PONG and self._closing_at is None:
                with self._lock:
                    self._inbox.append(item)
                    self._inbox_bytes += len(payload)
                    if not self._reading:
                        self._reading = start_reader = True
        if start_reader:
            self._start_reader()

    def poll(self) -> bytes | None:
        with self._lock:
            if self._out:
                data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                self._out_bytes = 0
                self._room.notify_all()
                return data
            return None if self._over else b""

    def tick(self) -> None:
        now = time.monotonic()
        if self._closing_at is not None:
            if now >= self._closing_at + self._close_timeout_s:  # no answer to our close
                with self._lock:
                    self._over = True
            return
        due = self._liveness.check(self._session, self.stream,
                                   self._draining or self._service.draining, now)
        if due is PING:
            self._queue(wsframe.encode_frame(wsframe.OP_PING))
            self._service.store.touch(self._session.id)  # alive: pinged and answering
        elif due is not None:
            self._start_close(*due)

    def close(self) -> None:
        """The front end is done with the connection; the cleanup runs on a worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._over = True
            self._inbox.clear()
            self._room.notify_all()
        try:
            self._submit(self._clean_up)
        except RuntimeError:  # the pool is gone (a shutdown giving up): here, then
            self._clean_up()

    # --- any thread ------------------------------------------------------------------------------

    def drain(self) -> None:
        """The server is shutting down: close (1001) once no call is in flight."""
        self._draining = True
        self._wake()

    def _start_close(self, code: int, reason: str) -> None:
        """Queue our close frame (once); the peer has ``close_timeout_s`` to answer it."""
        with self._lock:
            if self._closing_at is not None or self._over:
                return
            self._closing_at = time.monotonic()
            frame = wsframe.close_frame(code, reason)
            self._out.append(frame)
            self._out_bytes += len(frame)
        self._wake()

    def _queue(self, frame: bytes) -> None:
        """A control frame: never waits (pings and pongs are small, and bounded by what
        the dispatcher reads per turn)."""
        with self._lock:
            if self._over:
                return
            self._out.append(frame)
            self._out_bytes += len(frame)
        self._wake()

    def _write_text(self, data: bytes) -> None:
        """The stream's writer (called with ``stream.write_lock`` held): one text frame.
        Waits while the outbox is full. Raises OSError once the connection is over."""
        frame = wsframe.encode_frame(wsframe.OP_TEXT, data)
        with self._lock:
            room = self._out_bytes <= WS_OUTBOX_BYTES
            if room and not self._over:
                self._out.append(frame)
                self._out_bytes += len(frame)
        if not room:
            deadline = time.monotonic() + WS_WRITE_TIMEOUT_S
            with may_block(), self._room:  # waiting for the peer: not this worker's turn
                while self._out_bytes > WS_OUTBOX_BYTES and not self._over:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._room.wait(left):
                        raise OSError("the WebSocket peer took no messages within the write timeout")
                if not self._over:
                    self._out.append(frame)
                    self._out_bytes += len(frame)
        if self._over:
            raise OSError("the WebSocket connection is closed")
        self._wake()

    # --- the reader and the work (worker threads) ------------------------------------------------

    def _run_elsewhere(self, job: Callable[[], None]) -> None:
        """The stream's executor: a request that cannot run on the reader runs as a job."""
        self._submit(job)

    def _start_reader(self) -> None:
        try:
            self._submit(self._read_messages)
        except RuntimeError:  # shutting down: nobody will take the messages
            with self._lock:
                self._reading = False
                self._inbox.clear()

    def _read_messages(self) -> None:
        """The reader role: hand the inbox's messages to the stream, in order."""
        moved_on = False

        def inline(job: Callable[[], None]) -> None:
            """A request that is the session's only one: run it here if it is also the
            last message in (the reader role ends first), else as a job of its own."""
            nonlocal moved_on
            with self._lock:
                last = not self._inbox
                if last:
                    self._reading = False
            if not last:
                self._run_elsewhere(job)
                return
            moved_on = True
            job()

        while True:
            with self._lock:
                if not self._inbox or self._closed:
                    self._reading = False
                    return
                was_full = not self.readable
                op, payload = self._inbox.popleft()
                self._inbox_bytes -= len(payload)
            if was_full:
                self._wake()  # the dispatcher may read again
            if op == wsframe.OP_BINARY:
                self.stream.send(jsonrpc.error_response(None, InvalidRequest(
                    "Invalid Request: binary frames are not accepted; send JSON text frames")))
                continue
            self._service.store.touch(self._session.id)
            try:
                self.stream.feed(payload, inline)
            except Exception:  # a bug: the connection goes on
                log.exception("a WebSocket message failed")
            if moved_on:
                return

    def _clean_up(self) -> None:
        """Cancel the calls in flight and close the session (its hooks may block)."""
        self.stream.close()
        self._service.close_session(self._session.id)


def _nothing() -> None:
    pass
