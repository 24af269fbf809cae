"""Property-based bad input against the protocol core and the HTTP endpoint (hypothesis).

Invariants: never an exception out of the core, never a 500 or a traceback on the wire, the
right kind of error, ids echoed with their type, no session/thread leak, and the server
keeps serving. Bounded for CI by FUZZ_EXAMPLES; `scripts/fuzz.py` runs the same
properties longer."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import sys
import threading
import time
from typing import Any, Iterator

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from httpclient import HttpMcp  # noqa: E402
from httpserver import serving  # noqa: E402
from memclient import MemClient  # noqa: E402

from mcpsync.service import Service  # noqa: E402
from mcpsync.examples.everything import server  # noqa: E402
from mcpsync.protocol import jsonrpc  # noqa: E402
from mcpsync.http.app import HttpApp  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("MCPSYNC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
methods = st.sampled_from(["initialize", "ping", "tools/list", "tools/call", "resources/read",
                           "resources/list", "prompts/get", "completion/complete", "logging/setLevel",
                           "resources/subscribe", "server/discover", "subscriptions/listen",
                           "nope/nothing", "notifications/cancelled", "notifications/initialized"])
ids = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=8) | st.floats(allow_nan=False)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods},
    optional={"id": ids, "params": json_values | st.fixed_dictionaries(
        {"name": st.sampled_from(["echo", "add", "test_sampling", "nope"]) | st.text(max_size=5),
         "arguments": json_values, "uri": st.text(max_size=20) | st.just("test://static-text")},
        optional={"_meta": json_values})})


def check_reply(msg: Any, reply: Any) -> None:
    """A reply is None (notification / cancelled) or well-formed JSON-RPC with no traceback."""
    if reply is None:
        return
    replies = reply if isinstance(reply, list) else [reply]
    for r in replies:
        encoded = jsonrpc.encode(r)
        assert b"Traceback" not in encoded
        assert r["jsonrpc"] == "2.0"
        assert ("result" in r) != ("error" in r)
        if "error" in r:
            assert type(r["error"]["code"]) is int and isinstance(r["error"]["message"], str)
    if isinstance(msg, dict) and isinstance(reply, dict) and jsonrpc.is_valid_id(msg.get("id")) \
            and "method" in msg and msg.get("jsonrpc") == "2.0":
        assert reply["id"] == msg["id"] and type(reply["id"]) is type(msg["id"])


@FUZZ
@given(st.lists(messages | json_values, min_size=1, max_size=6))
def test_core_never_raises_and_answers_well_formed(batch: list[Any]) -> None:
    client = MemClient(server)
    for msg in batch:
        check_reply(msg, client.raw(msg))
    client.conn.close()


@FUZZ
@given(st.binary(max_size=200))
def test_core_decoder_only_raises_parse_errors(data: bytes) -> None:
    try:
        jsonrpc.decode(data)
    except Exception as exc:
        assert type(exc).__name__ == "ParseError"


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, Service]]:
    app = Service(server)
    with serving(HttpApp(app)) as base:
        yield f"{base}/mcp", app
    app.close()


header_values = st.none() | st.sampled_from(["application/json", "text/plain", "", "*/*",
                                             "application/json; charset=utf-8", "2025-11-25",
                                             "1999-01-01", "2026-07-28", "garbage"]) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=12)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), messages.map(lambda m: json.dumps(m).encode()),
                      st.lists(messages, max_size=3).map(lambda b: json.dumps(b).encode())),
       ctype=header_values, accept=header_values, version=header_values, method=header_values,
       use_session=st.booleans())
def test_http_endpoint_never_500s_and_keeps_serving(live: tuple[str, Service], body: bytes,
                                                    ctype: Any, accept: Any, version: Any,
                                                    method: Any, use_session: bool) -> None:
    url, app = live
    with HttpMcp(url) as c:
        if use_session:
            c.initialize()
        headers = {"Content-Type": ctype, "Accept": accept, "MCP-Protocol-Version": version,
                   "Mcp-Method": method}
        reply = c.post(None, headers, raw=body, session=use_session)
        assert reply.status < 500 or reply.status == 503, (reply.status, reply.body[:200])
        assert b"Traceback" not in reply.body
        if reply.body and reply.content_type == "application/json":
            json.loads(reply.body)
        created = reply.headers.get("mcp-session-id")
        if created:  # a fuzzed body that was a valid initialize: that client ends its session
            assert c.request("DELETE", headers={"Mcp-Session-Id": created}, session=False).status == 200
        assert c.post({"jsonrpc": "2.0", "id": "alive", "method": "ping",
                       "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                            "io.modelcontextprotocol/clientCapabilities": {}}}},
                      {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "ping"},
                      session=False).status == 404  # a stateless ping: -32601, the server is fine
        if use_session:
            c.delete()


def test_fuzzing_leaked_no_sessions_or_threads(live: tuple[str, Service]) -> None:
    """Runs after the HTTP property test in this module: the store is back to empty (every
    fuzz client deleted the session it made) and no worker thread is stuck."""
    _, app = live
    assert len(app.store) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("mcpsync-stream")]


# ---- WebSocket frames and legacy /messages against the live server ------------------------------
# Raw sockets through scripts/_wire.py (the attack script's wire code): hypothesis builds the
# bytes, including what no WebSocket library would send.

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
import _wire  # noqa: E402

from mcpsync.streams.websocket import WS_MAX_MESSAGE_BYTES  # noqa: E402

WS_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009})  # 1011: a bug of ours
WIRE_BUDGET_S = 30.0
SETTLE_TIMEOUT_S = 10.0       # a closed connection's session and threads are gone by then
ANSWER_GRACE_S = 2.0          # after the "alive" ping's answer, how long another may take
LEAKABLE = ("mcpsync-ws-reader", "mcpsync-ws-worker", "mcpsync-sse-worker", "mcpsync-stream")
# Lone surrogates: few shapes (three places x the surrogate range), each example a stream.
FUZZ_SURROGATES = settings(FUZZ, max_examples=min(FUZZ_EXAMPLES, 20))

ws_payloads = st.one_of(
    messages.map(lambda m: json.dumps(m).encode()),
    st.lists(messages, min_size=1, max_size=3).map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xe2\x82"]),
)
ws_frames = st.fixed_dictionaries({
    "opcode": st.sampled_from([0x1, 0x1, 0x1, 0x0, 0x2, 0x8, 0x9, 0xA]) | st.integers(0, 15),
    "fin": st.sampled_from([True, True, True, False]),
    "rsv": st.sampled_from([0, 0, 0, 0, 0, 1, 4]),
    "mask": st.sampled_from([b"", b"", b"", b"\0\0\0\0", None]),   # b"": a random key
    "payload": ws_payloads,
    "length_form": st.sampled_from([None, None, None, 16, 64]),    # non-minimal encodings
    "lie": st.sampled_from([None] * 8 + ["short", "long", "huge"]),  # the declared length
})
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def _ws_bytes(frame: dict[str, Any]) -> bytes:
    payload, lie = frame["payload"], frame["lie"]
    length = {None: None, "short": max(0, len(payload) - 3), "long": len(payload) + 3,
              "huge": 2**33}[lie]
    form = 64 if lie == "huge" else frame["length_form"]
    if form == 16 and (length if length is not None else len(payload)) >= 65536:
        form = 64
    return _wire.encode_frame(frame["opcode"], payload, fin=frame["fin"], rsv=frame["rsv"],
                              mask=frame["mask"], length=length, length_form=form)


def _ws_end(data: bytes, limit: int = WS_MAX_MESSAGE_BYTES) -> str:
    """How an RFC 6455 server that reads ``data`` and then EOF must end: ``"close"`` (a
    violation, or a close frame of ours, is reached: it sends a close frame) or ``"eof"``
    (the data ends between or inside frames: it may just close). An independent model of
    the client-to-server framing rules, not the server's parser."""
    pos, fragmented, size, text, parts = 0, False, 0, False, []
    while True:
        if len(data) - pos < 2:
            return "eof"
        b0, b1 = data[pos], data[pos + 1]
        op, fin = b0 & 0x0F, bool(b0 & 0x80)
        if b0 & 0x70 or op not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA) or not b1 & 0x80:
            return "close"
        n, head = b1 & 0x7F, 2
        if n == 126:
            if len(data) - pos < 4:
                return "eof"
            n, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            if len(data) - pos < 10:
                return "eof"
            n, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if n >> 63:
                return "close"
        if op >= 0x8 and (not fin or n > 125):
            return "close"
        if op < 0x8 and size + n > limit:
            return "close"
        end = pos + head + 4 + n
        if len(data) < end:
            return "eof"
        if op == 0x8:
            return "close"
        if op < 0x8:
            if (op == 0x0) != fragmented:
                return "close"   # a continuation without a message, or a message inside one
            if op != 0x0:
                text, parts = op == 0x1, []
            key = data[end - n - 4:end - n]
            parts.append(bytes(b ^ key[i % 4] for i, b in enumerate(data[end - n:end])))
            fragmented, size = not fin, (0 if fin else size + n)
            if fin and text:
                try:
                    b"".join(parts).decode("utf-8")
                except UnicodeDecodeError:
                    return "close"
        pos = end


