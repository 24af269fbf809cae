"""Server features in memory: tools, resources, prompts, completion, logging, progress,
cancellation, list_changed broadcasts and the server -> client requests (sampling,
elicitation, roots).
"""
from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

import pytest

from mcpsync.core.registry import RegistryStore
from mcpsync import (Audio, Context, Image, Resource, ResourceLink, Server, Text, ToolError,
                     ToolResult)
from mcpsync.errors import McpError
from mcpsync.protocol import jsonrpc

from memclient import WAIT_S, CallThread, MemClient

PNG = b"\x89PNG\r\n\x1a\nfake"


class Point(TypedDict):
    x: int
    y: int


@dataclass
class Reading:
    sensor: str
    value: float


def make_server(page_size: int = 100) -> Server:
    server = Server("features", "1", page_size=page_size)
    server.started = threading.Event()  # type: ignore[attr-defined]

    @server.tool()
    def text() -> str:
        """One text block."""
        return "plain"

    @server.tool()
    def image() -> Image:
        """An image from bytes."""
        return Image(PNG, "image/png")

    @server.tool()
    def audio() -> Audio:
        """Audio from base64 text."""
        return Audio("UklGRg==", "audio/wav")

    @server.tool()
    def embedded() -> list[Any]:
        """Embedded text and blob resources."""
        return [Resource("test://t", text="hello", mime_type="text/plain"),
                Resource("test://b", blob=b"\x00\x01", mime_type="application/octet-stream")]

    @server.tool()
    def link() -> ResourceLink:
        """A resource link."""
        return ResourceLink("test://doc", "doc", title="Doc", mime_type="text/plain", size=3)

    @server.tool()
    def mixed() -> list[Any]:
        """Several blocks, with annotations."""
        return [Text("a", annotations={"audience": ["user"]}), {"type": "text", "text": "raw"},
                ["some", 1]]

    @server.tool()
    def point(x: int, y: int = 0) -> Point:
        """Structured output from a TypedDict."""
        return {"x": x, "y": y}

    @server.tool()
    def reading() -> Reading:
        """Structured output from a dataclass."""
        return Reading("t1", 20.5)

    @server.tool(structured_output=True)
    def count() -> int:
        """A wrapped scalar."""
        return 5

    @server.tool()
    def full() -> ToolResult:
        """Full control over the result."""
        return ToolResult(["see structured"], structured={"k": "v"}, meta={"com.example/m": 1})

    @server.tool()
    def only_structured() -> ToolResult:
        """Structured content with no content blocks."""
        return ToolResult(structured={"k": 1})

    @server.tool()
    def fails() -> str:
        """Raises an ordinary exception."""
        raise ValueError("the database said no")

    @server.tool()
    def refuses() -> str:
        """Raises ToolError."""
        raise ToolError("not allowed today")

    @server.tool()
    def typed(n: Annotated[int, "a number"], mode: Literal["a", "b"] = "a") -> str:
        """Strictly typed arguments."""
        return f"{n}{mode}"

    @server.tool()
    def slow(ctx: Context) -> str:
        """Blocks until cancelled (bounded)."""
        server.started.set()  # type: ignore[attr-defined]
        cancelled = ctx.wait_cancelled(WAIT_S)
        return f"finished, cancelled={cancelled}"

    @server.tool()
    def progress(ctx: Context) -> str:
        """Reports progress, including a value that does not increase (dropped)."""
        ctx.report_progress(1, 3, "one")
        ctx.report_progress(1, 3, "again")  # not increasing: dropped
        ctx.report_progress(2.5, 3)
        ctx.report_progress(3, 3, "done")
        return "ok"

    @server.tool()
    def logs(ctx: Context) -> str:
        """Logs at four levels."""
        for level in ("debug", "info", "warning", "error"):
            ctx.log(level, {"level": level}, logger="t")
        return "logged"

    @server.tool()
    def sample(prompt: str, ctx: Context, timeout: float = WAIT_S) -> str:
        """Asks the client's model."""
        result = ctx.sample(prompt, max_tokens=10, timeout=timeout)
        return f"model said {result['content']['text']}"

    @server.tool()
    def sample_twice(ctx: Context) -> str:
        """Two sampling requests in a row."""
        a = ctx.sample("a", timeout=WAIT_S)["content"]["text"]
        b = ctx.sample("b", timeout=WAIT_S)["content"]["text"]
        return a + b

    @server.tool()
    def elicit(ctx: Context, timeout: float = WAIT_S) -> str:
        """Asks the user."""
        answer = ctx.elicit("Your name?", {"type": "object", "properties": {"name": {"type": "string"}}},
                            timeout=timeout)
        return f"{answer['action']}:{(answer.get('content') or {}).get('name')}"

    @server.tool()
    def roots(ctx: Context, timeout: float = WAIT_S) -> str:
        """Lists the client's roots."""
        return ",".join(r["uri"] for r in ctx.list_roots(timeout=timeout))

    @server.resource("test://text", name="text", mime_type="text/plain", description="Text.")
    def res_text() -> str:
        return "hello text"

    @server.resource("test://blob", name="blob", mime_type="image/png")
    def res_blob() -> bytes:
        return PNG

    @server.resource("test://json", name="json")
    def res_json() -> dict[str, Any]:
        return {"a": 1}

    @server.resource("test://items/{item_id}/v/{n}", name="item", mime_type="text/plain")
    def res_item(item_id: str, n: int) -> str:
        return f"item {item_id} #{n} ({type(n).__name__})"

    @server.prompt(title="Greet")
    def greet(name: Annotated[str, "Who to greet"], style: str = "warm") -> str:
        """A greeting prompt."""
        return f"Greet {name} in a {style} way."

    @server.prompt()
    def conversation(topic: str) -> list[Any]:
        """A multi-message prompt."""
        return [{"role": "assistant", "content": f"Let's talk about {topic}."},
                Image(PNG, "image/png"), "Your turn."]

    @server.completion(prompt="greet", argument="style")
    def complete_style(value: str, context: dict[str, str]) -> list[str]:
        return [s for s in ("warm", "witty", "formal") if s.startswith(value)]

    @server.completion(resource_template="test://items/{item_id}/v/{n}", argument="item_id")
    def complete_item(value: str, context: dict[str, str]) -> list[str]:
        return [f"{value}{i}" for i in range(150)]

    return server


