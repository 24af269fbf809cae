"""``Acceptor``: taking new connections in, within the connection caps (part of the
``Dispatcher``; runs on the dispatcher thread).

At ``Limits.max_connections`` in all, or ``Limits.max_connections_per_address`` for the
client's address, the oldest idle connection (of that address, for the second) is closed
so that the new client is served; with none idle the new one is answered 503 and closed.
A failing ``accept()`` (out of descriptors) pauses accepting for ``ACCEPT_BACKOFF_S``
instead of spinning.
"""
from __future__ import annotations

import collections
import errno
import logging
import socket
import struct
from typing import Any

from .channel import IDLE, RECV_BYTES, Channel
from .limits import Limits
from .poller import Poller
from .response import error_response

log = logging.getLogger("mcpsync.http")

ACCEPT_BATCH = 64           # connections accepted per loop turn before looking at others
ACCEPT_BACKOFF_S = 0.1      # pause after accept() fails (e.g. out of descriptors)
RETRY_LATER = "Retry-After: 1\r\n"


class Acceptor:
    """Accepting and the caps; what it uses of the ``Dispatcher`` is declared below."""

    _listener: socket.socket
    _listen_fd: int
    _limits: Limits
    _poller: Poller
    _chans: dict[int, Channel]
    _per_client: dict[str, int]
    _idle: collections.OrderedDict[Channel, None]
    _accept_paused_until: float
    counts: dict[str, int]
    accepted: int
    refused: int
    evicted: int

    def _close(self, chan: Channel) -> None: raise NotImplementedError
    def _enter_idle(self, chan: Channel, now: float) -> None: raise NotImplementedError

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                log.error("accept() failed: %s", exc)  # e.g. EMFILE: back off, do not spin
                self._poller.unwatch(self._listen_fd)
                self._accept_paused_until = now + ACCEPT_BACKOFF_S
                return
            self._admit(sock, addr, now)

    def _admit(self, sock: socket.socket, addr: Any, now: float) -> None:
        limits = self._limits
        client = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        if (len(self._chans) >= limits.max_connections and not self._evict(None)) or \
                (self._per_client.get(client, 0) >= limits.max_connections_per_address
                 and not self._evict(client)):
            self.refused += 1
            _refuse(sock)
            return
        try:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if limits.next_request_wait:  # how long a worker's wait for the next request blocks
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(limits.next_request_wait))
            chan = Channel(sock, addr, limits)
            self._poller.add(chan.fd)
        except OSError as exc:  # the peer is gone already
            log.debug("dropped a connection at accept: %s", exc)
            sock.close()
            return
        self.accepted += 1
        self._chans[chan.fd] = chan
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self.counts[IDLE] += 1
        self._enter_idle(chan, now)

    def _evict(self, client: str | None) -> bool:
        """Close the oldest idle connection (of ``client``, if given); False if none."""
        for chan in self._idle:
            if client is None or chan.client == client:
                self.evicted += 1
                self._close(chan)
                return True
        return False


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def _refuse(sock: socket.socket) -> None:
    """Answer 503 on a connection we will not serve; never blocks."""
    try:
        sock.setblocking(False)
        sock.send(error_response(503, RETRY_LATER))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(RECV_BYTES)  # what already arrived, so that close() is less likely to reset
    except OSError:
        pass
    finally:
        sock.close()
