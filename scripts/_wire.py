"""Raw HTTP/1.1 and WebSocket client pieces for ``scripts/attack.py`` (standard library only).

Theory of operation
-------------------
The attacks need what ordinary clients refuse to do: send a NUL in a header, leave out
``Host``, lie about a chunk size, upgrade with ``OPTIONS``, stop reading. So requests are
written byte for byte on a plain socket and responses parsed here, with every blocking
call bounded by a ``Budget`` (the attack's deadline). Nothing here is MCP-specific beyond
a few JSON-RPC helpers at the end; the attacks live in ``_attacks.py``.

``HttpConn`` is one keep-alive connection owned by one thread: ``request`` writes one
request and reads one response (Content-Length, chunked or close-delimited body; ``101``
and ``HEAD`` have none). ``SseStream`` reads server-sent events from a response left open.
``WsConn`` is one WebSocket after a raw handshake: masked client frames out (any opcode,
any flags, any length), server frames in.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

RECV_BYTES = 65536
MAX_HEAD_BYTES = 65536          # a longer response head is a broken server
MAX_BODY_BYTES = 64 * 1024 * 1024  # responses we are willing to buffer
ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "mcpsync-attack", "version": "1"}

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WireError(Exception):
    """The connection failed: reset, closed early, timed out, or sent something unparsable."""


class OutOfTime(WireError):
    """The attack's budget ran out while waiting."""