@pytest.fixture
def server() -> Server:
    return make_server()


@pytest.fixture
def client(server: Server) -> MemClient:
    c = MemClient(server)
    c.initialize()
    return c


# ---- tools ----------------------------------------------------------------------------------------

def test_tools_list_entries(client: MemClient) -> None:
    tools = {t["name"]: t for t in client.call("tools/list")["tools"]}
    assert tools["typed"]["inputSchema"] == {
        "type": "object",
        "properties": {"n": {"type": "integer", "description": "a number"},
                       "mode": {"type": "string", "enum": ["a", "b"], "default": "a"}},
        "required": ["n"], "additionalProperties": False}
    assert tools["typed"]["description"] == "Strictly typed arguments."
    assert tools["text"]["inputSchema"] == {"type": "object", "properties": {},
                                            "additionalProperties": False}
    assert tools["point"]["outputSchema"] == {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"]}
    assert tools["count"]["outputSchema"] == {
        "type": "object", "properties": {"result": {"type": "integer"}}, "required": ["result"]}
    assert "outputSchema" not in tools["text"] and "outputSchema" not in tools["image"]
    # the Context parameter never appears in the schema
    assert tools["slow"]["inputSchema"]["properties"] == {}
    assert "ctx" not in tools["sample"]["inputSchema"]["properties"]


def test_tools_list_pagination() -> None:
    server = Server("many", page_size=3)
    for i in range(8):
        server.add_tool(lambda: "x", name=f"tool_{i}", description="d")
    c = MemClient(server)
    c.initialize()
    names: list[str] = []
    pages = 0
    cursor = None
    while True:
        result = c.call("tools/list", {"cursor": cursor} if cursor is not None else {})
        pages += 1
        assert len(result["tools"]) <= 3
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert names == [f"tool_{i}" for i in range(8)]
    for bad in ("!!!", "not-a-cursor", 12, "Zm9v"):  # "Zm9v" is base64 of "foo"
        assert c.error("tools/list", {"cursor": bad})["code"] == -32602


def test_other_lists_paginate_too() -> None:
    server = Server("many", page_size=2)
    for i in range(3):
        server.add_resource(lambda: "x", f"test://r{i}", name=f"r{i}")
        server.add_resource(lambda id: id, f"test://t{i}/{{id}}", name=f"t{i}")
        server.add_prompt(lambda: "x", name=f"p{i}", description="d")
    c = MemClient(server)
    c.initialize()
    for method, key in (("resources/list", "resources"), ("resources/templates/list", "resourceTemplates"),
                        ("prompts/list", "prompts")):
        first = c.call(method)
        assert len(first[key]) == 2 and "nextCursor" in first
        second = c.call(method, {"cursor": first["nextCursor"]})
        assert len(second[key]) == 1 and "nextCursor" not in second
        assert c.error(method, {"cursor": "@@"})["code"] == -32602


@pytest.mark.parametrize("name, content", [
    ("text", [{"type": "text", "text": "plain"}]),
    ("image", [{"type": "image", "data": base64.b64encode(PNG).decode(), "mimeType": "image/png"}]),
    ("audio", [{"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"}]),
    ("embedded", [{"type": "resource", "resource": {"uri": "test://t", "mimeType": "text/plain", "text": "hello"}},
                  {"type": "resource", "resource": {"uri": "test://b", "mimeType": "application/octet-stream",
                                                    "blob": "AAE="}}]),
    ("link", [{"type": "resource_link", "uri": "test://doc", "name": "doc", "title": "Doc",
               "mimeType": "text/plain", "size": 3}]),
    ("mixed", [{"type": "text", "text": "a", "annotations": {"audience": ["user"]}},
               {"type": "text", "text": "raw"}, {"type": "text", "text": '["some", 1]'}]),
])
def test_tool_content_types(client: MemClient, name: str, content: list[dict[str, Any]]) -> None:
    result = client.call_tool(name, {})
    assert result == {"content": content}


@pytest.mark.parametrize("version, audio, link", [
    ("2024-11-05", False, False), ("2025-03-26", True, False), ("2025-06-18", True, True),
])
def test_content_types_a_revision_lacks_become_text(server: Server, version: str, audio: bool,
                                                    link: bool) -> None:
    c = MemClient(server)
    c.initialize(version)
    (block,) = c.call_tool("audio")["content"]
    assert block["type"] == ("audio" if audio else "text")
    (block,) = c.call_tool("link")["content"]
    assert block == ({"type": "resource_link", "uri": "test://doc", "name": "doc", "title": "Doc",
                      "mimeType": "text/plain", "size": 3} if link
                     else {"type": "text", "text": "Doc: test://doc"})
    # the others pass unchanged
    assert c.call_tool("image")["content"][0]["type"] == "image"
    assert [b["type"] for b in c.call_tool("embedded")["content"]] == ["resource", "resource"]


def test_prompt_content_a_revision_lacks_becomes_text(server: Server) -> None:
    server.add_prompt(lambda: [Audio("UklGRg==", "audio/wav"), "listen"], name="audio_prompt", description="d")
    old, new = MemClient(server), MemClient(server)
    old.initialize("2024-11-05")
    new.initialize("2025-11-25")
    assert old.call("prompts/get", {"name": "audio_prompt"})["messages"][0]["content"]["type"] == "text"
    assert new.call("prompts/get", {"name": "audio_prompt"})["messages"][0]["content"] == \
        {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"}


def test_tool_call_without_arguments_key(client: MemClient) -> None:
    assert client.call_tool("text")["content"] == [{"type": "text", "text": "plain"}]


@pytest.mark.parametrize("name, args, structured, text", [
    ("point", {"x": 1}, {"x": 1, "y": 0}, '{"x": 1, "y": 0}'),
    ("reading", {}, {"sensor": "t1", "value": 20.5}, '{"sensor": "t1", "value": 20.5}'),
    ("count", {}, {"result": 5}, "5"),
])
def test_structured_output(client: MemClient, name: str, args: dict[str, Any],
                           structured: dict[str, Any], text: str) -> None:
    result = client.call_tool(name, args)
    assert result["structuredContent"] == structured
    assert result["content"] == [{"type": "text", "text": text}]
    assert "isError" not in result


def test_tool_result_full_control(client: MemClient) -> None:
    assert client.call_tool("full") == {"content": [{"type": "text", "text": "see structured"}],
                                        "structuredContent": {"k": "v"}, "_meta": {"com.example/m": 1}}
    assert client.call_tool("only_structured") == {"content": [{"type": "text", "text": '{"k": 1}'}],
                                                   "structuredContent": {"k": 1}}


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26"])
def test_tool_result_structured_for_old_revisions_keeps_the_text(server: Server, version: str) -> None:
    c = MemClient(server)
    c.initialize(version)
    result = c.call_tool("only_structured")
    assert "structuredContent" not in result
    assert result["content"] == [{"type": "text", "text": '{"k": 1}'}]


def test_tool_exception_is_an_error_result(client: MemClient) -> None:
    result = client.call_tool("fails")
    assert result["isError"] is True
    assert "the database said no" in result["content"][0]["text"]
    assert "Traceback" not in result["content"][0]["text"]


def test_tool_error_is_an_error_result(client: MemClient) -> None:
    assert client.call_tool("refuses") == {"content": [{"type": "text", "text": "not allowed today"}],
                                           "isError": True}


@pytest.mark.parametrize("args", [{"n": "seven"}, {}, {"n": 1, "mode": "c"}, {"n": True}])
def test_invalid_arguments_2025_11_25_is_error_result(client: MemClient, args: dict[str, Any]) -> None:
    result = client.call_tool("typed", args)
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("Invalid arguments for tool typed")


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18"])
def test_invalid_arguments_before_2025_11_25_is_invalid_params(server: Server, version: str) -> None:
    c = MemClient(server)
    c.initialize(version)
    assert c.error("tools/call", {"name": "typed", "arguments": {"n": "seven"}})["code"] == -32602
    assert c.error("tools/call", {"name": "typed", "arguments": [1]})["code"] == -32602
    assert c.call_tool("typed", {"n": 3, "mode": "b"})["content"][0]["text"] == "3b"


def test_arguments_not_an_object(client: MemClient) -> None:
    result = client.call("tools/call", {"name": "typed", "arguments": "n=1"})
    assert result["isError"] is True


def test_unknown_tool(client: MemClient) -> None:
    err = client.error("tools/call", {"name": "nope", "arguments": {}})
    assert err["code"] == -32602
    assert client.error("tools/call", {})["code"] == -32602


def test_extra_arguments_are_refused(client: MemClient) -> None:
    result = client.call_tool("typed", {"n": 2, "other": 1})
    assert result["isError"] is True
    assert "unexpected property 'other'" in result["content"][0]["text"]


# ---- progress -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["tok-1", 7, 0, "7"])
def test_progress_echoes_the_token_with_its_type(client: MemClient, token: Any) -> None:
    result = client.call_tool("progress", {}, meta={"progressToken": token})
    assert result["content"][0]["text"] == "ok"
    notes = client.notifications("notifications/progress")
    assert [n["progress"] for n in notes] == [1, 2.5, 3]
    for n in notes:
        assert n["progressToken"] == token and type(n["progressToken"]) is type(token)
        assert n["total"] == 3
    assert notes[0]["message"] == "one" and "message" not in notes[1]


def test_no_progress_without_a_token(client: MemClient) -> None:
    client.call_tool("progress", {})
    assert client.notifications("notifications/progress") == []


def test_progress_message_dropped_in_2024_11_05(server: Server) -> None:
    c = MemClient(server)
    c.initialize("2024-11-05")
    c.call_tool("progress", {}, meta={"progressToken": 1})
    assert all("message" not in n for n in c.notifications("notifications/progress"))


def test_no_progress_after_the_response(server: Server) -> None:
    saved: list[Context] = []

    @server.tool()
    def keeps_ctx(ctx: Context) -> str:
        """Leaks its context (as a tool that starts a background thread would)."""
        saved.append(ctx)
        ctx.report_progress(1)
        return "done"

    c = MemClient(server)
    c.initialize()
    c.call_tool("keeps_ctx", {}, meta={"progressToken": "t"})
    assert len(c.notifications("notifications/progress")) == 1
    assert saved[0].report_progress(2) is False
    assert len(c.notifications("notifications/progress")) == 1


# ---- logging --------------------------------------------------------------------------------------

def test_log_messages_filtered_by_level(client: MemClient) -> None:
    client.call_tool("logs")
    assert [m["level"] for m in client.notifications("notifications/message")] == \
        ["debug", "info", "warning", "error"]
    client.received.clear()
    assert client.call("logging/setLevel", {"level": "warning"}) == {}
    client.call_tool("logs")
    msgs = client.notifications("notifications/message")
    assert msgs == [{"level": "warning", "logger": "t", "data": {"level": "warning"}},
                    {"level": "error", "logger": "t", "data": {"level": "error"}}]
    client.received.clear()
    client.call("logging/setLevel", {"level": "emergency"})
    client.call_tool("logs")
    assert client.notifications("notifications/message") == []


def test_set_level_applies_to_running_calls(server: Server) -> None:
    go = threading.Event()

    @server.tool()
    def logs_later(ctx: Context) -> str:
        """Logs at debug once the test says so."""
        server.started.set()  # type: ignore[attr-defined]
        go.wait(WAIT_S)
        ctx.debug("late debug")
        return "ok"

    c = MemClient(server)
    c.initialize()
    call = CallThread(c, jsonrpc.request(1, "tools/call", {"name": "logs_later", "arguments": {}}))
    call.start()
    try:
        assert server.started.wait(WAIT_S)  # type: ignore[attr-defined]
        assert c.call("logging/setLevel", {"level": "error"}) == {}
    finally:
        go.set()
    assert call.finish()["result"]["content"][0]["text"] == "ok"
    assert c.notifications("notifications/message") == []


@pytest.mark.parametrize("level", ["verbose", "INFO", None, 3])
def test_invalid_log_level(client: MemClient, level: Any) -> None:
    assert client.error("logging/setLevel", {"level": level})["code"] == -32602


# ---- cancellation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rid", [41, "call-41"])
def test_cancelled_call_produces_no_response(server: Server, client: MemClient, rid: Any) -> None:
    call = CallThread(client, jsonrpc.request(rid, "tools/call", {"name": "slow", "arguments": {}}))
    call.start()
    assert server.started.wait(WAIT_S)  # type: ignore[attr-defined]
    assert client.conn.inflight_count() == 1
    client.notify("notifications/cancelled", {"requestId": rid, "reason": "user pressed stop"})
    assert call.finish() is None
    assert client.conn.inflight_count() == 0
    assert not any(m.get("id") == rid for m in client.received)
    assert client.call("ping") == {}


def test_cancel_with_the_wrong_id_type_is_ignored(server: Server, client: MemClient) -> None:
    call = CallThread(client, jsonrpc.request(42, "tools/call", {"name": "slow", "arguments": {}}))
    call.start()
    assert server.started.wait(WAIT_S)  # type: ignore[attr-defined]
    client.notify("notifications/cancelled", {"requestId": "42"})  # "42" is not 42
    assert client.conn._inflight[42].cancelled is False
    client.notify("notifications/cancelled", {"requestId": 42})
    assert call.finish() is None


def test_cancel_while_waiting_for_the_client(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    call = CallThread(c, jsonrpc.request(9, "tools/call", {"name": "sample", "arguments": {"prompt": "p"}}))
    call.start()
    req = c.wait_request("sampling/createMessage")
    c.notify("notifications/cancelled", {"requestId": 9})
    assert call.finish() is None
    # a late answer from the client is ignored
    c.respond(req["id"], {"role": "assistant", "content": {"type": "text", "text": "late"}, "model": "m"})
    assert not any(m.get("id") == 9 for m in c.received)


# ---- list_changed broadcasts ----------------------------------------------------------------------

def test_list_changed_reaches_initialized_sessions_only(server: Server) -> None:
    ready = MemClient(server)
    ready.initialize()
    pending = MemClient(server)
    pending.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "x", "version": "1"}})
    fresh = MemClient(server)

    server.add_tool(lambda: "new", name="new_tool", description="d")
    assert ready.notifications("notifications/tools/list_changed") == [{}]
    assert "new_tool" in [t["name"] for t in ready.call("tools/list")["tools"]]
    assert server.remove_tool("new_tool") is True
    assert server.remove_tool("new_tool") is False
    assert len(ready.notifications("notifications/tools/list_changed")) == 2
    assert "new_tool" not in [t["name"] for t in ready.call("tools/list")["tools"]]

    server.add_prompt(lambda: "p", name="new_prompt", description="d")
    server.add_resource(lambda: "r", "test://new", name="new")
    assert len(ready.notifications("notifications/prompts/list_changed")) == 1
    assert len(ready.notifications("notifications/resources/list_changed")) == 1
    for other in (pending, fresh):
        assert not any(m.get("method", "").endswith("list_changed") for m in other.received)


