"""Server-sent events for Streamable HTTP: framing, per-stream event logs, resumption.

Theory of operation
-------------------
Every SSE stream of a session (one per POST answered with SSE, plus the standalone GET
stream) has a ``StreamLog``: its events in order, each with the id ``<stream>.<n>``.
Ids are unique across the session's streams because the stream part is. A client that
lost a stream reconnects with ``GET`` + ``Last-Event-ID``; ``SessionStreams.resume``
finds the stream from the id and replays what came after it, then follows the stream
live until it finishes. Logs are bounded: ``STREAM_EVENT_LIMIT`` events per stream and
``STREAMS_KEPT`` finished streams per session, oldest dropped first.

The standalone GET stream carries what is not tied to a request (list_changed,
resources/updated). Messages sent while no GET stream is attached wait in its log and go
out when one attaches.

``SessionStreams._cond`` (a Condition over one Lock) guards every log of the session, the
attached flags and ``closed``. Writers append under it and notify; the GET generators wait
on it with a keep-alive timeout. Socket writes happen outside it.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Iterator

from ..protocol.dispatch import encode_outgoing

SSE_RETRY_MS = 1000          # what clients wait before reconnecting a closed stream
SSE_KEEPALIVE_S = 15.0       # comment line on an idle stream (detects dead clients too)
STREAM_EVENT_LIMIT = 1000    # events kept per stream for replay
STREAMS_KEPT = 32            # finished POST streams kept per session for resumption
STANDALONE = "0"             # stream id of the session's GET stream

KEEPALIVE = b": keepalive\n\n"


def event(event_id: str, data: bytes) -> bytes:
    return b"event: message\nid: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def touching(touch: Callable[[], Any], events: Iterator[bytes], first: bytes) -> Iterator[bytes]:
    """A GET stream's body: ``first``, then the events; every keep-alive also calls
    ``touch`` (an open stream keeps its session from idling out). Closing it closes
    ``events``."""
    try:
        yield first
        for chunk in events:
            if chunk is KEEPALIVE:
                touch()
            yield chunk
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def priming(event_id: str, retry_ms: int = SSE_RETRY_MS) -> bytes:
    """An event with an id and empty data: lets a client resume a stream it has not yet
    received anything on (2025-11-25 SSE polling)."""
    return b"id: " + event_id.encode() + b"\nretry: " + str(retry_ms).encode() + b"\ndata: \n\n"


class StreamLog:
    """The events of one SSE stream (fields guarded by the owning ``SessionStreams._cond``)."""

    __slots__ = ("id", "events", "next_n", "done", "attached", "epoch")

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.events: deque[tuple[int, bytes]] = deque(maxlen=STREAM_EVENT_LIMIT)
        self.next_n = 1          # n = 0 is the priming event
        self.done = False        # the final response has been logged
        self.attached = False    # a live HTTP response is writing this stream
        # Which writer owns the stream: bumped when a resuming GET takes it over, so the
        # writer it replaced (whose client may be gone unnoticed) stops writing.
        self.epoch = 0


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
            if final:
                log.done = True
                self._trim()
            self._cond.notify_all()
        return framed

    def finish(self, log: StreamLog) -> None:
        """``log`` ends without a final message (its request was cancelled)."""
        with self._cond:
            log.done = True
            self._trim()
            self._cond.notify_all()

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

    def attach_standalone(self) -> int | None:
        """Claim the standalone stream for a GET: its epoch, or None if one is attached."""
        with self._cond:
            if self.standalone.attached or self.closed:
                return None
            self.standalone.attached = True
            self.standalone.epoch += 1
            return self.standalone.epoch

    def follow_standalone(self, epoch: int, after: int | None = None) -> Iterator[bytes]:
        """Events of the standalone stream (undelivered ones first, or those after ``after``),
        then live ones, with keep-alives; ends when the session closes or another GET takes
        the stream over. The caller attached with ``epoch``; closing the generator detaches."""
        log = self.standalone
        try:
            cursor = self._delivered if after is None else after
            while True:
                with self._cond:
                    batch = [e for n, e in log.events if n > cursor]
                    if not batch and not self.closed and log.epoch == epoch:
                        self._cond.wait(SSE_KEEPALIVE_S)
                        batch = [e for n, e in log.events if n > cursor]
                    closed = self.closed or log.epoch != epoch
                    if batch:
                        cursor = log.next_n - 1
                        self._delivered = max(self._delivered, cursor)
                if batch:
                    yield b"".join(batch)
                elif closed:
                    return
                else:
                    yield KEEPALIVE
        finally:
            self.detach(log, epoch)

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
            return log, after, log.epoch

    def follow(self, log: StreamLog, after: int, epoch: int) -> Iterator[bytes]:
        """Replay ``log`` after event ``after``, then follow it live until its final event
        (or until another resume takes it over)."""
        if log is self.standalone:
            yield from self.follow_standalone(epoch, after)
            return
        cursor = after
        try:
            while True:
                with self._cond:
                    batch = [(n, e) for n, e in log.events if n > cursor]
                    if not batch and not log.done and not self.closed and log.epoch == epoch:
                        self._cond.wait(SSE_KEEPALIVE_S)
                        batch = [(n, e) for n, e in log.events if n > cursor]
                    finished = ((log.done or self.closed) and (not batch or batch[-1][0] == log.next_n - 1)
                                ) or log.epoch != epoch
                if batch:
                    cursor = batch[-1][0]
                    yield b"".join(e for _, e in batch)
                if finished:
                    return
                if not batch:
                    yield KEEPALIVE
        finally:
            self.detach(log, epoch)

    def close(self) -> None:
        """The session ended: every follower returns."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
