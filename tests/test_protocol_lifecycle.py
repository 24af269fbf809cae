"""Protocol core in memory: JSON-RPC framing and errors, the lifecycle, revision differences.

Every test wires a ``MemClient`` to a fresh ``Server``; no sockets, no transports except the
in-memory ``MessageStream`` used for the byte-level (parse error) cases.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from mcpsync import Context, Server
from mcpsync.protocol import jsonrpc, lifecycle, versions
from mcpsync.protocol.dispatch import encode_outgoing
from mcpsync.streams.stream import MessageStream

from memclient import CallThread, MemClient, RpcError

HANDSHAKE = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]


def make_server() -> Server:
    server = Server("lifecycle-test", "1.2.3", title="Lifecycle test server")
    release = threading.Event()
    started = threading.Event()
    server.release = release  # type: ignore[attr-defined]
    server.started = started  # type: ignore[attr-defined]

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool()
    def block(ctx: Context) -> str:
        """Block until the test releases it (bounded)."""
        started.set()
        release.wait(5)
        return "released"

    @server.resource("test://boom")
    def boom() -> str:
        raise RuntimeError("secret internal detail /etc/passwd")

    return server


@pytest.fixture
def server() -> Server:
    return make_server()


@pytest.fixture
def client(server: Server) -> MemClient:
    c = MemClient(server)
    c.initialize()
    return c


# ---- JSON-RPC framing ----------------------------------------------------------------------------

class Wire:
    """A MessageStream with an in-memory writer: bytes in, decoded messages out."""

    def __init__(self, server: Server, max_workers: int = 2) -> None:
        # Guards `out`; notified by whichever thread writes (reader or pool worker).
        self._cond = threading.Condition()
        self.out: list[Any] = []
        self.session = MessageStream(server, self._write, name="test", max_workers=max_workers)

    def _write(self, data: bytes) -> None:
        with self._cond:
            self.out.append(jsonrpc.decode(data))
            self._cond.notify_all()

    def feed_sync(self, data: bytes) -> None:
        self.session.feed(data)

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.out:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no such message; got {self.out!r}"
                self._cond.wait(remaining)

    def close(self) -> None:
        self.session.close(timeout=5)


def test_parse_error_has_id_null(server: Server) -> None:
    wire = Wire(server)
    try:
        wire.feed_sync(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"')
        wire.feed_sync(b"\xff\xfe not utf-8")
    finally:
        wire.close()
    assert len(wire.out) == 2
    for msg in wire.out:
        assert msg["jsonrpc"] == "2.0"
        assert msg["id"] is None
        assert msg["error"]["code"] == -32700


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_parse_errors(server: Server, text: str) -> None:
    wire = Wire(server)
    try:
        wire.feed_sync(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": %s}}' % text.encode())
    finally:
        wire.close()
    assert [m["error"]["code"] for m in wire.out] == [-32700]


def test_unencodable_result_becomes_a_tool_error_or_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    server = Server("nan")

    @server.tool()
    def ratio(a: float, b: float) -> dict[str, float]:
        """a / b, or infinity."""
        return {"ratio": a / b if b else float("inf")}

    @server.tool()
    def opaque() -> dict[str, Any]:
        """Structured content that is not JSON."""
        return {"when": object()}

    wire = Wire(server)
    try:
        wire.feed_sync(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}')
        wire.feed_sync(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        with caplog.at_level(logging.ERROR, logger="mcpsync"):
            for rid, name, args in (("r", "ratio", b'{"a":1,"b":0}'), ("o", "opaque", b"{}")):
                wire.feed_sync(b'{"jsonrpc":"2.0","id":"%s","method":"tools/call","params":{"name":"%s",'
                               b'"arguments":%s}}' % (rid.encode(), name.encode(), args))
                reply = wire.wait_for(lambda m: m.get("id") == rid)
                if name == "ratio":  # infinity: the tool's value has no JSON form, a tool error
                    assert reply["result"]["isError"] is True
                    assert "cannot represent" in reply["result"]["content"][0]["text"]
                else:  # an object that is not JSON at all: our bug's answer
                    assert reply["error"] == {"code": -32603, "message": "Internal error"}
        wire.feed_sync(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ratio","arguments":{"a":1,"b":4}}}')
        assert wire.wait_for(lambda m: m.get("id") == 2)["result"]["structuredContent"] == {"ratio": 0.25}
    finally:
        wire.close()
    assert any(r.exc_info for r in caplog.records)


def test_encode_outgoing() -> None:
    ok = jsonrpc.response(1, {"x": 1})
    assert encode_outgoing(ok) == jsonrpc.encode(ok)
    bad = jsonrpc.response("a", {"x": float("nan")})
    internal = {"jsonrpc": "2.0", "id": "a", "error": {"code": -32603, "message": "Internal error"}}
    assert jsonrpc.decode(encode_outgoing(bad)) == internal
    assert jsonrpc.decode(encode_outgoing([ok, bad, jsonrpc.notification("n", {"x": object()})])) == [ok, internal]
    assert encode_outgoing(jsonrpc.notification("n", {"x": float("inf")})) is None
    loop: dict[str, Any] = {}
    loop["self"] = loop  # a result that refers to itself: our bug, answered -32603 like the others
    assert jsonrpc.decode(encode_outgoing(jsonrpc.response("a", loop))) == internal
    assert encode_outgoing(jsonrpc.request(5, "sampling/createMessage", {"x": object()})) is None


def test_decode_raises_parse_error() -> None:
    with pytest.raises(Exception) as info:
        jsonrpc.decode("{nope")
    assert getattr(info.value, "code", None) == -32700


@pytest.mark.parametrize("text", [
    '{"a": [1, "x"]}', ' \t\r\n{"a": 1}\n ', "7", '  "s"  ', "", "   ", "1 2", "{} x", "{}{}",
    "[1,]", "\x0b1", "1\x0b", "\xa01", "1\u2028", "\ufeff{}", '{"a": 1} \n\n ,',
])
def test_decode_reads_one_value_between_json_whitespace(text: str) -> None:
    """One JSON value with RFC 8259 whitespace (space, tab, CR, LF) around it, as
    ``json.loads`` reads it: anything else around the value is a parse error."""
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(Exception) as info:
            jsonrpc.decode(text)
        assert getattr(info.value, "code", None) == -32700
        with pytest.raises(Exception):
            jsonrpc.decode(text.encode())
    else:
        assert jsonrpc.decode(text) == expected == jsonrpc.decode(text.encode())


@pytest.mark.parametrize("msg, expected_id", [
    ({"id": 1, "method": "ping"}, 1),                                   # jsonrpc missing
    ({"jsonrpc": "1.0", "id": "a", "method": "ping"}, "a"),             # jsonrpc wrong
    ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),           # id null
    ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),           # id bool
    ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),            # id float
    ({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": [1]}, 7),  # params not an object
    ({"jsonrpc": "2.0", "id": 8, "method": 5}, 8),                      # method not a string
    ({"jsonrpc": "2.0", "id": 9}, 9),                                   # neither request nor response
    (1, None),                                                          # not an object at all
    ("ping", None),
])
def test_invalid_request(client: MemClient, msg: Any, expected_id: Any) -> None:
    reply = client.raw(msg)
    assert reply["error"]["code"] == -32600
    assert reply["id"] == expected_id and type(reply["id"]) is type(expected_id)


def test_unknown_method(client: MemClient) -> None:
    err = client.error("no/such/method")
    assert err["code"] == -32601


@pytest.mark.parametrize("rid", [1, "1", 0, "", "x-1", 2**40, -3])
def test_ids_echoed_with_their_json_type(client: MemClient, rid: Any) -> None:
    reply = client.raw(jsonrpc.request(rid, "ping"))
    assert reply == {"jsonrpc": "2.0", "id": rid, "result": {}}
    assert type(reply["id"]) is type(rid)
    # and in error responses
    reply = client.raw(jsonrpc.request(rid, "nope/nope"))
    assert reply["id"] == rid and type(reply["id"]) is type(rid)
    assert reply["error"]["code"] == -32601


def test_ping_without_params_and_with_meta(client: MemClient) -> None:
    assert client.raw({"jsonrpc": "2.0", "id": 3, "method": "ping"})["result"] == {}
    assert client.call("ping", {"_meta": {"x": 1}}) == {}


def test_notifications_are_never_answered(client: MemClient) -> None:
    assert client.raw(jsonrpc.notification("nope/unknown")) is None
    assert client.raw(jsonrpc.notification("notifications/cancelled", {"requestId": 999})) is None
    assert client.raw(jsonrpc.notification("notifications/cancelled", {"requestId": None})) is None
    assert client.raw(jsonrpc.notification("notifications/progress", {"progressToken": 1, "progress": 1})) is None
    assert client.raw(jsonrpc.notification("notifications/roots/list_changed")) is None


def test_internal_error_is_generic_and_logged(client: MemClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="mcpsync"):
        err = client.error("resources/read", {"uri": "test://boom"})
    assert err["code"] == -32603
    text = repr(err)
    assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text
    assert err["message"] == "Internal error"
    assert "data" not in err
    # the traceback went to the log instead
    assert any(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records)


def test_internal_error_in_a_custom_handler(server: Server, client: MemClient) -> None:
    def broken(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        raise KeyError("password=hunter2")
    server.dispatcher.on_request("x/broken", broken)
    err = client.error("x/broken")
    assert err == {"code": -32603, "message": "Internal error"}


def test_response_to_unknown_request_is_ignored(client: MemClient) -> None:
    assert client.raw(jsonrpc.response(12345, {"x": 1})) is None
    assert client.raw({"jsonrpc": "2.0", "id": "srv-9", "error": {"code": -1, "message": "no"}}) is None
    assert client.raw({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "bad"}}) is None
    assert client.call("ping") == {}


def test_duplicate_inflight_id_is_rejected(server: Server, client: MemClient) -> None:
    call = CallThread(client, jsonrpc.request(5, "tools/call", {"name": "block", "arguments": {}}))
    call.start()
    try:
        assert server.started.wait(5)  # type: ignore[attr-defined]
        dup = client.raw(jsonrpc.request(5, "ping"))
        assert dup["id"] == 5 and dup["error"]["code"] == -32600
        # a different id is fine meanwhile, and "5" (a string) is a different id from 5
        assert client.raw(jsonrpc.request("5", "ping"))["result"] == {}
    finally:
        server.release.set()  # type: ignore[attr-defined]
    reply = call.finish()
    assert reply["id"] == 5 and reply["result"]["content"][0]["text"] == "released"
    # once finished, the id may be used again
    assert client.raw(jsonrpc.request(5, "ping"))["result"] == {}


# ---- lifecycle ----------------------------------------------------------------------------------

def test_requests_before_initialize_are_rejected_except_ping(server: Server) -> None:
    c = MemClient(server)
    assert c.call("ping") == {}
    for method in ("tools/list", "tools/call", "resources/list", "prompts/list", "logging/setLevel",
                   "no/such/method"):
        err = c.error(method, {})
        assert err["code"] == -32600, method
    assert c.conn.phase == lifecycle.NEW
    # notifications before initialize are ignored silently
    c.notify("notifications/initialized")
    assert c.conn.phase == lifecycle.NEW
    c.initialize()
    assert c.conn.phase == lifecycle.READY
    assert c.call("tools/list")["tools"]


def test_requests_tolerated_between_initialize_and_initialized(server: Server) -> None:
    c = MemClient(server)
    c.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                          "clientInfo": {"name": "x", "version": "1"}})
    assert c.conn.phase == lifecycle.INITIALIZING
    assert c.call("tools/list")["tools"]


def test_second_initialize_is_an_error(server: Server) -> None:
    c = MemClient(server)
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
    c.call("initialize", params)
    assert c.error("initialize", params)["code"] == -32600
    c.notify("notifications/initialized")
    assert c.error("initialize", {**params, "protocolVersion": "2024-11-05"})["code"] == -32600
    assert c.conn.version == "2025-06-18"


def test_initialize_with_malformed_capabilities(server: Server) -> None:
    c = MemClient(server)
    err = c.error("initialize", {"protocolVersion": "2025-11-25", "capabilities": [],
                                 "clientInfo": {"name": "x", "version": "1"}})
    assert err["code"] == -32602
    assert c.conn.phase == lifecycle.NEW
    c.initialize()


def test_cancel_of_unknown_or_malformed_ids_is_ignored(server: Server) -> None:
    c = MemClient(server)
    for rid in (1, "1", None, True, 1.5, [1]):
        assert c.conn.cancel(rid) is False
    c.initialize()


@pytest.mark.parametrize("version", HANDSHAKE)
def test_version_negotiation_echoes_supported(server: Server, version: str) -> None:
    result = MemClient(server).initialize(version)
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "lifecycle-test"
    assert result["serverInfo"]["version"] == "1.2.3"


@pytest.mark.parametrize("requested", ["2026-07-28", "1999-01-01", "2025-11-26", "", None, 20251125])
def test_version_negotiation_counter_offers_latest_handshake(server: Server, requested: Any) -> None:
    c = MemClient(server)
    result = c.call("initialize", {"protocolVersion": requested, "capabilities": {},
                                   "clientInfo": {"name": "x", "version": "1"}})
    assert result["protocolVersion"] == "2025-11-25"
    assert versions.negotiate(requested) == "2025-11-25"


def test_initialize_without_params_counter_offers(server: Server) -> None:
    c = MemClient(server)
    assert c.call("initialize")["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize("version", HANDSHAKE)
def test_capabilities_per_revision(server: Server, version: str) -> None:
    caps = MemClient(server).initialize(version)["capabilities"]
    assert caps["tools"] == {"listChanged": True}
    assert caps["resources"] == {"subscribe": True, "listChanged": True}
    assert caps["prompts"] == {"listChanged": True}
    assert caps["logging"] == {}
    assert ("completions" in caps) == (version >= "2025-03-26")


@pytest.mark.parametrize("version", HANDSHAKE)
def test_server_info_title_only_from_2025_06_18(server: Server, version: str) -> None:
    info = MemClient(server).initialize(version)["serverInfo"]
    assert ("title" in info) == (version >= "2025-06-18")


# ---- batching -----------------------------------------------------------------------------------

def test_batch_in_2025_03_26(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2025-03-26")
    replies = c.raw([
        jsonrpc.request(1, "ping"),
        jsonrpc.notification("notifications/roots/list_changed"),
        jsonrpc.request("two", "tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
        jsonrpc.request(3, "no/such"),
    ])
    assert isinstance(replies, list) and len(replies) == 3
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["result"] == {}
    assert by_id["two"]["result"]["content"] == [{"type": "text", "text": "hi"}]
    assert by_id[3]["error"]["code"] == -32601


def test_batch_of_notifications_only_has_no_reply(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2025-03-26")
    assert c.raw([jsonrpc.notification("notifications/roots/list_changed")]) is None


def test_batch_containing_initialize_is_an_error(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2025-03-26")
    replies = c.raw([jsonrpc.request(1, "initialize", {"protocolVersion": "2025-03-26"}),
                     jsonrpc.request(2, "ping")])
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["error"]["code"] == -32600
    assert by_id[2]["result"] == {}


def test_batch_with_invalid_members(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2025-03-26")
    replies = c.raw([1, {"jsonrpc": "2.0", "id": True, "method": "ping"}, jsonrpc.request(4, "ping")])
    assert [r.get("id") for r in replies] == [None, None, 4]
    assert [r.get("error", {}).get("code") for r in replies[:2]] == [-32600, -32600]


def test_empty_batch_is_an_error(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2025-03-26")
    reply = c.raw([])
    assert isinstance(reply, dict)
    assert reply["id"] is None and reply["error"]["code"] == -32600


@pytest.mark.parametrize("version", ["2024-11-05", "2025-06-18", "2025-11-25", None])
def test_batch_rejected_in_other_revisions(server: Server, version: str | None) -> None:
    c = MemClient(server)
    if version is not None:
        c.initialize(version)
    reply = c.raw([jsonrpc.request(1, "ping")])
    assert isinstance(reply, dict)
    assert reply["id"] is None and reply["error"]["code"] == -32600


# ---- per-revision shapes ------------------------------------------------------------------------

def revision_server() -> Server:
    server = Server("rev", "1")

    @server.tool(title="Fancy", annotations={"readOnlyHint": True},
                 icons=[{"src": "https://example.com/i.png"}], meta={"com.example/x": 1})
    def fancy(x: int) -> dict[str, int]:
        """Doubles x, structured."""
        return {"double": 2 * x}

    return server


@pytest.mark.parametrize("version, keys", [
    ("2024-11-05", {"name", "description", "inputSchema"}),
    ("2025-03-26", {"name", "description", "inputSchema", "annotations"}),
    ("2025-06-18", {"name", "title", "description", "inputSchema", "outputSchema", "annotations", "_meta"}),
    ("2025-11-25", {"name", "title", "description", "inputSchema", "outputSchema", "annotations",
                    "_meta", "icons"}),
])
def test_tools_list_fields_per_revision(version: str, keys: set[str]) -> None:
    c = MemClient(revision_server())
    c.initialize(version)
    (tool,) = c.call("tools/list")["tools"]
    assert set(tool) == keys


@pytest.mark.parametrize("version", HANDSHAKE)
def test_structured_content_only_from_2025_06_18(version: str) -> None:
    c = MemClient(revision_server())
    c.initialize(version)
    result = c.call_tool("fancy", {"x": 21})
    assert result["content"] == [{"type": "text", "text": '{"double": 42}'}]
    if version >= "2025-06-18":
        assert result["structuredContent"] == {"double": 42}
    else:
        assert "structuredContent" not in result


def test_features_table_is_consistent() -> None:
    assert [v for v in versions.HANDSHAKE_VERSIONS if versions.features(v).batching] == ["2025-03-26"]
    assert versions.LATEST_HANDSHAKE_VERSION == "2025-11-25"
    assert versions.features(None) == versions.FEATURES["2024-11-05"]


def test_rpc_error_carries_code(client: MemClient) -> None:
    with pytest.raises(RpcError) as info:
        client.call("tools/call", {"name": "nope"})
    assert info.value.code == -32602


def test_cancel_of_a_request_still_queued_for_a_worker() -> None:
    """With every worker busy, a request waits in the pool's queue; cancelling it there must
    stop it from running at all (and from being answered)."""
    server = make_server()
    ran: list[str] = []

    @server.tool()
    def queued() -> str:
        """Records that it ran."""
        ran.append("queued")
        return "ran"

    wire = Wire(server, max_workers=1)  # the one worker is kept busy by `block`
    try:
        wire.feed_sync(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}')
        wire.feed_sync(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        wire.feed_sync(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"block"}}')
        assert server.started.wait(5)  # type: ignore[attr-defined]
        wire.feed_sync(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"queued"}}')
        wire.feed_sync(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}')
        wire.feed_sync(b'{"jsonrpc":"2.0","id":3,"method":"ping"}')
        server.release.set()  # type: ignore[attr-defined]
        wire.wait_for(lambda m: m.get("id") == 1)
        wire.wait_for(lambda m: m.get("id") == 3)
    finally:
        server.release.set()  # type: ignore[attr-defined]
        wire.close()
    assert ran == []
    assert not any(m.get("id") == 2 for m in wire.out)


def test_no_server_requests_before_initialized() -> None:
    """L-07: between the initialize response and notifications/initialized the server sends
    no request but ping; a tool that asks for sampling then gets an error result."""
    from mcpsync import Context, Server
    from memclient import MemClient

    srv = Server("l07")

    @srv.tool()
    def ask(ctx: Context) -> str:
        """Asks the client's model."""
        return str(ctx.sample("hi"))

    client = MemClient(srv)
    client.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                               "clientInfo": {"name": "t", "version": "1"}})
    result = client.call("tools/call", {"name": "ask"})
    assert result["isError"] is True and "notifications/initialized" in result["content"][0]["text"]
    assert not [m for m in client.received if m.get("method") == "sampling/createMessage"]


