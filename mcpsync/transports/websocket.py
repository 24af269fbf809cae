"""WebSocket transport at ``/ws`` (not part of the MCP specification; a custom transport).

Framing, as the official SDKs' WebSocket clients speak it: subprotocol ``mcp``, one
JSON-RPC message per *text* frame in both directions, no batching beyond what the
negotiated revision allows. One connection is one session (``initialize`` first, as on
stdio); there is no ``Mcp-Session-Id``. Binary frames are answered with a -32600 error.

Theory of operation
-------------------
The front end's connection thread runs ``serve_websocket`` inside the WSGI call (that is
how ``simple-websocket`` works): it accepts the upgrade, then reads frames until the
client goes away, handing each message to a ``MessageStreamSession`` (requests go to its
worker pool, so pings and cancellations keep flowing while tools run). simple-websocket's
own reader thread writes pongs and close frames to the same socket, so the socket is
wrapped: every ``send`` goes through ``LockedSocket`` and its lock, the connection's one
write lock. When the client disconnects, the session is deleted from the store, which
cancels its in-flight calls and joins its workers. The session lives as long as the socket:
an open, pinged connection is never idle to the store's reaper, and a session the store
closes anyway (shutdown) ends its connection within ``WS_RECEIVE_POLL_S``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

import simple_websocket
from wsproto.utilities import LocalProtocolError

from ..app import McpApp
from ..errors import InvalidRequest, SessionLimitError
from ..protocol import jsonrpc
from .stream import MessageStreamSession

log = logging.getLogger("mcpsync.websocket")

WS_PATH = "/ws"
WS_SUBPROTOCOL = "mcp"
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
WS_PING_INTERVAL_S = 25.0   # server pings; a peer that stops answering is dropped
# receive() wakes this often to look at ws.connected (simple-websocket's reader can mark the
# connection closed after its last wake-up, on an oversized message, which would otherwise
# leave us waiting forever) and at the session (expired or closed by the app: the
# connection ends with it).
WS_RECEIVE_POLL_S = 1.0
WS_CLOSE_TIMEOUT_S = 2.0    # after our close frame, how long the peer has to answer it


class _ReaderThread(threading.Thread):
    """simple-websocket's reader thread, named like every thread mcpsync starts; it ends
    when the socket does (the front end shuts the socket down on shutdown)."""

    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__(target=target, name="mcpsync-ws-reader", daemon=True)


class LockedSocket:
    """A socket whose writes are serialized (and complete: ``send`` is ``sendall``)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        # Guards writes to the socket: our responses (workers), simple-websocket's pongs and
        # close frames (its reader thread). Held for one sendall.
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    sendall = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def serve_websocket(app: McpApp, environ: dict[str, Any], start_response: Callable[..., Any],
                    *, principal: Any = None, max_message_bytes: int = WS_MAX_MESSAGE_BYTES,
                    ping_interval_s: float | None = WS_PING_INTERVAL_S) -> Iterable[bytes]:
    """Run one WebSocket connection to completion (called from the WSGI app)."""
    raw = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    if raw is None or "websocket" not in (environ.get("HTTP_UPGRADE") or "").lower():
        body = b"WebSocket upgrade required"
        start_response("426 Upgrade Required", [("Content-Type", "text/plain"),
                                                ("Content-Length", str(len(body))),
                                                ("Upgrade", "websocket")])
        return [body]
    try:
        session = app.open_session(principal=principal, setup=lambda s: s.data.update(websocket=True))
    except SessionLimitError:
        body = b"too many sessions"
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "5"),
                                                   ("Content-Length", str(len(body)))])
        return [body]
    key = "werkzeug.socket" if "werkzeug.socket" in environ else "gunicorn.socket"
    environ[key] = LockedSocket(raw)
    environ["mcpsync.socket_taken"] = True
    try:
        ws = simple_websocket.Server(environ, subprotocols=[WS_SUBPROTOCOL],
                                     max_message_size=max_message_bytes,
                                     ping_interval=ping_interval_s, thread_class=_ReaderThread)
    except Exception as exc:  # handshake failed (bad request, peer gone)
        log.debug("WebSocket handshake failed: %s", exc)
        app.close_session(session.id)
        return _after_takeover(environ)

    def write(data: bytes) -> None:
        try:
            ws.send(data.decode("utf-8"))
        except (simple_websocket.ConnectionClosed, LocalProtocolError) as exc:
            # The peer closed (or sent its close frame) under us: an OSError, which the
            # stream treats as a failed write, instead of an error raised into a tool.
            raise ConnectionResetError(f"WebSocket closed: {exc}") from exc

    stream = MessageStreamSession(app.server, write, name="ws", conn=app.connection(session))
    try:
        while True:
            try:
                frame = ws.receive(WS_RECEIVE_POLL_S)
            except simple_websocket.ConnectionClosed:
                break
            if session.closed:  # reaped or closed by the app: no zombie connection without it
                break
            if app.draining and stream.conn.inflight_count() == 0:
                break  # shutting down: in-flight calls have finished; end the connection
            if frame is None:  # nothing within the poll interval
                if not ws.connected:
                    break
                if ping_interval_s:  # pings drop a dead peer, so an open socket is not idle
                    app.store.touch(session.id)
                continue
            if isinstance(frame, (bytes, bytearray)):
                stream.send(jsonrpc.error_response(None, InvalidRequest(
                    "Invalid Request: binary frames are not accepted; send JSON text frames")))
                continue
            app.store.touch(session.id)
            stream.feed(frame)
    finally:
        stream.close()
        app.close_session(session.id)
        if ws.connected:  # we end the connection (its session was closed)
            try:
                with stream.write_lock:  # a straggling worker may still be writing
                    ws.close()
            except Exception:
                pass
            # simple-websocket's reader sleeps in select() until the peer answers. Let it see
            # the answer and end before the front end closes the socket: a descriptor closed
            # under an epoll wait does not wake it (it would sleep until its next ping).
            ws.thread.join(WS_CLOSE_TIMEOUT_S)
    return _after_takeover(environ)


def _after_takeover(environ: dict[str, Any]) -> Iterable[bytes]:
    """What to return once the socket was taken over: mcpsync's front end writes nothing
    more for ``mcpsync.socket_taken``; werkzeug and gunicorn are told the same by an error,
    the convention simple-websocket users follow."""
    if environ.get("SERVER_SOFTWARE") == "mcpsync":
        return []
    raise ConnectionError("WebSocket connection closed")
