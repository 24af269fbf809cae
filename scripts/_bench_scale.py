"""Scale-out measurements for ``scripts/bench.py`` (scenarios ``scale`` and ``redis``).

``scale``: 2026-07-28 echo (``wrk``, the stateless script) through HAProxy (the shipped
``deploy/haproxy.cfg``, its server list cut to N) in front of N = 1, 2, 3 instances that share
a redis-server, the load generator on the same machine: throughput and p99 per N, and the
CPU per request of the instances and of HAProxy. ``scale-cpu``: the same with a tool that
spends ``BURN_US`` of CPU per call (``bench_servers/cpu_server.py``), where the instances'
work outweighs the balancer's and the load generator's on a machine they share.

``redis``: what the shared state costs, against the same operations in one process's memory:
a tasks round trip (a ``tools/call`` that creates a task, then ``tasks/get`` of it, on another
instance with Redis) and the latency of a resource update from the ``tools/call`` that
notifies it on one instance to its arrival on a listen stream of another (of the same
instance, in memory).

Every process is started through bench.py's ``spawn`` (own process group, killed on exit).
redis-server and haproxy come from the system (Debian: ``apt-get install redis-server
haproxy``); a scenario whose program is missing is left out with a note.
"""
from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import sys
import threading
import time
import urllib.request
from typing import Any, Callable

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
SECRET = "bench-scale-secret-0123456789abcdefghij"
READY_TIMEOUT_S = 30.0
SCALE_CONNS = 16             # wrk connections through HAProxy (one wrk thread)
SCALE_COUNTS = (1, 2, 3)
BURN_US = 1000               # scale-cpu: CPU per call spent in the tool
CPU_SERVER = HERE / "bench_servers" / "cpu_server.py"

# scale-cpu's wrk body (bench.py puts its WRK_COMMON before it): 2026-07-28 tools/call
# burn(BURN_US, tag) with a unique tag per request; the reply must carry the tag back.
WRK_BURN = r"""
local counter = 0
function init(args)
  id_base = tonumber(args[1])
  burn_us = args[2]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "burn"
end
function request()
  counter = counter + 1
  local id = id_base + tid * 100000000 + counter
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. id ..
    ',"method":"tools/call","params":{"name":"burn","arguments":{"us":' .. burn_us ..
    ',"tag":"b' .. id .. '"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{}}}}')
end
function response(status, headers, body)
  local id = string.match(body, '"id"%s*:%s*(%d+)')
  if status ~= 200 then note_bad("HTTP " .. status .. " " .. string.sub(body, 1, 90))
  elseif id == nil or not string.find(body, '"text"%s*:%s*"b' .. id .. '"') then note_bad("wrong tag")
  end
end
"""
PROBES = 300                 # round trips per latency measurement
V = "2026-07-28"
CAPS = {"extensions": {"io.modelcontextprotocol/tasks": {}}}