def test_closed_sessions_get_nothing(server: Server) -> None:
    c = MemClient(server)
    c.initialize()
    c.conn.close()
    server.add_tool(lambda: "x", name="after_close", description="d")
    assert c.notifications("notifications/tools/list_changed") == []


# ---- resources ------------------------------------------------------------------------------------

def test_resources_list_and_templates(client: MemClient) -> None:
    resources = client.call("resources/list")["resources"]
    assert {"uri": "test://text", "name": "text", "description": "Text.", "mimeType": "text/plain"} in resources
    assert all("uriTemplate" not in r for r in resources)
    templates = client.call("resources/templates/list")["resourceTemplates"]
    assert templates == [{"uriTemplate": "test://items/{item_id}/v/{n}", "name": "item",
                          "mimeType": "text/plain"}]


def test_resources_read(client: MemClient) -> None:
    assert client.call("resources/read", {"uri": "test://text"}) == {
        "contents": [{"uri": "test://text", "mimeType": "text/plain", "text": "hello text"}]}
    assert client.call("resources/read", {"uri": "test://blob"}) == {
        "contents": [{"uri": "test://blob", "mimeType": "image/png",
                      "blob": base64.b64encode(PNG).decode()}]}
    assert client.call("resources/read", {"uri": "test://json"}) == {
        "contents": [{"uri": "test://json", "mimeType": "application/json", "text": '{"a": 1}'}]}