def _server_message_ok(raw: bytes) -> None:
    assert b"Traceback" not in raw
    value = json.loads(raw)
    for msg in value if isinstance(value, list) else [value]:
        assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0", raw[:200]
        if "method" not in msg:  # a response: exactly one of result / error
            assert ("result" in msg) != ("error" in msg), raw[:200]
            if "error" in msg:
                assert type(msg["error"]["code"]) is int and isinstance(msg["error"]["message"], str)


def _read_ws_to_end(ws: "_wire.WsConn") -> tuple[list[bytes], int | None]:
    """Text frames until the server's close frame (its code) or EOF (None)."""
    texts: list[bytes] = []
    while True:
        try:
            _, op, payload = ws.recv_frame()
        except _wire.WsClosed:
            return texts, None
        if op == _wire.OP_TEXT:
            texts.append(payload)
        elif op == _wire.OP_CLOSE:
            return texts, int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        else:
            assert op in (_wire.OP_PING, _wire.OP_PONG), f"server frame opcode {op:#x}"


def _settle(app: Service) -> None:
    """Bounded poll: the connection's session is closed and its threads are gone."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        live = [t.name for t in threading.enumerate() if t.name.startswith(LEAKABLE)]
        if len(app.store) == 0 and not live:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"left behind: {len(app.store)} session(s), threads {live}")


def _ws_alive(target: "_wire.Target") -> None:
    resp, ws = _wire.WsConn.open(target, _wire.Budget(WIRE_BUDGET_S))
    assert ws is not None, resp.status
    try:
        _wire.ws_initialize(ws)
        ws.send_json(_wire.rpc("ping", None, "alive"))
        assert ws.recv_message() == {"jsonrpc": "2.0", "id": "alive", "result": {}}
    finally:
        ws.close()


@FUZZ
@given(frames=st.lists(ws_frames, max_size=6), initialize=st.booleans())
def test_websocket_frames_get_answers_or_a_close_frame(live: tuple[str, Service],
                                                       frames: list[dict[str, Any]],
                                                       initialize: bool) -> None:
    """Whatever frames arrive, every server frame is well-formed, the connection ends with a
    close frame of a proper code (unless our bytes ended inside a frame), its session and
    threads go away, and the server keeps serving."""
    url, app = live
    target = _wire.Target.from_url(url)
    resp, ws = _wire.WsConn.open(target, _wire.Budget(WIRE_BUDGET_S))
    assert ws is not None, resp.status
    try:
        if initialize:
            _wire.ws_initialize(ws)
        data = b"".join(_ws_bytes(f) for f in frames)
        data += _wire.encode_frame(_wire.OP_CLOSE, (1000).to_bytes(2, "big"))
        try:
            ws.http.send(data)
            ws.sock.shutdown(socket.SHUT_WR)
        except _wire.WireError:
            pass  # the server closed first; what it sent is still readable
        texts, code = _read_ws_to_end(ws)
    finally:
        ws.close()
    for raw in texts:
        _server_message_ok(raw)
    if code is None:
        assert _ws_end(data) == "eof", "the server ended the connection without a close frame"
    else:
        assert code in WS_CLOSE_CODES, code
    _settle(app)
    _ws_alive(target)


def _with_surrogate(where: str, ch: str) -> dict[str, Any]:
    """An echo call with the lone surrogate ``ch`` in its id, its method or its argument."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {"text": "x"}}}
    if where == "id":
        msg["id"] = ch
    elif where == "method":
        msg["method"] = "ping" + ch
    else:
        msg["params"]["arguments"]["text"] = ch
    return msg


