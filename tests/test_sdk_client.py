"""The official MCP Python SDK client (PyPI ``mcp``) against ``python -m mcpsync --stdio``.

The SDK is asyncio-based; each test drives it with ``anyio.run`` from a plain sync test (our
server runs in a subprocess and has no asyncio). Every wait is bounded by pytest-timeout and
the SDK's own read timeout.
"""
from __future__ import annotations

import base64
import json
import pathlib
import sys
from typing import IO, Any, Awaitable, Callable

import pytest

mcp = pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")

import mcp_types as types  # noqa: E402  (installed with mcp)
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from mcpsync.examples.everything import RED_PIXEL_PNG  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
READ_TIMEOUT_S = 20.0
# The SDK warns that resources/subscribe and logging/setLevel are gone in 2026-07-28; they are
# current in the 2025-11-25 handshake era these tests speak.
SDK_DEPRECATION = "ignore::mcp.shared.exceptions.MCPDeprecationWarning"


def server_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "mcpsync", "--stdio"], cwd=str(REPO),
                                 env={"PYTHONPATH": str(REPO)})


@pytest.fixture
def errlog(tmp_path: pathlib.Path) -> Any:
    with open(tmp_path / "server-stderr.txt", "w+", encoding="utf-8") as f:
        yield f


def run_session(errlog: IO[str], body: Callable[[ClientSession], Awaitable[None]], **callbacks: Any) -> None:
    async def main() -> None:
        async with stdio_client(server_params(), errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=READ_TIMEOUT_S, **callbacks) as session:
                await body(session)
    anyio.run(main)


def test_tools(errlog: IO[str]) -> None:
    async def body(session: ClientSession) -> None:
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"
        assert init.server_info.name == "mcpsync-everything"
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"echo", "add", "test_simple_text"} <= set(tools)
        assert tools["add"].output_schema is not None

        r = await session.call_tool("echo", {"text": "hi"})
        assert not r.is_error
        assert r.content[0].type == "text" and r.content[0].text == "hi"

        r = await session.call_tool("add", {"a": 2, "b": 3.5})
        assert not r.is_error
        assert r.structured_content == {"sum": 5.5}
        assert json.loads(r.content[0].text) == {"sum": 5.5}

        r = await session.call_tool("test_error_handling", {})
        assert r.is_error
        assert r.content[0].text == "This tool intentionally returns an error for testing"

        r = await session.call_tool("test_image_content", {})
        assert r.content[0].type == "image" and r.content[0].data == RED_PIXEL_PNG
    run_session(errlog, body)


@pytest.mark.filterwarnings(SDK_DEPRECATION)
def test_resources(errlog: IO[str]) -> None:
    async def body(session: ClientSession) -> None:
        await session.initialize()
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        assert {"test://static-text", "test://static-binary"} <= uris
        templates = (await session.list_resource_templates()).resource_templates
        assert any(t.uri_template == "test://template/{id}/data" for t in templates)

        r = await session.read_resource("test://static-text")
        assert r.contents[0].text == "This is the content of the static text resource."
        assert r.contents[0].mime_type == "text/plain"

        r = await session.read_resource("test://static-binary")
        assert base64.b64decode(r.contents[0].blob) == base64.b64decode(RED_PIXEL_PNG)
        assert r.contents[0].mime_type == "image/png"

        r = await session.read_resource("test://template/42/data")
        assert json.loads(r.contents[0].text) == {"id": "42", "templateTest": True, "data": "Data for ID: 42"}

        await session.subscribe_resource("test://watched-resource")
        await session.unsubscribe_resource("test://watched-resource")
    run_session(errlog, body)


def test_prompts_and_completion(errlog: IO[str]) -> None:
    async def body(session: ClientSession) -> None:
        await session.initialize()
        prompts = {p.name: p for p in (await session.list_prompts()).prompts}
        assert [a.name for a in prompts["test_prompt_with_arguments"].arguments or []] == ["arg1", "arg2"]

        r = await session.get_prompt("test_prompt_with_arguments", {"arg1": "testValue1", "arg2": "testValue2"})
        assert r.messages[0].role == "user"
        assert r.messages[0].content.text == "Prompt with arguments: arg1='testValue1', arg2='testValue2'"

        r = await session.get_prompt("test_prompt_with_image")
        assert r.messages[0].content.type == "image"

        c = await session.complete(types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments"),
                                   {"name": "arg1", "value": "pa"})
        assert c.completion.values == ["paris", "park", "party"]
    run_session(errlog, body)


def test_sampling_callback(errlog: IO[str]) -> None:
    seen: list[Any] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(role="assistant", model="test-model", stop_reason="endTurn",
                                         content=types.TextContent(type="text", text="sampled!"))

    async def body(session: ClientSession) -> None:
        await session.initialize()
        r = await session.call_tool("test_sampling", {"prompt": "Test prompt for sampling"})
        assert not r.is_error
        assert r.content[0].text == "LLM response: sampled!"
    run_session(errlog, body, sampling_callback=sampling)
    (params,) = seen
    assert params.max_tokens == 100
    assert params.messages[0].content.text == "Test prompt for sampling"


def test_elicitation_callback(errlog: IO[str]) -> None:
    seen: list[Any] = []

    async def elicitation(context: Any, params: Any) -> types.ElicitResult:
        seen.append(params)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async def body(session: ClientSession) -> None:
        await session.initialize()
        r = await session.call_tool("test_elicitation", {"message": "Who are you?"})
        assert not r.is_error
        text = r.content[0].text
        assert text.startswith("User response: action=accept, content=")
        assert json.loads(text.split("content=", 1)[1]) == {"username": "ada", "email": "ada@example.com"}
    run_session(errlog, body, elicitation_callback=elicitation)
    (params,) = seen
    assert params.message == "Who are you?"


@pytest.mark.filterwarnings(SDK_DEPRECATION)
def test_logging_callback(errlog: IO[str]) -> None:
    logged: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params)

    async def body(session: ClientSession) -> None:
        await session.initialize()
        await session.set_logging_level("debug")
        r = await session.call_tool("test_tool_with_logging", {})
        assert r.content[0].text == "Tool with logging executed successfully"
    run_session(errlog, body, logging_callback=on_log)
    assert [(m.level, m.data) for m in logged] == [("info", "Tool execution started"),
                                                   ("info", "Tool processing data"),
                                                   ("info", "Tool execution completed")]


def test_progress(errlog: IO[str]) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def body(session: ClientSession) -> None:
        await session.initialize()
        r = await session.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert not r.is_error
    run_session(errlog, body)
    assert [p[0] for p in progress] == [0, 50, 100]


def test_high_level_client_auto_mode_connects() -> None:
    """``mcp.Client`` (mode="auto") probes ``server/discover`` first. The server answers at once,
    either with the stateless revision or an error that makes the client fall back to initialize
    (silence would cost it a 10 s timeout; pytest-timeout guards)."""
    async def main() -> None:
        async with mcp.Client(server_params(), read_timeout_seconds=READ_TIMEOUT_S) as client:
            assert client.session.protocol_version in ("2025-11-25", "2026-07-28")
            r = await client.call_tool("echo", {"text": "auto"})
            assert r.content[0].text == "auto"
    anyio.run(main)


def test_high_level_client_legacy_mode() -> None:
    async def main() -> None:
        async with mcp.Client(server_params(), mode="legacy", read_timeout_seconds=READ_TIMEOUT_S) as client:
            assert client.session.protocol_version == "2025-11-25"
            r = await client.call_tool("add", {"a": 1, "b": 2})
            assert r.structured_content == {"sum": 3}
    anyio.run(main)
