"""Issue 13's findings as regressions, over real sockets against `python -m mcpsync` or the WSGI
app on mcpsync's front end: auth on every route, client errors answered as client errors,
request framing, Origin ports. Limits and admission live in test_admission.py."""
from __future__ import annotations

import json
import threading
import socket
import time
from typing import Any, Iterator

import pytest
from cliserver import CliServer, mcpsync_cli
from httpclient import HttpMcp
from httpserver import serving
from rpcutil import call_tool, rpc
from test_websocket import RawWs, raw_initialize, upgrade_head

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.examples.everything import server as everything
from mcpsync.http.app import HttpApp

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


# ---- finding 5: client errors are client errors (no 500, no traceback) ----------------------

@pytest.fixture()
def app_port(caplog: pytest.LogCaptureFixture) -> Iterator[int]:
    """The example server on the front end in this process; no record may carry a
    traceback or be an ERROR (client mistakes are warnings at most)."""
    app = Service(everything)
    with serving(HttpApp(app)) as base:
        yield int(base.rsplit(":", 1)[1])
    app.close()
    bad = [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    assert not bad, [r.getMessage() for r in bad]


def init_body(rid: Any = 1) -> bytes:
    return json.dumps(rpc(rid, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}})).encode()


@pytest.mark.parametrize("size", [b"zz", b"-1", b"0000000000000002", b"0x2", b"", b"2 2"])
def test_bad_chunk_sizes_are_400(app_port: int, size: bytes) -> None:
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{app_port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    reply = exchange(app_port, head + size + b"\r\nab\r\n0\r\n\r\n")
    assert status_of(reply) == 400, reply[:300]


def test_a_body_cut_short_is_400_not_500(app_port: int) -> None:
    body = init_body()
    head = json_post(app_port, b"", "").replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    reply = exchange(app_port, head + body[:10])  # half-close after 10 of the bytes
    assert reply == b"" or status_of(reply) == 400, reply[:300]


def test_a_lone_surrogate_id_is_a_parse_error_over_http(app_port: int) -> None:
    body = b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}'
    reply = exchange(app_port, json_post(app_port, body))
    assert status_of(reply) == 400
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == -32700
    # A proper surrogate pair (one emoji) is fine.
    ok = exchange(app_port, json_post(app_port, init_body("\\ud83d\\ude00").replace(b"\\\\", b"\\")))
    assert status_of(ok) == 200 and json.loads(ok.split(b"\r\n\r\n", 1)[1])["id"] == "\U0001F600"


def test_a_lone_surrogate_over_websocket_is_an_error_and_the_connection_lives(app_port: int) -> None:
    c = RawWs(app_port)
    try:
        raw_initialize(c)
        c.send_frame(0x1, b'{"jsonrpc":"2.0","id":"\\udfff","method":"ping"}')
        assert c.message()["error"]["code"] == -32700
        c.send_json(rpc(2, "ping"))
        assert c.message() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    finally:
        c.close()


def test_numbers_beyond_the_float_range_and_non_finite_results(app_port: int) -> None:
    with HttpMcp(f"http://127.0.0.1:{app_port}/mcp") as c:
        c.initialize()
        body = json.dumps(call_tool(5, "add", a=1, b=2)).replace('"a": 1', '"a": 1e999').encode()
        reply = c.post(None, raw=body)
        assert reply.status == 400 and reply.json()["error"]["code"] == -32700
        assert "out of range" in reply.json()["error"]["message"]
        result = c.call("tools/call", {"name": "add", "arguments": {"a": 1e308, "b": 1e308}})
        assert result["isError"] is True
        assert "cannot represent" in result["content"][0]["text"]


# ---- finding 9: request framing and the smaller ones ---------------------------------------

def test_an_idle_keep_alive_connection_closed_by_the_peer_gets_no_400(app_port: int) -> None:
    with socket.create_connection(("127.0.0.1", app_port), timeout=WAIT_S) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{app_port}\r\n\r\n".encode())
        reply = b""
        while b'"ok"}' not in reply:
            piece = s.recv(65536)
            assert piece, reply
            reply += piece
        s.shutdown(socket.SHUT_WR)  # done: the peer closes between requests
        rest = s.recv(65536)
    assert status_of(reply) == 200 and rest == b""