class Budget:
    """A deadline; ``left()`` is the timeout to give the next blocking call."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise OutOfTime("the attack's deadline passed")
        return min(left, cap) if cap is not None else left

    def expired(self) -> bool:
        return time.monotonic() >= self.end


@dataclass
class Target:
    """Where the server is and how to authenticate (``token2`` is a second principal)."""

    host: str
    port: int
    path: str = "/mcp"
    token: str | None = None
    token2: str | None = None
    ws_path: str = "/ws"
    sse_path: str = "/sse"
    messages_path: str = "/messages"

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "Target":
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http://HOST:PORT[/path] URL, not {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path or "/mcp", **kw)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def auth(self, token: str | None | bool = True) -> list[tuple[str, str]]:
        """The Authorization header for ``token`` (True: the main token; None/False: none)."""
        value = self.token if token is True else (token or None)
        return [("Authorization", f"Bearer {value}")] if value else []


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]     # lower-cased names; repeated fields joined with ", "
    body: bytes = b""
    elapsed_s: float = 0.0      # from the end of the request to the end of the head

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def json(self) -> Any:
        return json.loads(self.body)

    def messages(self) -> list[Any]:
        """The JSON-RPC messages of a JSON or SSE body ([] if neither parses)."""
        ctype = self.header("content-type").split(";")[0].strip().lower()
        try:
            if ctype == "text/event-stream":
                return [e for e in (parse_event(b) for b in self.body.split(b"\n\n")) if e is not None]
            if ctype == "application/json" and self.body:
                value = json.loads(self.body)
                return value if isinstance(value, list) else [value]
        except ValueError:
            pass
        return []


def connect(target: Target, budget: Budget, *, source: str | None = None,
            rcvbuf: int | None = None, sndbuf: int | None = None) -> socket.socket:
    """A TCP connection (optionally from a given local address, with small kernel buffers)."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if source:
            sock.bind((source, 0))
        sock.settimeout(budget.left(10.0))
        sock.connect((target.host, target.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        sock.close()
        raise WireError(f"connect to {target.host}:{target.port}: {exc}") from exc
    return sock


def build_request(method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                  body: bytes | None = None, *, host: str | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    """One request as bytes. Header values go out exactly as given (NULs included)."""
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = set()
    for name, value in headers:
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class HttpConn:
    """One HTTP/1.1 connection on a raw socket. Owned by one thread."""

    def __init__(self, target: Target, budget: Budget, *, source: str | None = None,
                 rcvbuf: int | None = None, sndbuf: int | None = None) -> None:
        self.target = target
        self.budget = budget
        self.sock = connect(target, budget, source=source, rcvbuf=rcvbuf, sndbuf=sndbuf)
        self.buf = b""
        self.closed_by_peer = False

    def __enter__(self) -> "HttpConn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes, cap: float | None = None) -> None:
        try:
            self.sock.settimeout(self.budget.left(cap))
            self.sock.sendall(data)
        except socket.timeout as exc:
            raise OutOfTime(f"send stalled ({len(data)} bytes)") from exc
        except OSError as exc:
            raise WireError(f"send: {exc}") from exc

    def _recv(self, cap: float | None = None) -> bytes:
        try:
            self.sock.settimeout(self.budget.left(cap))
            data = self.sock.recv(RECV_BYTES)
        except socket.timeout as exc:
            raise OutOfTime("no answer in time") from exc
        except OSError as exc:
            raise WireError(f"recv: {exc}") from exc
        if not data:
            self.closed_by_peer = True
        return data

    def read_until_eof(self, cap: float | None = None) -> bytes:
        """Everything until the peer closes (its buffer first)."""
        out, self.buf = self.buf, b""
        while True:
            data = self._recv(cap)
            if not data:
                return out
            out += data

    def _fill(self, need: int, cap: float | None) -> None:
        while len(self.buf) < need:
            data = self._recv(cap)
            if not data:
                raise WireError(f"connection closed after {len(self.buf)} of {need} bytes")
            self.buf += data

    def _line(self, cap: float | None) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                return line
            if len(self.buf) > MAX_HEAD_BYTES:
                raise WireError("line too long in the response")
            data = self._recv(cap)
            if not data:
                raise WireError("connection closed inside the response")
            self.buf += data

    def read_head(self, cap: float | None = None) -> Response:
        """The next response head (interim 1xx other than 101 skipped)."""
        started = time.monotonic()
        while True:
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > MAX_HEAD_BYTES:
                    raise WireError("response head too long")
                data = self._recv(cap)
                if not data:
                    raise WireError("connection closed before a response" if not self.buf
                                    else f"connection closed inside the head: {self.buf[:60]!r}")
                self.buf += data
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise WireError(f"not an HTTP response: {lines[0][:60]!r}")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue
            return Response(status, parts[2] if len(parts) > 2 else "", headers,
                            elapsed_s=time.monotonic() - started)

    def read_body(self, resp: Response, *, head_request: bool = False,
                  cap: float | None = None) -> None:
        if head_request or resp.status in (101, 204, 304) or 100 <= resp.status < 200:
            return
        if "chunked" in resp.header("transfer-encoding").lower():
            parts = []
            while True:
                size_line = self._line(cap).split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise WireError(f"bad chunk size from the server: {size_line[:20]!r}") from None
                if size == 0:
                    while self._line(cap):
                        pass  # trailers
                    break
                self._fill(size + 2, cap)
                parts.append(self.buf[:size])
                self.buf = self.buf[size + 2:]
            resp.body = b"".join(parts)
        elif resp.header("content-length"):
            n = int(resp.header("content-length"))
            if n > MAX_BODY_BYTES:
                raise WireError(f"response body of {n} bytes")
            self._fill(n, cap)
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            resp.body = self.read_until_eof(cap)

    def request(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                body: bytes | None = None, *, host: str | None | bool = True,
                version: str = "HTTP/1.1", cap: float | None = None) -> Response:
        """Send one request and read its whole response."""
        self.send(build_request(method, path, headers, body, version=version,
                                host=self.target.host_header if host is True else (host or None)), cap)
        resp = self.read_head(cap)
        self.read_body(resp, head_request=method == "HEAD", cap=cap)
        return resp


def parse_event(block: bytes) -> Any:
    """The JSON data of one SSE event block (None for comments/empty data/non-JSON)."""
    data = [line[5:].lstrip(b" ") for line in block.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b"data:")]
    if not data:
        return None
    try:
        return json.loads(b"\n".join(data))
    except ValueError:
        return None


@dataclass
class SseStream:
    """Server-sent events from a chunked (or close-delimited) response left open."""

    conn: HttpConn
    chunked: bool
    text: bytes = b""
    events: list[tuple[str, bytes]] = field(default_factory=list)

    def _more(self, cap: float | None) -> bool:
        if not self.chunked:
            data = self.conn._recv(cap) if not self.conn.buf else b""
            data, self.conn.buf = self.conn.buf + data, b""
            self.text += data
            return bool(data)
        size = int(self.conn._line(cap).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return False
        self.conn._fill(size + 2, cap)
        self.text += self.conn.buf[:size]
        self.conn.buf = self.conn.buf[size + 2:]
        return True

    def next_event(self, cap: float | None = None) -> tuple[str, bytes] | None:
        """(event name, data) of the next event; None at the end of the stream."""
        while True:
            norm = self.text.replace(b"\r\n", b"\n")
            end = norm.find(b"\n\n")
            if end >= 0:
                block, self.text = norm[:end], norm[end + 2:]
                name, data = "message", []
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        name = line[6:].strip().decode("utf-8", "replace")
                    elif line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" "))
                if data:
                    return name, b"\n".join(data)
                continue  # a comment or keep-alive
            if not self._more(cap):
                return None


def open_sse(target: Target, budget: Budget, path: str, token: str | None | bool = True
             ) -> tuple[HttpConn, Response, SseStream | None]:
    """GET an SSE stream; the stream is None unless the answer is a 200 event stream."""
    conn = HttpConn(target, budget)
    conn.send(build_request("GET", path, [("Accept", "text/event-stream"), *target.auth(token)],
                            host=target.host_header))
    resp = conn.read_head()
    if resp.status != 200 or "text/event-stream" not in resp.header("content-type"):
        conn.read_body(resp)
        return conn, resp, None
    return conn, resp, SseStream(conn, "chunked" in resp.header("transfer-encoding").lower())


# ---- WebSocket --------------------------------------------------------------------------------

def ws_handshake_headers(token_headers: list[tuple[str, str]], key: str | None = None
                         ) -> list[tuple[str, str]]:
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key or base64.b64encode(os.urandom(16)).decode()),
            ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", "mcp"), *token_headers]


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = b"", length: int | None = None,
                 length_form: int | None = None) -> bytes:
    """A client frame. ``mask=b""`` picks a random key, None sends it unmasked; ``length``
    lies about the payload size; ``length_form`` forces the 7/16/64-bit length encoding."""
    n = len(payload) if length is None else length
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    m = 0x80 if mask is not None else 0
    if form == 7:
        head = bytes((b0, m | (n & 0x7F)))
    elif form == 16:
        head = bytes((b0, m | 126)) + (n & 0xFFFF).to_bytes(2, "big")
    else:
        head = bytes((b0, m | 127)) + (n & (2**64 - 1)).to_bytes(8, "big")
    if mask is None:
        return head + payload
    key = mask if len(mask) == 4 else os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(full, "little")).to_bytes(n, "little")


