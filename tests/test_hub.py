"""The hub end to end: real upstream processes and sockets, a downstream client wired to the
hub's server (in memory) or over HTTP.

Upstreams: mcpsync's own fixture server (tests/hub_fixture_server.py) over stdio in both
protocol eras (auto lands in 2026-07-28; "old" is held at 2025-11-25), in-process over
Streamable HTTP, WebSocket and legacy SSE, and third-party servers: the reference servers
``@modelcontextprotocol/server-everything`` and ``server-memory`` (npm, stdio, Node 22) and
a server built on the official Python SDK (PyPI ``mcp``, Streamable HTTP, uvicorn).

Every wait is bounded; synchronization is by events (``Hub.wait_until`` re-checks on each
hub state change, ``MemClient.wait_for`` on each message), never by sleeping.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading
from typing import Any, Iterator

import pytest
from hubutil import banner_url
from memclient import CallThread, MemClient
from rpcutil import wait_until

from mcpsync.hub import Hub, parse_config
from mcpsync.hub.aggregate import build, hub_name
from mcpsync.protocol import jsonrpc

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = str(pathlib.Path(__file__).resolve().parent / "hub_fixture_server.py")
WAIT_S = 20.0
LONG_NAME = "long_" + "x" * 123


def fixture_entry(name: str, **extra: Any) -> dict[str, Any]:
    """A stdio upstream running tests/hub_fixture_server.py as server `name`."""
    return {"command": sys.executable,
            "args": ["-m", "mcpsync", "serve", FIXTURE, "--stdio", "--log-level", "WARNING"],
            "env": {"PYTHONPATH": str(REPO), "FIXTURE_NAME": name}, **extra}


def start_hub(servers: dict[str, Any], hub: dict[str, Any] | None = None, *,
              config_path: str | None = None) -> Hub:
    data: dict[str, Any] = {"mcpServers": servers}
    if hub is not None:
        data["hub"] = hub
    h = Hub(parse_config(data), config_path=config_path).start()
    assert h.wait_ready(WAIT_S), h.health()
    return h


def text(result: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in result["content"] if b.get("type") == "text")


def state(hub: Hub, name: str) -> dict[str, Any]:
    up = hub.upstream(name)
    assert up is not None
    return up.health()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def log_seen(c: MemClient, data: str, logger_prefix: str) -> Any:
    return c.wait_for(lambda m: m.get("method") == "notifications/message"
                      and m["params"].get("data") == data
                      and str(m["params"].get("logger", "")).startswith(logger_prefix), WAIT_S)


# ---- naming (no processes) -------------------------------------------------------------------

def test_names_are_prefixed_sanitized_and_kept_within_128_characters() -> None:
    cfg = parse_config({"mcpServers": {"gh": {"command": "x"}}}).upstreams["gh"]
    assert hub_name("gh", "__", "create_issue") == "gh__create_issue"
    assert hub_name("gh", "__", "odd name/with:chars") == "gh__odd_name_with_chars"
    long_a, long_b = "a" * 126 + "_1", "a" * 126 + "_2"
    na, nb = hub_name("gh", "__", long_a), hub_name("gh", "__", long_b)
    assert len(na) == len(nb) == 128 and na != nb and na.startswith("gh__aaa")
    assert na == hub_name("gh", "__", long_a)  # deterministic
    lists = {"tools": [{"name": "a b", "inputSchema": {"type": "object"}}, {"name": "a_b"},
                       {"name": long_a}, {"name": "keep"}, {"name": "drop_me"}]}
    forward: Any = lambda *args: {}
    filtered = parse_config({"mcpServers": {"gh": {"command": "x", "tools": {"deny": ["drop_*"]}}}}).upstreams["gh"]
    defs = build(filtered, lists, forward)
    assert sorted(t.name for t in defs.tools) == sorted(["gh__a_b", na, "gh__keep"])
    assert defs.names["gh__a_b"] == "a b" and defs.filtered == 1
    assert defs.skipped == [{"kind": "tool", "name": "a_b", "hubName": "gh__a_b",
                             "reason": "its hub name 'gh__a_b' is already taken by 'a b'"}]
    # The previous owner keeps a contested name, whatever the order of the new listing.
    again = build(cfg, {"tools": [{"name": "a_b"}, {"name": "a b"}]}, forward, previous={"gh__a_b": "a b"})
    assert again.names == {"gh__a_b": "a b"} and again.skipped[0]["name"] == "a_b"
    allow = parse_config({"mcpServers": {"gh": {"command": "x", "tools": {"allow": ["k*"]}}}}).upstreams["gh"]
    assert [t.name for t in build(allow, lists, forward).tools] == ["gh__keep"]


# ---- one hub with two stdio upstreams (both protocol eras) -----------------------------------

@pytest.fixture(scope="module")
def stdio_hub() -> Iterator[Hub]:
    hub = start_hub({"py": fixture_entry("fixture-py"),
                     "old": fixture_entry("fixture-old", revision="2025-11-25")})
    try:
        yield hub
    finally:
        hub.close()


def sampling_client(hub: Hub) -> Iterator[MemClient]:
    """An initialized in-memory client of ``hub`` that offers sampling; closed afterwards."""
    c = MemClient(hub.server)
    c.initialize(capabilities={"sampling": {}})
    try:
        yield c
    finally:
        c.conn.close()


@pytest.fixture
def client(stdio_hub: Hub) -> Iterator[MemClient]:
    yield from sampling_client(stdio_hub)


def test_both_eras_negotiated_and_reported(stdio_hub: Hub) -> None:
    health = stdio_hub.health()
    assert health["status"] == "ok"
    py, old = health["upstreams"]["py"], health["upstreams"]["old"]
    assert (py["state"], py["revision"], py["transport"]) == ("ready", "2026-07-28", "stdio")
    assert (old["state"], old["revision"]) == ("ready", "2025-11-25")
    assert py["upstream"]["server"] == "fixture-py" and pid_alive(py["upstream"]["pid"])
    assert py["tools"] == 10 and py["prompts"] == 2 and py["resources"] == 1 and py["resourceTemplates"] == 1
    assert py["skipped"] == [{"kind": "prompt", "name": "dup_name", "hubName": "py__dup_name",
                              "reason": "its hub name 'py__dup_name' is already taken by 'dup name'"}]


def test_calls_are_routed_to_their_upstream(client: MemClient) -> None:
    for up in ("py", "old"):
        assert json.loads(text(client.call_tool(f"{up}__whoami")))["server"] == f"fixture-{up}"
        assert text(client.call_tool(f"{up}__echo", {"text": "héllo"})) == "héllo"
        long = hub_name(up, "__", LONG_NAME)
        assert len(long) == 128 and text(client.call_tool(long)) == "long"
    names = {t["name"] for t in client.call("tools/list")["tools"]}
    assert {"py__echo", "old__echo", "py__slow"} <= names
    # An unknown tool is an error of the hub; an upstream error is an isError result.
    assert client.error("tools/call", {"name": "py__nope"})["code"] == -32602
    bad = client.call_tool("old__echo", {"text": 3})
    assert bad.get("isError") and "old" in text(bad)


def test_completions_are_forwarded_to_the_upstream_that_owns_the_prompt(client: MemClient) -> None:
    """completion/complete for a hub prompt or template goes to its upstream, naming the
    upstream's own prompt or template; the answer shows which server completed it."""
    for up in ("py", "old"):
        got = client.call("completion/complete", {"ref": {"type": "ref/prompt", "name": f"{up}__greet"},
                                                  "argument": {"name": "who", "value": "A"}})
        assert got["completion"]["values"] == ["Ada", "Alan", f"fixture-{up}"]
        templates = client.call("resources/templates/list")["resourceTemplates"]
        uri = next(t["uriTemplate"] for t in templates
                   if t["uriTemplate"].endswith("fixture://items/{item}") and f"/{up}/" in t["uriTemplate"])
        got = client.call("completion/complete", {"ref": {"type": "ref/resource", "uri": uri},
                                                  "argument": {"name": "item", "value": "x"}})
        assert got["completion"]["values"] == [f"x-fixture-{up}"]
    none = client.call("completion/complete", {"ref": {"type": "ref/prompt", "name": "py__greet"},
                                               "argument": {"name": "nobody", "value": "A"}})
    assert none["completion"]["values"] == []


