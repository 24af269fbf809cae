"""``Channel``: one accepted connection, its parser and buffers, and who owns it.

Ownership
---------
A channel has exactly one owner at a time, and only the owner touches its socket and
fields. The dispatcher thread owns it while it waits: accepted, idle between requests,
reading a head or a buffered body, flushing response bytes the peer was slow to take, or
lingering after an error. From the moment a request is complete (or its body is too large
to buffer) the channel is handed to the worker pool, and the worker running the request
owns it until it hands it back (``Dispatcher.give_back``). Hand-overs go through the pool's
lock or the dispatcher's return queue, which order the memory accesses. The one exception:
``shutdown()`` may call ``socket.shutdown()`` on a busy channel's socket to cut it; that
never closes the descriptor, so it cannot race a close and a reuse of the number.

Only the dispatcher closes sockets while its loop runs: a descriptor number is reused by
the next accept, and the dispatcher's fd → channel map must never point at a stranger.
Once the loop has ended, ``Dispatcher.close_all`` (on the thread that shuts down) closes
what no worker owns, and a worker that gives a channel back after that closes it itself.
An app that took a socket over (``werkzeug.socket``) may close it; the dispatcher then
only drops its entry.

The socket is non-blocking. The worker's helpers below wait with ``poll`` (inside
``may_block()``, so a waiting worker holds no pool slot) against deadlines.
"""
from __future__ import annotations

import select
import socket
import time
from typing import Any

from ..sync.blocking import may_block
from .h1 import Request, RequestReader
from .limits import Limits

RECV_BYTES = 65536
# Non-blocking sends and receives whatever the socket's mode: a worker waiting for the next
# request puts the socket in blocking mode (one system call per wait, not poll + recv).
DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# Channel states (the dispatcher's view; see dispatcher.py for what moves them).
IDLE = "idle"          # between requests (keep-alive), or accepted and silent so far
HEAD = "head"          # part of a request head has arrived
BODY = "body"          # the head is complete; the dispatcher is reading the body
BUSY = "busy"          # handed to the pool: queued for a worker, or running
FLUSH = "flush"        # response bytes wait for the peer to read (write buffer)
LINGER = "linger"      # after an error response: discarding input until EOF, then close
STREAM = "stream"      # a parked stream: the dispatcher writes what it produces (parked.py)
CLOSED = "closed"

_POLL = hasattr(select, "poll")


class PeerGone(ConnectionError):
    """The peer reset, timed out or went away while we read from or wrote to it."""


