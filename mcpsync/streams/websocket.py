"""WebSocket transport at ``/ws`` (not part of the MCP specification; a custom transport).

Framing, as the official SDKs' WebSocket clients speak it: subprotocol ``mcp``, one
JSON-RPC message per *text* frame in both directions, no batching beyond what the
negotiated revision allows. One connection is one session (``initialize`` first, as on
stdio); there is no ``Mcp-Session-Id``. Binary frames are answered with a -32600 error.

Theory of operation
-------------------
``serve_websocket`` (the ``/ws`` route) checks the upgrade and opens the session; then
the connection runs one of two ways:

* Under mcpsync's front end (``environ["mcpsync.park"]``) it is *parked*
  (``ws_parked.ParkedWebSocket``): the dispatcher thread reads and parses its frames,
  answers pings, and writes what the session sends; whole messages go to the front end's
  worker pool. An idle WebSocket costs buffers, not a thread.
* Elsewhere (werkzeug, gunicorn) the WSGI call takes the raw socket over
  (``werkzeug.socket`` or ``gunicorn.socket``) and reads frames on its own thread,
  handing the reader role to another thread when a request it runs takes long
  (``ws_reader.WsConnection``).

Either way each message goes to the session's ``MessageStream`` and a refusal by admission
control is a JSON-RPC error. The session lives as long as the connection: an open,
pinged connection is never idle to the store's reaper, and a session the store closes
anyway (shutdown) ends its connection with a close frame (1001).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..service import Service
from ..sessions import Session
from . import wsframe
from .ws_parked import ParkedWebSocket
from .ws_reader import WsConnection

log = logging.getLogger("mcpsync.websocket")

WS_PATH = "/ws"
WS_SUBPROTOCOL = "mcp"
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
WS_PING_INTERVAL_S = 25.0   # server pings; a peer silent for two intervals is dropped
WS_CLOSE_TIMEOUT_S = 2.0    # after our close frame, how long the peer has to answer it


@dataclass
class WebSocketState:
    """A WebSocket session's transport state: the connection is the session, so it is in
    use as long as it lives, and it ends itself at shutdown (``Service.draining``; a parked
    one is told at once)."""

    kind: str = "websocket"
    parked: ParkedWebSocket | None = None

    def in_use(self) -> bool:
        return True

    def end_streams(self) -> None:
        if self.parked is not None:
            self.parked.drain()


def _attach(session: Session) -> None:
    session.transport = WebSocketState()


def serve_websocket(service: Service, environ: dict[str, Any], start_response: Callable[..., Any],
                    *, open_session: Callable[[dict[str, Any], Callable[[Session], None]], Session],
                    max_message_bytes: int = WS_MAX_MESSAGE_BYTES,
                    ping_interval_s: float | None = WS_PING_INTERVAL_S) -> Iterable[bytes]:
    """Run one WebSocket connection to completion (called from the WSGI app).
    ``open_session(environ, setup)`` opens the connection's session (quotas, credential)
    or raises the app's HTTP refusal (``status``, ``headers``), sent before the upgrade."""
    if environ.get("REQUEST_METHOD") != "GET":  # RFC 6455 4.1: an upgrade is a GET
        return _refuse(start_response, "405 Method Not Allowed",
                       "a WebSocket upgrade is a GET request", [("Allow", "GET")])
    if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":  # RFC 6455 4.2.1: HTTP/1.1 or higher
        return _refuse(start_response, "400 Bad Request",
                       "a WebSocket upgrade needs HTTP/1.1", [])
    raw = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    if raw is None or "websocket" not in (environ.get("HTTP_UPGRADE") or "").lower():
        return _refuse(start_response, "426 Upgrade Required", "WebSocket upgrade required",
                       [("Upgrade", "websocket")])

    def header(name: str) -> str:
        return environ.get("HTTP_" + name.upper().replace("-", "_")) or ""

    problem = wsframe.handshake_problem(header)
    if problem is not None:
        extra = [("Sec-WebSocket-Version", "13")] if problem[0].startswith("426") else []
        return _refuse(start_response, problem[0], problem[1], extra)
    session = open_session(environ, _attach)
    offered = wsframe.offered_subprotocols(header("Sec-WebSocket-Protocol"))
    subprotocol = WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None
    accept = wsframe.accept_response(header("Sec-WebSocket-Key"), subprotocol)
    park, submit = environ.get("mcpsync.park"), environ.get("mcpsync.submit")
    if park is not None and submit is not None:  # mcpsync's front end drives it
        parked = ParkedWebSocket(service, session, accept=accept, submit=submit,
                                 max_message_bytes=max_message_bytes,
                                 ping_interval_s=ping_interval_s,
                                 close_timeout_s=WS_CLOSE_TIMEOUT_S)
        if isinstance(session.transport, WebSocketState):
            session.transport.parked = parked
        return park(parked, raw=True)
    environ["mcpsync.socket_taken"] = True
    try:
        raw.sendall(accept)
    except OSError as exc:  # the peer went away during the handshake
        log.debug("WebSocket handshake failed: %s", exc)
        service.close_session(session.id)
        return _after_takeover(environ)
    conn = WsConnection(service, session, raw, max_message_bytes=max_message_bytes,
                        ping_interval_s=ping_interval_s, close_timeout_s=WS_CLOSE_TIMEOUT_S)
    conn.run()
    return _after_takeover(environ)


def _refuse(start_response: Callable[..., Any], status: str, message: str,
            extra: list[tuple[str, str]]) -> Iterable[bytes]:
    body = message.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                             ("Content-Length", str(len(body)))] + extra)
    return [body]


def _after_takeover(environ: dict[str, Any]) -> Iterable[bytes]:
    """What to return once the socket was taken over: mcpsync's front end writes nothing
    more for ``mcpsync.socket_taken``; werkzeug and gunicorn are told the same by an error,
    the convention WebSocket-over-WSGI code follows."""
    if environ.get("SERVER_SOFTWARE") == "mcpsync":
        return []
    raise ConnectionError("WebSocket connection closed")
