"""WebSocket connections parked in the front end's dispatcher (``streams/ws_parked.py``):
idle ones cost no thread, pings are answered without a worker, a notification reaches all,
a client that never reads is not read either (bounded memory, others unaffected), and a
shutdown closes each with a close frame. Real sockets on 127.0.0.1, a bare-socket client;
CI-sized counts (``scripts/bench.py`` ws-idle-5k has the full size). Every wait is bounded."""
from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from httpclient import HttpMcp
from rpcutil import call_tool, wait_until
from test_parked_streams import (COUNT, WAIT_S, Env, enough_descriptors,  # noqa: F401 (fixtures)
                                 env, mcpsync_threads)
from test_websocket import RawWs, raw_initialize

from mcpsync.streams import ws_parked


def test_idle_websockets_cost_no_thread_and_all_hear_a_change(env: Env) -> None:
    clients = []
    try:
        for _ in range(COUNT):
            c = RawWs(env.port)
            raw_initialize(c)
            clients.append(c)
        assert wait_until(lambda: env.front.dispatcher.counts["stream"] == COUNT, WAIT_S)
        assert wait_until(lambda: sum(conn.phase == "ready"  # (their initialized notes
                                      for conn in env.service.server.connections()) == COUNT,
                          WAIT_S)                          # are taken in by workers)
        assert wait_until(lambda: env.front.pool.stats().busy_slots == 0, WAIT_S)
        threads = mcpsync_threads()
        assert len(threads) <= 1 + env.front.limits.workers + 1, threads  # (+ the session reaper)
        env.service.server.add_tool(lambda: "n", name="new_tool", description="A change.")
        for c in clients:
            assert c.message()["method"] == "notifications/tools/list_changed"
        started = env.front.pool.stats().started
        for c in clients[:50]:  # pings are the dispatcher's: no worker runs for them
            c.send_frame(0x9, b"are you there")
            assert c.frame() == (0xA, b"are you there")
        assert env.front.pool.stats().started == started
        c = clients[0]
        c.send_json(call_tool(1, "echo", text="still served"))
        assert c.message()["result"]["content"][0]["text"] == "still served"
    finally:
        for c in clients:
            c.close()
    assert wait_until(lambda: len(env.service.store) == 0, WAIT_S)
    assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 0, WAIT_S)


def test_a_client_that_never_reads_is_not_read_and_costs_bounded_memory(env: Env) -> None:
    """Requests whose replies are 64 KiB each, sent without reading any: the replies fill
    the socket, the write buffer and the outbox; then the writers wait, the session's
    in-flight share fills, and the server stops reading the client's frames (its sends
    block). Others are served meanwhile; closing the client ends it all."""
    hog = RawWs(env.port)
    raw_initialize(hog)
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = json.dumps(call_tool(0, "echo", text="z" * 65536)).encode()
    from test_wsframe import masked
    frame = masked(0x1, request)
    hog.sock.settimeout(0.5)
    sent = 0
    try:
        for _ in range(3000):  # ~200 MB offered: the server must stop taking them
            hog.sock.sendall(frame)
            sent += 1
    except (socket.timeout, BlockingIOError):
        pass
    assert 0 < sent < 3000
    parked = _parked_connections(env)
    assert len(parked) == 1
    ws, chan = parked[0]
    limit = env.front.limits.write_buffer
    outbox = ws_parked.WS_OUTBOX_BYTES
    assert len(chan.out) <= limit + outbox + 2 * len(frame)  # (one poll takes the outbox)
    assert ws._out_bytes <= outbox + 2 * len(frame)
    assert len(ws._inbox) <= ws_parked.WS_INBOX_MESSAGES
    assert not ws.readable or len(chan.out) >= limit  # why it is not read
    with _Client(env.port) as other:
        other.send_json(call_tool(1, "echo", text="unaffected"))
        assert other.message()["result"]["content"][0]["text"] == "unaffected"
    hog.close()
    assert wait_until(lambda: len(env.service.store) == 0, WAIT_S)
    assert wait_until(lambda: env.front.dispatcher.counts["stream"] == 0, WAIT_S)
    assert wait_until(lambda: env.service.admission._total == 0, WAIT_S)


def test_shutdown_closes_parked_websockets_with_1001() -> None:
    e = Env()
    clients = []
    for _ in range(5):
        c = RawWs(e.port)
        raw_initialize(c)
        clients.append(c)
    assert wait_until(lambda: e.front.dispatcher.counts["stream"] == 5, WAIT_S)
    assert e.stop()  # drains: each connection closes itself, nothing had to be cut
    for c in clients:
        op, payload = c.frame()
        assert op == 0x8 and int.from_bytes(payload[:2], "big") == 1001
        c.close()
    assert wait_until(lambda: mcpsync_threads() == [], WAIT_S), mcpsync_threads()


def test_a_peer_that_stops_answering_pings_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpsync.http.app import HttpApp
    from mcpsync.streams.websocket import serve_websocket
    e = Env()
    wsgi: HttpApp = e.wsgi
    wsgi.routes["/ws"] = lambda environ, start_response: serve_websocket(
        e.service, environ, start_response, open_session=wsgi.open_session, ping_interval_s=0.05)
    try:
        c = RawWs(e.port)
        raw_initialize(c)
        while True:  # pings come; the client never answers them
            op, payload = c.frame()
            if op == 0x8:
                assert int.from_bytes(payload[:2], "big") == 1008
                break
            assert op == 0x9
        c.close()
        assert wait_until(lambda: len(e.service.store) == 0, WAIT_S)
    finally:
        assert e.stop()


class _Client(RawWs):
    """A RawWs that initializes on entry and closes on exit."""

    def __enter__(self) -> _Client:
        raw_initialize(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _parked_connections(env: Env) -> list[tuple[Any, Any]]:
    return [(chan.stream, chan) for chan in list(env.front.dispatcher._chans.values())
            if isinstance(chan.stream, ws_parked.ParkedWebSocket)]


def test_a_new_connection_never_takes_an_old_ones_event() -> None:
    """Descriptor numbers are reused at once: a connection closed in one dispatcher turn
    and a new one accepted in the same turn share a number, and the closed one's last
    event (its peer's hang-up) must not be taken for the new one's (which, pipelining past
    its inbox, would then be dropped as gone). The attack script's WebSocket flood (an HTTP
    request on a connection closed just before the WebSocket opens; pipelined calls past
    the in-flight limit), 20 rounds against the CLI's server and its front end."""
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
    import attack
    from _attacks import Options
    from cliserver import mcpsync_cli
    opts = Options(deadline_s=30.0, slow_ms=50)
    with mcpsync_cli() as srv:
        for _ in range(20):
            verdict = attack.run(srv.url, ["ws-inflight-per-session"], opts)[0]
            assert verdict.status == "PASS", verdict.line()
