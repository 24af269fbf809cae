#!/usr/bin/env python3
"""The benchmark's echo server on the official MCP Python SDK (PyPI ``mcp``): its high-level
``MCPServer`` API over Streamable HTTP, served by uvicorn as ``MCPServer.run`` would.

    python scripts/bench_servers/python_sdk_server.py [--port 0] [--json-response]
        [--session-ttl S] [--max-sessions N]

Prints ``READY http://127.0.0.1:PORT/mcp`` on stdout once the socket listens, then serves
until SIGTERM/SIGINT. Stateful sessions (one per ``initialize``), as with mcpsync. Default:
SSE responses, as the SDK defaults; ``--json-response`` is its ``json_response=True``, its
fastest stateful mode.

The tools match mcpsync's example server: ``echo`` is ``async def`` (the cheapest way the SDK
can run it: no worker-thread hop); ``sleep_ms`` is a plain ``def`` that blocks, which the SDK
runs on anyio's worker threads (40 at once by default) -- the limit the blocking-tool
scenario shows; ``add`` adds.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time

import uvicorn
from mcp.server.mcpserver import MCPServer

HOST = "127.0.0.1"

server = MCPServer("python-sdk-bench", version="1.0.0", log_level="WARNING")


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def sleep_ms(ms: int) -> str:
    """Block the worker thread for ms milliseconds."""
    time.sleep(max(0, min(ms, 60_000)) / 1000)
    return f"slept {ms} ms"


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--stateless", action="store_true", help="stateless_http=True (no sessions)")
    parser.add_argument("--session-ttl", type=float, default=1800.0, help="idle session timeout, s")
    parser.add_argument("--max-sessions", type=int, default=10_000)
    args = parser.parse_args(argv)
    app = server.streamable_http_app(json_response=args.json_response, host=HOST,
                                     stateless_http=args.stateless,
                                     session_idle_timeout=args.session_ttl,
                                     max_sessions=args.max_sessions)
    # proto=IPPROTO_TCP as getaddrinfo would give: asyncio sets TCP_NODELAY on accepted
    # sockets only when their proto says TCP (with proto 0, every reply waits for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    sock.listen(1024)
    print(f"READY http://{HOST}:{sock.getsockname()[1]}/mcp", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=1024)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
