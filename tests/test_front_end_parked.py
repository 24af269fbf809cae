"""Parked streams (``environ["mcpsync.park"]``): long-lived responses and taken-over
connections driven by the dispatcher instead of a worker thread. Plain WSGI apps over real
sockets on 127.0.0.1, with both pollers; the MCP streams (SSE, listen, WebSocket) are in
``test_parked_streams.py``. Every wait is bounded."""
from __future__ import annotations

import socket
import threading
from collections import deque
from typing import Any, Callable

import pytest
from rpcutil import wait_until
from test_front_end import POLLERS, WAIT_S, Raw, echo_app, get, http_threads, serve  # noqa: F401

from mcpsync.frontend import HttpFrontEnd, WerkzeugServer

StartResponse = Callable[..., Any]


class Feed:
    """A test pollable: bytes pushed by the test, an end, ticks; records its life."""

    def __init__(self, tick_s: float | None = None, tick_bytes: bytes = b"") -> None:
        self.tick_s = tick_s
        self.tick_bytes = tick_bytes
        self._lock = threading.Lock()  # guards _queue, _ended, _ticked; taken by test and poller
        self._queue: deque[bytes] = deque()
        self._ended = False
        self._ticked = 0
        self._wake: Callable[[], None] | None = None
        self.attached = threading.Event()
        self.closed = threading.Event()
        self.polls = 0
        self.ticks = 0

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.attached.set()

    def push(self, data: bytes) -> None:
        with self._lock:
            self._queue.append(data)
        if self._wake is not None:
            self._wake()

    def end(self) -> None:
        with self._lock:
            self._ended = True
        if self._wake is not None:
            self._wake()

    def poll(self) -> bytes | None:
        self.polls += 1
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._ticked:
                self._ticked -= 1
                return self.tick_bytes
            return None if self._ended else b""

    def tick(self) -> None:
        self.ticks += 1
        if self.tick_bytes:
            with self._lock:
                self._ticked += 1

    def close(self) -> None:
        self.closed.set()


def parking_app(feeds: list[Feed], make: Callable[[], Feed] = Feed) -> Callable[..., Any]:
    """``/stream`` parks a new Feed (appended to ``feeds``); anything else is echoed."""
    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        if environ["PATH_INFO"] != "/stream":
            return echo_app(environ, start_response)
        feed = make()
        feeds.append(feed)
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        park = environ.get("mcpsync.park")
        return park(feed) if park is not None else iter_feed(feed)
    return app


def iter_feed(feed: Feed) -> Any:
    from mcpsync.sync.pollable import iterate
    return iterate(feed)


def open_stream(srv: Any, feeds: list[Feed]) -> Raw:
    """A connection whose ``/stream`` is parked (its head read, its Feed attached)."""
    c = Raw(srv.port)
    c.send(get("/stream"))
    assert c.head()[0] == 200
    assert wait_until(lambda: bool(feeds) and feeds[-1].attached.is_set(), WAIT_S)
    return c


def test_a_parked_stream_holds_no_worker_and_keeps_the_connection(serve: Any) -> None:
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds), workers=2)
    with Raw(srv.port) as c:
        c.send(get("/stream"))
        code, headers = c.head()
        assert code == 200 and headers["transfer-encoding"] == "chunked"
        assert wait_until(lambda: srv.dispatcher.counts["stream"] == 1, WAIT_S)
        assert srv.pool.stats().busy_slots == 0 and srv.pool.stats().idle_threads == 2
        for i in range(3):
            feeds[0].push(b"event %d\n" % i)
            assert c.chunk() == b"event %d\n" % i
        feeds[0].end()
        assert c.chunk() == b""  # the terminator
        assert feeds[0].closed.wait(WAIT_S)
        c.send(get("/after"))  # the connection lives on
        assert c.response()[0] == 200


def test_many_parked_streams_cost_no_thread(serve: Any) -> None:
    count = 300
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds))
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
            sock.sendall(get("/stream"))
            socks.append(sock)
        assert wait_until(lambda: srv.dispatcher.counts["stream"] == count, WAIT_S)
        assert len(http_threads()) == 1 + srv.limits.workers, http_threads()
        for feed in feeds:
            feed.push(b"hello")
        for sock in socks:
            got = b""
            while b"5\r\nhello\r\n" not in got:
                data = sock.recv(65536)
                assert data, "closed"
                got += data
    finally:
        for sock in socks:
            sock.close()
    assert wait_until(lambda: all(f.closed.is_set() for f in feeds), WAIT_S)
    assert wait_until(lambda: srv.dispatcher.connections == 0, WAIT_S)


