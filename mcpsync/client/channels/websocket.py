"""``WebSocketChannel``: an upstream at a ``ws://`` / ``wss://`` URL (subprotocol ``mcp``, one
JSON-RPC message per text frame), on ``simple_websocket.Client``.

Two threads, owned here and joined by ``close``: simple-websocket's own socket reader
(named ``mcpsync-<role>-wsio-<name>``) and ours, ``mcpsync-<role>-ws-<name>``, which takes whole
messages from it and routes them. The connection and handshake are bounded by the connect
timeout (simple-websocket's client has none, so ``_Client`` opens the socket itself).
``_write_lock`` serializes our frames (one message per send).
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

import simple_websocket
from wsproto import ConnectionType

from ...errors import ConnectionClosed
from ...protocol import jsonrpc
from .base import ChannelBase, Deliver
from ..endpoint import Endpoint
from ..correlator import Call, shutdown_socket

log = logging.getLogger("mcpsync.client")

WS_SUBPROTOCOL = "mcp"
WS_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
WS_PING_INTERVAL_S = 25.0


class _Client(simple_websocket.Client):
    """``simple_websocket.Client`` with a timeout on connect and handshake."""

    def __init__(self, url: str, *, headers: dict[str, str], timeout: float, thread_name: str) -> None:
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        self.host = parts.hostname
        self.port = parts.port or (443 if secure else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.subprotocols = [WS_SUBPROTOCOL]
        self.extra_headeers = list(headers.items())  # (sic: simple-websocket's attribute name)
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)

        def thread_class(target: Callable[[], None]) -> threading.Thread:
            return threading.Thread(target=target, name=thread_name, daemon=True)
        simple_websocket.ws.Base.__init__(self, sock, connection_type=ConnectionType.CLIENT,
                                          ping_interval=WS_PING_INTERVAL_S,
                                          max_message_size=WS_MAX_MESSAGE_BYTES,
                                          thread_class=thread_class)

    def handshake(self) -> None:
        super().handshake()
        self.sock.settimeout(None)  # from now on simple-websocket's reader blocks on it


class WebSocketChannel(ChannelBase):
    transport = "websocket"
    cancels_by_closing = False

    def __init__(self, cfg: Endpoint) -> None:
        super().__init__(cfg)
        self._ws: Any = None
        # Serializes our frames (one message per send call).
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # set once by close()

    def open(self, deliver: Deliver, lost: Callable[[str], None], timeout: float) -> None:
        self.attach(deliver, lost)
        try:
            self._ws = _Client(self.url, headers=dict(self.cfg.headers), timeout=timeout,
                                thread_name=f"mcpsync-{self.cfg.role}-wsio-{self.name}")
        except (OSError, ConnectionError) as exc:
            raise ConnectionClosed(f"upstream {self.name!r}: cannot connect to {self.url}: {exc}") from None
        self._thread = threading.Thread(target=self._read, name=f"mcpsync-{self.cfg.role}-ws-{self.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ws = self._ws
        reason = "the WebSocket closed"
        try:
            while True:
                frame = ws.receive()
                if frame is None:
                    continue
                if isinstance(frame, (bytes, bytearray)):
                    log.warning("upstream %s sent a binary frame; ignored", self.name)
                    continue
                self.deliver_text(frame, None, "frame")
        except simple_websocket.ConnectionClosed as exc:
            reason = f"the WebSocket closed ({exc.reason})"
        except OSError as exc:
            reason = f"the WebSocket broke: {exc}"
        if not self._closing.is_set():
            self._lost(reason)

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionClosed(f"upstream {self.name!r} is not connected")
        data = jsonrpc.encode(msg).decode("utf-8")
        with self._write_lock:
            try:
                ws.send(data)
            except (simple_websocket.ConnectionClosed, OSError) as exc:
                raise ConnectionClosed(f"upstream {self.name!r}: the WebSocket is closed ({exc})") from None

    def end(self, call: Call) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"url": self.url}

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        ws = self._ws
        if ws is None:
            return
        with self._write_lock:
            try:
                if ws.connected:
                    simple_websocket.ws.Base.close(ws)  # the close frame, socket still open
            except Exception:  # already closed under us
                pass
        # Closing a socket does not wake a thread blocked on it (simple-websocket's reader
        # sits in poll() between pings), and closing it right after a shutdown can even
        # swallow the wake-up: shut it down, wake ours, and close it only once joined.
        shutdown_socket(ws.sock)
        ws.connected = False
        ws.event.set()
        me = threading.current_thread()
        for t in (self._thread, getattr(ws, "thread", None)):
            if t is not None and t is not me:
                t.join(self.cfg.timeouts.shutdown)
                if t.is_alive():
                    log.warning("upstream %s: thread %s did not stop", self.name, t.name)
        try:
            ws.sock.close()
        except OSError:
            pass