def test_resources_read_template(client: MemClient) -> None:
    result = client.call("resources/read", {"uri": "test://items/abc/v/3"})
    assert result == {"contents": [{"uri": "test://items/abc/v/3", "mimeType": "text/plain",
                                    "text": "item abc #3 (int)"}]}
    # a variable that does not fit the parameter's type is refused, not passed on as text
    assert client.error("resources/read", {"uri": "test://items/abc/v/three"})["code"] == -32602


@pytest.mark.parametrize("uri", ["test://missing", "test://items/abc", "test://items//v/1", "other://text"])
def test_resources_read_unknown(client: MemClient, uri: str) -> None:
    err = client.error("resources/read", {"uri": uri})
    assert err["code"] == -32002
    assert err["data"] == {"uri": uri}


def test_resources_read_needs_a_uri(client: MemClient) -> None:
    assert client.error("resources/read", {})["code"] == -32602


def test_subscriptions_route_updates(server: Server) -> None:
    a, b = MemClient(server), MemClient(server)
    a.initialize()
    b.initialize()
    assert a.call("resources/subscribe", {"uri": "test://text"}) == {}
    assert server.notify_resource_updated("test://text") == 1
    assert a.notifications("notifications/resources/updated") == [{"uri": "test://text"}]
    assert b.notifications("notifications/resources/updated") == []
    assert server.notify_resource_updated("test://blob") == 0
    assert a.call("resources/unsubscribe", {"uri": "test://text"}) == {}
    assert server.notify_resource_updated("test://text") == 0
    assert len(a.notifications("notifications/resources/updated")) == 1
    assert a.call("resources/unsubscribe", {"uri": "test://never"}) == {}
    assert a.error("resources/subscribe", {"uri": 5})["code"] == -32602


