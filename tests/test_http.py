"""Streamable HTTP over real sockets: sessions, status codes, SSE, resumption, races."""
from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest
from httpclient import HttpMcp, parse_sse
from httpserver import serving
from rpcutil import rpc

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.http.app import HttpApp

WAIT_S = 10.0


def make_server() -> tuple[Server, dict[str, Any]]:
    """A server with a tool that blocks until the test releases it, plus probes."""
    srv = Server("http-tests", "1.0")
    gates: dict[str, Any] = {"release": threading.Event(), "entered": threading.Event()}

    @srv.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    @srv.tool()
    def blocker(ctx: Context) -> str:
        """Blocks until released; reports progress first so the reply is SSE."""
        ctx.report_progress(1, 2, "waiting")
        gates["entered"].set()
        gates["release"].wait(WAIT_S)
        return "released"

    @srv.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """Session id and negotiated version."""
        return {"session": ctx.session_id, "version": ctx.version, "level": ctx.log_level}

    @srv.tool()
    def set_marker(value: str, ctx: Context) -> str:
        """Store a value in this session's private state."""
        ctx.conn.subscribe(f"marker://{value}", True)
        return value

    @srv.tool()
    def infinite() -> dict[str, float]:
        """A result that is not valid JSON (infinity): a tool error naming the problem."""
        return {"x": float("inf")}

    return srv, gates


@pytest.fixture()
def env() -> Iterator[tuple[str, Service, dict[str, Any]]]:
    srv, gates = make_server()
    app = Service(srv)
    with serving(HttpApp(app)) as base:
        yield f"{base}/mcp", app, gates
    gates["release"].set()
    app.close()


# ---- session lifecycle and status codes --------------------------------------------------------

def test_initialize_creates_session_and_later_requests_need_it(env: Any) -> None:
    url, app, _ = env
    with HttpMcp(url) as c:
        result = c.initialize()
        assert result["protocolVersion"] == "2025-11-25"
        sid = c.session_id
        assert sid and all(0x21 <= ord(ch) <= 0x7E for ch in sid) and len(sid) >= 22
        assert c.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})["content"][0]["text"] == "hi"
        missing = c.post(rpc(5, "tools/list"), session=False)
        assert missing.status == 400 and missing.json()["error"]["message"]
        unknown = c.post(rpc(6, "tools/list"), {"Mcp-Session-Id": "nope"})
        assert unknown.status == 404 and unknown.json()["error"]["code"] == -32001
        assert c.delete().status == 200
        assert len(app.store) == 0
        gone = c.post(rpc(7, "tools/list"))
        assert gone.status == 404
        assert c.delete().status == 404


def test_notifications_and_responses_get_202_with_empty_body(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        reply = c.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}})
        assert reply.status == 202 and reply.body == b""
        stray = c.post({"jsonrpc": "2.0", "id": 12345, "result": {}})  # a response to nothing
        assert stray.status == 202


def test_protocol_version_header_rules(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize("2025-06-18")
        assert c.post(rpc(1, "ping"), {"MCP-Protocol-Version": "1999-01-01"}).status == 400
        assert c.post(rpc(2, "ping"), {"MCP-Protocol-Version": None}).status == 200  # absent: fine
        other = c.post(rpc(3, "tools/call", {"name": "whoami"}), {"MCP-Protocol-Version": "2025-03-26"})
        assert other.status == 200  # another supported revision is tolerated
        assert other.messages()[0]["result"]["structuredContent"]["version"] == "2025-06-18"


def test_bad_host_and_origin_are_403_before_anything(env: Any) -> None:
    url, app, _ = env
    with HttpMcp(url) as c:
        init = {**rpc(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                        "clientInfo": {"name": "x", "version": "1"}})}
        assert c.post(init, {"Host": "evil.example.com"}, session=False).status == 403
        assert c.post(init, {"Origin": "http://evil.example.com"}, session=False).status == 403
        assert c.post(init, {"Origin": "null"}, session=False).status == 403
        ok = c.post(init, {"Origin": f"http://localhost:{c.port}"}, session=False)
        assert ok.status == 200
        assert ok.headers["access-control-allow-origin"] == f"http://localhost:{c.port}"
        assert "Mcp-Session-Id" in ok.headers["access-control-expose-headers"]
        assert len(app.store) == 1  # the refused ones created nothing


