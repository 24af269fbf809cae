"""Streamable HTTP (MCP revisions 2025-03-26 … 2025-11-25) as a WSGI application.

Theory of operation
-------------------
``McpWsgiApp`` is a plain WSGI callable, so it runs under mcpsync's threaded front end,
werkzeug's server, gunicorn (threads) or inside Flask/Django. A worker thread carries one
POST from its body to its reply:

* The JSON body goes to the session's ``ServerConnection.receive`` on this thread. If the
  handler finishes without sending anything on the way, the reply goes back as one
  ``application/json`` response (the fast path: one ``start_response``, one body chunk).
* The first message the handler sends *before* its reply (progress, a log message, a
  sampling/elicitation/roots request) switches the response to ``text/event-stream``: the
  headers and a priming event go out through WSGI's ``write()`` callable at once, and so
  does every later event, including the final reply. The handler keeps running on the
  same thread while the client reads; a client's answer to a server request arrives as
  another POST on another thread and wakes it.
* Every SSE event is also logged in the session's ``SessionStreams`` so a client that
  lost the stream resumes it with ``GET`` + ``Last-Event-ID`` (see ``sse.py``).

Sessions live in the ``McpApp``'s store: ``initialize`` creates one and answers with
``Mcp-Session-Id``; later requests without the header get 400, with an unknown, expired,
deleted or someone else's id 404; ``DELETE`` ends the session.

Every request is checked first against the allowed ``Host`` names and, when present, the
``Origin`` (DNS-rebinding defence): 403 otherwise, before the body is read.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from ..app import McpApp, client_key
from ..admission import RETRY_AFTER_S, Overloaded
from ..sync.fifo import WAIT_BUCKETS_S
from ..errors import (ConnectionClosed, InvalidRequest, McpError, ParseError, SessionLimitError,
                      SessionNotFound)
from ..connection import ServerConnection
from ..protocol import jsonrpc, modern, versions
from ..protocol.dispatch import encode_outgoing
from ..server import Server
from ..sessions import Session
from . import legacy_sse, sse
from .websocket import WS_PATH, serve_websocket

log = logging.getLogger("mcpsync.http")

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], Any]]

MCP_PATH = "/mcp"
MAX_BODY_BYTES = 4 * 1024 * 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
SESSION_HEADER = "Mcp-Session-Id"
CORS_ALLOW_HEADERS = ("Content-Type, Accept, Authorization, Mcp-Session-Id, "
                      "Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name")
CORS_EXPOSE_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version"

_JSON = ("Content-Type", "application/json")
_SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache, no-transform"),
                ("X-Accel-Buffering", "no")]
_STATUS = {200: "200 OK", 202: "202 Accepted", 204: "204 No Content", 400: "400 Bad Request",
           403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed",
           406: "406 Not Acceptable", 408: "408 Request Timeout", 409: "409 Conflict",
           413: "413 Content Too Large", 431: "431 Request Header Fields Too Large",
           415: "415 Unsupported Media Type", 500: "500 Internal Server Error",
           429: "429 Too Many Requests", 503: "503 Service Unavailable"}

SESSION_NOT_FOUND = -32001
SESSION_RETRY_AFTER_S = 5        # what a client refused a new session is told to wait


def host_name(value: str) -> str:
    """The host part of a Host header or URL netloc, lower-cased, brackets kept for IPv6."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[:end + 1] if end != -1 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HttpError(Exception):
    """An HTTP-level refusal: status, optional JSON-RPC error body, extra headers."""

    def __init__(self, status: int, message: str, code: int = -32000,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = list(headers)

    @classmethod
    def overloaded(cls, exc: Overloaded) -> "HttpError":
        """Admission control's refusal on HTTP: 503 + Retry-After."""
        return cls(503, f"Service Unavailable: {exc.message}", exc.code,
                   headers=[("Retry-After", str(RETRY_AFTER_S))])


class McpWsgiApp:
    """The WSGI application serving ``server`` (or an ``McpApp``) at ``path``.

    ``allowed_hosts``: Host header names accepted (default: the loopback names; include
    ``"*"`` to accept any, e.g. behind a proxy that checks). An ``Origin`` header, when
    present, must name this server: a host of ``allowed_hosts`` (or the Host header's own)
    *and* the port the request came to, so a page served from another local port is
    refused. ``allowed_origins`` lists other origins to accept: full origins
    (``"http://localhost:6274"``, port-exact), bare host names (any port), or ``"*"``.
    ``principal(environ)`` names the credential of a request (default: none); sessions are
    bound to the principal that created them.
    """

    def __init__(self, target: Server | McpApp, *, path: str = MCP_PATH,
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
        self.app = target if isinstance(target, McpApp) else McpApp(target)
        self.server = self.app.server
        self.path = path
        self.allowed_hosts = frozenset(h.lower() for h in (allowed_hosts or LOOPBACK_HOSTS))
        self.allowed_origins = frozenset(_origin_key(o) if "://" in o else o.lower()
                                         for o in allowed_origins or ())
        self.max_body_bytes = max_body_bytes
        # Default: the subject an AuthMiddleware in front of us verified (None without auth).
        self.principal = principal or (lambda environ: environ.get("mcpsync.principal"))
        self.sse_retry_ms = sse_retry_ms
        self.routes: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
            path: self._mcp}
        self.legacy_messages_path = legacy_messages_path
        self.websocket_path = websocket_path
        if legacy_sse_path:
            self.routes[legacy_sse_path] = lambda e, s: legacy_sse.open_stream(self, e, s)
            self.routes[legacy_messages_path] = lambda e, s: legacy_sse.post_message(self, e, s)
        if websocket_path:
            self.routes[websocket_path] = lambda environ, start_response: serve_websocket(
                self.app, environ, start_response, open_session=self.open_session)
        self.admission = self.app.admission  # shared with every other transport of the app
        if max_inflight is not None:
            self.admission.max_inflight = max_inflight
        if max_inflight_per_session is not None:
            self.admission.max_inflight_per_session = max_inflight_per_session
        self.draining = False
        self.metrics = self.admission.metrics
        if observability:
            self.routes.update({"/healthz": self._health, "/readyz": self._ready,
                                "/metrics": self._metrics})
            self._register_gauges()

    def end_streams(self) -> None:
        """End every session's SSE streams and every subscriptions/listen stream (shutdown:
        long-lived responses must not hold it up); /readyz answers 503 from now on."""
        self.draining = True
        self.app.draining = True
        self.server.end_listeners()
        for session in self.app.store.snapshot():
            streams = session.data.get("streams")
            if streams is not None:
                streams.close()

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
            return route(environ, start_response)
        except HttpError as exc:
            return self._error(start_response, exc, cors)
        except Exception:
            log.exception("internal error in the HTTP transport")
            return self._error(start_response, HttpError(500, "Internal error", -32603), cors)

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

    @staticmethod
    def _error(start_response: StartResponse, exc: HttpError,
               extra: list[tuple[str, str]]) -> list[bytes]:
        return _json_reply(start_response, exc.status,
                           {"jsonrpc": "2.0", "id": None, "error": {"code": exc.code, "message": str(exc)}},
                           [*exc.headers, *extra])

    # ---- the MCP endpoint ------------------------------------------------------------------------

    def _mcp(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "POST":
            return self._post(environ, start_response)
        if method == "GET":
            return self._get(environ, start_response)
        if method == "DELETE":
            return self._delete(environ, start_response)
        if method == "OPTIONS":
            start_response("204 No Content", [
                ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
                ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                ("Access-Control-Max-Age", "86400"), *environ["mcpsync.cors"]])
            return []
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "GET, POST, DELETE, OPTIONS")])

    def open_session(self, environ: Environ, setup: Callable[[Session], None]) -> Session:
        """A new session for this request's client (its quota: principal, else address).
        Full: 503 (the server) or 429 (this client's quota) with Retry-After."""
        principal = self.principal(environ)
        try:
            return self.app.open_session(principal=principal, setup=setup,
                                         owner=client_key(principal, environ.get("REMOTE_ADDR")))
        except SessionLimitError as exc:
            status = 429 if exc.scope == "owner" else 503
            raise HttpError(status, f"{_STATUS[status][4:]}: {exc}",
                            headers=[("Retry-After", str(SESSION_RETRY_AFTER_S))]) from None

    def _session(self, environ: Environ) -> Session:
        sid = environ.get("HTTP_MCP_SESSION_ID")
        if not sid:
            raise HttpError(400, "Bad Request: the Mcp-Session-Id header is required")
        try:
            session = self.app.find_session(sid, principal=self.principal(environ))
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

    def _post(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = self.read_body(environ)
        accept = environ.get("HTTP_ACCEPT") or "*/*"
        can_sse = "text/event-stream" in accept or "*/*" in accept
        if not can_sse and "application/json" not in accept and "application/*" not in accept:
            raise HttpError(406, "Not Acceptable: accept application/json and text/event-stream")
        try:
            value = jsonrpc.decode(body)
        except ParseError as exc:
            raise HttpError(400, exc.message, exc.code) from None
        if _is_modern_post(environ, value):
            return self._post_modern(environ, start_response, value, can_sse)
        if type(value) is dict and value.get("method") == "initialize":
            return self._initialize(environ, start_response, value)
        session = self._session(environ)
        conn = self.app.connection(session)
        if not _has_request(value):
            reply = conn.receive(value)
            if reply is not None:  # invalid message(s): an HTTP error, nothing was accepted
                err = reply if type(reply) is dict else reply[0]
                raise HttpError(400, err["error"]["message"], err["error"]["code"])
            start_response("202 Accepted", [("Content-Length", "0"), *environ["mcpsync.cors"]])
            return []
        response = PostResponse(self, session, start_response, environ, can_sse)
        ticket = self._admit(session.id, response.aborter(conn, jsonrpc.readable_id(value)))
        started = time.perf_counter()
        reply = None
        try:
            reply = conn.receive(value, response)
            return response.finish(reply)
        finally:
            self.admission.release(session.id, ticket)
            self.admission.observe("http", value, reply, time.perf_counter() - started, session.id)

    # ---- limits and observability -------------------------------------------------------------

    def _admit(self, key: str | None, abort: Callable[[str], None]) -> int:
        """Admission control (``mcpsync.admission``); a refusal is 503 + Retry-After."""
        try:
            return self.admission.admit(key, abort)
        except Overloaded as exc:
            raise HttpError.overloaded(exc) from None

    def _health(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return _json_reply(start_response, 200, {"status": "ok"}, [])

    def _ready(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.draining:
            return _json_reply(start_response, 503, {"status": "draining"}, [("Retry-After", "5")])
        return _json_reply(start_response, 200, {"status": "ready"}, [])

    def _metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = self.metrics.render().encode()
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def _register_gauges(self) -> None:
        m = self.metrics
        m.gauge("mcpsync_sessions", "Live sessions.", lambda: [({}, len(self.app.store))])
        m.gauge("mcpsync_sessions_evicted", "Idle sessions closed to make room for new ones.",
                lambda: [({}, self.app.evicted_total)])
        m.gauge("mcpsync_inflight_requests", "Requests being served, every transport.",
                lambda: [({}, self.admission.inflight)])
        m.gauge("mcpsync_refused_requests", "Requests refused by admission control.",
                lambda: [({}, self.admission.refused_total)])
        m.gauge("mcpsync_websocket_connections", "Open WebSocket connections.",
                lambda: [({}, sum(1 for s in self.app.store.snapshot() if s.data.get("websocket")))])
        m.gauge("mcpsync_streams", "Open SSE GET streams (standalone and legacy).",
                lambda: [({}, sum(1 for s in self.app.store.snapshot()
                                  if s.data.get("streams") is not None
                                  and s.data["streams"].standalone.attached))])

        def mutex_waits() -> list[tuple[dict[str, str], float]]:
            st = self.server._registry_mutex.stats()
            out, running = [], 0
            for bound, count in zip((*WAIT_BUCKETS_S, float("inf")), st.wait_buckets):
                running += count
                out.append(({"mutex": "registry", "le": "+Inf" if bound == float("inf") else repr(bound)},
                            float(running)))
            return out
        m.gauge("mcpsync_mutex_wait_seconds_bucket",
                "Contended FIFOMutex waits, cumulative by upper bound in seconds.", mutex_waits)

        def mutex_stats() -> list[tuple[dict[str, str], float]]:
            st = self.server._registry_mutex.stats()
            return [({"mutex": "registry", "stat": "queue_depth"}, st.queue_depth),
                    ({"mutex": "registry", "stat": "acquisitions"}, st.acquisitions),
                    ({"mutex": "registry", "stat": "contended"}, st.contended),
                    ({"mutex": "registry", "stat": "total_wait_seconds"}, st.total_wait_s),
                    ({"mutex": "registry", "stat": "max_wait_seconds"}, st.max_wait_s)]
        m.gauge("mcpsync_mutex", "FIFOMutex counters (waits in seconds).", mutex_stats)

    def _post_modern(self, environ: Environ, start_response: StartResponse, value: Any,
                     can_sse: bool) -> Iterable[bytes]:
        """A stateless-era (2026-07-28) POST: no session; the request carries its envelope.
        ``Mcp-Session-Id`` and ``Last-Event-ID`` are ignored, as the revision asks."""
        cors = environ["mcpsync.cors"]
        if type(value) is not dict:
            raise HttpError(400, "Invalid Request: one JSON-RPC message per POST", InvalidRequest.code)
        if "method" not in value or "id" not in value:
            try:
                kind = jsonrpc.classify(value)
            except McpError as exc:
                raise HttpError(400, exc.message, exc.code) from None
            if kind != jsonrpc.NOTIFICATION:
                raise HttpError(400, "Invalid Request: this revision has no client responses",
                                InvalidRequest.code)
            start_response("202 Accepted", [("Content-Length", "0"), *cors])
            return []  # notifications/cancelled is stdio-only here: closing the stream cancels
        try:
            jsonrpc.classify(value)
            raw_params = value.get("params")
            params: dict[str, Any] = raw_params if type(raw_params) is dict else {}
            tool = None
            if value.get("method") == "tools/call" and isinstance(params.get("name"), str):
                tool = self.server.registry.tools.get(params["name"])
            in_headers = tool.header_params if tool is not None else ()
            modern.check_headers(_mcp_headers(environ, in_headers), value, in_headers)
        except McpError as exc:
            refusal = jsonrpc.error_response(jsonrpc.readable_id(value), exc)
            return _json_reply(start_response, modern.http_status(exc), refusal, cors)
        conn = ServerConnection(self.server)  # per request: no session, no broadcasts
        response = StatelessResponse(start_response, cors, can_sse,
                                     cancel=lambda: conn.cancel(value["id"], "stream closed"))
        ticket = self._admit(None, response.aborter(conn, value["id"]))
        started = time.perf_counter()
        reply = None
        try:
            reply = conn.handle_modern(value, response, principal=_principal_key(self.principal(environ)))
            return response.finish(reply)
        finally:
            self.admission.release(None, ticket)
            self.admission.observe("http-stateless", value, reply, time.perf_counter() - started, None)

    def _initialize(self, environ: Environ, start_response: StartResponse,
                    msg: dict[str, Any]) -> Iterable[bytes]:
        if environ.get("HTTP_MCP_SESSION_ID"):
            raise HttpError(400, "Bad Request: initialize must not carry an Mcp-Session-Id",
                            InvalidRequest.code)
        session = self.open_session(environ, _attach_streams)
        reply = self.app.connection(session).receive(msg)
        if reply is None or "error" in reply:
            self.app.close_session(session.id)
            headers = []
        else:
            headers = [(SESSION_HEADER, session.id)]
        return _json_reply(start_response, 200, reply, [*headers, *environ["mcpsync.cors"]])

    def _get(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _modern_header(environ):
            raise HttpError(405, "Method Not Allowed: revision 2026-07-28 has no GET stream",
                            headers=[("Allow", "POST")])
        accept = environ.get("HTTP_ACCEPT") or ""
        if "text/event-stream" not in accept and "*/*" not in accept:
            raise HttpError(406, "Not Acceptable: a GET stream is text/event-stream")
        session = self._session(environ)
        streams: sse.SessionStreams = session.data["streams"]
        last = environ.get("HTTP_LAST_EVENT_ID")
        if last:
            found = streams.take_over(last)
            if found is None:
                raise HttpError(400, "Bad Request: Last-Event-ID names an unknown or expired stream")
            events = streams.follow(*found)
        else:
            epoch = streams.attach_standalone()
            if epoch is None:
                raise HttpError(409, "Conflict: the session's GET stream is already open")
            events = streams.follow_standalone(epoch)
        start_response("200 OK", [*_SSE_HEADERS, *environ["mcpsync.cors"]])
        return _touching(self.app, session.id, events)

    def _delete(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _modern_header(environ):
            raise HttpError(405, "Method Not Allowed: revision 2026-07-28 has no sessions",
                            headers=[("Allow", "POST")])
        session = self._session(environ)
        self.app.close_session(session.id)
        start_response("200 OK", [("Content-Length", "0"), *environ["mcpsync.cors"]])
        return []


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


def _modern_header(environ: Environ) -> bool:
    header = environ.get("HTTP_MCP_PROTOCOL_VERSION")
    return header is not None and header in versions.MODERN_VERSIONS


def _is_modern_post(environ: Environ, value: Any) -> bool:
    """A POST belongs to the stateless era when its header or its envelope says so."""
    if _modern_header(environ):
        return True
    return type(value) is dict and modern.is_modern(value.get("params"))


def _mcp_headers(environ: Environ, in_headers: tuple[tuple[str, str], ...]) -> dict[str, str | None]:
    """The standard MCP request headers, and the ``Mcp-Param-*`` ones the tool declares."""
    headers: dict[str, str | None] = {
        "mcp-protocol-version": environ.get("HTTP_MCP_PROTOCOL_VERSION"),
        "mcp-method": environ.get("HTTP_MCP_METHOD"),
        "mcp-name": environ.get("HTTP_MCP_NAME"),
    }
    for _prop, name in in_headers:
        headers[f"mcp-param-{name.lower()}"] = environ.get(
            "HTTP_MCP_PARAM_" + name.upper().replace("-", "_"))
    return headers


def _principal_key(principal: Any) -> str | None:
    return None if principal is None else str(principal)


def _json_reply(start_response: StartResponse, status: int, reply: Any,
                extra: list[tuple[str, str]]) -> list[bytes]:
    body = encode_outgoing(reply) or b""
    start_response(_STATUS.get(status, f"{status} Error"),
                   [_JSON, ("Content-Length", str(len(body))), *extra])
    return [body]


def _has_request(value: Any) -> bool:
    if type(value) is dict:
        return "method" in value and "id" in value
    return type(value) is list and any(type(m) is dict and "method" in m and "id" in m for m in value)


def _attach_streams(session: Session) -> None:
    streams = sse.SessionStreams()
    session.data["streams"] = streams
    session.handler.send = streams.push
    session.on_close(lambda _s: streams.close())


def _touching(app: McpApp, sid: str, events: Iterator[bytes]) -> Iterator[bytes]:
    """Pass SSE chunks through; keep-alives also keep the session from idling out."""
    try:
        yield b": stream open\n\n"
        for chunk in events:
            if chunk is sse.KEEPALIVE:
                app.store.touch(sid)
            yield chunk
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


class _Abortable:
    """What both POST responses share for shutdown: ``aborter`` makes the ``abort(message)``
    that admission control calls past the grace period. It answers the request with an error
    at once (the whole JSON response, or the final SSE event) and cancels it; the handler's
    own ``finish`` then writes nothing. Subclasses set ``_lock``, ``_aborted``, ``_finished``
    and say how an error goes out (``_abort_write``, with ``_lock`` held)."""

    _lock: threading.Lock
    _aborted = False
    _finished = False

    def aborter(self, conn: ServerConnection, rid: Any) -> Callable[[str], None]:
        def abort(message: str) -> None:
            with self._lock:
                if self._finished or self._aborted:
                    return
                self._aborted = True
                self._abort_write(jsonrpc.error_response(rid, ConnectionClosed(message)))
            if rid is not None:
                conn.cancel(rid, message)
        return abort

    def _abort_write(self, reply: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _whole(start_response: StartResponse, reply: dict[str, Any],
               extra: list[tuple[str, str]]) -> None:
        """Send ``reply`` as a complete JSON response from outside the app's return path."""
        body = encode_outgoing(reply) or b""
        write = start_response(_STATUS[200], [_JSON, ("Content-Length", str(len(body))), *extra])
        try:
            write(body)
        except (OSError, ValueError) as exc:
            log.debug("could not answer an aborted request: %s", exc)


class PostResponse(_Abortable):
    """The response to one POST that carries a request: JSON unless something must be sent
    before the reply, then SSE through WSGI's ``write()``. It is the request's sink.

    ``_lock`` serializes writes to this response (the request's thread, and any thread the
    tool starts that reports progress); it is held across one ``write`` call, the stream
    write lock of ARCHITECTURE.md's lock map.
    """

    def __init__(self, owner: McpWsgiApp, session: Session, start_response: StartResponse,
                 environ: Environ, can_sse: bool) -> None:
        self._owner = owner
        self._session = session
        self._start_response = start_response
        self._environ = environ
        self._can_sse = can_sse
        self._lock = threading.Lock()
        self._write: Callable[[bytes], Any] | None = None
        self._log: sse.StreamLog | None = None
        self._live = False
        self._streams: sse.SessionStreams = session.data["streams"]

    def _start(self) -> None:
        """Switch to SSE (call with ``_lock`` held)."""
        self._log = self._streams.open_stream()
        self._write = self._start_response("200 OK", [*_SSE_HEADERS, *self._environ["mcpsync.cors"]])
        self._live = True
        conn = self._owner.app.connection(self._session)
        if versions.features(conn.version).sse_priming:
            self._emit(sse.priming(f"{self._log.id}.0", self._owner.sse_retry_ms))

    def _emit(self, data: bytes) -> None:
        assert self._log is not None
        if not self._live or self._write is None:
            return
        if not self._streams.owns(self._log, 0):  # a resuming GET took the stream over
            self._live = False
            return
        try:
            self._write(data)
        except (OSError, ValueError) as exc:  # the client went away; it may resume
            log.debug("SSE write failed: %s", exc)
            self._live = False
            assert self._log is not None
            self._streams.detach(self._log)

    def __call__(self, msg: dict[str, Any]) -> None:
        """A message about the running request (this object is the request's sink)."""
        if not self._can_sse:
            self._streams.push(msg)  # the client takes no SSE here: use its GET stream
            return
        with self._lock:
            if self._log is None:
                self._start()
            assert self._log is not None
            self._emit(self._streams.append(self._log, msg))

    def close_stream(self) -> None:
        """End the live stream early; the rest is logged for a resuming GET."""
        if not self._can_sse:
            return
        with self._lock:
            if self._log is None:
                self._start()
            assert self._log is not None
            if self._live:
                self._live = False
                self._streams.detach(self._log)

    def _abort_write(self, reply: dict[str, Any]) -> None:
        if self._log is None:
            self._whole(self._start_response, reply, self._environ["mcpsync.cors"])
        else:
            self._emit(self._streams.append(self._log, reply, final=True))

    def finish(self, reply: Any) -> Iterable[bytes]:
        with self._lock:
            self._finished = True
            if self._aborted:
                return []
            if self._log is None:
                if reply is None:  # cancelled before anything was sent
                    self._start_response("202 Accepted", [("Content-Length", "0"),
                                                          *self._environ["mcpsync.cors"]])
                    return []
                return _json_reply(self._start_response, 200, reply, self._environ["mcpsync.cors"])
            if reply is not None:
                self._emit(self._streams.append(self._log, reply, final=True))
            else:
                self._streams.finish(self._log)
            if self._live:
                self._live = False
                self._streams.detach(self._log)
            return []


class StatelessResponse(_Abortable):
    """The response to a stateless-era request: JSON, or SSE through ``write()`` once the
    handler sends something first (progress, log messages, a listen stream). There is no
    event log and no resumption; a failed write means the client closed the stream, which
    in this revision cancels the request (``cancel``)."""

    def __init__(self, start_response: StartResponse, cors: list[tuple[str, str]],
                 can_sse: bool, cancel: Callable[[], Any]) -> None:
        self._start_response = start_response
        self._cors = cors
        self._can_sse = can_sse
        self._cancel = cancel
        # Serializes writes to this response (the stream write lock); held for one write.
        self._lock = threading.Lock()
        self._write: Callable[[bytes], Any] | None = None
        self._live = True

    def _emit(self, data: bytes) -> bool:
        """Write once SSE has started (call with ``_lock`` held). True when this write found
        the client gone: the caller cancels the request *after* releasing the lock, since
        cancellation runs callbacks that may write to this very stream."""
        if self._write is None:
            self._write = self._start_response("200 OK", [*_SSE_HEADERS, *self._cors])
        if not self._live:
            return False
        try:
            self._write(data)
        except (OSError, ValueError) as exc:
            log.debug("stream closed by the client: %s", exc)
            self._live = False
            return True
        return False

    def __call__(self, msg: dict[str, Any]) -> None:
        if not self._can_sse:
            return  # a JSON-only client gets the reply alone
        encoded = encode_outgoing(msg)
        if encoded is None:
            return
        data = b"event: message\ndata: " + encoded + b"\n\n"
        with self._lock:
            gone = self._emit(data)
        if gone:
            self._cancel()

    def keepalive(self) -> None:
        """A comment on an idle stream; it also finds out whether the client is still there."""
        with self._lock:
            gone = self._write is not None and self._emit(sse.KEEPALIVE)
        if gone:
            self._cancel()

    def _abort_write(self, reply: dict[str, Any]) -> None:
        if self._write is None:
            self._whole(self._start_response, reply, self._cors)
        else:
            self._emit(b"event: message\ndata: " + (encode_outgoing(reply) or b"") + b"\n\n")

    def finish(self, reply: Any) -> Iterable[bytes]:
        with self._lock:
            self._finished = True
            if self._aborted:
                return []
            if self._write is None:
                if reply is None:
                    self._start_response("202 Accepted", [("Content-Length", "0"), *self._cors])
                    return []
                status = modern.http_status(reply["error"]) if "error" in reply else 200
                return _json_reply(self._start_response, status, reply, self._cors)
            if reply is not None:  # the request is over: a failed write has nothing to cancel
                self._emit(b"event: message\ndata: " + (encode_outgoing(reply) or b"") + b"\n\n")
            return []
