"""Load-client code shared by ``scripts/stress.py`` and ``scripts/bench.py`` (stdlib + simple-websocket).

Theory of operation
-------------------
A *client* is one MCP session spoken over one connection by one thread: ``HttpSession`` is
a keep-alive ``http.client`` connection to a Streamable HTTP endpoint (several of them may
share one session id), ``WsSession`` one WebSocket (subprotocol ``mcp``). Neither is
thread-safe; each is owned by the worker thread that made it.

Every reply is checked, and what can go wrong comes in two kinds:

* ``Broken``: the server answered, but wrongly: the reply's id is not the request's, a
  result is not what the tool must return (``echo`` must give back exactly the text sent,
  and the texts are unique per request, so an answer meant for another request or session
  shows up), a session id repeats. These are the invariants a stress run exists to check.
* ``Failed``: the request did not complete: connection refused or dropped, a timeout, an
  HTTP error status, a JSON-RPC error where a result was due.

``closed_loop`` runs N worker threads, each repeating one ``step`` as fast as its replies
come back, bounded both by a request count and by a deadline; each worker keeps its own
``Stats`` (no lock on the hot path) and they are merged after the threads are joined.
Throughput counts completions inside the measuring window (after an optional warm-up).
"""
from __future__ import annotations

import http.client
import ipaddress
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import urlsplit, urlunsplit

PROTOCOL_VERSION = "2025-11-25"    # newest revision with the initialize handshake
CLIENT_INFO = {"name": "mcpsync-loadclient", "version": "1"}
ACCEPT = "application/json, text/event-stream"
REQUEST_TIMEOUT_S = 30.0           # per request: connect, send, and the whole reply
START_TIMEOUT_S = 60.0             # workers wait this long at the start barrier
JOIN_GRACE_S = REQUEST_TIMEOUT_S + 5.0  # after the deadline, how long joining a worker may take
MAX_SAMPLES = 10                   # failure messages kept per Stats (the rest are only counted)
WS_PATH = "/ws"

# Request ids are unique across every client of the process, so clients that share a session
# (many connections, one Mcp-Session-Id) never reuse an id in it. next() on a count is atomic.
_request_ids = itertools.count(1)


class Broken(Exception):
    """A broken invariant: the server answered, but not what it must answer."""


class Failed(Exception):
    """A request that did not complete (transport error, HTTP error status, JSON-RPC error)."""


# ---- URLs -----------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1). Resolves nothing else."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ws_url_for(http_url: str) -> str:
    """ws://host:port/ws for http://host:port/mcp (the path mcpsync serves WebSocket at)."""
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, WS_PATH, "", ""))


# ---- replies --------------------------------------------------------------------------------

def sse_messages(body: bytes) -> list[Any]:
    """The JSON payloads of the ``data:`` fields of an SSE body (empty data skipped)."""
    out: list[Any] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None
                for line in block.split(b"\n")]
        text = b"\n".join(d for d in data if d is not None)
        if text.strip():
            try:
                out.append(json.loads(text))
            except ValueError as exc:
                raise Broken(f"SSE data is not JSON: {text[:80]!r}") from exc
    return out


@dataclass
class Reply:
    status: int
    headers: dict[str, str]     # lower-cased names
    body: bytes

    def messages(self) -> list[Any]:
        """The JSON-RPC messages the reply carries, as JSON or as server-sent events."""
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "text/event-stream":
            found = sse_messages(self.body)
        elif ctype == "application/json":
            try:
                value = json.loads(self.body)
            except ValueError as exc:
                raise Broken(f"reply is not JSON: {self.body[:80]!r}") from exc
            found = value if isinstance(value, list) else [value]
        else:
            raise Broken(f"unexpected Content-Type {ctype!r} on a {self.status} reply")
        for msg in found:
            if not isinstance(msg, dict):
                raise Broken(f"a message that is not an object: {msg!r:.80}")
        return found


def result_of(messages: Iterable[dict[str, Any]], rid: int, method: str) -> Any:
    """The result answering request ``rid``; notifications may precede it, nothing else may."""
    answer = None
    for msg in messages:
        if "id" not in msg or msg.get("method") is not None:
            continue  # a notification or a server request on the same stream
        if msg["id"] != rid:
            raise Broken(f"{method}: reply for id {msg['id']!r} on the stream of request {rid}")
        if answer is not None:
            raise Broken(f"{method}: two replies for id {rid}")
        answer = msg
    if answer is None:
        raise Broken(f"{method}: no reply for id {rid}")
    if "error" in answer:
        raise Failed(f"{method}: error {answer['error'].get('code')}: {answer['error'].get('message')!s:.120}")
    if "result" not in answer:
        raise Broken(f"{method}: reply without result or error")
    return answer["result"]