def test_batch_size_is_limited() -> None:
    from mcpsync import Server
    from memclient import MemClient
    from mcpsync.core.connection import MAX_BATCH

    client = MemClient(Server("batch"))
    client.initialize("2025-03-26")
    reply = client.raw([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(MAX_BATCH + 1)])
    assert reply["error"]["code"] == -32600 and str(MAX_BATCH) in reply["error"]["message"]
    assert len(client.raw([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(MAX_BATCH)])) == MAX_BATCH


def test_nesting_depth_is_limited() -> None:
    """Deeply nested JSON is a parse error (-32700), not a recursion blow-up; brackets inside
    strings do not count."""
    from mcpsync.errors import ParseError
    from mcpsync.protocol import jsonrpc

    with pytest.raises(ParseError):
        jsonrpc.decode("[" * (jsonrpc.MAX_DEPTH + 1) + "]" * (jsonrpc.MAX_DEPTH + 1))
    value, depth = jsonrpc.decode("[" * jsonrpc.MAX_DEPTH + "]" * jsonrpc.MAX_DEPTH), 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == jsonrpc.MAX_DEPTH  # the limit itself is accepted
    assert jsonrpc.decode('{"s": "' + "[" * 500 + '"}')["s"] == "[" * 500
    with pytest.raises(ParseError):
        jsonrpc.decode("[" * 100_000)
