"""The hub against hostile or broken upstreams, over real processes (issue 13 findings 7, 8
and 10, issue 18's hub items). The upstreams are tests/hub_raw_upstream.py in its
misbehaving modes; the hub runs in-process or as ``python -m mcpsync hub`` (where memory,
log volume, start-up time or the hub's own death are what is measured).

Every wait is bounded: hub state changes by ``Hub.wait_until``, other processes by a
deadline poll (``rpcutil.wait_until``), the whole test by pytest-timeout.
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import signal
import struct
import termios
import time
from typing import Any

import pytest
from hubutil import CliHub, kill_leftovers, peak_rss_mib, process_gone, raw_entry, read_pid  # noqa: F401 (fixture)
from memclient import CallThread, MemClient
from rpcutil import wait_until

from mcpsync.hub import Hub, parse_config
from mcpsync.client.lines import LineSplitter, LogBudget, Window
from mcpsync.protocol import jsonrpc

WAIT_S = 20.0
FAST_RESTART = {"initialDelay": 0.1, "maxDelay": 0.2}
QUICK_STOP = {"shutdown": 0.5}


def hub_of(servers: dict[str, Any], **hub: Any) -> Hub:
    return Hub(parse_config({"mcpServers": servers, "hub": {"watch": False, **hub}})).start()


def health(hub: Hub, name: str) -> dict[str, Any]:
    up = hub.upstream(name)
    assert up is not None
    return up.health()


def text(result: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in result["content"] if b.get("type") == "text")


# ---- A: upstream output is bounded ------------------------------------------------------------

def test_line_splitter_cuts_long_lines_once_and_discards_their_rest() -> None:
    sp = LineSplitter(4)
    assert sp.feed(b"ab\ncd") == [(b"ab", False)]
    assert sp.feed(b"ef") == []                                  # "cdef": exactly the limit
    assert sp.feed(b"\n123456") == [(b"cdef", False), (b"1234", True)]
    assert sp.feed(b"78") == [] and sp.feed(b"9\nok\n") == [(b"ok", False)]
    assert (sp.cut_lines, sp.dropped_bytes) == (1, 5)           # "56789"
    assert sp.feed(b"tail") == [] and sp.flush() == b"tail"
    quiet = LineSplitter(2, keep_cut=False)
    assert quiet.feed(b"xyz\n") == [(b"", True)] and quiet.dropped_bytes == 1


def test_log_budget_counts_what_it_holds_back_per_window() -> None:
    budget = LogBudget(2, 10.0)
    assert [budget.take(t) for t in (0.0, 1.0, 2.0, 3.0)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert budget.pending() == 2
    assert budget.take(10.0) == (True, 2)                       # a new window says what the last held
    window = Window(5.0)
    assert window.add(0.0, 10) == 0 and window.add(1.0, 0, events=0) == 0 and window.add(6.0, 3) == 1
    assert (window.events, window.bytes) == (1, 3)


BIG_LINE_BYTES = 100 * 1024 * 1024


def test_a_100_mb_stderr_line_is_cut_and_neither_kept_nor_logged(tmp_path: pathlib.Path) -> None:
    """The upstream writes one 100 MB stderr line and exits, at every (re)start. Before:
    the hub's peak RSS was 642 MiB and it logged the whole line each time."""
    entry = raw_entry({"RAW_STDERR_BYTES": str(BIG_LINE_BYTES)}, restart=FAST_RESTART)
    with CliHub({"mcpServers": {"big": entry}, "hub": {"watch": False}}, tmp_path) as hub:
        up = hub.wait_upstream("big", lambda h: h["restarts"] >= 2 and h["lastError"], WAIT_S)
        peak = peak_rss_mib(hub.proc.pid)
        assert peak < 150, f"peak RSS {peak:.0f} MiB"
        assert hub.logged() < 256 * 1024, f"{hub.logged()} bytes of log"
        assert "exited with status 1" in up["lastError"] and "its last stderr: BIG:xxx" in up["lastError"]
        assert len(up["lastError"]) < 1000
        assert "[... cut at 4096 bytes]" in hub.log_tail()


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_stdout_garbage_is_rate_limited_and_the_upstream_restarted_as_broken(tmp_path: pathlib.Path,
                                                                               kind: str) -> None:
    """The upstream floods stdout with lines that are not JSON-RPC. Before: 94 % of a core
    and 8 MB/s of log, forever. Now a few lines are logged, the upstream is declared broken
    and restarted with backoff."""
    entry = raw_entry({"RAW_FLOOD": kind}, restart=FAST_RESTART, timeouts=QUICK_STOP)
    with CliHub({"mcpServers": {"flood": entry}, "hub": {"watch": False}}, tmp_path) as hub:
        up = hub.wait_upstream("flood", lambda h: h["restarts"] >= 2 and h["lastError"], WAIT_S)
        assert "broken: it wrote 1001 non-JSON-RPC lines" in up["lastError"], up
        assert up["state"] in ("backoff", "connecting")
        logged, lines = hub.logged(), hub.log_tail().count("a line on stdout that is not JSON-RPC")
        starts = hub.upstream("flood")["restarts"] + 1  # read after the log: covers it
        assert logged / starts < 8 * 1024, f"{logged / starts:.0f} bytes of log per start"
        assert 5 <= lines <= 5 * starts


