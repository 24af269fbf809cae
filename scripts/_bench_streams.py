"""Open streams at scale, for ``scripts/bench.py``: ``ws-idle-5k`` (5,000 WebSockets that
initialized and subscribed to a resource, then idle), ``listen-5k`` (5,000 2026-07-28
``subscriptions/listen`` streams for that resource) and ``sse-1k`` (1,000 sessions, each
subscribed, each with its ``GET /mcp`` SSE stream open), each against a fresh server process.

While they are open: the server's threads and its RSS growth per stream, and ``/healthz``
answered meanwhile (20 probes, each on a new connection). Then one client calls
``touch_resource`` for the resource and the time until every stream has received its
``notifications/resources/updated`` is measured (one selector reads all the sockets).

Client sockets are raw (stdlib only), spread over the loopback source addresses of the
floods (127.0.0.2 …) so that a per-address cap sees several clients; opened from a few
threads; every read has a deadline.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import _floods
from _wire import OP_TEXT, encode_frame

STREAM_SCENARIOS = {"ws-idle-5k": 5_000, "listen-5k": 5_000, "sse-1k": 1_000}  # --quick: a tenth
URI = "bench://parked"
MARK = b"notifications/resources/updated"
OPENERS = 16              # threads opening streams
STEP_TIMEOUT_S = 30.0     # one stream's setup, one read
FANOUT_TIMEOUT_S = 120.0  # every stream has its notification within this
HEALTH_PROBES = 20
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench-streams", "version": "1"}}


@dataclass
class StreamReport:
    """What a server did with ``wanted`` open streams of one kind."""

    wanted: int
    opened: int                      # streams set up and waiting
    failures: list[str] = field(default_factory=list)
    threads: int = 0                 # the server's threads while they waited
    kib_per_stream: float = 0.0
    health_ms: list[float] = field(default_factory=list)  # /healthz meanwhile
    fanout_s: float = float("nan")   # touch_resource sent -> the last stream has the update
    received: int = 0                # streams that got it within FANOUT_TIMEOUT_S


def measure(kind: str, url: str, pid: int, count: int) -> StreamReport:
    """Open ``count`` streams of ``kind`` (``ws``, ``listen``, ``sse``) against ``url``."""
    host, port = _address(url)
    _floods.raise_nofile(count + 1024)
    opener = {"ws": _open_ws, "listen": _open_listen, "sse": _open_sse}[kind]
    report = StreamReport(count, 0)
    rss0 = _floods.rss_kib(pid)
    socks: list[socket.socket] = []
    try:
        with ThreadPoolExecutor(OPENERS, thread_name_prefix="bench-open") as pool:
            for result in pool.map(lambda i: _try(opener, host, port, i), range(count)):
                if isinstance(result, socket.socket):
                    socks.append(result)
                else:
                    report.failures.append(result)
        report.opened = len(socks)
        report.threads = _floods.process_threads(pid)
        report.kib_per_stream = (_floods.rss_kib(pid) - rss0) / max(len(socks), 1)
        report.health_ms = [_healthz_ms(host, port) for _ in range(HEALTH_PROBES)]
        report.threads = max(report.threads, _floods.process_threads(pid))
        report.fanout_s, report.received = _fanout(url, socks)
    finally:
        for sock in socks:
            sock.close()
    return report


def _try(opener: Callable[[str, int, int], socket.socket], host: str, port: int,
         i: int) -> socket.socket | str:
    try:
        return opener(host, port, i)
    except (OSError, ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"[:160]


# ---- the three kinds of stream ------------------------------------------------------------------

def _open_ws(host: str, port: int, i: int) -> socket.socket:
    """A WebSocket that initialized, subscribed to ``URI`` and now idles."""
    sock = _floods._connect(host, port, i)
    try:
        sock.settimeout(STEP_TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n").encode())
        rest = _read_until(sock, b"\r\n\r\n")
        if not rest.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {rest[:60]!r}")
        _ws_send(sock, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench-streams", "version": "1"}}})
        _read_until(sock, b'"id":1', rest)
        _ws_send(sock, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _ws_send(sock, {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",
                        "params": {"uri": URI}})
        _read_until(sock, b'"id":2')
    except BaseException:
        sock.close()
        raise
    return sock


def _ws_send(sock: socket.socket, msg: Any) -> None:
    sock.sendall(encode_frame(OP_TEXT, json.dumps(msg, separators=(",", ":")).encode()))


def _open_listen(host: str, port: int, i: int) -> socket.socket:
    """A 2026-07-28 listen stream for ``URI``, acknowledged."""
    body = json.dumps({"jsonrpc": "2.0", "id": f"L{i}", "method": "subscriptions/listen",
                       "params": {"notifications": {"resourceSubscriptions": [URI]},
                                  "_meta": ENVELOPE}}).encode()
    sock = _floods._connect(host, port, i)
    try:
        sock.settimeout(STEP_TIMEOUT_S)
        sock.sendall((f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                      f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\n"
                      f"Mcp-Method: subscriptions/listen\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                     + body)
        _read_until(sock, b"notifications/subscriptions/acknowledged")
    except BaseException:
        sock.close()
        raise
    return sock


def _open_sse(host: str, port: int, i: int) -> socket.socket:
    """A session subscribed to ``URI`` (set up on a connection of its own) and its open
    ``GET /mcp`` stream."""
    setup = http.client.HTTPConnection(host, port, timeout=STEP_TIMEOUT_S,
                                       source_address=_floods._source(i, host))
    try:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        setup.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                                             "clientInfo": {"name": "bench", "version": "1"}}}),
                      headers)
        resp = setup.getresponse()
        result = json.loads(resp.read())["result"]
        headers["Mcp-Session-Id"] = resp.getheader("Mcp-Session-Id") or ""
        headers["MCP-Protocol-Version"] = result["protocolVersion"]
        for msg in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": URI}}):
            setup.request("POST", "/mcp", json.dumps(msg), headers)
            setup.getresponse().read()
    finally:
        setup.close()
    sock = _floods._connect(host, port, i)
    try:
        sock.settimeout(STEP_TIMEOUT_S)
        sock.sendall((f"GET /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                      f"Mcp-Session-Id: {headers['Mcp-Session-Id']}\r\n"
                      f"MCP-Protocol-Version: {headers['MCP-Protocol-Version']}\r\n\r\n").encode())
        _read_until(sock, b": stream open")
    except BaseException:
        sock.close()
        raise
    return sock


# ---- measuring ------------------------------------------------------------------------------------

def _fanout(url: str, socks: list[socket.socket]) -> tuple[float, int]:
    """Call touch_resource(URI); seconds until every socket has the update, and how many did."""
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        pending[sock] = b""
    host, port = _address(url)
    caller = http.client.HTTPConnection(host, port, timeout=STEP_TIMEOUT_S)
    body = json.dumps({"jsonrpc": "2.0", "id": "touch", "method": "tools/call",
                       "params": {"name": "touch_resource", "arguments": {"uri": URI},
                                  "_meta": ENVELOPE}})
    started = time.perf_counter()
    last = started
    try:
        caller.request("POST", "/mcp", body, {
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "touch_resource"})
        caller.getresponse().read()
        deadline = started + FANOUT_TIMEOUT_S
        while pending and time.perf_counter() < deadline:
            for key, _ in sel.select(max(deadline - time.perf_counter(), 0.0)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                seen = pending[sock] + data
                if MARK in seen or not data:
                    sel.unregister(sock)
                    del pending[sock]
                    if data:
                        last = time.perf_counter()
                else:
                    pending[sock] = seen[-len(MARK):]
    finally:
        caller.close()
        sel.close()
    received = len(socks) - len(pending)
    return (last - started) if received == len(socks) else float("nan"), received


def _healthz_ms(host: str, port: int) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=STEP_TIMEOUT_S)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"/healthz: HTTP {resp.status}")
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def _read_until(sock: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    """Read until ``marker`` has come (within STEP_TIMEOUT_S); what came after it."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while marker not in buf:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {marker!r} within {STEP_TIMEOUT_S:g} s")
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"closed before {marker!r}: {buf[-120:]!r}")
        buf += data
    return buf if marker == b"\r\n\r\n" else buf.split(marker, 1)[1]


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80
