"""Parked streams: long-lived responses and taken-over connections the dispatcher drives.

Theory of operation
-------------------
A WSGI app that answers with a stream that waits for events (an SSE stream, a
``subscriptions/listen`` stream) or that serves a connection after an ``Upgrade`` (a
WebSocket) need not keep a worker thread for it. The front end offers
``environ["mcpsync.park"]``: ``park(stream)`` (or ``park(stream, raw=True)`` for an upgraded
connection) returns the WSGI response to return, a ``Parked``. The stream is a
``mcpsync.sync.pollable.Pollable`` (a ``Duplex`` when raw): it says what it has when polled
and calls ``wake()`` when it may have more.

The bridge sends the response head (chunked), or nothing for a raw connection, and gives
the channel back to the dispatcher in state ``STREAM``. From then on, on the dispatcher
thread (``ParkedStreams``, a part of the ``Dispatcher``):

* ``wake()`` (any thread) queues the channel and wakes the dispatcher, which calls
  ``poll()`` while the channel's unsent bytes (``Channel.out``) are under
  ``Limits.write_buffer``, frames what it gets and sends it. A peer that does not read
  stops the polling (backpressure); the write timeout cuts it.
* ``tick()`` runs every ``tick_s`` seconds from the deadline heap (keep-alive comments,
  pings).
* A raw connection's bytes are read and ``feed()`` to it while it is ``readable`` and its
  unsent bytes are under the bound: a client that does not read is not read either. A
  response stream's peer sends nothing but, at most, its next request (kept for after the
  stream) or its EOF (it went away: the stream is closed).
* When ``poll()`` returns None the last bytes (and the chunked terminator) are flushed;
  then the connection is kept alive for the next request, or closed (raw, HTTP/1.0,
  ``Connection: close``, shutdown). ``close()`` is called on the stream whenever the
  channel leaves ``STREAM``.

Shutdown waits for parked streams like for requests in progress (apps end theirs when
told to drain: ``HttpApp.end_streams``) and cuts what is left at the deadline.

Elsewhere (werkzeug, gunicorn, or a middleware that wraps the response) a ``Parked`` is an
ordinary WSGI iterable that drives the stream on the request's thread
(``sync.pollable.iterate``).
"""
from __future__ import annotations

import functools
import logging
from collections import deque
from typing import Any, Iterator

from ..sync.pollable import Pollable, iterate
from .channel import RECV_BYTES, STREAM, Channel
from .deadlines import NEVER, Deadlines
from .limits import Limits
from .poller import Poller

log = logging.getLogger("mcpsync.http")

READ_TURN_BYTES = 256 * 1024   # read per parked connection per loop turn
PUMP_TURN_BYTES = 1 << 20      # polled from one stream per loop turn while the kernel takes it


class Parked:
    """A parked stream as a WSGI response (see the module docstring). The bridge takes it
    over (``taken``); otherwise iterating it drives the stream on the calling thread."""

    __slots__ = ("stream", "raw", "taken", "_iter")

    def __init__(self, stream: Pollable, raw: bool) -> None:
        self.stream = stream
        self.raw = raw
        self.taken = False
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._iter = iterate(self.stream)
        return self._iter

    def close(self) -> None:
        """WSGI's ``close()``: ends the stream, unless the front end drives it now."""
        if self.taken:
            return
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]
        else:
            self.stream.close()


def park(stream: Pollable, raw: bool = False) -> Parked:
    """``environ["mcpsync.park"]``: the WSGI response that parks ``stream`` (raw: the whole
    connection after an ``Upgrade``; no head, no framing, closed when the stream ends)."""
    return Parked(stream, raw)


