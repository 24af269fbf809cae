"""Revision 2026-07-28 (stateless) on the same endpoint as the session-based revisions:
raw HTTP for each rule, and both eras hammering one server at once."""
from __future__ import annotations

import base64
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest
from httpclient import HttpMcp, parse_sse
from httpserver import serving

from mcpsync import Context, Server, inputs
from mcpsync.service import Service
from mcpsync.http.app import HttpApp
from mcpsync.protocol import jsonrpc, modern

WAIT_S = 10.0
V = "2026-07-28"


def envelope(caps: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"_meta": {"io.modelcontextprotocol/protocolVersion": V,
                      "io.modelcontextprotocol/clientCapabilities": caps or {},
                      "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}, **extra}}


def modern_headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    h = {"MCP-Protocol-Version": V, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    h.update(extra)
    return h


def make_server() -> Server:
    srv = Server("modern-tests", "2.0", instructions="hello")

    @srv.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    @srv.tool()
    def ask_twice(ctx: Context) -> str:
        """Two elicitations in a row, then a result built from both."""
        first = ctx.elicit("first?", {"type": "object", "properties": {"a": {"type": "string"}}})
        second = ctx.elicit("second?", {"type": "object", "properties": {"b": {"type": "string"}}})
        return f"{first['content']['a']}+{second['content']['b']}"

    @srv.tool()
    def chatty(ctx: Context) -> str:
        """Logs and reports progress."""
        ctx.report_progress(1, 2)
        ctx.info("working")
        ctx.debug("details")
        return "done"

    @srv.tool(input_schema={"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"}}, "required": ["region"]})
    def regional(region: str) -> str:
        """A tool whose argument is mirrored into a header."""
        return region

    @srv.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """The era and version this request was served in."""
        return {"modern": ctx.modern, "version": ctx.version, "session": ctx.session_id}

    @srv.tool()
    def gather(ctx: Context) -> str:
        """Three questions in one round, under names of its own."""
        got = ctx.ask(who=inputs.elicitation("Name?", {"type": "object"}),
                      model=inputs.sampling("Say hi", max_tokens=5), where=inputs.roots())
        return f"{got['who']['content']['name']} {got['model']['content']['text']} {got['where']['roots'][0]['uri']}"

    @srv.resource("memo://one", mime_type="text/plain")
    def memo() -> str:
        """A memo."""
        return "one"

    return srv


@pytest.fixture()
def env() -> Iterator[tuple[str, Service]]:
    app = Service(make_server())
    with serving(HttpApp(app)) as base:
        yield f"{base}/mcp", app
    app.close()


def call(c: HttpMcp, rid: Any, method: str, params: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, caps: dict[str, Any] | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": rid, "method": method,
            "params": {**envelope(caps), **(params or {})}}
    name = (params or {}).get("name") or (params or {}).get("uri")
    h = modern_headers(method, name if method in ("tools/call", "prompts/get", "resources/read") else None)
    h.update(headers or {})
    return c.post(body, h, session=False)


def test_discover_answers_versions_capabilities_identity(env: Any) -> None:
    url, app = env
    with HttpMcp(url) as c:
        reply = call(c, 1, "server/discover")
        assert reply.status == 200
        result = reply.json()["result"]
        assert result["supportedVersions"][0] == V and "2025-11-25" in result["supportedVersions"]
        assert result["capabilities"]["tools"] == {"listChanged": True}
        assert result["resultType"] == "complete" and result["cacheScope"] in ("public", "private")
        assert result["ttlMs"] >= 0 and result["instructions"] == "hello"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "modern-tests"
        assert "mcp-session-id" not in reply.headers
    assert len(app.store) == 0  # no session was created


def test_every_result_has_result_type_and_server_info(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        listed = call(c, 1, "tools/list").json()["result"]
        assert [t["name"] for t in listed["tools"]] == sorted(t["name"] for t in listed["tools"])
        assert listed["ttlMs"] == 0 and listed["cacheScope"] == "private"
        called = call(c, 2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}).json()["result"]
        assert called["resultType"] == "complete" and "ttlMs" not in called
        assert called["_meta"]["io.modelcontextprotocol/serverInfo"]["version"] == "2.0"
        read = call(c, 3, "resources/read", {"uri": "memo://one"}).json()["result"]
        assert read["contents"][0]["text"] == "one" and "ttlMs" in read


@pytest.mark.parametrize("members,last", [
    ([("content", [{"type": "text", "text": "\u00e9\"\\"}]), ("resultType", "complete"), ("_meta", None)], True),
    ([("a", 1), ("_meta", None), ("b", {"c": None})], False),
    ([("resultType", "complete"), ("a", 1), ("_meta", None)], False),
    ([("a", 1), ("resultType", "input_required"), ("_meta", None)], True),
    ([("resultType", "complete"), ("_meta", None)], True),
    ([("_meta", None)], True),
    ([("a", {"_meta": None})], True),
], ids=["meta-last", "meta-inside", "complete-first", "not-complete", "nothing-else", "meta-alone",
        "meta-nested"])
def test_a_shared_server_meta_is_spliced_into_the_same_json(members: list[Any], last: bool) -> None:
    """A 2026-07-28 result's server _meta is encoded once and spliced in: the same JSON as
    encoding it every time (the same bytes when it is the result's last member), and the
    message and the result are left as they were."""
    meta = modern.SharedMeta({"io.modelcontextprotocol/serverInfo": {"name": "n\u00e9\"", "version": "1"}})

    def fill(v: Any) -> Any:  # None stands for the shared meta
        return meta if v is None else {k: fill(x) for k, x in v.items()} if type(v) is dict else v
    result = {k: fill(v) for k, v in members}
    msg = jsonrpc.response(7, result)
    before = json.dumps(msg)
    spliced = modern.encode_response(msg)
    assert json.loads(spliced) == json.loads(jsonrpc.encode(msg))
    assert (spliced == jsonrpc.encode(msg)) is last
    assert msg["result"] is result and json.dumps(msg) == before
    extended = {**msg, "more": {}}  # not a plain response: encoded as it is
    assert modern.encode_response(extended) == jsonrpc.encode(extended)


def test_envelope_errors(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        no_caps = c.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                          "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": V}}},
                         modern_headers("tools/list"), session=False)
        assert no_caps.status == 400 and no_caps.json()["error"]["code"] == -32602
        old = c.post({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2099-01-01",
            "io.modelcontextprotocol/clientCapabilities": {}}}},
            {"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"}, session=False)
        err = old.json()["error"]
        assert old.status == 400 and err["code"] == -32022
        assert err["data"]["requested"] == "2099-01-01" and V in err["data"]["supported"]
        bad_level = call(c, 3, "tools/list", envelope(**{"io.modelcontextprotocol/logLevel": "loud"}))
        assert bad_level.status == 400 and bad_level.json()["error"]["code"] == -32602
        # The envelope's shape is checked before the headers: no _meta, or no version in it,
        # is -32602 even though the version header then matches nothing.
        for params in ({}, {"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}):
            reply = c.post({"jsonrpc": "2.0", "id": 4, "method": "server/discover", "params": params},
                           modern_headers("server/discover"), session=False)
            assert reply.status == 400 and reply.json()["error"]["code"] == -32602, params
            assert reply.json()["id"] == 4


def test_several_inputs_in_one_round_with_named_keys(env: Any) -> None:
    url, _ = env
    caps = {"elicitation": {}, "sampling": {}, "roots": {}}
    with HttpMcp(url) as c:
        first = call(c, 1, "tools/call", {"name": "gather", "arguments": {}}, caps=caps).json()["result"]
        assert first["resultType"] == "input_required"
        assert {k: v["method"] for k, v in first["inputRequests"].items()} == {
            "who": "elicitation/create", "model": "sampling/createMessage", "where": "roots/list"}
        answers = {"who": {"action": "accept", "content": {"name": "Ada"}},
                   "model": {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"},
                   "where": {"roots": [{"uri": "file:///w"}]}, "junk": {"x": 1}}
        done = call(c, 2, "tools/call", {"name": "gather", "arguments": {}, "inputResponses": answers},
                    caps=caps).json()["result"]
        assert done["content"][0]["text"] == "Ada hi file:///w"
        only = call(c, 3, "tools/call", {"name": "gather", "arguments": {}}, caps={"sampling": {}}).json()
        assert only["error"]["code"] == -32021  # asks nothing the client did not declare
        wrong = call(c, 4, "tools/call", {"name": "gather", "arguments": {},
                                          "inputResponses": {"who": 5}}, caps=caps)
        assert wrong.status == 400 and wrong.json()["error"]["code"] == -32602


def test_header_mismatch_rules(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        for headers in ({"Mcp-Method": "tools/list"}, {"Mcp-Name": "other"}, {"Mcp-Name": None},
                        {"MCP-Protocol-Version": "2026-07-29"}):
            reply = call(c, 1, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, headers)
            assert reply.status == 400 and reply.json()["error"]["code"] == -32020, headers
        encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
        ok = call(c, 2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, {"Mcp-Name": encoded})
        assert ok.status == 200
        param_ok = call(c, 3, "tools/call", {"name": "regional", "arguments": {"region": "eu"}},
                        {"Mcp-Param-Region": "eu"})
        assert param_ok.status == 200 and param_ok.json()["result"]["content"][0]["text"] == "eu"
        param_bad = call(c, 4, "tools/call", {"name": "regional", "arguments": {"region": "eu"}},
                         {"Mcp-Param-Region": "us"})
        assert param_bad.status == 400 and param_bad.json()["error"]["code"] == -32020
        param_missing = call(c, 5, "tools/call", {"name": "regional", "arguments": {"region": "eu"}})
        assert param_missing.json()["error"]["code"] == -32020


def test_removed_and_unknown_methods_are_404(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        for method in ("ping", "logging/setLevel", "resources/subscribe", "no/such"):
            reply = call(c, 1, method)
            assert reply.status == 404 and reply.json()["error"]["code"] == -32601, method


def test_resource_not_found_is_invalid_params(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        reply = call(c, 1, "resources/read", {"uri": "memo://none"})
        assert reply.status == 400
        assert reply.json()["error"]["code"] == -32602 and reply.json()["error"]["data"]["uri"] == "memo://none"


def test_get_and_delete_are_405_and_session_headers_are_ignored(env: Any) -> None:
    url, app = env
    with HttpMcp(url) as c:
        assert c.request("GET", headers={"MCP-Protocol-Version": V, "Accept": "text/event-stream"},
                         session=False).status == 405
        assert c.request("DELETE", headers={"MCP-Protocol-Version": V}, session=False).status == 405
        reply = call(c, 1, "tools/call", {"name": "whoami"}, {"Mcp-Session-Id": "made-up"})
        assert reply.status == 200
        assert reply.json()["result"]["structuredContent"] == {"modern": True, "version": V, "session": None}
    assert len(app.store) == 0


def test_multi_round_trip_two_rounds_then_complete(env: Any) -> None:
    url, _ = env
    caps = {"elicitation": {}}
    with HttpMcp(url) as c:
        first = call(c, 1, "tools/call", {"name": "ask_twice"}, caps=caps).json()["result"]
        assert first["resultType"] == "input_required"
        (key1, req1), = first["inputRequests"].items()
        assert req1["method"] == "elicitation/create" and req1["params"]["message"] == "first?"
        second = call(c, 2, "tools/call", {"name": "ask_twice", "requestState": first["requestState"],
                                           "inputResponses": {key1: {"action": "accept", "content": {"a": "A"}}}},
                      caps=caps).json()["result"]
        assert second["resultType"] == "input_required"
        (key2, req2), = second["inputRequests"].items()
        assert key2 != key1 and req2["params"]["message"] == "second?"
        done = call(c, 3, "tools/call", {"name": "ask_twice", "requestState": second["requestState"],
                                         "inputResponses": {key2: {"action": "accept", "content": {"b": "B"}}}},
                    caps=caps).json()["result"]
        assert done["resultType"] == "complete" and done["content"][0]["text"] == "A+B"
        # a tampered state is refused
        forged = second["requestState"][:-2] + ("AA" if not second["requestState"].endswith("AA") else "BB")
        bad = call(c, 4, "tools/call", {"name": "ask_twice", "requestState": forged,
                                        "inputResponses": {key2: {"action": "accept", "content": {"b": "B"}}}},
                   caps=caps)
        assert bad.status == 400 and bad.json()["error"]["code"] == -32602


def test_missing_client_capability_is_32021(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        reply = call(c, 1, "tools/call", {"name": "ask_twice"})  # no elicitation capability
        assert reply.status == 400
        err = reply.json()["error"]
        assert err["code"] == -32021 and err["data"]["requiredCapabilities"] == {"elicitation": {}}


def test_logs_only_with_a_log_level_and_on_the_request_stream(env: Any) -> None:
    url, _ = env
    with HttpMcp(url) as c:
        quiet = call(c, 1, "tools/call", {"name": "chatty", **envelope()})
        assert quiet.content_type == "application/json"  # nothing was sent before the reply
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "chatty", **envelope(**{"io.modelcontextprotocol/logLevel": "info", "progressToken": "p"})}}
        loud = c.post(body, modern_headers("tools/call", "chatty"), session=False)
        assert loud.content_type == "text/event-stream"
        methods = [m.get("method") for m in loud.messages()]
        assert methods == ["notifications/progress", "notifications/message", None]  # debug filtered
        events = loud.events()
        assert all("id" not in e for e in events)  # no resumability in this revision


def listen(url: str, rid: Any, wanted: dict[str, Any]) -> tuple[socket.socket, Any]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "subscriptions/listen",
                       "params": {**envelope(), "notifications": wanted}}).encode()
    sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: " + V.encode() +
                 b"\r\nMcp-Method: subscriptions/listen\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)
    return sock, sock.makefile("rb")


def read_messages(stream: Any, count: int) -> list[dict[str, Any]]:
    buf = b""
    while True:
        line = stream.readline()
        assert line, "listen stream ended early"
        if line.startswith(b"data: "):
            buf += line + b"\n"
        msgs = [e["data"] for e in parse_sse(buf) if isinstance(e.get("data"), dict)]
        if len(msgs) >= count:
            return msgs


def test_subscriptions_listen_streams_tagged_notifications(env: Any) -> None:
    url, app = env
    sock, stream = listen(url, "L1", {"toolsListChanged": True, "resourceSubscriptions": ["memo://one"],
                                      "promptsListChanged": False})
    try:
        ack = read_messages(stream, 1)[0]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
        assert ack["params"]["notifications"] == {"toolsListChanged": True, "resourceSubscriptions": ["memo://one"]}
        app.server.add_prompt(lambda: "p", name="not_wanted", description="x")  # not asked for
        app.server.add_tool(lambda: "t", name="late", description="late tool")
        app.server.notify_resource_updated("memo://one")
        msgs = read_messages(stream, 2)
        assert [m["method"] for m in msgs] == ["notifications/tools/list_changed",
                                               "notifications/resources/updated"]
        assert all(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1" for m in msgs)
    finally:
        stream.close()
        sock.close()


def test_listen_ends_gracefully_on_shutdown_with_its_result(env: Any) -> None:
    url, app = env
    sock, stream = listen(url, 7, {"toolsListChanged": True})
    try:
        read_messages(stream, 1)
        app.server.end_listeners()
        final = read_messages(stream, 1)[0]
        assert final["id"] == 7 and final["result"]["resultType"] == "complete"
        assert final["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 7
    finally:
        stream.close()
        sock.close()


def test_both_eras_at_once_from_many_threads(env: Any) -> None:
    """Handshake sessions and stateless requests interleave on one server; each sees only its
    own era. 16 threads x 25 rounds."""
    url, app = env
    barrier = threading.Barrier(16, timeout=WAIT_S)

    def handshake_client(i: int) -> None:
        with HttpMcp(url) as c:
            barrier.wait()
            c.initialize("2025-06-18")
            for n in range(25):
                who = c.call("tools/call", {"name": "whoami"})["structuredContent"]
                assert who == {"modern": False, "version": "2025-06-18", "session": c.session_id}
                assert c.call("tools/call", {"name": "echo", "arguments": {"text": f"{i}.{n}"}}
                              )["content"][0]["text"] == f"{i}.{n}"
            assert c.delete().status == 200

    def modern_client(i: int) -> None:
        with HttpMcp(url) as c:
            barrier.wait()
            for n in range(25):
                who = call(c, n, "tools/call", {"name": "whoami"}).json()["result"]["structuredContent"]
                assert who == {"modern": True, "version": V, "session": None}
                text = call(c, 100 + n, "tools/call", {"name": "echo", "arguments": {"text": f"m{i}.{n}"}}
                            ).json()["result"]["content"][0]["text"]
                assert text == f"m{i}.{n}"

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(handshake_client if i % 2 else modern_client, i) for i in range(16)]
        for f in futures:
            f.result(60)
    assert len(app.store) == 0 and app.server.connections() == []
