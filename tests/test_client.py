"""``mcpsync.Client`` against mcpsync itself over every transport and era: stdio (a
``python -m mcpsync serve`` subprocess), Streamable HTTP, WebSocket and legacy SSE (an
in-process server on the real front end), each in 2026-07-28 and a handshake revision.

One test body runs over every transport (``KINDS``). Every wait is bounded (``WAIT_S``,
pytest-timeout); synchronization is by events set in callbacks, never by sleeping.
"""
from __future__ import annotations

import pathlib
import sys
import threading
from typing import Any, Iterator

import pytest
from client_fixture_server import EXTRA_TOOLS, make_server

import mcpsync
from mcpsync import CancelToken, Client
from mcpsync.client import LogMessage, Task
from mcpsync.errors import Cancelled, ConnectionClosed, PeerError, RequestTimeout

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = str(pathlib.Path(__file__).resolve().parent / "client_fixture_server.py")
WAIT_S = 20.0
MODERN = "2026-07-28"

# kind -> (how to reach the fixture, revision asked for, revision expected)
KINDS = {
    "stdio": ("stdio", "auto", MODERN),
    "stdio-old": ("stdio", "2025-11-25", "2025-11-25"),
    "http": ("http", "auto", MODERN),
    "http-old": ("http", "2025-11-25", "2025-11-25"),
    "ws": ("ws", "auto", MODERN),
    "ws-old": ("ws", "2025-06-18", "2025-06-18"),
    "sse": ("sse", "auto", "2025-11-25"),
}


def stdio_command() -> list[str]:
    return [sys.executable, "-m", "mcpsync", "serve", FIXTURE, "--stdio", "--log-level", "WARNING"]


