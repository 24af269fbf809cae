"""A message stream's client that does not read never holds up a broadcasting thread:
posted messages wait in the stream's outbox and a job on the stream's own workers writes
them (the broadcaster used to write them itself, blocking in the peer's full socket)."""
from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest

from mcpsync import Server
from mcpsync.protocol.versions import LATEST_HANDSHAKE_VERSION
from mcpsync.streams.stream import MessageStream

pytestmark = pytest.mark.timeout(60)
WAIT_S = 10.0


def _fill(sock: socket.socket) -> int:
    """Write to ``sock`` until the kernel takes no more (its peer does not read)."""
    sock.setblocking(False)
    written = 0
    try:
        while True:
            written += sock.send(b" " * 65536)
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return written


def initialize(stream: MessageStream) -> None:
    """The handshake, as a client sends it (request id 1)."""
    stream.feed(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}).encode())
    stream.feed(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')


@pytest.mark.parametrize("round_", range(3))
def test_a_broadcast_to_a_client_that_does_not_read_never_waits_for_it(round_: int) -> None:
    server = Server("outbox")
    ours, theirs = socket.socketpair()
    stream = MessageStream(server, ours.sendall, name="test", max_workers=2)
    try:
        initialize(stream)
        filler = _fill(ours)  # from here on a write to the client blocks until it reads

        registered = threading.Event()

        def register() -> None:  # a registration broadcasts tools/list_changed
            server.tool(name="late")(lambda: "x")
            registered.set()
        threading.Thread(target=register, name="mcpsync-test-register", daemon=True).start()
        assert registered.wait(WAIT_S), "the registering thread waited for a client that does not read"

        # The stream writes bare JSON texts (framing is the transport's business): read
        # until the broadcast has come, then take the texts apart.
        received = b""
        while b"list_changed" not in received:
            chunk = theirs.recv(1 << 20)
            assert chunk, "the stream closed before the broadcast was written"
            received += chunk
        decoder = json.JSONDecoder()
        text, at, messages = received.decode(), 0, []
        while at < len(text):
            if text[at].isspace():
                at += 1
                continue
            message, at = decoder.raw_decode(text, at)
            messages.append(message)
        assert messages[0]["id"] == 1  # the initialize reply, then (after the filler) the broadcast
        assert messages[-1]["method"] == "notifications/tools/list_changed"
        assert len(received) >= filler
    finally:
        stream.close(timeout=5)
        ours.close()
        theirs.close()


@pytest.mark.parametrize("round_", range(20))
def test_what_was_posted_before_a_reply_is_written_before_it(round_: int) -> None:
    """A tool that changes the tool list and returns: the list_changed it caused reaches the
    client before the call's reply (the reply's writer empties the outbox first)."""
    server = Server("order")

    @server.tool()
    def grow() -> str:
        server.tool(name="grown")(lambda: "x")
        return "grown"

    written: list[Any] = []
    done = threading.Event()

    def write(data: bytes) -> None:
        written.append(json.loads(data))
        if any(m.get("id") == 2 for m in written):
            done.set()
    # One worker: the flush job the broadcast starts waits behind the call that caused it.
    stream = MessageStream(server, write, name="test", max_workers=1)
    try:
        initialize(stream)
        stream.feed(b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "grow"}}')
        assert done.wait(WAIT_S)
        order = [m.get("method") or m.get("id") for m in written]
        assert order.index("notifications/tools/list_changed") < order.index(2), order
    finally:
        stream.close(timeout=5)


def test_a_broadcast_posted_while_the_stream_drains_is_still_written() -> None:
    """stdio's EOF: the stream drains (its workers take no more jobs) while a call still
    runs; a broadcast posted then finds no worker for its flush job and no reply follows
    it (the call outlives the drain): the drain writes it before it returns."""
    from rpcutil import wait_until
    server = Server("drain")
    release = threading.Event()
    started = threading.Event()

    @server.tool()
    def hang() -> str:
        started.set()
        release.wait(WAIT_S)
        return "late"

    written: list[Any] = []
    lock = threading.Lock()

    def write(data: bytes) -> None:
        with lock:
            written.append(json.loads(data))
    stream = MessageStream(server, write, name="test", max_workers=2)
    try:
        initialize(stream)
        stream.feed(b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "hang"}}')
        assert started.wait(WAIT_S)
        pool = stream._pool
        assert pool is not None

        def post_during_drain() -> None:
            assert wait_until(lambda: pool._shutdown, WAIT_S)  # the drain has begun
            server.tool(name="late")(lambda: "x")  # broadcasts tools/list_changed
        poster = threading.Thread(target=post_during_drain, name="mcpsync-test-poster")
        poster.start()
        assert stream.drain(1.0) is False  # the call outlives the drain
        poster.join(WAIT_S)
        with lock:
            assert "notifications/tools/list_changed" in [m.get("method") for m in written], written
    finally:
        release.set()
        stream.close(timeout=5)
