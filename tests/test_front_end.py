"""The HTTP front end (``mcpsync.frontend``) over real sockets on 127.0.0.1.

Responses are parsed byte-exactly by a small raw client, so keep-alive framing bugs
(a stray byte, a missing terminator) show up as the next response failing to parse.
Every wait is bounded: client sockets carry a timeout, apps wait on events with one.
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import pytest
import simple_websocket
from rpcutil import wait_until

from mcpsync.frontend import HttpFrontEnd, WerkzeugServer, make_server
from mcpsync.frontend.poller import EpollPoller, SelectorPoller

WAIT_S = 10.0  # upper bound for any single wait in these tests

StartResponse = Callable[..., Any]


# --- a raw HTTP/1.1 client that parses responses exactly -------------------------------

class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.buf = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        version, code, _ = self.line().decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        while line := self.line():
            name, _, value = line.decode("latin-1").partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        return int(code), headers

    def chunk(self) -> bytes:
        size = int(self.line().split(b";")[0], 16)
        data = self.exact(size)
        assert self.exact(2) == b"\r\n"
        if size == 0:
            return b""
        return data

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        code, headers = self.head()
        if head_only or code in (204, 304):
            return code, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            assert "content-length" not in headers
            parts = []
            while piece := self.chunk():
                parts.append(piece)
            return code, headers, b"".join(parts)
        if "content-length" in headers:
            return code, headers, self.exact(int(headers["content-length"]))
        return code, headers, self.rest()

    def rest(self) -> bytes:
        """Everything until the server closes."""
        while True:
            try:
                self._fill()
            except EOFError:
                data, self.buf = self.buf, b""
                return data

    def at_eof(self) -> bool:
        """True once the server has closed (waits up to the socket timeout)."""
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def echo_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    length = environ.get("CONTENT_LENGTH")  # werkzeug's dev server needs the size
    body = environ["wsgi.input"].read(int(length) if length else -1)
    out = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                      "body": body.decode("latin-1"),
                      "length": environ.get("CONTENT_LENGTH")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


def http_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("mcpsync-http-", "mcpsync-worker-"))]


POLLERS = {"epoll": EpollPoller, "selectors": SelectorPoller}


@pytest.fixture(params=list(POLLERS))
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., HttpFrontEnd]]:
    """Start front ends; every test runs with edge-triggered epoll and with the portable
    level-triggered poller."""
    servers: list[HttpFrontEnd] = []

    def start(app: Any, **kwargs: Any) -> HttpFrontEnd:
        srv = HttpFrontEnd(app, "127.0.0.1", 0, poller=POLLERS[request.param](), **kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        assert srv.shutdown(timeout=WAIT_S)
    assert http_threads() == []


# --- keep-alive and framing ----------------------------------------------------------

def test_several_requests_on_one_connection(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        for i in range(5):
            c.send(post(f"/n{i}", b"x" * i))
            code, headers, body = c.response()
            assert code == 200 and "connection" not in headers and "date" in headers
            assert json.loads(body) == {"method": "POST", "path": f"/n{i}", "body": "x" * i,
                                        "length": str(i)}


def test_pipelined_requests_in_one_send(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(post("/a", b"one") + get("/b") + post("/c", b"three"))
        bodies = [json.loads(c.response()[2]) for _ in range(3)]
        assert [(b["path"], b["body"]) for b in bodies] == [("/a", "one"), ("/b", ""),
                                                            ("/c", "three")]


def test_body_split_across_sends_is_read_exactly(serve: Any) -> None:
    srv = serve(echo_app)
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}' * 3
    with Raw(srv.port) as c:
        request = post("/split", body)
        head_len = len(request) - len(body)
        for piece in (request[:head_len - 5], request[head_len - 5:head_len + 7],
                      request[head_len + 7:head_len + 50], request[head_len + 50:]):
            c.send(piece)
        assert json.loads(c.response()[2])["body"] == body.decode()
        c.send(get("/after"))  # the body's last byte was not taken as the next request's first
        assert json.loads(c.response()[2])["path"] == "/after"


def test_large_body_streams_through_wsgi_input(serve: Any) -> None:
    seen: list[int] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read()
        seen.append(len(first) + len(rest))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    srv = serve(app)
    body = b"line one\n" + b"z" * 300_000
    with Raw(srv.port) as c:
        c.send(post("/big", body))
        assert c.response()[2] == b"ok"
        c.send(post("/big", body[:20]))
        assert c.response()[2] == b"ok"
    assert seen == [len(body), 20]


def test_unread_body_is_drained_for_keep_alive(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ignored the body"]

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(post("/x", b"y" * 100_000))
        assert c.response()[2] == b"ignored the body"
        c.send(get())
        assert c.response()[0] == 200


def test_chunked_request_body(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r")
        c.send(b"\nhello\r\n6\r\n wor")
        c.send(b"ld\r\n0\r\nX-Trailer: ignored\r\n\r\n")
        result = json.loads(c.response()[2])
        assert result["body"] == "hello world" and result["length"] is None
        c.send(get("/next"))
        assert json.loads(c.response()[2])["path"] == "/next"


def test_bad_chunk_framing_is_400(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        code, headers, _ = c.response()
        assert code == 400 and headers["connection"] == "close"
        assert c.at_eof()


def test_expect_100_continue(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert c.head() == (100, {})
        c.send(b"abcde")
        assert json.loads(c.response()[2])["body"] == "abcde"


def test_head_response_has_no_body(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        code, headers, _ = c.response(head_only=True)
        assert code == 200 and headers["content-length"] == "5"
        c.send(get())
        assert c.response()[2] == b"hello"


# --- streaming and write() -------------------------------------------------------------

def test_streaming_chunks_are_sent_as_they_are_yielded(serve: Any) -> None:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b"data: one\n\n"
        if not release.wait(WAIT_S):
            raise AssertionError("the client never saw the first event")
        yield b"data: two\n\n"

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get("/sse"))
        code, headers = c.head()
        assert code == 200 and headers["transfer-encoding"] == "chunked"
        assert c.chunk() == b"data: one\n\n"
        assert not release.is_set()
        release.set()
        assert c.chunk() == b"data: two\n\n"
        assert c.chunk() == b""
        c.send(get("/sse-again-is-fine"))
        assert c.response()[2] == b"data: one\n\ndata: two\n\n"


def test_write_callable_sends_immediately(serve: Any) -> None:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        if not release.wait(WAIT_S):
            raise AssertionError("write() did not reach the client")
        write(b"second")
        return [b" third"]

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get())
        code, headers = c.head()
        assert headers["transfer-encoding"] == "chunked"
        assert c.chunk() == b"first "
        release.set()
        assert c.chunk() == b"second"
        assert c.chunk() == b" third"
        assert c.chunk() == b""


def test_generator_with_content_length_is_not_chunked(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "6")])
        yield b"abc"
        yield b""
        yield b"def"

    srv = serve(app)
    with Raw(srv.port) as c:
        for _ in range(2):
            c.send(get())
            code, headers, body = c.response()
            assert body == b"abcdef" and "transfer-encoding" not in headers


def test_list_body_gets_a_content_length_and_short_bodies_close(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/short":
            start_response("200 OK", [("Content-Length", "10")])
            return iter([b"only5"])
        start_response("200 OK", [])
        return [b"several ", b"parts"]

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get("/list"))
        code, headers, body = c.response()
        assert headers["content-length"] == "13" and body == b"several parts"
        c.send(get("/short"))
        assert c.head()[1]["content-length"] == "10"
        assert c.rest() == b"only5"  # the promise was broken: closing is the only signal


# --- connection management -------------------------------------------------------------

def test_connection_close_is_honoured(serve: Any) -> None:
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(get("/", "Connection: close\r\n"))
        code, headers, _ = c.response()
        assert code == 200 and headers["connection"] == "close"
        assert c.at_eof()


def test_http10_closes_unless_keep_alive(serve: Any) -> None:
    def stream_app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"no "
        yield b"length"

    srv = serve(stream_app)
    with Raw(srv.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        code, headers = c.head()
        assert "transfer-encoding" not in headers and headers["connection"] == "close"
        assert c.rest() == b"no length"

    srv2 = serve(echo_app)
    with Raw(srv2.port) as c:
        for _ in range(2):
            c.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            code, headers, body = c.response()
            assert headers["connection"] == "keep-alive" and json.loads(body)["path"] == "/k"
        c.send(b"GET /k HTTP/1.0\r\n\r\n")
        assert c.response()[1]["connection"] == "close"
        assert c.at_eof()


def test_a_peer_closing_between_requests_is_a_clean_end(serve: Any) -> None:
    """No 400, no linger: the peer's EOF on an idle keep-alive connection just closes it."""
    srv = serve(echo_app)
    with Raw(srv.port) as c:
        c.send(get())
        assert c.response()[0] == 200
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == b""  # nothing more was sent, and the server closed
    assert wait_until(lambda: srv.dispatcher.connections == 0, WAIT_S)
    assert srv.dispatcher.counts["linger"] == 0 and srv.dispatcher.timed_out == 0


