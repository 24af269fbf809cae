"""The bundled example server answers the conformance suite's scenarios with the exact shapes
of /tmp/research/conformance.md §3 (in memory; the suite itself runs over HTTP)."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from mcpsync.examples.everything import JSON_SCHEMA_2020_12, RED_PIXEL_PNG, TINY_WAV, server

from memclient import MemClient

SAMPLING_ANSWER = {"role": "assistant", "model": "test-model", "stopReason": "endTurn",
                   "content": {"type": "text", "text": "This is a test response from the client"}}
ELICITATION_ANSWER = {"action": "accept",
                      "content": {"username": "testuser", "email": "test@example.com"}}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def user(content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": content}


def image_png() -> dict[str, Any]:
    return {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}


@pytest.fixture
def client() -> Iterator[MemClient]:
    """Connected like the suite's TS client: 2025-11-25, sampling and elicitation declared."""
    c = MemClient(server)
    c.handlers["sampling/createMessage"] = lambda p: SAMPLING_ANSWER
    c.handlers["elicitation/create"] = lambda p: ELICITATION_ANSWER
    c.initialize("2025-11-25", {"sampling": {}, "elicitation": {}})
    yield c
    c.conn.close()


def test_server_initialize() -> None:
    c = MemClient(server)
    result = c.initialize("2025-11-25", {"sampling": {}, "elicitation": {}})
    assert result["protocolVersion"] == "2025-11-25"
    assert result["capabilities"] == {
        "tools": {"listChanged": True}, "resources": {"subscribe": True, "listChanged": True},
        "prompts": {"listChanged": True}, "logging": {}, "completions": {}}
    assert result["serverInfo"]["name"] and result["serverInfo"]["version"]
    c.conn.close()


def test_ping_and_set_level_return_empty_objects(client: MemClient) -> None:
    assert client.raw({"jsonrpc": "2.0", "id": 1, "method": "ping"})["result"] == {}
    assert client.call("logging/setLevel", {"level": "info"}) == {}


def test_completion_complete(client: MemClient) -> None:
    result = client.call("completion/complete", {
        "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
        "argument": {"name": "arg1", "value": "test"}})
    completion = result["completion"]
    assert isinstance(completion["values"], list) and len(completion["values"]) <= 100
    assert all(isinstance(v, str) for v in completion["values"])
    assert type(completion["total"]) is int and type(completion["hasMore"]) is bool


def test_tools_list(client: MemClient) -> None:
    tools = client.raw({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})["result"]["tools"]
    names = {t["name"] for t in tools}
    assert {"test_simple_text", "test_image_content", "test_audio_content",
            "test_embedded_resource", "test_multiple_content_types", "test_tool_with_logging",
            "test_tool_with_progress", "test_error_handling", "test_reconnection",
            "test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults",
            "test_elicitation_sep1330_enums", "json_schema_2020_12_tool"} <= names
    for tool in tools:
        assert tool["name"] and tool["description"], tool
        assert tool["inputSchema"]["type"] == "object"


def test_json_schema_2020_12_tool_is_verbatim(client: MemClient) -> None:
    tools = {t["name"]: t for t in client.call("tools/list")["tools"]}
    tool = tools["json_schema_2020_12_tool"]
    assert tool["description"] == "Tool with JSON Schema 2020-12 features"
    assert tool["inputSchema"] == JSON_SCHEMA_2020_12
    assert list(tool["inputSchema"]) == list(JSON_SCHEMA_2020_12)
    assert tool["inputSchema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "address" in tool["inputSchema"]["$defs"]
    assert tool["inputSchema"]["additionalProperties"] is False
    result = client.call_tool("json_schema_2020_12_tool", {"name": "n", "email": "e@x"})
    assert result["content"][0]["text"] == \
        'JSON Schema 2020-12 tool called with: {"name": "n", "email": "e@x"}'


MIXED_JSON = '{"test": "data", "value": 123}'


@pytest.mark.parametrize("name, content", [
    ("test_simple_text", [text("This is a simple text response for testing.")]),
    ("test_image_content", [image_png()]),
    ("test_audio_content", [{"type": "audio", "data": TINY_WAV, "mimeType": "audio/wav"}]),
    ("test_embedded_resource", [{"type": "resource", "resource": {
        "uri": "test://embedded-resource", "mimeType": "text/plain",
        "text": "This is an embedded resource content."}}]),
    ("test_multiple_content_types", [
        text("Multiple content types test:"),
        image_png(),
        {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                                          "mimeType": "application/json", "text": MIXED_JSON}}]),
])
def test_content_tools(client: MemClient, name: str, content: list[dict[str, Any]]) -> None:
    # test_simple_text is sent with no "arguments" key, the others with {}
    args = None if name == "test_simple_text" else {}
    assert client.call_tool(name, args) == {"content": content}


