"""Bounded reading of a child's output, sans-IO: bytes in, lines out; the clock is passed in.

``LineSplitter`` never holds more than its limit of one line: a longer line comes out once,
cut, as soon as the limit is reached, and the rest of it (up to the next newline) is
discarded and counted, so a 100 MB line costs the reader one buffer, not 100 MB.
``Window`` counts events and bytes in consecutive fixed windows; ``LogBudget`` uses one to
let at most so many lines a window into the log and to say how many it held back.

Each object has one owner (the thread reading one stream) and no lock.
"""
from __future__ import annotations


class LineSplitter:
    """Splits a byte stream at ``\\n`` into lines of at most ``max_bytes`` (newline excluded).

    ``feed`` returns ``(line, cut)`` pairs. A line longer than ``max_bytes`` comes out once,
    with ``cut`` true, as its first ``max_bytes`` bytes (or empty when ``keep_cut`` is false:
    the caller only wants to know); ``cut_lines`` and ``dropped_bytes`` count what was lost."""

    def __init__(self, max_bytes: int, *, keep_cut: bool = True) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self.keep_cut = keep_cut
        self._buf = bytearray()
        self._discarding = False     # inside the rest of a line that was cut
        self.cut_lines = 0
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        start, size = 0, len(data)
        while start < size:
            nl = data.find(b"\n", start)
            end = size if nl < 0 else nl
            if self._discarding:
                self.dropped_bytes += end - start
                self._discarding = nl < 0
            else:
                room = self.max_bytes - len(self._buf)
                if end - start > room:
                    self._buf += memoryview(data)[start:start + room]
                    out.append((bytes(self._buf) if self.keep_cut else b"", True))
                    self._buf.clear()
                    self.cut_lines += 1
                    self.dropped_bytes += end - start - room
                    self._discarding = nl < 0
                elif nl >= 0 and not self._buf:  # a whole line in this chunk: one copy
                    out.append((data[start:end], False))
                else:
                    self._buf += memoryview(data)[start:end]
                    if nl >= 0:
                        out.append((bytes(self._buf), False))
                        self._buf.clear()
            start = size if nl < 0 else nl + 1
        return out

    def flush(self) -> bytes:
        """The unterminated rest at end of stream (empty if none)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        return rest


class Window:
    """Events and bytes counted in consecutive windows of ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._start: float | None = None
        self.events = 0
        self.bytes = 0

    def add(self, now: float, nbytes: int = 0, events: int = 1) -> int:
        """Count ``events`` events of ``nbytes`` in all. Returns the number of events of
        the window this call closed (0 when it falls in the current one)."""
        closed = 0
        if self._start is None or now - self._start >= self.seconds:
            closed = self.events
            self._start, self.events, self.bytes = now, 0, 0
        self.events += events
        self.bytes += nbytes
        return closed


class LogBudget:
    """At most ``per_window`` log lines per window of ``seconds``; the rest are counted."""

    def __init__(self, per_window: int, seconds: float) -> None:
        self.per_window = per_window
        self._window = Window(seconds)

    def take(self, now: float) -> tuple[bool, int]:
        """(may this line be logged, how many lines the window that just ended held back:
        say so before this line)."""
        closed = self._window.add(now)
        held = max(0, closed - self.per_window)
        return self._window.events <= self.per_window, held

    def pending(self) -> int:
        """Lines the current window held back so far (to report at end of stream)."""
        return max(0, self._window.events - self.per_window)