def test_resources_and_prompts_are_rewritten_and_routed(client: MemClient) -> None:
    link = client.call_tool("py__link")["content"][0]
    assert link["type"] == "resource_link" and link["uri"] == "hub://py/fixture://static"
    read = client.call("resources/read", {"uri": link["uri"]})
    assert read["contents"] == [{"uri": "hub://py/fixture://static", "mimeType": "text/plain",
                                 "text": "static text of fixture-py"}]
    templates = {t["uriTemplate"] for t in client.call("resources/templates/list")["resourceTemplates"]}
    assert {"hub://py/fixture://items/{item}", "hub://old/fixture://items/{item}"} <= templates
    item = client.call("resources/read", {"uri": "hub://old/fixture://items/42"})
    assert item["contents"][0]["text"] == "item 42 of fixture-old"
    assert client.error("resources/read", {"uri": "hub://py/fixture://nothing"})["code"] == -32002
    prompt = client.call("prompts/get", {"name": "old__greet", "arguments": {"who": "Ada"}})
    assert prompt["messages"][0]["content"]["text"] == "Hello, Ada, from fixture-old!"
    assert client.call("prompts/get", {"name": "py__dup_name"})["messages"][0]["content"]["text"] == "first"


@pytest.mark.parametrize("up", ["py", "old"])
def test_progress_and_logs_are_forwarded_with_fresh_tokens(client: MemClient, up: str) -> None:
    result = client.call_tool(f"{up}__progress", {"steps": 3}, meta={"progressToken": f"mine-{up}"})
    upstream_token = text(result).split("token ")[1]
    assert upstream_token.startswith("hub-")  # the client's token never goes upstream
    progress = [p for p in client.notifications("notifications/progress") if p["progressToken"] == f"mine-{up}"]
    assert [(p["progress"], p["total"], p["message"]) for p in progress] == [
        (1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    logs = [m for m in client.notifications("notifications/message") if m.get("logger") == f"{up}/fixture"]
    assert [m["data"] for m in logs] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]


@pytest.mark.parametrize("up", ["py", "old"])
def test_sampling_is_relayed_to_the_calling_client(stdio_hub: Hub, client: MemClient, up: str) -> None:
    client.handlers["sampling/createMessage"] = lambda p: {
        "role": "assistant", "model": "m", "content": {"type": "text", "text": f"answer to {p['messages'][0]['content']['text']}"}}
    assert text(client.call_tool(f"{up}__ask_model", {"question": "6x7"})) == "model said: answer to 6x7"
    # A client without the capability: the upstream gets an error, the call an error result.
    plain = MemClient(stdio_hub.server)
    plain.initialize()
    try:
        result = plain.call_tool(f"{up}__ask_model", {"question": "?"})
        assert result.get("isError") and "sampling" in text(result)
        assert plain.requests("sampling/createMessage") == []
    finally:
        plain.conn.close()


@pytest.mark.parametrize("up", ["py", "old"])
def test_cancellation_reaches_the_upstream(client: MemClient, up: str) -> None:
    call = CallThread(client, jsonrpc.request(f"slow-{up}", "tools/call", {"name": f"{up}__slow"}))
    call.start()
    log_seen(client, "slow started", up)
    client.notify("notifications/cancelled", {"requestId": f"slow-{up}", "reason": "test"})
    assert call.finish(WAIT_S) is None  # cancelled: no response
    assert "slow" in text(client.call_tool(f"{up}__cancelled_calls", {"at_least": 1}))


@pytest.mark.parametrize("up", ["py", "old"])
def test_list_changed_is_forwarded_end_to_end(stdio_hub: Hub, client: MemClient, up: str) -> None:
    before = len(client.notifications("notifications/tools/list_changed"))
    assert text(client.call_tool(f"{up}__add_dynamic_tool", {"tool": f"dyn_{up}"})) == f"added dyn_{up}"
    client.wait_for(lambda m: m.get("method") == "notifications/tools/list_changed"
                    and len(client.notifications("notifications/tools/list_changed")) > before, WAIT_S)
    assert stdio_hub.wait_until(lambda h: f"{up}__dyn_{up}" in h.server.registry.tools, WAIT_S)
    assert text(client.call_tool(f"{up}__dyn_{up}")) == f"dynamic dyn_{up}"
    client.call_tool(f"{up}__remove_dynamic_tool", {"tool": f"dyn_{up}"})
    assert stdio_hub.wait_until(lambda h: f"{up}__dyn_{up}" not in h.server.registry.tools, WAIT_S)


def test_concurrent_calls_registrations_and_refreshes(stdio_hub: Hub, client: MemClient) -> None:
    """Many threads call tools, ask for refreshes and change the upstreams' tool lists at once;
    every answer is right and the final registry is exactly the upstreams' lists."""
    threads_n, rounds = 8, 6
    start = threading.Barrier(threads_n + 2)
    errors: list[str] = []

    def caller(i: int) -> None:
        start.wait(WAIT_S)
        for j in range(rounds):
            up = ("py", "old")[(i + j) % 2]
            got = text(client.call_tool(f"{up}__echo", {"text": f"{i}.{j}"}))
            if got != f"{i}.{j}":
                errors.append(f"{up}: {got!r}")
            if j % 2 == 0:
                upstream = stdio_hub.upstream(up)
                assert upstream is not None
                if not upstream.refresh(WAIT_S):
                    errors.append(f"refresh of {up} timed out")

    def registrar(up: str) -> None:
        start.wait(WAIT_S)
        for k in range(6):
            client.call_tool(f"{up}__add_dynamic_tool", {"tool": f"c{k}"})
        for k in range(0, 6, 2):
            client.call_tool(f"{up}__remove_dynamic_tool", {"tool": f"c{k}"})

    threads = [threading.Thread(target=caller, args=(i,), name=f"test-caller-{i}") for i in range(threads_n)]
    threads += [threading.Thread(target=registrar, args=(up,), name=f"test-registrar-{up}") for up in ("py", "old")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 2)
        assert not t.is_alive()
    assert errors == []
    for up in ("py", "old"):
        upstream = stdio_hub.upstream(up)
        assert upstream is not None and upstream.refresh(WAIT_S)
        session = upstream.session
        assert session is not None
        truth = {hub_name(up, "__", t["name"]) for t in session.list_all("tools/list", "tools")}
        listed = {n for n in stdio_hub.server.registry.tools if n.startswith(f"{up}__")}
        assert listed == truth
        assert {f"{up}__c1", f"{up}__c3", f"{up}__c5"} <= listed
        assert not {f"{up}__c0", f"{up}__c2", f"{up}__c4"} & listed


# ---- failures: a killed upstream, a hung call, an upstream that never answers ----------------

def test_killed_upstream_fails_the_call_promptly_and_comes_back() -> None:
    hub = start_hub({"victim": fixture_entry("victim", restart={"initialDelay": 0.1}, timeouts={"request": 2}),
                     "silent": {"command": sys.executable, "args": ["-c", "import sys; sys.stdin.read()"],
                                "timeouts": {"connect": 0.5, "probe": 0.3}, "restart": {"initialDelay": 0.1}}})
    c = MemClient(hub.server)
    c.initialize()
    try:
        # An upstream that never answers: the start times out and is retried with backoff.
        silent = state(hub, "silent")
        assert silent["state"] in ("backoff", "connecting") and "did not answer" in silent["lastError"]
        assert hub.health()["status"] == "degraded"
        # A call the upstream never finishes: the request timeout answers it.
        hung = c.call_tool("victim__slow")
        assert hung.get("isError") and "did not answer tools/call within 2 s" in text(hung)
        # Killed mid-call: the caller gets an error at once, not after a timeout.
        pid = state(hub, "victim")["upstream"]["pid"]
        call = CallThread(c, jsonrpc.request("k", "tools/call", {"name": "victim__slow"}))
        call.start()
        log_seen(c, "slow started", "victim")
        os.kill(pid, signal.SIGKILL)
        reply = call.finish(5.0)
        assert reply["result"]["isError"] and "killed by SIGKILL" in text(reply["result"])
        # Meanwhile calls say which upstream is down and why; then it is back, tools and all.
        assert hub.wait_until(lambda h: state(h, "victim")["restarts"] >= 1
                              and state(h, "victim")["state"] == "ready", WAIT_S), state(hub, "victim")
        assert text(c.call_tool("victim__echo", {"text": "back"})) == "back"
        assert "victim__echo" in hub.server.registry.tools
        assert not pid_alive(pid)
        new_pid = state(hub, "victim")["upstream"]["pid"]
        assert new_pid != pid
    finally:
        c.conn.close()
        hub.close()
    assert not pid_alive(new_pid)  # closing the hub ends (and reaps) its children


def test_unavailable_upstream_names_itself_in_the_error() -> None:
    hub = start_hub({"flaky": fixture_entry("flaky", restart={"initialDelay": 30})})
    c = MemClient(hub.server)
    c.initialize()
    try:
        pid = state(hub, "flaky")["upstream"]["pid"]
        os.kill(pid, signal.SIGKILL)
        assert hub.wait_until(lambda h: state(h, "flaky")["nextRetryS"] is not None, WAIT_S)
        result = c.call_tool("flaky__echo", {"text": "x"})
        assert result.get("isError")
        assert "upstream 'flaky' is unavailable (state: backoff; last error: the process was killed by SIGKILL" in text(result)
        assert state(hub, "flaky")["nextRetryS"] > 0
    finally:
        c.conn.close()
        hub.close()


# ---- remote upstreams: Streamable HTTP (both eras), WebSocket, legacy SSE -----------------------

REMOTE = ["http", "httpold", "ws", "wsold", "sse"]


class Remote:
    """One in-process fixture server behind mcpsync's HTTP front end, and a hub reaching it
    over every remote transport."""

    def __init__(self, hub: Hub, app: Any, base: str) -> None:
        self.hub, self.app, self.base = hub, app, base


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    from httpserver import serving
    from hub_fixture_server import make_server

    from mcpsync.http.app import HttpApp

    app = HttpApp(make_server("remote"))
    with serving(app) as base:
        ws = base.replace("http://", "ws://")
        hub = start_hub({"http": {"url": f"{base}/mcp"},
                         "httpold": {"url": f"{base}/mcp", "revision": "2025-11-25"},
                         "ws": {"url": f"{ws}/ws"},
                         "wsold": {"url": f"{ws}/ws", "revision": "2025-06-18"},
                         "sse": {"url": f"{base}/sse", "type": "sse"}})
        try:
            yield Remote(hub, app, base)
        finally:
            hub.close()


@pytest.fixture
def rclient(remote: Remote) -> Iterator[MemClient]:
    yield from sampling_client(remote.hub)


def test_remote_upstreams_negotiate_their_revisions(remote: Remote) -> None:
    ups = remote.hub.health()["upstreams"]
    assert {n: (ups[n]["state"], ups[n]["transport"], ups[n]["revision"]) for n in REMOTE} == {
        "http": ("ready", "streamable-http", "2026-07-28"),
        "httpold": ("ready", "streamable-http", "2025-11-25"),
        "ws": ("ready", "websocket", "2026-07-28"),
        "wsold": ("ready", "websocket", "2025-06-18"),
        "sse": ("ready", "sse", "2025-11-25")}
    assert ups["httpold"]["upstream"]["session"] is not None


@pytest.mark.parametrize("up", REMOTE)
def test_remote_calls_progress_logs_and_sampling(rclient: MemClient, up: str) -> None:
    assert text(rclient.call_tool(f"{up}__echo", {"text": up})) == up
    assert text(rclient.call_tool(f"{up}__progress", {"steps": 2}, meta={"progressToken": up})).startswith("done 2, token hub-")
    assert [p["progress"] for p in rclient.notifications("notifications/progress") if p["progressToken"] == up] == [1, 2]
    assert [m["data"] for m in rclient.notifications("notifications/message")
            if m.get("logger") == f"{up}/fixture"] == ["step 1 of 2", "step 2 of 2"]
    rclient.handlers["sampling/createMessage"] = lambda p: {
        "role": "assistant", "model": "m", "content": {"type": "text", "text": f"via {up}"}}
    assert text(rclient.call_tool(f"{up}__ask_model", {"question": "?"})) == f"model said: via {up}"
    read = rclient.call("resources/read", {"uri": f"hub://{up}/fixture://items/7"})
    assert read["contents"][0] == {"uri": f"hub://{up}/fixture://items/7", "mimeType": "text/plain",
                                   "text": "item 7 of remote"}


@pytest.mark.parametrize("up", REMOTE)
def test_remote_cancellation(rclient: MemClient, up: str) -> None:
    before = len(rclient.call_tool(f"{up}__cancelled_calls")["content"])
    # 2026-07-28 over HTTP cancels by closing the response stream, which an upstream may only
    # notice when it next writes: that call is bounded so it ends by itself.
    seconds = 1 if up == "http" else 60
    call = CallThread(rclient, jsonrpc.request(f"c-{up}", "tools/call",
                                               {"name": f"{up}__slow", "arguments": {"seconds": seconds}}))
    call.start()
    log_seen(rclient, "slow started", up)
    rclient.notify("notifications/cancelled", {"requestId": f"c-{up}"})
    assert call.finish(5.0) is None
    if up != "http":
        seen = rclient.call_tool(f"{up}__cancelled_calls", {"at_least": before + 1})["content"]
        assert len(seen) == before + 1


@pytest.mark.parametrize("up", REMOTE)
def test_remote_list_changed(remote: Remote, rclient: MemClient, up: str) -> None:
    rclient.call_tool(f"{up}__add_dynamic_tool", {"tool": f"r_{up}"})
    # One upstream server behind five transports: every one of them hears of it.
    assert remote.hub.wait_until(lambda h: all(f"{u}__r_{up}" in h.server.registry.tools for u in REMOTE), WAIT_S)
    assert text(rclient.call_tool(f"{up}__r_{up}")) == f"dynamic r_{up}"


def test_http_session_404_is_reinitialized_transparently(remote: Remote, rclient: MemClient) -> None:
    upstream = remote.hub.upstream("httpold")
    assert upstream is not None and upstream.session is not None
    old = upstream.session.channel.session_id  # type: ignore[attr-defined]
    assert remote.app.service.close_session(old)  # the upstream forgets the hub's session
    assert text(rclient.call_tool("httpold__echo", {"text": "again"})) == "again"
    assert upstream.session.channel.session_id not in (None, old)  # type: ignore[attr-defined]
    assert state(remote.hub, "httpold")["restarts"] == 0


def test_unreachable_http_upstream_backs_off_and_returns() -> None:
    from hub_fixture_server import make_server

    from mcpsync.frontend import make_server as make_front
    from mcpsync.http.app import HttpApp

    app = HttpApp(make_server("phoenix"))
    front = make_front(app, "127.0.0.1", 0).start()
    port = front.port
    hub = start_hub({"phoenix": {"url": f"http://127.0.0.1:{port}/mcp", "revision": "2025-11-25",
                                 "restart": {"initialDelay": 0.05, "maxDelay": 0.2}}})
    c = MemClient(hub.server)
    c.initialize()
    second = None
    try:
        assert text(c.call_tool("phoenix__echo", {"text": "1"})) == "1"
        app.end_streams()
        assert front.shutdown(WAIT_S)
        assert hub.wait_until(lambda h: state(h, "phoenix")["failures"] >= 2, WAIT_S), state(hub, "phoenix")
        down = state(hub, "phoenix")
        assert down["state"] in ("backoff", "connecting") and "cannot reach" in (down["lastError"] or "")
        result = c.call_tool("phoenix__echo", {"text": "2"})
        assert result.get("isError") and "upstream 'phoenix' is unavailable" in text(result)
        app2 = HttpApp(make_server("phoenix"))
        second = make_front(app2, "127.0.0.1", port).start()
        assert hub.wait_until(lambda h: state(h, "phoenix")["state"] == "ready", WAIT_S)
        assert text(c.call_tool("phoenix__echo", {"text": "3"})) == "3"
    finally:
        c.conn.close()
        hub.close()
        if second is not None:
            app2.end_streams()
            assert second.shutdown(WAIT_S)


# ---- per-session isolation -------------------------------------------------------------------

@pytest.fixture
def served_hub() -> Iterator[Any]:
    """A hub with a per-session stdio upstream, served over real HTTP."""
    from httpserver import serving

    from mcpsync.http.app import HttpApp

    hub = start_hub({"iso": fixture_entry("iso", isolation="per-session"),
                     "shared": fixture_entry("shared")})
    app = HttpApp(hub.server)
    try:
        with serving(app) as base:
            yield hub, f"{base}/mcp"
    finally:
        hub.close()
        app.service.close()


def _whoami(client: Any, tool: str) -> dict[str, Any]:
    return dict(json.loads(text(client.call("tools/call", {"name": tool}))))


def test_per_session_upstreams_are_created_lazily_and_reaped_with_their_session(served_hub: Any) -> None:
    from httpclient import HttpMcp

    hub, url = served_hub
    lister = state(hub, "iso")["upstream"]["pid"]   # the shared session only lists
    with HttpMcp(url) as one, HttpMcp(url) as two:
        one.initialize()
        two.initialize()
        assert state(hub, "iso")["sessions"] == 0        # nothing started before first use
        pid1 = _whoami(one, "iso__whoami")["pid"]
        pid2 = _whoami(two, "iso__whoami")["pid"]
        assert len({lister, pid1, pid2}) == 3
        assert _whoami(one, "iso__whoami")["pid"] == pid1  # the same one, call after call
        assert _whoami(one, "shared__whoami")["pid"] == _whoami(two, "shared__whoami")["pid"]
        assert state(hub, "iso")["sessions"] == 2
        assert one.delete().status == 200                # the client ends its session ...
        assert hub.wait_until(lambda h: not pid_alive(pid1), WAIT_S)  # ... its upstream is gone
        assert pid_alive(pid2) and state(hub, "iso")["sessions"] == 1
        assert _whoami(two, "iso__whoami")["pid"] == pid2
        # A per-session upstream that dies is reaped at once; its client's next call gets a new one.
        os.kill(pid2, signal.SIGKILL)
        assert hub.wait_until(lambda h: state(h, "iso")["sessions"] == 0 and not pid_alive(pid2), WAIT_S)
        assert state(hub, "iso")["instanceFailures"] == 1
        pid2b = _whoami(two, "iso__whoami")["pid"]
        assert pid2b != pid2 and state(hub, "iso")["sessions"] == 1
        assert two.delete().status == 200
        assert hub.wait_until(lambda h: state(h, "iso")["sessions"] == 0 and not pid_alive(pid2b), WAIT_S)
    # A 2026-07-28 request has no session: it gets an upstream of its own, for that request.
    from test_modern import envelope, modern_headers
    with HttpMcp(url) as stateless:
        reply = stateless.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                "params": {"name": "iso__whoami", "arguments": {}, **envelope()}},
                               modern_headers("tools/call", "iso__whoami"), session=False)
        assert reply.status == 200, reply.body
        pid3 = json.loads(reply.messages()[0]["result"]["content"][0]["text"])["pid"]
    assert pid3 not in (lister, pid1, pid2, pid2b)
    assert hub.wait_until(lambda h: not pid_alive(pid3), WAIT_S)


