"""MCP streams parked in the front end's dispatcher: standalone and resumed ``GET /mcp``
SSE streams and 2026-07-28 ``subscriptions/listen`` streams cost a buffer, not a thread, are
woken by notifications, and end cleanly at shutdown. Real sockets on 127.0.0.1; CI-sized
counts (the 1,000/5,000 versions are ``scripts/bench.py`` sse-1k, listen-5k). Every wait
is bounded."""
from __future__ import annotations

import json
import pathlib
import socket
import sys
import threading
import time
from typing import Any, Iterator

import pytest
from httpclient import HttpMcp, parse_sse
from rpcutil import wait_until
from test_modern import listen, read_messages

from mcpsync import Context, Server
from mcpsync.frontend import HttpFrontEnd, Limits
from mcpsync.http.app import HttpApp
from mcpsync.service import Service

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
import _floods  # noqa: E402

WAIT_S = 10.0
COUNT = 300


def mcpsync_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mcpsync-")]


def make_server(gate: threading.Event) -> Server:
    server = Server("parked", "1.0")
    server.add_tool(lambda text: text, name="echo", description="Echo.")

    @server.tool()
    def slow_echo(ms: int, ctx: Context) -> str:
        """Waits ``ms`` (or until cancelled)."""
        ctx.wait_cancelled(ms / 1000)
        return "waited"

    @server.tool()
    def slow(ctx: Context) -> str:
        """Reports progress, then waits for the test."""
        ctx.report_progress(1, 2)
        gate.wait(WAIT_S)
        return "done"

    return server


class Env:
    def __init__(self, **limits: Any) -> None:
        self.gate = threading.Event()
        self.service = Service(make_server(self.gate))
        self.wsgi = HttpApp(self.service)
        self.front = HttpFrontEnd(self.wsgi, "127.0.0.1", 0, limits=Limits(**limits)).start()
        self.port = self.front.port
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> bool:
        self.gate.set()
        self.wsgi.end_streams()
        clean = self.front.shutdown(WAIT_S)
        if not clean:
            print("not clean:", self.front.dispatcher.counts, self.front.pool.stats())
        self.service.close()
        return clean


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        assert e.stop()
    assert wait_until(lambda: mcpsync_threads() == [], WAIT_S), mcpsync_threads()


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    need = 4 * COUNT + 256  # both ends live in this process
    if _floods.raise_nofile(need) < need:
        pytest.skip(f"needs {need} open files (RLIMIT_NOFILE)")


def session(url: str) -> tuple[str, str]:
    with HttpMcp(url, timeout=WAIT_S) as c:
        c.initialize()
        assert c.session_id and c.version
        return c.session_id, c.version


def get_stream(port: int, sid: str, version: str, last_event_id: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    sock.sendall((f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                  f"Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {version}\r\n{extra}\r\n").encode())
    return sock


def read_until(sock: socket.socket, *markers: bytes) -> bytes:
    """Read until every marker has been seen; what was read."""
    got = b""
    deadline = time.monotonic() + WAIT_S
    while not all(m in got for m in markers):
        assert time.monotonic() < deadline, f"no {markers} in {got[-300:]!r}"
        data = sock.recv(65536)
        assert data, f"closed before {markers}: {got[-300:]!r}"
        got += data
    return got


def test_open_get_and_listen_streams_cost_no_thread_and_all_hear_a_change(env: Env) -> None:
    sessions = [session(env.url) for _ in range(COUNT)]
    gets = [get_stream(env.port, sid, version) for sid, version in sessions]
    listens = [listen(env.url, f"L{i}", {"toolsListChanged": True}) for i in range(COUNT)]
    try:
        for sock in gets:
            read_until(sock, b": stream open")
        for _, stream in listens:
            assert read_messages(stream, 1)[0]["method"] == "notifications/subscriptions/acknowledged"
        assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 2 * COUNT, WAIT_S)
        threads = mcpsync_threads()
        assert len(threads) <= 1 + env.front.limits.workers + 1, threads  # (+ the session reaper)
        with HttpMcp(env.url, timeout=WAIT_S) as c:  # others are served meanwhile
            c.initialize()
            assert c.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})[
                "content"][0]["text"] == "x"
        env.service.server.add_tool(lambda: "n", name="new_tool", description="A change.")
        for sock in gets:
            read_until(sock, b"notifications/tools/list_changed")
        for i, (_, stream) in enumerate(listens):
            msg = read_messages(stream, 1)[0]
            assert msg["method"] == "notifications/tools/list_changed"
            assert msg["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == f"L{i}"
    finally:
        for sock in gets:
            sock.close()
        for sock, stream in listens:
            stream.close()
            sock.close()
    assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 0, WAIT_S)
    assert wait_until(lambda: not env.service.server.broadcast._listeners, WAIT_S)


def test_shutdown_ends_parked_streams_with_their_results() -> None:
    e = Env()
    sid, version = session(e.url)
    get = get_stream(e.port, sid, version)
    sock, stream = listen(e.url, "L-end", {"toolsListChanged": True})
    try:
        read_until(get, b": stream open")
        read_messages(stream, 1)
        assert wait_until(lambda: e.front.dispatcher.counts["stream"] == 2, WAIT_S)
        assert e.stop()  # drains: the streams end, nothing had to be cut
        assert read_until(get, b"0\r\n\r\n")  # the GET stream's chunked end
        final = read_messages(stream, 1)[0]
        assert final["id"] == "L-end" and final["result"]["_meta"][
            "io.modelcontextprotocol/subscriptionId"] == "L-end"
    finally:
        stream.close()
        sock.close()
        get.close()


