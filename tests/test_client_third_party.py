"""``mcpsync.Client`` against servers nobody here wrote: the reference TypeScript server
``@modelcontextprotocol/server-everything`` (npm, Node 22) over stdio and over Streamable
HTTP, and a server built on the official Python SDK (PyPI ``mcp``, uvicorn) over Streamable
HTTP in both eras (2026-07-28 and a 2025-11-25 session).

Every wait is bounded; a server's readiness is a bounded poll of its port or its banner.
"""
from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest
from rpcutil import wait_until
from test_client import Recorder, client_threads

from mcpsync import CancelToken, Client
from mcpsync.errors import Cancelled

REPO = pathlib.Path(__file__).resolve().parent.parent
WAIT_S = 20.0
START_S = 60.0       # Node start-up or the SDK's imports, on a busy 2-core machine
EVERYTHING_STOP_S = 0.5   # Node servers may linger after stdin closes: SIGTERM them after this


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def everything_js() -> tuple[str, str]:
    from jsdeps import NODE_MODULES, node22

    node = node22()   # installs the pinned npm packages on first use (skips without npm)
    return node, str(NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js")


@pytest.fixture(scope="module")
def everything_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node, script = everything_js()
    port = free_port()
    from jsdeps import node_env
    env = {**node_env(), "PORT": str(port)}
    log = tmp_path_factory.mktemp("everything") / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([node, script, "streamableHttp"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_until(lambda: "listening on port" in log.read_text() or proc.poll() is not None, START_S)
        assert proc.poll() is None, log.read_text()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(WAIT_S)


@pytest.fixture(scope="module")
def sdk_url() -> Iterator[str]:
    pytest.importorskip("mcp")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "sdk_upstream_server.py"), str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: port_open(port) or proc.poll() is not None, START_S)
        assert proc.poll() is None
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(WAIT_S)


@pytest.fixture(params=["stdio", "http"])
def everything(request: pytest.FixtureRequest, rec: Recorder) -> Iterator[Client]:
    if request.param == "stdio":
        node, script = everything_js()
        from jsdeps import node_env
        target: Any = [node, script, "stdio"]
        extra: dict[str, Any] = {"env": node_env(), "shutdown_timeout": EVERYTHING_STOP_S}
    else:
        target, extra = request.getfixturevalue("everything_http"), {}
    with Client(target, **rec.kwargs(), **extra) as c:
        yield c
    assert client_threads() == []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_everything_over_stdio_and_http(everything: Client, rec: Recorder) -> None:
    # The TypeScript SDK has no 2026-07-28: the probe falls back to a handshake.
    assert everything.protocol_version == "2025-11-25"
    assert everything.server.name == "mcp-servers/everything"
    # Right after initialize it asks for our roots while no call runs: the callback answers.
    assert rec.wait_for(lambda: any("Roots updated: 2 root(s)" in str(m.data) for m in rec.logs)), rec.logs
    tools = {t.name for t in everything.list_tools()}
    assert {"echo", "get-sum", "trigger-long-running-operation", "trigger-sampling-request",
            "get-roots-list", "trigger-elicitation-request"} <= tools
    assert everything.call_tool("echo", {"message": "hi"}).text == "Echo: hi"
    assert "5" in everything.call_tool("get-sum", {"a": 2, "b": 3}).text
    steps: list[float] = []
    done = everything.call_tool("trigger-long-running-operation", {"duration": 0.2, "steps": 2},
                                progress=lambda p, t, m: steps.append(p))
    assert not done.is_error and steps == [1, 2]
    assert "sampled: " in everything.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}).text
    assert "file:///srv/a" in everything.call_tool("get-roots-list").text
    elicited = everything.call_tool("trigger-elicitation-request")
    assert "Ada" in elicited.text and [k for k, _ in rec.asked] == ["sampling", "elicitation"]
    assert everything.read_resource("demo://resource/dynamic/text/3").contents[0].uri == \
        "demo://resource/dynamic/text/3"
    assert everything.list_resources() and everything.list_resource_templates()
    prompt = everything.get_prompt("args-prompt", {"city": "Paris"})
    assert "Paris" in prompt.messages[0].content.text
    assert everything.complete(prompt="completable-prompt", argument="department", value="S").values == ("Sales", "Support")
    assert everything.complete(prompt="completable-prompt", argument="name", value="",
                               context={"department": "Sales"}).values == ("David", "Eve", "Frank")


def test_everything_subscriptions_and_cancellation(everything: Client) -> None:
    updated = threading.Event()
    stop = everything.subscribe("demo://resource/static/document/architecture.md", lambda uri: updated.set())
    everything.call_tool("toggle-subscriber-updates")   # sends one update at once, then every 5 s
    try:
        assert updated.wait(WAIT_S)
    finally:
        everything.call_tool("toggle-subscriber-updates")
        stop()
    token = CancelToken()
    started = threading.Event()
    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            outcome.append(everything.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30},
                                                progress=lambda p, t, m: started.set(), cancel=token).text)
        except BaseException as exc:  # the outcome is what the test checks
            outcome.append(exc)

    t = threading.Thread(target=call, name="test-caller")
    t.start()
    assert started.wait(WAIT_S)
    token.cancel()
    t.join(WAIT_S)
    assert not t.is_alive() and isinstance(outcome[0], Cancelled), outcome
    assert everything.call_tool("echo", {"message": "still here"}).text == "Echo: still here"


@pytest.mark.parametrize("revision", ["auto", "2025-11-25"])
def test_official_python_sdk_server(sdk_url: str, revision: str) -> None:
    with Client(sdk_url, revision=revision) as c:
        assert c.protocol_version == ("2026-07-28" if revision == "auto" else "2025-11-25")
        assert c.server.name == "sdk-upstream"
        assert {t.name for t in c.list_tools()} == {"shout", "multiply", "count_up"}
        assert c.call_tool("shout", {"text": "quiet"}).text == "QUIET"
        product = c.call_tool("multiply", {"a": 6, "b": 7})
        assert product.text == "42" and product.structured_content == {"result": 42}
        steps: list[float] = []
        assert c.call_tool("count_up", {"steps": 3}, progress=lambda p, t, m: steps.append(p)).text == "counted 3"
        assert steps == [1, 2, 3]
        assert c.read_resource("sdk://greeting").text == "hello from the SDK"
        assert c.get_prompt("haiku", {"topic": "threads"}).messages[0].content.text == "Write a haiku about threads."
        assert c.call_tool("multiply", {"a": "six"}).is_error
    assert client_threads() == []