def test_the_peer_going_away_closes_the_stream(serve: Any) -> None:
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds))
    with open_stream(srv, feeds):
        pass
    assert feeds[0].closed.wait(WAIT_S)
    assert wait_until(lambda: srv.dispatcher.connections == 0, WAIT_S)


def test_a_peer_that_does_not_read_stops_the_polling_and_is_cut(serve: Any) -> None:
    """Past the write buffer the stream is not polled (its producer is held back, not the
    server's memory); with no progress for the write timeout the connection is cut."""
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds), write_buffer=64 * 1024, write_timeout=1.0)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.sendall(get("/stream"))
        assert wait_until(lambda: bool(feeds) and feeds[0].attached.is_set(), WAIT_S)
        feed = feeds[0]
        piece = b"x" * 16384
        for _ in range(2000):  # 32 MiB offered; the kernel and the buffer hold far less
            feed.push(piece)
        assert wait_until(lambda: srv.dispatcher.counts["stream"] == 0, WAIT_S)  # cut
        assert feed.closed.is_set()
        assert srv.dispatcher.timed_out == 1
        assert len(feed._queue) > 1500  # most was never taken from it
    finally:
        sock.close()


def test_ticks_run_while_parked(serve: Any) -> None:
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds, lambda: Feed(tick_s=0.05, tick_bytes=b": ping\n")))
    with Raw(srv.port) as c:
        c.send(get("/stream"))
        assert c.head()[0] == 200
        for _ in range(3):
            assert c.chunk() == b": ping\n"
        assert feeds[0].ticks >= 3


def test_a_request_sent_during_the_stream_is_served_after_it(serve: Any) -> None:
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds))
    with open_stream(srv, feeds) as c:
        c.send(get("/next"))  # pipelined behind the open stream
        feeds[0].push(b"one")
        assert c.chunk() == b"one"
        feeds[0].end()
        assert c.chunk() == b""
        code, _, body = c.response()
        assert code == 200 and b'"/next"' in body


def test_shutdown_cuts_streams_nobody_ends_at_the_deadline() -> None:
    feeds: list[Feed] = []
    srv = HttpFrontEnd(parking_app(feeds), "127.0.0.1", 0).start()
    with open_stream(srv, feeds) as c:
        assert srv.shutdown(timeout=0.3) is False  # a stream was still open: not clean
        assert feeds[0].closed.is_set()
        assert c.rest() == b""  # cut without a terminator


def test_shutdown_waits_for_streams_that_end(serve: Any) -> None:
    feeds: list[Feed] = []
    srv = serve(parking_app(feeds))
    with open_stream(srv, feeds) as c:
        ender = threading.Timer(0.2, lambda: (feeds[0].push(b"bye"), feeds[0].end()))
        ender.start()
        assert srv.shutdown(timeout=WAIT_S)
        ender.join()
        assert c.chunk() == b"bye" and c.chunk() == b""
        assert c.at_eof()


class Shouter:
    """A raw duplex test stream: upper-cases what it is fed, a line at a time; ``quit``
    ends it. ``limit`` bytes of unanswered input make it stop reading."""

    tick_s = None

    def __init__(self, limit: int = 1 << 20) -> None:
        self._lock = threading.Lock()  # guards _inbox, _out, _done
        self._inbox = b""
        self._out = b"HELLO\r\n"
        self._done = False
        self.limit = limit
        self.closed = threading.Event()
        self._wake: Callable[[], None] = lambda: None

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    @property
    def readable(self) -> bool:
        return len(self._inbox) < self.limit

    def feed(self, data: bytes) -> None:
        with self._lock:
            if not data:
                self._done = True
                return
            self._inbox += data
            while b"\n" in self._inbox:
                line, _, self._inbox = self._inbox.partition(b"\n")
                if line == b"quit":
                    self._done = True
                else:
                    self._out += line.upper() + b"\r\n"

    def poll(self) -> bytes | None:
        with self._lock:
            out, self._out = self._out, b""
            return out or (None if self._done else b"")

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self.closed.set()