def test_tool_with_logging(client: MemClient) -> None:
    client.call("logging/setLevel", {"level": "debug"})
    result = client.call_tool("test_tool_with_logging", {})
    assert result["content"][0]["text"] == "Tool with logging executed successfully"
    # MemClient records in arrival order: every log message came before the response
    assert client.notifications("notifications/message") == [
        {"level": "info", "logger": "everything", "data": "Tool execution started"},
        {"level": "info", "logger": "everything", "data": "Tool processing data"},
        {"level": "info", "logger": "everything", "data": "Tool execution completed"}]


def test_tool_with_progress(client: MemClient) -> None:
    result = client.call_tool("test_tool_with_progress", {}, meta={"progressToken": 1})
    assert result == {"content": [text("1")]}
    assert client.notifications("notifications/progress") == [
        {"progressToken": 1, "progress": p, "total": 100, "message": f"Completed step {p} of 100"}
        for p in (0, 50, 100)]


def test_tool_with_progress_without_token(client: MemClient) -> None:
    assert client.call_tool("test_tool_with_progress", {})["content"][0]["text"] == "0"
    assert client.notifications("notifications/progress") == []


def test_error_handling(client: MemClient) -> None:
    assert client.call_tool("test_error_handling", {}) == {
        "isError": True,
        "content": [text("This tool intentionally returns an error for testing")]}


def test_reconnection_without_a_stream_to_close(client: MemClient) -> None:
    result = client.call_tool("test_reconnection", {})
    assert result["content"][0]["text"].startswith("Reconnection test completed successfully.")


def test_sampling(client: MemClient) -> None:
    result = client.call_tool("test_sampling", {"prompt": "Test prompt for sampling"})
    assert result == {"content": [text("LLM response: This is a test response from the client")]}
    (req,) = client.requests("sampling/createMessage")
    assert req["params"] == {"messages": [user(text("Test prompt for sampling"))], "maxTokens": 100}


def test_sampling_error_is_a_tool_error() -> None:
    c = MemClient(server)
    c.initialize("2025-11-25", {})
    result = c.call_tool("test_sampling", {"prompt": "p"})
    assert result["isError"] is True and result["content"][0]["text"]
    assert c.requests("sampling/createMessage") == []


def test_elicitation(client: MemClient) -> None:
    result = client.call_tool("test_elicitation", {"message": "Please provide your information"})
    answer = result["content"][0]["text"]
    assert answer.startswith("User response: action=accept, content=")
    assert json.loads(answer.split("content=", 1)[1]) == ELICITATION_ANSWER["content"]
    (req,) = client.requests("elicitation/create")
    assert req["params"] == {
        "mode": "form", "message": "Please provide your information",
        "requestedSchema": {"type": "object", "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"}},
            "required": ["username", "email"]}}


def test_elicitation_sep1034_defaults(client: MemClient) -> None:
    client.handlers["elicitation/create"] = lambda p: {"action": "accept", "content": {
        "name": "Jane Smith", "age": 25, "score": 88, "status": "inactive", "verified": False}}
    result = client.call_tool("test_elicitation_sep1034_defaults", {})
    assert result["content"][0]["text"].startswith("Elicitation completed: action=accept, content=")
    (req,) = client.requests("elicitation/create")
    assert req["params"] == {
        "mode": "form", "message": "Please review and update the form fields with defaults",
        "requestedSchema": {"type": "object", "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {"type": "string", "description": "User status",
                       "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "description": "Verification status",
                         "default": True}},
            "required": []}}


def titled(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"const": c, "title": t} for c, t in pairs]


