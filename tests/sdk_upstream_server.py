"""A third-party upstream for the hub tests: a server built on the official MCP Python SDK
(PyPI ``mcp``, its high-level ``MCPServer`` API), served over Streamable HTTP by uvicorn.

``python tests/sdk_upstream_server.py PORT`` serves http://127.0.0.1:PORT/mcp until killed.
"""
from __future__ import annotations

import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("sdk-upstream", version="1.0.0")


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@server.tool()
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@server.tool()
async def count_up(steps: int, ctx: Context) -> str:
    """Report progress once per step, then finish."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
    return f"counted {steps}"


@server.resource("sdk://greeting", mime_type="text/plain")
def greeting() -> str:
    """A fixed greeting."""
    return "hello from the SDK"


@server.prompt()
def haiku(topic: str) -> str:
    """Ask for a haiku."""
    return f"Write a haiku about {topic}."


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
