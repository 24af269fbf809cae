"""The tasks extension (SEP-2663) on threads: every status and transition, input through
``tasks/update``, cancellation races, principal isolation, TTL expiry on an injected clock,
limits, shutdown; in process (``handle_request``) and over real HTTP."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import pytest
from httpclient import HttpMcp
from httpserver import serving

from mcpsync import Context, McpError, Server, ToolError
from mcpsync.service import Service
from mcpsync.core.connection import ServerConnection
from mcpsync.tasks import TaskManager, TaskRecord
from mcpsync.http.app import HttpApp

V = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
TASKS = {"elicitation": {}, "extensions": {EXT: {}}}
WAIT_S = 10.0
RACE_ROUNDS = 200


def meta(caps: dict[str, Any]) -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": V,
            "io.modelcontextprotocol/clientCapabilities": caps}


def rpc(server: Server, method: str, params: dict[str, Any] | None = None, *,
        caps: dict[str, Any] | None = None, principal: str | None = None) -> dict[str, Any]:
    msg = {"jsonrpc": "2.0", "id": 1, "method": method,
           "params": {**(params or {}), "_meta": meta(TASKS if caps is None else caps)}}
    reply = ServerConnection(server).handle_request(msg, lambda m: None, principal=principal)
    assert reply is not None
    return reply


def result(reply: dict[str, Any]) -> dict[str, Any]:
    assert "result" in reply, reply
    return reply["result"]


class Watcher:
    """Waits (on a condition fed by the manager's change callback) for a task's status."""

    def __init__(self, manager: TaskManager) -> None:
        self.cond = threading.Condition()  # guards `latest`; notified on every task change
        self.latest: dict[str, TaskRecord] = {}
        self.rewritten: list[TaskRecord] = []  # writes to a task already finished: must stay empty
        manager.on_change(self._seen)

    def _seen(self, record: TaskRecord) -> None:
        with self.cond:
            before = self.latest.get(record["taskId"])
            if before is not None and before["status"] in ("completed", "failed", "cancelled"):
                self.rewritten.append(record)
            self.latest[record["taskId"]] = record
            self.cond.notify_all()

    def wait(self, task_id: str, *statuses: str) -> TaskRecord:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while task_id not in self.latest or self.latest[task_id]["status"] not in statuses:
                left = deadline - time.monotonic()
                assert left > 0, f"task never reached {statuses}: {self.latest.get(task_id)}"
                self.cond.wait(left)
            return self.latest[task_id]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_server(clock: Callable[[], float] | None = None, **limits: Any) -> tuple[Server, Watcher, Gate]:
    srv = Server("tasks-tests")
    if clock is not None or limits:
        srv.tasks = TaskManager(srv, clock=clock or time.time, **limits)
    gate = Gate()

    @srv.tool(task="optional")
    def gated(ctx: Context, outcome: str = "ok") -> str:
        """Waits for the test's release (or a cancel), then ends as `outcome` says."""
        if gate.wait(ctx):
            return "cancelled"
        if outcome == "tool-error":
            raise ToolError("it went wrong")
        if outcome == "crash":
            raise RuntimeError("secret internals")
        if outcome == "protocol":
            raise McpError("upstream refused", {"why": "test"}, code=-32050)
        return "done"

    @srv.tool(task="required")
    def asks(ctx: Context) -> str:
        """One elicitation inside the task."""
        answer = ctx.elicit("Go on?", {"type": "object", "properties": {"go": {"type": "boolean"}}})
        return f"go={answer['content']['go']}"

    @srv.tool(task="optional")
    def asks_two(ctx: Context) -> str:
        """Two questions at once."""
        from mcpsync import inputs
        got = ctx.ask(a=inputs.elicitation("a?", {"type": "object"}), b=inputs.elicitation("b?", {"type": "object"}))
        return f"{got['a']['content']}/{got['b']['content']}"

    @srv.tool(task="required", defer_task=True)
    def deferred(ctx: Context) -> str:
        """A name through input_required rounds, then a task."""
        name = ctx.elicit("Name?", {"type": "object"}, key="who")["content"]["name"]
        ctx.begin_task()
        return f"hello {name} from {'a task' if ctx.task is not None else 'the request'}"

    return srv, Watcher(srv.tasks), gate


class Gate:
    """Holds tools until the test opens it; a cancel lets a tool through at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _open and _waiters
        self._open = False
        self._waiters: set[threading.Event] = set()

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiters = list(self._waiters)
        for w in waiters:
            w.set()

    def wait(self, ctx: Context) -> bool:
        """Block until open or cancelled; True if cancelled."""
        wake = threading.Event()
        with self._lock:
            if not self._open:
                self._waiters.add(wake)
        if not self._open:
            remove = ctx.on_cancel(wake.set)
            wake.wait(3 * WAIT_S)
            remove()
            with self._lock:
                self._waiters.discard(wake)
        return ctx.cancelled


@pytest.fixture()
def env() -> Iterator[tuple[Server, Watcher, Gate]]:
    srv, watcher, gates = make_server()
    yield srv, watcher, gates
    gates.open()
    assert srv.close()


def start(srv: Server, tool: str = "gated", principal: str | None = None, **args: Any) -> str:
    created = result(rpc(srv, "tools/call", {"name": tool, "arguments": args}, principal=principal))
    assert created["resultType"] == "task" and created["status"] == "working", created
    assert "result" not in created and "requestState" not in created and "task" not in created
    assert created["ttlMs"] > 0 and created["pollIntervalMs"] > 0
    return str(created["taskId"])


def get(srv: Server, task_id: str, principal: str | None = None) -> dict[str, Any]:
    return rpc(srv, "tasks/get", {"taskId": task_id}, principal=principal)


# ---- negotiation ---------------------------------------------------------------------------------

def test_without_the_extension_tools_run_synchronously_or_refuse(env: Any) -> None:
    srv, _, gates = env
    gates.open()
    plain = result(rpc(srv, "tools/call", {"name": "gated", "arguments": {}}, caps={}))
    assert plain["resultType"] == "complete" and plain["content"][0]["text"] == "done"
    refused = rpc(srv, "tools/call", {"name": "asks", "arguments": {}}, caps={"elicitation": {}})
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"]["requiredCapabilities"] == {"extensions": {EXT: {}}}
    for method in ("tasks/get", "tasks/update", "tasks/cancel"):
        gated = rpc(srv, method, {"taskId": "x", "inputResponses": {}}, caps={})
        assert gated["error"]["code"] == -32021, method
    discover = result(rpc(srv, "server/discover"))
    assert discover["capabilities"]["extensions"] == {EXT: {}} and "tasks" not in discover["capabilities"]


def test_task_methods_do_not_exist_in_the_session_era() -> None:
    srv, _, _ = make_server()
    conn = srv.connect()
    conn.receive({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    conn.receive({"jsonrpc": "2.0", "method": "notifications/initialized"})
    reply = conn.receive({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": "x"}})
    assert reply["error"]["code"] == -32601
    conn.close()


# ---- statuses and transitions --------------------------------------------------------------------

@pytest.mark.parametrize("outcome,status", [("ok", "completed"), ("tool-error", "completed"),
                                            ("crash", "failed"), ("protocol", "failed")])
def test_working_then_terminal(env: Any, outcome: str, status: str) -> None:
    srv, watcher, gates = env
    tid = start(srv, outcome=outcome)
    working = result(get(srv, tid))  # durable before the CreateTaskResult: resolves at once
    assert working["status"] == "working" and working["resultType"] == "complete"
    assert "result" not in working and "error" not in working
    gates.open()
    watcher.wait(tid, status)
    done = result(get(srv, tid))
    assert done["status"] == status and "requestState" not in done
    assert done["lastUpdatedAt"] >= done["createdAt"]
    if outcome == "ok":
        assert done["result"]["content"] == [{"type": "text", "text": "done"}] and "error" not in done
        assert "io.modelcontextprotocol/related-task" not in (done["result"].get("_meta") or {})
    elif outcome == "tool-error":
        assert done["result"]["isError"] is True and "it went wrong" in done["result"]["content"][0]["text"]
    elif outcome == "crash":
        assert done["error"] == {"code": -32603, "message": "Internal error: the tool crashed"}
        assert "result" not in done  # and no traceback or internals reach the client
    else:
        assert done["error"] == {"code": -32050, "message": "upstream refused", "data": {"why": "test"}}


def test_elicitation_answered_through_tasks_update(env: Any) -> None:
    srv, watcher, _ = env
    tid = start(srv, "asks")
    watcher.wait(tid, "input_required")
    waiting = result(get(srv, tid))
    (key, request), = waiting["inputRequests"].items()
    assert request["method"] == "elicitation/create" and request["params"]["message"] == "Go on?"
    ack = result(rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": {"nope": {"action": "accept"}}}))
    assert ack == {"resultType": "complete", "_meta": ack["_meta"]}  # unknown keys: ignored, acked
    assert result(get(srv, tid))["status"] == "input_required"
    bad = rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": "yes"})
    assert bad["error"]["code"] == -32602
    result(rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": {
        key: {"action": "accept", "content": {"go": True}}}}))
    watcher.wait(tid, "completed")
    assert result(get(srv, tid))["result"]["content"][0]["text"] == "go=True"


def test_partial_answers_keep_the_task_waiting(env: Any) -> None:
    srv, watcher, _ = env
    tid = start(srv, "asks_two")
    watcher.wait(tid, "input_required")
    assert sorted(result(get(srv, tid))["inputRequests"]) == ["a", "b"]
    rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": {"b": {"action": "accept", "content": 2}}})
    left = result(get(srv, tid))
    assert left["status"] == "input_required" and list(left["inputRequests"]) == ["a"]
    rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": {"a": {"action": "accept", "content": 1}}})
    watcher.wait(tid, "completed")
    assert result(get(srv, tid))["result"]["content"][0]["text"] == "1/2"


def test_input_before_the_task_then_the_task(env: Any) -> None:
    srv, watcher, _ = env
    first = result(rpc(srv, "tools/call", {"name": "deferred", "arguments": {}}))
    assert first["resultType"] == "input_required" and "taskId" not in first
    created = result(rpc(srv, "tools/call", {"name": "deferred", "arguments": {}, "requestState": first["requestState"],
                                              "inputResponses": {"who": {"action": "accept", "content": {"name": "Ada"}}}}))
    assert created["resultType"] == "task" and "requestState" not in created and "inputRequests" not in created
    watcher.wait(created["taskId"], "completed")
    assert result(get(srv, created["taskId"]))["result"]["content"][0]["text"] == "hello Ada from a task"


# ---- cancellation ----------------------------------------------------------------------------------

def test_cancel_stops_the_tool_and_is_idempotent(env: Any) -> None:
    srv, watcher, _ = env
    tid = start(srv)
    ack = result(rpc(srv, "tasks/cancel", {"taskId": tid}))
    assert {k for k in ack if k != "_meta"} == {"resultType"} and ack["resultType"] == "complete"
    watcher.wait(tid, "cancelled")
    assert result(rpc(srv, "tasks/cancel", {"taskId": tid}))["resultType"] == "complete"
    after = result(get(srv, tid))
    assert after["status"] == "cancelled" and "result" not in after
    assert rpc(srv, "tasks/cancel", {"taskId": "never-was"})["error"]["code"] == -32602


def test_cancel_while_waiting_for_input(env: Any) -> None:
    srv, watcher, _ = env
    tid = start(srv, "asks")
    watcher.wait(tid, "input_required")
    rpc(srv, "tasks/cancel", {"taskId": tid})
    cancelled = result(get(srv, tid))
    assert cancelled["status"] == "cancelled" and "inputRequests" not in cancelled
    rpc(srv, "tasks/update", {"taskId": tid, "inputResponses": {"input-1": {"action": "accept"}}})
    assert result(get(srv, tid))["status"] == "cancelled"  # terminal: nothing moves it again


def test_cancel_racing_completion_has_one_winner() -> None:
    """A cancel and the tool's return land at the same moment, RACE_ROUNDS times: the task
    ends either completed (with its result) or cancelled (without one), and stays so."""
    srv = Server("race")
    barrier = threading.Barrier(2)

    @srv.tool(task="optional")
    def quick() -> str:
        """Returns as soon as the test thread is ready to cancel."""
        barrier.wait(WAIT_S)
        return "finished"

    watcher = Watcher(srv.tasks)
    outcomes = {"completed": 0, "cancelled": 0}
    try:
        for _ in range(RACE_ROUNDS):
            tid = result(rpc(srv, "tools/call", {"name": "quick", "arguments": {}}))["taskId"]
            barrier.wait(WAIT_S)
            assert result(rpc(srv, "tasks/cancel", {"taskId": tid}))["resultType"] == "complete"
            final = watcher.wait(tid, "completed", "cancelled")
            outcomes[final["status"]] += 1
            seen = result(get(srv, tid))
            assert seen["status"] == final["status"]
            if final["status"] == "completed":
                assert seen["result"]["content"][0]["text"] == "finished" and "statusMessage" not in seen
            else:
                assert "result" not in seen and "error" not in seen
    finally:
        assert srv.close()
    assert sum(outcomes.values()) == RACE_ROUNDS
    assert not watcher.rewritten  # a finished task never changed again


# ---- isolation, expiry, limits, shutdown -------------------------------------------------------------

def test_another_principal_sees_no_such_task(env: Any) -> None:
    srv, watcher, _ = env
    tid = start(srv, principal="alice")
    unknown = get(srv, "not-a-task", principal="bob")["error"]
    other = get(srv, tid, principal="bob")["error"]
    assert other == unknown and other["code"] == -32602
    assert rpc(srv, "tasks/cancel", {"taskId": tid}, principal="bob")["error"] == unknown
    assert get(srv, tid)["error"] == unknown  # no principal is not alice either
    assert result(get(srv, tid, principal="alice"))["status"] == "working"


def test_task_ids_are_long_random_and_distinct(env: Any) -> None:
    srv, _, gates = env
    gates.open()
    ids = {start(srv) for _ in range(20)}
    assert len(ids) == 20 and all(len(i) >= 43 for i in ids)


def test_ttl_expiry_on_an_injected_clock() -> None:
    clock = Clock()
    srv, watcher, gates = make_server(clock, ttl_ms=60_000)
    try:
        tid = start(srv)
        clock.now += 59.0
        assert result(get(srv, tid))["status"] == "working"  # not before its TTL
        clock.now += 1.0
        assert get(srv, tid)["error"]["code"] == -32602  # expired: gone, and its tool stopped
        watcher.wait(tid, "cancelled")
        done = start(srv)
        gates.open()
        watcher.wait(done, "completed")
        clock.now += 61.0
        assert srv.tasks.sweep() == 1 and get(srv, done)["error"]["code"] == -32602
    finally:
        gates.open()
        assert srv.close()


def test_limits_per_principal_and_in_total() -> None:
    srv, watcher, gates = make_server(max_per_principal=2, max_tasks=3)
    try:
        a1, _a2 = start(srv, principal="a"), start(srv, principal="a")
        refused = rpc(srv, "tools/call", {"name": "gated", "arguments": {}}, principal="a")["error"]
        assert refused["code"] == -32003 and refused["data"] == {"limit": 2, "scope": "principal"}
        start(srv, principal="b")
        full = rpc(srv, "tools/call", {"name": "gated", "arguments": {}}, principal="c")["error"]
        assert full["data"] == {"limit": 3, "scope": "server"}
        rpc(srv, "tasks/cancel", {"taskId": a1}, principal="a")
        watcher.wait(a1, "cancelled")
        full_again = rpc(srv, "tools/call", {"name": "gated", "arguments": {}}, principal="a")["error"]
        assert full_again["data"]["scope"] == "server"  # finished records count until their TTL
    finally:
        gates.open()
        assert srv.close()


def test_shutdown_cancels_tasks_and_joins_their_threads() -> None:
    srv, watcher, _ = make_server(threads=2)
    ids = [start(srv) for _ in range(4)]  # two run, two wait for a thread
    watcher.wait(ids[0], "working")
    assert srv.close(timeout=WAIT_S)
    for tid in ids:
        rec = result(get(srv, tid))
        assert rec["status"] == "cancelled" and rec["statusMessage"] == "The server shut down"
    assert not [t for t in threading.enumerate() if t.name.startswith("mcpsync-task-")]


# ---- over HTTP ------------------------------------------------------------------------------------------

def test_over_http_tasks_outlive_their_request_and_keep_to_their_principal() -> None:
    srv, watcher, gates = make_server()
    app = Service(srv)

    def post(c: HttpMcp, method: str, params: dict[str, Any], user: str, name: str | None = None) -> Any:
        headers = {"MCP-Protocol-Version": V, "Mcp-Method": method, "X-User": user}
        if name is not None:
            headers["Mcp-Name"] = name
        return c.post({"jsonrpc": "2.0", "id": 7, "method": method,
                       "params": {**params, "_meta": meta(TASKS)}}, headers, session=False)

    with serving(HttpApp(app, principal=lambda environ: environ.get("HTTP_X_USER"))) as base:
        with HttpMcp(f"{base}/mcp") as c:
            created = post(c, "tools/call", {"name": "gated", "arguments": {}}, "alice", "gated").json()["result"]
        tid = created["taskId"]  # that connection is gone; the task runs on
        with HttpMcp(f"{base}/mcp") as c:
            assert post(c, "tasks/get", {"taskId": tid}, "alice", tid).json()["result"]["status"] == "working"
            other = post(c, "tasks/get", {"taskId": tid}, "bob", tid)
            unknown = post(c, "tasks/get", {"taskId": "x" * 43}, "bob", "x" * 43)
            assert other.status == unknown.status == 400
            assert other.json()["error"] == unknown.json()["error"] and other.json()["error"]["code"] == -32602
            wrong = post(c, "tasks/get", {"taskId": tid}, "alice", "another-id")
            assert wrong.status == 400 and wrong.json()["error"]["code"] == -32020
            missing = post(c, "tasks/get", {"taskId": tid}, "alice")
            assert missing.status == 400 and missing.json()["error"]["code"] == -32020
            removed = post(c, "tasks/result", {"taskId": tid}, "alice")
            assert removed.status == 404 and removed.json()["error"]["code"] == -32601
            gates.open()
            watcher.wait(tid, "completed")
            done = post(c, "tasks/get", {"taskId": tid}, "alice", tid).json()["result"]
            assert done["result"]["content"][0]["text"] == "done"
    app.close()


# ---- notifications/tasks on subscriptions/listen ----------------------------------------------

class Listen:
    """A subscriptions/listen request running on its own thread, collecting what it is sent."""

    def __init__(self, srv: Server, task_ids: list[Any], principal: str | None, caps: dict[str, Any] = TASKS) -> None:
        self.cond = threading.Condition()  # guards `got`; notified by the sink
        self.got: list[dict[str, Any]] = []
        self.conn = ServerConnection(srv)
        msg = {"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
               "params": {"notifications": {"taskIds": task_ids}, "_meta": meta(caps)}}
        self.reply: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._run, args=(msg, principal), name="test-listen")
        self.thread.start()

    def _run(self, msg: dict[str, Any], principal: str | None) -> None:
        self.reply = self.conn.handle_request(msg, self._sink, principal=principal)
        with self.cond:
            self.cond.notify_all()

    def _sink(self, msg: dict[str, Any]) -> None:
        with self.cond:
            self.got.append(msg)
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while True:
                for msg in self.got:
                    if pred(msg):
                        return msg
                left = deadline - time.monotonic()
                assert left > 0 and self.reply is None, (self.got, self.reply)
                self.cond.wait(left)

    def stop(self) -> None:
        self.conn.cancel("L", "done")
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def test_listen_streams_get_notifications_tasks_for_their_own_tasks(env: Any) -> None:
    srv, watcher, gates = env
    mine, theirs = start(srv, principal="alice"), start(srv, principal="bob")
    listen = Listen(srv, [mine, theirs, "no-such-task"], "alice")
    try:
        ack = listen.wait_for(lambda m: m["method"] == "notifications/subscriptions/acknowledged")
        assert ack["params"]["notifications"]["taskIds"] == [mine]  # bob's and unknown left out
        gates.open()
        done = listen.wait_for(lambda m: m["method"] == "notifications/tasks"
                               and m["params"]["status"] == "completed")
        params = done["params"]
        assert params["taskId"] == mine and params["result"]["content"][0]["text"] == "done"
        assert params["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L"
        assert "resultType" not in params
        watcher.wait(theirs, "completed")
        assert all(m["params"].get("taskId") != theirs for m in listen.got)
    finally:
        listen.stop()


def test_listening_for_tasks_needs_the_extension(env: Any) -> None:
    srv, _, _ = env
    listen = Listen(srv, ["x"], None, caps={})
    listen.thread.join(WAIT_S)
    assert listen.reply is not None and listen.reply["error"]["code"] == -32021
    assert listen.reply["error"]["data"]["requiredCapabilities"] == {"extensions": {EXT: {}}}