def test_elicitation_sep1330_enums(client: MemClient) -> None:
    client.handlers["elicitation/create"] = lambda p: {"action": "accept", "content": {
        "untitledSingle": "option1", "titledSingle": "value1", "legacyEnum": "opt1",
        "untitledMulti": ["option1", "option2"], "titledMulti": ["value1", "value2"]}}
    result = client.call_tool("test_elicitation_sep1330_enums", {})
    assert result["content"][0]["text"].startswith("Elicitation completed: action=accept")
    (req,) = client.requests("elicitation/create")
    options = ["option1", "option2", "option3"]
    assert req["params"] == {
        "mode": "form", "message": "Please select options from the enum fields",
        "requestedSchema": {"type": "object", "properties": {
            "untitledSingle": {"type": "string", "description": "Select one option",
                               "enum": options},
            "titledSingle": {"type": "string", "description": "Select one option with titles",
                             "oneOf": titled(("value1", "First Option"), ("value2", "Second Option"),
                                             ("value3", "Third Option"))},
            "legacyEnum": {"type": "string", "description": "Select one option (legacy)",
                           "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "description": "Select multiple options",
                              "minItems": 1, "maxItems": 3,
                              "items": {"type": "string", "enum": options}},
            "titledMulti": {"type": "array", "description": "Select multiple options with titles",
                            "minItems": 1, "maxItems": 3,
                            "items": {"anyOf": titled(("value1", "First Choice"),
                                                      ("value2", "Second Choice"),
                                                      ("value3", "Third Choice"))}}},
            "required": []}}


# ---- resources -----------------------------------------------------------------------------

def test_resources_list(client: MemClient) -> None:
    reply = client.raw({"jsonrpc": "2.0", "id": 1, "method": "resources/list"})
    resources = reply["result"]["resources"]
    by_uri = {r["uri"]: r for r in resources}
    assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= set(by_uri)
    for r in resources:
        assert r["uri"] and r["name"] and "{" not in r["uri"]
    assert by_uri["test://static-text"]["name"] == "static-text"
    templates = client.call("resources/templates/list")["resourceTemplates"]
    assert any(t["uriTemplate"] == "test://template/{id}/data" and t["name"] for t in templates)


@pytest.mark.parametrize("uri, mime_type, body", [
    ("test://static-text", "text/plain",
     {"text": "This is the content of the static text resource."}),
    ("test://static-binary", "image/png", {"blob": RED_PIXEL_PNG}),
    ("test://template/123/data", "application/json",
     {"text": '{"id": "123", "templateTest": true, "data": "Data for ID: 123"}'}),
    ("test://watched-resource", "text/plain", {"text": "Watched resource content"}),
])
def test_resources_read(client: MemClient, uri: str, mime_type: str,
                        body: dict[str, Any]) -> None:
    assert client.call("resources/read", {"uri": uri}) == {
        "contents": [{"uri": uri, "mimeType": mime_type, **body}]}


def test_resources_subscribe_and_unsubscribe(client: MemClient) -> None:
    watched = "test://watched-resource"
    assert client.call("resources/subscribe", {"uri": watched}) == {}
    other = MemClient(server)
    other.initialize()
    touched = other.call_tool("touch_watched_resource", {})
    assert touched["content"] == [text("notified 1 subscriber(s)")]
    assert client.notifications("notifications/resources/updated") == [{"uri": watched}]
    assert other.notifications("notifications/resources/updated") == []
    assert client.call("resources/unsubscribe", {"uri": watched}) == {}
    other.conn.close()


# ---- prompts -------------------------------------------------------------------------------

def test_prompts_list(client: MemClient) -> None:
    prompts = {p["name"]: p for p in client.call("prompts/list")["prompts"]}
    for p in prompts.values():
        assert p["name"] and p["description"]
    assert prompts["test_prompt_with_arguments"]["arguments"] == [
        {"name": "arg1", "description": "First test argument", "required": True},
        {"name": "arg2", "description": "Second test argument", "required": True}]
    assert {"test_simple_prompt", "test_prompt_with_embedded_resource",
            "test_prompt_with_image"} <= set(prompts)


@pytest.mark.parametrize("params, messages", [
    ({"name": "test_simple_prompt"},
     [user(text("This is a simple prompt for testing."))]),
    ({"name": "test_prompt_with_arguments",
      "arguments": {"arg1": "testValue1", "arg2": "testValue2"}},
     [user(text("Prompt with arguments: arg1='testValue1', arg2='testValue2'"))]),
    ({"name": "test_prompt_with_embedded_resource",
      "arguments": {"resourceUri": "test://example-resource"}},
     [user({"type": "resource", "resource": {
         "uri": "test://example-resource", "mimeType": "text/plain",
         "text": "Embedded resource content for testing."}}),
      user(text("Please process the embedded resource above."))]),
    ({"name": "test_prompt_with_image"},
     [user(image_png()), user(text("Please analyze the image above."))]),
])
def test_prompts_get(client: MemClient, params: dict[str, Any],
                     messages: list[dict[str, Any]]) -> None:
    assert client.call("prompts/get", params)["messages"] == messages