def test_a_resumed_post_stream_is_parked_until_its_reply(env: Env) -> None:
    """A POST whose tool sends progress is read up to its first event, then the client
    drops it and resumes with ``Last-Event-ID``: the resumed stream waits parked for the
    reply, which arrives once the tool finishes."""
    sid, version = session(env.url)
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "p"}}}).encode()
    post = socket.create_connection(("127.0.0.1", env.port), timeout=WAIT_S)
    post.sendall((f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{env.port}\r\nContent-Type: application/json\r\n"
                  f"Accept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\n"
                  f"MCP-Protocol-Version: {version}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    first = read_until(post, b"notifications/progress")
    post.close()
    event_ids = [e["id"] for e in parse_sse(first.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
                 if "id" in e and e.get("data")]
    resumed = get_stream(env.port, sid, version, last_event_id=event_ids[-1])
    try:
        assert read_until(resumed, b"200 OK")
        assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 1, WAIT_S)
        env.gate.set()
        got = read_until(resumed, b'"id":7', b"\r\n0\r\n\r\n")  # the reply, then the end
        assert b'"text":"done"' in got
    finally:
        resumed.close()


def test_a_listen_stream_the_client_leaves_is_forgotten(env: Env) -> None:
    sock, stream = listen(env.url, "L-gone", {"toolsListChanged": True})
    read_messages(stream, 1)
    assert len(env.service.server.broadcast._listeners) == 1
    stream.close()
    sock.close()
    assert wait_until(lambda: not env.service.server.broadcast._listeners, WAIT_S)
    assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 0, WAIT_S)


def test_a_listen_stream_under_werkzeug_runs_on_its_thread() -> None:
    """Without parking (werkzeug), the same listen stream is iterated on its request's
    thread: the acknowledgement, a notification, and its result at the end."""
    from httpserver import serving
    service = Service(make_server(threading.Event()))
    wsgi = HttpApp(service)
    with serving(wsgi, kind="werkzeug") as base:
        sock, stream = listen(f"{base}/mcp", "W1", {"toolsListChanged": True})
        try:
            assert read_messages(stream, 1)[0]["method"] == "notifications/subscriptions/acknowledged"
            service.server.add_tool(lambda: "n", name="w_tool", description="A change.")
            assert read_messages(stream, 1)[0]["method"] == "notifications/tools/list_changed"
            wsgi.end_streams()
            assert read_messages(stream, 1)[0]["id"] == "W1"
        finally:
            stream.close()
            sock.close()
    service.close()


def test_keep_alive_comments_on_idle_parked_streams(monkeypatch: pytest.MonkeyPatch,
                                                    env: Env) -> None:
    from mcpsync.http import responses, sse
    monkeypatch.setattr(sse.Follower, "tick_s", 0.05)
    monkeypatch.setattr(responses.FollowedStream, "tick_s", 0.05)
    sid, version = session(env.url)
    get = get_stream(env.port, sid, version)
    sock, stream = listen(env.url, "L-ka", {"toolsListChanged": True})
    try:
        read_until(get, b": stream open")
        read_until(get, b": keepalive", b": keepalive\n\n\r\n")  # more than one
        read_messages(stream, 1)
        for _ in range(10):  # the chunk size line, then the comment
            if stream.readline().startswith(b": keepalive"):
                break
        else:
            raise AssertionError("no keep-alive comment on the listen stream")
    finally:
        get.close()
        stream.close()
        sock.close()



def legacy_stream(port: int) -> tuple[socket.socket, str]:
    """A ``GET /sse`` (revision 2024-11-05) stream; returns it and its message endpoint."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    got = read_until(sock, b"event: endpoint", b"\n\n\r\n")
    endpoint = got.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
    return sock, endpoint


def legacy_post(port: int, endpoint: str, msg: dict[str, Any]) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        body = json.dumps(msg).encode()
        sock.sendall((f"POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        return int(read_until(sock, b"\r\n").split(b" ", 2)[1])


def test_legacy_sse_streams_cost_no_thread_hear_a_change_and_end_their_session(env: Env) -> None:
    streams = [legacy_stream(env.port) for _ in range(COUNT)]
    try:
        assert wait_until(lambda: env.front.dispatcher.counts["stream"] == COUNT, WAIT_S)
        threads = mcpsync_threads()
        assert len(threads) <= 1 + env.front.limits.workers + 1, threads  # (+ the session reaper)
        sock, endpoint = streams[0]
        assert legacy_post(env.port, endpoint, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "legacy", "version": "1"}}}) == 202
        read_until(sock, b'"id":0')
        assert legacy_post(env.port, endpoint, {"jsonrpc": "2.0", "method": "notifications/initialized"}) == 202
        env.service.server.add_tool(lambda: "n", name="new_tool", description="A change.")
        read_until(sock, b"notifications/tools/list_changed")
        assert len(env.service.store) == COUNT
    finally:
        for sock, _ in streams:
            sock.close()
    # the client left: each stream is closed by the dispatcher and its session ended on a worker
    assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 0, WAIT_S)
    assert wait_until(lambda: len(env.service.store) == 0, WAIT_S)
