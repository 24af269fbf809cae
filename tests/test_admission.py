"""One admission control for every transport (issue 13, findings 2-4): the same per-session and
total in-flight limits, the same metrics and a refusal in each transport's own terms, over real
sockets and a real stdio subprocess; a WebSocket client that never reads gets a bounded number
of threads; metric labels and access-log lines cannot be chosen by a client."""
from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp
from httpserver import serving
from rpcutil import call_tool, rpc, wait_until
from test_legacy_sse import Poster, SseStream, initialize as sse_initialize
from test_stdio import Child, spawn  # noqa: F401 - the fixture
from test_websocket import RawWs, raw_initialize

from mcpsync import Context, Server
from mcpsync.errors import OVERLOADED
from mcpsync.service import Service
from mcpsync.examples.everything import server as everything
from mcpsync.streams.stream import STREAM_WORKERS
from mcpsync.http.app import HttpApp

WAIT_S = 10.0
PER_SESSION, TOTAL = 4, 6


class Holding:
    """A server whose ``hold`` tool blocks until released; ``entered`` counts calls inside."""

    def __init__(self) -> None:
        self.server = Server("admission")
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

        @self.server.tool()
        def hold(ctx: Context) -> str:
            """Blocks until the test releases it."""
            self.entered.release()
            self.release.wait(WAIT_S)
            return "done"

    def wait_entered(self, n: int) -> None:
        for _ in range(n):
            assert self.entered.acquire(timeout=WAIT_S)


@pytest.fixture()
def held() -> Iterator[tuple[int, Service, Holding]]:
    h = Holding()
    app = Service(h.server, max_inflight=TOTAL, max_inflight_per_session=PER_SESSION)
    try:
        with serving(HttpApp(app)) as base:
            yield int(base.rsplit(":", 1)[1]), app, h
            h.release.set()
    finally:
        h.release.set()
        app.close()


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def refusals(c: RawWs, n: int) -> list[dict[str, Any]]:
    return [c.message() for _ in range(n)]


def test_websocket_calls_past_the_session_limit_are_refused_with_a_json_rpc_error(held: Any) -> None:
    port, app, h = held
    c = RawWs(port)
    try:
        raw_initialize(c)
        for i in range(PER_SESSION + 2):  # pipelined: nothing is read meanwhile
            c.send_json(call_tool(i, "hold"))
        h.wait_entered(PER_SESSION)
        refused = refusals(c, 2)
        assert {m["id"] for m in refused} == {PER_SESSION, PER_SESSION + 1}
        for m in refused:
            assert m["error"]["code"] == OVERLOADED
            assert "in flight for this session" in m["error"]["message"]
            assert m["error"]["data"]["retryAfterMs"] == 1000
        assert app.admission.inflight == PER_SESSION
        assert metric(port, "mcpsync_inflight_requests") == PER_SESSION
        h.release.set()
        done = [c.message() for _ in range(PER_SESSION)]
        assert sorted(m["id"] for m in done) == list(range(PER_SESSION))
        assert wait_until(lambda: app.admission.inflight == 0, WAIT_S)
    finally:
        c.close()


def test_the_total_limit_spans_websocket_and_http(held: Any) -> None:
    port, app, h = held
    a, b = RawWs(port), RawWs(port)
    try:
        raw_initialize(a)
        raw_initialize(b)
        for i in range(PER_SESSION):
            a.send_json(call_tool(i, "hold"))
        h.wait_entered(PER_SESSION)
        for i in range(TOTAL - PER_SESSION):
            b.send_json(call_tool(i, "hold"))
        h.wait_entered(TOTAL - PER_SESSION)
        b.send_json(call_tool("over", "hold"))
        refused = b.message()
        assert refused["id"] == "over" and refused["error"]["code"] == OVERLOADED
        assert "on this server" in refused["error"]["message"]
        with HttpMcp(f"http://127.0.0.1:{port}/mcp") as http:
            http.initialize()
            busy = http.post(rpc(1, "ping"))
            assert busy.status == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == OVERLOADED
        assert metric(port, "mcpsync_refused_requests") == 2
        h.release.set()
        for c, n in ((a, PER_SESSION), (b, TOTAL - PER_SESSION)):
            assert all("result" in c.message() for _ in range(n))
    finally:
        a.close()
        b.close()


