"""The worker pool behind the HTTP front end: nothing that waits holds a slot.

The front end runs with ONE slot and a queue timeout of 60 s: if a blocked request kept
its slot, every other request would queue behind it, and the clients' 10 s timeouts would
fail the test (instead of a 503 after the usual 10 s). The waits: a blocking tool,
resource, prompt and completion function (``may_block()`` in server.py), an open GET SSE
stream and a ``subscriptions/listen`` stream (streamed responses leave their slot), and a
client that never reads its 32 MiB result (the unsent bytes go to the dispatcher's write
buffer; the worker moves on).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp

from mcpsync import Server
from mcpsync.service import Service
from mcpsync.frontend import HttpFrontEnd, Limits
from mcpsync.http.app import HttpApp

WAIT_S = 10.0
ONE_SLOT = Limits(workers=1, queue_timeout=60.0)


def start(target: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def blocking_server(release: threading.Event, entered: threading.Event) -> Server:
    srv = Server("pool-tests", "1.0")

    def block() -> None:
        entered.set()
        assert release.wait(60)

    @srv.tool()
    def wait_tool() -> str:
        """Block until the test releases it."""
        block()
        return "released"

    @srv.tool()
    def echo(text: str) -> str:
        """Echo."""
        return text

    @srv.tool()
    def big(mib: int) -> str:
        """A large result."""
        return "x" * (mib << 20)

    @srv.resource("pool://wait")
    def wait_resource() -> str:
        """Block until released."""
        block()
        return "released"

    @srv.prompt()
    def wait_prompt(topic: str) -> str:
        """Block until released."""
        block()
        return topic

    @srv.completion(argument="topic", prompt="wait_prompt")
    def complete_topic(value: str, context: dict[str, Any]) -> list[str]:
        block()
        return [value + "!"]

    return srv


@pytest.fixture()
def one_slot() -> Iterator[tuple[str, threading.Event, threading.Event, HttpFrontEnd]]:
    release, entered = threading.Event(), threading.Event()
    app = Service(blocking_server(release, entered))
    wsgi = HttpApp(app)
    front = HttpFrontEnd(wsgi, "127.0.0.1", 0, limits=ONE_SLOT).start()
    try:
        yield f"http://127.0.0.1:{front.port}/mcp", release, entered, front
    finally:
        release.set()
        wsgi.end_streams()
        assert front.shutdown(10.0)
        app.close()


def others_are_served(url: str, rounds: int = 20) -> None:
    with HttpMcp(url, timeout=WAIT_S) as c:
        c.initialize()
        for i in range(rounds):
            assert c.call("tools/call", {"name": "echo", "arguments": {"text": str(i)}})[
                "content"][0]["text"] == str(i)


BLOCKING_CALLS = {
    "tool": ("tools/call", {"name": "wait_tool", "arguments": {}}),
    "resource": ("resources/read", {"uri": "pool://wait"}),
    "prompt": ("prompts/get", {"name": "wait_prompt", "arguments": {"topic": "t"}}),
    "completion": ("completion/complete", {"ref": {"type": "ref/prompt", "name": "wait_prompt"},
                                           "argument": {"name": "topic", "value": "a"}}),
}


@pytest.mark.parametrize("kind", list(BLOCKING_CALLS))
def test_blocking_user_code_holds_no_slot(one_slot: Any, kind: str) -> None:
    url, release, entered, front = one_slot
    method, params = BLOCKING_CALLS[kind]
    results: list[Any] = []

    def blocked_client() -> None:
        with HttpMcp(url, timeout=60) as c:
            c.initialize()
            results.append(c.call(method, params))

    t = start(blocked_client)
    assert entered.wait(WAIT_S)
    others_are_served(url)
    st = front.pool.stats()
    assert st.overdrafts == 0 and st.threads >= 2  # a second thread served the others
    release.set()
    t.join(WAIT_S)
    assert len(results) == 1  # and the blocked call then finished normally


def test_an_open_sse_stream_holds_no_slot(one_slot: Any) -> None:
    url, _, _, front = one_slot
    with HttpMcp(url, timeout=WAIT_S) as owner:
        owner.initialize()
        port = owner.port
        stream = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        try:
            stream.sendall((f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            f"Accept: text/event-stream\r\nMcp-Session-Id: {owner.session_id}\r\n"
                            f"MCP-Protocol-Version: {owner.version}\r\n\r\n").encode())
            assert stream.recv(4096).startswith(b"HTTP/1.1 200")  # the stream is open
            others_are_served(url)
        finally:
            stream.close()
    assert front.pool.stats().overdrafts == 0


def test_a_client_that_never_reads_holds_no_slot(one_slot: Any) -> None:
    """A 32 MiB result to a client that never reads: the kernel takes what fits, the rest
    waits in the dispatcher's write buffer, and the worker is free at once."""
    url, _, _, front = one_slot
    with HttpMcp(url, timeout=WAIT_S) as owner:
        owner.initialize()
        port = owner.port
        body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                b'"params":{"name":"big","arguments":{"mib":32}}}')
        silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            silent.sendall((f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                            f"Mcp-Session-Id: {owner.session_id}\r\nMCP-Protocol-Version: {owner.version}\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            deadline = time.monotonic() + WAIT_S
            while front.dispatcher.counts["flush"] != 1:  # the reply is in the write buffer
                assert time.monotonic() < deadline, "the 32 MiB reply never reached the buffer"
                others_are_served(url, rounds=2)
            others_are_served(url)
            assert front.dispatcher.counts["flush"] == 1  # still unread, still buffered
        finally:
            silent.close()
    assert front.pool.stats().overdrafts == 0


def test_an_open_listen_stream_holds_no_slot(one_slot: Any) -> None:
    """2026-07-28 ``subscriptions/listen``: the server writes the acknowledgement, then
    waits for notifications inside the request; that wait must not hold a slot."""
    from test_modern import listen, read_messages
    url, _, _, front = one_slot
    sock, stream = listen(url, "L1", {"toolsListChanged": True})
    try:
        ack = read_messages(stream, 1)[0]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        others_are_served(url)
    finally:
        stream.close()
        sock.close()
    assert front.pool.stats().overdrafts == 0


# ---- the command line --------------------------------------------------------------------------

def test_cli_sets_the_pool_and_the_caps() -> None:
    import urllib.request

    from cliserver import mcpsync_cli
    with mcpsync_cli("--workers", "2", "--max-connections", "50",
                     "--max-connections-per-address", "20") as srv:
        others_are_served(srv.url, rounds=3)
        metrics = urllib.request.urlopen(srv.base + "/metrics", timeout=WAIT_S).read().decode()
        assert 'mcpsync_front_end{stat="slots"} 2' in metrics


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--max-connections", "0"),
                                         ("--max-connections-per-address", "-1")])
def test_cli_rejects_bad_limits_in_one_line(flag: str, value: str) -> None:
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "mcpsync", "--port", "0", flag, value],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