# ---- prompts --------------------------------------------------------------------------------------

def test_prompts_list(client: MemClient) -> None:
    prompts = {p["name"]: p for p in client.call("prompts/list")["prompts"]}
    assert prompts["greet"] == {
        "name": "greet", "title": "Greet", "description": "A greeting prompt.",
        "arguments": [{"name": "name", "required": True, "description": "Who to greet"},
                      {"name": "style", "required": False}]}


def test_prompts_get(client: MemClient) -> None:
    result = client.call("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})
    assert result == {"description": "A greeting prompt.",
                      "messages": [{"role": "user", "content": {"type": "text",
                                                                "text": "Greet Ada in a warm way."}}]}
    result = client.call("prompts/get", {"name": "greet", "arguments": {"name": "Ada", "style": "witty"}})
    assert result["messages"][0]["content"]["text"] == "Greet Ada in a witty way."
    result = client.call("prompts/get", {"name": "conversation", "arguments": {"topic": "tea"}})
    assert result["messages"] == [
        {"role": "assistant", "content": {"type": "text", "text": "Let's talk about tea."}},
        {"role": "user", "content": {"type": "image", "data": base64.b64encode(PNG).decode(),
                                     "mimeType": "image/png"}},
        {"role": "user", "content": {"type": "text", "text": "Your turn."}}]


def test_prompts_get_errors(client: MemClient) -> None:
    assert client.error("prompts/get", {"name": "greet"})["code"] == -32602
    assert client.error("prompts/get", {"name": "greet", "arguments": {"style": "x"}})["code"] == -32602
    assert client.error("prompts/get", {"name": "nope"})["code"] == -32602
    assert client.error("prompts/get", {})["code"] == -32602


# ---- completion -----------------------------------------------------------------------------------

def test_completion(client: MemClient) -> None:
    result = client.call("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"},
                                                 "argument": {"name": "style", "value": "w"}})
    assert result == {"completion": {"values": ["warm", "witty"], "total": 2, "hasMore": False}}
    result = client.call("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"},
                                                 "argument": {"name": "name", "value": "A"}})
    assert result["completion"]["values"] == []


