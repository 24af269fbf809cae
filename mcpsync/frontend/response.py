"""HTTP/1.1 responses, without I/O: a WSGI status and headers to head bytes, body framing.

``response_head`` turns a WSGI status and header list into the head bytes and a
``ResponseFraming`` (Content-Length, chunked, or delimited by closing; keep-alive or not),
which then frames each body piece; ``error_response`` builds the short plain-text answers
the front end sends itself (400, 408, 503 …). The request side is ``h1.py``.
"""
from __future__ import annotations

import time
from email.utils import formatdate
from typing import Iterable

from .h1 import has_token

REASONS = {100: "Continue", 400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
           414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
SERVER_LINE = "Server: mcpsync\r\n"
_WATCHED = frozenset(("content-length", "connection", "transfer-encoding", "date", "server"))
_date_cache: tuple[int, str] = (0, "")


def date_line() -> str:
    """``Date: ...\\r\\n`` for the current second (cached; racing writers store equal values)."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = _date_cache = (now, f"Date: {formatdate(now, usegmt=True)}\r\n")
    return cached[1]


def error_response(status: int, extra: str = "") -> bytes:
    """A complete plain-text response that closes the connection."""
    reason = REASONS[status]
    body = f"{status} {reason}\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}{date_line()}"
            f"{SERVER_LINE}\r\n{body}").encode("latin-1")


class ResponseFraming:
    """How a response's body is delimited, and the bookkeeping for it.

    ``frame(data)`` returns the bytes to send for one body piece (a chunk, or the piece cut
    to what Content-Length still allows); ``end()`` the bytes that end the body."""

    __slots__ = ("chunked", "remaining", "no_body", "keep_alive")

    def __init__(self, chunked: bool, remaining: int | None, no_body: bool,
                 keep_alive: bool) -> None:
        self.chunked = chunked
        self.remaining = remaining  # Content-Length bytes still owed (None: not length-framed)
        self.no_body = no_body
        self.keep_alive = keep_alive

    def frame(self, data: bytes) -> bytes:
        if self.no_body or not data:
            return b""
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        left = self.remaining
        if left is not None:
            if len(data) > left:
                data = data[:left]  # more than promised: the rest is dropped
            self.remaining = left - len(data)
        return data

    def end(self) -> bytes:
        return LAST_CHUNK if self.chunked else b""

    @property
    def short(self) -> bool:
        """Fewer bytes were sent than Content-Length promised (only closing can say so)."""
        return bool(self.remaining)


def response_head(status: str, headers: Iterable[tuple[str, str]], *, http11: bool,
                  head_request: bool, keep_alive: bool,
                  total: int | None) -> tuple[bytes, ResponseFraming]:
    """The head for a WSGI ``status`` and ``headers``, and how to frame the body.

    ``total`` is the body's length when all of it is known (then a Content-Length is added
    unless the app set one); otherwise the body is chunked on HTTP/1.1 and delimited by
    closing on HTTP/1.0. The app may ask to close (``Connection: close``) but not to keep
    alive; hop-by-hop ``Transfer-Encoding`` from the app is a bug (ValueError), as are CR
    or LF inside the status or a header."""
    code = status[:3]
    if not (code.isdigit() and (len(status) == 3 or status[3] == " ")):
        raise ValueError(f"bad WSGI status {status!r}")
    lines = []
    length = None
    has_date = has_server = False
    keep = keep_alive
    for name, value in headers:
        lname = name.lower()
        if lname in _WATCHED:
            if lname == "content-length":
                length = int(value)
                if length < 0:
                    raise ValueError(f"negative Content-Length {value!r}")
            elif lname == "connection":  # ours to send; the app may only ask to close
                keep = keep and not has_token(value, "close")
                continue
            elif lname == "transfer-encoding":
                raise ValueError("WSGI apps may not set Transfer-Encoding (hop-by-hop)")
            elif lname == "date":
                has_date = True
            else:
                has_server = True
        lines.append(f"{name}: {value}\r\n")
    bodiless_status = code in ("204", "304") or code[0] == "1"
    no_body = head_request or bodiless_status
    chunked = False
    remaining: int | None = None
    if length is not None:
        remaining = None if no_body else length
    elif total is not None:
        if not bodiless_status:
            lines.append(f"Content-Length: {total}\r\n")
        remaining = None if no_body else total
    elif no_body:
        pass
    elif http11:
        chunked = True
        lines.append("Transfer-Encoding: chunked\r\n")
    else:
        keep = False  # HTTP/1.0 without a length: the body ends when we close
    if not keep:
        lines.append("Connection: close\r\n")
    elif not http11:
        lines.append("Connection: keep-alive\r\n")
    if not has_date:
        lines.append(date_line())
    if not has_server:
        lines.append(SERVER_LINE)
    text = f"HTTP/1.1 {status}\r\n{''.join(lines)}\r\n"
    if text.count("\n") != len(lines) + 2 or text.count("\r") != len(lines) + 2:
        raise ValueError("CR or LF inside a WSGI status or header")
    return text.encode("latin-1"), ResponseFraming(chunked, remaining, no_body, keep)
