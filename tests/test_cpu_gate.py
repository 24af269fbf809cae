"""The CPU gate (``mcpsync.sync.gate``): FIFO admission to the CPU-bound part of a request.

Unit tests pin the gate's own promises (arrival order, thread-local holding, pausing around
user code, the bounded wait). The front-end tests prove that nothing that can block holds
the gate: a blocking tool, resource, prompt or completion function, an open SSE stream and
a client that never reads its response. There the gate's bounded wait is raised to 60 s, so
a request that had to wait for a blocked holder would run past the client's 10 s timeout
and fail the test instead of slipping through after the usual 50 ms.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp
from rpcutil import wait_until

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.sync import CpuGate, gate_paused, held_gate, leave_gate
from mcpsync.transports.serve import make_server
from mcpsync.http.app import HttpApp

WAIT_S = 10.0


def start(target: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def queue_depth(gate: CpuGate) -> int:
    return gate.stats().queue_depth


# ---- the gate itself --------------------------------------------------------------------------

def test_waiters_are_admitted_in_arrival_order() -> None:
    gate = CpuGate(slots=1, max_wait_s=WAIT_S)
    order: list[int] = []
    assert gate.enter() and held_gate()

    def waiter(i: int) -> None:
        assert gate.enter()
        order.append(i)
        leave_gate()
        assert not held_gate()

    threads = []
    for i in range(16):  # each queued before the next starts: arrival order is known
        threads.append(start(waiter, i))
        assert wait_until(lambda: queue_depth(gate) == i + 1, WAIT_S)
    leave_gate()
    for t in threads:
        t.join(WAIT_S)
    assert order == list(range(16))
    assert not held_gate() and not gate.stats().queue_depth


def test_slots_admit_that_many_at_once_then_queue_in_order() -> None:
    """Three slots: three holders at once, five queued; one holder leaves, and its slot
    cycles through the five queued threads in their arrival order."""
    gate = CpuGate(slots=3, max_wait_s=WAIT_S)
    inside = threading.Barrier(4, timeout=WAIT_S)  # the first three hold slots together
    go = [threading.Event() for _ in range(3)]
    order: list[int] = []

    def worker(i: int) -> None:
        assert gate.enter()
        order.append(i)
        if i < 3:
            inside.wait()
            assert go[i].wait(WAIT_S)
        leave_gate()

    threads = [start(worker, i) for i in range(3)]
    inside.wait()
    for i in range(3, 8):  # queued behind them, one after another
        threads.append(start(worker, i))
        assert wait_until(lambda: queue_depth(gate) == i - 2, WAIT_S)
    go[0].set()
    assert wait_until(lambda: len(order) == 8, WAIT_S)
    assert order[3:] == [3, 4, 5, 6, 7]
    go[1].set()
    go[2].set()
    for t in threads:
        t.join(WAIT_S)
    st = gate.stats()
    assert (st.acquisitions, st.contended, st.timeouts, st.queue_depth) == (8, 5, 0, 0)
    with pytest.raises(ValueError):
        CpuGate(slots=0)


def test_a_holder_does_not_enter_again_and_leaving_twice_is_harmless() -> None:
    gate, other = CpuGate(), CpuGate()
    assert gate.enter()
    assert not gate.enter() and not other.enter()  # one gate per thread, never nested
    leave_gate()
    leave_gate()
    assert not held_gate()
    assert gate.enter()  # free again
    leave_gate()


def test_paused_holder_queues_again_behind_the_waiters() -> None:
    gate = CpuGate(slots=1, max_wait_s=WAIT_S)
    order: list[str] = []
    assert gate.enter()

    def other() -> None:
        assert gate.enter()
        order.append("other")
        leave_gate()

    t = start(other)
    assert wait_until(lambda: queue_depth(gate) == 1, WAIT_S)
    with gate_paused():
        assert not held_gate()
        t.join(WAIT_S)  # the waiter got its turn while we were paused
    assert held_gate()
    order.append("back")
    leave_gate()
    assert order == ["other", "back"]
    with gate_paused():  # holding nothing: nothing to pause or take back
        pass
    assert not held_gate()


def test_a_waiter_runs_ungated_after_the_bounded_wait() -> None:
    gate = CpuGate(slots=1, max_wait_s=0.05)
    assert gate.enter()
    outcome: list[bool] = []
    t = start(lambda: outcome.append(gate.enter()))
    t.join(WAIT_S)
    assert outcome == [False]  # it went on without the gate
    assert gate.stats().timeouts == 1
    leave_gate()


# ---- the front end: nothing that blocks holds the gate ----------------------------------------

def blocking_server(release: threading.Event, entered: threading.Event) -> Server:
    srv = Server("gate-tests", "1.0")

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

    @srv.resource("gate://wait")
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
def gated() -> Iterator[tuple[str, threading.Event, threading.Event, Any]]:
    release, entered = threading.Event(), threading.Event()
    app = Service(blocking_server(release, entered))
    wsgi = HttpApp(app)
    front = make_server(wsgi, "127.0.0.1", 0).start()
    front.cpu_gate = CpuGate(slots=1, max_wait_s=60)  # one blocked holder would stall the rest
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
    "resource": ("resources/read", {"uri": "gate://wait"}),
    "prompt": ("prompts/get", {"name": "wait_prompt", "arguments": {"topic": "t"}}),
    "completion": ("completion/complete", {"ref": {"type": "ref/prompt", "name": "wait_prompt"},
                                           "argument": {"name": "topic", "value": "a"}}),
}


@pytest.mark.parametrize("kind", list(BLOCKING_CALLS))
def test_blocking_user_code_does_not_hold_the_gate(gated: Any, kind: str) -> None:
    url, release, entered, front = gated
    method, params = BLOCKING_CALLS[kind]
    results: list[Any] = []

    def blocked_client() -> None:
        with HttpMcp(url, timeout=60) as c:
            c.initialize()
            results.append(c.call(method, params))

    t = start(blocked_client)
    assert entered.wait(WAIT_S)
    others_are_served(url)
    assert front.cpu_gate.stats().timeouts == 0
    release.set()
    t.join(WAIT_S)
    assert len(results) == 1  # and the blocked call then finished normally


def test_an_open_sse_stream_does_not_hold_the_gate(gated: Any) -> None:
    url, _, _, front = gated
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
    assert front.cpu_gate.stats().timeouts == 0


def test_a_client_that_never_reads_does_not_hold_the_gate(gated: Any) -> None:
    """A 32 MiB result to a client that never reads: the kernel's buffers fill, the
    server's send blocks (for up to the write timeout) and must not hold the gate."""
    url, _, _, front = gated
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
            deadline = time.monotonic() + 2.0  # long enough for the 32 MiB reply to be built
            rounds = 0
            while time.monotonic() < deadline or rounds < 3:
                others_are_served(url, rounds=5)
                rounds += 1
        finally:
            silent.close()
    assert front.cpu_gate.stats().timeouts == 0


def test_an_open_listen_stream_does_not_hold_the_gate(gated: Any) -> None:
    """2026-07-28 ``subscriptions/listen``: the server writes the acknowledgement, then
    waits for notifications inside the request; that wait must not hold a slot."""
    from test_modern import listen, read_messages
    url, _, _, front = gated
    sock, stream = listen(url, "L1", {"toolsListChanged": True})
    try:
        ack = read_messages(stream, 1)[0]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        others_are_served(url)
    finally:
        stream.close()
        sock.close()
    assert front.cpu_gate.stats().timeouts == 0
