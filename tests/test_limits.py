"""Limits, health and metrics endpoints, and graceful shutdown, over real HTTP."""
from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cliserver import mcpsync_cli
from httpclient import HttpMcp
from httpserver import serving
from rpcutil import rpc

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.http.app import HttpApp

WAIT_S = 10.0


def blocking_server() -> tuple[Server, threading.Event, threading.Semaphore]:
    srv = Server("limits")
    release = threading.Event()
    entered = threading.Semaphore(0)

    @srv.tool()
    def hold(ctx: Context) -> str:
        """Blocks until the test releases it."""
        entered.release()
        release.wait(WAIT_S)
        return "done"

    @srv.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    return srv, release, entered


def test_body_too_large_is_413() -> None:
    srv, release, _ = blocking_server()
    with serving(HttpApp(Service(srv), max_body_bytes=1000)) as base, HttpMcp(f"{base}/mcp") as c:
        reply = c.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"pad": "x" * 2000}},
                       session=False)
        assert reply.status == 413


def test_inflight_limits_answer_503_with_retry_after() -> None:
    srv, release, entered = blocking_server()
    app = HttpApp(Service(srv), max_inflight_per_session=2, max_inflight=3)
    with serving(app) as base:
        with HttpMcp(f"{base}/mcp") as c, HttpMcp(f"{base}/mcp") as other:
            c.initialize()
            other.initialize()
            sid, version = c.session_id, c.version

            def hold(i: int) -> int:
                with HttpMcp(f"{base}/mcp") as k:
                    k.session_id, k.version = sid, version
                    return k.post({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                                   "params": {"name": "hold"}}).status

            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(hold, i) for i in range(2)]
                for _ in range(2):
                    assert entered.acquire(timeout=WAIT_S)
                busy = c.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
                assert busy.status == 503 and busy.headers["retry-after"] == "1"
                assert other.call("ping") == {}  # another session still has room (3 total)
                release.set()
                assert [f.result(WAIT_S) for f in futures] == [200, 200]
            assert c.call("ping") == {}  # the counters came back down
    assert app.admission.inflight == 0


def test_session_limit_evicts_the_oldest_idle_session_then_answers_503() -> None:
    srv, release, entered = blocking_server()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    with serving(HttpApp(Service(srv, max_sessions=2))) as base:
        clients = [HttpMcp(f"{base}/mcp") for _ in range(4)]
        try:
            clients[0].initialize()
            clients[1].initialize()
            clients[2].initialize()  # full: the least recently used idle session (0) makes room
            assert clients[0].post({"jsonrpc": "2.0", "id": 2, "method": "ping"}).status == 404
            assert clients[1].call("ping") == {}  # 1 is now more recent than 2
            with ThreadPoolExecutor(2) as pool:  # both sessions busy: nothing to evict
                busy = [pool.submit(c.call, "tools/call", {"name": "hold"}) for c in clients[1:3]]
                for _ in range(2):
                    assert entered.acquire(timeout=WAIT_S)
                reply = clients[3].post(init, session=False)
                assert reply.status == 503 and reply.headers["retry-after"] == "5"
                release.set()
                for f in busy:
                    f.result(WAIT_S)
            assert clients[1].call("ping") == {}  # 2 is now the least recently used
            clients[3].initialize()  # idle again: room
            assert clients[2].post({"jsonrpc": "2.0", "id": 3, "method": "ping"}).status == 404
        finally:
            for c in clients:
                c.close()


def test_health_ready_and_metrics() -> None:
    srv, _, _ = blocking_server()
    app = HttpApp(Service(srv))
    with serving(app) as base:
        with HttpMcp(f"{base}/mcp") as c:
            c.initialize()
            c.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})
        with HttpMcp(f"{base}/healthz") as h:
            assert h.request("GET", session=False).json() == {"status": "ok"}
        with HttpMcp(f"{base}/metrics") as m:
            text = m.request("GET", session=False).body.decode()
        assert 'mcpsync_requests_total{method="tools/call",outcome="ok",transport="http"} 1' in text
        assert 'mcpsync_request_duration_seconds_count{method="tools/call",transport="http"} 1' in text
        assert "mcpsync_sessions 1" in text
        assert 'mcpsync_mutex{mutex="registry",stat="queue_depth"} 0' in text
        assert 'mcpsync_mutex_wait_seconds_bucket{le="+Inf",mutex="registry"}' in text
        import simple_websocket
        ws = simple_websocket.Client.connect(f"{base.replace('http', 'ws')}/ws", subprotocols=["mcp"])
        try:
            with HttpMcp(f"{base}/metrics") as m:
                assert "mcpsync_websocket_connections 1" in m.request("GET", session=False).body.decode()
        finally:
            ws.close()
        with HttpMcp(f"{base}/readyz") as r:
            assert r.request("GET", session=False).status == 200
            app.end_streams()  # what shutdown does first
            assert r.request("GET", session=False).status == 503