class WsClosed(WireError):
    """The server closed the WebSocket: ``code`` from its close frame, None without one."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code


class WsConn:
    """One WebSocket on a raw socket after a ``101``. Owned by one thread."""

    def __init__(self, http: HttpConn) -> None:
        self.http = http
        self.sock = http.sock

    @classmethod
    def open(cls, target: Target, budget: Budget, *, method: str = "GET",
             token: str | None | bool = True, extra: Iterable[tuple[str, str]] = (),
             version: str = "HTTP/1.1", rcvbuf: int | None = None, sndbuf: int | None = None
             ) -> tuple[Response, "WsConn | None"]:
        """Send the upgrade request; the connection only if the server answered 101."""
        http = HttpConn(target, budget, rcvbuf=rcvbuf, sndbuf=sndbuf)
        try:
            http.send(build_request(method, target.ws_path,
                                    [*ws_handshake_headers(target.auth(token)), *extra],
                                    host=target.host_header, version=version))
            resp = http.read_head()
            if resp.status != 101:
                http.read_body(resp)
                http.close()
                return resp, None
        except BaseException:
            http.close()
            raise
        return resp, cls(http)

    def close(self) -> None:
        self.http.close()

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.http.send(encode_frame(opcode, payload, **kw))

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_json(self, msg: Any) -> None:
        self.send_text(json.dumps(msg, separators=(",", ":")))

    def recv_frame(self, cap: float | None = None) -> tuple[bool, int, bytes]:
        """The next server frame; raises ``WsClosed(None)`` on EOF without a close frame."""
        h = self.http
        try:
            h._fill(2, cap)
        except OutOfTime:
            raise
        except WireError as exc:
            raise WsClosed(None, f"connection ended without a close frame ({exc})") from None
        b0, b1 = h.buf[0], h.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            h._fill(4, cap)
            n, pos = int.from_bytes(h.buf[2:4], "big"), 4
        elif n == 127:
            h._fill(10, cap)
            n, pos = int.from_bytes(h.buf[2:10], "big"), 10
        if b1 & 0x80:
            raise WireError("the server sent a masked frame")
        if n > MAX_BODY_BYTES:
            raise WireError(f"server frame of {n} bytes")
        try:
            h._fill(pos + n, cap)
        except OutOfTime:
            raise
        except WireError as exc:
            raise WsClosed(None, f"connection ended inside a frame ({exc})") from None
        payload, h.buf = h.buf[pos:pos + n], h.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, cap: float | None = None) -> Any:
        """The next JSON message (pings answered); raises ``WsClosed`` on a close frame or EOF."""
        while True:
            _, op, payload = self.recv_frame(cap)
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
            elif op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                raise WsClosed(code, f"close frame {code} {payload[2:].decode('utf-8', 'replace')!r}")
            elif op == OP_TEXT:
                try:
                    return json.loads(payload)
                except ValueError:
                    raise WireError(f"a text frame that is not JSON: {payload[:60]!r}") from None
            elif op != OP_PONG:
                raise WireError(f"unexpected frame opcode {op:#x}")


# ---- JSON-RPC helpers -------------------------------------------------------------------------

def rpc(method: str, params: dict[str, Any] | None = None, rid: Any = None) -> dict[str, Any]:
    """A request (ids of any JSON type), or a notification without ``rid``."""
    msg = {"jsonrpc": "2.0", "method": method, "id": rid, "params": params}
    return {k: v for k, v in msg.items() if v is not None or k == "method"}


def initialize_msg(rid: Any = 0) -> dict[str, Any]:
    return rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": CLIENT_INFO}, rid)


def dumps(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def post_headers(target: Target, token: str | None | bool = True, session: str | None = None,
                 version: str | None = None) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json"), ("Accept", ACCEPT), *target.auth(token)]
    if session:
        headers.append(("Mcp-Session-Id", session))
    if version:
        headers.append(("MCP-Protocol-Version", version))
    return headers


def answer_for(messages: list[Any], rid: Any) -> dict[str, Any] | None:
    for msg in messages:
        if isinstance(msg, dict) and msg.get("id") == rid and ("result" in msg or "error" in msg):
            return msg
    return None


def ws_initialize(ws: WsConn, cap: float | None = None) -> dict[str, Any]:
    """initialize + initialized over a WebSocket; the initialize result."""
    ws.send_json(initialize_msg("init"))
    while True:
        msg = ws.recv_message(cap)
        if isinstance(msg, dict) and msg.get("id") == "init":
            break
    if "result" not in msg:
        raise WireError(f"initialize over WebSocket failed: {msg.get('error')}")
    ws.send_json(rpc("notifications/initialized"))
    return dict(msg["result"])
