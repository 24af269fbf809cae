"""``python -m mcpsync ... --stdio`` as a real subprocess, driven through its pipes."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = pathlib.Path(__file__).resolve().parent / "fixture_server.py"
WAIT_S = 10.0        # bound of every wait for a message from the child
EXIT_WAIT_S = 10.0   # bound for the child to exit after EOF on stdin


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcpsync", *args], cwd=REPO, env=child_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


class Child:
    """One ``python -m mcpsync`` process; a reader thread parses every stdout line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mcpsync", *args], cwd=REPO, env=child_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Guards messages/garbage/eof; notified by the reader thread on every line and at EOF.
        self._cond = threading.Condition()
        self.messages: list[Any] = []
        self.garbage: list[bytes] = []   # stdout lines that are not JSON (must stay empty)
        self.eof = False
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, name="test-stdio-stdout", daemon=True)
        self._errs = threading.Thread(target=self._drain_stderr, name="test-stdio-stderr", daemon=True)
        self._reader.start()
        self._errs.start()
        self._ids = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            with self._cond:
                if msg is None or not line.endswith(b"\n"):
                    self.garbage.append(line)
                else:
                    self.messages.append(msg)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    # ---- sending ------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, msg: dict[str, Any] | list[Any]) -> None:
        self.send_raw(json.dumps(msg).encode() + b"\n")

    def request(self, method: str, params: dict[str, Any] | None = None, rid: Any = None) -> Any:
        if rid is None:
            self._ids += 1
            rid = self._ids
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return rid

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    # ---- receiving ----------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    raise AssertionError(f"no such message from the child; got {self.messages!r}, "
                                         f"stderr {self.stderr[-2000:]!r}")
                self._cond.wait(remaining)

    def response(self, rid: Any, timeout: float = WAIT_S) -> dict[str, Any]:
        msg: dict[str, Any] = self.wait_for(lambda m: isinstance(m, dict) and "method" not in m
                                            and m.get("id") == rid and type(m.get("id")) is type(rid), timeout)
        return msg

    def has_response(self, rid: Any) -> bool:
        with self._cond:
            return any(isinstance(m, dict) and "method" not in m and m.get("id") == rid
                       and type(m.get("id")) is type(rid) for m in self.messages)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.response(self.request(method, params))
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    def initialize(self) -> dict[str, Any]:
        result = self.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "test", "version": "1"}})
        self.notify("notifications/initialized")
        return result

    # ---- ending -------------------------------------------------------------------------------

    def close_stdin_and_wait(self, timeout: float = EXIT_WAIT_S) -> int:
        """EOF on the child's stdin; returns its exit status (bounded wait)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        self._join()
        return rc

    def _join(self) -> None:
        self._reader.join(WAIT_S)
        self._errs.join(WAIT_S)
        assert not self._reader.is_alive() and not self._errs.is_alive()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_WAIT_S)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._join()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(*args)
        children.append(child)
        return child
    yield start
    for child in children:
        child.kill()


def test_example_server_over_stdio(spawn: Callable[..., Child]) -> None:
    child = spawn("--stdio", "--log-level", "DEBUG")  # chatty logs must all go to stderr
    init = child.initialize()
    assert init["protocolVersion"] == "2025-11-25"
    assert init["serverInfo"]["name"] == "mcpsync-everything"

    tools = child.call("tools/list")["tools"]
    assert "echo" in {t["name"] for t in tools}
    assert child.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}}) == \
        {"content": [{"type": "text", "text": "hi"}]}
    assert child.call("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2.5}})["structuredContent"] == \
        {"sum": 3.5}

    # a result that is not JSON (the sum overflows to infinity) is answered, with a tool error
    rid = child.request("tools/call", {"name": "add", "arguments": {"a": 1e308, "b": 1e308}})
    assert child.response(rid)["result"]["isError"] is True

    child.send_raw(b'{"jsonrpc": "2.0", "id": 99, "method": \n')
    err = child.wait_for(lambda m: isinstance(m, dict) and "error" in m and m.get("id") is None)
    assert err == {"jsonrpc": "2.0", "id": None, "error": err["error"]}
    assert err["error"]["code"] == -32700

    # ids keep their JSON type over the wire, and a string id "7" is not 7
    child.request("ping", rid="7")
    child.request("ping", rid=7)
    assert child.response("7")["result"] == {}
    assert child.response(7)["result"] == {}

    child.send_raw(b"\n  \n")  # blank lines are skipped, not errors
    assert child.call("ping") == {}

    assert child.close_stdin_and_wait() == 0
    assert child.garbage == []
    assert all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in child.messages)


def test_slow_call_does_not_block_ping_and_cancel_suppresses_its_response(spawn: Callable[..., Child]) -> None:
    child = spawn("serve", str(FIXTURE), "--stdio", "--log-level", "DEBUG")
    assert child.initialize()["serverInfo"]["name"] == "fixture-server"

    slow_id = child.request("tools/call", {"name": "slow", "arguments": {}}, rid="slow-1")
    started = child.wait_for(lambda m: isinstance(m, dict) and m.get("method") == "notifications/message")
    assert started["params"]["data"] == "slow started"

    ping_id = child.request("ping")
    assert child.response(ping_id)["result"] == {}
    assert not child.has_response(slow_id)  # still running while the ping was answered

    assert child.call("tools/call", {"name": "echo", "arguments": {"text": "meanwhile"}})["content"][0]["text"] == \
        "meanwhile"

    child.notify("notifications/cancelled", {"requestId": slow_id, "reason": "test"})
    assert child.call("ping") == {}
    # EOF: the session closes and joins its workers before the process exits, so anything the
    # cancelled call could still have written is on stdout by now.
    assert child.close_stdin_and_wait() == 0
    assert not child.has_response(slow_id)
    assert child.garbage == []
    assert b"'slow-1' cancelled" in child.stderr  # the debug log went to stderr, not stdout


def test_eof_with_a_call_in_flight_exits_promptly(spawn: Callable[..., Child]) -> None:
    child = spawn("serve", str(FIXTURE), "--stdio")
    child.initialize()
    slow_id = child.request("tools/call", {"name": "slow", "arguments": {}})
    child.wait_for(lambda m: isinstance(m, dict) and m.get("method") == "notifications/message")
    assert child.close_stdin_and_wait() == 0  # the slow call is cancelled, not waited for (30 s)
    assert not child.has_response(slow_id)


def test_batch_over_stdio_in_2025_03_26(spawn: Callable[..., Child]) -> None:
    child = spawn("serve", str(FIXTURE), "--stdio")
    assert child.call("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "1"}})["protocolVersion"] == "2025-03-26"
    child.notify("notifications/initialized")
    child.send([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
                {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                {"jsonrpc": "2.0", "id": "b", "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"text": "batched"}}}])
    batch = child.wait_for(lambda m: isinstance(m, list))
    assert sorted(r["id"] for r in batch) == ["a", "b"]
    assert {r["id"]: r["result"] for r in batch}["b"]["content"][0]["text"] == "batched"
    assert child.close_stdin_and_wait() == 0


def test_invalid_messages_over_stdio(spawn: Callable[..., Child]) -> None:
    child = spawn("--stdio")
    child.send_raw(b'{"jsonrpc": "2.0", "id": true, "method": "ping"}\n')
    child.send_raw(b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]\n')  # no batches before init
    rid = child.request("tools/list")  # before initialize
    assert child.response(rid)["error"]["code"] == -32600
    errors = [m for m in child.messages if isinstance(m, dict) and m.get("id") is None]
    assert [e["error"]["code"] for e in errors] == [-32600, -32600]
    # server/discover (the mcp 2.x Client's probe) is answered at once, never left in silence
    rid = child.request("server/discover", {})
    reply = child.response(rid)
    assert "error" in reply or "result" in reply
    assert child.close_stdin_and_wait() == 0


def test_serve_missing_file_is_a_usage_error() -> None:
    proc = run_cli("serve", "nonexistent.py", "--stdio")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "nonexistent.py" in lines[0]
    assert "Traceback" not in proc.stderr


def test_serve_missing_module_is_a_usage_error() -> None:
    proc = run_cli("serve", "no_such_module_xyz:server", "--stdio")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "serve" in proc.stdout and "--stdio" in proc.stdout


def test_hub_is_not_built_yet() -> None:
    proc = run_cli("hub", "x.json")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


LISTEN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}


@pytest.mark.parametrize("acknowledged_first", [True, False, False, False])
def test_eof_ends_an_open_listen_stream_with_its_result(spawn: Callable[..., Child],
                                                        acknowledged_first: bool) -> None:
    """A 2026-07-28 ``subscriptions/listen`` never ends on its own: at EOF the stream ends
    gracefully (its result is written) and the process exits, rather than waiting out the
    EOF drain for a request that would never finish. Also when EOF comes right behind the
    request (the listen may open only after the EOF was seen: it ends at once)."""
    child = spawn("serve", str(FIXTURE), "--stdio")
    rid = child.request("subscriptions/listen",
                        {"_meta": LISTEN_META, "notifications": {"toolsListChanged": True}})
    if acknowledged_first:
        child.wait_for(lambda m: isinstance(m, dict)
                       and m.get("method") == "notifications/subscriptions/acknowledged")
    assert child.close_stdin_and_wait() == 0
    reply = child.response(rid, timeout=0)  # written before the process left
    assert reply["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == rid
    assert child.garbage == []


def test_a_listen_opened_after_its_connection_was_ended_ends_at_once() -> None:
    """The race the EOF path has (the listen still queued when the EOF is seen), made
    certain: the connection's listen streams are ended first, then the listen arrives."""
    from mcpsync import Server
    from mcpsync.streams.stream import MessageStream

    server = Server("ended")
    written: list[Any] = []
    cond = threading.Condition()

    def write(data: bytes) -> None:
        with cond:
            written.append(json.loads(data))
            cond.notify_all()
    stream = MessageStream(server, write, name="test")
    try:
        server.end_listeners(stream.conn)
        stream.feed(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {
            "_meta": LISTEN_META, "notifications": {"toolsListChanged": True}}}).encode())
        with cond:
            assert cond.wait_for(lambda: any(m.get("id") == 7 for m in written), WAIT_S), written
        assert written[0]["method"] == "notifications/subscriptions/acknowledged"
        assert written[-1]["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 7
    finally:
        stream.close(timeout=5)