def test_legacy_messages_past_the_session_limit_are_503(held: Any) -> None:
    port, app, h = held
    with SseStream(port) as stream, Poster(port) as poster:
        sse_initialize(stream, poster)
        for i in range(PER_SESSION):
            status, _ = poster.post(stream.endpoint, call_tool(i, "hold"))
            assert status == 202
        h.wait_entered(PER_SESSION)
        status, body = poster.post(stream.endpoint, call_tool("over", "hold"))
        assert status == 503 and json.loads(body)["error"]["code"] == OVERLOADED
        # A notification is no request: it is still accepted.
        status, _ = poster.post(stream.endpoint, {"jsonrpc": "2.0", "method": "notifications/x"})
        assert status == 202
        h.release.set()
        assert sorted(stream.next_message()["id"] for _ in range(PER_SESSION)) == list(range(PER_SESSION))
    assert wait_until(lambda: app.admission.inflight == 0, WAIT_S)


def test_stdio_calls_past_the_session_limit_are_refused(spawn: Callable[..., Child]) -> None:
    child = spawn("--stdio")
    child.initialize()
    limit = 64
    for i in range(limit + 3):
        child.request("tools/call", {"name": "sleep_ms", "arguments": {"ms": 60000}}, rid=f"s{i}")
    for i in range(limit, limit + 3):
        reply = child.response(f"s{i}")
        assert reply["error"]["code"] == OVERLOADED, reply
    for i in range(limit):  # the admitted ones are running: cancel them, no reply follows
        child.notify("notifications/cancelled", {"requestId": f"s{i}"})
    # The slots come back as the cancelled calls end (on their own threads): poll with ping.
    assert wait_until(lambda: "result" in child.response(child.request("ping")), WAIT_S)
    assert not any(child.has_response(f"s{i}") for i in range(limit))
    assert child.close_stdin_and_wait() == 0


# ---- finding 3: a WebSocket client that never reads ---------------------------------------------

def ws_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("mcpsync-ws"))


def test_a_websocket_client_that_never_reads_gets_bounded_threads() -> None:
    app = Service(everything)
    with serving(HttpApp(app)) as base:
        port = int(base.rsplit(":", 1)[1])
        c = RawWs(port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw_initialize(c)
        text = "x" * 20_000
        sent = 0
        stop = threading.Event()
        peak = [0]

        def flood() -> None:
            nonlocal sent
            c.sock.settimeout(2.0)  # the server stops reading us: our send blocks, then ends
            try:
                while sent < 3000 and not stop.is_set():
                    c.send_json(call_tool(sent, "echo", text=text))
                    sent += 1
            except OSError:
                pass

        sender = threading.Thread(target=flood, name="test-flood")
        sender.start()
        try:
            sender.join(WAIT_S * 3)
            assert not sender.is_alive()
            peak[0] = ws_threads()
            assert sent < 3000, "the server kept reading a client that never reads"
            assert peak[0] <= STREAM_WORKERS + 4, peak[0]
            assert app.admission.inflight <= app.admission.max_inflight_per_session
        finally:
            stop.set()
            c.close()  # unread replies: a reset, which ends the blocked writes
        assert wait_until(lambda: ws_threads() == 0 or all(
            not t.name.startswith("mcpsync-ws-worker") for t in threading.enumerate()), WAIT_S * 2)
        assert wait_until(lambda: len(app.store) == 0, WAIT_S * 2)
    app.close()


# ---- finding 4: metric labels from a closed set, log lines escaped ------------------------------

def test_client_chosen_methods_do_not_become_metric_series_or_log_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Service(everything)
    with serving(HttpApp(app)) as base, HttpMcp(f"{base}/mcp") as c:
        port = int(base.rsplit(":", 1)[1])
        c.initialize()
        with caplog.at_level(logging.INFO, logger="mcpsync.access"):
            for i in range(50):
                c.post(rpc(i, f"x{i}/" + "m" * 10_000))
            c.post(rpc("forge", "ping\nINFO mcpsync.access: session=admin method=tools/call"))
        with urllib.request.urlopen(f"{base}/metrics", timeout=WAIT_S) as resp:
            text = resp.read().decode()
        assert len(text) < 20_000, len(text)
        assert 'method="other"' in text and "mmmmm" not in text
        lines = [r.getMessage() for r in caplog.records if r.name == "mcpsync.access"]
        assert len(lines) == 51 and all("\n" not in line for line in lines)
        assert all(len(line) < 400 for line in lines)
        assert any("ping\\nINFO" in line for line in lines)
        assert port
    app.close()