def check_echo(result: Any, text: str) -> None:
    """An ``echo`` result must carry exactly ``text`` as its (first) text content."""
    if not isinstance(result, dict) or result.get("isError"):
        raise Broken(f"echo: error result {result!r:.120}")
    content = result.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise Broken(f"echo: no content in {result!r:.120}")
    got = content[0].get("text")
    if got != text:
        raise Broken(f"echo: sent {text!r}, got back {got!r:.80} (another request's answer?)")


def tool_text(result: Any, tool: str) -> str:
    """The first text content of a successful tool result."""
    if not isinstance(result, dict) or result.get("isError"):
        raise Broken(f"{tool}: error result {result!r:.120}")
    content = result.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise Broken(f"{tool}: no content in {result!r:.120}")
    text = content[0].get("text")
    if not isinstance(text, str):
        raise Broken(f"{tool}: first content is not text: {content[0]!r:.80}")
    return text


def rpc(method: str, params: dict[str, Any] | None = None, rid: int | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if rid is not None:
        msg["id"] = rid
    if params is not None:
        msg["params"] = params
    return msg


def initialize_params(version: str = PROTOCOL_VERSION) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO}


def check_initialize(result: Any) -> str:
    """The negotiated version of a valid ``initialize`` result."""
    if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
        raise Broken(f"initialize: no protocolVersion in {result!r:.120}")
    if not isinstance(result.get("serverInfo"), dict) or not isinstance(result.get("capabilities"), dict):
        raise Broken("initialize: serverInfo or capabilities missing")
    return str(result["protocolVersion"])


# ---- Streamable HTTP ------------------------------------------------------------------------

