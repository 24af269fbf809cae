"""HTTP/1.1, server side, without I/O: request bytes in, events out; responses to bytes.

Theory of operation
-------------------
A ``RequestReader`` is fed what a connection received (``feed``; ``b""`` means the peer
closed its side) and hands back one event at a time (``next_event``): a ``Request`` (the
head), ``Data`` (body bytes, de-chunked), ``EndOfMessage``, or a sentinel: ``NEED_DATA``
(feed more), ``PAUSED`` (a request has ended; the next one, maybe already buffered, is
parsed once its response is done and ``next_cycle()`` is called) or ``CLOSED`` (the peer
closed between two requests: a clean end, not an error). It never touches a socket or a
clock, so every framing rule is tested by feeding bytes.

States and what moves them (the reader for each state is ``_READERS``)::

    IDLE --a byte--> HEAD --whole head--> BODY | CHUNK_SIZE | (no body) --> DONE
    CHUNK_SIZE --size>0--> CHUNK_DATA --all data--> CHUNK_END --CRLF--> CHUNK_SIZE
    CHUNK_SIZE --size 0--> TRAILERS --empty line--> DONE --next_cycle()--> IDLE
    IDLE --EOF--> CLOSED          anything else --EOF--> H1Error(400)

How the body is framed is decided once, from the head, by ``_framing`` (RFC 9112 §6):
Transfer-Encoding wins only when it is exactly ``chunked`` on HTTP/1.1 with no
Content-Length; every other combination that a proxy might read differently (CL with TE,
conflicting CLs, a CL that is not plain digits, ``chunked`` not last or twice) is refused,
so a request can never be framed two ways: the request-smuggling shapes all end in 400.

Two kinds of error, as in h11: the peer broke the rules — ``H1Error`` carrying the status
to answer (400, 408, 414, 417, 431, 501, 505) — or we did (``RuntimeError``). Either way
the connection is closed after the answer.

The response side (head, body framing, the front end's own short answers) is
``response.py``.
"""
from __future__ import annotations

import re
from typing import Union

from .limits import Limits