@FUZZ_SURROGATES
@given(where=st.sampled_from(["id", "method", "argument"]), ch=lone_surrogates)
def test_websocket_lone_surrogates_get_an_error(live: tuple[str, Service], where: str, ch: str) -> None:
    url, app = live
    msg = _with_surrogate(where, ch)
    resp, ws = _wire.WsConn.open(_wire.Target.from_url(url), _wire.Budget(WIRE_BUDGET_S))
    assert ws is not None, resp.status
    try:
        _wire.ws_initialize(ws)
        ws.send_text(json.dumps(msg))  # ensure_ascii: the surrogate travels as \\udXXX
        ws.send_json(_wire.rpc("ping", None, "alive"))
        answers = []
        while not any(isinstance(a, dict) and a.get("id") == "alive" for a in answers):
            try:
                answers.append(ws.recv_message(10.0))
            except _wire.WsClosed as exc:
                assert exc.code in WS_CLOSE_CODES, f"{where}: {exc}"
                return
    finally:
        ws.close()
        _settle(app)
    other = [a for a in answers if isinstance(a, dict) and a.get("id") != "alive"]
    assert other, f"{where}: no answer to the message"
    assert all((a.get("error") or {}).get("code") != -32603 for a in other), other


def _legacy_session(target: "_wire.Target", budget: "_wire.Budget"
                    ) -> tuple["_wire.HttpConn", "_wire.SseStream", str]:
    conn, resp, stream = _wire.open_sse(target, budget, "/sse", token=None)
    assert stream is not None, resp.status
    event = stream.next_event(10.0)
    assert event is not None and event[0] == "endpoint", event
    return conn, stream, event[1].decode()


