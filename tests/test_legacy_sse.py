"""The deprecated HTTP+SSE transport of revision 2024-11-05 (GET /sse + POST /messages) over real
sockets: the endpoint event, 202 answers with replies on the stream, status codes, Origin
checks, the session's end with its stream, and the official Python SDK's ``sse_client``.

Every wait is bounded: sockets carry a timeout, and conditions the server reaches on its own
threads are polled against a deadline.
"""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp
from httpserver import serving
from rpcutil import call_tool, rpc
from rpcutil import wait_until as _wait_until

from mcpsync.service import Service
from mcpsync.examples.everything import server as everything
from mcpsync.http.app import HttpApp

WAIT_S = 10.0
SDK_DEPRECATION = "ignore::mcp.shared.exceptions.MCPDeprecationWarning"
ENDPOINT = re.compile(r"/messages\?session_id=([A-Za-z0-9_-]{22,})")


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    return _wait_until(predicate, timeout)


class SseStream:
    """One ``GET /sse`` response, read event by event (http.client undoes the chunking)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        self.conn.request("GET", "/sse", headers={"Accept": "text/event-stream", **(headers or {})})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.endpoint = ""
        self.session_id = ""
        if self.status == 200:
            first = self.next_event()
            assert first["event"] == "endpoint", first
            self.endpoint = first["data"]
            match = ENDPOINT.fullmatch(self.endpoint)
            assert match, self.endpoint
            self.session_id = match.group(1)

    def next_event(self) -> dict[str, Any]:
        """The next event (comment-only blocks such as keep-alives skipped); ``data`` of a
        ``message`` event is decoded JSON. Each read waits up to the socket timeout."""
        while True:
            fields: dict[str, Any] = {}
            data: list[str] = []
            while True:
                line = self.resp.readline().decode()
                assert line, "the stream ended"
                line = line.rstrip("\r\n")
                if not line:
                    break
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if key == "data":
                    data.append(value)
                else:
                    fields[key] = value
            if not data and not fields:
                continue
            fields.setdefault("event", "message")
            text = "\n".join(data)
            fields["data"] = json.loads(text) if fields["event"] == "message" else text
            return fields

    def next_message(self) -> dict[str, Any]:
        ev = self.next_event()
        assert ev["event"] == "message", ev
        return ev["data"]

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> "SseStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Poster:
    """A keep-alive connection for the POSTs of one legacy client."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)

    def post(self, target: str, msg: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        body = raw if raw is not None else json.dumps(msg).encode()
        self.conn.request("POST", target, body=body,
                          headers={"Content-Type": "application/json", **(headers or {})})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def request(self, method: str, target: str) -> int:
        self.conn.request(method, target)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Poster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@pytest.fixture()
def env() -> Iterator[tuple[int, Service]]:
    app = Service(everything)
    with serving(HttpApp(app)) as base:
        yield int(base.rsplit(":", 1)[1]), app
    app.close()


def initialize(stream: SseStream, poster: Poster, version: str = "2024-11-05") -> dict[str, Any]:
    status, body = poster.post(stream.endpoint, rpc(0, "initialize", {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "legacy-tests", "version": "1"}}))
    assert (status, body) == (202, b"")
    reply = stream.next_message()
    assert reply["id"] == 0, reply
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert poster.post(stream.endpoint, initialized)[0] == 202
    return reply["result"]


def end_by_writing(poster: Poster, endpoint: str, app: Service, sid: str) -> bool:
    """A vanished client is noticed when a write to its stream fails: keep making the server
    write (a ping's answer goes to the stream) until the session is gone. Bounded."""
    deadline = time.monotonic() + WAIT_S
    n = 0
    while app.store.get(sid) is not None:
        if time.monotonic() >= deadline:
            return False
        n += 1
        status, _ = poster.post(endpoint, rpc(f"probe-{n}", "ping"))
        assert status in (202, 404)
    return True


# ---- the happy path ---------------------------------------------------------------------------