def test_cors_preflight(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        reply = c.request("OPTIONS", headers={"Origin": f"http://127.0.0.1:{c.port}",
                                              "Access-Control-Request-Method": "POST"})
        assert reply.status == 204
        other_port = c.request("OPTIONS", headers={"Origin": "http://127.0.0.1:3000",
                                                   "Access-Control-Request-Method": "POST"})
        assert other_port.status == 403  # another local site, unless allowed_origins lists it
        allowed = reply.headers["access-control-allow-headers"].lower()
        for header in ("mcp-session-id", "mcp-protocol-version", "last-event-id", "authorization"):
            assert header in allowed


def test_wrong_method_path_content_type_and_body(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        assert c.request("PUT", {}).status == 405
        assert c.post(rpc(1, "ping"), {"Content-Type": "text/plain"}).status == 415
        bad = c.post(None, raw=b"{not json")
        assert bad.status == 400 and bad.json()["error"]["code"] == -32700
        batch = c.post([rpc(1, "ping")])
        assert batch.status == 200 and batch.json()["error"]["code"] == -32600  # no batches in 11-25
        invalid = c.post({"jsonrpc": "2.0", "method": 5})
        assert invalid.status == 400
    other = HttpMcp(url.replace("/mcp", "/elsewhere"))
    with other:
        assert other.post(rpc(1, "ping"), session=False).status == 404


def test_a_non_finite_tool_result_is_a_tool_error_not_a_hang(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        reply = c.post(rpc(5, "tools/call", {"name": "infinite"}))
        assert reply.status == 200
        result = reply.json()["result"]
        assert result["isError"] is True
        assert result["content"][0]["text"].startswith("Tool infinite returned a value JSON cannot represent")
        assert c.call("ping") == {}


def test_accept_leniency(env: Any) -> None:
    url, _, gates = env
    with HttpMcp(url) as c:
        c.initialize()
        star = c.post(rpc(1, "tools/call", {"name": "echo", "arguments": {"text": "a"}}), {"Accept": "*/*"})
        assert star.status == 200 and star.content_type == "application/json"
        json_only = c.post(rpc(2, "tools/call", {"name": "echo", "arguments": {"text": "b"}}),
                           {"Accept": "application/json"})
        assert json_only.status == 200 and json_only.messages()[0]["result"]["content"][0]["text"] == "b"
        assert c.post(rpc(3, "ping"), {"Accept": "image/png"}).status == 406


def test_batch_allowed_on_2025_03_26_sessions(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize("2025-03-26")
        reply = c.post([rpc(1, "ping"), {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                         "params": {"requestId": 77}}, rpc("b", "tools/list")])
        assert reply.status == 200
        ids = sorted(str(m["id"]) for m in reply.json())
        assert ids == ["1", "b"]


# ---- SSE: progress, GET stream, resumption ---------------------------------------------------

def test_progress_switches_the_reply_to_sse_with_priming(env: Any) -> None:
    url, _, gates = env
    gates["release"].set()
    with HttpMcp(url) as c:
        c.initialize()
        reply = c.post(rpc(9, "tools/call", {"name": "blocker", "_meta": {"progressToken": "tok"}}))
        assert reply.content_type == "text/event-stream"
        events = reply.events()
        assert events[0]["data"] == "" and "retry" in events[0] and events[0]["id"].endswith(".0")
        kinds = [e["data"].get("method") or e["data"].get("id") for e in events[1:]]
        assert kinds == ["notifications/progress", 9]
        assert events[1]["data"]["params"]["progressToken"] == "tok"
        ids = [e["id"] for e in events]
        assert len(set(ids)) == len(ids)


def test_no_priming_event_for_older_revisions(env: Any) -> None:
    url, _, gates = env
    gates["release"].set()
    with HttpMcp(url) as c:
        c.initialize("2025-06-18")
        reply = c.post(rpc(9, "tools/call", {"name": "blocker", "_meta": {"progressToken": 1}}))
        assert all(e.get("data") != "" for e in reply.events())


def open_get_stream(url: str, sid: str, headers: dict[str, str] | None = None) -> tuple[socket.socket, Any]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=WAIT_S)
    conn.request("GET", "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid,
                                         **(headers or {})})
    resp = conn.getresponse()
    return conn, resp


def read_events_until(resp: Any, predicate: Any) -> list[dict[str, Any]]:
    buf = b""
    while True:
        line = resp.fp.readline()
        assert line, "stream ended early"
        buf += line
        events = parse_sse(buf)
        if buf.endswith(b"\n\n") and predicate(events):
            return events


def test_standalone_get_stream_carries_list_changed_and_resource_updates(env: Any) -> None:
    url, app, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        c.call("resources/subscribe", {"uri": "watched://x"})
        conn, resp = open_get_stream(url, c.session_id)
        try:
            assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
            second_conn, second = open_get_stream(url, c.session_id)
            assert second.status == 409
            second_conn.close()
            app.server.add_tool(lambda: "new", name="late_tool", description="added late")
            app.server.notify_resource_updated("watched://x")
            app.server.notify_resource_updated("watched://not-subscribed")
            events = read_events_until(resp, lambda evs: len([e for e in evs if isinstance(e.get("data"), dict)]) >= 2)
            methods = [e["data"]["method"] for e in events if isinstance(e.get("data"), dict)]
            assert methods == ["notifications/tools/list_changed", "notifications/resources/updated"]
            assert all("id" not in e["data"] for e in events if isinstance(e.get("data"), dict))
        finally:
            conn.close()


def test_resume_with_last_event_id_after_disconnect_mid_stream(env: Any) -> None:
    """The client drops the POST stream after the progress event; the call is not cancelled,
    and a GET with Last-Event-ID delivers the rest (the final result)."""
    url, app, gates = env
    with HttpMcp(url) as c:
        c.initialize()
        host, port = c.host, c.port
        sock = socket.create_connection((host, port), timeout=WAIT_S)
        body = json.dumps(rpc(42, "tools/call", {"name": "blocker", "_meta": {"progressToken": 1}})).encode()
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Accept: application/json, text/event-stream\r\nMcp-Session-Id: " + c.session_id.encode() +
                     b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert gates["entered"].wait(WAIT_S)
        received = b""
        while b"notifications/progress" not in received:
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
        sock.close()  # disconnect mid-call: not a cancellation
        last_id = [line.split(b": ", 1)[1].decode() for line in received.split(b"\n")
                   if line.startswith(b"id: ")][-1]
        gates["release"].set()
        conn, resp = open_get_stream(url, c.session_id, {"Last-Event-ID": last_id})
        try:
            assert resp.status == 200
            events = read_events_until(resp, lambda evs: any(
                isinstance(e.get("data"), dict) and e["data"].get("id") == 42 for e in evs))
            final = [e for e in events if isinstance(e.get("data"), dict) and e["data"].get("id") == 42]
            assert final[0]["data"]["result"]["content"][0]["text"] == "released"
            assert not any(isinstance(e.get("data"), dict) and e["data"].get("method") == "notifications/progress"
                           for e in events)  # nothing replayed twice
        finally:
            conn.close()
        assert c.call("ping") == {}


def test_unknown_last_event_id_is_refused(env: Any) -> None:
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        conn, resp = open_get_stream(url, c.session_id, {"Last-Event-ID": "999.3"})
        assert resp.status == 400
        conn.close()


# ---- concurrency: the design notes' scenarios over real HTTP ---------------------------------

def test_concurrent_initialization_race_over_http(env: Any) -> None:
    """3 clients initialize at the same instant, then list tools. Repeated 30 times."""
    url, app, _ = env
    for _ in range(30):
        barrier = threading.Barrier(3, timeout=WAIT_S)

        def client() -> tuple[str, list[str]]:
            with HttpMcp(url) as c:
                barrier.wait()
                c.initialize()
                names = [t["name"] for t in c.call("tools/list")["tools"]]
                sid = c.session_id
                assert c.delete().status == 200
                return sid, names

        with ThreadPoolExecutor(3) as pool:
            results = [f.result(WAIT_S) for f in [pool.submit(client) for _ in range(3)]]
        assert len({sid for sid, _ in results}) == 3
        assert all("echo" in names for _, names in results)
    assert len(app.store) == 0


def test_two_sessions_negotiate_different_revisions_in_parallel(env: Any) -> None:
    url, _, _ = env
    barrier = threading.Barrier(2, timeout=WAIT_S)

    def client(version: str, level: str) -> dict[str, Any]:
        with HttpMcp(url) as c:
            barrier.wait()
            c.initialize(version)
            c.call("logging/setLevel", {"level": level})
            barrier.wait()
            return c.call("tools/call", {"name": "whoami"})

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(client, "2025-06-18", "error")
        b = pool.submit(client, "2025-03-26", "debug")
        ra, rb = a.result(WAIT_S), b.result(WAIT_S)
    assert ra["structuredContent"]["version"] == "2025-06-18"
    assert ra["structuredContent"]["level"] == "error"
    assert "structuredContent" not in rb  # 2025-03-26 has no structured output
    assert json.loads(rb["content"][0]["text"]) == {"session": json.loads(rb["content"][0]["text"])["session"],
                                                     "version": "2025-03-26", "level": "debug"}


def test_ten_parallel_posts_on_one_session(env: Any) -> None:
    """test_http_session_mutex_contention: 10 parallel requests on one session, each on its own
    connection, all answered with their own result. Repeated 20 times."""
    url, _, _ = env
    with HttpMcp(url) as c:
        c.initialize()
        sid, version = c.session_id, c.version
    for round_no in range(20):
        barrier = threading.Barrier(10, timeout=WAIT_S)

        def call(i: int) -> str:
            with HttpMcp(url) as k:
                k.session_id, k.version = sid, version
                k._ids = itertools.count(1000 * round_no + 10 * i)  # ids unique in the session
                barrier.wait()
                return k.call("tools/call", {"name": "echo", "arguments": {"text": f"m{i}"}})["content"][0]["text"]

        with ThreadPoolExecutor(10) as pool:
            assert [f.result(WAIT_S) for f in [pool.submit(call, i) for i in range(10)]] == [f"m{i}" for i in range(10)]


def test_slow_call_does_not_delay_other_requests_or_sessions(env: Any) -> None:
    url, _, gates = env
    with HttpMcp(url) as c, HttpMcp(url) as same, HttpMcp(url) as other:
        c.initialize()
        other.initialize()
        same.session_id, same.version = c.session_id, c.version
        same._ids = itertools.count(100)  # ids are per session: do not reuse the slow call's
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(c.call, "tools/call", {"name": "blocker"})
            assert gates["entered"].wait(WAIT_S)
            assert same.call("ping") == {}                      # same session, other request
            assert other.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})  # other session
            assert not slow.done()
            gates["release"].set()
            assert slow.result(WAIT_S)["content"][0]["text"] == "released"


