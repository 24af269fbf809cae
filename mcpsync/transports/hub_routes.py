"""HTTP routes of ``python -m mcpsync hub``: ``GET /healthz`` (the hub itself lives in
``mcpsync.hub``, which never imports the transports; this is the edge that shows it)."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
HEALTHZ_PATH = "/healthz"


def healthz_route(health: Callable[[], dict[str, Any]]) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """A WSGI route answering ``GET /healthz`` with ``health()`` as JSON: 200 while the hub
    runs (its ``status`` says ``ok``, ``starting`` or ``degraded``), 503 once it is closed."""
    def route(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        cors = environ.get("mcpsync.cors") or []
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0"), *cors])
            return []
        report = health()
        body = json.dumps(report, indent=2, sort_keys=True).encode("utf-8")
        status = "503 Service Unavailable" if report.get("status") == "closed" else "200 OK"
        start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                ("Content-Length", str(len(body))), *cors])
        return [] if method == "HEAD" else [body]
    return route
