"""Streamable HTTP upstreams: ``HttpChannel``, on the standard library's ``http.client``
(the legacy HTTP+SSE transport, which reuses its pool and ``SseReader``, is in ``legacy_sse.py``).

Theory of operation
-------------------
Streamable HTTP has no single stream to read: each request is a POST whose response
carries the messages about that request (JSON, or an SSE stream), and messages not tied
to a request come on a GET stream. So a request sent for a ``Call`` is not written at once:
``send`` installs a *pump* on the call, and the thread waiting for the call performs the
POST and reads its response itself (``Call.next`` runs the pump), delivering each message
through the session's router with the call as the hint. A downstream cancellation or
``close`` interrupts the pump by shutting the socket down. Notifications and responses
are POSTed on the caller's thread (202 expected).

Keep-alive connections are pooled (``_idle``); a reused connection that turns out to be
closed by the server is retried once on a fresh one.

Handshake era: ``Mcp-Session-Id`` from the initialize response is sent with every later
request along with ``MCP-Protocol-Version``; a 404 for our session means the upstream
forgot it (restart, expiry), reported as ``EXPIRED`` so the session re-initializes and
retries. An SSE response that ends before the response arrives is resumed with ``GET`` and
``Last-Event-ID``. The GET stream is read by the session's events thread (``events_loop``).
In 2026-07-28 every POST carries ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``
and the ``Mcp-Param-*`` headers the tool's input schema asks for, and closing a response
stream is how a request is cancelled.

A connection-level failure (refused, reset) that we did not cause reports the upstream
lost; the supervisor reconnects with backoff.

``HttpChannel._lock`` guards the session id, the negotiated version, the pool and the set
of open connections; it is never held across I/O.
"""
from __future__ import annotations

import base64
import http.client
import logging
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

from ...errors import ConnectionClosed
from ...protocol import jsonrpc, modern
from .base import ChannelBase, Deliver
from ..endpoint import Endpoint
from ..correlator import CLOSED, EXPIRED, RESPONSE, Call, shutdown_socket

log = logging.getLogger("mcpsync.client")

MAX_IDLE_CONNECTIONS = 32        # kept-alive connections (one per call in flight, up to this)
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_SSE_LINE_BYTES = 16 * 1024 * 1024
RESUME_ATTEMPTS = 3            # GET + Last-Event-ID after an SSE response ended early
MAX_RETRY_WAIT_S = 2.0         # cap of an SSE `retry:` pause
EVENTS_RECONNECT_S = 0.5       # pause before re-opening an ended GET stream
DELETE_TIMEOUT_S = 2.0
_SAFE_HEADER = set(range(0x20, 0x7F))


def _header_value(value: str) -> str:
    """A header value as sent: plain when it is visible ASCII without edge spaces, else the
    ``=?base64?...?=`` form of revision 2026-07-28."""
    if value and value == value.strip() and all(ord(ch) in _SAFE_HEADER for ch in value):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


class SseReader:
    """Events from one ``text/event-stream`` response, read line by line."""

    def __init__(self, resp: http.client.HTTPResponse, sock_of: Callable[[], Any]) -> None:
        self.resp = resp
        self._sock_of = sock_of
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.event: str | None = None     # the name of the event `next` returned last

    def next(self, timeout: float | None) -> str | None:
        """The data of the next event (None at the end of the stream). Raises TimeoutError."""
        sock = self._sock_of()
        if sock is not None:
            sock.settimeout(timeout)
        data: list[str] = []
        event: str | None = None
        while True:
            try:
                raw = self.resp.readline(MAX_SSE_LINE_BYTES)
            except (ValueError, AttributeError) as exc:
                # http.client's reader, when the connection is closed under it (close(),
                # a cancellation) or the chunked framing breaks: the stream is over.
                raise ConnectionResetError(f"the event stream broke: {exc!r}") from None
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    self.event = event
                    return "\n".join(data)
                event = None
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                self.last_id = value
            elif field == "retry" and value.isdigit():
                self.retry_ms = int(value)


