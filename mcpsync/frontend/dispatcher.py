"""``Dispatcher``: one thread owns every socket that is waiting.

Theory of operation
-------------------
The dispatcher thread (``mcpsync-http-dispatcher``) waits on one poller for the listening
socket, a wake-up socket pair and every ``Channel`` it owns. It accepts; reads heads and
bodies and parses them (``h1``); hands each complete request to the ``WorkerPool``; flushes
response bytes a slow peer did not take at once; and enforces every per-connection limit.
So an idle keep-alive connection, a slow client or a response waiting for its reader costs
a ``Channel`` (a few hundred bytes), not a thread.

A channel's life (``channel.py`` names the states)::

    accept -> IDLE --first byte--> HEAD --head--> BODY --body--> BUSY (the pool; a worker)
    BUSY --given back--> FLUSH (bytes left) --> IDLE | next pipelined request | LINGER | close
    BUSY --a parked stream--> STREAM (parked.py) --its end--> IDLE | close
    IDLE --keep-alive timeout, eviction, peer's EOF--> close
    HEAD/BODY --deadline--> 408;  BUSY --queued past queue_timeout--> 503;  then LINGER

Sockets are registered once, edge-triggered (``poller.py``): an event means new bytes, so
the dispatcher reads until the kernel is dry. A worker that is done with a keep-alive
channel and has nothing left for the dispatcher to do puts it on the return queue without
a wake-up: the next request's event makes the loop take the queue first, so an event is
never seen before its channel's return. Anything else it gives back (bytes to flush, a
pipelined request, a close, a parked stream) comes with a wake-up. Bytes that arrive
while a worker has the channel are noted (``read_pending``) and read when it is back; a
worker that waits for its connection's next request itself (``Bridge``) takes the socket
out of the poller meanwhile (``hold``). Where epoll is missing the portable poller does
not watch a channel a worker has, and every give-back wakes the loop. Descriptor numbers
are reused at once: an event of this turn's batch for a number closed during the turn
was the closed connection's, and is dropped (a connection accepted in the same turn may
have the number already).

Limits (``Limits``): the connection caps (``acceptor.py``), a whole-head deadline, a
minimum body rate after a grace period, the keep-alive timeout, the write timeout (no
progress at all), a request's wait for a worker (``queue_timeout``: 503), and the bounds
of the parser. Backpressure: a channel with unsent response bytes is not read, so its
next request waits until the peer has taken the previous response.

Deadlines (``deadlines.py``) are one heap with at most one live entry per channel.

Everything here runs on the dispatcher thread except ``give_back``, ``wake_stream`` and
``request_stop`` (any thread) and ``close_all`` (the thread that shuts down, once this
loop has ended). Fields shared with those: ``_returned`` and ``_woken`` (deques:
append/popleft are atomic), the wake flag, ``_stop_at`` and ``stopping`` (single writes
read as hints), the counters (read for metrics). There is no lock.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from typing import Any, Callable

from .channel import BODY, BUSY, CLOSED, FLUSH, HEAD, IDLE, LINGER, RECV_BYTES, STREAM, Channel
from .deadlines import Deadlines
from .h1 import CLOSED as PEER_CLOSED
from .h1 import NEED_DATA, Data, EndOfMessage, H1Error, Request
from .limits import Limits
from .poller import READABLE, TROUBLE, WRITABLE, Poller, default_poller
from .acceptor import RETRY_LATER, Acceptor
from .parked import ParkedStreams
from .pool import WorkerPool
from .response import CONTINUE, error_response

log = logging.getLogger("mcpsync.http")

TICK_S = 1.0                # the longest sleep: returns and the pool queue are looked at
READ_TURN_BYTES = 256 * 1024  # read per channel per loop turn, so that one cannot hog it
POLL_RESOLUTION_S = 0.001   # epoll sleeps whole milliseconds: a shorter timeout is 1 ms
STATES = (IDLE, HEAD, BODY, BUSY, FLUSH, LINGER, STREAM)
_ACTIVE = frozenset((BODY, BUSY, FLUSH, STREAM))  # a request in progress: shutdown waits for it


class Dispatcher(Acceptor, ParkedStreams):
    """See the module docstring. ``serve(channel)`` runs one request on a worker thread and
    ends with ``give_back(channel)``."""

    def __init__(self, listener: socket.socket, limits: Limits, pool: WorkerPool,
                 serve: Callable[[Channel], None], poller: Poller | None = None) -> None:
        ParkedStreams.__init__(self)
        self._listener = listener
        self._listen_fd = listener.fileno()
        self._limits = limits
        self._pool = pool
        self._serve = serve
        self._poller = poller if poller is not None else default_poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._chans: dict[int, Channel] = {}
        self._per_client: dict[str, int] = {}
        self._idle: collections.OrderedDict[Channel, None] = collections.OrderedDict()
        self._deadlines = Deadlines(limits)
        self._returned: collections.deque[Channel] = collections.deque()  # any thread appends
        self._pending_reads: list[Channel] = []  # stopped reading before the kernel ran dry
        self._closed_now: set[int] = set()  # descriptors closed during this loop turn
        self._wake_pending = False
        self._accept_paused_until = 0.0
        self._stop_at: float | None = None  # set by request_stop()
        self.stopping = False                # read by workers: no more keep-alive
        self.clean = True                    # no request had to be cut at shutdown
        self._active = 0                     # channels in _ACTIVE states
        self.counts = dict.fromkeys(STATES, 0)  # channels per state (fixed keys: readable)
        self.accepted = self.refused = self.evicted = self.timed_out = self.shed = 0
        self.exited = threading.Event()
        self._finished = False               # close_all() has run: late give-backs close

    # --- any thread --------------------------------------------------------------------------

    def give_back(self, chan: Channel) -> None:
        """A worker is done with ``chan`` (its response is sent or in ``chan.out``)."""
        reader = chan.reader
        if (self._poller.edge_triggered and not chan.out and not chan.close_after
                and chan.stream is None and not reader.buffered and not reader.at_eof
                and not self.stopping):
            # The usual keep-alive case: nothing to do until the peer's next request, whose
            # event makes the loop take the return queue first. No wake-up, no switch.
            chan.quiet = True
            self._returned.append(chan)
            if chan.read_pending:  # ... unless the request came before we got here
                self._wake()
            return
        self._returned.append(chan)
        if self._finished:  # the loop is gone (shutdown gave up on this request): close here
            while self._returned:
                late = self._returned.popleft()
                self._drop_stream(late)
                with contextlib.suppress(OSError):
                    late.sock.close()
            return
        self._wake()

    def request_stop(self, deadline: float) -> None:
        """Stop accepting, close idle connections, serve busy ones until ``deadline``
        (monotonic), then cut the rest and end the loop."""
        self._stop_at = deadline
        self._wake_pending = False
        self._wake()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except OSError:  # buffer full (a wake-up is pending anyway) or closed
                pass

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """The dispatcher loop; returns after ``request_stop`` has run its course."""
        poller = self._poller
        try:
            poller.watch(self._listen_fd)
            poller.watch(self._wake_fd)
            pool = self._pool
            pool.attach_reclaimer()
            while True:
                pool.reclaimer_awake = False  # first: a worker parking from now on sees it
                timeout = self._timeout()
                events = poller.poll(timeout)
                pool.reclaimer_awake = True
                self._wake_pending = False  # before taking returns: a later give-back wakes
                now = time.monotonic()
                closed = self._closed_now
                closed.clear()
                self._take_returns(now)
                if self._woken:
                    self._take_woken(now)
                for fd, mask in events:
                    chan = self._chans.get(fd)
                    if chan is not None:
                        if fd not in closed:  # else the event was the closed connection's,
                            self._on_event(chan, mask, now)  # not the new one's with its number
                    elif fd == self._listen_fd:
                        self._accept(now)
                    elif fd == self._wake_fd:
                        self._drain_wake()
                if self._pending_reads:
                    pending, self._pending_reads = self._pending_reads, []
                    for chan in pending:
                        if chan.read_pending and chan.state in (IDLE, HEAD, BODY):
                            self._read(chan, now)
                        elif chan.read_pending and chan.state == STREAM:
                            self._stream_read(chan, now)
                if self._deadlines.next_at <= now:
                    self._run_timers(now)
                if pool.contended:  # hand the slots of workers blocked in user code on
                    pool.reclaim(now)
                if pool.queued and self._limits.queue_timeout is not None:
                    for chan in pool.expire(now - self._limits.queue_timeout):
                        self.shed += 1
                        if self._resume(chan):
                            self._fail(chan, 503, now, RETRY_LATER)
                if self._accept_paused_until and now >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    if not self.stopping:
                        poller.watch(self._listen_fd)
                if self._stop_at is not None and self._stop_step(now):
                    return
        except Exception:
            log.exception("the HTTP dispatcher failed")
            self.clean = False
            raise
        finally:
            self.exited.set()

    def _timeout(self) -> float:
        if self._pending_reads or self._woken:
            return 0.0
        timeout = TICK_S
        now = time.monotonic()
        timeout = min(timeout, self._deadlines.next_at - now)
        if self._accept_paused_until:
            timeout = min(timeout, self._accept_paused_until - now)
        if self._stop_at is not None:
            timeout = min(timeout, 0.05, self._stop_at - now)
        if self._pool.contended:  # going to sleep: steal what would be due before we wake
            due = self._pool.reclaim(now + POLL_RESOLUTION_S)
            if due is not None:
                timeout = min(timeout, due - now)
        return max(timeout, 0.0)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _take_returns(self, now: float) -> None:
        returned = self._returned
        while returned:
            chan = returned.popleft()
            chan.ticket = None
            if chan.stream is not None:  # a parked stream: the dispatcher drives it now
                if self._resume(chan):
                    self._start_stream(chan, now)
            elif not chan.out and chan.linger and self._resume(chan):
                self._start_linger(chan, now)  # the answer is out: discard the rest, then close
            elif not chan.out and (chan.close_after or self.stopping):
                self._close(chan)  # (an app that took the socket over may have closed it)
            elif not self._resume(chan):
                pass
            elif chan.quiet:
                chan.quiet = False
                self._enter_idle(chan, now)
                if chan.read_pending:
                    self._read(chan, now)
            elif chan.out:
                self._flush(chan, now)
            else:
                self._next_request(chan, now)

    def _resume(self, chan: Channel) -> bool:
        """Watch ``chan`` again after a worker had it (level-triggered pollers only)."""
        try:
            self._poller.resume(chan.fd)
        except (OSError, ValueError, KeyError):
            self._close(chan)
            return False
        return True

    def _on_event(self, chan: Channel, mask: int, now: float) -> None:
        if mask & TROUBLE:
            chan.hangup = True  # a short read may then hide the EOF: read on to EAGAIN
        state = chan.state
        if state == BUSY:  # a worker has it: note the bytes, unless it is back already
            chan.read_pending = True
            self._take_returns(now)  # (a give-back that raced the flag is in the queue)
            if chan.state == BUSY:
                return
        elif state == FLUSH:
            if mask & (READABLE | TROUBLE):
                chan.read_pending = True  # read once the response is out (backpressure)
            if mask & (WRITABLE | TROUBLE):
                self._flush(chan, now)
            return
        elif state == STREAM:
            self._on_stream_event(chan, bool(mask & (READABLE | TROUBLE)),
                                  bool(mask & (WRITABLE | TROUBLE)), now)
            return
        if chan.state == LINGER:
            self._linger_read(chan)
        elif chan.state != CLOSED:
            self._read(chan, now)

    # --- reading -----------------------------------------------------------------------------

    def _read(self, chan: Channel, now: float) -> None:
        """Take everything the kernel holds for ``chan`` (edge-triggered: there will be no
        other event for it) and act on it."""
        chan.read_pending = False
        reader = chan.reader
        while True:
            try:
                data = chan.sock.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except OSError:
                self._close(chan)
                return
            reader.feed(data)
            if not data or (len(data) < RECV_BYTES and not chan.hangup):
                break  # short: nothing more was there (edge-triggered: EOF comes as an event)
            if reader.buffered >= READ_TURN_BYTES:  # enough for one turn: others wait too
                chan.read_pending = True
                self._pending_reads.append(chan)
                break
        self._advance(chan, now)

    def _advance(self, chan: Channel, now: float) -> None:
        """Turn what the reader holds into progress: a request for the pool, a wait for
        more bytes, a clean close, or an error answer."""
        reader = chan.reader
        limits = self._limits
        try:
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is Data:
                    chan.body.append(event.data)  # type: ignore[union-attr]
                    chan.body_size += len(event.data)  # type: ignore[union-attr]
                    if chan.body_size > limits.body_buffer:
                        self._submit(chan, now)  # the worker reads the rest itself
                        return
                elif kind is Request:
                    request: Request = event  # type: ignore[assignment]
                    chan.request = request
                    length = request.length
                    if length != 0 and (length is None or reader.buffered < length):
                        if length is not None and length > limits.body_buffer:
                            self._submit(chan, now)  # read (and 100-continued) by the worker
                            return
                        if request.expect_continue and chan.sock.send(CONTINUE) != len(CONTINUE):
                            self._close(chan)  # cannot happen with an empty send buffer
                            return
                        self._set_state(chan, BODY)  # (not when the body is here already)
                        chan.started_at = now
                elif kind is EndOfMessage:
                    self._submit(chan, now)
                    return
                elif event is PEER_CLOSED:
                    self._close(chan)  # between requests: a clean end, nothing to answer
                    return
                else:
                    raise RuntimeError(f"unexpected parser event {event!r}")
        except H1Error as exc:
            log.debug("bad request from %s: %s", chan.client, exc)
            self._fail(chan, exc.status, now)
            return
        except OSError:
            self._close(chan)
            return
        if chan.request is None:
            if reader.started:
                if chan.state != HEAD:
                    self._set_state(chan, HEAD)
                    chan.started_at = now
                    self._deadlines.arm(chan)
            elif chan.state != IDLE:
                self._enter_idle(chan, now)
        else:
            self._deadlines.arm(chan)

    def _submit(self, chan: Channel, now: float) -> None:
        self._set_state(chan, BUSY)
        chan.started_at = now
        self._poller.pause(chan.fd)
        try:
            chan.ticket = self._pool.submit(self._serve, chan)
        except RuntimeError:  # the pool is shut down
            self._close(chan)

    # --- writing and closing -------------------------------------------------------------------

    def _flush(self, chan: Channel, now: float) -> None:
        """Send what is left of a response; then whatever comes next for the channel."""
        if chan.state != FLUSH:
            self._set_state(chan, FLUSH)
            chan.progress_at = now
        if not self._write_out(chan, now):
            return
        if chan.linger:
            self._start_linger(chan, now)
        elif chan.close_after or self.stopping:
            self._close(chan)
        else:
            self._next_request(chan, now)

    def _write_out(self, chan: Channel, now: float) -> bool:
        """Send what the kernel takes of ``chan.out``. True when all of it is out; else
        the rest waits for writability (and the write timeout), or the channel is closed."""
        if chan.out:
            try:
                sent = chan.sock.send(chan.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(chan)
                return False
            if sent:
                chan.out = memoryview(chan.out)[sent:]
                chan.progress_at = now
        if chan.out:
            self._deadlines.arm(chan)
            if not chan.writing:
                self._set_write(chan, True)
            return False
        chan.out = b""
        return not chan.writing or self._set_write(chan, False)

    def _set_write(self, chan: Channel, on: bool) -> bool:
        chan.writing = on
        try:
            self._poller.set_write(chan.fd, on)
        except (OSError, ValueError, KeyError):
            self._close(chan)
            return False
        return True

    def _next_request(self, chan: Channel, now: float) -> None:
        chan.request = None
        chan.body = []
        chan.body_size = 0
        self._enter_idle(chan, now)
        if chan.read_pending:
            self._read(chan, now)
        elif chan.reader.buffered or chan.reader.at_eof:
            self._advance(chan, now)  # a pipelined request, or the peer's EOF

    def _fail(self, chan: Channel, status: int, now: float, extra: str = "") -> None:
        """Answer ``status`` and close (after lingering for the peer to read it)."""
        chan.out = error_response(status, extra)
        chan.close_after = chan.linger = True
        chan.body = []
        self._flush(chan, now)

    def _start_linger(self, chan: Channel, now: float) -> None:
        """Half-close and discard the peer's input for a while, so that it reads our
        error response instead of a reset (LINGER_TIMEOUT_S, LINGER_MAX_BYTES)."""
        if chan.reader.at_eof:
            self._close(chan)
            return
        try:
            chan.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(chan)
            return
        self._set_state(chan, LINGER)
        chan.started_at = now
        self._deadlines.arm(chan)
        self._linger_read(chan)

    def _linger_read(self, chan: Channel) -> None:
        chan.read_pending = False
        while True:
            data = chan.recv_now()
            if data is None:
                return
            chan.discarded += len(data)
            if not data or chan.discarded > self._limits.linger_max:
                self._close(chan)
                return

    def _close(self, chan: Channel) -> None:
        if chan.state == CLOSED:
            return
        self._drop_stream(chan)
        self._set_state(chan, CLOSED)
        # An app that took the socket over may have closed it, and the number may belong
        # to a newer connection by now: only the channel the map names owns the number.
        if self._chans.get(chan.fd) is chan:
            del self._chans[chan.fd]
            self._poller.remove(chan.fd)
            self._closed_now.add(chan.fd)
        left = self._per_client.get(chan.client, 1) - 1
        if left:
            self._per_client[chan.client] = left
        else:
            self._per_client.pop(chan.client, None)
        try:
            chan.sock.close()
        except OSError:
            pass
        chan.body = []
        chan.out = b""

    # --- states and deadlines ------------------------------------------------------------------

    def _set_state(self, chan: Channel, state: str) -> None:
        old = chan.state
        if old == IDLE:
            self._idle.pop(chan, None)
        if old in _ACTIVE:
            self._active -= 1
        if old != CLOSED:
            self.counts[old] -= 1
        chan.state = state
        if state != CLOSED:
            self.counts[state] += 1
        if state in _ACTIVE:
            self._active += 1

    def _enter_idle(self, chan: Channel, now: float) -> None:
        if chan.state != IDLE:
            self._set_state(chan, IDLE)
        self._idle[chan] = None
        self._idle.move_to_end(chan)
        chan.started_at = now
        self._deadlines.arm(chan)

    def _run_timers(self, now: float) -> None:
        for chan in self._deadlines.expired(now):
            state = chan.state
            if state in (HEAD, BODY):
                self.timed_out += 1
                self._fail(chan, 408, now)
            elif state == STREAM:
                self._stream_due(chan, now)
            else:  # IDLE (keep-alive), FLUSH (write timeout), LINGER
                if state == FLUSH:
                    self.timed_out += 1
                self._close(chan)

    # --- stopping ------------------------------------------------------------------------------

    def _stop_step(self, now: float) -> bool:
        """One turn of a graceful stop; True when the loop should end."""
        assert self._stop_at is not None
        if not self.stopping:
            self.stopping = True
            try:
                if not self._accept_paused_until:
                    self._poller.unwatch(self._listen_fd)
                self._listener.close()
            except OSError:
                pass
        for chan in list(self._chans.values()):
            if chan.state in (IDLE, HEAD, LINGER):
                self._close(chan)
            elif chan.state == BUSY and chan.waiting:  # idle too: its worker waits for a
                try:                                   # next request (it reads EOF now)
                    chan.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        if not self._active:
            return True
        if now < self._stop_at:
            return False
        self.clean = False
        log.warning("shutdown: %d request(s) still in progress at the deadline", self._active)
        for chan in list(self._chans.values()):
            if chan.state != BUSY:
                self._close(chan)
            elif chan.ticket is not None and self._pool.cancel(chan.ticket):
                self._close(chan)  # never started
            else:
                try:  # a worker owns it: cut, never close (see channel.py)
                    chan.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return True

    def close_all(self) -> None:
        """After the loop has ended (or never ran): close the listener, what workers gave
        back, and every channel no worker owns. Called by the thread shutting down."""
        if not self.stopping:
            self.stopping = True
            self._listener.close()
        self._finished = True
        self._take_returns_closing()
        for chan in list(self._chans.values()):
            if chan.state != BUSY:
                self._close(chan)
        self._wake_r.close()
        self._wake_w.close()
        self._poller.close()

    def _take_returns_closing(self) -> None:
        while self._returned:
            self._close(self._returned.popleft())

    @property
    def poller(self) -> Poller:
        return self._poller

    @property
    def connections(self) -> int:
        return len(self._chans)
