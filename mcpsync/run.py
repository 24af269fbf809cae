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

from .service import Service
from .auth import METRICS_PATH, PROTECTED_PATHS, AuthMiddleware, TokenVerifier
from .metrics import Gauge
from .server import Server
from .sessions import MAX_SESSIONS, MAX_SESSIONS_PER_OWNER, SESSION_IDLE_TTL_S
from .state import SharedState
from .frontend import HttpFrontEnd, Limits, make_server
from .streams.stdio import serve_stdio
from .http.app import LOOPBACK_HOSTS, HttpApp

log = logging.getLogger("mcpsync")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EXIT_USAGE = 2            # a usage or configuration error (here: the address cannot be bound)
SHUTDOWN_GRACE_S = 10.0   # calls in flight may finish this long after SIGTERM/SIGINT
ABORT_FLUSH_S = 1.0       # then the error answers of the rest get this long to go out


def build_wsgi_app(server: Server, *, allowed_hosts: Iterable[str] | None = None,
                   max_sessions: int = MAX_SESSIONS,
                   max_sessions_per_client: int | None = MAX_SESSIONS_PER_OWNER,
                   session_ttl_s: float | None = SESSION_IDLE_TTL_S,
                   state: SharedState | None = None,
                   **options: Any) -> HttpApp:
    """The WSGI application for ``server`` (mount it in gunicorn, Flask, Django …).
    Sessions: at most ``max_sessions``, ``max_sessions_per_client`` of them per principal
    (or client address without auth), closed after ``session_ttl_s`` idle seconds;
    ``state``: what this instance shares with the others of a deployment
    (``SharedState.from_config``; None: nothing); other options go to ``HttpApp``."""
    service = Service(server, max_sessions=max_sessions, max_sessions_per_client=max_sessions_per_client,
                      session_idle_ttl_s=session_ttl_s, state=state)
    wsgi = HttpApp(service.start(), allowed_hosts=allowed_hosts, **options)
    if state is not None:
        wsgi.metrics.gauge("mcpsync_state_up", "1 while the shared state backend answers.",
                           lambda: [({"backend": state.backend.name}, float(state.healthy()))])
    return wsgi


def serve(server: Server, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          stdio: bool = False, server_kind: str = "threaded",
          allowed_hosts: Iterable[str] | None = None,
          allowed_origins: Iterable[str] | None = None,
          auth: TokenVerifier | None = None, authorization_servers: Iterable[str] = (),
          public_url: str | None = None, metrics_auth: bool = False,
          ready: threading.Event | None = None,
          routes: Mapping[str, Callable[..., Iterable[bytes]]] | None = None,
          gauges: Mapping[str, tuple[str, Gauge]] | None = None,
          limits: Limits | None = None, max_sessions: int = MAX_SESSIONS,
          max_sessions_per_client: int | None = MAX_SESSIONS_PER_OWNER,
          session_ttl_s: float | None = SESSION_IDLE_TTL_S,
          shutdown_grace_s: float = SHUTDOWN_GRACE_S, state: SharedState | None = None) -> int:
    """Serve until SIGINT/SIGTERM (HTTP) or EOF on stdin (stdio). Returns an exit status.
    ``routes`` adds WSGI applications at extra paths (the hub's ``/healthz``); ``gauges``
    adds ``/metrics`` gauges (name -> (help, read)); ``metrics_auth`` puts ``/metrics``
    behind the same bearer tokens as the MCP routes; ``limits`` are the front end's
    (``mcpsync.frontend.Limits``: workers, connection caps, timeouts); ``state``: see
    ``build_wsgi_app``."""
    if stdio:
        serve_stdio(server)
        return 0
    hosts = set(allowed_hosts) if allowed_hosts is not None else set(LOOPBACK_HOSTS)
    if allowed_hosts is None and host not in LOOPBACK_HOSTS and host not in ("0.0.0.0", "::"):
        hosts.add(host.lower())
    wsgi = build_wsgi_app(server, allowed_hosts=hosts, allowed_origins=allowed_origins,
                          max_sessions=max_sessions,
                          max_sessions_per_client=max_sessions_per_client,
                          session_ttl_s=session_ttl_s, state=state)
    wsgi.routes.update(routes or {})
    for name, (help_text, read) in (gauges or {}).items():
        wsgi.metrics.gauge(name, help_text, read)
    app: Any = wsgi
    guard: AuthMiddleware | None = None
    if auth is not None:  # bearer tokens on every route that reaches the server (not stdio)
        protected = PROTECTED_PATHS + ((METRICS_PATH,) if metrics_auth else ())
        guard = app = AuthMiddleware(wsgi, auth, resource_url=public_url or "http://localhost/mcp",
                                     authorization_servers=authorization_servers,
                                     protected_paths=protected)
    try:
        front = make_server(app, host, port, kind=server_kind,
                            **({} if server_kind != "threaded" else {"limits": limits or Limits()}))
    except (OSError, OverflowError) as exc:  # the port is taken, or no port at all
        print(f"mcpsync: cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
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
        clean = _shut_down(wsgi, front, shutdown_grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if clean else 1


def _shut_down(wsgi: HttpApp, front: Any, grace_s: float) -> bool:
    """Stop accepting, end long-lived streams, let calls in flight finish for ``grace_s``
    seconds; past that, answer every call still running with a -32000 error
    ("server shutting down") and cancel it, then close what is left. True unless the front
    end itself could not stop (calls abandoned with an answer count as handled)."""
    wsgi.end_streams()
    aborted: list[int] = []
    timer = threading.Timer(grace_s, lambda: aborted.append(
        wsgi.admission.abort_all("Server shutting down: the call was still running at the "
                                 f"end of the {grace_s:g} s grace period")))
    timer.name = "mcpsync-shutdown-timer"
    timer.daemon = True
    timer.start()
    try:
        clean = front.shutdown(grace_s + ABORT_FLUSH_S)
    finally:
        timer.cancel()
        timer.join()
        wsgi.service.close()
    if aborted and aborted[0]:
        log.warning("shutdown: %d call(s) still running at the end of the grace period were "
                    "answered with an error and abandoned", aborted[0])
        return True
    return clean
