"""``HttpApp``: mcpsync's HTTP side as one WSGI application (Streamable HTTP in both eras at
``/mcp``, WebSocket at ``/ws``, the legacy HTTP+SSE pair, health and metrics).

Theory of operation
-------------------
``HttpApp`` is a plain WSGI callable, so it runs under mcpsync's front end, werkzeug's
server, gunicorn (threads) or inside Flask/Django. It owns what every route shares and
nothing route-specific: a request is first checked against the allowed ``Host`` names and,
when present, the ``Origin`` (host *and* port: DNS rebinding and other local sites), 403
otherwise, before any body is read; then routed by path. Routes are the endpoint modules
(``streamable``, ``legacy_sse``, ``streams.websocket``, ``observability``); they see the app
only as an ``HttpHost`` (``base``): sessions with their quotas, the request's principal,
the body within its limit, admission control. Every refusal is an ``HttpError`` turned into
a JSON-RPC error body here, in one place; an unexpected exception is logged and answered
500 without details.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..admission import Overloaded
from ..errors import SessionLimitError, SessionNotFound
from ..protocol import versions
from ..server import Server
from ..service import Service, client_key
from ..sessions import Session
from ..streams.websocket import WS_PATH, serve_websocket
from . import legacy_sse, sse
from .observability import routes as observability_routes
from .base import (SESSION_NOT_FOUND, STATUS, Environ, EventStream, HttpError, StartResponse,
                   WsgiApp, json_reply)
from .streamable import MCP_PATH, StreamableHttp

log = logging.getLogger("mcpsync.http")

MAX_BODY_BYTES = 4 * 1024 * 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
CORS_EXPOSE_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version"
SESSION_RETRY_AFTER_S = 5        # what a client refused a new session is told to wait


def host_name(value: str) -> str:
    """The host part of a Host header or URL netloc, lower-cased, brackets kept for IPv6."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[:end + 1] if end != -1 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HttpApp:
    """The WSGI application serving ``server`` (or a ``Service``) at ``path``.

    ``allowed_hosts``: Host header names accepted (default: the loopback names; include
    ``"*"`` to accept any, e.g. behind a proxy that checks). An ``Origin`` header, when
    present, must name this server: a host of ``allowed_hosts`` (or the Host header's own)
    *and* the port the request came to, so a page served from another local port is
    refused. ``allowed_origins`` lists other origins to accept: full origins
    (``"http://localhost:6274"``, port-exact), bare host names (any port), or ``"*"``.
    ``principal(environ)`` names the credential of a request (default: the subject an
    ``AuthMiddleware`` in front verified); sessions are bound to the principal that created
    them. ``max_inflight`` / ``max_inflight_per_session`` set the service's admission limits.
    """

    def __init__(self, target: Server | Service, *, path: str = MCP_PATH,
                 allowed_hosts: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES,
                 principal: Callable[[Environ], Any] | None = None,
                 sse_retry_ms: int = sse.SSE_RETRY_MS,
                 websocket_path: str | None = WS_PATH,
                 legacy_sse_path: str | None = legacy_sse.SSE_PATH,
                 legacy_messages_path: str = legacy_sse.MESSAGES_PATH,
                 max_inflight: int | None = None, max_inflight_per_session: int | None = None,
                 observability: bool = True) -> None:
        self.service = target if isinstance(target, Service) else Service(target)
        self.server = self.service.server
        self.admission = self.service.admission  # shared with every other transport
        if max_inflight is not None:
            self.admission.max_inflight = max_inflight
        if max_inflight_per_session is not None:
            self.admission.max_inflight_per_session = max_inflight_per_session
        self.path = path
        self.allowed_hosts = frozenset(h.lower() for h in (allowed_hosts or LOOPBACK_HOSTS))
        self.allowed_origins = frozenset(_origin_key(o) if "://" in o else o.lower()
                                         for o in allowed_origins or ())
        self.max_body_bytes = max_body_bytes
        self._principal = principal or (lambda environ: environ.get("mcpsync.principal"))
        self.sse_retry_ms = sse_retry_ms
        self.legacy_messages_path = legacy_messages_path
        self.websocket_path = websocket_path
        self.draining = False
        self.metrics = self.admission.metrics
        self.routes: dict[str, WsgiApp] = {path: StreamableHttp(self)}
        if legacy_sse_path:
            self.routes[legacy_sse_path] = lambda e, s: legacy_sse.open_stream(self, e, s)
            self.routes[legacy_messages_path] = lambda e, s: legacy_sse.post_message(self, e, s)
        if websocket_path:
            self.routes[websocket_path] = lambda e, s: serve_websocket(
                self.service, e, s, open_session=self.open_session)
        if observability:
            self.routes.update(observability_routes(self))

    def end_streams(self) -> None:
        """End every session's SSE streams and every subscriptions/listen stream (shutdown:
        long-lived responses must not hold it up); /readyz answers 503 from now on."""
        self.draining = True
        self.service.draining = True
        self.server.end_listeners()
        for session in self.service.store.snapshot():
            if session.transport is not None:
                session.transport.end_streams()

    # ---- WSGI entry ----------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        cors: list[tuple[str, str]] = []
        try:
            cors = self._check_host_and_origin(environ)
            path = environ.get("PATH_INFO") or "/"
            route = self.routes.get(path)
            if route is None:
                raise HttpError(404, "Not Found: no MCP endpoint at this path")
            if path != self.websocket_path and "websocket" in (environ.get("HTTP_UPGRADE") or "").lower():
                # Refused (4xx) rather than answered: a 2xx to an upgrade request reads as a
                # takeover of the socket to a front end, and the answer would never leave.
                raise HttpError(400, f"Bad Request: WebSocket upgrades are served at {self.websocket_path}"
                                if self.websocket_path else "Bad Request: no WebSocket endpoint")
            environ["mcpsync.cors"] = cors
            result = route(environ, start_response)
            if isinstance(result, EventStream):  # waits for events: parked where it can be
                park = environ.get("mcpsync.park")
                if park is not None:
                    return park(result)
            return result
        except HttpError as exc:
            return json_reply(start_response, exc.status, {"jsonrpc": "2.0", "id": None, "error": {
                "code": exc.code, "message": str(exc)}}, [*exc.headers, *cors])
        except Exception:
            log.exception("internal error in the HTTP transport")
            return json_reply(start_response, 500, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32603, "message": "Internal error"}}, cors)

    def _check_host_and_origin(self, environ: Environ) -> list[tuple[str, str]]:
        host_header = environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""
        host = host_name(host_header)
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            raise HttpError(403, "Forbidden: invalid Host header")
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return []
        if "*" not in self.allowed_origins and not self._origin_ok(origin, host_header, environ):
            raise HttpError(403, "Forbidden: invalid Origin header")
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                ("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)]

    def _origin_ok(self, origin: str, host_header: str, environ: Environ) -> bool:
        """Whether ``Origin`` names this server (host and port) or an allowed origin."""
        key = _origin_key(origin)
        if key is None:
            return False  # "null" or no http(s) origin: sandboxed or opaque
        scheme, _, netloc = key.partition("://")
        origin_host, _, origin_port = netloc.rpartition(":")
        if key in self.allowed_origins or origin_host in self.allowed_origins:
            return True
        # Our port: the Host header's (the scheme's default if it names none; some clients
        # leave the port out) or the one we listen on.
        ours = _origin_key(f"{scheme}://{host_header}")
        ports = {ours.rpartition(":")[2] if ours else None, str(environ.get("SERVER_PORT"))}
        return (origin_port in ports
                and (origin_host in self.allowed_hosts or origin_host == host_name(host_header)))

    # ---- what endpoints use (HttpHost) ---------------------------------------------------------

    def principal(self, environ: Environ) -> Any:
        return self._principal(environ)

    def open_session(self, environ: Environ, setup: Callable[[Session], None]) -> Session:
        """A new session for this request's client (its quota: principal, else address).
        Full: 503 (the server) or 429 (this client's quota) with Retry-After."""
        principal = self.principal(environ)
        address = environ.get("REMOTE_ADDR") or None

        def attach(session: Session) -> None:
            session.handler.client_address = address  # (telemetry's client.address)
            setup(session)
        try:
            return self.service.open_session(principal=principal, setup=attach,
                                             owner=client_key(principal, address))
        except SessionLimitError as exc:
            status = 429 if exc.scope == "owner" else 503
            raise HttpError(status, f"{STATUS[status][4:]}: {exc}",
                            headers=[("Retry-After", str(SESSION_RETRY_AFTER_S))]) from None

    def find_session(self, environ: Environ, session_id: str | None = None) -> Session:
        """The session named by ``session_id`` (else the ``Mcp-Session-Id`` header) and
        created by this request's principal: 400 without an id, 404 otherwise."""
        sid = session_id or environ.get("HTTP_MCP_SESSION_ID")
        if not sid:
            raise HttpError(400, "Bad Request: the Mcp-Session-Id header is required")
        try:
            session = self.service.find_session(sid, principal=self.principal(environ))
        except SessionNotFound:
            raise HttpError(404, "Session not found", SESSION_NOT_FOUND) from None
        header = environ.get("HTTP_MCP_PROTOCOL_VERSION")
        if header is not None and header not in versions.HANDSHAKE_VERSIONS:
            raise HttpError(400, f"Bad Request: unsupported MCP-Protocol-Version {header!r}")
        return session

    def read_body(self, environ: Environ) -> bytes:
        ctype = environ.get("CONTENT_TYPE") or ""
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            raise HttpError(415, "Unsupported Media Type: send application/json")
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            try:
                size = int(length)
            except ValueError:
                raise HttpError(400, "Bad Request: invalid Content-Length") from None
            if size > self.max_body_bytes:
                raise HttpError(413, f"Content Too Large: the limit is {self.max_body_bytes} bytes")
            return _read(stream, size) if size > 0 else b""
        if environ.get("wsgi.input_terminated"):
            body = _read(stream, self.max_body_bytes + 1)
            if len(body) > self.max_body_bytes:
                raise HttpError(413, f"Content Too Large: the limit is {self.max_body_bytes} bytes")
            return body
        return b""

    def admit(self, key: str | None, abort: Callable[[str], None]) -> int:
        """Admission control (``mcpsync.admission``); a refusal is 503 + Retry-After."""
        try:
            return self.admission.admit(key, abort)
        except Overloaded as exc:
            raise HttpError.overloaded(exc) from None


def _origin_key(origin: str) -> str | None:
    """``scheme://host:port`` with the default port made explicit; None if not an origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        return None
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    return f"{parts.scheme}://{host_name(parts.netloc)}:{port}"


def _read(stream: Any, size: int) -> bytes:
    """Up to ``size`` body bytes. A body the client framed wrongly (a bad chunk size), cut
    short or sent too slowly is the client's error: 400 (or the front end's 408), no
    traceback. The front end raises a ``ConnectionError`` carrying the status it judged."""
    try:
        return stream.read(size)
    except (OSError, ValueError) as exc:
        status = getattr(exc, "status", None)
        log.warning("could not read a request body: %s", exc)
        raise HttpError(status if status in (408, 431) else 400,
                        f"Bad Request: the request body could not be read ({exc})") from None