def test_endpoint_event_first_then_replies_arrive_on_the_stream(env: Any) -> None:
    port, app = env
    with SseStream(port) as stream, Poster(port) as poster:
        assert stream.status == 200
        assert stream.resp.getheader("Content-Type") == "text/event-stream"
        assert stream.resp.getheader("Cache-Control", "").startswith("no-cache")
        assert app.store.get(stream.session_id) is not None
        result = initialize(stream, poster)
        assert result["protocolVersion"] == "2024-11-05"
        assert result["serverInfo"]["name"] == "mcpsync-everything"

        assert poster.post(stream.endpoint, rpc(1, "tools/list")) == (202, b"")
        reply = stream.next_message()
        assert reply["id"] == 1
        assert {"echo", "add", "sleep_ms"} <= {t["name"] for t in reply["result"]["tools"]}

        assert poster.post(stream.endpoint, call_tool(2, "echo", text="hello")) == (202, b"")
        assert stream.next_message() == {"jsonrpc": "2.0", "id": 2,
                                         "result": {"content": [{"type": "text", "text": "hello"}]}}
        # The TypeScript SDK's spelling of the parameter works too.
        alias = f"/messages?sessionId={stream.session_id}"
        assert poster.post(alias, call_tool(3, "add", a=1, b=2))[0] == 202
        assert json.loads(stream.next_message()["result"]["content"][0]["text"]) == {"sum": 3}
        # A message not tied to a request goes to the same stream.
        assert poster.post(stream.endpoint, rpc(4, "resources/subscribe",
                                                {"uri": "test://watched-resource"}))[0] == 202
        assert stream.next_message()["id"] == 4
        assert poster.post(stream.endpoint, call_tool(5, "touch_watched_resource"))[0] == 202
        got = {m.get("method", "reply"): m for m in (stream.next_message(), stream.next_message())}
        updated = got["notifications/resources/updated"]
        assert updated["params"] == {"uri": "test://watched-resource"}
        assert got["reply"]["id"] == 5
        assert len(app.store) == 1


def test_a_newer_revision_negotiates_over_the_legacy_transport_too(env: Any) -> None:
    port, _ = env
    with SseStream(port) as stream, Poster(port) as poster:
        assert initialize(stream, poster, "2025-11-25")["protocolVersion"] == "2025-11-25"
        assert poster.post(stream.endpoint, call_tool(1, "add", a=2, b=3))[0] == 202
        assert stream.next_message()["result"]["structuredContent"] == {"sum": 5}


def test_slow_call_does_not_hold_the_post_and_can_be_cancelled(env: Any) -> None:
    port, app = env
    with SseStream(port) as stream, Poster(port) as poster:
        initialize(stream, poster)
        conn = app.connection(app.store.get(stream.session_id))  # type: ignore[arg-type]
        assert poster.post(stream.endpoint, call_tool("slow", "sleep_ms", ms=30_000)) == (202, b"")
        assert wait_until(lambda: conn.inflight_count() == 1)
        assert poster.post(stream.endpoint, rpc("p1", "ping"))[0] == 202
        assert stream.next_message() == {"jsonrpc": "2.0", "id": "p1", "result": {}}
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": "slow"}}
        assert poster.post(stream.endpoint, cancel) == (202, b"")
        assert wait_until(lambda: conn.inflight_count() == 0)  # long before the 30 s are up
        assert poster.post(stream.endpoint, rpc("p2", "ping"))[0] == 202
        assert stream.next_message()["id"] == "p2"  # and nothing for "slow" before it


# ---- refusals ---------------------------------------------------------------------------------