# ---- B: start-up and death ----------------------------------------------------------------------

def test_b_the_hub_serves_at_once_while_an_upstream_never_answers(tmp_path: pathlib.Path) -> None:
    """Before: the HTTP endpoint came up only after the silent upstream's 30 s connect
    timeout. Now it serves at once and the fast upstream's tools arrive when it is ready."""
    config = {"mcpServers": {"fast": raw_entry(), "silent": raw_entry({"RAW_SILENT": "1"})},
              "hub": {"watch": False}}
    with CliHub(config, tmp_path) as hub:
        hub.wait_banner(10.0)
        assert time.monotonic() - hub.started < 10.0
        hub.wait_upstream("fast", lambda h: h["state"] == "ready", WAIT_S)
        assert hub.upstream("silent")["state"] == "connecting"
        from httpclient import HttpMcp
        with HttpMcp(hub.wait_banner(), timeout=WAIT_S) as client:
            client.initialize()
            assert text(client.call("tools/call", {"name": "fast__echo", "arguments": {"text": "up"}})) == "up"


def test_b_children_die_with_a_killed_hub(tmp_path: pathlib.Path, kill_leftovers: list[int]) -> None:
    """SIGKILL of the hub: children that ignore stdin's end and SIGTERM, and an npx-like
    wrapper with its server, all end (the guardian). Before: they all ran on."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    config = {"mcpServers": {
        "stubborn": raw_entry({"RAW_STUBBORN": "1", "RAW_PID_DIR": str(one)}),
        "wrapped": raw_entry({"RAW_STUBBORN": "1", "RAW_PID_DIR": str(two)}, mode="wrapper")},
        "hub": {"watch": False}}
    with CliHub(config, tmp_path) as hub:
        for name in ("stubborn", "wrapped"):
            hub.wait_upstream(name, lambda h: h["state"] == "ready", WAIT_S)
        pids = [read_pid(one, "server", WAIT_S), read_pid(two, "wrapper", WAIT_S), read_pid(two, "server", WAIT_S)]
        kill_leftovers.extend(pids)
        hub.proc.kill()
        hub.proc.wait(WAIT_S)
        assert wait_until(lambda: all(process_gone(p) for p in pids), 10.0), \
            [p for p in pids if not process_gone(p)]


def test_b_a_dead_server_under_a_lingering_wrapper_is_noticed(tmp_path: pathlib.Path,
                                                               kill_leftovers: list[int]) -> None:
    """The real server under a wrapper that keeps running (and holding the pipes) is killed:
    the hub notices at once (before: only the next ping, 30 s later), kills the wrapper's
    group and starts it again."""
    hub = hub_of({"wrapped": raw_entry({"RAW_PID_DIR": str(tmp_path)}, mode="wrapper",
                                       restart=FAST_RESTART, timeouts={**QUICK_STOP, "probe": 1})})
    try:
        assert hub.wait_until(lambda h: health(h, "wrapped")["state"] == "ready", WAIT_S), health(hub, "wrapped")
        wrapper, server = read_pid(tmp_path, "wrapper", WAIT_S), read_pid(tmp_path, "server", WAIT_S)
        kill_leftovers.extend([wrapper, server])
        for stale in ("wrapper.pid", "server.pid"):
            (tmp_path / stale).unlink()
        os.kill(server, signal.SIGKILL)
        assert hub.wait_until(lambda h: health(h, "wrapped")["restarts"] >= 1, 5.0), health(hub, "wrapped")
        assert f"the server process {server} under pid {wrapper} ended, and pid {wrapper} runs on without " \
               "answering a ping within 1 s" in str(health(hub, "wrapped")["lastError"])
        assert hub.wait_until(lambda h: health(h, "wrapped")["state"] == "ready", WAIT_S)
        assert wait_until(lambda: process_gone(wrapper), WAIT_S)  # the group was killed on restart
        new = [read_pid(tmp_path, "wrapper", WAIT_S), read_pid(tmp_path, "server", WAIT_S)]
        kill_leftovers.extend(new)
    finally:
        hub.close()
    assert wait_until(lambda: all(process_gone(p) for p in new), WAIT_S)


def test_b_a_helper_that_shares_stdout_ending_is_not_taken_for_a_dead_server(
        tmp_path: pathlib.Path, kill_leftovers: list[int], caplog: pytest.LogCaptureFixture) -> None:
    """A server that started a helper holding its stdout: the helper ends, the hub asks
    the server for a ping, it answers, nothing restarts."""
    caplog.set_level("INFO", logger="mcpsync.client")
    hub = hub_of({"srv": raw_entry({"RAW_PID_DIR": str(tmp_path), "RAW_HELPER": "1"}, timeouts={"probe": 1})})
    try:
        assert hub.wait_until(lambda h: health(h, "srv")["state"] == "ready", WAIT_S)
        helper = read_pid(tmp_path, "helper", WAIT_S)
        kill_leftovers.append(helper)
        os.kill(helper, signal.SIGKILL)
        assert wait_until(lambda: any("still answers" in r.getMessage() for r in caplog.records), WAIT_S)
        up = health(hub, "srv")
        assert (up["state"], up["restarts"], up["lastError"]) == ("ready", 0, None)
        client = MemClient(hub.server)
        client.initialize()
        assert text(client.call_tool("srv__echo", {"text": "still here"})) == "still here"
        client.conn.close()
    finally:
        hub.close()


# ---- C: a child that stops reading stdin cannot hold up close, reload or stop -----------------

def pipe_fill(pid: int) -> int:
    """Bytes waiting in the stdin pipe of process ``pid`` (FIONREAD on its read end)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    finally:
        os.close(fd)


