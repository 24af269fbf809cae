"""The HTTP front end: a threaded HTTP/1.1 WSGI server on the standard library.

Theory of operation
-------------------
One accept thread (``mcpsync-http-accept``) waits on the listening socket and a wake-up
socket pair. Each accepted connection gets its own thread (``mcpsync-http-conn``) that
runs requests on it one after another until the peer closes or sends ``Connection:
close``, the connection idles past the keep-alive timeout, an error happens, or the
server shuts down. Past ``max_connections`` the accept thread answers 503 itself.

A connection thread owns its socket: it alone reads, writes and closes it. The one other
thread that touches it is ``shutdown()``, which calls ``socket.shutdown()`` to wake a
blocked read. It does so under ``_lock`` while the connection is still registered, and a
connection deregisters (under the lock) before closing, so the descriptor cannot have
been closed and reused in between.

Between requests a connection is *idle*; from a complete request head to the end of its
response it is *busy*. Both transitions happen under ``_lock``. ``shutdown()`` sets
``_stopping`` under the same lock, so it can close every idle connection at once, wait
only for the busy ones, and no request starts after it looked.

The hot path avoids per-request overhead: the head is parsed by hand from one ``recv``
buffer, the environ is a copy of a per-connection template, and a response whose length
is known (a list body, or an app-set ``Content-Length``) leaves in one ``sendall`` with
its head. Timeouts are ``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket, so a read is
one system call instead of ``poll`` + ``recv``. Responses without a length are sent
chunked on HTTP/1.1, every chunk as soon as the app yields it (server-sent events).

WebSocket: ``werkzeug.socket`` in the environ is the connection socket, which the
WebSocket transport takes over; it runs its frame loop inside the WSGI call. When an ``Upgrade: websocket`` request returns without having sent a response (and
its status is not a 4xx/5xx refusal), or the app set ``environ["mcpsync.socket_taken"]``,
nothing more is written and the connection is closed.
"""
from __future__ import annotations

import io
import logging
import re
import selectors
import socket
import struct
import sys
import threading
import time
from email.utils import formatdate
from types import TracebackType
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import unquote_to_bytes

from ..sync import CpuGate, held_gate, leave_gate

log = logging.getLogger("mcpsync.http")

KEEPALIVE_TIMEOUT_S = 75.0       # idle time allowed between two requests on a connection
READ_TIMEOUT_S = 30.0            # max wait for more bytes once a request has begun
WRITE_TIMEOUT_S = 60.0           # max wait for the peer to take more response bytes
MAX_CONNECTIONS = 1000           # live connections; past it, 503 + Retry-After
MAX_REQUEST_LINE_BYTES = 8190    # longer: 414
MAX_HEADER_LINE_BYTES = 8190     # one header line; longer: 431
MAX_HEADER_BYTES = 65536         # the whole head; larger: 431
MAX_HEADERS = 100                # header lines; more: 431
DRAIN_LIMIT_BYTES = 256 * 1024   # unread request body discarded to keep a connection alive
SHUTDOWN_TIMEOUT_S = 5.0
LINGER_TIMEOUT_S = 5.0           # after an error response, time to discard the peer's input
LINGER_MAX_BYTES = 16 * 1024 * 1024  # (a refused large body: the client reads our 413, no reset)
ACCEPT_BACKOFF_S = 0.1           # pause after accept() fails (e.g. out of descriptors)
RECV_BYTES = 65536
LISTEN_BACKLOG = 1024

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]

_REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB (obs-text is allowed)
_WATCHED = frozenset(("content-length", "connection", "transfer-encoding", "date", "server"))
_SERVER_LINE = "Server: mcpsync\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Header name as sent -> environ key ("" = ignored). Filled on first sight, bounded.
_HEADER_KEYS: dict[str, str] = {}
_HEADER_KEYS_MAX = 512
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)  # one non-blocking send on a blocking socket
# Kernel socket timeouts where struct timeval is what the kernel takes; settimeout elsewhere.
_SOCKOPT_TIMEOUTS = sys.platform != "win32" and hasattr(socket, "SO_RCVTIMEO")
_date_cache: tuple[int, str] = (0, "")


def _error_response(code: int, extra: str = "") -> bytes:
    reason = _REASONS[code]
    body = f"{code} {reason}\n"
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}{_date_line()}"
            f"{_SERVER_LINE}\r\n{body}").encode("latin-1")


