"""``serve()``: run a ``Server`` until interrupted, over HTTP (default) or stdio.

This is what ``python -m mcpsync`` calls, and what a script calls to serve its own server::

    from mcpsync import Server, serve
    server = Server("demo")
    ...
    serve(server)                      # http://127.0.0.1:8000/mcp
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Mapping

from .app import McpApp
from .auth import AuthMiddleware, TokenVerifier
from .metrics import Gauge
from .server import Server
from .frontend import HttpFrontEnd, Limits, make_server
from .transports.stdio import serve_stdio
from .transports.wsgi import LOOPBACK_HOSTS, McpWsgiApp

log = logging.getLogger("mcpsync")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SHUTDOWN_GRACE_S = 10.0


def build_wsgi_app(server: Server, *, allowed_hosts: Iterable[str] | None = None,
                   **options: Any) -> McpWsgiApp:
    """The WSGI application for ``server`` (mount it in gunicorn, Flask, Django …)."""
    return McpWsgiApp(McpApp(server).start(), allowed_hosts=allowed_hosts, **options)


def serve(server: Server, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          stdio: bool = False, server_kind: str = "threaded",
          allowed_hosts: Iterable[str] | None = None,
          auth: TokenVerifier | None = None, authorization_servers: Iterable[str] = (),
          public_url: str | None = None,
          ready: threading.Event | None = None,
          routes: Mapping[str, Callable[..., Iterable[bytes]]] | None = None,
          gauges: Mapping[str, tuple[str, Gauge]] | None = None,
          limits: Limits | None = None) -> int:
    """Serve until SIGINT/SIGTERM (HTTP) or EOF on stdin (stdio). Returns an exit status.
    ``routes`` adds WSGI applications at extra paths (the hub's ``/healthz``); ``gauges``
    adds ``/metrics`` gauges (name -> (help, read)); ``limits`` are the front end's
    (``mcpsync.frontend.Limits``: workers, connection caps, timeouts)."""
    if stdio:
        serve_stdio(server)
        return 0
    hosts = set(allowed_hosts) if allowed_hosts is not None else set(LOOPBACK_HOSTS)
    if allowed_hosts is None and host not in LOOPBACK_HOSTS and host not in ("0.0.0.0", "::"):
        hosts.add(host.lower())
    wsgi = build_wsgi_app(server, allowed_hosts=hosts)
    wsgi.routes.update(routes or {})
    for name, (help_text, read) in (gauges or {}).items():
        wsgi.metrics.gauge(name, help_text, read)
    app: Any = wsgi
    guard: AuthMiddleware | None = None
    if auth is not None:  # bearer tokens on /mcp, /ws, /sse (stdio never takes HTTP auth)
        guard = app = AuthMiddleware(wsgi, auth, resource_url=public_url or "http://localhost/mcp",
                                     authorization_servers=authorization_servers)
    front = make_server(app, host, port, kind=server_kind,
                        **({} if server_kind != "threaded" else {"limits": limits or Limits()}))
    if isinstance(front, HttpFrontEnd):
        wsgi.metrics.gauge("mcpsync_front_end", "The HTTP front end: connections by state, "
                           "worker slots and threads, requests queued, refused, evicted, "
                           "timed out and shed.", front.stats)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{front.port}{wsgi.path}"
    if guard is not None and public_url is None:
        guard.set_resource_url(url)
    base = f"{shown}:{front.port}"
    print(f"mcpsync: serving {server.name!r} over Streamable HTTP at {url}\n"
          f"mcpsync: WebSocket (subprotocol mcp) at ws://{base}/ws\n"
          f"mcpsync: point an MCP client at the HTTP URL (transport: streamable-http); "
          f"Ctrl-C stops", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second signal: leave at once
            raise SystemExit(1)
        log.info("signal %d: shutting down", signum)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    front.start()
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        wsgi.end_streams()
        clean = front.shutdown(SHUTDOWN_GRACE_S)
        wsgi.app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if clean else 1