class Recorder:
    """The callbacks a test client is given, and what they saw (``_lock`` guards the lists;
    ``changed`` is notified on every record)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.logs: list[LogMessage] = []
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.lists: list[str] = []

    def sampling(self, params: dict[str, Any]) -> dict[str, Any]:
        question = params["messages"][0]["content"]["text"]
        with self._lock:
            self.asked.append(("sampling", params))
        return {"role": "assistant", "model": "test-model", "content": {"type": "text", "text": f"sampled: {question}"}}

    def elicitation(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.asked.append(("elicitation", params))
        return {"action": "accept", "content": {"name": "Ada"}}

    def on_log(self, message: LogMessage) -> None:
        with self.changed:
            self.logs.append(message)
            self.changed.notify_all()

    def on_list_changed(self, kind: str) -> None:
        with self.changed:
            self.lists.append(kind)
            self.changed.notify_all()

    def wait_for(self, predicate: Any) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, WAIT_S)

    def kwargs(self) -> dict[str, Any]:
        return {"sampling": self.sampling, "elicitation": self.elicitation,
                "roots": ["file:///srv/a", {"uri": "file:///srv/b", "name": "b"}],
                "on_log": self.on_log, "on_list_changed": self.on_list_changed}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, mcpsync.Server]]:
    """The fixture server in this process on the real front end, and its base URL."""
    from httpserver import serving

    from mcpsync.http.app import HttpApp

    server = make_server()
    app = HttpApp(server)
    try:
        with serving(app) as url:
            yield url, server
    finally:
        app.service.close()


@pytest.fixture(scope="module")
def base(served: tuple[str, mcpsync.Server]) -> str:
    return served[0]


def connect(kind: str, base: str, **kwargs: Any) -> Client:
    how, revision, _expected = KINDS[kind]
    if how == "stdio":
        return Client(stdio_command(), revision=revision, env={"PYTHONPATH": str(REPO)}, cwd=str(REPO), **kwargs)
    target = {"http": f"{base}/mcp", "ws": base.replace("http://", "ws://") + "/ws", "sse": f"{base}/sse"}[how]
    return Client(target, revision=revision, **kwargs)


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def client(kind: str, base: str, rec: Recorder) -> Iterator[Client]:
    with connect(kind, base, **rec.kwargs()) as c:
        yield c


def client_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mcpsync-client-")]


# ---- connecting ------------------------------------------------------------------------------

def test_negotiates_the_revision_and_names_itself(kind: str, base: str) -> None:
    with connect(kind, base, name="tester", version="9.9") as c:
        assert c.protocol_version == KINDS[kind][2]
        assert c.server.name == "client-fixture" and c.server.version == "2.0.0"
        assert c.server.instructions == "Talk to me." and "tools" in c.server.capabilities
        who = c.call_tool("whoami").structured_content
        assert who["client"] == "tester"
    assert c.connected is False
    with pytest.raises(ConnectionClosed):
        c.call_tool("echo", {"text": "after close"})
    assert client_threads() == []


def test_targets_are_parsed_or_refused_clearly(base: str) -> None:
    for bad, why in (("localhost:8000", "neither an http"), ("echo hi", "neither an http"),
                     ([], "non-empty list")):
        with pytest.raises(ValueError, match=why):
            Client(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown protocol revision"):
        Client(f"{base}/mcp", revision="2099-01-01")
    with pytest.raises(ValueError, match="legacy SSE transport speaks the handshake era"):
        Client(f"{base}/sse", revision=MODERN)
    with pytest.raises(ConnectionClosed, match="command not found"):
        Client(["no-such-mcp-server-command"])
    with pytest.raises(ConnectionClosed):
        Client("http://127.0.0.1:9/mcp", connect_timeout=2.0)
    with Client(f"{base}/mcp", transport="streamable-http") as c:   # forced, like the guess
        assert c.endpoint.transport == "streamable-http"
    assert client_threads() == []


# ---- the verbs -------------------------------------------------------------------------------

def test_listings_are_complete_across_pages(client: Client) -> None:
    # 3 per page on the server (tools added by test_list_changes_reach_the_callback left out)
    tools = {t.name: t for t in client.list_tools() if not t.name.startswith("dyn_")}
    assert len(tools) == 20 + EXTRA_TOOLS and {"echo", "filler_0", f"filler_{EXTRA_TOOLS - 1}"} <= set(tools)
    assert tools["echo"].input_schema["properties"]["text"]["type"] == "string"
    assert tools["add"].output_schema is not None and tools["echo"].description == "Return the text unchanged."
    resources = client.list_resources()
    assert sorted(r.uri for r in resources) == ["fixture://bytes", *(f"fixture://notes/{i}" for i in range(5)),
                                                "fixture://static"]
    assert [t.uri_template for t in client.list_resource_templates()] == ["fixture://items/{item}"]
    [greet] = client.list_prompts()
    assert greet.name == "greet" and [(a.name, a.required) for a in greet.arguments] == [("who", True)]


def test_tool_results_are_typed(client: Client) -> None:
    r = client.call_tool("echo", {"text": "hé"})
    assert r.text == "hé" and not r.is_error and r.content[0].type == "text"
    added = client.call_tool("add", {"a": 2, "b": 3})
    assert added.structured_content == {"sum": 5} and not added.is_error
    failed = client.call_tool("fail", {"why": "on purpose"})
    assert failed.is_error and failed.text == "failed: on purpose"
    try:                                                   # bad arguments: by revision,
        refused = client.call_tool("echo", {"wrong": 1})  # a tool error (2025-11-25 on)
        assert refused.is_error and "wrong" in refused.text
    except PeerError as exc:                               # or a protocol error (before)
        assert exc.code == -32602 and "wrong" in exc.message
    with pytest.raises(PeerError) as info:                 # no such tool: a protocol error
        client.call_tool("no_such_tool")
    assert info.value.code == -32602 and "no_such_tool" in info.value.message


def test_header_mirrored_arguments_work_without_a_listing(kind: str, base: str) -> None:
    """A tool whose argument goes in an Mcp-Param header (2026-07-28 HTTP) called before any
    tools/list: the server refuses the request without the header (-32020); the client
    lists the tools and sends it again, with the header."""
    with connect(kind, base) as c:
        assert c.call_tool("region_echo", {"region": "eu-west", "text": "hi"}).text == "eu-west: hi"
        assert c.call_tool("region_echo", {"region": "ünïcode", "text": "hi"}).text == "ünïcode: hi"


def test_resources_prompts_and_completions(client: Client) -> None:
    assert client.read_resource("fixture://static").text == "static text of client-fixture"
    [blob] = client.read_resource("fixture://bytes").contents
    assert blob.as_bytes() == b"\x00\x01\xfe\xff" and blob.mime_type == "application/octet-stream"
    assert client.read_resource("fixture://items/7").text == "item 7"
    with pytest.raises(PeerError) as info:
        client.read_resource("fixture://nowhere")
    assert info.value.code in (-32002, -32602) and "not found" in info.value.message  # by revision
    prompt = client.get_prompt("greet", {"who": "Ada"})
    assert prompt.messages[0].role == "user" and prompt.messages[0].content.text == "Hello, Ada!"
    assert client.complete(prompt="greet", argument="who", value="a").values == ("Ada", "Alan")
    assert client.complete(resource="fixture://items/{item}", argument="item", value="x").values == ("x-1", "x-2")


def test_progress_and_logs_reach_their_callbacks(client: Client, rec: Recorder) -> None:
    seen: list[tuple[float, Any, Any]] = []
    caller = threading.current_thread()
    threads: set[threading.Thread] = set()

    def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))
        threads.add(threading.current_thread())

    assert client.call_tool("progress", {"steps": 3}, progress=progress).text == "done 3"
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert threads == {caller}   # on the caller's own thread, in order
    assert rec.wait_for(lambda: [m.data for m in rec.logs if m.logger == "fixture"]
                        == ["step 1 of 3", "step 2 of 3", "step 3 of 3"])
    assert all(m.level == "info" for m in rec.logs)


def test_sampling_elicitation_and_roots_callbacks(client: Client, rec: Recorder) -> None:
    assert client.call_tool("ask_model", {"question": "why?"}).text == "model said: sampled: why?"
    assert client.call_tool("ask_user", {"question": "who?"}).text == "accept: Ada"
    assert client.call_tool("where").text == "file:///srv/a file:///srv/b"
    # Three questions at once: one input_required round in 2026-07-28, three requests before.
    assert client.call_tool("ask_all").text == "sampled: 2+2?|Ada|file:///srv/a,file:///srv/b"
    kinds = [k for k, _ in rec.asked]
    assert kinds == ["sampling", "elicitation", "sampling", "elicitation"]


def test_a_client_without_callbacks_declares_none(kind: str, base: str) -> None:
    with connect(kind, base) as c:
        # The server refuses: the client did not declare sampling (-32021, or a tool error).
        try:
            result = c.call_tool("ask_model", {"question": "?"})
            assert result.is_error and "sampling" in result.text
        except PeerError as exc:
            assert exc.code == -32021 and "sampling" in exc.message


def test_timeout_cancels_the_call_on_the_server(client: Client, kind: str) -> None:
    started = threading.Event()
    tag = f"timeout-{kind}"
    with pytest.raises(RequestTimeout):
        client.call_tool("slow", {"tag": tag}, timeout=1.0,
                         progress=lambda p, t, m: started.set())
    assert started.is_set()
    assert client.call_tool("cancelled_calls", {"tag": tag}).text == "true"
    assert client.call_tool("echo", {"text": "still here"}).text == "still here"


def test_cancel_from_another_thread(client: Client, kind: str) -> None:
    token = CancelToken()
    started = threading.Event()
    outcome: list[BaseException | str] = []
    tag = f"cancel-{kind}"

    def call() -> None:
        try:
            outcome.append(client.call_tool("slow", {"tag": tag}, cancel=token,
                                            progress=lambda p, t, m: started.set()).text)
        except BaseException as exc:  # the outcome is what the test checks
            outcome.append(exc)

    t = threading.Thread(target=call, name="test-caller")
    t.start()
    assert started.wait(WAIT_S)
    token.cancel()
    t.join(WAIT_S)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    assert client.call_tool("cancelled_calls", {"tag": tag}).text == "true"
    with pytest.raises(Cancelled):   # a cancelled token cancels at once
        client.call_tool("echo", {"text": "x"}, cancel=token)


# ---- tasks -------------------------------------------------------------------------------------

def test_tasks(client: Client, kind: str) -> None:
    if KINDS[kind][2] != MODERN:
        # The tasks extension is a 2026-07-28 one: a session runs every tool at once.
        assert client.call_tool("task_only", {"text": "x"}).text == "task says x"
        done = client.call_tool_as_task("task_work", {"seconds": 0})
        assert done.id is None and done.status == "completed" and done.wait(WAIT_S).text == "worked 0 s"
        return
    # call_tool runs a task-only tool as a task and waits for it.
    assert client.call_tool("task_only", {"text": "hi"}).text == "task says hi"
    # An optional one runs at once for call_tool, as a task for call_tool_as_task.
    assert client.call_tool("task_work", {"seconds": 0}).text == "worked 0 s"
    task = client.call_tool_as_task("task_work", {"seconds": 0.2})
    assert isinstance(task, Task) and task.id and task.status in ("working", "completed")
    assert task.wait(WAIT_S).text == "worked 0.2 s" and task.done
    # Input a task waits for is answered with the callbacks (tasks/update).
    assert client.call_tool("task_ask").text == "task got Ada"
    with pytest.raises(PeerError) as info:
        client.call_tool_as_task("task_crash").wait(WAIT_S)
    assert info.value.code == -32603
    long = client.call_tool_as_task("task_work", {"seconds": 30, "tag": f"long-{kind}"})
    assert client.call_tool("started_calls", {"tag": f"long-{kind}"}).text == "true"
    long.cancel()
    with pytest.raises(Cancelled):
        long.wait(WAIT_S)
    assert long.status == "cancelled"
    assert client.call_tool("cancelled_calls", {"tag": f"long-{kind}"}).text == "true"
    # A timeout on a task cancels it on the server.
    timed = client.call_tool_as_task("task_work", {"seconds": 30, "tag": f"timed-{kind}"})
    assert client.call_tool("started_calls", {"tag": f"timed-{kind}"}).text == "true"
    with pytest.raises(RequestTimeout):
        timed.wait(0.2)
    assert client.call_tool("cancelled_calls", {"tag": f"timed-{kind}"}).text == "true"


# ---- subscriptions and list changes ------------------------------------------------------------

def test_resource_subscriptions(client: Client) -> None:
    got: list[str] = []
    arrived = threading.Condition()

    def updated(uri: str) -> None:
        with arrived:
            got.append(uri)
            arrived.notify_all()

    stop_a = client.subscribe("fixture://notes/1", updated)
    client.subscribe("fixture://notes/2", updated)
    client.call_tool("touch", {"uri": "fixture://notes/1"})
    with arrived:
        assert arrived.wait_for(lambda: got == ["fixture://notes/1"], WAIT_S), got
    stop_a()
    # Updates arrive in order on one stream: once notes/2's has come, notes/1's would have.
    client.call_tool("touch", {"uri": "fixture://notes/1"})
    client.call_tool("touch", {"uri": "fixture://notes/2"})
    with arrived:
        assert arrived.wait_for(lambda: len(got) >= 2, WAIT_S)
    assert got == ["fixture://notes/1", "fixture://notes/2"]


def test_list_changes_reach_the_callback(kind: str, served: tuple[str, mcpsync.Server], rec: Recorder) -> None:
    """A change made the moment the client is connected reaches it: the constructor returns
    once the server's own messages can arrive (the 2026-07-28 listen acknowledged, the HTTP
    GET stream answered). The in-process server is changed directly, with no request of
    this client in between."""
    base, server = served
    tool = f"dyn_{kind.replace('-', '_')}"
    with connect(kind, base, **rec.kwargs()) as c:
        if KINDS[kind][0] == "stdio":
            c.call_tool("add_tool", {"tool": tool})
        else:
            server.add_tool(lambda: "dynamic", name=tool, description="added directly")
        assert rec.wait_for(lambda: "tools" in rec.lists), rec.lists
        assert tool in {t.name for t in c.list_tools()}


# ---- sharing ---------------------------------------------------------------------------------

THREADS = 16
ROUNDS = 12   # per thread: an echo, a call with progress and a sampling round trip each


def test_sixteen_threads_share_one_client(client: Client, kind: str) -> None:
    """16 threads × 12 rounds × 3 calls (576 calls) on one client: every answer is the
    caller's own (unique texts), progress reaches its own caller, and a sampling request
    (not tied to its call on stdio and WebSocket) is answered for the right question."""
    barrier = threading.Barrier(THREADS)
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            barrier.wait(WAIT_S)
            for i in range(ROUNDS):
                text = f"{kind}-{n}-{i}"
                assert client.call_tool("echo", {"text": text}).text == text
                mine: list[float] = []
                assert client.call_tool("progress", {"steps": 2},
                                        progress=lambda p, t, m: mine.append(p)).text == "done 2"
                assert mine == [1, 2], mine
                assert client.call_tool("ask_model", {"question": text}).text == f"model said: sampled: {text}"
        except BaseException as exc:  # collected for the main thread's assertion
            with lock:
                errors.append(f"thread {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,), name=f"test-share-{n}") for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_public_names() -> None:
    for name in ("Client", "CancelToken", "CallToolResult", "Task", "PeerError", "RequestTimeout",
                 "ConnectionClosed", "Cancelled"):
        assert name in mcpsync.__all__ and getattr(mcpsync, name)


def test_the_client_package_knows_no_server_side() -> None:
    """client/ sits beside the server: it may use the protocol core and the errors, never
    the server, its transports or the front end (ARCHITECTURE.md, "Layers")."""
    from test_architecture import PKG, _imports, _modules

    forbidden = ("mcpsync.server", "mcpsync.core", "mcpsync.http", "mcpsync.streams", "mcpsync.frontend",
                 "mcpsync.hub", "mcpsync.tasks", "mcpsync.service", "mcpsync.run", "werkzeug")
    checked = 0
    for path in _modules("client"):
        for mod, _ in _imports(path):
            assert not mod.startswith(forbidden), f"{path.relative_to(PKG)} imports {mod}"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("revision", ["auto", "2025-11-25"])
def test_closing_lets_a_stdio_server_exit_by_itself(revision: str) -> None:
    """close() ends what runs on the server (the 2026-07-28 listen) before it closes stdin,
    so the server exits on its own at once (status 0), instead of draining the listen for
    5 s and being killed by SIGTERM once ``shutdown_timeout`` has passed (-15)."""
    c = Client(stdio_command(), revision=revision, env={"PYTHONPATH": str(REPO)}, cwd=str(REPO),
               on_list_changed=lambda kind: None, shutdown_timeout=2.0)
    c.close()
    assert c._session.channel.proc.returncode == 0  # type: ignore[attr-defined]


LATE_ASKER = r'''
import json, sys
answers = []
def send(*msgs):  # one write: the client reads them in one chunk
    sys.stdout.write("".join(json.dumps(m) + "\n" for m in msgs))
    sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    method, rid = msg.get("method"), msg.get("id")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": "2025-11-25",
              "capabilities": {"tools": {}}, "serverInfo": {"name": "late-asker", "version": "1"}}})
    elif method == "tools/call" and msg["params"]["name"] == "then_ask":
        done = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}}
        send(done, {"jsonrpc": "2.0", "id": "late-1", "method": "roots/list"})
    elif method == "tools/call":
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": json.dumps(answers)}]}})
    elif method is None:
        answers.append(msg)
'''


def test_a_request_that_comes_as_its_call_ends_is_still_answered(tmp_path: pathlib.Path) -> None:
    """The server sends a call's response and, in the same write, a request: the reader
    gives the request to the call, whose thread has just taken its response. It must not
    be lost with the call's queue: the client's callback answers it."""
    script = tmp_path / "late_asker.py"
    script.write_text(LATE_ASKER)
    with Client([sys.executable, str(script)], revision="2025-11-25", roots=["file:///late"]) as c:
        for _ in range(5):
            assert c.call_tool("then_ask").text == "done"
        from rpcutil import wait_until
        assert wait_until(lambda: c.call_tool("answers").text.count("file:///late") == 5, WAIT_S), \
            c.call_tool("answers").text


def test_a_server_that_dies_fails_the_call_clearly() -> None:
    with Client(stdio_command(), env={"PYTHONPATH": str(REPO)}, cwd=str(REPO)) as c:
        with pytest.raises(ConnectionClosed, match="the process exited with status 3"):
            c.call_tool("die", {"status": 3})
        assert not c.connected
        with pytest.raises(ConnectionClosed):
            c.call_tool("echo", {"text": "anyone?"})
    assert client_threads() == []