def _date_line() -> str:
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:  # racing writers store equal values
        cached = _date_cache = (now, f"Date: {formatdate(now, usegmt=True)}\r\n")
    return cached[1]


def _header_key(name: str) -> str:
    """The environ key for a header name; ``""`` for names we drop (with ``_``: spoofable)."""
    key = _HEADER_KEYS.get(name)
    if key is not None:
        return key
    if not _TOKEN.match(name):
        raise _HttpError(400)
    upper = name.upper()
    if "_" in upper:
        key = ""
    elif upper in ("CONTENT-TYPE", "CONTENT-LENGTH"):
        key = upper.replace("-", "_")
    else:
        key = "HTTP_" + upper.replace("-", "_")
    if len(_HEADER_KEYS) < _HEADER_KEYS_MAX:
        _HEADER_KEYS[name] = key
    return key


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))


class _HttpError(Exception):
    """The peer broke HTTP; answer ``status`` (when not None) and close."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


class _PeerError(ConnectionError):
    """Reading the request body or writing the response failed because of the peer.

    Raised into the app from ``wsgi.input`` and ``write()``; a ``ConnectionError`` so that
    frameworks treat it as a dropped client.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Body:
    """``wsgi.input`` for a body not already in the buffer: fixed-length or chunked.

    Used only by the connection's thread (the app runs there). Ends at the end of the
    body, so ``wsgi.input_terminated`` holds.
    """

    def __init__(self, conn: _Connection, length: int | None, expect_continue: bool) -> None:
        self._conn = conn
        self._chunked = length is None
        self._left = length or 0      # fixed: body bytes left; chunked: left in this chunk
        self._done = length == 0
        self._pending = b""           # bytes pushed back by readline
        self._continue = expect_continue  # "100 Continue" owed before the first read

    def _piece(self, limit: int) -> bytes:
        """Up to ``limit`` (> 0) more body bytes, ``b""`` at the end; blocks (read timeout)."""
        if self._pending:
            piece, self._pending = self._pending[:limit], self._pending[limit:]
            return piece
        if self._done:
            return b""
        conn = self._conn
        if self._continue:
            self._continue = False
            if not conn.head_sent:
                conn.send(_CONTINUE)
        if self._chunked and not self._left:
            self._left = conn.read_chunk_size()
            if not self._left:
                conn.read_trailers()
                self._done = True
                return b""
        data = conn.take(min(limit, self._left))
        self._left -= len(data)
        if not self._left:
            if self._chunked:
                conn.read_chunk_end()
            else:
                self._done = True
        return data

    def read(self, size: int | None = -1) -> bytes:
        parts = []
        want = -1 if size is None or size < 0 else size
        while want:
            piece = self._piece(RECV_BYTES if want < 0 else want)
            if not piece:
                break
            parts.append(piece)
            if want > 0:
                want -= len(piece)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        parts = []
        want = -1 if size is None or size < 0 else size
        while want:
            piece = self._piece(RECV_BYTES if want < 0 else want)
            if not piece:
                break
            end = piece.find(b"\n") + 1
            if end:
                self._pending = piece[end:] + self._pending
                parts.append(piece[:end])
                break
            parts.append(piece)
            if want > 0:
                want -= len(piece)
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body; False if more than ``limit`` bytes remain or
        the client still waits for "100 Continue" (then the connection must close)."""
        if self._continue and not self._done:
            return False
        total = 0
        while total <= limit:
            piece = self._piece(RECV_BYTES)
            if not piece:
                return True
            total += len(piece)
        return False


class _Connection:
    """One accepted socket and the requests on it. Everything here runs on its own thread,
    except ``busy`` (under the server's ``_lock``) and the socket's ``shutdown()``."""

    def __init__(self, server: ThreadedWSGIServer, sock: socket.socket,
                 addr: tuple[Any, ...]) -> None:
        self.server = server
        self.sock = sock
        self.busy = False          # guarded by server._lock
        self.thread: threading.Thread | None = None
        self._buf = b""            # received, not yet consumed
        self._rcvtimeo: float | None = -1.0  # the receive timeout in force (-1: unset)
        self._linger = False
        self._template: dict[str, Any] = {
            "SCRIPT_NAME": "", "SERVER_NAME": server.server_name,
            "SERVER_PORT": str(server.port), "REMOTE_ADDR": str(addr[0]),
            "REMOTE_PORT": str(addr[1]), "SERVER_SOFTWARE": "mcpsync",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "werkzeug.socket": sock,
        }
        self._start_response_cb = self._start_response  # bound once, handed to every request
        self._write_cb = self._write
        # Per-request state, reset by _respond.
        self.head_sent = False
        self._status: str | None = None
        self._headers: Iterable[tuple[str, str]] = ()
        self._keep = False
        self._http11 = True
        self._head_only = False
        self._no_body = False
        self._chunked = False
        self._remaining: int | None = None  # Content-Length bytes still owed
        self._peer_error: _PeerError | None = None

    # --- the connection's life -------------------------------------------------------

    def run(self) -> None:
        server = self.server
        try:
            self._setup()
            while True:
                try:
                    environ = self._read_request()
                except _HttpError as exc:
                    if exc.status is not None:
                        self.send_quietly(_error_response(exc.status))
                        self._linger = True
                    break
                if environ is None or not server._begin(self):
                    break
                try:
                    keep = self._respond(environ)
                finally:
                    server._end(self)
                if not keep:
                    break
        except OSError as exc:  # the peer vanished while we set the socket up
            log.debug("HTTP connection lost: %s", exc)
        except Exception:  # a bug of ours; the thread must not die with it
            log.exception("HTTP connection failed")
        finally:
            leave_gate()
            if self._linger:
                self._drain_before_close()
            server._forget(self)  # from here on no other thread touches the socket
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # also wakes a taken-over socket's reader
            except OSError:
                pass
            self.sock.close()

    def _setup(self) -> None:
        sock = self.sock
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _SOCKOPT_TIMEOUTS and self.server.write_timeout is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            _timeval(self.server.write_timeout))

    def _set_rcvtimeo(self, seconds: float | None) -> None:
        if seconds == self._rcvtimeo:
            return
        if _SOCKOPT_TIMEOUTS:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        else:
            self.sock.settimeout(seconds)
        self._rcvtimeo = seconds

    def _recv(self, timeout: float | None) -> bytes:
        """More bytes, ``b""`` on EOF. Blocks up to ``timeout``; raises TimeoutError."""
        leave_gate()
        self._set_rcvtimeo(timeout)
        try:
            return self.sock.recv(RECV_BYTES)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise TimeoutError from None

    def _drain_before_close(self) -> None:
        """Half-close and discard the peer's input for a while, so that it reads our error
        response instead of a reset. Bounded by LINGER_TIMEOUT_S and LINGER_MAX_BYTES."""
        deadline = time.monotonic() + LINGER_TIMEOUT_S
        total = 0
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while total < LINGER_MAX_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                data = self._recv(left)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass

    # --- reading ---------------------------------------------------------------------

    def _read_request(self) -> dict[str, Any] | None:
        """Parse the next request head into an environ; None when the peer is done.
        Blocks up to the keep-alive timeout, then the read timeout; raises _HttpError."""
        srv = self.server
        buf = self._buf
        if not buf:
            try:
                buf = self._recv(srv.keepalive_timeout)
            except OSError:  # idle timeout, reset, or shut down by shutdown()
                return None
        end = buf.find(b"\r\n\r\n")
        if end < 0 or buf[0] in (13, 10):
            buf, end = self._read_head_slow(buf)
            if end < 0:  # the peer closed or idled out between requests: a clean end
                return None
        srv._enter_gate()  # a whole head: the CPU part begins
        text = buf[:end].decode("latin-1")
        self._buf = buf[end + 4:]
        lines = text.split("\r\n")
        nlines = len(lines)
        if text.count("\n") != nlines - 1 or text.count("\r") != nlines - 1:
            raise _HttpError(400)  # a bare CR or LF
        request_line = lines[0]
        if len(request_line) > srv.max_request_line:
            raise _HttpError(414)
        if nlines > srv.max_headers + 1 or end - len(request_line) > srv.max_header_bytes:
            raise _HttpError(431)
        if end > srv.max_header_line and max(map(len, lines[1:]), default=0) > srv.max_header_line:
            raise _HttpError(431)
        try:
            method, target, version = request_line.split(" ")
        except ValueError:
            raise _HttpError(400) from None
        if not target:
            raise _HttpError(400)
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            raise _HttpError(505 if version.startswith("HTTP/") else 400)

        environ = self._template.copy()
        keys = _HEADER_KEYS
        for i in range(1, nlines):
            name, sep, value = lines[i].partition(":")
            key = keys.get(name)
            if key is None:
                key = _header_key(name)
            if not sep:
                raise _HttpError(400)
            if not key:
                continue
            value = value.strip(" \t")
            if not value.isprintable() and _BAD_VALUE.search(value):
                raise _HttpError(400)  # NUL or another control character (RFC 9110 5.5)
            if key in environ:
                if key == "CONTENT_LENGTH":
                    if environ[key] != value:
                        raise _HttpError(400)
                    continue
                value = environ[key] + ", " + value
            environ[key] = value

        environ["REQUEST_METHOD"] = method
        environ["SERVER_PROTOCOL"] = version
        environ["REQUEST_URI"] = environ["RAW_URI"] = target
        path, _, environ["QUERY_STRING"] = target.partition("?")
        if path[:1] != "/" and "://" in path:  # absolute-form
            rest = path.partition("://")[2]
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
        if "%" in path:
            path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
        environ["PATH_INFO"] = path

        self._http11 = http11 = version == "HTTP/1.1"
        if http11 and "HTTP_HOST" not in environ:
            raise _HttpError(400)  # RFC 9112 3.2: a server must refuse it
        self._head_only = method == "HEAD"
        conn_header = environ.get("HTTP_CONNECTION")
        if http11:
            self._keep = conn_header is None or not _has_token(conn_header, "close")
        else:
            self._keep = conn_header is not None and _has_token(conn_header, "keep-alive")

        length = environ.get("CONTENT_LENGTH")
        if "HTTP_TRANSFER_ENCODING" in environ:
            if length is not None or not http11:
                raise _HttpError(400)  # ambiguous framing: the smuggling vector
            if environ["HTTP_TRANSFER_ENCODING"].lower() != "chunked":
                raise _HttpError(501)
            environ["wsgi.input"] = _Body(self, None, self._expects_continue(environ))
        elif length is not None:
            if not (length.isdigit() and length.isascii()):
                raise _HttpError(400)
            n = int(length)
            buf = self._buf
            if n <= len(buf):
                environ["wsgi.input"] = io.BytesIO(buf[:n])
                self._buf = buf[n:]
            else:
                environ["wsgi.input"] = _Body(self, n, self._expects_continue(environ))
        else:
            environ["wsgi.input"] = io.BytesIO()
        return environ

    def _expects_continue(self, environ: dict[str, Any]) -> bool:
        expect = environ.get("HTTP_EXPECT")
        return self._http11 and expect is not None and expect.lower() == "100-continue"

    def _read_head_slow(self, buf: bytes) -> tuple[bytes, int]:
        """Receive until a whole head is buffered: ``(buf, end)``, or ``(b"", -1)`` when the
        peer closed or idled out first. Raises _HttpError for an oversized or slow head."""
        srv = self.server
        limit = srv.max_request_line + srv.max_header_bytes + 4
        while True:
            if buf[:1] in (b"\r", b"\n"):  # empty lines before a request line are allowed
                buf = buf.lstrip(b"\r\n")
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                return buf, end
            line_end = buf.find(b"\r\n")
            if line_end > srv.max_request_line or (line_end < 0 and
                                                   len(buf) > srv.max_request_line):
                raise _HttpError(414)
            if len(buf) > limit:
                raise _HttpError(431)
            try:
                more = self._recv(srv.read_timeout if buf else srv.keepalive_timeout)
            except TimeoutError:
                if buf:
                    raise _HttpError(408) from None
                return b"", -1
            except OSError:
                return b"", -1
            if not more:
                return b"", -1
            buf += more

    def _recv_body(self) -> bytes:
        try:
            data = self._recv(self.server.read_timeout)
            self.server._enter_gate()
        except TimeoutError:
            raise self._fail_input("timed out reading the request body", 408) from None
        except OSError as exc:
            raise self._fail_input(f"request body: {exc}") from None
        if not data:
            raise self._fail_input("client closed the connection inside the request body")
        return data

    def _fail_input(self, message: str, status: int | None = None) -> _PeerError:
        self._peer_error = exc = _PeerError(message, status)
        return exc

    def take(self, n: int) -> bytes:
        """Up to ``n`` body bytes from the buffer, or from one receive if it is empty."""
        buf = self._buf or self._recv_body()
        data, self._buf = buf[:n], buf[n:]
        return data

    def _read_line(self) -> bytes:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                self._buf = buf[end + 2:]
                return buf[:end]
            if len(buf) > self.server.max_header_line:
                raise self._fail_input("chunk framing line too long", 400)
            buf = self._buf = buf + self._recv_body()

    def read_chunk_size(self) -> int:
        size = self._read_line().partition(b";")[0].strip(b" \t")
        if not _HEX.match(size):
            raise self._fail_input("bad chunk size", 400)
        return int(size, 16)

    def read_chunk_end(self) -> None:
        if self._read_line():
            raise self._fail_input("chunk data not followed by CRLF", 400)

    def read_trailers(self) -> None:
        for _ in range(self.server.max_headers + 1):
            if not self._read_line():
                return
        raise self._fail_input("too many trailer fields", 431)

    # --- responding ------------------------------------------------------------------

    def _respond(self, environ: dict[str, Any]) -> bool:
        """Run the app for one request and send its response; True to keep the connection."""
        self.head_sent = self._chunked = False
        self._status = None
        self._headers = ()
        self._remaining = None
        self._peer_error = None
        upgrade = environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        if upgrade:  # a taken-over socket's reader must block without our read timeout
            self._set_rcvtimeo(None)
            leave_gate()  # the connection lives on in the app
        else:
            self.server._enter_gate()  # (held already unless the head was buffered)
        result: Any = None
        try:
            result = self.server.app(environ, self._start_response_cb)
            if environ.get("mcpsync.socket_taken") or (upgrade and self._taken_over()):
                return False
            if type(result) is list and not self.head_sent:
                body = result[0] if len(result) == 1 else b"".join(result)
                if type(body) is not bytes and not isinstance(body, (bytearray, memoryview)):
                    raise TypeError(f"WSGI body must be bytes, not {type(body).__name__}")
                self.send_response(self._build_head(len(body)) + self._frame(body))
            else:
                leave_gate()  # producing the next chunk may wait for events
                for chunk in result:
                    if chunk:
                        self._write(chunk)
                if not self.head_sent:
                    self.send(self._build_head(0))
                elif self._chunked:
                    self.send(b"0\r\n\r\n")
            if self._remaining:
                log.warning("%s %s: app sent %d bytes fewer than its Content-Length",
                            environ["REQUEST_METHOD"], environ["PATH_INFO"], self._remaining)
                return False
        except Exception as exc:
            self._on_app_error(exc, environ, upgrade)
            return False
        finally:
            leave_gate()  # an error response, or an app that wrote nothing
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("close() of the WSGI response failed")
                    self._keep = False
        if self._peer_error is not None:  # the app caught it and answered anyway
            return False
        body_in = environ["wsgi.input"]
        if type(body_in) is _Body:
            try:
                if not body_in.discard(self.server.drain_limit):
                    self._linger = True  # discard the rest before closing: no reset
                    return False
            except _PeerError:
                return False
        return self._keep and not self.server._stopping

    def _taken_over(self) -> bool:
        """After an ``Upgrade: websocket`` request: did the app take the socket over?"""
        if self.head_sent:
            return False
        status = self._status
        return status is None or status[:1] not in ("4", "5")

    def _on_app_error(self, exc: Exception, environ: dict[str, Any], upgrade: bool) -> None:
        peer = self._peer_error
        if peer is not None or (upgrade and isinstance(exc, ConnectionError)):
            log.debug("client connection lost: %s", peer or exc)
            if peer is not None and peer.status is not None and not self.head_sent:
                self.send_quietly(_error_response(peer.status))
                self._linger = True
            return
        log.exception("error in WSGI app for %s %s",
                      environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        if not self.head_sent and not upgrade:  # an upgrade's socket may belong to the app
            self.head_sent = True
            self.send_quietly(_error_response(500))
            self._linger = True

    def _start_response(self, status: str, headers: list[tuple[str, str]],
                        exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        self._status = status
        self._headers = headers
        return self._write_cb

    def _write(self, data: bytes) -> None:
        """The WSGI ``write()`` callable, and the sink for yielded chunks: sends at once."""
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"WSGI body must be bytes, not {type(data).__name__}")
        if not self.head_sent:
            self.send(self._build_head(None) + self._frame(data))
        else:
            out = self._frame(data)
            if out:
                self.send(out)

    def _frame(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._no_body or not data:
            return b""
        if type(data) is not bytes:
            data = bytes(data)
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        left = self._remaining
        if left is not None:
            if len(data) > left:
                log.warning("app sent more bytes than its Content-Length; truncated")
                data = data[:left]
            self._remaining = left - len(data)
        return data

    def _build_head(self, total: int | None) -> bytes:
        """The response head; ``total`` is the body length when all of it is known."""
        status = self._status
        if status is None:
            raise RuntimeError("the app did not call start_response()")
        code = status[:3]
        if not (code.isdigit() and (len(status) == 3 or status[3] == " ")):
            raise ValueError(f"bad WSGI status {status!r}")
        lines = []
        length = None
        has_date = has_server = False
        keep = self._keep and not self.server._stopping
        for name, value in self._headers:
            lname = name.lower()
            if lname in _WATCHED:
                if lname == "content-length":
                    length = int(value)
                    if length < 0:
                        raise ValueError(f"negative Content-Length {value!r}")
                elif lname == "connection":  # ours to send; the app may only ask to close
                    keep = keep and not _has_token(value, "close")
                    continue
                elif lname == "transfer-encoding":
                    raise ValueError("WSGI apps may not set Transfer-Encoding (hop-by-hop)")
                elif lname == "date":
                    has_date = True
                else:
                    has_server = True
            lines.append(f"{name}: {value}\r\n")
        no_body = self._head_only or code in ("204", "304") or code[0] == "1"
        self._no_body = no_body
        if length is not None:
            self._remaining = None if no_body else length
        elif total is not None:
            if code not in ("204", "304") and code[0] != "1":
                lines.append(f"Content-Length: {total}\r\n")
            self._remaining = None if no_body else total
        elif no_body:
            pass
        elif self._http11:
            self._chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            keep = False  # HTTP/1.0 without a length: the body ends when we close
        if not keep:
            lines.append("Connection: close\r\n")
        elif not self._http11:
            lines.append("Connection: keep-alive\r\n")
        self._keep = keep
        if not has_date:
            lines.append(_date_line())
        if not has_server:
            lines.append(_SERVER_LINE)
        text = f"HTTP/1.1 {status}\r\n{''.join(lines)}\r\n"
        if text.count("\n") != len(lines) + 2 or text.count("\r") != len(lines) + 2:
            raise ValueError("CR or LF inside a WSGI status or header")
        data = text.encode("latin-1")
        self.head_sent = True
        return data

    def send_response(self, data: bytes) -> None:
        """Send a whole response. Holding the CPU gate, it first tries without blocking (the
        usual case: the kernel takes it at once) and leaves the gate only if the peer is
        slow to read; the gate is left when the request ends."""
        if _DONTWAIT and held_gate():
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._peer_error = err = _PeerError(f"send failed: {exc}")
                raise err from None
            if sent == len(data):
                return
            data = data[sent:]
        self.send(data)

    def send(self, data: bytes) -> None:
        """Send all of ``data``; blocks up to the write timeout per send. Raises _PeerError.
        Streaming writes come here too; whoever streams may block next, so the CPU gate is
        left first."""
        leave_gate()
        try:
            self.sock.sendall(data)
        except OSError as exc:  # a reset, a write timeout, or shut down by shutdown()
            self._peer_error = err = _PeerError(f"send failed: {exc}")
            raise err from None

    def send_quietly(self, data: bytes) -> None:
        leave_gate()
        try:
            self.sock.sendall(data)
        except OSError:
            pass


def _timeval(seconds: float | None) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO; all zero means no timeout."""
    if seconds is None:
        return struct.pack("ll", 0, 0)
    whole = int(seconds)
    return struct.pack("ll", whole, max(int((seconds - whole) * 1e6), 0 if whole else 1))


class FrontEnd(Protocol):
    """What ``make_server`` returns, whichever kind."""

    @property
    def server_address(self) -> tuple[Any, ...]: ...
    @property
    def port(self) -> int: ...
    def serve_forever(self) -> None: ...
    def start(self) -> FrontEnd: ...
    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool: ...


class ThreadedWSGIServer:
    """An HTTP/1.1 WSGI server with one thread per connection; see the module docstring.

    Tunables are keyword arguments defaulting to this module's constants; a timeout of
    None waits forever.
    """

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 8000, *,
                 max_connections: int = MAX_CONNECTIONS,
                 keepalive_timeout: float | None = KEEPALIVE_TIMEOUT_S,
                 read_timeout: float | None = READ_TIMEOUT_S,
                 write_timeout: float | None = WRITE_TIMEOUT_S,
                 max_request_line: int = MAX_REQUEST_LINE_BYTES,
                 max_header_line: int = MAX_HEADER_LINE_BYTES,
                 max_header_bytes: int = MAX_HEADER_BYTES,
                 max_headers: int = MAX_HEADERS,
                 drain_limit: int = DRAIN_LIMIT_BYTES,
                 backlog: int = LISTEN_BACKLOG,
                 cpu_gate: bool = True) -> None:
        for name, value in (("keepalive_timeout", keepalive_timeout),
                            ("read_timeout", read_timeout), ("write_timeout", write_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.app = app
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_request_line = max_request_line
        self.max_header_line = max_header_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.drain_limit = drain_limit
        # Requests queue in arrival order for their parse-and-dispatch part (see sync.gate).
        self.cpu_gate: CpuGate | None = CpuGate() if cpu_gate else None

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(backlog)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.server_address: tuple[Any, ...] = self._listener.getsockname()
        self.port: int = self.server_address[1]
        self.server_name = host or str(self.server_address[0])

        # Guards _conns, _retired, every _Connection.busy, _busy, _stopping, _serving. Taken by
        # the accept thread (register), connection threads (request start/end, exit) and
        # shutdown(). Held for a few set/flag operations; the only I/O under it is
        # socket.shutdown() in shutdown(), a non-blocking call that must not race a close.
        self._lock = threading.Lock()
        # Notified when a connection stops being busy or exits while _stopping; shutdown() waits.
        self._quiet = threading.Condition(self._lock)
        self._conns: set[_Connection] = set()
        # Threads of closed connections, maybe still exiting: shutdown() joins them too.
        self._retired: list[threading.Thread] = []
        self._busy = 0
        self._stopping = False     # written under _lock; read unlocked as a hint on hot paths
        self._serving = False
        self._stopped = threading.Event()     # the accept loop has exited
        self._backoff = threading.Event()     # set by shutdown(): ends an accept back-off wait
        self._accept_thread: threading.Thread | None = None
        self._result: bool | None = None

    # --- connection bookkeeping (called by connection threads) -------------------------

    def _enter_gate(self) -> None:
        """Queue for the CPU gate (see ``sync.gate``): uncontended, one lock operation."""
        if self.cpu_gate is not None:
            self.cpu_gate.enter()

    def _begin(self, conn: _Connection) -> bool:
        with self._lock:
            if self._stopping:
                return False
            conn.busy = True
            self._busy += 1
            return True

    def _end(self, conn: _Connection) -> None:
        with self._lock:
            conn.busy = False
            self._busy -= 1
            if self._stopping:
                self._quiet.notify_all()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)
            self._retired.append(threading.current_thread())
            if self._stopping:
                self._quiet.notify_all()

    # --- accepting ---------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections until ``shutdown()``. Blocks until then."""
        with self._lock:
            if self._stopping:  # shut down before the accept thread got here
                return
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            self._serving = True
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                # No timeout: shutdown() wakes us through _wake_w.
                for key, _ in selector.select():
                    if key.fileobj is self._listener:
                        self._accept_ready()
        finally:
            selector.close()
            self._stopped.set()

    def _accept_ready(self) -> None:
        while not self._stopping:
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                log.error("accept() failed: %s", exc)
                self._backoff.wait(ACCEPT_BACKOFF_S)
                return
            self._register(sock, addr)

    def _register(self, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        conn = _Connection(self, sock, addr)
        thread = conn.thread = threading.Thread(target=conn.run, name="mcpsync-http-conn",
                                                daemon=True)
        with self._lock:
            if len(self._retired) > 64:
                self._retired = [t for t in self._retired if t.is_alive()]
            admitted = not self._stopping and len(self._conns) < self.max_connections
            if admitted:
                self._conns.add(conn)
        if admitted:
            thread.start()
        else:
            _refuse(sock, self._stopping)

    def start(self) -> ThreadedWSGIServer:
        """Serve in a background thread (``mcpsync-http-accept``); returns self."""
        thread = threading.Thread(target=self.serve_forever, name="mcpsync-http-accept",
                                  daemon=True)
        self._accept_thread = thread
        thread.start()
        return self

    # --- stopping ----------------------------------------------------------------------

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop accepting, close idle connections, wait up to ``timeout`` for in-flight
        requests, then cut the remaining connections and join what threads it can.
        Blocks up to ``timeout``. True if everything finished cleanly. Idempotent."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._result is not None:
                return self._result
            self._stopping = True
            serving = self._serving
            for conn in self._conns:
                if not conn.busy:
                    _shutdown_socket(conn.sock)
        self._backoff.set()
        try:
            self._wake_w.send(b"x")
        except OSError:  # buffer full: a wake-up is already pending
            pass
        clean = not serving or self._stopped.wait(max(deadline - time.monotonic(), 0.0))
        if self._accept_thread is not None:
            self._accept_thread.join(max(deadline - time.monotonic(), 0.0))
            clean = clean and not self._accept_thread.is_alive()
        if not serving or self._stopped.is_set():  # from here the port refuses connections
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
        with self._lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._quiet.wait(left)
            if self._busy:
                clean = False
                log.warning("shutdown: %d request(s) still running at the deadline", self._busy)
            for conn in self._conns:  # stragglers, and idle ones that slipped in before _stopping
                _shutdown_socket(conn.sock)
            threads = [c.thread for c in self._conns if c.thread is not None] + self._retired
        me = threading.current_thread()  # an app may call shutdown() from its request
        for thread in threads:
            if thread.ident is not None and thread is not me:  # started
                thread.join(max(deadline - time.monotonic(), 0.0))
                clean = clean and not thread.is_alive()
        with self._lock:
            self._result = clean
        return clean

    def __enter__(self) -> ThreadedWSGIServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _refuse(sock: socket.socket, stopping: bool) -> None:
    """Answer 503 on a connection we will not serve, from the accept thread; never blocks."""
    try:
        sock.setblocking(False)
        if not stopping:
            sock.send(_error_response(503, "Retry-After: 1\r\n"))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(RECV_BYTES)  # what already arrived, so close() is less likely to reset
    except OSError:
        pass
    finally:
        sock.close()


class WerkzeugServer:
    """``werkzeug.serving``'s threaded development server behind the FrontEnd API."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 8000,
                 **kwargs: Any) -> None:
        from werkzeug.serving import make_server as werkzeug_make_server
        self._server = werkzeug_make_server(host, port, app, threaded=True, **kwargs)
        self.server_address: tuple[Any, ...] = self._server.socket.getsockname()
        self.port: int = self.server_address[1]
        self._thread: threading.Thread | None = None
        self._closed = False

    def serve_forever(self) -> None:
        """Serve until ``shutdown()``; blocks until then."""
        self._server.serve_forever()

    def start(self) -> WerkzeugServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mcpsync-http-accept", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the accept loop (werkzeug polls for this every 0.5 s) and close the socket.
        Requests in progress are not waited for: werkzeug's request threads are daemons."""
        if self._closed:
            return True
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()
        return self._thread is None or not self._thread.is_alive()

    def __enter__(self) -> WerkzeugServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


def make_server(app: WSGIApp, host: str = "127.0.0.1", port: int = 8000, *,
                kind: str = "threaded", **kwargs: Any) -> ThreadedWSGIServer | WerkzeugServer:
    """A front end hosting ``app``: ``kind="threaded"`` is ``ThreadedWSGIServer`` (keyword
    tunables pass through); ``"werkzeug"`` is werkzeug's development server."""
    if kind == "threaded":
        return ThreadedWSGIServer(app, host, port, **kwargs)
    if kind == "werkzeug":
        return WerkzeugServer(app, host, port, **kwargs)
    raise ValueError(f"unknown server kind {kind!r}; expected 'threaded' or 'werkzeug'")