def _end_legacy(app: Service, sse: "_wire.HttpConn", endpoint: str) -> None:
    """Close our stream, and end the session server-side: the server would notice the
    closed stream only at its next keep-alive (15 s)."""
    sse.close()
    app.close_session(endpoint.split("session_id=", 1)[1])
    _settle(app)


def _read_until(stream: "_wire.SseStream", done: Any, grace_s: float = 0.0) -> list[Any]:
    """Messages from the stream until ``done(messages)``, then for ``grace_s`` more."""
    got: list[Any] = []
    until: float | None = None
    while until is None or time.monotonic() < until:
        try:
            event = stream.next_event(10.0 if until is None else max(0.01, until - time.monotonic()))
        except _wire.OutOfTime:
            if until is None:
                raise
            break
        if event is None:
            break
        _server_message_ok(event[1])
        got.append(json.loads(event[1]))
        if until is None and done(got):
            until = time.monotonic() + grace_s
    return got


def _has_id(rid: Any) -> Any:
    return lambda got: any(isinstance(m, dict) and m.get("id") == rid for m in got)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), messages.map(lambda m: json.dumps(m).encode()),
                      st.lists(messages, max_size=3).map(lambda b: json.dumps(b).encode())),
       ctype=header_values, initialize=st.booleans())
def test_legacy_messages_never_500_and_the_stream_goes_on(live: tuple[str, Service], body: bytes,
                                                          ctype: Any, initialize: bool) -> None:
    url, app = live
    target = _wire.Target.from_url(url)
    budget = _wire.Budget(WIRE_BUDGET_S)
    sse, stream, endpoint = _legacy_session(target, budget)
    try:
        with _wire.HttpConn(target, budget) as conn:
            def post(raw: bytes, content_type: Any = "application/json") -> "_wire.Response":
                headers = [("Content-Type", content_type)] if content_type is not None else []
                return conn.request("POST", endpoint, headers, raw)
            if initialize:
                assert post(_wire.dumps(_wire.initialize_msg("init"))).status == 202
                assert post(_wire.dumps(_wire.rpc("notifications/initialized"))).status == 202
            reply = post(body, ctype)
            assert reply.status < 500, (reply.status, reply.body[:200])
            assert b"Traceback" not in reply.body
            assert post(_wire.dumps(_wire.rpc("ping", None, "alive"))).status == 202
        _read_until(stream, _has_id("alive"))
    finally:
        _end_legacy(app, sse, endpoint)


@FUZZ_SURROGATES
@given(where=st.sampled_from(["id", "method", "argument"]), ch=lone_surrogates)
def test_legacy_messages_lone_surrogates_get_an_error(live: tuple[str, Service], where: str,
                                                      ch: str) -> None:
    url, app = live
    target = _wire.Target.from_url(url)
    budget = _wire.Budget(WIRE_BUDGET_S)
    msg = _with_surrogate(where, ch)
    sse, stream, endpoint = _legacy_session(target, budget)
    try:
        with _wire.HttpConn(target, budget) as conn:
            json_ct = [("Content-Type", "application/json")]
            conn.request("POST", endpoint, json_ct, _wire.dumps(_wire.initialize_msg("init")))
            conn.request("POST", endpoint, json_ct, _wire.dumps(_wire.rpc("notifications/initialized")))
            status = conn.request("POST", endpoint, json_ct, json.dumps(msg).encode()).status
            assert status < 500, status
            conn.request("POST", endpoint, json_ct, _wire.dumps(_wire.rpc("ping", None, "alive")))
        # Refused at the POST (400): nothing more can come; accepted: its answer may trail.
        got = _read_until(stream, _has_id("alive"), ANSWER_GRACE_S if status == 202 else 0.0)
    finally:
        _end_legacy(app, sse, endpoint)
    other = [m for m in got if isinstance(m, dict) and m.get("id") not in ("init", "alive")]
    if status == 202:
        assert other, f"{where}: the message was accepted (202) and never answered"
    assert all((m.get("error") or {}).get("code") != -32603 for m in other), other