def test_http11_without_host_and_control_bytes_in_values_are_400(app_port: int) -> None:
    assert status_of(exchange(app_port, b"GET /healthz HTTP/1.1\r\n\r\n")) == 400
    for value in (b"a\x00b", b"a\x01b", b"a\x7fb"):
        reply = exchange(app_port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{app_port}\r\n"
                                   .encode() + b"X-Test: " + value + b"\r\n\r\n")
        assert status_of(reply) == 400, value
    tab = exchange(app_port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{app_port}\r\n"
                             "X-Test: a\tb\r\nConnection: close\r\n\r\n".encode())
    assert status_of(tab) == 200
    assert status_of(exchange(app_port, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200  # 1.0: optional


def test_a_body_over_the_limit_is_413_for_a_client_that_is_still_sending(app_port: int) -> None:
    import http.client
    body = b"[" + b"1," * (5 * 1024 * 1024 // 2) + b"1]"  # 5 MiB, over the 4 MiB limit
    conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=WAIT_S)
    try:
        conn.request("POST", "/mcp", body=body, headers={"Content-Type": "application/json",
                                                          "Accept": "application/json"})
        response = conn.getresponse()  # the whole body went out first: no reset
        assert response.status == 413
        assert b"limit" in response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("depth,ok", [(64, True), (65, False), (4_000_000, False)])
def test_nesting_depth_limit(app_port: int, depth: int, ok: bool) -> None:
    inner = depth - 2  # inside the message object and its params
    nested = "[" * inner + "]" * inner if depth < 1000 else "[" * depth
    body = ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + nested + "}}").encode()
    reply = exchange(app_port, json_post(app_port, body, "Mcp-Session-Id: none\r\n"))
    error = json.loads(reply.split(b"\r\n\r\n", 1)[1]).get("error", {})
    if ok:
        assert error.get("code") != -32700  # parsed (then refused for its session: fine)
    else:
        assert status_of(reply) == 400 and error["code"] == -32700
        assert "nested deeper" in error["message"]


# ---- finding 6: one client cannot take every session --------------------------------------

def initialize_as(port: int, token: str | None) -> tuple[int, str | None]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/mcp", body=init_body(), headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Mcp-Session-Id")
    finally:
        conn.close()


def test_one_token_holder_cannot_lock_others_out() -> None:
    with mcpsync_cli("--auth-tokens", TOKENS, "--max-sessions", "20",
                     "--max-sessions-per-client", "8") as srv:
        alice = [initialize_as(srv.port, "tok-alice") for _ in range(40)]
        assert all(status == 200 for status, _ in alice)  # her own idle sessions made room
        bob = [initialize_as(srv.port, "tok-bob") for _ in range(8)]
        assert all(status == 200 for status, _ in bob)
        # alice's earliest sessions were closed oldest-first; her latest 8 are alive
        with HttpMcp(srv.url) as c:
            c.conn.close()
            for (_, sid), alive in ((alice[0], False), (alice[-1], True)):
                reply = c.post(rpc(1, "ping"), {"Authorization": "Bearer tok-alice",
                                                "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
                assert reply.status == (200 if alive else 404), reply.status


def test_a_client_whose_sessions_are_all_in_use_gets_429() -> None:
    import http.client
    quota = 5
    app = Service(everything, max_sessions_per_client=quota)
    streams = []
    with serving(HttpApp(app)) as base:
        port = int(base.rsplit(":", 1)[1])
        try:
            for _ in range(quota):  # legacy SSE streams hold their sessions in use
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
                conn.request("GET", "/sse", headers={"Accept": "text/event-stream"})
                assert conn.getresponse().status == 200
                streams.append(conn)
            status, _ = initialize_as(port, None)
            assert status == 429
            ws = exchange(port, upgrade_head(port).encode())
            assert status_of(ws) == 429 and b"Retry-After: 5" in ws
        finally:
            for conn in streams:
                conn.close()
    app.close()


# ---- finding 9: an Origin on another port is another site ---------------------------------

def test_origin_must_name_this_servers_port() -> None:
    app = Service(everything)
    with serving(HttpApp(app, allowed_origins=["http://localhost:6274", "trusted.example"])) as base:
        port = int(base.rsplit(":", 1)[1])

        def status(origin: str, host: str = f"127.0.0.1:{port}") -> int:
            head = json_post(port, init_body()).replace(f"Host: 127.0.0.1:{port}".encode(),
                                                         f"Host: {host}\r\nOrigin: {origin}".encode())
            return status_of(exchange(port, head))

        assert status(f"http://localhost:{port}") == 200
        assert status(f"http://127.0.0.1:{port}") == 200
        assert status("http://localhost:9999") == 403   # another local web app
        assert status("http://localhost") == 403        # port 80 is not ours either
        assert status(f"http://evil.example:{port}") == 403
        assert status("null") == 403
        assert status("http://localhost:6274") == 200   # listed: port-exact
        assert status("http://localhost:6275") == 403
        assert status("https://trusted.example:1234") == 200  # a bare name: any port
        ws = upgrade_head(port, "Origin: http://localhost:9999\r\n")
        assert status_of(exchange(port, ws.encode())) == 403
    app.close()


# ---- finding 10: a cancellation callback that writes to its own stream ---------------------

def test_an_on_cancel_callback_that_logs_does_not_deadlock_a_stateless_stream() -> None:
    srv = Server("cancel-log")
    finished = threading.Event()
    called = threading.Event()

    @srv.tool()
    def streamer(ctx: Context) -> str:
        """Reports progress until the client goes away; logs from its cancel callback."""
        def on_cancel() -> None:
            called.set()
            ctx.info("cancelled: cleaning up")  # writes to the request's own stream
        ctx.on_cancel(on_cancel)
        try:
            for i in range(10_000):
                if ctx.wait_cancelled(0.005):
                    return "stopped"
                ctx.info(f"step {i}")
            return "done"
        finally:
            finished.set()

    app = Service(srv)
    with serving(HttpApp(app)) as base:
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps(call_tool(1, "streamer") | {"params": {"name": "streamer", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/logLevel": "info"}}}).encode()
        head = json_post(port, body, "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
                                     "Mcp-Name: streamer\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
            s.sendall(head.replace(b"Connection: close\r\n", b""))
            assert b"step 0" in s.recv(65536)  # streaming; now the client goes away
        assert finished.wait(WAIT_S), "the request thread is stuck"
        assert called.is_set()
    app.close()