class H1Error(Exception):
    """The peer broke HTTP/1.1: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes
PAUSED = _Sentinel("PAUSED")        # a request ended; call next_cycle() after its response
CLOSED = _Sentinel("CLOSED")        # the peer closed between requests (clean)


class Request:
    """A request head. ``fields`` maps lower-case field names to values (repeats joined
    with ``", "``); ``host`` is the effective authority (an absolute-form target's own,
    else the Host field); ``length`` is the body size, or None for a chunked body."""

    __slots__ = ("method", "target", "path", "query", "version", "fields", "host",
                 "keep_alive", "length", "expect_continue")

    def __init__(self, method: str, target: str, path: str, query: str, version: str,
                 fields: dict[str, str], host: str | None, keep_alive: bool,
                 length: int | None, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.fields = fields
        self.host = host
        self.keep_alive = keep_alive
        self.length = length
        self.expect_continue = expect_continue

    @property
    def chunked(self) -> bool:
        return self.length is None

    @property
    def has_body(self) -> bool:
        return self.length != 0

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


class Data:
    """A piece of request body (already de-chunked)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage:
    """The request body ended; ``trailers`` are the chunked trailer fields (lower-case)."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"<EndOfMessage {len(self.trailers)} trailers>"


Event = Union[Request, Data, EndOfMessage, _Sentinel]

_END = EndOfMessage()

# --- grammar ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB (obs-text is fine)
_HEAD_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # the same, CR/LF counted apart
_TARGET = re.compile(r"[\x21-\x7e]+")                      # no spaces, controls or non-ASCII
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_HOST = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*")    # reg-name / IP literal, port
_ABSOLUTE = re.compile(r"(?i:https?)://([^/?#]*)(/[^?]*)?(?:\?(.*))?", re.S)
_CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,15})[ \t]*"                           # 15 hex digits: < 2**60
    rb"(?:;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"             # chunk-ext name
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+"     # = token
    rb"|\"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*\"))?[ \t]*)*")  # | quoted-string
_MAX_LENGTH_DIGITS = 18

# Field names seen before -> lower-case form; filled on first sight, bounded.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 512
_METHODS = {m: True for m in ("GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH")}

IDLE, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, DONE, CLOSED_STATE = range(9)


class RequestReader:
    """Parses the requests a client sends on one connection, one at a time.

    Not thread-safe: one owner at a time (the dispatcher while it reads, then the worker
    running the request)."""

    __slots__ = ("limits", "_buf", "_state", "_left", "_eof", "_checked", "_trailers",
                 "_trailer_bytes")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buf: bytes | bytearray = b""
        self._state = IDLE
        self._left = 0          # BODY / CHUNK_DATA: bytes still to come
        self._eof = False
        self._checked = 0       # HEAD: bytes already checked for bare CR / LF
        self._trailers: list[tuple[str, str]] = []
        self._trailer_bytes = 0

    # --- feeding ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` records that the peer closed its sending side."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("data fed after EOF")
        buf = self._buf
        if not buf:
            self._buf = data
        elif type(buf) is bytearray:
            buf += data
        else:  # accumulate in place from now on: a trickled head must not cost O(n^2)
            grown = bytearray(buf)
            grown += data
            self._buf = grown

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buf)

    @property
    def started(self) -> bool:
        """Whether part of a request (head or body) has arrived or is being read."""
        return self._state != IDLE or bool(self._buf)

    @property
    def at_eof(self) -> bool:
        return self._eof

    @property
    def done(self) -> bool:
        """The current request has been read to its end."""
        return self._state == DONE

    def next_cycle(self) -> None:
        """The response to the request that ended is complete: parse the next one."""
        if self._state != DONE:
            raise RuntimeError(f"next_cycle() in state {self._state}")
        self._state = IDLE
        self._checked = 0

    # --- events -----------------------------------------------------------------------------

    def next_event(self) -> Event:
        """The next event, or NEED_DATA / PAUSED / CLOSED. Raises H1Error."""
        while True:
            event = _READERS[self._state](self)
            if event is not None:
                return event

    def _read_idle(self) -> Event | None:
        if not self._buf:
            if self._eof:
                self._state = CLOSED_STATE
                return CLOSED
            return NEED_DATA
        self._state = HEAD
        return None

    def _read_head(self) -> Event | None:
        buf = self._buf
        while buf[:2] == b"\r\n":  # empty lines before a request line are allowed
            buf = self._buf = buf[2:]
            self._checked = 0
            if not buf:  # only empty lines so far: still between requests
                self._state = IDLE
                return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return self._head_incomplete(buf)
        head = buf[:end]
        self._buf = buf[end + 4:]
        request = self._parse_head(head.decode("latin-1"))
        self._start_body(request)
        return request

    def _head_incomplete(self, buf: bytes | bytearray) -> Event:
        """Check what has come of a head so far: a bare CR or LF and an over-long line or
        head are refused now, not when (if ever) the head ends."""
        limits = self.limits
        size = len(buf)
        start = max(self._checked - 1, 0)
        i = buf.find(b"\n", start)
        while i >= 0:
            if i == 0 or buf[i - 1] != 13:
                raise H1Error(400, "bare LF in the request head")
            i = buf.find(b"\n", i + 1)
        i = buf.find(b"\r", start)
        while i >= 0:
            if i + 1 < size and buf[i + 1] != 10:
                raise H1Error(400, "bare CR in the request head")
            i = buf.find(b"\r", i + 1)
        self._checked = size
        first = buf.find(b"\r\n")
        if first < 0:
            if size > limits.max_request_line:
                raise H1Error(414, "request line too long")
        else:
            if first > limits.max_request_line:
                raise H1Error(414, "request line too long")
            if size - first - 2 > limits.max_head:
                raise H1Error(431, "request head too large")
            if size - buf.rfind(b"\r\n") - 2 > limits.max_header_line:
                raise H1Error(431, "header line too long")
        if self._eof:
            raise H1Error(400, "connection closed inside the request head")
        return NEED_DATA

    def _parse_head(self, text: str) -> Request:
        limits = self.limits
        lines = text.split("\r\n")
        nlines = len(lines)
        if text.count("\n") != nlines - 1 or text.count("\r") != nlines - 1:
            raise H1Error(400, "bare CR or LF in the request head")
        request_line = lines[0]
        if len(request_line) > limits.max_request_line:
            raise H1Error(414, "request line too long")
        if nlines - 1 > limits.max_headers:
            raise H1Error(431, "too many header fields")
        if len(text) - len(request_line) > limits.max_head:
            raise H1Error(431, "request head too large")
        if len(text) > limits.max_header_line and \
                max(map(len, lines[1:]), default=0) > limits.max_header_line:
            raise H1Error(431, "header line too long")
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise H1Error(400, "malformed request line")
        method, target, version = parts
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            if _VERSION.fullmatch(version):
                raise H1Error(505, f"unsupported version {version}")
            raise H1Error(400, "malformed HTTP version")
        if method not in _METHODS and not _TOKEN.fullmatch(method):
            raise H1Error(400, "malformed method")
        if not _TARGET.fullmatch(target):
            raise H1Error(400, "malformed request target")
        if _HEAD_BAD.search(text):  # once for the whole head instead of once per field
            raise H1Error(400, "control character in the request head")
        fields = _parse_fields(lines, 1, nlines)
        http11 = version == "HTTP/1.1"
        host = fields.get("host")
        if host is None:
            if http11:
                raise H1Error(400, "HTTP/1.1 request without Host")
        elif not _HOST.fullmatch(host):
            raise H1Error(400, "malformed Host")
        if target[0] == "/":
            path, _, query = target.partition("?")
        elif target == "*" and method == "OPTIONS":
            path, query = "*", ""
        else:
            absolute = _ABSOLUTE.fullmatch(target)
            if absolute is None:
                raise H1Error(400, "unsupported request target form")
            authority = absolute.group(1)
            if not authority or not _HOST.fullmatch(authority):
                raise H1Error(400, "malformed authority in the request target")
            host = authority  # RFC 9112 §3.2.2: the target's authority overrides Host
            path = absolute.group(2) or "/"
            query = absolute.group(3) or ""
        length = _framing(fields, http11)
        connection = fields.get("connection")
        if http11:
            keep = connection is None or not has_token(connection, "close")
        else:
            keep = connection is not None and has_token(connection, "keep-alive")
        expect_continue = False
        expect = fields.get("expect")
        if expect is not None and http11:  # HTTP/1.0 expectations are ignored (RFC 9110)
            if expect.strip().lower() != "100-continue":
                raise H1Error(417, "unsupported expectation")
            expect_continue = length != 0
        return Request(method, target, path, query, version, fields, host, keep, length,
                       expect_continue)

    def _start_body(self, request: Request) -> None:
        if request.length is None:
            self._state = CHUNK_SIZE
        else:
            self._state = BODY
            self._left = request.length

    def _read_body(self) -> Event | None:
        left = self._left
        if not left:
            self._state = DONE
            return _END
        buf = self._buf
        if not buf:
            return self._starved()
        if len(buf) <= left:
            data = bytes(buf)
            self._buf = b""
        else:
            data = bytes(buf[:left])
            self._buf = buf[left:]
        self._left = left - len(data)
        return Data(data)

    def _read_chunk_size(self) -> Event | None:
        buf = self._buf
        limit = self.limits.max_chunk_line
        end = buf.find(b"\r\n", 0, limit + 2)
        if end < 0:
            if b"\n" in buf[:limit + 2]:
                raise H1Error(400, "bare LF in a chunk-size line")
            if len(buf) > limit:
                raise H1Error(400, "chunk-size line too long")
            return self._starved()
        line = bytes(buf[:end])
        self._buf = buf[end + 2:]
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise H1Error(400, "malformed chunk-size line")
        size = int(match.group(1), 16)
        if size:
            self._state = CHUNK_DATA
            self._left = size
        else:
            self._state = TRAILERS
            self._trailers = []
            self._trailer_bytes = 0
        return None

    def _read_chunk_data(self) -> Event | None:
        if not self._left:
            self._state = CHUNK_END
            return None
        buf = self._buf
        if not buf:
            return self._starved()
        left = self._left
        data = bytes(buf[:left]) if len(buf) > left else bytes(buf)
        self._buf = buf[len(data):]
        self._left = left - len(data)
        return Data(data)

    def _read_chunk_end(self) -> Event | None:
        buf = self._buf
        if len(buf) < 2:
            if buf and buf[:1] != b"\r":
                raise H1Error(400, "chunk data not followed by CRLF")
            return self._starved()
        if buf[:2] != b"\r\n":
            raise H1Error(400, "chunk data not followed by CRLF")
        self._buf = buf[2:]
        self._state = CHUNK_SIZE
        return None

    def _read_trailers(self) -> Event | None:
        limits = self.limits
        while True:
            buf = self._buf
            end = buf.find(b"\r\n", 0, limits.max_header_line + 2)
            if end < 0:
                if b"\n" in buf[:limits.max_header_line + 2]:
                    raise H1Error(400, "bare LF in a trailer")
                if len(buf) > limits.max_header_line:
                    raise H1Error(431, "trailer line too long")
                return self._starved()
            line = bytes(buf[:end]).decode("latin-1")
            self._buf = buf[end + 2:]
            if not line:
                self._state = DONE
                trailers = tuple(self._trailers)
                self._trailers = []
                return EndOfMessage(trailers) if trailers else _END
            if "\r" in line or "\n" in line:
                raise H1Error(400, "bare CR or LF in a trailer")
            self._trailer_bytes += end + 2
            if len(self._trailers) >= limits.max_headers or self._trailer_bytes > limits.max_head:
                raise H1Error(431, "too many trailer fields")
            name, value = _parse_field(line)
            self._trailers.append((name, value))

    def _read_done(self) -> Event | None:
        return PAUSED

    def _read_closed(self) -> Event | None:
        return CLOSED

    def _starved(self) -> Event:
        if self._eof:
            raise H1Error(400, "connection closed inside the request body")
        return NEED_DATA


_READERS = {
    IDLE: RequestReader._read_idle,
    HEAD: RequestReader._read_head,
    BODY: RequestReader._read_body,
    CHUNK_SIZE: RequestReader._read_chunk_size,
    CHUNK_DATA: RequestReader._read_chunk_data,
    CHUNK_END: RequestReader._read_chunk_end,
    TRAILERS: RequestReader._read_trailers,
    DONE: RequestReader._read_done,
    CLOSED_STATE: RequestReader._read_closed,
}


def _parse_field(line: str, checked: bool = False) -> tuple[str, str]:
    """``name: value`` → (lower-case name, value without surrounding whitespace).
    ``checked``: the line is known to hold no control character but HTAB."""
    name, sep, value = line.partition(":")
    lname = _NAMES.get(name)
    if lname is None:
        if not _TOKEN.fullmatch(name):  # also obs-fold (leading space) and "name :"
            raise H1Error(400, "malformed header field name")
        lname = name.lower()
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = lname
    if not sep:
        raise H1Error(400, "header field without a colon")
    value = value.strip(" \t")
    if not checked and _FIELD_VALUE_BAD.search(value):
        raise H1Error(400, "control character in a header field value")
    return lname, value


def _parse_fields(lines: list[str], start: int, stop: int) -> dict[str, str]:
    """The head's field lines (already checked for control characters) as a dict."""
    fields: dict[str, str] = {}
    names = _NAMES
    for i in range(start, stop):
        name, sep, value = lines[i].partition(":")  # _parse_field, inlined: the hot path
        lname = names.get(name)
        if lname is None or not sep:
            lname, value = _parse_field(lines[i], True)
        else:
            value = value.strip(" \t")
        previous = fields.get(lname)
        if previous is None:
            fields[lname] = value
        elif lname == "host":
            raise H1Error(400, "more than one Host")
        else:
            fields[lname] = previous + ", " + value
    return fields


