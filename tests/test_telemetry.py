"""OpenTelemetry server spans and metrics (``mcpsync.telemetry``), recorded with the SDK's
in-memory span exporter and metric reader, over real transports: Streamable HTTP (both eras),
WebSocket and legacy SSE on mcpsync's front end in this process, and stdio to a real
``python -m mcpsync`` process (which records with the SDK and hands its records back as
JSON: ``otel_fixture_server.py``). The client is mcpsync's own ``ClientSession``, so each
server span is also checked to descend from the client span of its request.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from httpserver import serving  # noqa: E402
from otel_fixture_server import make_server  # noqa: E402
from otelutil import Recorder, stdio_endpoint  # noqa: E402
from rpcutil import wait_until  # noqa: E402

from mcpsync import semconv, telemetry  # noqa: E402
from mcpsync.client.channels import make_channel  # noqa: E402
from mcpsync.client.endpoint import Endpoint  # noqa: E402
from mcpsync.client.session import ClientSession  # noqa: E402
from mcpsync.errors import PeerError  # noqa: E402
from mcpsync.http.app import HttpApp  # noqa: E402

WAIT_S = 20.0
HTTP_NETWORK = {"network.transport": "tcp", "network.protocol.name": "http",
                "network.protocol.version": "1.1"}
#: in-process transports: (Endpoint transport, path, revision, network attributes)
TRANSPORTS = {
    "http": ("streamable-http", "/mcp", "2025-11-25", HTTP_NETWORK),
    "modern": ("streamable-http", "/mcp", "2026-07-28", HTTP_NETWORK),
    "ws": ("websocket", "/ws", "2025-11-25", {"network.transport": "tcp", "network.protocol.name": "websocket"}),
    "sse": ("sse", "/sse", "2025-11-25", HTTP_NETWORK),
}


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    monkeypatch.setattr(telemetry, "ACTIVE", telemetry.ACTIVE)  # put back afterwards
    yield Recorder()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = HttpApp(make_server())
    with serving(app) as url:
        yield url


@contextlib.contextmanager
def connected(base: str, transport: str) -> Iterator[ClientSession]:
    """An open ``ClientSession`` with the module's server; closed (the session ended) on exit."""
    kind, path, revision, _ = TRANSPORTS[transport]
    url = (base.replace("http://", "ws://") if kind == "websocket" else base) + path
    cfg = Endpoint(name=f"otel-{transport}", transport=kind, url=url, revision=revision)
    session = ClientSession(cfg, make_channel(cfg)).open()
    try:
        yield session
    finally:
        session.close()


