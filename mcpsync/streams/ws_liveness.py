"""``Liveness``: what a WebSocket connection checks now and then, whoever runs it (the
front end's ticks for a parked one, the reader's poll timeout for one on threads): whether
its session is gone, whether the server drains and nothing is in flight, and when to ping
the peer, which is dropped once silent for two ping intervals. Plain logic, no I/O."""
from __future__ import annotations

import time

from ..sessions import Session
from . import wsframe
from .stream import MessageStream

PING = (0, "ping")  # what check() returns when a ping is due (not a close)


class Liveness:
    """The periodic checks of one connection (used by one thread at a time)."""

    def __init__(self, ping_interval_s: float | None) -> None:
        self.ping_interval_s = ping_interval_s
        self.last_heard = time.monotonic()   # when the peer last sent anything
        self.next_ping = self.last_heard + (ping_interval_s or 0.0)

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def check(self, session: Session, stream: MessageStream, draining: bool,
              now: float) -> tuple[int, str] | None:
        """A close to start (code, reason), ``PING`` to send one now, or None."""
        if session.closed or stream.write_failed:
            return wsframe.CLOSE_GOING_AWAY, "session closed"
        if draining and stream.conn.inflight_count() == 0:
            return wsframe.CLOSE_GOING_AWAY, "server shutting down"
        interval = self.ping_interval_s
        if interval and now >= self.next_ping:
            if now - self.last_heard > 2 * interval:
                return wsframe.CLOSE_POLICY, "no answer to pings"
            self.next_ping = now + interval
            return PING
        return None
