"""The official MCP Python SDK client (PyPI ``mcp``) against ``python -m mcpsync`` over
Streamable HTTP: the handshake era with ``ClientSession`` (tools, resources, prompts,
progress, logging, sampling and elicitation callbacks), and ``mcp.Client`` in its default
auto mode, which must end up in the stateless 2026-07-28 era — and in forced legacy mode,
which must still work.

The SDK is asyncio-based; each test drives it with ``anyio.run`` from a plain sync test.
Our server is a subprocess with no asyncio at all.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from cliserver import mcpsync_cli

mcp = pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")

import mcp_types as types  # noqa: E402
from mcp import Client, ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

READ_TIMEOUT_S = 20.0
SDK_DEPRECATION = "ignore::mcp.shared.exceptions.MCPDeprecationWarning"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with mcpsync_cli() as srv:
        yield srv.url


async def _sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    text = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(role="assistant", model="test-model", stop_reason="endTurn",
                                     content=types.TextContent(type="text", text=f"echo: {text}"))


async def _elicitation(ctx: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})


@pytest.mark.filterwarnings(SDK_DEPRECATION)
def test_handshake_session_over_http(url: str) -> None:
    logs: list[Any] = []
    progress: list[float] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> None:
        async with streamable_http_client(url) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=READ_TIMEOUT_S,
                                     sampling_callback=_sampling, elicitation_callback=_elicitation,
                                     logging_callback=on_log) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"
                names = {t.name for t in (await session.list_tools()).tools}
                assert {"echo", "add", "test_sampling"} <= names
                r = await session.call_tool("echo", {"text": "over http"})
                assert r.content[0].text == "over http"
                r = await session.call_tool("add", {"a": 1, "b": 2})
                assert r.structured_content == {"sum": 3}
                text = await session.read_resource("test://static-text")
                assert text.contents[0].text == "This is the content of the static text resource."
                tpl = await session.read_resource("test://template/42/data")
                assert '"id": "42"' in tpl.contents[0].text
                prompt = await session.get_prompt("test_prompt_with_arguments", {"arg1": "x", "arg2": "y"})
                assert "arg1='x'" in prompt.messages[0].content.text
                await session.set_logging_level("debug")
                r = await session.call_tool("test_tool_with_logging", {})
                assert not r.is_error
                r = await session.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
                assert not r.is_error
                r = await session.call_tool("test_sampling", {"prompt": "hello"})
                assert r.content[0].text == "LLM response: echo: hello"
                r = await session.call_tool("test_elicitation", {"message": "who are you?"})
                assert "ada@example.com" in r.content[0].text
    anyio.run(main)
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    assert progress == [0, 50, 100]


def test_auto_mode_negotiates_the_stateless_era(url: str) -> None:
    async def main() -> None:
        async with Client(url, sampling_callback=_sampling, elicitation_callback=_elicitation) as c:
            assert c.session.protocol_version == "2026-07-28"  # the modern era, not the fallback
            names = {t.name for t in (await c.list_tools()).tools}
            assert "echo" in names
            r = await c.call_tool("echo", {"text": "modern"})
            assert r.content[0].text == "modern"
            # elicitation and sampling travel as multi round-trip requests (input_required)
            r = await c.call_tool("test_elicitation", {"message": "who?"})
            assert "ada@example.com" in r.content[0].text
            r = await c.call_tool("test_sampling", {"prompt": "hi"})
            assert r.content[0].text == "LLM response: echo: hi"
            res = await c.read_resource("test://static-text")
            assert res.contents[0].text.startswith("This is the content")
            prompt = await c.get_prompt("test_simple_prompt")
            assert prompt.messages[0].content.text == "This is a simple prompt for testing."
            async with c.listen(tools_list_changed=True) as sub:
                assert sub.honored.tools_list_changed
    anyio.run(main)


@pytest.mark.filterwarnings(SDK_DEPRECATION)
def test_forced_legacy_mode_still_works(url: str) -> None:
    async def main() -> None:
        async with Client(url, mode="legacy") as c:
            assert c.session.protocol_version == "2025-11-25"
            r = await c.call_tool("echo", {"text": "legacy"})
            assert r.content[0].text == "legacy"
    anyio.run(main)
