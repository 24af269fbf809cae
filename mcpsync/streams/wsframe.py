"""RFC 6455 for the server side, sans-IO: the opening handshake's checks and answer, frame
parsing (masked client frames, fragmentation, control frames, size limit, UTF-8) and frame
encoding. No sockets and no threads here; ``websocket.py`` moves the bytes.

Only what an MCP WebSocket needs: no extensions (a client offering permessage-deflate gets
none, which RFC 6455 allows), text and binary messages, ping/pong, the closing handshake.
Every violation raises ``FrameError`` carrying the close code to send (1002 protocol error,
1007 invalid UTF-8, 1009 message too big).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Callable

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
# Codes a peer may send in a close frame (RFC 6455 7.4.1 and the IANA registry); 1005, 1006
# and 1015 are reserved for reporting and never appear on the wire.
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014))


class FrameError(Exception):
    """The peer broke the protocol; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ---- the opening handshake ------------------------------------------------------------------

def handshake_problem(get: Callable[[str], str]) -> tuple[str, str] | None:
    """Why an upgrade request cannot be accepted, as (HTTP status, message), or None.

    ``get(name)`` returns a request header's value ("" if absent); the caller has already
    seen ``Upgrade: websocket``."""
    if "upgrade" not in [t.strip().lower() for t in get("Connection").split(",")]:
        return "400 Bad Request", "Connection: Upgrade is required for a WebSocket upgrade"
    if get("Sec-WebSocket-Version").strip() != "13":
        return "426 Upgrade Required", "Sec-WebSocket-Version 13 is required"
    try:
        key = base64.b64decode(get("Sec-WebSocket-Key").strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return "400 Bad Request", "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def accept_response(key: str, subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` head for a request with ``Sec-WebSocket-Key: key``."""
    digest = hashlib.sha1(key.strip().encode("ascii") + _ACCEPT_GUID).digest()
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Accept: " + base64.b64encode(digest).decode("ascii")]
    if subprotocol:
        lines.append("Sec-WebSocket-Protocol: " + subprotocol)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def offered_subprotocols(header: str) -> list[str]:
    return [p.strip() for p in header.split(",") if p.strip()]


# ---- frames out -------------------------------------------------------------------------------

def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked (server-to-client) frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    data = reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + data)


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a received close frame (None: no code given)."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None


# ---- frames in ------------------------------------------------------------------------------

def close_code(payload: bytes) -> int:
    """The code to echo for a peer's close frame: its own (1000 when it gave none), or the
    protocol error its payload is (RFC 6455 5.5.1)."""
    try:
        code, _ = parse_close(payload)
    except FrameError as exc:
        return exc.code
    return code or CLOSE_NORMAL


def _unmask(data: bytes | bytearray, mask: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    key = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameParser:
    """Turns client bytes into messages and control frames.

    ``feed(data)`` appends bytes; ``next()`` returns the next complete item, or None when
    more bytes are needed: ``(OP_TEXT, str)``, ``(OP_BINARY, bytes)`` for whole messages
    (fragments joined), ``(OP_PING|OP_PONG|OP_CLOSE, bytes)`` for control frames. Not
    thread-safe: one reader at a time (the transport's reader role).
    """

    __slots__ = ("max_message_bytes", "_buf", "_parts", "_size", "_op")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._parts: list[bytes] = []  # fragments of the message being assembled
        self._size = 0  # bytes in _parts
        self._op: int | None = None  # opcode of the message being assembled

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[int, bytes | str] | None:
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            fin, op, payload = frame
            if op in _CONTROL_OPS:
                return op, payload
            if op == OP_CONT:
                if self._op is None:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            elif self._op is not None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            else:
                self._op = op
            if not fin:
                self._parts.append(payload)
                continue
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts.clear()
            op, self._op, self._size = self._op, None, 0
            if op == OP_TEXT:
                try:
                    return op, payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise FrameError(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
            return op, payload

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        op = b0 & 0x0F
        if op not in _DATA_OPS and op not in _CONTROL_OPS and op != OP_CONT:
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op:#x}")
        if not b1 & 0x80:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        n = b1 & 0x7F
        head = 6
        if n == 126:
            if len(buf) < 4:
                return None
            n, head = int.from_bytes(buf[2:4], "big"), 8
        elif n == 127:
            if len(buf) < 10:
                return None
            n, head = int.from_bytes(buf[2:10], "big"), 14
            if n >> 63:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "frame length has its top bit set")
        fin = bool(b0 & 0x80)
        if op in _CONTROL_OPS:
            if not fin or n > 125:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must be whole and ≤ 125 bytes")
        elif self._size + n > self.max_message_bytes:
            raise FrameError(CLOSE_TOO_BIG, f"message over {self.max_message_bytes} bytes")
        end = head + n
        if len(buf) < end:
            return None
        payload = _unmask(buf[head:end], bytes(buf[head - 4:head]))
        del buf[:end]
        if op not in _CONTROL_OPS:
            self._size += n
        return fin, op, payload
