"""A worker that nobody else needs waits a moment for its connection's next request
(``Limits.next_request_wait``) instead of handing the connection back to the dispatcher:
over real sockets on 127.0.0.1, with both pollers. Every wait is bounded."""
from __future__ import annotations

import socket
import threading
from typing import Any, Callable

from rpcutil import wait_until
from test_front_end import WAIT_S, Raw, echo_app, get, post, serve  # noqa: F401 (fixture)

from mcpsync.frontend import HttpFrontEnd
from mcpsync.sync import may_block

StartResponse = Callable[..., Any]
LONG_WAIT_S = 5.0  # a wait for the next request far longer than any step of these tests


def answered_and_waiting(srv: HttpFrontEnd) -> Raw:
    """A connection whose first request was answered and whose worker now waits on it."""
    c = Raw(srv.port)
    c.send(get())
    assert c.response()[0] == 200
    assert wait_until(lambda: srv.dispatcher.counts["busy"] == 1, WAIT_S)
    return c


def test_consecutive_requests_stay_on_one_worker(serve: Any) -> None:
    """The next request on a keep-alive connection is read and run by the worker that
    answered the previous one: one pool task for the whole conversation."""
    srv = serve(echo_app, next_request_wait=LONG_WAIT_S)
    with Raw(srv.port) as c:
        for i in range(20):
            c.send(post(f"/n{i}", b"x" * i))
            assert c.response()[0] == 200
    assert srv.pool.stats().started == 1
    assert srv.bridge.followed == 19


def test_without_the_wait_every_request_is_a_task(serve: Any) -> None:
    srv = serve(echo_app, next_request_wait=0)
    with Raw(srv.port) as c:
        for i in range(5):
            c.send(get(f"/n{i}"))
            assert c.response()[0] == 200
    assert srv.pool.stats().started == 5 and srv.bridge.followed == 0


def test_a_waiting_worker_steps_aside_for_another_connection(serve: Any) -> None:
    """Two slots: one held by a request that blocks (C), one by a worker waiting on
    connection A. B's request takes the waiting worker's slot, and its thread once the
    wait is over (no new thread starts for it); A's next request then queues like any
    other and is answered."""
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/hold":
            release.wait(WAIT_S)  # holds its slot (nothing marks this wait)
        return echo_app(environ, start_response)

    srv = serve(app, workers=2, max_threads=4, next_request_wait=0.3)
    with answered_and_waiting(srv) as a:
        b, c = Raw(srv.port), Raw(srv.port)
        c.send(get("/hold"))
        assert wait_until(lambda: srv.pool.stats().idle_threads == 0, WAIT_S)
        b.send(get("/b1"))
        assert b.response()[0] == 200
        a.send(get("/a2"))
        assert a.response()[0] == 200
        release.set()
        assert c.response()[0] == 200
        b.send(get("/b2"))
        assert b.response()[0] == 200
        assert srv.pool.stats().threads == 2
        b.sock.close()
        c.sock.close()


def test_the_wait_ends_with_the_deadline_and_the_dispatcher_reads_on(serve: Any) -> None:
    """A head that starts during the wait and ends after it is finished by the dispatcher."""
    srv = serve(echo_app, next_request_wait=0.05)
    with Raw(srv.port) as c:
        c.send(get("/first"))
        assert c.response()[0] == 200
        request = post("/late", b"tail")
        c.send(request[:10])
        assert wait_until(lambda: srv.dispatcher.counts["head"] == 1, WAIT_S)  # back with the dispatcher
        c.send(request[10:])
        code, _, body = c.response()
        assert code == 200 and b'"/late"' in body


def test_the_peer_closing_during_the_wait_is_a_clean_end(serve: Any) -> None:
    srv = serve(echo_app, next_request_wait=LONG_WAIT_S)
    with answered_and_waiting(srv):
        pass
    assert wait_until(lambda: srv.dispatcher.connections == 0, WAIT_S)
    assert srv.pool.stats().busy_slots == 0


def test_a_bad_next_request_is_answered_by_the_waiting_worker(serve: Any) -> None:
    srv = serve(echo_app, next_request_wait=LONG_WAIT_S)
    with Raw(srv.port) as c:
        c.send(get())
        assert c.response()[0] == 200
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad\x01Field: x\r\n\r\n")
        code, headers, _ = c.response()
        assert code == 400 and headers["connection"] == "close"
        assert c.at_eof()


def test_shutdown_ends_a_waiting_worker_at_once(serve: Any) -> None:
    srv = serve(echo_app, next_request_wait=LONG_WAIT_S)
    with answered_and_waiting(srv) as c:
        done = threading.Event()
        results: list[bool] = []
        stopper = threading.Thread(target=lambda: (results.append(srv.shutdown(WAIT_S)),
                                                   done.set()), name="test-stopper")
        stopper.start()
        assert done.wait(LONG_WAIT_S / 2), "shutdown waited for the idle wait"
        stopper.join(WAIT_S)
        assert results == [True]
        assert c.at_eof()


def test_many_connections_do_not_wait(serve: Any) -> None:
    """With more connections busy than there are slots, a worker does not wait on one of
    them (the others' requests would queue behind it), even with idle threads about."""
    gates = {"/burst": threading.Event(), "/hold": threading.Event()}

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        gate = gates.get(environ["PATH_INFO"])
        if gate is not None:
            with may_block():  # (a tool waiting: its slot goes to the next request)
                gate.wait(WAIT_S)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def connect(path: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
        sock.sendall(get(path))
        return sock

    srv = serve(app, workers=2, max_threads=8, next_request_wait=LONG_WAIT_S)
    burst = [connect("/burst") for _ in range(4)]  # the pool grows to four threads
    assert wait_until(lambda: srv.dispatcher.counts["busy"] == 4, WAIT_S)
    gates["/burst"].set()
    for sock in burst:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()
    assert wait_until(lambda: srv.pool.stats().idle_threads == 4, WAIT_S)
    holders = [connect("/hold") for _ in range(2)]
    try:
        assert wait_until(lambda: srv.dispatcher.counts["busy"] == 2, WAIT_S)
        followed = srv.bridge.followed
        with Raw(srv.port) as c:
            for path in ("/quick", "/again", "/more"):
                c.send(get(path))
                assert c.response()[0] == 200
        assert srv.bridge.followed == followed  # three busy connections, two slots
    finally:
        gates["/hold"].set()
        for sock in holders:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()