def test_graceful_shutdown_lets_inflight_calls_finish() -> None:
    """SIGTERM with a call in flight: the call completes, new connections are refused, the
    process exits 0."""
    with mcpsync_cli(require_clean_exit=False) as srv:
        base, port, proc = srv.url, srv.port, srv.proc
        with HttpMcp(base) as c:
            c.initialize()
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(c.call, "tools/call", {"name": "sleep_ms", "arguments": {"ms": 1500}})
                deadline = time.monotonic() + WAIT_S
                with HttpMcp(base.replace("/mcp", "/metrics")) as m:  # wait until it is in flight
                    while "mcpsync_inflight_requests 1" not in m.request("GET", session=False).body.decode():
                        assert time.monotonic() < deadline
                proc.send_signal(signal.SIGTERM)
                result = slow.result(WAIT_S)
                assert result["content"][0]["text"] == "slept 1500 ms"
        assert proc.wait(WAIT_S) == 0
        refused = socket.socket()
        try:
            assert refused.connect_ex(("127.0.0.1", port)) != 0
        finally:
            refused.close()


def test_calls_past_the_shutdown_grace_are_answered_with_an_error_and_exit_is_0() -> None:
    """SIGTERM with calls that outlast the grace period, over HTTP (JSON and SSE replies) and
    WebSocket: each gets a -32000 "shutting down" error, and the process still exits 0."""
    from test_websocket import RawWs, raw_initialize
    with mcpsync_cli("--shutdown-grace", "0.5", require_clean_exit=False) as srv:
        base, proc = srv.url, srv.proc
        ws = RawWs(srv.port)
        raw_initialize(ws)
        with HttpMcp(base) as json_client, HttpMcp(base) as sse_client:
            json_client.initialize()
            sse_client.initialize()
            long_call = {"name": "sleep_ms", "arguments": {"ms": 60000}}
            with ThreadPoolExecutor(2) as pool:
                plain = pool.submit(json_client.post, rpc(7, "tools/call", long_call),
                                    {"Accept": "application/json"})
                streamed = pool.submit(sse_client.post, rpc(8, "tools/call", {
                    **long_call, "_meta": {"progressToken": "p"}}))
                ws.send_json(rpc(9, "tools/call", long_call))
                deadline = time.monotonic() + WAIT_S
                with HttpMcp(base.replace("/mcp", "/metrics")) as m:  # all three in flight
                    while "mcpsync_inflight_requests 3" not in m.request("GET", session=False).body.decode():
                        assert time.monotonic() < deadline
                proc.send_signal(signal.SIGTERM)
                for future, rid in ((plain, 7), (streamed, 8)):
                    reply = future.result(WAIT_S)
                    assert reply.status == 200
                    final = [msg for msg in reply.messages() if msg.get("id") == rid]
                    assert len(final) == 1 and final[0]["error"]["code"] == -32000, reply.body
                    assert "shutting down" in final[0]["error"]["message"]
            answer = ws.message()
            assert answer["id"] == 9 and "shutting down" in answer["error"]["message"]
            ws.close()
        assert proc.wait(WAIT_S) == 0


def test_per_call_tool_timeout_answers_and_accounts_for_the_thread() -> None:
    from memclient import MemClient

    srv = Server("timeouts", tool_timeout_s=0.2, max_timed_out_calls=1)
    stubborn_release = threading.Event()
    stopped = threading.Event()

    @srv.tool()
    def polite(ctx: Context) -> str:
        """Waits, but stops when told to."""
        if ctx.wait_cancelled(WAIT_S):
            stopped.set()
        return "late"

    @srv.tool()
    def stubborn() -> str:
        """Ignores cancellation until the test releases it."""
        stubborn_release.wait(WAIT_S)
        return "late"

    client = MemClient(srv)
    client.initialize()
    result = client.call("tools/call", {"name": "polite"})
    assert result["isError"] is True and "timed out after 0.2 s" in result["content"][0]["text"]
    assert stopped.wait(WAIT_S)  # the polite tool saw ctx.cancelled and stopped
    deadline = time.monotonic() + WAIT_S
    while srv.calls.overrun:  # its thread leaves the overrun count once it returns
        assert time.monotonic() < deadline
    assert client.call("tools/call", {"name": "stubborn"})["isError"] is True
    refused = client.call("tools/call", {"name": "stubborn"})
    assert refused["isError"] is True and "still running past their time limit" in refused["content"][0]["text"]
    stubborn_release.set()
    deadline = time.monotonic() + WAIT_S
    while srv.calls.overrun:
        assert time.monotonic() < deadline
    assert "timed out" in client.call("tools/call", {"name": "polite"})["content"][0]["text"]
