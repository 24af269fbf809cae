"""RFC 6455 framing (``mcpsync.streams.wsframe``), sans-IO: handshake checks, the accept
key, client frame parsing and every protocol violation's close code, server frame encoding."""
from __future__ import annotations

import os
from typing import Any

import pytest

from mcpsync.streams import wsframe
from mcpsync.streams.wsframe import FrameError, FrameParser


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
           mask: bytes | None = None) -> bytes:
    """A client frame, masked as RFC 6455 requires."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | rsv | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_all(data: bytes, limit: int = 1 << 20, step: int | None = None) -> list[Any]:
    """Feed ``data`` (all at once, or ``step`` bytes at a time); every item produced."""
    parser = FrameParser(limit)
    items = []
    chunks = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        while (item := parser.next()) is not None:
            items.append(item)
    return items


def close_code(data: bytes, limit: int = 1 << 20) -> int:
    with pytest.raises(FrameError) as err:
        parse_all(data, limit)
    return err.value.code


# ---- handshake ------------------------------------------------------------------------------

def headers(**values: str) -> Any:
    base = {"Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    base.update({k.replace("_", "-"): v for k, v in values.items()})
    return lambda name: base.get(name, "")


def test_accept_key_is_the_rfc_example() -> None:
    head = wsframe.accept_response("dGhlIHNhbXBsZSBub25jZQ==", "mcp").decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head  # RFC 6455 1.3
    assert "Sec-WebSocket-Protocol: mcp\r\n" in head and head.endswith("\r\n\r\n")
    assert "Sec-WebSocket-Protocol" not in wsframe.accept_response("dGhlIHNhbXBsZSBub25jZQ==", None).decode()


def test_handshake_checks() -> None:
    assert wsframe.handshake_problem(headers()) is None
    assert wsframe.handshake_problem(headers(Connection="keep-alive, Upgrade")) is None
    assert wsframe.handshake_problem(headers(Connection="keep-alive"))[0].startswith("400")
    assert wsframe.handshake_problem(headers(Sec_WebSocket_Version="8"))[0].startswith("426")
    assert wsframe.handshake_problem(headers(Sec_WebSocket_Key=""))[0].startswith("400")
    assert wsframe.handshake_problem(headers(Sec_WebSocket_Key="not base64!"))[0].startswith("400")
    assert wsframe.handshake_problem(headers(Sec_WebSocket_Key="c2hvcnQ="))[0].startswith("400")
    assert wsframe.offered_subprotocols(" chat , mcp,") == ["chat", "mcp"]


# ---- parsing --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70_000])
def test_text_message_of_every_length_form(size: int) -> None:
    text = ("é" * size)[:size] if size else ""
    data = text.encode()
    assert parse_all(masked(wsframe.OP_TEXT, data)) == [(wsframe.OP_TEXT, text)]


def test_byte_at_a_time_and_many_frames_in_one_read() -> None:
    data = masked(wsframe.OP_TEXT, b'{"a":1}') + masked(wsframe.OP_BINARY, b"\x00\xff") + \
        masked(wsframe.OP_PING, b"hi")
    expected = [(wsframe.OP_TEXT, '{"a":1}'), (wsframe.OP_BINARY, b"\x00\xff"), (wsframe.OP_PING, b"hi")]
    assert parse_all(data) == expected
    assert parse_all(data, step=1) == expected


def test_fragments_are_joined_and_control_frames_may_interleave() -> None:
    text = "héllo wörld"
    raw = text.encode()
    cut = raw.index("ö".encode()) + 1  # split inside a multi-byte character
    data = (masked(wsframe.OP_TEXT, raw[:3], fin=False) + masked(wsframe.OP_PING, b"p")
            + masked(wsframe.OP_CONT, raw[3:cut], fin=False) + masked(wsframe.OP_CONT, raw[cut:]))
    assert parse_all(data) == [(wsframe.OP_PING, b"p"), (wsframe.OP_TEXT, text)]
    assert parse_all(data, step=3) == [(wsframe.OP_PING, b"p"), (wsframe.OP_TEXT, text)]


@pytest.mark.parametrize("data, code", [
    (masked(wsframe.OP_TEXT, b"x")[:1] + bytes((0x01,)) + b"x", 1002),  # unmasked
    (masked(wsframe.OP_TEXT, b"x", rsv=0x40), 1002),  # RSV1 without an extension
    (masked(0x3, b"x"), 1002),  # reserved data opcode
    (masked(0xB, b"x"), 1002),  # reserved control opcode
    (masked(wsframe.OP_PING, b"x" * 126), 1002),  # control frame too long
    (masked(wsframe.OP_PING, b"x", fin=False), 1002),  # fragmented control frame
    (masked(wsframe.OP_CONT, b"x"), 1002),  # continuation of nothing
    (masked(wsframe.OP_TEXT, b"a", fin=False) + masked(wsframe.OP_TEXT, b"b"), 1002),
    (masked(wsframe.OP_TEXT, b"\xff\xfe"), 1007),  # not UTF-8
    (masked(wsframe.OP_TEXT, "é".encode()[:1]), 1007),  # truncated character
])
def test_protocol_violations_name_their_close_code(data: bytes, code: int) -> None:
    assert close_code(data) == code


def test_size_limit_counts_fragments_and_fails_before_the_payload_arrives() -> None:
    assert parse_all(masked(wsframe.OP_TEXT, b"x" * 100), limit=100) == [(wsframe.OP_TEXT, "x" * 100)]
    assert close_code(masked(wsframe.OP_TEXT, b"x" * 101), limit=100) == 1009
    split = masked(wsframe.OP_TEXT, b"x" * 60, fin=False) + masked(wsframe.OP_CONT, b"x" * 60)
    assert close_code(split, limit=100) == 1009
    parser = FrameParser(100)
    parser.feed(masked(wsframe.OP_BINARY, b"y" * 5000)[:8])  # only the head of a big frame
    with pytest.raises(FrameError) as err:
        parser.next()
    assert err.value.code == 1009


def test_close_payloads() -> None:
    assert wsframe.parse_close(b"") == (None, "")
    assert wsframe.parse_close((1000).to_bytes(2, "big") + "bye".encode()) == (1000, "bye")
    assert wsframe.parse_close((4000).to_bytes(2, "big")) == (4000, "")
    for bad, code in ((b"\x03", 1002), ((1005).to_bytes(2, "big"), 1002),
                      ((999).to_bytes(2, "big"), 1002), ((1000).to_bytes(2, "big") + b"\xff", 1007)):
        with pytest.raises(FrameError) as err:
            wsframe.parse_close(bad)
        assert err.value.code == code


# ---- encoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("size, head", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_server_frames_are_final_unmasked_with_the_shortest_length(size: int, head: int) -> None:
    frame = wsframe.encode_frame(wsframe.OP_TEXT, b"z" * size)
    assert len(frame) == head + size
    assert frame[0] == 0x81 and not frame[1] & 0x80
    close = wsframe.close_frame(1009, "too big")
    assert close[:2] == bytes((0x88, 9)) and close[2:4] == (1009).to_bytes(2, "big")
