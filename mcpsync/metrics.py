"""Process metrics in the Prometheus text format, cheap enough for the hot path.

``Metrics.observe(transport, method, outcome, seconds)`` counts a request and puts its
duration in a fixed-bucket histogram; gauges are callables read at scrape time (sessions,
in-flight calls, streams, mutex queues), so nothing is updated twice. One lock guards the
counters and histograms (``Metrics._lock``); it is held for a few dict operations per
request and never during a scrape's gauge callbacks or any I/O.
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterable

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0)

Gauge = Callable[[], Iterable[tuple[dict[str, str], float]]]


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items()))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Request counters, latency histograms and scrape-time gauges of one server."""

    def __init__(self) -> None:
        # Guards _counts and _hist; a few dict operations per observation.
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._hist: dict[tuple[str, str], list[float]] = {}  # buckets..., sum, count
        self._gauges: dict[str, tuple[str, Gauge]] = {}

    def observe(self, transport: str, method: str, outcome: str, seconds: float) -> None:
        key = (transport, method, outcome)
        slot = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            h = self._hist.get((transport, method))
            if h is None:
                h = self._hist[(transport, method)] = [0.0] * (len(LATENCY_BUCKETS_S) + 3)
            h[slot] += 1
            h[-2] += seconds
            h[-1] += 1

    def gauge(self, name: str, help_text: str, read: Gauge) -> None:
        """Register a gauge read at scrape time: ``read()`` yields (labels, value) pairs."""
        self._gauges[name] = (help_text, read)

    def render(self) -> str:
        with self._lock:
            counts = dict(self._counts)
            hist = {k: list(v) for k, v in self._hist.items()}
        out = ["# HELP mcpsync_requests_total MCP requests handled, by transport, method and outcome.",
               "# TYPE mcpsync_requests_total counter"]
        for (transport, method, outcome), n in sorted(counts.items()):
            out.append(f"mcpsync_requests_total{_labels({'transport': transport, 'method': method, 'outcome': outcome})} {n}")
        out += ["# HELP mcpsync_request_duration_seconds Time from request to reply.",
                "# TYPE mcpsync_request_duration_seconds histogram"]
        for (transport, method), h in sorted(hist.items()):
            base = {"transport": transport, "method": method}
            running = 0.0
            for bound, in_bucket in zip(LATENCY_BUCKETS_S, h):
                running += in_bucket
                out.append(f"mcpsync_request_duration_seconds_bucket{_labels({**base, 'le': repr(bound)})} {running:g}")
            running += h[len(LATENCY_BUCKETS_S)]
            out.append(f"mcpsync_request_duration_seconds_bucket{_labels({**base, 'le': '+Inf'})} {running:g}")
            out.append(f"mcpsync_request_duration_seconds_sum{_labels(base)} {h[-2]:.6f}")
            out.append(f"mcpsync_request_duration_seconds_count{_labels(base)} {h[-1]:g}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            for labels, value in read():
                out.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(out) + "\n"