def which(program: str) -> str | None:
    return shutil.which(program) or next((p for p in (f"/usr/sbin/{program}", f"/usr/local/sbin/{program}")
                                          if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {READY_TIMEOUT_S:g} s")
        time.sleep(0.02)  # a bounded poll of a starting process


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class Cluster:
    """redis-server + N instances (+ HAProxy) started through ``spawn``, stopped by ``close``."""

    def __init__(self, spawn: Callable[..., Any], kill: Callable[[Any], None], work: pathlib.Path) -> None:
        self.spawn, self.kill, self.work = spawn, kill, work
        self.procs: list[Any] = []
        self.kinds: list[str] = []    # beside procs: "redis", "instance", "haproxy"
        self.redis_port = 0

    def redis(self) -> str:
        binary = which("redis-server")
        assert binary is not None
        self.redis_port = free_port()
        self.kinds.append("redis")
        self.procs.append(self.spawn([binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.work)],
                                     stdout=subprocess_devnull(), stderr=subprocess_devnull()))

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        _wait(pong, "redis-server")
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def cpu_s(self, kind: str) -> float:
        """CPU seconds used so far by this cluster's processes of ``kind`` (instance, haproxy)."""
        return sum(_cpu_s(p.pid) for p, k in zip(self.procs, self.kinds) if k == kind)

    def instance(self, name: str, state_url: str | None, target: str | None = None) -> str:
        port = free_port()
        args = [sys.executable, "-m", "mcpsync", *(["serve", target] if target else []),
                "--port", str(port), "--log-level", "WARNING"]
        if state_url:
            args += ["--state-url", state_url, "--instance-id", name]
        env = dict(os.environ, PYTHONPATH=str(REPO), MCPSYNC_SECRET=SECRET)
        log = open(self.work / f"{name}.log", "ab")
        self.kinds.append("instance")
        self.procs.append(self.spawn(args, cwd=REPO, env=env, stdout=log, stderr=log, stdin=subprocess_devnull()))
        log.close()
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(base), f"instance {name}")
        return base

    def haproxy(self, bases: list[str]) -> str:
        binary = which("haproxy")
        assert binary is not None
        port = free_port()
        text = HAPROXY_CFG.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        # one HAProxy thread: on a 2-core box shared with wrk and the instances, a second
        # thread only competes with them for the cores
        text = text.replace("global\n", "global\n    nbthread 1\n", 1)
        text = re.sub(r"\n    server i\d [^\n]+", "", text)
        text += "".join(f"    server i{n + 1} {b.removeprefix('http://')}\n" for n, b in enumerate(bases))
        cfg = self.work / f"haproxy-{len(bases)}.cfg"
        cfg.write_text(text)
        self.kinds.append("haproxy")
        self.procs.append(self.spawn([binary, "-db", "-f", str(cfg)], stdout=subprocess_devnull(),
                                     stderr=subprocess_devnull(), stdin=subprocess_devnull()))
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: all(_ready(base) for _ in range(2 * len(bases))), "haproxy")
        return base

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc)
        self.procs, self.kinds = [], []


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subprocess_devnull() -> int:
    import subprocess
    return subprocess.DEVNULL


# ---- a minimal 2026-07-28 client ----------------------------------------------------------------

