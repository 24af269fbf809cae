"""The front end under floods and against slow or silent peers, over real sockets.

Counts are CI-sized (500 idle + 200 slowloris connections); the full-sized runs with
timings are ``scripts/bench.py`` (idle-10k, slowloris-2k) and ``scripts/stress.py``.
Deadlines are shortened through ``Limits`` so that each test takes about a second; every
wait is bounded.
"""
from __future__ import annotations

import pathlib
import socket
import sys
import threading
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp
from rpcutil import wait_until

from mcpsync import Server
from mcpsync.service import Service
from mcpsync.frontend import HttpFrontEnd, Limits
from mcpsync.sync import may_block
from mcpsync.http.app import HttpApp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
import _floods  # noqa: E402

WAIT_S = 10.0
IDLE, SLOW = 500, 200


def mcpsync_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("mcpsync-http-", "mcpsync-worker-"))]


@pytest.fixture
def front() -> Iterator[Callable[..., tuple[HttpFrontEnd, str]]]:
    """Start an MCP server (tool ``echo``) on the front end with the given limits."""
    started: list[tuple[HttpFrontEnd, Service, HttpApp]] = []

    def start(**limits: Any) -> tuple[HttpFrontEnd, str]:
        server = Server("floods", "1.0")
        server.add_tool(lambda text: text, name="echo", description="Echo.")
        app = Service(server)
        wsgi = HttpApp(app)
        fe = HttpFrontEnd(wsgi, "127.0.0.1", 0, limits=Limits(**limits)).start()
        started.append((fe, app, wsgi))
        return fe, f"http://127.0.0.1:{fe.port}/mcp"

    yield start
    for fe, app, wsgi in started:
        wsgi.end_streams()
        assert fe.shutdown(WAIT_S)
        app.close()
    assert mcpsync_threads() == []


def wsgi_front(app: Callable[..., Any], **limits: Any) -> HttpFrontEnd:
    return HttpFrontEnd(app, "127.0.0.1", 0, limits=Limits(**limits)).start()


def raw(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while data := sock.recv(65536):
        out += data
    return out


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    need = 2 * (IDLE + SLOW) + 256  # both ends live in this process
    if _floods.raise_nofile(need) < need:
        pytest.skip(f"needs {need} open files (RLIMIT_NOFILE)")


# --- floods -----------------------------------------------------------------------------------

def test_idle_and_slowloris_floods_leave_a_new_client_served(front: Any) -> None:
    fe, url = front()
    idle = _floods.open_idle("127.0.0.1", fe.port, IDLE)
    slow = _floods.Slowloris("127.0.0.1", fe.port, SLOW, interval_s=0.2)
    try:
        assert len(idle.sockets) == IDLE and slow.open == SLOW
        assert wait_until(lambda: fe.dispatcher.counts["head"] == SLOW, WAIT_S)
        legit = _floods.legit_client(url, 20, timeout_s=WAIT_S)
        assert legit.failures == [] and legit.attempted == 21
        # the floods cost no thread: the dispatcher and the prestarted workers
        assert len(mcpsync_threads()) == 1 + fe.limits.workers, mcpsync_threads()
        assert fe.dispatcher.counts["idle"] >= IDLE and idle.still_open() == IDLE
        assert slow.cut == 0  # the head deadline (10 s) is not up yet
    finally:
        slow.close()
        idle.close()


def test_at_the_cap_idle_connections_make_room(front: Any) -> None:
    fe, url = front(max_connections=300)
    idle = _floods.open_idle("127.0.0.1", fe.port, IDLE)
    try:
        assert len(idle.sockets) == IDLE  # each was served, evicting the oldest idle one
        assert idle.failed == 0 and 503 not in idle.statuses
        assert fe.dispatcher.connections <= 300
        assert fe.dispatcher.evicted >= IDLE - 300 and fe.dispatcher.refused == 0
        legit = _floods.legit_client(url, 5, timeout_s=WAIT_S)
        assert legit.failures == []
        assert wait_until(lambda: idle.still_open() <= 300, WAIT_S)
    finally:
        idle.close()


def test_the_per_address_cap_evicts_that_address_only(front: Any) -> None:
    """Flood sockets come from 127.0.0.2-9 (62 or 63 each of 500); a cap of 40 per address
    trims each of those to 40 while a client from 127.0.0.1 is served untouched."""
    fe, url = front(max_connections_per_address=40)
    with HttpMcp(url, timeout=WAIT_S) as bystander:
        bystander.initialize()
        idle = _floods.open_idle("127.0.0.1", fe.port, IDLE)
        try:
            assert idle.failed == 0 and 503 not in idle.statuses  # served, not refused
            assert wait_until(lambda: idle.still_open() == 40 * _floods.FLOOD_ADDRESSES, WAIT_S)
            assert bystander.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})[
                "content"][0]["text"] == "x"  # its keep-alive connection was not evicted
        finally:
            idle.close()


# --- deadlines --------------------------------------------------------------------------------

def trickle_until_answered(sock: socket.socket, pieces: Callable[[int], bytes],
                           rounds: int) -> bytes:
    """Send a piece every 20 ms (pacing a slow client) until the server answers; the answer."""
    sock.settimeout(0.02)
    answer = b""
    for i in range(rounds):
        try:
            sock.sendall(pieces(i))
        except OSError:
            break
        try:
            answer += sock.recv(65536)
        except TimeoutError:
            continue
        if answer.endswith(b"\n") and b"\r\n\r\n" in answer:
            break
    return answer