def test_completion_of_a_template_is_capped(client: MemClient) -> None:
    result = client.call("completion/complete", {
        "ref": {"type": "ref/resource", "uri": "test://items/{item_id}/v/{n}"},
        "argument": {"name": "item_id", "value": "x"}, "context": {"arguments": {"n": "1"}}})
    completion = result["completion"]
    assert len(completion["values"]) == 100
    assert completion["total"] == 150 and completion["hasMore"] is True


def test_completion_errors(client: MemClient) -> None:
    assert client.error("completion/complete", {"ref": {"type": "ref/prompt", "name": "nope"},
                                                "argument": {"name": "a", "value": ""}})["code"] == -32602
    assert client.error("completion/complete", {"ref": {"type": "ref/other"},
                                                "argument": {"name": "a", "value": ""}})["code"] == -32602
    assert client.error("completion/complete", {})["code"] == -32602


# ---- server -> client requests --------------------------------------------------------------------

SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "m", "stopReason": "endTurn"}


def test_sampling_with_a_synchronous_handler(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    seen: list[dict[str, Any]] = []
    c.handlers["sampling/createMessage"] = lambda p: (seen.append(p), SAMPLED)[1]
    assert c.call_tool("sample", {"prompt": "meaning?"})["content"][0]["text"] == "model said 42"
    assert seen == [{"messages": [{"role": "user", "content": {"type": "text", "text": "meaning?"}}],
                     "maxTokens": 10}]


def test_sampling_answered_from_another_thread(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    call = CallThread(c, jsonrpc.request(1, "tools/call", {"name": "sample", "arguments": {"prompt": "q"}}))
    call.start()
    req = c.wait_request("sampling/createMessage")
    assert type(req["id"]) in (int, str)
    c.respond(req["id"], SAMPLED)
    reply = call.finish()
    assert reply["result"]["content"][0]["text"] == "model said 42"


def test_outgoing_request_ids_are_unique(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    c.handlers["sampling/createMessage"] = lambda p: {**SAMPLED, "content": {"type": "text", "text": p["messages"][0]["content"]["text"]}}
    assert c.call_tool("sample_twice")["content"][0]["text"] == "ab"
    assert c.call_tool("sample_twice")["content"][0]["text"] == "ab"
    ids = [m["id"] for m in c.requests("sampling/createMessage")]
    assert len(ids) == 4 and len(set(ids)) == 4


def test_sampling_rejected_by_the_client(server: Server) -> None:
    from memclient import RpcError

    def reject(params: dict[str, Any]) -> dict[str, Any]:
        raise RpcError({"code": -1, "message": "User rejected sampling request"})
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    c.handlers["sampling/createMessage"] = reject
    result = c.call_tool("sample", {"prompt": "q"})
    assert result["isError"] is True
    assert "User rejected sampling request" in result["content"][0]["text"]


def test_sampling_timeout_cancels_the_request(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    result = c.call_tool("sample", {"prompt": "q", "timeout": 0.05})
    assert result["isError"] is True
    assert "did not answer" in result["content"][0]["text"]
    (req,) = c.requests("sampling/createMessage")
    cancels = c.notifications("notifications/cancelled")
    assert len(cancels) == 1 and cancels[0]["requestId"] == req["id"]
    # the late answer is dropped
    c.respond(req["id"], SAMPLED)


@pytest.mark.parametrize("tool, method, args", [
    ("sample", "sampling/createMessage", {"prompt": "q"}),
    ("elicit", "elicitation/create", {}),
    ("roots", "roots/list", {}),
])
def test_undeclared_client_capability(server: Server, tool: str, method: str, args: dict[str, Any]) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"experimental": {}})
    result = c.call_tool(tool, args)
    assert result["isError"] is True
    assert "capability" in result["content"][0]["text"]
    assert c.requests(method) == []


def test_elicitation_url_only_client_gets_no_form(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"elicitation": {"url": {}}})
    assert c.call_tool("elicit")["isError"] is True
    assert c.requests("elicitation/create") == []


@pytest.mark.parametrize("version, mode", [("2025-06-18", False), ("2025-11-25", True)])
def test_elicitation(server: Server, version: str, mode: bool) -> None:
    c = MemClient(server)
    c.initialize(version, capabilities={"elicitation": {}})
    c.handlers["elicitation/create"] = lambda p: {"action": "accept", "content": {"name": "Ada"}}
    assert c.call_tool("elicit")["content"][0]["text"] == "accept:Ada"
    (req,) = c.requests("elicitation/create")
    assert req["params"]["message"] == "Your name?"
    assert ("mode" in req["params"]) == mode
    c.handlers["elicitation/create"] = lambda p: {"action": "decline"}
    assert c.call_tool("elicit")["content"][0]["text"] == "decline:None"


def test_elicitation_timeout(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"elicitation": {}})
    result = c.call_tool("elicit", {"timeout": 0.05})
    assert result["isError"] is True
    (req,) = c.requests("elicitation/create")
    assert c.notifications("notifications/cancelled") == [{"requestId": req["id"], "reason": "timed out"}]