class Modern:
    def __init__(self, base: str) -> None:
        port = int(base.rsplit(":", 1)[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.ids = 0

    def call(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        self.ids += 1
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method,
                "params": {**params, "_meta": {"io.modelcontextprotocol/protocolVersion": V,
                                               "io.modelcontextprotocol/clientCapabilities": CAPS}}}
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": V, "Mcp-Method": method}
        if name is not None:
            headers["Mcp-Name"] = name
        self.conn.request("POST", "/mcp", json.dumps(body), headers)
        resp = self.conn.getresponse()
        reply = json.loads(resp.read())
        if "result" not in reply:
            raise RuntimeError(f"{method}: {reply.get('error')}")
        return dict(reply["result"])

    def close(self) -> None:
        self.conn.close()


class Listener:
    """A listen stream whose reader thread records when each resource update arrived."""

    def __init__(self, base: str, prefix: str) -> None:
        port = int(base.rsplit(":", 1)[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = {"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                "params": {"notifications": {"resourceSubscriptions": [prefix]},
                           "_meta": {"io.modelcontextprotocol/protocolVersion": V,
                                     "io.modelcontextprotocol/clientCapabilities": {}}}}
        self.conn.request("POST", "/mcp", json.dumps(body), {
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": V, "Mcp-Method": "subscriptions/listen"})
        self.resp = self.conn.getresponse()
        self.cond = threading.Condition()  # guards arrived and acked; notified by the reader
        self.arrived: dict[str, float] = {}
        self.acked = False
        self.thread = threading.Thread(target=self._read, name="bench-listen", daemon=True)
        self.thread.start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.acked, READY_TIMEOUT_S):
                raise RuntimeError("listen stream not acknowledged")

    def _read(self) -> None:
        try:
            for raw in self.resp:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                now = time.perf_counter()
                with self.cond:
                    if msg.get("method") == "notifications/subscriptions/acknowledged":
                        self.acked = True
                    elif msg.get("method") == "notifications/resources/updated":
                        self.arrived[msg["params"]["uri"]] = now
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass

    def wait(self, uri: str) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: uri in self.arrived, 10.0):
                raise RuntimeError(f"no update for {uri}")
            return self.arrived[uri]

    def close(self) -> None:
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.conn.close()


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def task_round_trips(create_on: str, get_on: str) -> tuple[list[float], list[float]]:
    """``PROBES`` tasks: (create ms, get ms) each, the get on ``get_on``."""
    a, b = Modern(create_on), Modern(get_on)
    creates, gets = [], []
    try:
        for n in range(PROBES):
            t0 = time.perf_counter()
            created = a.call("tools/call", {"name": "slow_compute", "arguments": {"seconds": 0, "label": str(n)}},
                             "slow_compute")
            t1 = time.perf_counter()
            b.call("tasks/get", {"taskId": created["taskId"]}, created["taskId"])
            t2 = time.perf_counter()
            creates.append((t1 - t0) * 1000)
            gets.append((t2 - t1) * 1000)
    finally:
        a.close()
        b.close()
    return creates, gets


def notify_latencies(listen_on: str, notify_on: str) -> list[float]:
    """``PROBES`` resource updates: ms from sending touch_resource to the stream's arrival."""
    listener = Listener(listen_on, "bench://")
    caller = Modern(notify_on)
    out = []
    try:
        for n in range(PROBES):
            uri = f"bench://{n}"
            t0 = time.perf_counter()
            caller.call("tools/call", {"name": "touch_resource", "arguments": {"uri": uri}}, "touch_resource")
            out.append((listener.wait(uri) - t0) * 1000)
    finally:
        caller.close()
        listener.close()
    return out


def missing_programs(*programs: str) -> list[str]:
    return [p for p in programs if which(p) is None]


def bench_redis(spawn: Callable[..., Any], kill: Callable[[Any], None], work: pathlib.Path,
                make: Callable[..., Any], run: int) -> list[Any]:
    """Tasks round trip and cross-instance notification latency: memory vs Redis."""
    out = []
    cluster = Cluster(spawn, kill, work)
    try:
        solo = cluster.instance("memory", None)
        creates, gets = task_round_trips(solo, solo)
        notes = notify_latencies(solo, solo)
        url = cluster.redis()
        i1, i2 = cluster.instance("i1", url), cluster.instance("i2", url)
        r_creates, r_gets = task_round_trips(i1, i2)
        r_notes = notify_latencies(i1, i2)
    finally:
        cluster.close()
    for label, server, samples in (("task-create", "memory", creates), ("task-create", "redis", r_creates),
                                   ("task-get", "memory", gets), ("task-get", "redis", r_gets),
                                   ("notify", "memory", notes), ("notify", "redis", r_notes)):
        p50, p99 = _percentiles(samples)
        out.append(make(run, f"redis-{label}", server, "py", 1000 / (sum(samples) / len(samples)),
                        p50, p99, len(samples), 0))
    return out


def bench_scale(spawn: Callable[..., Any], kill: Callable[[Any], None], work: pathlib.Path,
                measure: Callable[[str, str, int, Callable[[], tuple[float, float]]], Any],
                run: int, *, cpu_bound: bool = False) -> list[Any]:
    """Stateless echo (``cpu_bound``: burn(BURN_US)) through HAProxy to 1, 2, 3 instances
    sharing Redis. ``measure(url, scenario, run, cpu)`` runs wrk and returns a Measurement;
    ``cpu()`` reads the CPU seconds used so far by (the instances, HAProxy)."""
    out = []
    name, target = ("scale-cpu", str(CPU_SERVER)) if cpu_bound else ("scale", None)
    for count in SCALE_COUNTS:
        cluster = Cluster(spawn, kill, work)
        try:
            url = cluster.redis()
            bases = [cluster.instance(f"i{n + 1}", url, target) for n in range(count)]
            front = cluster.haproxy(bases)
            m = measure(f"{front}/mcp", f"{name}-{count}", run,
                        lambda: (cluster.cpu_s("instance"), cluster.cpu_s("haproxy")))
            m.extra["instances"] = count
            out.append(m)
        finally:
            cluster.close()
    return out
