"""HTTP routes of ``python -m mcpsync hub``: ``GET /healthz`` and ``GET /readyz`` (the hub
itself lives in ``mcpsync.hub``, which never imports the transports; this is the edge that
shows it)."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Route = Callable[[Environ, StartResponse], Iterable[bytes]]
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
RETRY_AFTER_S = 5       # what a 503 of /readyz suggests


def healthz_route(health: Callable[[], dict[str, Any]]) -> Route:
    """``GET /healthz`` (liveness) with ``health()`` as JSON: 200 while the hub runs (its
    ``status`` says ``ok``, ``starting`` or ``degraded``), 503 once it is closed."""
    return _json_route(health, lambda report: report.get("status") != "closed")


def readyz_route(readiness: Callable[[], dict[str, Any]]) -> Route:
    """``GET /readyz`` (readiness) with ``readiness()`` as JSON: 200 when it says ``ready``,
    else 503 with ``Retry-After`` (a required upstream is not ready, or the hub drains)."""
    return _json_route(readiness, lambda report: bool(report.get("ready")))


def _json_route(report_of: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool]) -> Route:
    def route(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        cors = environ.get("mcpsync.cors") or []
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0"), *cors])
            return []
        report = report_of()
        body = json.dumps(report, indent=2, sort_keys=True).encode("utf-8")
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                   ("Content-Length", str(len(body))), *cors]
        if ok(report):
            start_response("200 OK", headers)
        else:
            start_response("503 Service Unavailable", [*headers, ("Retry-After", str(RETRY_AFTER_S))])
        return [] if method == "HEAD" else [body]
    return route
