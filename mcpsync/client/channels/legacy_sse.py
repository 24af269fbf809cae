"""``LegacySseChannel``: an upstream on the HTTP+SSE transport of revision 2024-11-05.

One GET stream carries everything the server sends, starting with an ``endpoint`` event
naming where to POST; our messages are POSTed there and answered 202. The stream is read
by ``mcpsync-<role>-sse-<name>``, owned here and joined by ``close``. It is a stream channel
like stdio (the reader routes each message to its call), so calls carry no pump; the
POSTs go through an ``HttpChannel``'s keep-alive pool.
"""
from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

from ...errors import ConnectionClosed
from .base import ChannelBase, Deliver
from ..endpoint import Endpoint
from ..correlator import Call, shutdown_socket
from .http import MAX_ERROR_BODY_BYTES, HttpChannel, SseReader

log = logging.getLogger("mcpsync.client")


class LegacySseChannel(ChannelBase):
    """HTTP+SSE (2024-11-05); see the module docstring."""

    transport = "sse"
    cancels_by_closing = False
    handshake_only = True

    def __init__(self, cfg: Endpoint) -> None:
        super().__init__(cfg)
        self._http = HttpChannel(cfg)   # its connection pool and headers, for the POSTs
        self._post_path = ""
        self._stream: http.client.HTTPConnection | None = None
        self._reader: SseReader | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # set once by close()

    def open(self, deliver: Deliver, lost: Callable[[str], None], timeout: float) -> None:
        self.attach(deliver, lost)
        self._http.open(deliver, lost, timeout)
        deadline = time.monotonic() + timeout
        conn, resp = self._http._request("GET", None, {"Accept": "text/event-stream", **self.cfg.headers},
                                         timeout, lambda c: None)
        self._stream = conn
        if resp.status != 200:
            conn.close()
            raise ConnectionClosed(f"upstream {self.name!r}: GET {self.url} answered HTTP {resp.status}")
        self._reader = SseReader(resp, lambda: conn.sock)
        endpoint = None
        while endpoint is None:
            data = self._reader.next(max(0.01, deadline - time.monotonic()))
            if data is None:
                conn.close()
                raise ConnectionClosed(f"upstream {self.name!r}: the SSE stream ended before its endpoint event")
            if self._reader.event == "endpoint":
                endpoint = data.strip()
        target = urlsplit(urljoin(self.url, endpoint))
        self._post_path = target.path + (f"?{target.query}" if target.query else "")
        self._http._path = self._post_path
        conn.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"mcpsync-{self.cfg.role}-sse-{self.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._reader is not None
        reason = "the SSE stream ended"
        try:
            while True:
                data = self._reader.next(None)
                if data is None:
                    break
                self._http._route(data, None)
        except (OSError, http.client.HTTPException) as exc:
            reason = f"the SSE stream broke: {exc}"
        if not self._closing.is_set():
            self._lost(reason)

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        try:
            conn, resp = self._http._request("POST", msg, {"Content-Type": "application/json",
                                                           "Accept": "application/json", **self.cfg.headers},
                                             self.cfg.timeouts.request, lambda c: None)
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionClosed(f"upstream {self.name!r}: cannot POST to {self.url}: {exc}") from None
        body = resp.read(MAX_ERROR_BODY_BYTES)
        if resp.will_close:
            conn.close()
        else:
            self._http._give_back(conn)
        if resp.status not in (200, 202, 204):
            raise ConnectionClosed(f"upstream {self.name!r}: POST answered HTTP {resp.status}: "
                                   f"{body[:200].decode('utf-8', 'replace')}")

    def end(self, call: Call) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "endpoint": self._post_path or None}

    def close(self) -> None:
        self._closing.set()
        stream = self._stream
        if stream is not None:
            shutdown_socket(stream.sock)
            stream.close()
        self._http.close()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(self.cfg.timeouts.shutdown)