def test_fifty_sessions_created_and_deleted_concurrently_leak_nothing(env: Any) -> None:
    url, app, _ = env

    def life(i: int) -> None:
        with HttpMcp(url) as c:
            c.initialize()
            c.call("tools/call", {"name": "echo", "arguments": {"text": str(i)}})
            assert c.delete().status == 200

    with ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(life, i) for i in range(50)]:
            f.result(WAIT_S)
    assert len(app.store) == 0
    assert app.server.connections() == []


def test_sessions_are_bound_to_their_principal() -> None:
    srv, _ = make_server()
    app = Service(srv)
    wsgi = HttpApp(app, principal=lambda environ: environ.get("HTTP_AUTHORIZATION"))
    with serving(wsgi) as base, HttpMcp(f"{base}/mcp") as c:
        reply = c.post(rpc(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                             "clientInfo": {"name": "a", "version": "1"}}),
                       {"Authorization": "Bearer alice"}, session=False)
        c.session_id = reply.headers["mcp-session-id"]
        assert c.post(rpc(2, "ping"), {"Authorization": "Bearer alice"}).status == 200
        assert c.post(rpc(3, "ping"), {"Authorization": "Bearer mallory"}).status == 404
        assert c.post(rpc(4, "ping")).status == 404
    app.close()