def _framing(fields: dict[str, str], http11: bool) -> int | None:
    """The body length from the head, or None for chunked (RFC 9112 §6.1-6.3):

    ====================================  ==========================
    Transfer-Encoding      Content-Length  body
    ====================================  ==========================
    absent                 absent          none (length 0)
    absent                 n (all equal)   n bytes
    absent                 not 1*DIGIT     400
    ``chunked`` (1.1)      absent          chunked
    ``chunked`` (1.1)      present         400 (the smuggling shape)
    any, on HTTP/1.0       any             400
    chunked not last/twice any             400
    other codings          any             501
    ====================================  ==========================
    """
    te = fields.get("transfer-encoding")
    cl = fields.get("content-length")
    if te is not None:
        if cl is not None:
            raise H1Error(400, "both Transfer-Encoding and Content-Length")
        if not http11:
            raise H1Error(400, "Transfer-Encoding on HTTP/1.0")
        codings = [c.strip(" \t").lower() for c in te.split(",")]
        if codings != ["chunked"]:
            if "chunked" in codings and (codings[-1] != "chunked" or codings.count("chunked") > 1):
                raise H1Error(400, "chunked is not the final transfer coding")
            raise H1Error(501, "unsupported transfer coding")
        return None
    if cl is None:
        return 0
    values = {v.strip(" \t") for v in cl.split(",")}
    if len(values) != 1:
        raise H1Error(400, "conflicting Content-Length values")
    value = values.pop()
    if not (value.isdigit() and value.isascii() and len(value) <= _MAX_LENGTH_DIGITS):
        raise H1Error(400, "malformed Content-Length")
    return int(value)


def has_token(value: str, token: str) -> bool:
    """Whether a comma-separated field value holds ``token`` (case-insensitive)."""
    return token in (part.strip(" \t").lower() for part in value.split(","))