class HttpChannel(ChannelBase):
    transport = "streamable-http"
    cancels_by_closing = True

    def __init__(self, cfg: Endpoint) -> None:
        super().__init__(cfg)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.tool_schemas: dict[str, Any] = {}
        # Guards the fields below; see the module docstring.
        self._lock = threading.Lock()
        self.session_id: str | None = None
        self.version: str | None = None
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: dict[int, http.client.HTTPConnection] = {}   # call id -> its connection
        self._streams: set[http.client.HTTPConnection] = set()   # long-lived (GET) connections
        self._closed = False
        self._connect_timeout = 30.0
        self._closing = threading.Event()  # set by close(); wakes the events loop's pauses
        self.events_ready = threading.Event()  # set once the GET stream answered (or will not)

    # ---- set-up --------------------------------------------------------------------------

    def open(self, deliver: Deliver, lost: Callable[[str], None], timeout: float) -> None:
        self.attach(deliver, lost)
        self._connect_timeout = timeout

    def set_version(self, version: str) -> None:
        with self._lock:
            self.version = version

    def forget_session(self) -> None:
        with self._lock:
            self.session_id = None

    def info(self) -> dict[str, Any]:
        with self._lock:
            sid = self.session_id
        return {"url": self.url, "session": sid[:8] + "…" if sid else None}

    # ---- connections ---------------------------------------------------------------------

    def _new_connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._connect_timeout)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise ConnectionClosed(f"upstream {self.name!r} is closed")
            if self._idle:
                return self._idle.pop(), True
        return self._new_connection(), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def _headers(self, msg: dict[str, Any] | None, *, accept: str) -> dict[str, str]:
        h = {"Accept": accept, **self.cfg.headers}
        if msg is not None:
            h["Content-Type"] = "application/json"
        params = msg.get("params") if msg is not None else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        envelope = meta.get(modern.META_VERSION) if isinstance(meta, dict) else None
        with self._lock:
            sid, version = self.session_id, self.version
        if envelope:
            assert msg is not None and isinstance(params, dict)
            method = str(msg.get("method"))
            h["MCP-Protocol-Version"] = str(envelope)
            h["Mcp-Method"] = method
            field = modern.NAME_FIELDS.get(method)
            if field is not None and isinstance(params.get(field), str):
                h["Mcp-Name"] = _header_value(params[field])
            if method == "tools/call":
                h.update(self._param_headers(params))
            return h
        if sid:
            h["Mcp-Session-Id"] = sid
        if version:
            h["MCP-Protocol-Version"] = version
        return h

    def _param_headers(self, params: dict[str, Any]) -> dict[str, str]:
        schema = self.tool_schemas.get(params.get("name"))  # type: ignore[arg-type]
        args = params.get("arguments")
        out: dict[str, str] = {}
        if not isinstance(schema, dict) or not isinstance(args, dict):
            return out
        for prop, sub in (schema.get("properties") or {}).items():
            name = sub.get("x-mcp-header") if isinstance(sub, dict) else None
            value = args.get(prop)
            if not name or value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            out[f"Mcp-Param-{name}"] = _header_value(text)
        return out

    def _request(self, method: str, msg: dict[str, Any] | None, headers: dict[str, str],
                 timeout: float | None, on_connect: Callable[[http.client.HTTPConnection], None]
                 ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One HTTP exchange up to the response headers; a stale pooled connection is
        retried once. Raises OSError / HTTPException / ConnectionClosed."""
        body = jsonrpc.encode(msg) if msg is not None else None
        for attempt in (0, 1):
            conn, reused = self._take()
            try:
                if conn.sock is None:
                    conn.connect()
                on_connect(conn)
                assert conn.sock is not None
                conn.sock.settimeout(timeout)
                conn.request(method, self._path, body=body, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused or attempt:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    # ---- sending ---------------------------------------------------------------------------

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        if call is not None and "method" in msg and "id" in msg:
            call.pump = _PostPump(self, msg, call)
            return
        try:
            conn, resp = self._request("POST", msg, self._headers(msg, accept="application/json, text/event-stream"),
                                       self.cfg.timeouts.request, lambda c: None)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(exc)
            raise ConnectionClosed(f"upstream {self.name!r}: cannot reach {self.url}: {exc}") from None
        body = resp.read(MAX_ERROR_BODY_BYTES)
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        if resp.status not in (200, 202, 204):
            log.debug("upstream %s: %s answered HTTP %d: %.200r", self.name, msg.get("method", "response"),
                      resp.status, body)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            closed = self._closed
        if not closed:
            self._lost(f"cannot reach {self.url}: {exc}")

    def end(self, call: Call) -> None:
        with self._lock:
            conn = self._busy.pop(call.id, None)
        if conn is not None:
            conn.close()
        call.interrupt = None

    def _hold(self, call: Call, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._busy[call.id] = conn
            closed = self._closed
        if closed:
            shutdown_socket(conn.sock)

    def _release(self, call: Call, conn: http.client.HTTPConnection, reusable: bool) -> None:
        with self._lock:
            self._busy.pop(call.id, None)
        if reusable:
            self._give_back(conn)
        else:
            conn.close()

    def resume(self, last_id: str, timeout: float | None, on_connect: Callable[[http.client.HTTPConnection], None]
               ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = self._headers(None, accept="text/event-stream")
        headers["Last-Event-ID"] = last_id
        return self._request("GET", None, headers, timeout, on_connect)

    # ---- the GET stream (handshake era) --------------------------------------------------

    def events_loop(self) -> None:
        """Read the session's GET stream until closed; run by the session's events thread."""
        try:
            self._events_loop()
        finally:
            self.events_ready.set()

    def _events_loop(self) -> None:
        last_id: str | None = None
        while not self._closing.is_set():
            headers = self._headers(None, accept="text/event-stream")
            if last_id:
                headers["Last-Event-ID"] = last_id
            holder: list[http.client.HTTPConnection] = []
            try:
                conn, resp = self._request("GET", None, headers, self._connect_timeout, self._track_stream)
                holder.append(conn)
            except (OSError, http.client.HTTPException) as exc:
                if not self._closing.is_set():
                    self._failed(exc)
                return
            except ConnectionClosed:
                return
            self.events_ready.set()
            try:
                if resp.status == 405:
                    log.debug("upstream %s offers no GET stream", self.name)
                    return
                if resp.status == 404:
                    if not self._closing.is_set():
                        self._lost(f"the upstream no longer knows the {self.cfg.role}'s session (HTTP 404)")
                    return
                if resp.status != 200:
                    log.warning("upstream %s: GET stream refused (HTTP %d)", self.name, resp.status)
                    return
                reader = SseReader(resp, lambda: conn.sock)
                while True:
                    data = reader.next(None)
                    if data is None:
                        break
                    self._route(data, None)
                last_id = reader.last_id
            except (OSError, http.client.HTTPException) as exc:
                if self._closing.is_set():
                    return
                log.debug("upstream %s: GET stream broke: %s", self.name, exc)
            finally:
                with self._lock:
                    self._streams.discard(conn)
                conn.close()
            if self._closing.wait(EVENTS_RECONNECT_S):
                return

    def _track_stream(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._streams.add(conn)
            closed = self._closed
        if closed:
            shutdown_socket(conn.sock)

    def _route(self, data: str, call: Call | None) -> None:
        if not data.strip():
            return
        self.deliver_text(data, call, "event")

    # ---- close -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._idle) + list(self._busy.values()) + list(self._streams)
            self._idle.clear()
            sid = self.session_id
        self._closing.set()
        for conn in conns:
            shutdown_socket(conn.sock)
            conn.close()
        if sid and not self.modern:
            self._delete_session(sid)

    def _delete_session(self, sid: str) -> None:
        conn = self._new_connection()
        conn.timeout = DELETE_TIMEOUT_S
        headers = {**self.cfg.headers, "Mcp-Session-Id": sid}
        with self._lock:
            if self.version:
                headers["MCP-Protocol-Version"] = self.version
        try:
            conn.request("DELETE", self._path, headers=headers)
            conn.getresponse().read(MAX_ERROR_BODY_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            log.debug("upstream %s: DELETE of the session failed: %s", self.name, exc)
        finally:
            conn.close()


class _PostPump:
    """Runs one request's POST and reads its response on the waiting thread (``Call.pump``)."""

    def __init__(self, channel: HttpChannel, msg: dict[str, Any], call: Call) -> None:
        self.channel = channel
        self.msg = msg
        self.call = call
        self.conn: http.client.HTTPConnection | None = None
        self.reader: SseReader | None = None
        self.resumes = 0
        self.interrupted = threading.Event()  # set once, by whoever interrupts the call
        call.interrupt = self._interrupt

    def _interrupt(self) -> None:
        self.interrupted.set()
        conn = self.conn
        if conn is not None:
            shutdown_socket(conn.sock)

    def _attach(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.channel._hold(self.call, conn)
        if self.interrupted.is_set():
            shutdown_socket(conn.sock)

    def __call__(self, timeout: float | None) -> bool:
        try:
            if self.reader is None:
                return self._post(timeout)
            return self._read(timeout)
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if not self.interrupted.is_set():
                self.channel._failed(exc)
                self.call.put(CLOSED, ConnectionClosed(
                    f"upstream {self.channel.name!r}: the connection failed: {exc}"))
            return False
        except ConnectionClosed as exc:
            self.call.put(CLOSED, exc)
            return False

    def _post(self, timeout: float | None) -> bool:
        ch = self.channel
        conn, resp = ch._request("POST", self.msg, ch._headers(self.msg, accept="application/json, text/event-stream"),
                                 timeout, self._attach)
        if self.msg.get("method") == "initialize":
            sid = resp.getheader("Mcp-Session-Id")
            if sid:
                with ch._lock:
                    ch.session_id = sid
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
        status = resp.status
        if status == 404 and not ch.modern and ch.session_id and self.msg.get("method") != "initialize":
            resp.read(MAX_ERROR_BODY_BYTES)
            self.conn = None
            ch._release(self.call, conn, False)
            self.call.put(EXPIRED)
            return False
        if status == 200 and ctype == "text/event-stream":
            self.reader = SseReader(resp, lambda: conn.sock)
            return self._read(timeout)
        body = resp.read()
        self.conn = None  # a late interrupt must not hit the connection once it is pooled
        ch._release(self.call, conn, status == 200 and not resp.will_close)
        if status == 200 and ctype == "application/json":
            ch._route(body.decode("utf-8", "replace"), self.call)
            return True
        error = _error_of(body)
        if error is not None:  # e.g. 400 with a JSON-RPC error (2026-07-28 maps codes to statuses)
            self.call.put(RESPONSE, {"jsonrpc": "2.0", "id": self.call.id, "error": error})
            return True
        snippet = body[:200].decode("utf-8", "replace")
        self.call.put(CLOSED, ConnectionClosed(f"upstream {ch.name!r} answered HTTP {status}: {snippet}"))
        return False

    def _read(self, timeout: float | None) -> bool:
        assert self.reader is not None
        data = self.reader.next(timeout)
        if data is not None:
            self.channel._route(data, self.call)
            return True
        # The stream ended before the response: resume it (handshake era), or give up.
        ch = self.channel
        last = self.reader.last_id
        if ch.modern or last is None or self.resumes >= RESUME_ATTEMPTS or self.interrupted.is_set():
            return False
        self.resumes += 1
        if self.conn is not None:
            ch._release(self.call, self.conn, False)
            self.conn = None
        pause = min((self.reader.retry_ms or 0) / 1000, MAX_RETRY_WAIT_S)
        if pause:
            self.call.wait_quiet(pause)
        conn, resp = ch.resume(last, timeout, self._attach)
        if resp.status != 200:
            resp.read(MAX_ERROR_BODY_BYTES)
            return False
        self.reader = SseReader(resp, lambda: conn.sock)
        self.reader.last_id = last
        return True


def _error_of(body: bytes) -> dict[str, Any] | None:
    try:
        value = jsonrpc.decode(body)
    except Exception:
        return None
    if isinstance(value, dict) and isinstance(value.get("error"), dict) \
            and isinstance(value["error"].get("code"), int):
        return dict(value["error"])
    return None