class ParkedStreams:
    """The dispatcher's handling of ``STREAM`` channels (a base of ``Dispatcher``; every
    method runs on the dispatcher thread except ``wake_stream``)."""

    _limits: Limits
    _poller: Poller
    _deadlines: Deadlines
    _pending_reads: list[Channel]
    stopping: bool
    timed_out: int

    def __init__(self) -> None:
        self._woken: deque[Channel] = deque()  # any thread appends (wake_stream)

    # what the Dispatcher provides
    def _wake(self) -> None: raise NotImplementedError
    def _set_state(self, chan: Channel, state: str) -> None: raise NotImplementedError
    def _write_out(self, chan: Channel, now: float) -> bool: raise NotImplementedError
    def _close(self, chan: Channel) -> None: raise NotImplementedError
    def _next_request(self, chan: Channel, now: float) -> None: raise NotImplementedError

    # --- any thread ----------------------------------------------------------------------------

    def wake_stream(self, chan: Channel) -> None:
        """A parked stream may have something new: poll it soon. Never blocks."""
        if not chan.woken:
            chan.woken = True
            self._woken.append(chan)
            self._wake()

    # --- the dispatcher thread -----------------------------------------------------------------

    def _start_stream(self, chan: Channel, now: float) -> None:
        """A worker gave ``chan`` back with a parked stream: drive it from now on."""
        self._set_state(chan, STREAM)
        chan.stream_done = False
        chan.progress_at = now
        try:
            chan.stream.attach(functools.partial(self.wake_stream, chan))
        except Exception:
            log.exception("a parked stream failed to start")
            self._close(chan)
            return
        self._arm_tick(chan, now)
        self._pump(chan, now)
        if chan.state == STREAM and chan.read_pending:  # bytes came while a worker had it
            self._stream_read(chan, now)

    def _take_woken(self, now: float) -> None:
        woken = self._woken
        for _ in range(len(woken)):  # (one that asks for another turn is taken next turn)
            chan = woken.popleft()
            chan.woken = False  # before polling: a wake-up from now on queues it again
            if chan.state == STREAM:
                self._pump(chan, now)
                if chan.state == STREAM and chan.read_pending:
                    self._stream_read(chan, now)  # (a duplex stream may take bytes again)

    def _pump(self, chan: Channel, now: float) -> None:
        """Poll the stream while its unsent bytes are under the bound and send what it gave;
        again while the kernel takes it all, up to ``PUMP_TURN_BYTES`` (then next turn)."""
        stream = chan.stream
        framing = chan.framing
        limit = self._limits.write_buffer
        budget = PUMP_TURN_BYTES
        period = stream.tick_s  # (it may have shortened: a closing handshake's timeout)
        if period is not None and now + period < chan.tick_at:
            chan.tick_at = now + period
        while True:
            pieces: list[bytes] = []
            size = len(chan.out)
            full = False
            while not chan.stream_done:
                if size >= limit:
                    full = True  # more may be waiting: poll again once this is out
                    break
                try:
                    data = stream.poll()
                except Exception:
                    log.exception("a parked stream failed")
                    chan.close_after = True
                    data = None
                if data is None:
                    chan.stream_done = True
                    if framing is not None:
                        pieces.append(framing.end())
                    break
                if not data:
                    break
                piece = framing.frame(data) if framing is not None else data
                pieces.append(piece)
                size += len(piece)
            if pieces:
                budget -= size
                if not chan.out:
                    chan.progress_at = now  # the write timeout counts from the first byte owed
                    chan.out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                else:
                    chan.out = b"".join([bytes(chan.out), *pieces])
            self._stream_flush(chan, now)
            if not full or chan.out or chan.state != STREAM:
                return
            if budget <= 0:  # a fast producer: let the others have this turn
                chan.woken = True
                self._woken.append(chan)
                return

    def _stream_flush(self, chan: Channel, now: float) -> None:
        if not self._write_out(chan, now):
            return
        if chan.stream_done:
            self._end_stream(chan, now)
            return
        self._deadlines.arm(chan)

    def _end_stream(self, chan: Channel, now: float) -> None:
        """The stream is over and its bytes are out: keep the connection alive or close."""
        framing = chan.framing
        self._drop_stream(chan)
        if framing is not None and framing.keep_alive and not chan.close_after \
                and not self.stopping:
            self._next_request(chan, now)
        else:
            self._close(chan)

    def _drop_stream(self, chan: Channel) -> None:
        """Tell the stream the front end is done with it (once)."""
        stream = chan.stream
        if stream is None:
            return
        chan.stream = None
        chan.framing = None
        try:
            stream.close()
        except Exception:
            log.exception("close() of a parked stream failed")

    def _stream_read(self, chan: Channel, now: float) -> None:
        """The peer of a parked stream sent something (or went away)."""
        chan.read_pending = False
        if chan.framing is None:
            self._duplex_read(chan, now)
            return
        # A response stream: the peer may send its next request (kept in the parser for
        # after the stream, up to a head's worth) or its EOF (it went away).
        reader = chan.reader
        while True:
            if reader.buffered > self._limits.max_head:
                chan.read_pending = True  # read on after the stream (backpressure)
                return
            data = chan.recv_now()
            if data is None:
                return
            if not data:
                self._close(chan)
                return
            reader.feed(data)
            if len(data) < RECV_BYTES and not chan.hangup:
                return

    def _duplex_read(self, chan: Channel, now: float) -> None:
        stream: Any = chan.stream
        limit = self._limits.write_buffer
        taken = 0
        while True:
            if len(chan.out) >= limit or not stream.readable:
                if chan.hangup:  # the peer is gone and what it sent will not be taken
                    self._close(chan)
                    return
                chan.read_pending = True  # until it drains or the stream wakes us
                if not self._poller.edge_triggered:
                    self._poller.pause(chan.fd)
                break
            data = chan.recv_now()
            if data is None:
                break
            try:
                stream.feed(data)
            except Exception:
                log.exception("a parked connection failed")
                self._close(chan)
                return
            if not data:
                break
            taken += len(data)
            if len(data) < RECV_BYTES and not chan.hangup:
                break
            if taken >= READ_TURN_BYTES:  # enough for one turn: others wait too
                chan.read_pending = True
                self._pending_reads.append(chan)
                break
        if not chan.read_pending and not self._poller.edge_triggered:
            self._poller.resume(chan.fd)
        self._pump(chan, now)  # (what the bytes made it say: pongs, a close frame)

    def _on_stream_event(self, chan: Channel, readable: bool, writable: bool,
                         now: float) -> None:
        if writable and chan.out:
            self._pump(chan, now)
        if readable and chan.state == STREAM:
            self._stream_read(chan, now)

    def _stream_due(self, chan: Channel, now: float) -> None:
        """The deadline heap: the write timeout, or the stream's tick."""
        limits = self._limits
        if chan.out and limits.write_timeout is not None \
                and now >= chan.progress_at + limits.write_timeout:
            self.timed_out += 1
            self._close(chan)
            return
        if chan.tick_at <= now:
            try:
                chan.stream.tick()
            except Exception:
                log.exception("tick() of a parked stream failed")
                self._close(chan)
                return
            self._arm_tick(chan, now)
            self._pump(chan, now)

    @staticmethod
    def _arm_tick(chan: Channel, now: float) -> None:
        period = chan.stream.tick_s
        chan.tick_at = now + period if period else NEVER
