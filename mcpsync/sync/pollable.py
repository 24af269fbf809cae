"""``Pollable``: a stream of bytes driven by events, which needs no thread of its own.

Why
---
An open SSE stream or ``subscriptions/listen`` stream spends its life waiting for the next
event, and an idle WebSocket for the next frame. A thread per such stream caps them at the
thread limit. Written as a ``Pollable``, a stream says what it has when asked (``poll``,
never blocking) and calls ``wake()`` when it may have more, so one thread can drive
thousands: mcpsync's HTTP front end parks them in its dispatcher. Any other host (werkzeug,
gunicorn) iterates the same object on the request's thread: ``iterate`` is that loop.

The contract
------------
* ``attach(wake)``: called once, before the first ``poll``. From then on the stream calls
  ``wake()`` (any thread, with none of its own locks held) whenever ``poll`` may return
  something new: bytes, or its end. ``wake`` never blocks and may be called too often.
* ``poll()``: never blocks. The bytes to send now (``b""``: nothing yet), or ``None``
  once the stream is over (after the bytes returned before).
* ``tick_s`` and ``tick()``: ``tick()`` is called every ``tick_s`` seconds (None: never)
  for keep-alives and pings; it may make ``poll`` return bytes.
* ``close()``: the consumer is done (the stream ended, the peer went away or stopped
  reading, the server is shutting down). Called once at least; idempotent; never blocks.

A *duplex* pollable (a connection taken over after an ``Upgrade``) also has
``feed(data)`` (bytes from the peer, ``b""`` at its EOF; never blocks) and ``readable``
(False while it wants no more bytes: backpressure; it calls ``wake()`` when that changes).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Protocol

from .blocking import may_block


class Pollable(Protocol):
    """See the module docstring."""

    tick_s: float | None

    def attach(self, wake: Callable[[], None]) -> None: ...

    def poll(self) -> bytes | None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class Duplex(Pollable, Protocol):
    """A pollable that also takes the peer's bytes (see the module docstring)."""

    @property
    def readable(self) -> bool: ...

    def feed(self, data: bytes) -> None: ...


def iterate(stream: Pollable) -> Iterator[bytes]:
    """Drive ``stream`` on the calling thread: its bytes as they come, ticks on time, and
    ``close()`` at the end (also when the consumer stops iterating). Blocks between pieces
    (inside ``may_block()``: a pool worker gives its turn away meanwhile)."""
    woken = threading.Event()
    stream.attach(woken.set)
    period = stream.tick_s
    next_tick = None if period is None else time.monotonic() + period
    try:
        while True:
            woken.clear()  # before polling: a wake-up from now on is not lost
            data = stream.poll()
            if data is None:
                return
            if data:
                yield data
                continue
            timeout = None if next_tick is None else max(next_tick - time.monotonic(), 0.0)
            with may_block():
                if woken.wait(timeout):
                    continue
            stream.tick()
            if period is not None:
                next_tick = time.monotonic() + period
    finally:
        stream.close()