def test_idle_keep_alive_timeout_closes_the_connection(serve: Any) -> None:
    srv = serve(echo_app, keepalive_timeout=0.2)
    with Raw(srv.port) as c:
        c.send(get())
        assert c.response()[0] == 200
        started = time.monotonic()
        assert c.at_eof()
        assert time.monotonic() - started < WAIT_S / 2


def test_at_the_cap_the_oldest_idle_connection_makes_room(serve: Any) -> None:
    srv = serve(echo_app, max_connections=2)
    with Raw(srv.port) as oldest, Raw(srv.port) as newer:
        for c in (oldest, newer):
            c.send(get())
            assert c.response()[0] == 200
            # idle again once its worker has handed it back (just after the response went
            # out); the other one is idle (since it was accepted, or since its response)
            assert wait_until(lambda: srv.dispatcher.counts["idle"] == 2, WAIT_S)
        with Raw(srv.port) as third:
            third.send(get("/third"))
            assert json.loads(third.response()[2])["path"] == "/third"
            assert oldest.at_eof()  # evicted: a new client is served, not refused
            newer.send(get("/newer"))
            assert json.loads(newer.response()[2])["path"] == "/newer"


def test_503_at_the_cap_when_nothing_is_idle(serve: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            assert release.wait(WAIT_S)
        return echo_app(environ, start_response)

    srv = serve(app, max_connections=1)
    with Raw(srv.port) as busy:
        busy.send(get("/slow"))
        assert entered.wait(WAIT_S)
        with Raw(srv.port) as second:
            code, headers, body = second.response()
            assert code == 503 and headers["retry-after"] == "1"
            assert headers["connection"] == "close" and body == b"503 Service Unavailable\n"
            assert second.at_eof()
        release.set()
        assert busy.response()[0] == 200


def test_per_address_cap_evicts_that_address_first(serve: Any) -> None:
    srv = serve(echo_app, max_connections_per_address=1)
    with Raw(srv.port) as first:
        first.send(get())
        assert first.response()[0] == 200
        assert wait_until(lambda: srv.dispatcher.counts["idle"] == 1, WAIT_S)
        with Raw(srv.port) as second:
            second.send(get("/second"))
            assert json.loads(second.response()[2])["path"] == "/second"
            assert first.at_eof()


# --- errors and limits -----------------------------------------------------------------

def test_app_exception_is_500_without_traceback(serve: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("secret internal detail")
        return echo_app(environ, start_response)

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="mcpsync.http"):
        with Raw(srv.port) as c:
            c.send(get("/boom"))
            code, headers, body = c.response()
            assert code == 500 and headers["connection"] == "close"
            assert body == b"500 Internal Server Error\n"
            assert c.at_eof()
    assert any("secret internal detail" in r.getMessage() or
               (r.exc_info and "secret" in str(r.exc_info[1])) for r in caplog.records)
    with Raw(srv.port) as c:
        c.send(get("/fine"))
        assert c.response()[0] == 200


def test_exception_after_headers_cuts_the_stream(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("mid-stream")

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get())
        assert c.head()[0] == 200
        assert c.chunk() == b"partial"
        with pytest.raises(EOFError):  # no terminating chunk: the client sees a cut
            c.chunk()


def test_app_iterable_close_is_always_called(serve: Any) -> None:
    closed: list[str] = []
    changed = threading.Condition()  # notified by close(), which runs on connection threads

    class Body:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def __iter__(self) -> Iterator[bytes]:
            yield b"x"
            if self.fail:
                raise RuntimeError("fail")

        def close(self) -> None:
            with changed:
                closed.append("fail" if self.fail else "ok")
                changed.notify_all()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Length", "1")])
        return Body(environ["PATH_INFO"] == "/fail")

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get("/ok"))
        assert c.response()[2] == b"x"
    with Raw(srv.port) as c:
        c.send(get("/fail"))
        assert c.response()[2] == b"x"
        assert c.at_eof()
    with changed:  # the response reaches the client before close() runs: wait for both
        assert changed.wait_for(lambda: len(closed) == 2, timeout=10)
    assert sorted(closed) == ["fail", "ok"]