def block_a_writer(hub: Hub, client: MemClient, pid: int) -> CallThread:
    """Send the deaf upstream a 1 MiB request: its writer blocks on the full pipe."""
    call = CallThread(client, jsonrpc.request("big", "tools/call", {
        "name": "deaf__echo", "arguments": {"text": "x" * (1024 * 1024)}}))
    call.start()
    assert wait_until(lambda: pipe_fill(pid) >= 64 * 1024, WAIT_S), "the pipe did not fill"
    return call


def test_c_close_and_reload_finish_while_a_writer_is_stuck(tmp_path: pathlib.Path,
                                                           kill_leftovers: list[int]) -> None:
    """Before: close() waited for the write lock that the writer blocked on the full pipe
    held, forever (the request timeout does not cover a blocked write)."""
    env = {"RAW_DEAF": "1", "RAW_STUBBORN": "1", "RAW_PID_DIR": str(tmp_path)}
    deaf = raw_entry(env, timeouts=QUICK_STOP)
    hub = hub_of({"deaf": deaf})
    client = MemClient(hub.server)
    client.initialize()
    try:
        assert hub.wait_until(lambda h: health(h, "deaf")["state"] == "ready", WAIT_S)
        first = read_pid(tmp_path, "server", WAIT_S)
        kill_leftovers.append(first)
        (tmp_path / "server.pid").unlink()
        call = block_a_writer(hub, client, first)
        began = time.monotonic()
        changed = raw_entry(env, timeouts={**QUICK_STOP, "request": 59})
        result = hub.reload(parse_config({"mcpServers": {"deaf": changed}, "hub": {"watch": False}}), timeout=10.0)
        assert result["restarted"] == ["deaf"] and time.monotonic() - began < 8.0
        assert process_gone(first)
        reply = call.finish(5.0)
        assert reply["result"]["isError"] and "closed by the hub" in text(reply["result"])
        assert hub.wait_until(lambda h: health(h, "deaf")["state"] == "ready", WAIT_S)
        second = read_pid(tmp_path, "server", WAIT_S)
        kill_leftovers.append(second)
        call = block_a_writer(hub, client, second)
        began = time.monotonic()
    finally:
        hub.close()
        client.conn.close()
    assert time.monotonic() - began < 8.0
    assert process_gone(second)
    assert call.finish(5.0)["result"]["isError"]


