"""``Deadlines``: when each waiting channel times out, in one heap.

Each channel has at most one live heap entry: the entry records the deadline it was pushed
for (``Channel.armed``). When it comes due, the channel's current deadline is computed again
from its state (``due``) and the entry pushed again if that is later; only a deadline that
moves earlier (an idle connection starting a head) pushes a new entry. So a deadline that
moves later costs nothing, and keep-alive traffic does not grow the heap. Used by the
dispatcher thread only.
"""
from __future__ import annotations

import heapq
import itertools

from .channel import BODY, CLOSED, FLUSH, HEAD, IDLE, LINGER, STREAM, Channel
from .limits import Limits

NEVER = float("inf")


class Deadlines:
    """The dispatcher's timers (see the module docstring)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._heap: list[tuple[float, int, Channel]] = []
        self._seq = itertools.count()

    @property
    def next_at(self) -> float:
        """When the earliest entry comes due (``NEVER`` if none)."""
        return self._heap[0][0] if self._heap else NEVER

    def due(self, chan: Channel) -> float | None:
        """When ``chan`` times out in its current state (None: never)."""
        limits = self._limits
        state = chan.state
        if state == IDLE:
            timeout = limits.keepalive_timeout
        elif state == HEAD:
            timeout = limits.head_timeout
        elif state == BODY:
            if limits.body_grace is None:
                return None
            return chan.started_at + limits.body_grace + chan.body_size / limits.min_body_rate
        elif state == FLUSH:
            if limits.write_timeout is None:
                return None
            return chan.progress_at + limits.write_timeout
        elif state == LINGER:
            timeout = limits.linger_timeout
        elif state == STREAM:  # its next tick, or the write timeout while bytes wait
            due = chan.tick_at
            if chan.out and limits.write_timeout is not None:
                due = min(due, chan.progress_at + limits.write_timeout)
            return None if due == NEVER else due
        else:  # BUSY (the pool's queue is timed separately), CLOSED
            return None
        return None if timeout is None else chan.started_at + timeout

    def arm(self, chan: Channel) -> None:
        """``chan``'s state (or progress) changed: make sure it is looked at in time."""
        when = self.due(chan)
        if when is not None and (chan.armed is None or when < chan.armed):
            chan.armed = when
            heapq.heappush(self._heap, (when, next(self._seq), chan))

    def expired(self, now: float) -> list[Channel]:
        """The channels whose deadline has passed (their entries are gone)."""
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now:
            when, _, chan = heapq.heappop(heap)
            if chan.armed != when or chan.state == CLOSED:
                continue  # superseded by an earlier entry, or gone
            chan.armed = None
            due = self.due(chan)
            if due is None:
                continue
            if due > now:
                chan.armed = due
                heapq.heappush(heap, (due, next(self._seq), chan))
            else:
                out.append(chan)
        return out