class Channel:
    """See the module docstring. Fields are the owner's; the dispatcher-only ones say so."""

    __slots__ = ("sock", "fd", "addr", "client", "reader", "state", "deadline", "armed",
                 "request", "body", "body_size", "started_at", "out", "progress_at",
                 "close_after", "linger", "discarded", "ticket", "quiet", "writing",
                 "read_pending", "hangup", "waiting", "stream", "framing", "tick_at",
                 "woken", "stream_done")

    def __init__(self, sock: socket.socket, addr: Any, limits: Limits) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.client = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        self.reader = RequestReader(limits)
        self.state = IDLE
        self.deadline: float | None = None   # dispatcher: when the current state times out
        self.armed: float | None = None      # dispatcher: deadline of its live timer entry
        self.request: Request | None = None  # the request being read or served
        self.body: list[bytes] = []          # body pieces read by the dispatcher
        self.body_size = 0
        self.started_at = 0.0                # idle since / head or body begun / queued at
        self.out: bytes | memoryview = b""   # response bytes the peer has not taken yet
        self.progress_at = 0.0               # last time the peer took bytes (FLUSH)
        self.close_after = False             # close once `out` is sent
        self.linger = False                  # ... after discarding the peer's input a while
        self.discarded = 0                   # LINGER: input bytes dropped so far
        self.ticket: Any = None              # BUSY: the pool ticket
        self.quiet = False                   # given back with nothing for the dispatcher to do
        self.writing = False                 # dispatcher: the poller watches for writability
        self.read_pending = False            # dispatcher: bytes arrived while it could not read
        self.hangup = False                  # dispatcher: the poller reported the peer's FIN
        self.waiting = False                 # its worker waits for the next request (a hint
                                             # for shutdown, which cuts such a wait short)
        self.stream: Any = None              # STREAM: the parked stream (sync.pollable)
        self.framing: Any = None             # STREAM: its body framing (None: a raw connection)
        self.tick_at = 0.0                   # STREAM: when its next tick() is due
        self.woken = False                   # STREAM: on the dispatcher's wake queue (a hint)
        self.stream_done = False             # STREAM: it said it is over; the rest is flushing

    def __repr__(self) -> str:
        return f"<Channel fd={self.fd} {self.state} {self.client}>"

    def recv_now(self) -> bytes | None:
        """What the kernel holds now (None: nothing yet; ``b""``: the peer's EOF, a reset
        or an error). Never blocks; the dispatcher's read while it owns the channel."""
        try:
            return self.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    # --- the worker's I/O (the owner only; the socket is non-blocking) ------------------------

    def send_some(self, data: bytes | memoryview) -> None:
        """Send what the kernel takes now and keep the rest in ``out`` for the dispatcher
        to flush once the channel is given back. Raises PeerGone."""
        if self.out:
            self.out = bytes(self.out) + bytes(data)
            return
        sent = self._send_now(data)
        if sent < len(data):
            self.out = memoryview(data)[sent:]

    def _send_now(self, data: bytes | memoryview) -> int:
        """What the kernel takes of ``data`` now (0 if nothing). Raises PeerGone."""
        try:
            return self.sock.send(data, DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None

    def send_all(self, data: bytes | memoryview, timeout: float | None) -> None:
        """Send ``out`` and then ``data`` completely, waiting for the peer as needed (each
        wait bounded by ``timeout`` without progress). Blocks; raises PeerGone."""
        if self.out:
            pending, self.out = self.out, b""
            self.send_all(pending, timeout)
        view = memoryview(data)
        while view:
            sent = self._send_now(view)
            view = view[sent:]
            if view and not sent and not self.wait(writable=True, timeout=timeout):
                raise PeerGone("the peer took no response bytes within the write timeout")

    def recv_some(self, deadline: float | None) -> bytes:
        """Received bytes (``b""`` at EOF), waiting until ``deadline`` (monotonic) at most.
        Blocks; raises PeerGone on reset, TimeoutError at the deadline."""
        while True:
            try:
                return self.sock.recv(RECV_BYTES, DONTWAIT)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise PeerGone(f"receive failed: {exc}") from None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("the request body did not arrive in time")
            self.wait(writable=False, timeout=left)

    def recv_waiting(self, timeout: float) -> bytes | None:
        """Bytes received within about ``timeout`` (``b""``: EOF), None if none came. With
        ``DONTWAIT`` the socket is put in blocking mode (until ``end_waiting``) and the
        wait is one ``recv`` bounded by SO_RCVTIMEO (set at accept to the longest such
        wait); elsewhere ``poll`` + ``recv``. Blocks; raises PeerGone."""
        sock = self.sock
        self.waiting = True
        try:
            if DONTWAIT:
                if not sock.getblocking():
                    sock.setblocking(True)
                return sock.recv(RECV_BYTES)
            if not self.wait(writable=False, timeout=timeout):
                return None
            return sock.recv(RECV_BYTES)
        except BlockingIOError:  # SO_RCVTIMEO ran out (or a spurious wake-up)
            return None
        except OSError as exc:
            raise PeerGone(f"receive failed: {exc}") from None
        finally:
            self.waiting = False

    def end_waiting(self) -> None:
        """The socket non-blocking again (after ``recv_waiting``), for the dispatcher."""
        if self.sock.getblocking():
            self.sock.setblocking(False)

    def wait(self, *, writable: bool, timeout: float | None) -> bool:
        """Wait until the socket is readable/writable (or in error); False on timeout.
        Blocks: the calling worker gives its pool slot up meanwhile."""
        with may_block():
            if _POLL:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT if writable else select.POLLIN)
                return bool(poller.poll(None if timeout is None else max(timeout, 0) * 1000))
            watched = [self.fd]
            ready = select.select([] if writable else watched, watched if writable else [],
                                  watched, timeout)
            return any(ready)