class HttpSession:
    """One MCP session (or one more connection to an existing one) over one keep-alive
    HTTP/1.1 connection. Owned by one thread. Every method can block up to ``timeout``."""

    def __init__(self, url: str, *, session_id: str | None = None, version: str | None = None,
                 timeout: float = REQUEST_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, not {url!r}")
        self.url = url
        self.path = parts.path or "/"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.session_id = session_id
        self.version = version
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "HttpSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, message: Any = None, *, with_session: bool = True) -> Reply:
        """One HTTP request; a transport failure closes the connection (the next request opens
        a new one) and raises ``Failed``."""
        headers = {"Accept": ACCEPT}
        body = None
        if message is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(message, separators=(",", ":")).encode()
        if with_session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if with_session and self.version:
            headers["MCP-Protocol-Version"] = self.version
        try:
            conn = self._connection()
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
            if resp.will_close:
                self.close()
            return reply
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Failed(f"{method} {self.path}: {type(exc).__name__}: {exc}") from exc

    def initialize(self, version: str = PROTOCOL_VERSION) -> dict[str, Any]:
        """Open a new session: ``initialize``, then ``notifications/initialized``."""
        rid = next(_request_ids)
        reply = self.send("POST", rpc("initialize", initialize_params(version), rid), with_session=False)
        if reply.status != 200:
            raise Failed(f"initialize: HTTP {reply.status}: {reply.body[:120]!r}")
        result = result_of(reply.messages(), rid, "initialize")
        self.version = check_initialize(result)
        self.session_id = reply.headers.get("mcp-session-id")  # None: a stateless server
        self.notify("notifications/initialized")
        return dict(result)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        reply = self.send("POST", rpc(method, params))
        if reply.status not in (200, 202, 204):
            raise Failed(f"{method}: HTTP {reply.status}: {reply.body[:120]!r}")

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        rid = next(_request_ids)
        reply = self.send("POST", rpc(method, params, rid))
        if reply.status != 200:
            raise Failed(f"{method}: HTTP {reply.status}: {reply.body[:120]!r}")
        return result_of(reply.messages(), rid, method)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def echo(self, text: str) -> None:
        """Call ``echo`` and check the text comes back exactly."""
        check_echo(self.call_tool("echo", {"text": text}), text)

    def delete(self) -> int:
        """End the session with DELETE; returns the status (2xx, or 405 if the server does not
        let clients end sessions)."""
        reply = self.send("DELETE")
        if reply.status not in (200, 202, 204, 405):
            raise Failed(f"DELETE: HTTP {reply.status}: {reply.body[:120]!r}")
        return reply.status


# ---- WebSocket ------------------------------------------------------------------------------

class WsSession:
    """One MCP session over one WebSocket (subprotocol ``mcp``, one message per text frame).
    Owned by one thread; every method can block up to ``timeout``."""

    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        import simple_websocket  # only the WebSocket scenarios need it

        self._closed_exc: type[BaseException] = simple_websocket.ConnectionClosed
        self.timeout = timeout
        try:
            self.ws = simple_websocket.Client.connect(url, subprotocols=["mcp"])
        except (OSError, simple_websocket.ConnectionError) as exc:
            raise Failed(f"WebSocket connect to {url}: {type(exc).__name__}: {exc}") from exc
        if self.ws.subprotocol != "mcp":
            self.ws.close()
            raise Broken(f"WebSocket subprotocol {self.ws.subprotocol!r}, not 'mcp'")
        self.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.version: str | None = None

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # already closed by the peer
            pass

    def __enter__(self) -> "WsSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: Any) -> None:
        try:
            self.ws.send(json.dumps(message, separators=(",", ":")))
        except (OSError, self._closed_exc) as exc:
            raise Failed(f"WebSocket send: {type(exc).__name__}: {exc}") from exc

    def receive(self) -> dict[str, Any]:
        """The next message; ``Failed`` if none arrives within the timeout."""
        try:
            data = self.ws.receive(self.timeout)
        except (OSError, self._closed_exc) as exc:
            raise Failed(f"WebSocket receive: {type(exc).__name__}: {exc}") from exc
        if data is None:
            raise Failed(f"WebSocket: no message within {self.timeout} s")
        if isinstance(data, (bytes, bytearray)):
            raise Broken("WebSocket: a binary frame from the server")
        try:
            msg = json.loads(data)
        except ValueError as exc:
            raise Broken(f"WebSocket frame is not JSON: {data[:80]!r}") from exc
        if not isinstance(msg, dict):
            raise Broken(f"WebSocket frame is not one JSON-RPC message: {data[:80]!r}")
        return msg

    def request_many(self, method: str, params_list: list[dict[str, Any]]) -> list[Any]:
        """Send the requests back to back, then collect one reply per id (in any order)."""
        rids = [next(_request_ids) for _ in params_list]
        for rid, params in zip(rids, params_list):
            self.send(rpc(method, params, rid))
        pending = {rid: None for rid in rids}
        answers: dict[int, Any] = {}
        while len(answers) < len(rids):
            msg = self.receive()
            if "id" not in msg or msg.get("method") is not None:
                continue  # notification or server request
            if msg["id"] not in pending or msg["id"] in answers:
                raise Broken(f"{method}: reply for unexpected id {msg['id']!r}")
            answers[msg["id"]] = result_of([msg], msg["id"], method)
        return [answers[rid] for rid in rids]

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.request_many(method, [params or {}])[0]

    def initialize(self, version: str = PROTOCOL_VERSION) -> dict[str, Any]:
        result = self.request("initialize", initialize_params(version))
        self.version = check_initialize(result)
        self.send(rpc("notifications/initialized"))
        return dict(result)

    def echo(self, text: str) -> None:
        check_echo(self.request("tools/call", {"name": "echo", "arguments": {"text": text}}), text)


# ---- closed-loop load -----------------------------------------------------------------------

@dataclass
class Stats:
    """What one worker saw. Written only by its own thread until ``closed_loop`` merges it."""

    ok: int = 0                 # steps completed inside the measuring window
    ok_total: int = 0           # steps completed at all (warm-up included)
    broken: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, steps inside the window
    samples: list[str] = field(default_factory=list)      # first failure messages
    last_done: float = 0.0      # perf_counter() of the last completed step

    def note(self, kind: str, message: str) -> None:
        if kind == "broken":
            self.broken += 1
        else:
            self.failed += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {message}")

    def merge(self, other: "Stats") -> None:
        self.ok += other.ok
        self.ok_total += other.ok_total
        self.broken += other.broken
        self.failed += other.failed
        self.latencies.extend(other.latencies)
        self.last_done = max(self.last_done, other.last_done)
        self.samples.extend(other.samples[:max(0, MAX_SAMPLES - len(self.samples))])


@dataclass
class LoadResult:
    name: str
    workers: int
    stats: Stats
    window_s: float             # the measuring window actually covered, seconds

    @property
    def rate(self) -> float:
        return self.stats.ok / self.window_s if self.window_s > 0 else 0.0

    def percentile_ms(self, pct: float) -> float:
        return percentile(self.stats.latencies, pct) * 1000.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


W = TypeVar("W")


def classify(exc: Exception, prefix: str = "") -> tuple[str, str]:
    """How a step's exception counts: ``Failed`` and socket errors as failed requests, anything
    else as a broken invariant (a reply of a shape the checks did not expect raises
    ``KeyError``/``AttributeError``... in them)."""
    if isinstance(exc, (Failed, OSError)):
        return "failed", f"{prefix}{exc}"
    if isinstance(exc, Broken):
        return "broken", f"{prefix}{exc}"
    return "broken", f"{prefix}{type(exc).__name__}: {exc}"


class _Worker(threading.Thread):
    """One load thread; its ``stats`` are read only after it was joined."""

    def __init__(self, index: int, run: Callable[[int, Stats], None], name: str) -> None:
        super().__init__(name=f"{name}-{index}", daemon=True)
        self.index = index
        self.stats = Stats()
        self._run = run

    def run(self) -> None:
        self._run(self.index, self.stats)


def closed_loop(workers: int, setup: Callable[[int], W], step: Callable[[W, int], None], *,
                duration_s: float, max_steps: int | None = None, warmup_s: float = 0.0,
                teardown: Callable[[W], None] | None = None, name: str = "load") -> LoadResult:
    """Run ``workers`` threads: each builds its client with ``setup(index)``, waits for the
    others, then calls ``step(client, seq)`` back to back until ``max_steps`` steps were
    started in all or the deadline (``warmup_s + duration_s`` after the start) passed, and
    finally ``teardown(client)``. ``seq`` numbers steps uniquely across workers. A step
    that raises is counted (``Failed``/``OSError`` as failed, anything else as broken), not fatal.
    Blocks for at most about ``warmup_s + duration_s + REQUEST_TIMEOUT_S`` (+ setup).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    seqs = itertools.count()
    # Written once by the last worker through the barrier (its action runs before any worker
    # is released), read by all after it.
    clock: dict[str, float] = {}

    def start_clock() -> None:
        now = time.perf_counter()
        clock["start"] = now
        clock["measure"] = now + warmup_s
        clock["end"] = now + warmup_s + duration_s

    barrier = threading.Barrier(workers, action=start_clock)

    def run(index: int, stats: Stats) -> None:
        client: Any = None
        try:
            client = setup(index)
        except Exception as exc:
            stats.note(*classify(exc, "setup: "))
            barrier.abort()  # the others must not wait START_TIMEOUT_S for us
            return
        try:
            try:
                barrier.wait(START_TIMEOUT_S)
            except threading.BrokenBarrierError:
                return
            measure, end = clock["measure"], clock["end"]
            perf = time.perf_counter
            while True:
                seq = next(seqs)
                if max_steps is not None and seq >= max_steps:
                    break
                t0 = perf()
                if t0 >= end:
                    break
                try:
                    step(client, seq)
                except Exception as exc:
                    stats.note(*classify(exc))
                    continue
                t1 = perf()
                stats.ok_total += 1
                stats.last_done = t1
                if t1 >= measure:
                    stats.ok += 1
                    stats.latencies.append(t1 - t0)
        finally:
            if teardown is not None and client is not None:
                try:
                    teardown(client)
                except Exception as exc:
                    stats.note(*classify(exc, "teardown: "))

    threads = [_Worker(i, run, name) for i in range(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + START_TIMEOUT_S + warmup_s + duration_s + JOIN_GRACE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    total = Stats()
    stuck = [t.name for t in threads if t.is_alive()]
    for t in threads:
        total.merge(t.stats)
    if stuck:
        total.note("failed", f"{len(stuck)} worker(s) still running after the deadline")
    if "start" not in clock:
        return LoadResult(name, workers, total, 0.0)
    # Steps start only before the deadline; the window runs to the last completion, so a run
    # stopped by its step count is measured over the time it took.
    last = max((t.stats.last_done for t in threads), default=0.0)
    window = last - clock["measure"]
    return LoadResult(name, workers, total, max(window, 1e-9))