def test_post_errors(env: Any) -> None:
    port, app = env
    with SseStream(port) as stream, Poster(port) as poster:
        initialize(stream, poster)
        status, body = poster.post("/messages", rpc(1, "ping"))
        assert status == 400 and json.loads(body)["error"]["message"]
        status, body = poster.post("/messages?session_id=", rpc(1, "ping"))
        assert status == 400
        status, body = poster.post("/messages?session_id=no-such-session", rpc(1, "ping"))
        assert status == 404 and json.loads(body)["error"]["code"] == -32001
        status, body = poster.post(stream.endpoint, raw=b"{not json")
        assert status == 400 and json.loads(body)["error"]["code"] == -32700
        status, _ = poster.post(stream.endpoint, rpc(1, "ping"),
                                headers={"Content-Type": "text/plain"})
        assert status == 415
        assert poster.request("GET", stream.endpoint) == 405
        assert poster.request("POST", "/sse") == 405
        # A Streamable HTTP session is not a legacy one.
        with HttpMcp(f"http://127.0.0.1:{port}/mcp") as modern:
            modern.initialize()
            status, _ = poster.post(f"/messages?session_id={modern.session_id}", rpc(1, "ping"))
            assert status == 404
            assert modern.delete().status == 200
        # None of that disturbed the session.
        assert poster.post(stream.endpoint, rpc(9, "ping"))[0] == 202
        assert stream.next_message()["id"] == 9
        assert len(app.store) == 1


def test_bad_origin_is_403_for_both_endpoints(env: Any) -> None:
    port, app = env
    evil = {"Origin": "http://evil.example.com"}
    refused = SseStream(port, evil)
    assert refused.status == 403
    refused.close()
    assert len(app.store) == 0  # refused before a session was created
    with SseStream(port, {"Origin": f"http://localhost:{port}"}) as stream, Poster(port) as poster:
        assert stream.status == 200
        assert stream.resp.getheader("Access-Control-Allow-Origin") == f"http://localhost:{port}"
        assert poster.post(stream.endpoint, rpc(1, "ping"), headers=evil)[0] == 403
        initialize(stream, poster)


def test_closing_the_stream_ends_the_session(env: Any) -> None:
    """The client drops its GET stream; the next writes to it fail and the session ends, with
    its in-flight call cancelled."""
    port, app = env
    stream = SseStream(port)
    with Poster(port) as poster:
        initialize(stream, poster)
        sid, endpoint = stream.session_id, stream.endpoint
        conn = app.connection(app.store.get(sid))  # type: ignore[arg-type]
        assert poster.post(endpoint, call_tool("slow", "sleep_ms", ms=30_000))[0] == 202
        assert wait_until(lambda: conn.inflight_count() == 1)
        stream.close()
        assert end_by_writing(poster, endpoint, app, sid)
        assert len(app.store) == 0
        assert wait_until(lambda: conn.closed and conn.inflight_count() == 0)
        status, body = poster.post(endpoint, rpc("late", "ping"))
        assert status == 404 and json.loads(body)["error"]["code"] == -32001
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith("mcpsync-sse-worker")])


# ---- a real third-party client ------------------------------------------------------------------

@pytest.mark.filterwarnings(SDK_DEPRECATION)
def test_official_python_sdk_sse_client(env: Any) -> None:
    mcp = pytest.importorskip("mcp")  # noqa: F841
    anyio = pytest.importorskip("anyio")
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    port, app = env
    sessions: list[str] = []
    seen: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(WAIT_S * 3):
            await session_body()

    async def session_body() -> None:
        async with sse_client(f"http://127.0.0.1:{port}/sse", timeout=WAIT_S,
                              sse_read_timeout=WAIT_S * 2,
                              on_session_created=sessions.append) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                seen["version"] = init.protocol_version
                seen["server"] = init.server_info.name
                seen["tools"] = {t.name for t in (await session.list_tools()).tools}
                r = await session.call_tool("echo", {"text": "over legacy sse"})
                seen["echo"] = (r.is_error, r.content[0].text)  # type: ignore[union-attr]
                r = await session.call_tool("add", {"a": 1.5, "b": 2})
                seen["add"] = r.structured_content
                seen["live"] = len(app.store)

    anyio.run(main)
    assert seen["version"] in ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
    assert seen["server"] == "mcpsync-everything"
    assert {"echo", "add", "sleep_ms"} <= seen["tools"]
    assert seen["echo"] == (False, "over legacy sse")
    assert seen["add"] == {"sum": 3.5}
    assert seen["live"] == 1 and len(sessions) == 1
    with Poster(port) as poster:  # the SDK closed its stream: the session ends with it
        assert end_by_writing(poster, f"/messages?session_id={sessions[0]}", app, sessions[0])