@pytest.mark.parametrize("request_bytes, status", [
    (get("/", "X-Big: " + "a" * 10_000 + "\r\n"), 431),
    (get("/", "".join(f"X-H{i}: v\r\n" for i in range(20))), 431),
    (get("/" + "p" * 10_000), 414),
    (b"GET /" + b"p" * 10_000, 414),  # no line end yet
    (b"NONSENSE\r\n\r\n", 400),
    (get("/", "Bad Header\r\n"), 400),
    (get("/", "Content-Length: -1\r\n"), 400),
    (get("/", "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"), 400),
    (get("/", "Transfer-Encoding: gzip\r\n"), 501),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
], ids=["header-line", "header-count", "request-line", "request-line-partial", "garbage",
        "no-colon", "negative-length", "te-and-cl", "te-gzip", "version"])
def test_bad_requests(serve: Any, request_bytes: bytes, status: int) -> None:
    srv = serve(echo_app, max_headers=10)
    with Raw(srv.port) as c:
        c.send(request_bytes)
        code, headers, _ = c.response()
        assert code == status and headers["connection"] == "close"
        assert c.at_eof()


# --- the environ -----------------------------------------------------------------------

def test_environ_is_pep_3333(serve: Any) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(b"PUT /a%20b/caf%C3%A9/x%2Fy?q=1&r=%20 HTTP/1.1\r\nHost: example\r\n"
               b"X-Dup: one\r\nx-dup: two\r\nX_Spoofed: no\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 2\r\n\r\nhi")
        assert c.response()[0] == 200
        client_port = c.sock.getsockname()[1]
        assert seen["werkzeug.socket"].getpeername() == c.sock.getsockname()
    assert seen["REQUEST_METHOD"] == "PUT" and seen["SCRIPT_NAME"] == ""
    assert seen["PATH_INFO"] == "/a b/caf\u00c3\u00a9/x/y"  # bytes decoded as latin-1
    assert seen["QUERY_STRING"] == "q=1&r=%20"
    assert seen["CONTENT_TYPE"] == "text/plain" and seen["CONTENT_LENGTH"] == "2"
    assert seen["HTTP_HOST"] == "example" and seen["HTTP_X_DUP"] == "one, two"
    assert "HTTP_X_SPOOFED" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["SERVER_NAME"] == "127.0.0.1" and seen["SERVER_PORT"] == str(srv.port)
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["REMOTE_PORT"] == str(client_port)
    assert seen["wsgi.version"] == (1, 0) and seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.multithread"] is True and seen["wsgi.multiprocess"] is False
    assert seen["wsgi.run_once"] is False and seen["wsgi.input_terminated"] is True
    assert hasattr(seen["wsgi.errors"], "write")
    assert isinstance(seen["werkzeug.socket"], socket.socket)