def test_a_raw_parked_connection(serve: Any) -> None:
    shouters: list[Shouter] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        shouter = Shouter()
        shouters.append(shouter)
        return environ["mcpsync.park"](shouter, raw=True)

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get("/raw", "Upgrade: shout\r\nConnection: Upgrade\r\n"))
        assert c.line() == b"HELLO"
        c.send(b"one\ntw")
        assert c.line() == b"ONE"
        c.send(b"o\nquit\n")
        assert c.line() == b"TWO"
        assert c.at_eof()
    assert shouters[0].closed.wait(WAIT_S)
    assert srv.pool.stats().started == 1


@pytest.mark.parametrize("poller", ["epoll", "selectors"])
def test_a_raw_connection_that_takes_no_more_is_not_read(poller: str) -> None:
    shouters: list[Shouter] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        shouter = Shouter(limit=1000)
        shouters.append(shouter)
        return environ["mcpsync.park"](shouter, raw=True)

    srv = HttpFrontEnd(app, "127.0.0.1", 0, poller=POLLERS[poller]()).start()
    with Raw(srv.port) as c:
        c.send(get("/raw"))
        assert c.line() == b"HELLO"
        c.sock.setblocking(False)
        sent = 0
        try:
            for _ in range(10_000):  # no newline: nothing is answered, the input piles up
                sent += c.sock.send(b"y" * 65536)
        except BlockingIOError:
            pass
        c.sock.setblocking(True)
        assert wait_until(lambda: len(shouters[0]._inbox) >= 1000, WAIT_S)
        assert len(shouters[0]._inbox) < 1000 + 65536 * 5
        assert sent > len(shouters[0]._inbox)  # the rest waits in the kernel, unread
    srv.shutdown(0.1)  # (its FIN waits behind the unread bytes: the stream never ends)
    assert shouters[0].closed.is_set()


def test_without_the_front_end_a_parked_stream_is_iterated() -> None:
    """Under werkzeug (no ``mcpsync.park``), the same stream runs on the request's thread."""
    feeds: list[Feed] = []
    srv = WerkzeugServer(parking_app(feeds), "127.0.0.1", 0).start()
    try:
        with Raw(srv.port) as c:
            c.send(get("/stream"))
            assert wait_until(lambda: bool(feeds) and feeds[0].attached.is_set(), WAIT_S)
            feeds[0].push(b"over werkzeug")  # (werkzeug sends the head with the first chunk)
            feeds[0].end()
            assert c.head()[0] == 200
            assert c.chunk() == b"over werkzeug" and c.chunk() == b""
        assert feeds[0].closed.wait(WAIT_S)
    finally:
        srv.shutdown()


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_parked_response_iterated_by_a_middleware_still_works(wrapped: bool) -> None:
    """A middleware that wraps the response hides the parked stream from the front end:
    the stream then runs on the worker thread, as any streamed response does."""
    feeds: list[Feed] = []
    inner = parking_app(feeds)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        result = inner(environ, start_response)
        return (piece for piece in result) if wrapped else result

    srv = HttpFrontEnd(app, "127.0.0.1", 0).start()
    try:
        with Raw(srv.port) as c:
            c.send(get("/stream"))
            assert wait_until(lambda: bool(feeds) and feeds[0].attached.is_set(), WAIT_S)
            assert srv.dispatcher.counts["stream"] == (0 if wrapped else 1)
            feeds[0].push(b"data")
            feeds[0].end()
            assert c.head()[0] == 200
            assert c.chunk() == b"data" and c.chunk() == b""
        assert feeds[0].closed.wait(WAIT_S)
    finally:
        assert srv.shutdown(WAIT_S)


def test_a_peer_gone_before_the_head_closes_the_stream_quietly(
        serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The client resets the connection while the app prepares its parked stream: the head
    cannot be sent, the stream is closed, and nothing is logged as an app error."""
    import struct
    import threading as _threading
    feeds: list[Feed] = []
    gate = _threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        gate.wait(WAIT_S)
        feed = Feed()
        feeds.append(feed)
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return environ["mcpsync.park"](feed)

    srv = serve(app)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
    sock.sendall(get("/stream"))
    assert wait_until(lambda: srv.dispatcher.counts["busy"] == 1, WAIT_S)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: the head's send fails
    gate.set()
    assert wait_until(lambda: bool(feeds) and feeds[0].closed.is_set(), WAIT_S)
    assert wait_until(lambda: srv.dispatcher.connections == 0, WAIT_S)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