def pair(rec: Recorder, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one server span called ``name`` and the client span it descends from."""
    servers = [s for s in rec.spans("SERVER") if s["name"] == name]
    assert len(servers) == 1, (name, [s["name"] for s in rec.spans()])
    server = servers[0]
    clients = [c for c in rec.spans("CLIENT") if c["span_id"] == server["parent_id"]]
    assert clients, f"the server span {name!r} is not a child of a client span"
    assert clients[0]["trace_id"] == server["trace_id"]
    return server, clients[0]


def check_common(server: dict[str, Any], client: dict[str, Any], transport: str,
                 session: ClientSession) -> None:
    """The attributes every server span of this transport carries."""
    attrs = server["attributes"]
    assert attrs["jsonrpc.request.id"] == client["attributes"]["jsonrpc.request.id"]
    assert attrs["mcp.protocol.version"] == TRANSPORTS[transport][2] == session.revision
    assert {k: v for k, v in attrs.items() if k.startswith("network.")} == TRANSPORTS[transport][3]
    assert attrs["client.address"] == "127.0.0.1"
    if transport == "modern":
        assert "mcp.session.id" not in attrs  # 2026-07-28 has no sessions
    else:
        assert attrs["mcp.session.id"]
    if transport == "http":
        assert attrs["mcp.session.id"] == session.channel.session_id  # type: ignore[attr-defined]


# ---- server spans, per kind of call, over every in-process transport ------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tool_call_span(otel: Recorder, base: str, transport: str) -> None:
    with connected(base, transport) as session:
        result = session.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert result["content"] == [{"type": "text", "text": "hi"}]
    server, client = pair(otel, "tools/call echo")
    attrs = server["attributes"]
    assert (server["kind"], server["status"]) == ("SERVER", "UNSET")
    assert attrs["mcp.method.name"] == "tools/call"
    assert attrs["gen_ai.tool.name"] == "echo"
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert "error.type" not in attrs and "rpc.response.status_code" not in attrs
    check_common(server, client, transport, session)
    assert client["name"] == "tools/call echo" and client["status"] == "UNSET"
    assert client["attributes"]["gen_ai.tool.name"] == "echo"
    if transport != "modern":  # the handshake: its revision is known only once it is done
        init, init_client = pair(otel, "initialize")
        assert init["attributes"]["mcp.protocol.version"] == session.revision
        assert init_client["attributes"]["mcp.protocol.version"] == session.revision


@pytest.mark.parametrize("transport", ["http", "ws", "sse"])
def test_notification_spans(otel: Recorder, base: str, transport: str) -> None:
    """A client's notification: a CLIENT span on the sender, its context in the
    notification's _meta, and the SERVER span of its handling a child of it; a notification
    the server has no handler for is recorded as _OTHER (bounded cardinality)."""
    with connected(base, transport) as session:
        session.notify("notifications/made_up_by_the_client", {"x": 1})
        assert wait_until(lambda: len([s for s in otel.spans("SERVER") if s["name"] == "_OTHER"]) == 1, WAIT_S)
    server, client = pair(otel, "notifications/initialized")
    assert client["name"] == "notifications/initialized"
    attrs = server["attributes"]
    assert attrs["mcp.method.name"] == "notifications/initialized"
    assert "jsonrpc.request.id" not in attrs and server["status"] == "UNSET"
    assert attrs["mcp.protocol.version"] == TRANSPORTS[transport][2]
    assert {k: v for k, v in attrs.items() if k.startswith("network.")} == TRANSPORTS[transport][3]
    assert attrs["mcp.session.id"] and attrs["client.address"] == "127.0.0.1"
    other = [s for s in otel.spans("SERVER") if s["name"] == "_OTHER"][0]
    assert other["attributes"]["mcp.method.name"] == "_OTHER"
    made_up = [c for c in otel.spans("CLIENT") if c["span_id"] == other["parent_id"]]
    assert made_up and made_up[0]["name"] == "notifications/made_up_by_the_client"
    points = {m["attributes"]["mcp.method.name"] for m in otel.metrics("mcp.server.operation.duration")}
    assert {"notifications/initialized", "_OTHER"} <= points
    assert "notifications/initialized" in {
        m["attributes"]["mcp.method.name"] for m in otel.metrics("mcp.client.operation.duration")}


def test_a_request_of_the_server_to_the_client_is_a_client_span(otel: Recorder, base: str) -> None:
    """A tool asks the client (elicitation/create): on the server a CLIENT span, child of the
    tool call's SERVER span, its context in the request's _meta; its id recorded."""
    from mcpsync import Client
    asked: list[dict[str, Any]] = []

    def elicitation(params: dict[str, Any]) -> dict[str, Any]:
        asked.append(params)
        return {"action": "accept", "content": {}}
    with Client(base + "/mcp", revision="2025-11-25", elicitation=elicitation) as client:
        assert client.call_tool("confirm", {}).text == "answer=accept"
    tool = [s for s in otel.spans("SERVER") if s["name"] == "tools/call confirm"][0]
    ask = [s for s in otel.spans("CLIENT") if s["name"] == "elicitation/create"]
    assert len(ask) == 1 and ask[0]["parent_id"] == tool["span_id"]
    attrs = ask[0]["attributes"]
    assert attrs["mcp.method.name"] == "elicitation/create" and attrs["jsonrpc.request.id"]
    assert attrs["mcp.session.id"] == tool["attributes"]["mcp.session.id"]
    assert attrs["mcp.protocol.version"] == "2025-11-25" and ask[0]["status"] == "UNSET"
    traceparent = asked[0]["_meta"]["traceparent"]
    assert traceparent.split("-")[1:3] == [ask[0]["trace_id"], ask[0]["span_id"]]
    assert "elicitation/create" in {
        m["attributes"]["mcp.method.name"] for m in otel.metrics("mcp.client.operation.duration")}


def test_the_servers_own_notifications_are_client_spans(otel: Recorder, base: str) -> None:
    """Progress and a log message a tool sends: CLIENT spans (the server initiates them),
    children of the tool call's span; a list change: one CLIENT span for the broadcast."""
    from mcpsync import Client
    logs: list[Any] = []
    with Client(base + "/mcp", revision="2025-11-25", on_log=logs.append) as client:
        assert client.call_tool("chatty", {}, progress=lambda *args: None).text == "done"
    tool = [s for s in otel.spans("SERVER") if s["name"] == "tools/call chatty"][0]
    for method in ("notifications/progress", "notifications/message"):
        sent = [s for s in otel.spans("CLIENT") if s["name"] == method]
        assert len(sent) == 1 and sent[0]["parent_id"] == tool["span_id"], (method, sent)
        assert sent[0]["attributes"]["mcp.session.id"] == tool["attributes"]["mcp.session.id"]
    from otel_fixture_server import make_server as fresh
    server = fresh("broadcaster")  # registrations with nobody connected: no span
    assert not [s for s in otel.spans("CLIENT") if s["name"] == "notifications/tools/list_changed"]
    conn = server.connect(session_id="s1")
    try:
        server.add_tool(lambda: "n", name="added", description="A change.")
    finally:
        conn.close()
    changed = [s for s in otel.spans("CLIENT") if s["name"] == "notifications/tools/list_changed"]
    assert len(changed) == 1 and changed[0]["attributes"] == {"mcp.method.name": "notifications/tools/list_changed"}


def test_modern_requests_refused_before_they_run_have_spans(otel: Recorder, base: str) -> None:
    """2026-07-28 requests that never reach a handler (a bad envelope; a method the revision
    does not have) are still seen: a SERVER span of the error alone, and a duration."""
    import http.client
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}
    port = int(base.rsplit(":", 1)[1])

    def post(method: str, params: dict[str, Any]) -> int:
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        try:
            conn.request("POST", "/mcp", body, {
                "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    no_capabilities = {k: v for k, v in meta.items() if not k.endswith("clientCapabilities")}
    assert post("tools/list", {"_meta": no_capabilities}) == 400
    assert post("made/up", {"_meta": meta}) in (400, 404)
    spans = {s["name"]: s for s in otel.spans("SERVER")}
    bad = spans["tools/list"]
    assert bad["status"] == "ERROR" and bad["attributes"]["error.type"] == "-32602"
    assert bad["attributes"]["jsonrpc.request.id"] == "7"
    assert bad["attributes"]["client.address"] == "127.0.0.1"
    unknown = spans["_OTHER"]
    assert unknown["status"] == "ERROR" and unknown["attributes"]["error.type"] == "-32601"
    errors = {m["attributes"].get("error.type") for m in otel.metrics("mcp.server.operation.duration")}
    assert {"-32602", "-32601"} <= errors


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tool_error_span(otel: Recorder, base: str, transport: str) -> None:
    with connected(base, transport) as session:
        result = session.request("tools/call", {"name": "fail", "arguments": {"reason": "no"}})
    assert result["isError"] is True
    server, client = pair(otel, "tools/call fail")
    assert server["attributes"]["error.type"] == "tool_error"
    assert "rpc.response.status_code" not in server["attributes"]  # a result, not a JSON-RPC error
    assert server["status"] == "ERROR"
    assert client["attributes"]["error.type"] == "tool_error" and client["status"] == "ERROR"
    check_common(server, client, transport, session)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_protocol_error_span(otel: Recorder, base: str, transport: str) -> None:
    """An unknown tool is -32602, an unknown method -32601; names the server does not
    have are not recorded (a client could make up any number of them)."""
    with connected(base, transport) as session:
        with pytest.raises(PeerError) as unknown_tool:
            session.request("tools/call", {"name": "no_such_tool", "arguments": {}})
        with pytest.raises(PeerError) as unknown_method:
            session.request("no/such/method", {})
    server, client = pair(otel, "tools/call")
    attrs = server["attributes"]
    assert attrs["error.type"] == attrs["rpc.response.status_code"] == "-32602"
    assert server["status"] == "ERROR" and server["description"] == unknown_tool.value.message
    assert "gen_ai.tool.name" not in attrs and attrs["gen_ai.operation.name"] == "execute_tool"
    assert client["attributes"]["error.type"] == client["attributes"]["rpc.response.status_code"] == "-32602"
    assert client["name"] == "tools/call no_such_tool"  # the client names what it asked for
    check_common(server, client, transport, session)
    if transport == "modern":
        return  # 2026-07-28: an unknown method is refused with the envelope, before any span
    other, _ = pair(otel, "_OTHER")
    assert other["attributes"]["mcp.method.name"] == "_OTHER"
    assert other["attributes"]["error.type"] == str(unknown_method.value.code) == "-32601"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resources_read_span(otel: Recorder, base: str, transport: str) -> None:
    with connected(base, transport) as session:
        result = session.request("resources/read", {"uri": "otel://items/7"})
    assert result["contents"][0]["text"] == "item 7"
    server, client = pair(otel, "resources/read")  # no URI in the name by default
    assert server["attributes"]["mcp.resource.uri"] == "otel://items/7"
    assert server["attributes"]["mcp.method.name"] == "resources/read"
    assert "gen_ai.tool.name" not in server["attributes"] and "error.type" not in server["attributes"]
    assert client["attributes"]["mcp.resource.uri"] == "otel://items/7"
    check_common(server, client, transport, session)


def test_resource_uri_in_span_name_on_request(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    monkeypatch.setattr(telemetry, "ACTIVE", telemetry.ACTIVE)
    rec = Recorder(resource_uri_in_span_name=True)
    with connected(base, "http") as session:
        session.request("resources/read", {"uri": "otel://items/8"})
    server, client = pair(rec, "resources/read otel://items/8")
    assert client["name"] == "resources/read otel://items/8"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prompts_get_span(otel: Recorder, base: str, transport: str) -> None:
    with connected(base, transport) as session:
        result = session.request("prompts/get", {"name": "greet", "arguments": {"who": "Ada"}})
    assert "Ada" in json.dumps(result)
    server, client = pair(otel, "prompts/get greet")
    assert server["attributes"]["gen_ai.prompt.name"] == "greet"
    assert "gen_ai.operation.name" not in server["attributes"]  # execute_tool is for tools only
    assert client["attributes"]["gen_ai.prompt.name"] == "greet"
    check_common(server, client, transport, session)


# ---- metrics --------------------------------------------------------------------------------

def test_operation_and_session_duration_metrics(otel: Recorder, base: str) -> None:
    with connected(base, "http") as session:
        for _ in range(3):
            session.request("tools/call", {"name": "echo", "arguments": {"text": "x"}})
        session.request("tools/call", {"name": "fail", "arguments": {"reason": "r"}})
        with pytest.raises(PeerError):
            session.request("tools/call", {"name": "nope", "arguments": {}})
    ops = otel.metrics("mcp.server.operation.duration")
    assert ops and all(m["unit"] == "s" for m in ops)
    assert ops[0]["bounds"] == list(semconv.DURATION_BUCKETS_S)

    def point(**attrs: str) -> dict[str, Any]:
        found = [m for m in ops if all(m["attributes"].get(k) == v for k, v in attrs.items())
                 and m["attributes"].get("error.type") == attrs.get("error.type")]
        assert len(found) == 1, (attrs, ops)
        return found[0]

    ok = point(**{"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo"})
    assert ok["count"] == 3 and ok["sum"] > 0
    assert ok["attributes"] == {"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo",
                                "gen_ai.operation.name": "execute_tool",
                                "mcp.protocol.version": "2025-11-25", **HTTP_NETWORK}
    assert point(**{"gen_ai.tool.name": "fail", "error.type": "tool_error"})["count"] == 1
    bad = point(**{"mcp.method.name": "tools/call", "error.type": "-32602"})
    assert bad["attributes"]["rpc.response.status_code"] == "-32602"
    assert "gen_ai.tool.name" not in bad["attributes"]
    # no per-request values on a metric: ids and session ids would make a series each
    assert not any(k in m["attributes"] for m in ops for k in ("jsonrpc.request.id", "mcp.session.id"))
    # the session ended with the client's DELETE
    assert wait_until(lambda: bool(otel.metrics("mcp.server.session.duration")), WAIT_S)
    [sess] = otel.metrics("mcp.server.session.duration")
    assert sess["count"] == 1 and sess["sum"] > 0 and sess["unit"] == "s"
    assert sess["attributes"] == {"mcp.protocol.version": "2025-11-25", **HTTP_NETWORK}
    client_ops = otel.metrics("mcp.client.operation.duration")
    assert sum(m["count"] for m in client_ops if m["attributes"].get("gen_ai.tool.name") == "echo") == 3


# ---- stdio: a real process records, the test reads its records ------------------------------

def stdio_session(dump: pathlib.Path) -> ClientSession:
    cfg = stdio_endpoint(dump)
    return ClientSession(cfg, make_channel(cfg)).open()


def read_dump(dump: pathlib.Path) -> dict[str, Any]:
    assert wait_until(dump.exists, WAIT_S), "the stdio server wrote no records"
    return json.loads(dump.read_text(encoding="utf-8"))


def test_stdio_spans_metrics_and_propagation(otel: Recorder, tmp_path: pathlib.Path) -> None:
    dump = tmp_path / "server.json"
    session = stdio_session(dump)
    try:
        session.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        session.request("tools/call", {"name": "fail", "arguments": {"reason": "no"}})
        with pytest.raises(PeerError):
            session.request("tools/call", {"name": "nope", "arguments": {}})
        session.request("resources/read", {"uri": "otel://items/3"})
        session.request("prompts/get", {"name": "greet", "arguments": {"who": "Bo"}})
    finally:
        session.close()
    record = read_dump(dump)
    spans = {s["name"]: s for s in record["spans"] if s["kind"] == "SERVER"}
    clients = {c["span_id"]: c for c in otel.spans("CLIENT")}
    for name in ("tools/call echo", "tools/call fail", "tools/call", "resources/read", "prompts/get greet"):
        span = spans[name]
        client = clients[span["parent_id"]]  # the parent is this process's client span
        assert client["trace_id"] == span["trace_id"]
        attrs = span["attributes"]
        assert attrs["network.transport"] == "pipe" and "network.protocol.name" not in attrs
        assert "client.address" not in attrs  # a pipe has no peer address
        assert attrs["mcp.protocol.version"] == session.revision
        assert attrs["jsonrpc.request.id"] == client["attributes"]["jsonrpc.request.id"]
    assert client["attributes"]["network.transport"] == "pipe"
    assert spans["tools/call echo"]["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert spans["tools/call fail"]["attributes"]["error.type"] == "tool_error"
    assert spans["tools/call"]["attributes"]["error.type"] == "-32602"
    assert spans["resources/read"]["attributes"]["mcp.resource.uri"] == "otel://items/3"
    assert spans["prompts/get greet"]["attributes"]["gen_ai.prompt.name"] == "greet"
    ops = [m for m in record["metrics"] if m["name"] == "mcp.server.operation.duration"]
    assert sum(m["count"] for m in ops if m["attributes"].get("gen_ai.tool.name") == "echo") == 1
    [sess] = [m for m in record["metrics"] if m["name"] == "mcp.server.session.duration"]
    assert sess["count"] == 1
    assert sess["attributes"] == {"network.transport": "pipe", "mcp.protocol.version": session.revision}


def test_values_a_client_chooses_are_cut(otel: Recorder, base: str) -> None:
    """A request id, a URI or an error message quoting a client's text are cut on spans
    (they wait in an exporter's queue), and an unknown name never makes a span name."""
    from httpclient import HttpMcp

    long_id, long_uri, long_name = "i" * 5000, "otel://items/" + "u" * 5000, "t" * 5000
    with HttpMcp(base + "/mcp") as c:
        c.initialize()
        reply = c.post({"jsonrpc": "2.0", "id": long_id, "method": "resources/read", "params": {"uri": long_uri}})
        assert reply.messages()[0]["result"]["contents"][0]["uri"] == long_uri
        reply = c.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": long_name}})
        assert reply.messages()[0]["error"]["code"] == -32602
        c.delete()
    limit = semconv.MAX_VALUE_CHARS + 1
    read = [s for s in otel.spans("SERVER") if s["name"] == "resources/read"][0]["attributes"]
    assert len(read["jsonrpc.request.id"]) == len(read["mcp.resource.uri"]) == limit
    assert read["mcp.resource.uri"].startswith("otel://items/uuu") and read["mcp.resource.uri"].endswith("…")
    [call] = [s for s in otel.spans("SERVER") if s["name"] == "tools/call"]
    assert "gen_ai.tool.name" not in call["attributes"] and len(call["description"]) <= limit