def test_a_trickled_head_is_cut_at_its_deadline() -> None:
    fe = wsgi_front(lambda e, s: [], head_timeout=0.5)
    sock = raw(fe.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    try:  # a byte every 20 ms: the head never ends; 408 at 0.5 s
        answer = trickle_until_answered(sock, lambda i: b"X-Slow: a\r\n"[i % 11:i % 11 + 1], 200)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert fe.dispatcher.timed_out == 1
        assert wait_until(lambda: fe.dispatcher.connections == 0, WAIT_S)
    finally:
        sock.close()
        assert fe.shutdown(WAIT_S)


def test_a_body_below_the_minimum_rate_is_cut() -> None:
    fe = wsgi_front(lambda e, s: [], body_grace=0.3, min_body_rate=1000)
    sock = raw(fe.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    try:  # 10 bytes every 20 ms: 500 B/s, under the 1,000 B/s floor
        answer = trickle_until_answered(sock, lambda i: b"0123456789", 300)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    finally:
        sock.close()
        assert fe.shutdown(WAIT_S)


def test_a_request_that_finds_no_worker_gets_503() -> None:
    """One thread in all, parked in a blocking call: the next request waits for a thread
    and is answered 503 at the queue timeout; the parked one completes."""
    release, entered = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/block":
            entered.set()
            with may_block():
                release.wait(WAIT_S)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    fe = wsgi_front(app, workers=1, max_threads=1, queue_timeout=0.3)
    try:
        blocked = raw(fe.port, b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(WAIT_S)
        waiting = raw(fe.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(waiting)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1\r\n" in answer and fe.dispatcher.shed == 1
        release.set()
        assert blocked.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        blocked.close()
        waiting.close()
    finally:
        release.set()
        assert fe.shutdown(WAIT_S)


# --- slow readers -----------------------------------------------------------------------------

def test_backpressure_on_a_client_that_never_reads() -> None:
    """A client pipelines 100 requests for 256 KiB each and reads nothing: the server
    answers a few (what the kernel buffers hold), then stops reading that connection
    instead of queueing 25 MiB; once the client reads, every answer arrives in order."""
    calls: list[str] = []
    body = b"z" * (256 * 1024)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    fe = wsgi_front(app)
    try:
        sock = raw(fe.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(100))
        sock.sendall(requests)
        assert wait_until(lambda: fe.dispatcher.counts["flush"] == 1, WAIT_S)
        stalled = len(calls)
        assert not wait_until(lambda: len(calls) > stalled, 0.5)  # nothing more is taken
        assert stalled < 20
        sock.settimeout(WAIT_S)
        expected = (b"HTTP/1.1 200 OK\r\n", len(body))
        received = b""
        for i in range(100):
            while b"\r\n\r\n" not in received:
                received += sock.recv(1 << 20)
            head, _, received = received.partition(b"\r\n\r\n")
            assert head.startswith(expected[0])
            while len(received) < expected[1]:
                received += sock.recv(1 << 20)
            received = received[expected[1]:]
        assert calls == [f"/{i}" for i in range(100)]
        sock.close()
    finally:
        assert fe.shutdown(WAIT_S)


def test_a_reader_that_stalls_is_cut_at_the_write_timeout() -> None:
    body = b"z" * (8 << 20)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    fe = wsgi_front(app, write_timeout=0.3)
    sock = raw(fe.port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: fe.dispatcher.timed_out == 1, WAIT_S)
        assert fe.dispatcher.connections == 0
    finally:
        sock.close()
        assert fe.shutdown(WAIT_S)


# --- shutdown ---------------------------------------------------------------------------------

def test_shutdown_with_parked_connections_and_busy_workers() -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/busy":
            entered.release()
            with may_block():
                assert release.wait(WAIT_S)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    fe = wsgi_front(app)
    idle = _floods.open_idle("127.0.0.1", fe.port, 50, path="/")
    slow = _floods.Slowloris("127.0.0.1", fe.port, 20, interval_s=0.2, path="/")
    busy = [raw(fe.port, b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(2)]
    for _ in busy:
        assert entered.acquire(timeout=WAIT_S)
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(fe.shutdown(WAIT_S)),
                               name="test-stopper")
    try:
        assert wait_until(lambda: fe.dispatcher.counts["head"] == 20, WAIT_S)
        stopper.start()
        assert wait_until(lambda: idle.still_open() == 0, WAIT_S)  # closed at once
        assert wait_until(lambda: slow.cut == 20, WAIT_S)
        assert result == []  # ... while the busy ones hold shutdown()
        release.set()
        for sock in busy:
            answer = read_all(sock)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in answer
        stopper.join(WAIT_S)
        assert result == [True]
        with pytest.raises(ConnectionRefusedError):
            raw(fe.port).close()
    finally:
        release.set()
        slow.close()
        idle.close()
        for sock in busy:
            sock.close()
        stopper.join(WAIT_S)
    assert mcpsync_threads() == []


def test_shutdown_cuts_busy_workers_at_the_deadline() -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        entered.set()
        with may_block():
            release.wait(WAIT_S)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"late"]

    fe = wsgi_front(app)
    sock = raw(fe.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert entered.wait(WAIT_S)
        assert fe.shutdown(0.3) is False
        assert read_all(sock) == b""  # cut, no response
    finally:
        release.set()
        sock.close()
    assert wait_until(lambda: mcpsync_threads() == [], WAIT_S), mcpsync_threads()