def test_websocket_upgrade_with_simple_websocket(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return echo_app(environ, start_response)
        ws = simple_websocket.Server(environ)
        try:
            while (message := ws.receive(timeout=WAIT_S)) is not None:
                ws.send(message)
        except simple_websocket.ConnectionClosed:
            pass
        start_response("200 OK", [])  # never sent: the socket was taken over
        return [b"must not appear on the wire"]

    srv = serve(app)
    client = simple_websocket.Client.connect(f"ws://127.0.0.1:{srv.port}/ws")
    try:
        client.send("hello")
        assert client.receive(timeout=WAIT_S) == "hello"
        client.send(b"\x00\x01binary")
        assert client.receive(timeout=WAIT_S) == b"\x00\x01binary"
    finally:
        client.close()
        client.thread.join(WAIT_S)
    assert not client.thread.is_alive()
    with Raw(srv.port) as c:  # and plain HTTP still works beside it
        c.send(get("/plain"))
        assert json.loads(c.response()[2])["path"] == "/plain"


def test_refused_websocket_upgrade_gets_its_response(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("400 Bad Request", [("Content-Length", "2")])
        return [b"no"]

    srv = serve(app)
    with Raw(srv.port) as c:
        c.send(get("/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n"))
        assert c.response()[:3:2] == (400, b"no")


# --- shutdown --------------------------------------------------------------------------

def test_shutdown_waits_for_in_flight_request() -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            if not release.wait(WAIT_S):
                raise AssertionError("never released")
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    srv = HttpFrontEnd(app, "127.0.0.1", 0).start()
    port = srv.port
    results: list[bool] = []
    stopper = threading.Thread(target=lambda: results.append(srv.shutdown(timeout=WAIT_S)),
                               name="test-stopper")
    with Raw(port) as idle, Raw(port) as busy:
        idle.send(get("/"))
        assert idle.response()[2] == b"done"
        busy.send(get("/slow"))
        assert entered.wait(WAIT_S)
        stopper.start()
        assert idle.at_eof()  # idle keep-alive connections are closed at once
        assert not results  # ... while the in-flight request holds shutdown()
        release.set()
        code, headers, body = busy.response()
        assert (code, body) == (200, b"done") and headers["connection"] == "close"
        assert busy.at_eof()
    stopper.join(WAIT_S)
    assert results == [True]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
    assert http_threads() == []


def test_shutdown_gives_up_on_a_stuck_request_at_the_deadline() -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        entered.set()
        release.wait(WAIT_S)
        start_response("200 OK", [])
        return [b"late"]

    srv = HttpFrontEnd(app, "127.0.0.1", 0).start()
    with Raw(srv.port) as c:
        c.send(get())
        assert entered.wait(WAIT_S)
        started = time.monotonic()
        assert srv.shutdown(timeout=0.2) is False
        assert time.monotonic() - started < WAIT_S / 2
        assert c.at_eof()  # its socket was cut
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith(("mcpsync-http-", "mcpsync-worker-")):
            thread.join(WAIT_S)
    assert http_threads() == []


def test_shutdown_before_start_and_twice() -> None:
    srv = HttpFrontEnd(echo_app, "127.0.0.1", 0)
    assert srv.shutdown() is True
    assert srv.shutdown() is True
    with HttpFrontEnd(echo_app, "127.0.0.1", 0).start() as srv2:
        conn = http.client.HTTPConnection("127.0.0.1", srv2.port, timeout=WAIT_S)
        try:
            conn.request("GET", "/cm")
            assert json.loads(conn.getresponse().read())["path"] == "/cm"
        finally:
            conn.close()
    assert http_threads() == []


# --- make_server -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["threaded", "werkzeug"])
def test_make_server_kinds(kind: str) -> None:
    srv = make_server(echo_app, "127.0.0.1", 0, kind=kind)
    assert isinstance(srv, WerkzeugServer if kind == "werkzeug" else HttpFrontEnd)
    with srv.start():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT_S)
        try:
            conn.request("POST", "/k", body=b"payload")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["body"] == "payload"
        finally:
            conn.close()
    assert http_threads() == []


def test_make_server_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        make_server(echo_app, "127.0.0.1", 0, kind="gunicorn")
