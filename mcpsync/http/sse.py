"""Server-sent events for Streamable HTTP: framing, per-stream event logs, resumption.

Theory of operation
-------------------
Every SSE stream of a session (one per POST answered with SSE, plus the standalone GET
stream) has a ``StreamLog``: its events in order, each with the id ``<stream>.<n>``.
Ids are unique across the session's streams because the stream part is. A client that
lost a stream reconnects with ``GET`` + ``Last-Event-ID``; ``SessionStreams.take_over``
finds the stream from the id (and stops the writer it replaces), and ``follow`` replays
what came after it, then follows the stream live until it finishes. Logs are bounded:
``STREAM_EVENT_LIMIT`` events per stream and ``STREAMS_KEPT`` finished streams per
session, oldest dropped first.

The standalone GET stream carries what is not tied to a request (list_changed,
resources/updated). Messages sent while no GET stream is attached wait in its log and go
out when one attaches.

A GET stream's body is a ``Follower`` (``follow_standalone``, ``follow``), a
``sync.pollable.Pollable``: it takes what is new from the log when polled, and the log
calls its ``wake`` when an event is appended, the stream ends or another GET takes it
over. mcpsync's front end parks it (no thread while it waits); any other WSGI server
iterates it on the request's thread. Every ``SSE_KEEPALIVE_S`` it sends a comment (which
also finds a dead client) and touches the session.

``SessionStreams._cond`` (a Condition over one Lock) guards every log of the session, the
attached flags, each log's follower ``wake`` and ``closed``. Writers append under it and
notify; followers read under it. Wake-ups and socket writes happen outside it.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from typing import Any, Callable

from ..protocol.dispatch import encode_outgoing
from .base import EventStream

SSE_RETRY_MS = 1000          # what clients wait before reconnecting a closed stream
SSE_KEEPALIVE_S = 15.0       # comment line on an idle stream (detects dead clients too)
STREAM_EVENT_LIMIT = 1000    # events kept per stream for replay
STREAMS_KEPT = 32            # finished POST streams kept per session for resumption
STANDALONE = "0"             # stream id of the session's GET stream

KEEPALIVE = b": keepalive\n\n"


def event(event_id: str, data: bytes) -> bytes:
    return b"event: message\nid: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def touching(touch: Callable[[], Any], events: Follower, first: bytes,
             on_close: Callable[[], Any] | None = None) -> Follower:
    """A GET stream's body: ``first``, then the events; every keep-alive also calls
    ``touch`` (an open stream keeps its session from idling out). ``on_close`` runs once
    when the stream ends (on whichever thread ends it: it must not block)."""
    events.touch = touch
    events.first = first
    events.on_close = on_close
    return events


def priming(event_id: str, retry_ms: int = SSE_RETRY_MS) -> bytes:
    """An event with an id and empty data: lets a client resume a stream it has not yet
    received anything on (2025-11-25 SSE polling)."""
    return b"id: " + event_id.encode() + b"\nretry: " + str(retry_ms).encode() + b"\ndata: \n\n"


class StreamLog:
    """The events of one SSE stream (fields guarded by the owning ``SessionStreams._cond``)."""

    __slots__ = ("id", "events", "next_n", "done", "attached", "epoch", "wake")

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.events: deque[tuple[int, bytes]] = deque(maxlen=STREAM_EVENT_LIMIT)
        self.next_n = 1          # n = 0 is the priming event
        self.done = False        # the final response has been logged
        self.attached = False    # a live HTTP response is writing this stream
        # Which writer owns the stream: bumped when a resuming GET takes it over, so the
        # writer it replaced (whose client may be gone unnoticed) stops writing.
        self.epoch = 0
        self.wake: Callable[[], None] | None = None  # the attached Follower's, called
                                                      # (outside the lock) on every change


class SessionStreams:
    """All SSE stream state of one Streamable HTTP session."""

    def __init__(self) -> None:
        # Guards every StreamLog of this session, `closed`, and the dict below.
        self._cond = threading.Condition(threading.Lock())
        self._streams: OrderedDict[str, StreamLog] = OrderedDict()
        self._ids = itertools.count(1)
        self.standalone = StreamLog(STANDALONE)
        self._delivered = 0      # standalone events already written to some GET stream
        self.closed = False

    # ---- POST streams ------------------------------------------------------------------------

    def open_stream(self) -> StreamLog:
        with self._cond:
            log = StreamLog(str(next(self._ids)))
            log.attached = True
            self._streams[log.id] = log
            self._trim()
            return log

    def append(self, log: StreamLog, msg: Any, *, final: bool = False) -> bytes:
        """Log one message on ``log``; returns its SSE bytes for the live writer."""
        data = encode_outgoing(msg) or b"null"  # None only for a notification we could not encode
        with self._cond:
            n = log.next_n
            log.next_n += 1
            framed = event(f"{log.id}.{n}", data)
            log.events.append((n, framed))
            wake = self._changed(log, final)
        if wake is not None:
            wake()
        return framed

    def finish(self, log: StreamLog) -> None:
        """``log`` ends without a final message (its request was cancelled)."""
        with self._cond:
            wake = self._changed(log, True)
        if wake is not None:
            wake()

    def _changed(self, log: StreamLog, done: bool) -> Callable[[], None] | None:
        """(Under ``_cond``.) ``log`` has news, its end if ``done``: tell the waiters;
        returns its follower's ``wake``, to call once the lock is released."""
        if done:
            log.done = True
            self._trim()
        self._cond.notify_all()
        return log.wake

    def detach(self, log: StreamLog, epoch: int = 0) -> None:
        """The live response of ``log`` (attached with ``epoch``) ended, closed by us or
        lost; a resume may follow. A writer that was taken over detaches nothing."""
        with self._cond:
            if log.epoch == epoch:
                log.attached = False
            self._cond.notify_all()

    def owns(self, log: StreamLog, epoch: int) -> bool:
        with self._cond:
            return log.epoch == epoch

    def _trim(self) -> None:
        finished = [k for k, v in self._streams.items() if v.done]
        for key in finished[:max(0, len(finished) - STREAMS_KEPT)]:
            del self._streams[key]

    # ---- the standalone GET stream ------------------------------------------------------------

    def push(self, msg: Any) -> None:
        """Queue a message on the standalone stream (the session's ``send``)."""
        data = encode_outgoing(msg)
        if data is not None:
            self.push_encoded(data)

    def push_encoded(self, data: bytes) -> None:
        """Queue one already encoded message on the standalone stream."""
        with self._cond:
            if self.closed:
                return
            log = self.standalone
            n = log.next_n
            log.next_n += 1
            log.events.append((n, event(f"{STANDALONE}.{n}", data)))
            self._cond.notify_all()
            wake = log.wake
        if wake is not None:
            wake()

    def attach_standalone(self) -> int | None:
        """Claim the standalone stream for a GET: its epoch, or None if one is attached."""
        with self._cond:
            if self.standalone.attached or self.closed:
                return None
            self.standalone.attached = True
            self.standalone.epoch += 1
            return self.standalone.epoch

    def follow_standalone(self, epoch: int, after: int | None = None) -> Follower:
        """The body of a GET on the standalone stream: its events (undelivered ones first, or
        those after ``after``), then live ones, with keep-alives; it ends when the session
        closes or another GET takes the stream over. The caller attached with ``epoch``;
        closing the body detaches."""
        return Follower(self, self.standalone, epoch,
                        self._delivered if after is None else after)

    # ---- resumption ----------------------------------------------------------------------------

    def take_over(self, last_event_id: str) -> tuple[StreamLog, int, int] | None:
        """Claim the stream that ``Last-Event-ID`` names for a resuming GET: (log, the event
        number to replay after, the new epoch), or None for an unknown or expired stream.
        A writer still attached (its client gone unnoticed, or a duplicate reader) stops."""
        stream, _, n = last_event_id.partition(".")
        try:
            after = int(n)
        except ValueError:
            return None
        with self._cond:
            log = self.standalone if stream == STANDALONE else self._streams.get(stream)
            if log is None or self.closed:
                return None
            log.epoch += 1
            log.attached = True
            self._cond.notify_all()
            wake, log.wake = log.wake, None  # the writer it replaces: it ends
        if wake is not None:
            wake()
        return log, after, log.epoch

    def follow(self, log: StreamLog, after: int, epoch: int) -> Follower:
        """The body of a resuming GET: ``log`` replayed after event ``after``, then followed
        live until its final event (or until another resume takes it over)."""
        if log is self.standalone:
            return self.follow_standalone(epoch, after)
        return Follower(self, log, epoch, after)

    def _take(self, follower: Follower) -> tuple[bytes, bool]:
        """What ``follower`` has not sent yet, and whether its stream is over after that."""
        log = follower.log
        with self._cond:
            batch = [(n, e) for n, e in log.events if n > follower.cursor]
            if batch:
                follower.cursor = batch[-1][0]
            if log is self.standalone:
                self._delivered = max(self._delivered, follower.cursor)
                over = self.closed or log.epoch != follower.epoch
            else:  # a request's stream: over once its last event is out
                over = ((log.done or self.closed) and follower.cursor >= log.next_n - 1) \
                    or log.epoch != follower.epoch
        return b"".join(e for _, e in batch), over

    def _watch(self, follower: Follower, wake: Callable[[], None] | None) -> None:
        """Set (or, with None, clear) ``follower``'s wake-up on its log, if it still owns it."""
        with self._cond:
            log = follower.log
            if log.epoch == follower.epoch:
                log.wake = wake

    def close(self) -> None:
        """The session ended: every follower returns."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            wakes = [log.wake for log in (self.standalone, *self._streams.values())
                     if log.wake is not None]
        for wake in wakes:
            wake()


class Follower(EventStream):
    """A GET stream's body (see the module docstring): ``first`` (set by ``touching``),
    then the log's events after ``cursor``; a keep-alive comment every tick."""

    tick_s = SSE_KEEPALIVE_S

    def __init__(self, streams: SessionStreams, log: StreamLog, epoch: int, cursor: int) -> None:
        self.streams = streams
        self.log = log
        self.epoch = epoch
        self.cursor = cursor              # the last event number sent
        self.first: bytes | None = None
        self.touch: Callable[[], Any] | None = None
        self.on_close: Callable[[], Any] | None = None
        self._keepalive = False           # a tick came: send a comment if nothing else goes
        self._closed = False

    def attach(self, wake: Callable[[], None]) -> None:
        self.streams._watch(self, wake)

    def poll(self) -> bytes | None:
        first, self.first = self.first, None
        data, over = self.streams._take(self)
        if first:
            data = first + data
        if data:
            self._keepalive = False
            return data
        if over:
            return None
        if self._keepalive:
            self._keepalive = False
            return KEEPALIVE
        return b""

    def tick(self) -> None:
        self._keepalive = True
        if self.touch is not None:
            self.touch()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.streams._watch(self, None)
        self.streams.detach(self.log, self.epoch)
        if self.on_close is not None:
            self.on_close()
