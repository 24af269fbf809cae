"""Issue 13's findings as regressions, over real sockets against `python -m mcpsync` or the WSGI
app on mcpsync's front end: auth on every route, client errors answered as client errors,
request framing, Origin ports. Limits and admission live in test_admission.py."""
from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterator

import pytest
from cliserver import CliServer, mcpsync_cli
from httpclient import HttpMcp
from httpserver import serving
from rpcutil import call_tool, rpc
from test_websocket import RawWs, raw_initialize, upgrade_head

from mcpsync.app import McpApp
from mcpsync.examples.everything import server as everything
from mcpsync.transports.wsgi import McpWsgiApp

WAIT_S = 10.0
TOKENS = "tok-alice:alice,tok-bob:bob"


def exchange(port: int, data: bytes, *, timeout: float = WAIT_S) -> bytes:
    """Send ``data`` on a fresh connection, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                chunks.append(b"<reset>")
                break
            if not piece:
                break
            chunks.append(piece)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply[9:12])


def json_post(port: int, body: bytes, extra: str = "") -> bytes:
    return (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body


@pytest.fixture(scope="module")
def guarded_cli() -> Iterator[CliServer]:
    with mcpsync_cli("--auth-tokens", TOKENS, "--metrics-auth") as srv:
        yield srv


# ---- finding 1: auth on every route that reaches the server, whatever the method -------------

@pytest.mark.parametrize("method", ["OPTIONS", "POST", "PUT", "GET"])
def test_websocket_upgrade_without_a_token_is_401_whatever_the_method(
        guarded_cli: CliServer, method: str) -> None:
    head = upgrade_head(guarded_cli.port).replace("GET /ws", f"{method} /ws", 1)
    reply = exchange(guarded_cli.port, head.encode())
    assert status_of(reply) == 401, reply[:300]
    assert b"WWW-Authenticate: Bearer" in reply


@pytest.mark.parametrize("method", ["OPTIONS", "POST", "PUT"])
def test_websocket_upgrade_that_is_not_a_get_is_405_even_with_a_token(
        guarded_cli: CliServer, method: str) -> None:
    head = upgrade_head(guarded_cli.port, "Authorization: Bearer tok-alice\r\n")
    reply = exchange(guarded_cli.port, head.replace("GET /ws", f"{method} /ws", 1).encode())
    assert status_of(reply) == 405, reply[:300]
    assert b"Allow: GET" in reply


def test_a_cors_preflight_needs_no_token_and_reaches_no_tool(guarded_cli: CliServer) -> None:
    port = guarded_cli.port
    reply = exchange(port, (f"OPTIONS /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            f"Origin: http://127.0.0.1:{port}\r\n"
                            "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n").encode())
    assert status_of(reply) == 204
    plain = exchange(port, f"OPTIONS /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Connection: close\r\n\r\n".encode())
    assert status_of(plain) == 401  # not a preflight: the same rule as every other method


@pytest.mark.parametrize("path,method", [("/mcp", "POST"), ("/mcp", "GET"), ("/mcp", "DELETE"),
                                         ("/sse", "GET"), ("/messages", "POST"),
                                         ("/metrics", "GET")])
def test_every_protected_route_is_401_without_a_token(guarded_cli: CliServer, path: str,
                                                      method: str) -> None:
    port = guarded_cli.port
    reply = exchange(port, (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Content-Length: 0\r\nConnection: close\r\n\r\n").encode())
    assert status_of(reply) == 401, reply[:300]


def test_metrics_with_a_token_and_healthz_without(guarded_cli: CliServer) -> None:
    port = guarded_cli.port
    reply = exchange(port, (f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Authorization: Bearer tok-bob\r\nConnection: close\r\n\r\n").encode())
    assert status_of(reply) == 200 and b"mcpsync_sessions" in reply
    reply = exchange(port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Connection: close\r\n\r\n".encode())
    assert status_of(reply) == 200