def test_roots(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"roots": {"listChanged": True}})
    c.handlers["roots/list"] = lambda p: {"roots": [{"uri": "file:///a"}, {"uri": "file:///b", "name": "b"}]}
    assert c.call_tool("roots")["content"][0]["text"] == "file:///a,file:///b"
    (req,) = c.requests("roots/list")
    assert "params" not in req


def test_roots_list_changed_callback(server: Server) -> None:
    seen: list[Any] = []
    server.on_roots_changed(seen.append)
    c = MemClient(server)
    c.initialize(capabilities={"roots": {"listChanged": True}})
    c.notify("notifications/roots/list_changed")
    assert seen == [c.conn]


def test_outgoing_request_after_close_fails(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    c.conn.close()
    with pytest.raises(McpError):
        c.conn.request_client("ping", None, timeout=1)


def test_close_fails_outstanding_requests(server: Server) -> None:
    c = MemClient(server)
    c.initialize(capabilities={"sampling": {}})
    call = CallThread(c, jsonrpc.request(1, "tools/call", {"name": "sample", "arguments": {"prompt": "q"}}))
    call.start()
    c.wait_request("sampling/createMessage")
    c.conn.close()
    assert call.finish() is None  # the call was cancelled by the close: no response


# ---- registry generations -------------------------------------------------------------------------

class RacyStore(RegistryStore):
    """Commits a registration right after the next reader took its registry generation: the
    interleaving of a ``tools/list`` on one thread with an ``add_tool`` on another."""

    race_once: Any = None

    @property  # type: ignore[override]
    def current(self) -> Any:
        current = self.__dict__["_reg"]
        race, self.race_once = self.race_once, None
        if race is not None:
            race()
        return current

    @current.setter
    def current(self, value: Any) -> None:
        self.__dict__["_reg"] = value


def racy_server(name: str) -> tuple[Server, RacyStore]:
    server = Server(name)
    store = server.store
    store.__dict__["_reg"] = store.__dict__.pop("current")
    store.__class__ = RacyStore
    assert isinstance(store, RacyStore)
    return server, store


@pytest.mark.parametrize("method, key, add", [
    ("tools/list", "tools", lambda s: s.add_tool(lambda: "x", name="late", description="d")),
    ("prompts/list", "prompts", lambda s: s.add_prompt(lambda: "x", name="late", description="d")),
    ("resources/list", "resources", lambda s: s.add_resource(lambda: "x", "test://late", name="late")),
])
def test_list_during_a_registration_never_caches_a_stale_generation(method: str, key: str, add: Any) -> None:
    server, store = racy_server("racy")
    c = MemClient(server)
    c.initialize()
    store.race_once = lambda: add(server)
    c.call(method)  # may or may not include the late entry: it raced
    names = [item["name"] for item in c.call(method)[key]]
    assert names == ["late"]