# ---- D: readiness, stderr in lastError, config typos, roots without a client -----------------

def test_d_readyz_waits_for_required_upstreams_and_healthz_stays_200(tmp_path: pathlib.Path) -> None:
    config: dict[str, Any] = {"mcpServers": {
        "fast": raw_entry(),
        "silent": raw_entry({"RAW_SILENT": "1"}, timeouts={"connect": 60}),
        "extra": raw_entry({"RAW_SILENT": "1"}, required=False, timeouts={"connect": 60})},
        "hub": {"watch": False}}
    with CliHub(config, tmp_path) as hub:
        hub.wait_upstream("fast", lambda h: h["state"] == "ready", WAIT_S)
        status, ready = hub.get("/readyz")
        assert status == 503 and ready == {"status": "not ready", "ready": False,
                                           "waitingFor": {"silent": "connecting"}}
        status, live = hub.get("/healthz")
        assert status == 200 and live["status"] == "starting"
        assert live["upstreams"]["extra"]["required"] is False and live["upstreams"]["silent"]["required"] is True
        config["mcpServers"]["silent"]["required"] = False
        hub.path.write_text(json.dumps(config))
        hub.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: hub.get("/readyz")[0] == 200, WAIT_S)
        assert hub.get("/readyz")[1] == {"status": "ready", "ready": True, "waitingFor": {}}


def test_d_readiness_reports_draining() -> None:
    hub = hub_of({})
    try:
        assert hub.readiness()["status"] == "ready"
        hub.server.end_listeners()  # what the front end's shutdown calls first
        assert hub.readiness() == {"status": "draining", "ready": False, "waitingFor": {}}
    finally:
        hub.close()


def test_d_last_error_carries_the_last_stderr_lines() -> None:
    lines = ["starting up", "x" * 10_000, "Error: API_KEY is not set", "giving up"]
    hub = hub_of({"noisy": raw_entry({"RAW_STDERR_LINES": "|".join(lines), "RAW_EXIT": "3"},
                                     restart={"initialDelay": 30})})
    try:
        assert hub.wait_until(lambda h: health(h, "noisy")["state"] == "backoff", WAIT_S)
        err = health(hub, "noisy")["lastError"]
        assert "the process exited with status 3; its last stderr: starting up | xxx" in err
        assert err.endswith("... | Error: API_KEY is not set | giving up"), err
        assert len(err) < 600
    finally:
        hub.close()


def test_d_roots_asked_without_a_client_get_a_clear_error() -> None:
    """The upstream asks roots/list while only the hub talks to it (its listing): a clean
    error (not a guess, not an empty list that servers would cache as the client's roots)."""
    hub = hub_of({"asker": raw_entry({"RAW_ASK_ROOTS": "1"})})
    client = MemClient(hub.server)
    client.initialize(capabilities={"roots": {}})
    try:
        assert hub.wait_until(lambda h: health(h, "asker")["state"] == "ready", WAIT_S)
        answers = json.loads(text(client.call_tool("asker__roots_answer")))
        assert answers == [{"jsonrpc": "2.0", "id": "roots-1", "error": {
            "code": -32603, "message": "roots/list is not available now: no client request is in progress "
                                       "(the hub relays it to the client whose call is running)"}}]
    finally:
        client.conn.close()
        hub.close()
