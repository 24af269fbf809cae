"""``/healthz`` (liveness), ``/readyz`` (503 while draining) and ``/metrics`` (Prometheus
text) for an ``HttpHost``, and the gauges read at scrape time: sessions by transport,
requests in flight and refused, open streams, the registry mutex."""
from __future__ import annotations

from typing import Iterable

from ..sync.fifo import WAIT_BUCKETS_S
from .base import Environ, HttpHost, StartResponse, WsgiApp, json_reply

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


def routes(host: HttpHost) -> dict[str, WsgiApp]:
    """The three routes, with the gauges registered on the host's metrics."""
    _register_gauges(host)

    def health(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return json_reply(start_response, 200, {"status": "ok"}, [])

    def ready(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if host.draining:
            return json_reply(start_response, 503, {"status": "draining"}, [("Retry-After", "5")])
        return json_reply(start_response, 200, {"status": "ready"}, [])

    def metrics(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = host.admission.metrics.render().encode()
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return {HEALTH_PATH: health, READY_PATH: ready, METRICS_PATH: metrics}


def _register_gauges(host: HttpHost) -> None:
    m = host.admission.metrics
    service, admission, server = host.service, host.admission, host.server

    def sessions_of(kind: str) -> int:
        return sum(1 for s in service.store.snapshot()
                   if s.transport is not None and s.transport.kind == kind)

    m.gauge("mcpsync_sessions", "Live sessions.", lambda: [({}, len(service.store))])
    m.gauge("mcpsync_sessions_evicted", "Idle sessions closed to make room for new ones.",
            lambda: [({}, service.evicted_total)])
    m.gauge("mcpsync_inflight_requests", "Requests being served, every transport.",
            lambda: [({}, admission.inflight)])
    m.gauge("mcpsync_refused_requests", "Requests refused by admission control.",
            lambda: [({}, admission.refused_total)])
    m.gauge("mcpsync_websocket_connections", "Open WebSocket connections.",
            lambda: [({}, sessions_of("websocket"))])
    m.gauge("mcpsync_streams", "Open SSE GET streams (standalone and legacy).",
            lambda: [({}, sum(1 for s in service.store.snapshot()
                              if s.transport is not None and s.transport.kind != "websocket"
                              and s.transport.in_use()))])

    def mutex_waits() -> list[tuple[dict[str, str], float]]:
        st = server.store.mutex.stats()
        out, running = [], 0
        for bound, count in zip((*WAIT_BUCKETS_S, float("inf")), st.wait_buckets):
            running += count
            out.append(({"mutex": "registry", "le": "+Inf" if bound == float("inf") else repr(bound)},
                        float(running)))
        return out
    m.gauge("mcpsync_mutex_wait_seconds_bucket",
            "Contended FIFOMutex waits, cumulative by upper bound in seconds.", mutex_waits)

    def mutex_stats() -> list[tuple[dict[str, str], float]]:
        st = server.store.mutex.stats()
        return [({"mutex": "registry", "stat": "queue_depth"}, st.queue_depth),
                ({"mutex": "registry", "stat": "acquisitions"}, st.acquisitions),
                ({"mutex": "registry", "stat": "contended"}, st.contended),
                ({"mutex": "registry", "stat": "total_wait_seconds"}, st.total_wait_s),
                ({"mutex": "registry", "stat": "max_wait_seconds"}, st.max_wait_s)]
    m.gauge("mcpsync_mutex", "FIFOMutex counters (waits in seconds).", mutex_stats)