def test_concurrent_first_calls_of_one_session_start_one_upstream(served_hub: Any) -> None:
    hub, _url = served_hub
    c = MemClient(hub.server)
    c.initialize()
    try:
        start = threading.Barrier(6)
        pids: list[int] = []

        def first_call() -> None:
            start.wait(WAIT_S)
            pids.append(int(json.loads(text(c.call_tool("iso__whoami")))["pid"]))
        threads = [threading.Thread(target=first_call, name=f"test-first-{i}") for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert len(pids) == 6 and len(set(pids)) == 1
        assert state(hub, "iso")["sessions"] == 1
    finally:
        c.conn.close()
    assert hub.wait_until(lambda h: not pid_alive(pids[0]) and state(h, "iso")["sessions"] == 0, WAIT_S)


def test_concurrent_registrations_and_session_creations_end_exactly_right() -> None:
    """The design notes' scenario: many client sessions appear at once (each needing its own
    upstream session), while upstream tool lists change and refreshes race; afterwards the
    registry holds exactly the upstreams' tools, each client has exactly one upstream session,
    and once the clients leave, every upstream session is gone."""
    from httpserver import serving
    from hub_fixture_server import make_server

    from mcpsync.http.app import HttpApp

    upstream_app = HttpApp(make_server("concurrent"))
    with serving(upstream_app) as base:
        hub = start_hub({"per": {"url": f"{base}/mcp", "revision": "2025-11-25", "isolation": "per-session"},
                         "one": {"url": f"{base}/mcp", "revision": "2025-11-25"},
                         "two": {"url": f"{base.replace('http://', 'ws://')}/ws"}})
        clients_n, calls_each = 10, 3
        clients = [MemClient(hub.server) for _ in range(clients_n)]
        start = threading.Barrier(clients_n * calls_each + 2)
        sessions: dict[int, set[str]] = {i: set() for i in range(clients_n)}
        errors: list[str] = []

        def call(i: int) -> None:
            start.wait(WAIT_S)
            got = json.loads(text(clients[i].call_tool("per__whoami")))
            sessions[i].add(got["session"])

        def register(prefix: str, up: str) -> None:
            start.wait(WAIT_S)
            for k in range(5):
                clients[0].call_tool(f"{up}__add_dynamic_tool", {"tool": f"{prefix}{k}"})
                upstream = hub.upstream(up)
                if upstream is None or not upstream.refresh(WAIT_S):
                    errors.append(f"refresh of {up}")
        try:
            for c in clients:
                c.initialize()
            threads = [threading.Thread(target=call, args=(i,), name=f"test-call-{i}-{j}")
                       for i in range(clients_n) for j in range(calls_each)]
            threads += [threading.Thread(target=register, args=("p", "one"), name="test-reg-one"),
                        threading.Thread(target=register, args=("q", "two"), name="test-reg-two")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT_S * 2)
                assert not t.is_alive()
            assert errors == []
            assert all(len(s) == 1 for s in sessions.values()), sessions       # one each ...
            assert len(set().union(*sessions.values())) == clients_n             # ... and all different
            assert state(hub, "per")["sessions"] == clients_n
            # hub sessions upstream: the three shared ones plus one per client
            assert len(upstream_app.service.store.snapshot()) == 2 + clients_n + 1
            for up in ("per", "one", "two"):
                upstream = hub.upstream(up)
                assert upstream is not None and upstream.refresh(WAIT_S)
            expected = {t["name"] for t in hub.upstream("one").session.list_all("tools/list", "tools")}  # type: ignore[union-attr]
            assert {f"p{k}" for k in range(5)} | {f"q{k}" for k in range(5)} <= expected
            for up in ("per", "one", "two"):
                listed = {n[len(up) + 2:] for n in hub.server.registry.tools if n.startswith(f"{up}__")}
                assert listed == {n for n in expected if len(n) < 100} | {hub_name(up, "__", LONG_NAME)[len(up) + 2:]}
        finally:
            for c in clients:
                c.conn.close()
        assert hub.wait_until(lambda h: state(h, "per")["sessions"] == 0
                              and len(upstream_app.service.store.snapshot()) == 3, WAIT_S)
        hub.close()
        # Closing deleted the HTTP sessions (DELETE); only the WebSocket's may remain until the
        # upstream reads the close frame.
        assert len(upstream_app.service.store.snapshot()) <= 1


# ---- hot reload ------------------------------------------------------------------------------

def test_config_file_changes_restart_only_what_changed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hub.json"

    def write(servers: dict[str, Any]) -> None:
        tmp = tmp_path / "hub.json.tmp"
        tmp.write_text(json.dumps({"mcpServers": servers, "hub": {"watchInterval": 0.05}}))
        os.replace(tmp, path)

    write({"keep": fixture_entry("keep"), "change": fixture_entry("change-v1"), "drop": fixture_entry("drop")})
    from mcpsync.hub import load_config
    hub = Hub(load_config(str(path)), config_path=str(path)).start()
    try:
        assert hub.wait_ready(WAIT_S)
        pids = {n: state(hub, n)["upstream"]["pid"] for n in ("keep", "change", "drop")}
        c = MemClient(hub.server)
        c.initialize()
        write({"keep": fixture_entry("keep"), "change": fixture_entry("change-v2"), "add": fixture_entry("add")})
        assert hub.wait_until(lambda h: h.health()["hub"]["reloads"] == 1
                              and all(state(h, n)["state"] == "ready" for n in ("keep", "change", "add")), WAIT_S)
        assert state(hub, "keep")["upstream"]["pid"] == pids["keep"]          # untouched
        assert state(hub, "change")["upstream"]["pid"] != pids["change"]      # restarted ...
        assert json.loads(text(c.call_tool("change__whoami")))["server"] == "change-v2"  # ... with its new settings
        assert hub.upstream("drop") is None and not any(n.startswith("drop__") for n in hub.server.registry.tools)
        assert not pid_alive(pids["drop"]) and not pid_alive(pids["change"])
        assert text(c.call_tool("add__echo", {"text": "new"})) == "new"
        assert c.error("tools/call", {"name": "drop__echo"})["code"] == -32602
        # A broken file changes nothing and says why.
        tmp = tmp_path / "hub.json.tmp"
        tmp.write_text('{"mcpServers": {"keep": {"command": 1}}}')
        os.replace(tmp, path)
        assert hub.wait_until(lambda h: h.health()["hub"]["lastReloadError"] is not None, WAIT_S)
        assert hub.health()["hub"]["lastReloadError"].startswith("mcpServers.keep.command:")
        assert state(hub, "keep")["upstream"]["pid"] == pids["keep"] and state(hub, "add")["state"] == "ready"
        # Disabling an upstream stops it and removes its names.
        write({"keep": fixture_entry("keep"), "change": fixture_entry("change-v2"), "add": fixture_entry("add", enabled=False)})
        assert hub.wait_until(lambda h: state(h, "add")["state"] == "disabled"
                              and not any(n.startswith("add__") for n in h.server.registry.tools), WAIT_S)
        # A reload of the same settings (explicit, as on SIGHUP) restarts nothing.
        write({"keep": fixture_entry("keep"), "change": fixture_entry("change-v2"), "add": fixture_entry("add", enabled=False)})
        result = hub.reload()
        assert (result["restarted"], result["added"], result["removed"]) == ([], [], [])
        assert state(hub, "keep")["upstream"]["pid"] == pids["keep"]
        c.conn.close()
    finally:
        hub.close()


# ---- third-party upstreams: the reference servers (npm) and the official Python SDK (PyPI) -----

THIRD_PARTY_WAIT_S = 60.0   # Node start-up plus the SDK's imports, on a busy 2-core machine


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    import socket
    import subprocess

    from jsdeps import NODE_MODULES, node22

    node = node22()  # installs the pinned npm packages on first use (skips without npm)
    pytest.importorskip("mcp")
    with socket.socket() as probe:  # a free port for the SDK server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sdk = subprocess.Popen([sys.executable, str(REPO / "tests" / "sdk_upstream_server.py"), str(port)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    memory_file = tmp_path_factory.mktemp("memory") / "memory.jsonl"
    ref = NODE_MODULES / "@modelcontextprotocol"
    hub = Hub(parse_config({"mcpServers": {
        # Node servers may linger after stdin closes: SIGTERM them after half a second.
        "everything": {"command": node, "args": [str(ref / "server-everything" / "dist" / "index.js"), "stdio"],
                       "timeouts": {"shutdown": 0.5}},
        "memory": {"command": node, "args": [str(ref / "server-memory" / "dist" / "index.js")],
                   "env": {"MEMORY_FILE_PATH": str(memory_file)}, "timeouts": {"shutdown": 0.5}},
        # The SDK server takes a moment to listen: the hub's backoff covers it.
        "sdk": {"url": f"http://127.0.0.1:{port}/mcp", "restart": {"initialDelay": 0.1, "maxDelay": 0.3}},
    }})).start()
    try:
        assert hub.wait_until(lambda h: all(u.health()["state"] == "ready" for u in h.upstreams().values()),
                              THIRD_PARTY_WAIT_S), hub.health()
        yield hub
    finally:
        hub.close()
        sdk.terminate()
        sdk.wait(WAIT_S)


@pytest.fixture
def tclient(third_party: Hub) -> Iterator[MemClient]:
    c = MemClient(third_party.server)
    c.initialize(capabilities={"sampling": {}, "roots": {}})
    c.handlers["sampling/createMessage"] = lambda p: {
        "role": "assistant", "model": "test-model", "content": {"type": "text", "text": "sampled!"}}
    c.handlers["roots/list"] = lambda p: {"roots": [{"uri": "file:///srv/project", "name": "project"}]}
    try:
        yield c
    finally:
        c.conn.close()


def test_third_party_upstreams_negotiate(third_party: Hub) -> None:
    ups = third_party.health()["upstreams"]
    # The TypeScript SDK servers speak the handshake era (the probe falls back); the Python
    # SDK speaks 2026-07-28.
    assert ups["everything"]["revision"] == "2025-11-25" and ups["everything"]["upstream"]["server"] == "mcp-servers/everything"
    assert ups["memory"]["revision"] == "2025-11-25" and ups["memory"]["tools"] == 9
    assert ups["sdk"]["revision"] == "2026-07-28" and ups["sdk"]["upstream"]["server"] == "sdk-upstream"
    assert ups["everything"]["tools"] >= 10 and ups["everything"]["resourceTemplates"] >= 1


def test_reference_server_everything_through_the_hub(tclient: MemClient) -> None:
    assert text(tclient.call_tool("everything__echo", {"message": "hi"})) == "Echo: hi"
    assert "5" in text(tclient.call_tool("everything__get-sum", {"a": 2, "b": 3}))
    done = tclient.call_tool("everything__trigger-long-running-operation", {"duration": 0.2, "steps": 2},
                             meta={"progressToken": "ev"})
    assert not done.get("isError"), done
    assert [p["progress"] for p in tclient.notifications("notifications/progress") if p["progressToken"] == "ev"] == [1, 2]
    sampled = text(tclient.call_tool("everything__trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}))
    assert "sampled!" in sampled and tclient.requests("sampling/createMessage")
    assert "file:///srv/project" in text(tclient.call_tool("everything__get-roots-list"))
    links = [b for b in tclient.call_tool("everything__get-resource-links", {"count": 2})["content"]
             if b["type"] == "resource_link"]
    assert links and all(b["uri"].startswith("hub://everything/demo://") for b in links)
    read = tclient.call("resources/read", {"uri": links[0]["uri"]})
    assert read["contents"][0]["uri"] == links[0]["uri"]
    dynamic = tclient.call("resources/read", {"uri": "hub://everything/demo://resource/dynamic/text/3"})
    assert dynamic["contents"][0]["uri"] == "hub://everything/demo://resource/dynamic/text/3"
    prompt = tclient.call("prompts/get", {"name": "everything__args-prompt", "arguments": {"city": "Paris"}})
    assert "Paris" in json.dumps(prompt["messages"])


def test_reference_server_everything_cancellation(tclient: MemClient) -> None:
    call = CallThread(tclient, jsonrpc.request("long", "tools/call", {
        "name": "everything__trigger-long-running-operation", "arguments": {"duration": 30, "steps": 30},
        "_meta": {"progressToken": "long"}}))
    call.start()
    tclient.wait_for(lambda m: m.get("method") == "notifications/progress"
                     and m["params"]["progressToken"] == "long", WAIT_S)
    tclient.notify("notifications/cancelled", {"requestId": "long"})
    assert call.finish(5.0) is None
    assert text(tclient.call_tool("everything__echo", {"message": "still here"})) == "Echo: still here"


def test_reference_server_memory_through_the_hub(tclient: MemClient) -> None:
    created = tclient.call_tool("memory__create_entities", {"entities": [
        {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}]})
    assert not created.get("isError"), created
    graph = tclient.call_tool("memory__read_graph")
    assert graph["structuredContent"]["entities"][0]["name"] == "Ada"
    found = tclient.call_tool("memory__search_nodes", {"query": "program"})
    assert "Ada" in text(found)


def test_official_python_sdk_server_through_the_hub(tclient: MemClient) -> None:
    assert text(tclient.call_tool("sdk__shout", {"text": "quiet"})) == "QUIET"
    product = tclient.call_tool("sdk__multiply", {"a": 6, "b": 7})
    assert text(product) == "42" and product["structuredContent"] == {"result": 42}
    assert text(tclient.call_tool("sdk__count_up", {"steps": 3}, meta={"progressToken": "sdk"})) == "counted 3"
    assert [p["progress"] for p in tclient.notifications("notifications/progress") if p["progressToken"] == "sdk"] == [1, 2, 3]
    assert tclient.call("resources/read", {"uri": "hub://sdk/sdk://greeting"})["contents"][0]["text"] == "hello from the SDK"
    haiku = tclient.call("prompts/get", {"name": "sdk__haiku", "arguments": {"topic": "threads"}})
    assert haiku["messages"][0]["content"]["text"] == "Write a haiku about threads."
    bad = tclient.call_tool("sdk__multiply", {"a": "six"})
    assert bad.get("isError")


# ---- the CLI: python -m mcpsync hub CONFIG.json ------------------------------------------------

def _read_banner(proc: Any) -> str:
    """The MCP URL from the CLI's stderr banner (log lines may come first)."""
    for _ in range(100):
        line = proc.stderr.readline()
        if not line:
            break
        url = banner_url(line)
        if url is not None:
            return url
    raise AssertionError("no banner on stderr")


def _sse_until(conn: Any, predicate: Any) -> dict[str, Any]:
    """Read an open SSE response line by line until a message satisfies ``predicate``
    (bounded by the connection's socket timeout)."""
    while True:
        line = conn.readline()
        assert line, "the stream ended"
        if line.startswith(b"data:"):
            msg = json.loads(line[5:])
            if predicate(msg):
                return msg


def test_cli_serves_healthz_and_reloads_on_sighup(tmp_path: pathlib.Path) -> None:
    import http.client
    import subprocess
    from urllib.parse import urlsplit

    from httpclient import HttpMcp

    path = tmp_path / "hub.json"
    config: dict[str, Any] = {"mcpServers": {"a": fixture_entry("cli-a")}, "hub": {"watch": False}}
    path.write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mcpsync", "hub", str(path), "--port", "0",
                             "--log-level", "ERROR"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = _read_banner(proc)
        parts = urlsplit(url)
        health_conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT_S)

        def ready() -> bool:  # the hub serves at once; /readyz says when its upstreams are up
            health_conn.request("GET", "/readyz")
            resp = health_conn.getresponse()
            resp.read()
            return resp.status == 200
        assert wait_until(ready, WAIT_S)
        health_conn.request("GET", "/healthz")
        resp = health_conn.getresponse()
        health = json.loads(resp.read())
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        assert health["status"] == "ok" and health["upstreams"]["a"]["state"] == "ready"
        assert health["hub"]["reloads"] == 0 and health["hub"]["configPath"] == str(path)
        with HttpMcp(url, timeout=WAIT_S) as client:
            client.initialize()
            assert text(client.call("tools/call", {"name": "a__echo", "arguments": {"text": "cli"}})) == "cli"
            stream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT_S)
            stream.request("GET", parts.path, headers={"Accept": "text/event-stream",
                                                       "Mcp-Session-Id": client.session_id or "",
                                                       "MCP-Protocol-Version": client.version or ""})
            events = stream.getresponse()
            assert events.status == 200
            config["mcpServers"]["b"] = fixture_entry("cli-b")
            tmp = tmp_path / "hub.json.new"
            tmp.write_text(json.dumps(config))
            os.replace(tmp, path)
            proc.send_signal(signal.SIGHUP)
            _sse_until(events, lambda m: m.get("method") == "notifications/tools/list_changed")
            stream.close()
            assert text(client.call("tools/call", {"name": "b__echo", "arguments": {"text": "new"}})) == "new"
        health_conn.request("GET", "/healthz")
        health = json.loads(health_conn.getresponse().read())
        assert health["hub"]["reloads"] == 1 and health["upstreams"]["b"]["state"] == "ready"
        health_conn.request("GET", "/metrics")
        metrics = health_conn.getresponse().read().decode()
        assert 'mcpsync_front_end{stat="overdrafts"} 0' in metrics  # the front end's pool
        for name in ("a", "b"):
            assert f'mcpsync_hub_upstream_up{{state="ready",upstream="{name}"}} 1' in metrics
            assert f'mcpsync_hub_upstream_restarts{{state="ready",upstream="{name}"}} 0' in metrics
        pids = [health["upstreams"][n]["upstream"]["pid"] for n in ("a", "b")]
        health_conn.close()
        proc.terminate()
        assert proc.wait(WAIT_S) == 0
        assert not any(pid_alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT_S)
        assert proc.stderr is not None
        proc.stderr.close()
