"""Shared state without Redis: the key ring (secrets, rotation, signed task ids), and two
``Server`` objects attached to one ``MemoryBackend``, which behave as two instances of a
deployment: a requestState sealed by one opens on the other, a task created on one is read,
answered and cancelled on the other, a resource update notified on one reaches a listen
stream on the other. The same pair without shared state is the control: each refuses what
the other made. Also the command line's checks of --state-url, --secret-file, --instance-id."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from mcpsync import Context, Server
from mcpsync.service import Service
from mcpsync.core.connection import ServerConnection
from mcpsync.errors import ConfigError
from mcpsync.protocol.modern import StateSealer
from mcpsync.state import KeyRing, MemoryBackend, SharedState, parse_secrets

V = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
CAPS = {"elicitation": {}, "extensions": {EXT: {}}}
WAIT_S = 10.0
SECRET_A = "a" * 40
SECRET_B = "b" * 40
NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}


def rpc(server: Server, method: str, params: dict[str, Any], principal: str | None = None,
        sink: Callable[[dict[str, Any]], None] = lambda m: None, rid: Any = 1) -> dict[str, Any]:
    msg = {"jsonrpc": "2.0", "id": rid, "method": method,
           "params": {**params, "_meta": {"io.modelcontextprotocol/protocolVersion": V,
                                          "io.modelcontextprotocol/clientCapabilities": CAPS}}}
    reply = ServerConnection(server).handle_request(msg, sink, principal=principal)
    assert reply is not None
    return reply


def make_server(started: threading.Event | None = None) -> Server:
    srv = Server("pair")

    @srv.tool()
    def ask_name(ctx: Context) -> str:
        return "hello " + ctx.elicit("name?", NAME_SCHEMA)["content"]["name"]

    @srv.tool(task="required")
    def waits(ctx: Context) -> str:
        if started is not None:
            started.set()
        answer = ctx.elicit("go on?", NAME_SCHEMA)
        ctx.wait_cancelled(60.0)  # only a cancel ends it within the test's waits
        return "answered " + answer["content"]["name"]
    return srv


@pytest.fixture
def pair() -> Iterator[tuple[Server, Server, threading.Event]]:
    backend = MemoryBackend()
    started = threading.Event()
    a, b = make_server(started), make_server()
    state_a = SharedState(backend, instance_id="a")
    state_b = SharedState(backend, instance_id="b")
    state_a.attach(a)
    state_b.attach(b)
    yield a, b, started
    a.close()
    b.close()
    state_a.close()
    state_b.close()


# ---- the key ring ------------------------------------------------------------------------------

def test_secrets_parse_in_order_and_refuse_short_or_missing_ones() -> None:
    text = f"# rotated on Monday\n{SECRET_B}\n{SECRET_A}, \n"
    assert parse_secrets(text) == [SECRET_B.encode(), SECRET_A.encode()]
    with pytest.raises(ConfigError, match="at least 32"):
        parse_secrets("short")
    with pytest.raises(ConfigError, match="no secret"):
        parse_secrets("# only a comment\n\n")


def test_rotation_opens_old_states_and_seals_with_the_new_key() -> None:
    old, rotated, retired = (KeyRing([SECRET_A.encode()]), KeyRing([SECRET_B.encode(), SECRET_A.encode()]),
                             KeyRing([SECRET_B.encode()]))
    args = {"method": "tools/call", "digest": "d", "principal": None}
    state = StateSealer(old.sealing_keys()).seal(answers={"k": {"x": 1}}, now=time.time(), **args)
    assert StateSealer(rotated.sealing_keys()).open(state, now=time.time(), **args) == {"k": {"x": 1}}
    with pytest.raises(Exception, match="failed verification"):
        StateSealer(retired.sealing_keys()).open(state, now=time.time(), **args)
    fresh = StateSealer(rotated.sealing_keys()).seal(answers={}, now=time.time(), **args)
    assert StateSealer(retired.sealing_keys()).open(fresh, now=time.time(), **args) == {}


def test_task_ids_are_signed_and_checked_against_every_key_in_force() -> None:
    ring = KeyRing([SECRET_A.encode()])
    task_id = ring.new_task_id()
    random_part, mac = task_id.split(".")
    assert len(random_part) == 43 and len(mac) == 22
    assert ring.check_task_id(task_id)
    assert not ring.check_task_id(random_part + "." + ("A" if mac[0] != "A" else "B") + mac[1:])
    assert not ring.check_task_id(random_part) and not ring.check_task_id("x" * 43 + "." + "y" * 22)
    assert not KeyRing([SECRET_B.encode()]).check_task_id(task_id)
    assert KeyRing([SECRET_B.encode(), SECRET_A.encode()]).check_task_id(task_id)


def test_a_made_up_task_id_is_refused_before_the_store_is_asked(pair: Any) -> None:
    a, _, _ = pair
    asked: list[str] = []
    real_get = a.tasks.store.get
    a.tasks.store.get = lambda task_id: asked.append(task_id) or real_get(task_id)  # type: ignore[method-assign]
    reply = rpc(a, "tasks/get", {"taskId": "x" * 43 + "." + "y" * 22})
    assert reply["error"]["code"] == -32602 and asked == []


# ---- two instances on one MemoryBackend -----------------------------------------------------------

def test_request_state_sealed_by_one_instance_opens_on_the_other(pair: Any) -> None:
    a, b, _ = pair
    first = rpc(a, "tools/call", {"name": "ask_name", "arguments": {}})["result"]
    assert first["resultType"] == "input_required"
    (key,) = first["inputRequests"]
    retry = {"name": "ask_name", "arguments": {}, "requestState": first["requestState"],
             "inputResponses": {key: {"action": "accept", "content": {"name": "ada"}}}}
    state = rpc(b, "tools/call", {**retry, "inputResponses": {}})["result"]
    assert state["resultType"] == "input_required"  # opened on b: no answer yet, asked again
    done = rpc(b, "tools/call", retry)["result"]
    assert done["content"][0]["text"] == "hello ada"


def test_without_shared_state_the_other_instance_refuses_the_state() -> None:
    a, b = make_server(), make_server()  # the control: each process's own key
    first = rpc(a, "tools/call", {"name": "ask_name", "arguments": {}})["result"]
    (key,) = first["inputRequests"]
    reply = rpc(b, "tools/call", {"name": "ask_name", "arguments": {}, "requestState": first["requestState"],
                                  "inputResponses": {key: {"action": "accept", "content": {"name": "ada"}}}})
    assert reply["error"]["code"] == -32602 and "verification" in reply["error"]["message"]


def test_same_secret_without_a_backend_is_enough_for_request_state() -> None:
    a, b = make_server(), make_server()
    for srv in (a, b):
        SharedState(keys=KeyRing([SECRET_A.encode()])).attach(srv)
    first = rpc(a, "tools/call", {"name": "ask_name", "arguments": {}})["result"]
    (key,) = first["inputRequests"]
    done = rpc(b, "tools/call", {"name": "ask_name", "arguments": {}, "requestState": first["requestState"],
                                 "inputResponses": {key: {"action": "accept", "content": {"name": "bo"}}}})
    assert done["result"]["content"][0]["text"] == "hello bo"


def wait_status(srv: Server, task_id: str, status: str, principal: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = rpc(srv, "tasks/get", {"taskId": task_id}, principal)["result"]
        if got["status"] == status:
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.01)  # a bounded poll of another instance's task (as a client polls)


def test_a_task_created_on_one_instance_is_answered_and_cancelled_on_the_other(pair: Any) -> None:
    a, b, started = pair
    created = rpc(a, "tools/call", {"name": "waits", "arguments": {}}, "alice")["result"]
    task_id = created["taskId"]
    assert started.wait(WAIT_S)
    asked = wait_status(b, task_id, "input_required", "alice")
    (key,) = asked["inputRequests"]
    assert rpc(b, "tasks/get", {"taskId": task_id}, "bob")["error"]["code"] == -32602  # another principal
    rpc(b, "tasks/update", {"taskId": task_id, "inputResponses": {key: {"action": "accept",
                                                                        "content": {"name": "x"}}}}, "alice")
    wait_status(a, task_id, "working", "alice")
    rpc(b, "tasks/cancel", {"taskId": task_id}, "alice")
    done = wait_status(a, task_id, "cancelled", "alice")
    assert done["statusMessage"] == "Cancelled by the client"
    deadline = time.monotonic() + WAIT_S
    while a.tasks._running:  # the cancel reached the tool on a: its thread returned
        assert time.monotonic() < deadline
        time.sleep(0.01)


class ListenStream:
    """A subscriptions/listen on ``srv`` run on its own thread, collecting what it is sent."""

    def __init__(self, srv: Server, notifications: dict[str, Any]) -> None:
        self.cond = threading.Condition()  # guards `got`; notified by the sink
        self.got: list[dict[str, Any]] = []
        self.conn = ServerConnection(srv)
        self.thread = threading.Thread(target=self._listen, args=(notifications,), name="test-listen")
        self.thread.start()

    def _listen(self, notifications: dict[str, Any]) -> None:
        msg = {"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
               "params": {"notifications": notifications,
                          "_meta": {"io.modelcontextprotocol/protocolVersion": V,
                                    "io.modelcontextprotocol/clientCapabilities": CAPS}}}
        self.conn.handle_request(msg, self._sink)

    def _sink(self, msg: dict[str, Any]) -> None:
        with self.cond:
            self.got.append(msg)
            self.cond.notify_all()

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while True:
                for msg in self.got:
                    if msg.get("method") == method:
                        return msg
                left = deadline - time.monotonic()
                assert left > 0, self.got
                self.cond.wait(left)

    def stop(self) -> None:
        self.conn.cancel("L", "done")
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def test_a_resource_update_on_one_instance_reaches_a_listen_stream_on_the_other(pair: Any) -> None:
    a, b, _ = pair
    stream = ListenStream(a, {"resourceSubscriptions": ["file:///notes/"], "toolsListChanged": True})
    try:
        stream.wait_for("notifications/subscriptions/acknowledged")
        assert b.notify_resource_updated("file:///notes/today") == 0  # none on b itself
        update = stream.wait_for("notifications/resources/updated")
        assert update["params"]["uri"] == "file:///notes/today"
        b.notify_list_changed("tools")
        stream.wait_for("notifications/tools/list_changed")
    finally:
        stream.stop()
    assert sum(m.get("method") == "notifications/resources/updated" for m in stream.got) == 1


def test_without_shared_state_a_notification_stays_on_its_instance() -> None:
    a, b = make_server(), make_server()
    stream = ListenStream(a, {"resourceSubscriptions": ["file:///notes/"]})
    try:
        stream.wait_for("notifications/subscriptions/acknowledged")
        b.notify_resource_updated("file:///notes/today")
        a.notify_resource_updated("file:///notes/here")  # delivered in order after b's, if any
        update = stream.wait_for("notifications/resources/updated")
        assert update["params"]["uri"] == "file:///notes/here"
    finally:
        stream.stop()


def test_session_ids_carry_the_instance_prefix() -> None:
    app = Service(make_server(), state=SharedState(instance_id="node-2"))
    try:
        session = app.open_session()
        name, dot, rest = session.id.partition(".")
        assert (name, dot) == ("node-2", ".") and len(rest) == 32 and "." not in rest
    finally:
        app.close()


def test_an_invalid_instance_id_is_refused() -> None:
    with pytest.raises(ConfigError):
        SharedState(instance_id="has.dot")


# ---- the command line --------------------------------------------------------------------------

@pytest.mark.parametrize("args, env, needle", [
    (["--state-url", "postgres://x"], {}, "unknown scheme"),
    (["--secret-file", "/nonexistent/secret"], {}, "--secret-file"),
    (["--instance-id", "a b"], {}, "--instance-id"),
    ([], {"MCPSYNC_SECRET": "short"}, "at least 32"),
    (["--state-url", "redis://127.0.0.1:1/0?task_lease_s=x"], {}, "task_lease_s"),
    (["--stdio", "--instance-id", "a"], {}, "not --stdio"),
])
def test_bad_shared_state_settings_exit_2_with_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    import os
    proc = subprocess.run([sys.executable, "-m", "mcpsync", "--port", "0", *args], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
