"""The WebSocket transport at /ws over real sockets: handshake and Origin check, one session per
connection, concurrent requests on one socket, cancellation, disconnects, leaks, frame rules,
and the official TypeScript SDK's WebSocketClientTransport as a third-party client.

Every test runs against both ways a connection is served: parked in mcpsync's front end
(``ws_parked``: the dispatcher reads the frames, the worker pool runs the messages) and on
threads of its own under werkzeug (``ws_reader``). Clients are ``simple_websocket.Client``
(thread-based, synchronous). Every wait is bounded:
``receive`` takes a timeout, barriers and events have one, and conditions the server reaches
on its own threads (a session leaving the store, worker threads ending) are polled against a
deadline with ``wait_until``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest
import simple_websocket
from httpserver import serving
from rpcutil import call_tool, rpc
from rpcutil import wait_until as _wait_until
from jsdeps import JS_DIR, node22, node_env

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.examples.everything import server as everything
from mcpsync.streams.websocket import serve_websocket
from mcpsync.http.app import HttpApp

WAIT_S = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    return _wait_until(predicate, timeout)


def cancelled(rid: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": rid, "reason": "test"}}


class WsMcp:
    """One MCP client over one WebSocket (simple-websocket's thread-based client)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.ws = simple_websocket.Client.connect(url, subprotocols=["mcp"], **kwargs)
        # Back-to-back small frames must not wait for delayed ACKs (Nagle on the client side).
        self.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.held: list[dict[str, Any]] = []  # messages received while waiting for another id

    def send(self, msg: Any) -> None:
        self.ws.send(json.dumps(msg))

    def next_message(self, timeout: float = WAIT_S) -> dict[str, Any]:
        """The next message (held ones first); fails the test after ``timeout`` seconds."""
        if self.held:
            return self.held.pop(0)
        data = self.ws.receive(timeout)
        assert data is not None, f"no message within {timeout} s"
        return json.loads(data)

    def reply_to(self, rid: Any, timeout: float = WAIT_S) -> dict[str, Any]:
        """The response with id ``rid``; other messages are held for later."""
        for i, msg in enumerate(self.held):
            if msg.get("id") == rid and "method" not in msg:
                return self.held.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            data = self.ws.receive(max(deadline - time.monotonic(), 0.0))
            assert data is not None, f"no response to {rid!r} within {timeout} s"
            msg = json.loads(data)
            if msg.get("id") == rid and "method" not in msg:
                return msg
            self.held.append(msg)

    def call(self, rid: Any, method: str, params: dict[str, Any] | None = None) -> Any:
        self.send(rpc(rid, method, params))
        reply = self.reply_to(rid)
        assert "result" in reply, reply
        return reply["result"]

    def initialize(self, name: str = "ws-tests", version: str = "2025-11-25") -> dict[str, Any]:
        result = self.call("init", "initialize", {"protocolVersion": version, "capabilities": {},
                                                  "clientInfo": {"name": name, "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def close(self) -> None:
        """Close cleanly (close frame, then the socket) and wait for the client's reader thread;
        after ``drop()`` or a close by the server, just release the socket."""
        if self.ws.connected:
            try:
                self.ws.close()
            except simple_websocket.ConnectionClosed:
                pass
        else:
            self.ws.sock.close()
        self.ws.thread.join(WAIT_S)
        assert not self.ws.thread.is_alive()

    def drop(self) -> None:
        """Vanish without a close frame: shut the TCP connection down under the reader thread."""
        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ws.thread.join(WAIT_S)  # it sees EOF and closes the socket
        assert not self.ws.thread.is_alive()
        self.ws.sock.close()

    def __enter__(self) -> "WsMcp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/ws"


KINDS = {"parked": "threaded", "threads": "werkzeug"}  # how a connection is served: the server


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def env(kind: str) -> Iterator[tuple[str, Service]]:
    """The bundled example server (echo, add, sleep_ms ...) behind HttpApp."""
    app = Service(everything)
    with serving(HttpApp(app), KINDS[kind]) as base:
        yield ws_url(base), app
    app.close()



def worker_threads() -> list[threading.Thread]:
    """The server side's per-connection threads: the workers and simple-websocket's reader."""
    return [t for t in threading.enumerate()
            if t.name.startswith(("mcpsync-ws-worker", "mcpsync-ws-reader"))]


def raw_http(port: int, head: str) -> bytes:
    """Send one request head on a fresh socket; return everything the server sends back."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
        s.sendall(head.encode("latin-1"))
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def upgrade_head(port: int, extra: str = "") -> str:
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n{extra}"
            "Connection: close\r\n\r\n")


# ---- handshake, Origin, basic traffic ----------------------------------------------------------

def test_handshake_selects_mcp_and_serves_initialize_and_tools(env: Any) -> None:
    url, app = env
    with WsMcp(url) as c:
        assert c.ws.subprotocol == "mcp"
        init = c.initialize()
        assert init["protocolVersion"] == "2025-11-25"
        assert init["serverInfo"]["name"] == "mcpsync-everything"
        assert len(app.store) == 1
        names = {t["name"] for t in c.call(2, "tools/list")["tools"]}
        assert {"echo", "add", "sleep_ms"} <= names
        echo = c.call(3, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert echo["content"] == [{"type": "text", "text": "hi"}]
        assert c.call(4, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 3.5}})[
            "structuredContent"] == {"sum": 5.5}
        # A message not tied to a request reaches the connection's writer too.
        c.call(5, "resources/subscribe", {"uri": "test://watched-resource"})
        c.send(call_tool(6, "touch_watched_resource"))
        first, second = c.next_message(), c.next_message()
        by_kind = {m.get("method", "reply"): m for m in (first, second)}
        updated = by_kind["notifications/resources/updated"]
        assert updated["params"] == {"uri": "test://watched-resource"}
        assert by_kind["reply"]["id"] == 6
    assert wait_until(lambda: len(app.store) == 0)


def test_ids_keep_their_json_type_and_errors_are_json_rpc(env: Any) -> None:
    url, _ = env
    with WsMcp(url) as c:
        c.send(rpc(1, "tools/list"))
        early = c.reply_to(1)
        assert "error" in early  # not initialized yet
        c.initialize()
        c.send(rpc("str-id", "ping"))
        assert c.reply_to("str-id") == {"jsonrpc": "2.0", "id": "str-id", "result": {}}
        c.send(rpc(7, "no/such/method"))
        assert c.reply_to(7)["error"]["code"] == -32601
        c.ws.send("{not json")
        assert c.next_message()["error"]["code"] == -32700


def test_plain_get_without_upgrade_is_426(env: Any) -> None:
    url, app = env
    port = int(url.split(":")[2].split("/")[0])
    reply = raw_http(port, f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 426 ")
    assert len(app.store) == 0


def test_bad_origin_or_host_is_403_before_the_upgrade(env: Any) -> None:
    url, app = env
    port = int(url.split(":")[2].split("/")[0])
    for extra in ("Origin: http://evil.example.com\r\n", "Origin: null\r\n"):
        reply = raw_http(port, upgrade_head(port, extra))
        assert reply.startswith(b"HTTP/1.1 403 "), reply[:80]
        assert b"Sec-WebSocket-Accept" not in reply
    evil_host = upgrade_head(port).replace(f"Host: 127.0.0.1:{port}", "Host: evil.example.com")
    assert raw_http(port, evil_host).startswith(b"HTTP/1.1 403 ")
    assert len(app.store) == 0  # refused before a session was created
    # A loopback Origin is fine, through a real client's headers= option.
    with WsMcp(url, headers={"Origin": f"http://localhost:{port}"}) as c:
        assert c.ws.subprotocol == "mcp"
        c.initialize()
        assert len(app.store) == 1


# ---- concurrency ----------------------------------------------------------------------------

def test_concurrent_initialization_race_over_websocket(env: Any) -> None:
    """The design notes' scenario: 8 clients open a socket and initialize at the same instant;
    each gets its own session. Repeated 20 times."""
    url, app = env
    clients = 8
    for round_ in range(20):
        start = threading.Barrier(clients, timeout=WAIT_S)
        ready = threading.Barrier(clients + 1, timeout=WAIT_S)  # + the checking main thread
        done = threading.Barrier(clients + 1, timeout=WAIT_S)

        def client(i: int) -> str:
            start.wait()
            with WsMcp(url) as c:
                result = c.initialize(name=f"client-{i}")
                c.call("after", "ping")
                ready.wait()
                done.wait()
            return str(result["protocolVersion"])

        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(client, i) for i in range(clients)]
            ready.wait()
            try:
                sessions = app.store.snapshot()
                assert len(sessions) == clients, f"round {round_}"
                handlers = [app.connection(s) for s in sessions]
                assert len({id(h) for h in handlers}) == clients
                assert sorted(h.client_info["name"] for h in handlers) == sorted(
                    f"client-{i}" for i in range(clients))
                assert all(h.phase == "ready" for h in handlers)
            finally:
                done.wait()
            assert [f.result(WAIT_S) for f in futures] == ["2025-11-25"] * clients
        assert wait_until(lambda: len(app.store) == 0)


def test_interleaved_requests_on_one_socket_are_matched_by_id(env: Any) -> None:
    """A 20 s call first, then 50 requests back to back (sleep_ms of different lengths, echo,
    add) and a ping: all 51 answers arrive, out of order, each id with its own result, while
    the first call still runs; cancelling it then yields no response for it. One round: the
    order is proven by the 20 s call sent first, which cannot be answered before the others."""
    url, app = env
    with WsMcp(url) as c:
        c.initialize()
        c.send(call_tool("slow", "sleep_ms", ms=20_000))
        expected: dict[Any, Callable[[dict[str, Any]], bool]] = {}
        for i in range(1, 51):
            if i % 3 == 0:
                ms = (50 - i) * 2
                c.send(call_tool(i, "sleep_ms", ms=ms))
                expected[i] = lambda r, ms=ms: r["content"][0]["text"] == f"slept {ms} ms"
            elif i % 3 == 1:
                c.send(call_tool(i, "echo", text=f"m{i}"))
                expected[i] = lambda r, i=i: r["content"][0]["text"] == f"m{i}"
            else:
                c.send(call_tool(i, "add", a=i, b=0.5))
                expected[i] = lambda r, i=i: r["structuredContent"] == {"sum": i + 0.5}
        c.send(rpc("ping", "ping"))
        expected["ping"] = lambda r: r == {}
        order = []
        for _ in range(len(expected)):
            msg = c.next_message()
            assert "result" in msg, msg
            assert msg["id"] in expected and msg["id"] not in order, msg
            assert expected[msg["id"]](msg["result"]), msg
            order.append(msg["id"])
        assert set(order) == set(expected)
        assert "slow" not in order  # sent first, still running: the replies came out of order
        conn = app.connection(app.store.snapshot()[0])
        assert conn.inflight_count() == 1
        c.send(cancelled("slow"))
        assert wait_until(lambda: conn.inflight_count() == 0)
        assert c.call("after", "ping") == {}
        assert c.held == []  # nothing for "slow" came before the ping's answer


def test_cancelled_sleep_stops_and_is_never_answered(env: Any) -> None:
    url, app = env
    with WsMcp(url) as c:
        c.initialize()
        conn = app.connection(app.store.snapshot()[0])
        started = time.monotonic()
        c.send(call_tool(1, "sleep_ms", ms=30_000))
        assert wait_until(lambda: conn.inflight_count() == 1)  # running, not just queued
        c.send(cancelled(1))
        assert wait_until(lambda: conn.inflight_count() == 0)
        assert time.monotonic() - started < WAIT_S < 30  # it stopped; it did not run out
        assert c.call(2, "ping") == {}
        assert c.call(3, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        assert c.held == []  # no response for request 1


def test_cancellation_right_behind_its_request_is_never_answered(env: Any) -> None:
    """300 requests, each followed at once by its cancellation, with a tiny GIL switch interval
    so workers get preempted between taking a request and the connection registering it (the
    window where a cancellation used to be lost and the request answered). No answers."""
    url, app = env
    previous = sys.getswitchinterval()
    with WsMcp(url) as c:
        c.initialize()
        conn = app.connection(app.store.snapshot()[0])
        sys.setswitchinterval(1e-6)
        try:
            for i in range(300):
                c.send(call_tool(i, "sleep_ms", ms=300))
                c.send(cancelled(i))
            assert c.call("p1", "ping") == {}
            assert wait_until(lambda: conn.inflight_count() == 0)
        finally:
            sys.setswitchinterval(previous)
        assert c.call("p2", "ping") == {}
        assert [m.get("id") for m in c.held] == []


# ---- disconnects and leaks ------------------------------------------------------------------

def test_abrupt_disconnect_mid_call_ends_the_session_and_its_workers(env: Any, kind: str) -> None:
    url, app = env
    assert wait_until(lambda: not worker_threads())  # from earlier tests
    with WsMcp(url) as c:
        c.initialize()
        conn = app.connection(app.store.snapshot()[0])
        c.send(call_tool(1, "sleep_ms", ms=30_000))
        assert wait_until(lambda: conn.inflight_count() == 1)
        if kind == "threads":  # a reader took over from the thread running the call
            assert wait_until(worker_threads)
        started = time.monotonic()
        c.drop()  # no close frame: the TCP connection just goes away
    assert wait_until(lambda: len(app.store) == 0)
    assert conn.closed and wait_until(lambda: conn.inflight_count() == 0)  # cancelled
    assert wait_until(lambda: not worker_threads()), [t.name for t in worker_threads()]
    assert time.monotonic() - started < WAIT_S  # the 30 s call was cancelled, not waited for
    assert conn not in app.server.connections()


def test_a_session_closed_by_the_store_ends_its_connection(env: Any) -> None:
    """Expiry or shutdown closes the session in the store; the socket must not live on as a
    connection serving a session that no longer exists."""
    url, app = env
    with WsMcp(url) as c:
        c.initialize()
        session = app.store.snapshot()[0]
        assert app.close_session(session.id)
        with pytest.raises(simple_websocket.ConnectionClosed):
            c.ws.receive(WAIT_S)  # the server's close frame ends the client's connection
    assert wait_until(lambda: not worker_threads()), [t.name for t in worker_threads()]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_two_hundred_connections_leak_no_threads_sessions_or_descriptors(env: Any) -> None:
    """200 sequential connect / initialize / call / disconnect cycles."""
    url, app = env
    with WsMcp(url) as warm:  # the front end's first connection sets up what it keeps
        warm.initialize()
    assert wait_until(lambda: len(app.store) == 0)
    threads_before = threading.active_count()
    fds_before = fd_count()
    for i in range(200):
        with WsMcp(url) as c:
            c.initialize()
            assert c.call(1, "tools/call", {"name": "echo", "arguments": {"text": str(i)}})[
                "content"][0]["text"] == str(i)
    assert wait_until(lambda: len(app.store) == 0)
    assert wait_until(lambda: threading.active_count() <= threads_before), [
        t.name for t in threading.enumerate()]
    assert wait_until(lambda: fd_count() <= fds_before + 2), (fd_count(), fds_before)
    assert app.server.connections() == []


def test_tool_that_outlives_its_connection_can_still_log(kind: str) -> None:
    """A call that sends a log message after its client vanished: the message is dropped;
    nothing is raised into the tool (the socket's writer failing is the transport's business)."""
    srv = Server("ws-linger", "1.0")
    outcome: dict[str, Any] = {}
    entered, done = threading.Event(), threading.Event()

    @srv.tool()
    def linger(ctx: Context) -> str:
        """Wait for cancellation, then try to log."""
        entered.set()
        try:
            outcome["cancelled"] = ctx.wait_cancelled(WAIT_S)
            outcome["logged"] = ctx.info("still here")
            outcome["error"] = None
        except Exception as exc:  # what the test is about
            outcome["error"] = repr(exc)
        finally:
            done.set()
        return "done"

    app = Service(srv)
    with serving(HttpApp(app), KINDS[kind]) as base:
        with WsMcp(ws_url(base)) as c:
            c.initialize()
            c.send(call_tool(1, "linger"))
            assert entered.wait(WAIT_S)
            c.drop()
        assert done.wait(WAIT_S)
        assert wait_until(lambda: len(app.store) == 0)
    app.close()
    assert outcome["cancelled"] is True
    assert outcome["error"] is None, outcome


# ---- frames -----------------------------------------------------------------------------------

def test_binary_frame_is_answered_with_invalid_request(env: Any) -> None:
    url, _ = env
    with WsMcp(url) as c:
        c.initialize()
        c.ws.send(json.dumps(rpc(1, "ping")).encode())  # bytes: a binary frame
        reply = c.next_message()
        assert reply["id"] is None and reply["error"]["code"] == -32600
        assert c.call(2, "ping") == {}  # the connection lives on


def test_oversized_message_closes_the_connection(kind: str) -> None:
    limit = 1024
    app = Service(everything)
    wsgi = HttpApp(app)
    wsgi.routes["/ws"] = lambda environ, start_response: serve_websocket(
        app, environ, start_response, open_session=wsgi.open_session, max_message_bytes=limit)
    with serving(wsgi, KINDS[kind]) as base:
        with WsMcp(ws_url(base)) as c:
            c.initialize()
            text = "x" * (limit - 200)
            assert c.call(1, "tools/call", {"name": "echo", "arguments": {"text": text}})[
                "content"][0]["text"] == text
            c.send(call_tool(2, "echo", text="y" * (limit + 1)))
            with pytest.raises(simple_websocket.ConnectionClosed) as closed:
                c.ws.receive(WAIT_S)
            assert closed.value.reason == 1009  # message too big
        assert wait_until(lambda: len(app.store) == 0)
    app.close()


# ---- a real third-party client -----------------------------------------------------------------

def test_typescript_sdk_websocket_client_transport(env: Any) -> None:
    """The official TypeScript SDK (npm @modelcontextprotocol/sdk, pinned) on Node 22, whose
    global WebSocket the SDK's WebSocketClientTransport uses."""
    url, app = env
    proc = subprocess.run([node22(), "ws_client.mjs", url], cwd=JS_DIR, env=node_env(),
                          capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["serverInfo"]["name"] == "mcpsync-everything"
    assert {"echo", "add", "sleep_ms"} <= set(out["tools"])
    assert out["echo"]["content"] == [{"type": "text", "text": "hello over ws"}]
    assert out["add"]["structuredContent"] == {"sum": 42}
    assert out["ping"] == {}
    assert wait_until(lambda: len(app.store) == 0)  # the SDK closed; the session ended with it


# ---- raw frames over a real socket (our own framing, the reader hand-over) -------------------

class RawWs:
    """A bare-socket WebSocket client: exact frames in, every server frame out (opcode and
    payload), so the tests see pongs, close codes and fragment handling themselves."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.sock.sendall(upgrade_head(port).replace("Connection: close\r\n", "").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, head
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"Sec-WebSocket-Protocol: mcp" in head

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        from test_wsframe import masked
        self.sock.sendall(masked(opcode, payload, fin=fin))

    def send_json(self, msg: Any) -> None:
        self.send_frame(0x1, json.dumps(msg).encode())

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed by the server"
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        assert b0 & 0x80 and not b1 & 0x80  # server frames: final, unmasked
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        return b0 & 0x0F, self._read(n)

    def message(self) -> dict[str, Any]:
        op, payload = self.frame()
        assert op == 0x1, (op, payload)
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def raw_initialize(c: RawWs) -> None:
    c.send_json(rpc("init", "initialize", {"protocolVersion": "2025-11-25", "capabilities": {
        "elicitation": {}}, "clientInfo": {"name": "raw", "version": "1"}}))
    assert "result" in c.message()
    c.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def test_bad_handshakes_are_refused_without_a_session(env: Any) -> None:
    url, app = env
    port = port_of(url)
    reply = raw_http(port, upgrade_head(port).replace("Version: 13", "Version: 8"))
    assert reply.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13" in reply
    reply = raw_http(port, upgrade_head(port).replace("dGhlIHNhbXBsZSBub25jZQ==", "short"))
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert len(app.store) == 0


def test_fragmented_request_with_a_ping_between_its_fragments(env: Any) -> None:
    url, _ = env
    c = RawWs(port_of(url))
    try:
        raw_initialize(c)
        body = json.dumps(call_tool(1, "echo", text="fragmentéd")).encode()
        c.send_frame(0x1, body[:10], fin=False)
        c.send_frame(0x9, b"are you there")
        c.send_frame(0x0, body[10:20], fin=False)
        c.send_frame(0x0, body[20:])
        assert c.frame() == (0xA, b"are you there")  # the pong, before the reply
        assert c.message()["result"]["content"][0]["text"] == "fragmentéd"
        c.send_frame(0x8, (1000).to_bytes(2, "big"))
        assert c.frame() == (0x8, (1000).to_bytes(2, "big"))  # the close is echoed
    finally:
        c.close()


def test_invalid_utf8_closes_with_1007_and_ends_the_session(env: Any) -> None:
    url, app = env
    c = RawWs(port_of(url))
    try:
        raw_initialize(c)
        assert len(app.store) == 1
        c.send_frame(0x1, b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}')
        op, payload = c.frame()
        assert op == 0x8 and int.from_bytes(payload[:2], "big") == 1007
    finally:
        c.close()
    assert wait_until(lambda: len(app.store) == 0)


def test_a_long_call_run_by_the_reader_hands_reading_over(kind: str) -> None:
    """A request arriving alone is run by the thread that read it; while it runs (here it
    waits for an elicitation answer, which only a reader can deliver) another thread must
    take over the socket: WebSocket pings are answered, other calls are served, and the
    answer reaches the waiting tool. 20 rounds, each one a fresh take-over."""
    srv = Server("ws-handover", "1.0")

    @srv.tool()
    def ask(ctx: Context) -> str:
        """Ask the client for a name."""
        answer = ctx.elicit("name?", {"type": "object", "properties": {"name": {"type": "string"}}})
        return f"hello {answer['content']['name']}" if answer.get("content") else answer["action"]

    @srv.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    app = Service(srv)
    with serving(HttpApp(app), KINDS[kind]) as base:
        c = RawWs(port_of(ws_url(base)))
        try:
            raw_initialize(c)
            for round_no in range(20):
                c.send_json(call_tool(f"ask-{round_no}", "ask"))
                request = c.message()  # the elicitation request, sent by the running tool
                assert request["method"] == "elicitation/create", request
                c.send_frame(0x9, b"ping %d" % round_no)
                assert c.frame() == (0xA, b"ping %d" % round_no)
                c.send_json(call_tool(f"echo-{round_no}", "echo", text="meanwhile"))
                assert c.message()["result"]["content"][0]["text"] == "meanwhile"
                c.send_json({"jsonrpc": "2.0", "id": request["id"],
                             "result": {"action": "accept", "content": {"name": f"n{round_no}"}}})
                reply = c.message()
                assert reply["id"] == f"ask-{round_no}", reply
                assert reply["result"]["content"][0]["text"] == f"hello n{round_no}"
        finally:
            c.close()
        assert wait_until(lambda: len(app.store) == 0)
        assert wait_until(lambda: not worker_threads()), [t.name for t in worker_threads()]
    app.close()


def test_a_client_that_never_reads_is_cut_after_the_write_timeout_under_werkzeug(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On threads of its own (werkzeug), a WebSocket writer waits for a client that does
    not read at most the write timeout (as a parked one does): then the connection is cut
    and its session ends, instead of a worker and the write lock held forever."""
    from mcpsync.streams import ws_parked
    monkeypatch.setattr(ws_parked, "WS_WRITE_TIMEOUT_S", 0.5)
    app = Service(everything)
    with serving(HttpApp(app), "werkzeug") as base:
        hog = RawWs(port_of(base))
        raw_initialize(hog)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        from test_wsframe import masked
        frame = masked(0x1, json.dumps(call_tool(0, "echo", text="z" * 65536)).encode())
        hog.sock.settimeout(0.5)
        try:
            for _ in range(3000):  # ~200 MB offered: the server stops taking them
                hog.sock.sendall(frame)
        except (socket.timeout, BlockingIOError, ConnectionError):
            pass
        assert wait_until(lambda: len(app.store) == 0), "the session of a client that never reads lives on"
        hog.sock.close()
    assert wait_until(lambda: not worker_threads())
    app.close()


def test_a_client_that_reads_slowly_is_not_cut_under_werkzeug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write timeout bounds a wait without progress, not a whole frame: a reply much
    bigger than the socket buffers reaches a client that reads it in small pieces, each
    read well inside the timeout, although the whole takes several timeouts."""
    from mcpsync.streams import ws_parked
    from mcpsync import Server
    monkeypatch.setattr(ws_parked, "WS_WRITE_TIMEOUT_S", 1.0)
    server = Server("big")

    @server.tool()
    def big(n: int) -> str:
        """n bytes of text."""
        return "y" * n

    app = Service(server)
    with serving(HttpApp(app), "werkzeug") as base:
        slow = RawWs(port_of(base))
        raw_initialize(slow)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        size = 8 << 20  # more than the server's send buffer can take (4 MiB at most)
        slow.send_json(call_tool(1, "big", n=size))
        got = len(slow.buf)
        started = time.monotonic()
        while got < size:  # a slow reader: at most 32 KiB every 10 ms
            chunk = slow.sock.recv(32768)
            assert chunk, "the server cut a client that was reading"
            got += len(chunk)
            time.sleep(0.01)  # pacing the reader (the behaviour under test), not a wait for an event
        assert time.monotonic() - started > 1.0  # the reply took longer than one timeout
        assert len(app.store) == 1
        slow.sock.close()
    app.close()
