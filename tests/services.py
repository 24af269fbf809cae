"""Real processes for the scale-out tests: redis-server, mcpsync instances, HAProxy and nginx
on ephemeral ports in a temp dir, each started and stopped by the test that needs it (the
system's own services are never used). Programs come from ``sysdeps.require``.

The balancer configs are the shipped ones (``deploy/haproxy.cfg``, ``deploy/nginx.conf``)
with their addresses and file paths rewritten to the test's.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import sysdeps

REPO = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.02          # bounded polls of a starting service


def wait_until(pred: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll ``pred()`` (state in other processes) until it returns something true, which is
    returned; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # a bounded poll of another process's state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(ready: Any, what: str, proc: subprocess.Popen[Any] | None = None,
                log: pathlib.Path | None = None, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout:g} s")
        time.sleep(POLL_S)


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


# ---- Redis ----------------------------------------------------------------------------------------

class RedisServer:
    """redis-server on a fixed ephemeral port (kept across restarts), with an append-only
    file fsynced on every write so a killed server comes back with its data."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.binary = sysdeps.require("redis-server")["redis-server"]
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"

    def url(self, db: int = 0, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"redis://127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")

    def start(self) -> "RedisServer":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                 "--daemonize", "no", "--loglevel", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_until(self.ping, "redis-server", self.proc, self.log)
        return self

    def ping(self) -> bool:
        try:
            return self.client().ping() is True
        except Exception:
            return False

    def client(self) -> Any:
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def commands(self) -> dict[str, int]:
        """Calls per command since start (INFO commandstats)."""
        stats = self.client().info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@contextlib.contextmanager
def redis_server(workdir: pathlib.Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


# ---- mcpsync instances ------------------------------------------------------------------------------

class Instance:
    """``python -m mcpsync`` on its own port (fixed, so a balancer config can name it)."""

    def __init__(self, name: str, args: list[str], workdir: pathlib.Path, env: dict[str, str],
                 argv: list[str] | None = None) -> None:
        """``python -m mcpsync --port P ARGS`` (or ``argv``, which finds its port in
        ``MCPSYNC_BIND``)."""
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.log = workdir / f"mcpsync-{name}.log"
        self._log = open(self.log, "ab")
        argv = argv or [sys.executable, "-m", "mcpsync", "--port", str(self.port), "--log-level", "WARNING", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "MCPSYNC_BIND": f"127.0.0.1:{self.port}", **env},
                                     cwd=str(REPO))

    def wait_ready(self) -> None:
        _wait_until(lambda: http_status(f"{self.base}/readyz") == 200, f"mcpsync {self.name}", self.proc, self.log)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        _stop(self.proc)
        self._log.close()
        return int(self.proc.returncode)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a /metrics series over the samples that carry ``labels``."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def gunicorn(workdir: pathlib.Path, env: dict[str, str], name: str = "g") -> Iterator[Instance]:
    """The shipped deploy/gunicorn.conf.py serving deploy/wsgi.py, configured by ``env``."""
    inst = Instance(name, [], workdir, env,
                    argv=[sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py")])
    try:
        inst.wait_ready()
        yield inst
    finally:
        inst.stop()


@contextlib.contextmanager
def instances(count: int, workdir: pathlib.Path, *, state_url: str | None, secret: str | None = None,
              extra: list[str] | None = None, names: list[str] | None = None) -> Iterator[list[Instance]]:
    """``count`` instances named ``names`` (default i1, i2, …) sharing ``state_url``."""
    names = names or [f"i{n + 1}" for n in range(count)]
    env = {"MCPSYNC_SECRET": secret} if secret else {}
    started = []
    try:
        for name in names:
            args = ["--instance-id", name, *(extra or [])]
            if state_url:
                args += ["--state-url", state_url]
            started.append(Instance(name, args, workdir, env))
        for inst in started:
            inst.wait_ready()
        yield started
    finally:
        for inst in started:
            inst.stop()


# ---- balancers ------------------------------------------------------------------------------------

DEFAULT_FRONT = "127.0.0.1:8000"
DEFAULT_SERVERS = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]


def _rewrite(text: str, front: int, backends: list[Instance]) -> str:
    assert len(backends) == len(DEFAULT_SERVERS), "the shipped configs name three instances"
    text = text.replace(DEFAULT_FRONT, f"127.0.0.1:{front}")
    for default, inst in zip(DEFAULT_SERVERS, backends):
        text = text.replace(default, f"127.0.0.1:{inst.port}")
    return text


class Balancer:
    def __init__(self, kind: str, proc: subprocess.Popen[bytes], port: int, log: pathlib.Path) -> None:
        self.kind = kind
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"
        self.log = log


@contextlib.contextmanager
def haproxy(workdir: pathlib.Path, backends: list[Instance]) -> Iterator[Balancer]:
    """The shipped deploy/haproxy.cfg in front of ``backends``."""
    binary = sysdeps.require("haproxy")["haproxy"]
    port = free_port()
    cfg = workdir / "haproxy.cfg"
    text = _rewrite((DEPLOY / "haproxy.cfg").read_text(), port, backends)
    cfg.write_text(text)
    log = workdir / "haproxy.log"
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(log, "ab") as out:
        proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    bal = Balancer("haproxy", proc, port, log)
    try:
        # every backend up in HAProxy's health checks before the test starts
        _wait_until(lambda: all_ready(bal, len(backends)), "haproxy", proc, log)
        yield bal
    finally:
        _stop(proc, signal.SIGTERM)


@contextlib.contextmanager
def nginx(workdir: pathlib.Path, backends: list[Instance]) -> Iterator[Balancer]:
    """The shipped deploy/nginx.conf in front of ``backends`` (its paths under ``workdir``)."""
    binary = sysdeps.require("nginx")["nginx"]
    port = free_port()
    prefix = workdir / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    text = _rewrite((DEPLOY / "nginx.conf").read_text(), port, backends)
    text = re.sub(r"(access_log|error_log)\s+[^;]+;", lambda m: f"{m.group(1)} {prefix}/logs/{m.group(1)}.log;", text)
    text = text.replace("http {", f"http {{\n    client_body_temp_path {prefix}/body;\n"
                                  f"    proxy_temp_path {prefix}/proxy;\n    fastcgi_temp_path {prefix}/fastcgi;\n"
                                  f"    uwsgi_temp_path {prefix}/uwsgi;\n    scgi_temp_path {prefix}/scgi;", 1)
    cfg = prefix / "nginx.conf"
    cfg.write_text(text)
    globals_ = f"daemon off; master_process on; pid {prefix}/nginx.pid;"
    if os.geteuid() == 0:
        globals_ += " user root;"  # the temp dir is root's
    base_cmd = [binary, "-p", str(prefix), "-c", str(cfg), "-e", str(prefix / "logs" / "startup.log")]
    check = subprocess.run([*base_cmd, "-g", globals_, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = prefix / "logs" / "stderr.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([*base_cmd, "-g", globals_], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    bal = Balancer("nginx", proc, port, log)
    try:
        _wait_until(lambda: http_status(f"{bal.base}/readyz") == 200, "nginx", proc, log)
        yield bal
    finally:
        _stop(proc, signal.SIGQUIT)  # graceful: workers finish, then the master exits


def all_ready(bal: Balancer, count: int) -> bool:
    """Whether ``count`` consecutive /readyz through the balancer all succeed (HAProxy marks
    a server up only after its first health checks)."""
    return all(http_status(f"{bal.base}/readyz") == 200 for _ in range(count * 2))


# ---- a 2026-07-28 client (stdlib, real sockets) -----------------------------------------------------

V_MODERN = "2026-07-28"
TASKS_EXT = "io.modelcontextprotocol/tasks"
MODERN_CAPS = {"elicitation": {}, "sampling": {}, "extensions": {TASKS_EXT: {}}}
NAME_FIELDS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
               "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}


def modern_message(method: str, params: dict[str, Any] | None = None, rid: Any = 1,
                   caps: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request and the headers that go with it."""
    params = dict(params or {})
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": V_MODERN,
                       "io.modelcontextprotocol/clientCapabilities": MODERN_CAPS if caps is None else caps}
    headers = {"MCP-Protocol-Version": V_MODERN, "Mcp-Method": method}
    field = NAME_FIELDS.get(method)
    if field is not None and type(params.get(field)) is str:
        headers["Mcp-Name"] = params[field]
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, headers


class Modern:
    """A keep-alive connection speaking 2026-07-28 to one URL."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        from httpclient import HttpMcp
        self.http = HttpMcp(url, timeout=timeout)

    def __enter__(self) -> "Modern":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()

    def reply(self, method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> dict[str, Any]:
        """The JSON-RPC reply message (result or error)."""
        msg, headers = modern_message(method, params, rid)
        reply = self.http.post(msg, headers, session=False)
        final = [m for m in reply.messages() if m.get("id") == rid]
        assert len(final) == 1, (reply.status, reply.body[:500])
        return final[0]

    def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.reply(method, params)
        assert "result" in reply, reply
        return reply["result"]


class SseStream:
    """A long-lived SSE response (a 2026-07-28 ``subscriptions/listen`` or a session's GET
    stream) read on its own thread; ``got`` collects the JSON-RPC messages."""

    def __init__(self, url: str, method: str, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
        import http.client
        import json
        import threading
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.conn.request(method, parts.path, body=None if body is None else json.dumps(body).encode(),
                          headers={**headers, "Accept": "application/json, text/event-stream",
                                   **({} if body is None else {"Content-Type": "application/json"})})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.cond = threading.Condition()  # guards `got` and `ended`; notified by the reader
        self.got: list[dict[str, Any]] = []
        self.ended = False
        self.thread = threading.Thread(target=self._read, name="test-sse-reader")
        self.thread.start()

    @classmethod
    def listen(cls, url: str, notifications: dict[str, Any]) -> "SseStream":
        msg, headers = modern_message("subscriptions/listen", {"notifications": notifications}, rid="L")
        return cls(url, "POST", msg, headers)

    @classmethod
    def session_stream(cls, url: str, session_id: str, version: str) -> "SseStream":
        return cls(url, "GET", None, {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": version})

    def _read(self) -> None:
        import json
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:") and line[5:].strip():
                    with self.cond:
                        self.got.append(json.loads(line[5:]))
                        self.cond.notify_all()
        except (OSError, ValueError):
            pass  # closed by stop()
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def wait_for(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for msg in self.got:
                    if pred(msg):
                        return msg
                left = deadline - time.monotonic()
                assert left > 0 and not self.ended, self.got
                self.cond.wait(left)

    def wait_method(self, method: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_for(lambda m: m.get("method") == method, timeout)

    def stop(self) -> None:
        import socket as _socket
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(10)
        self.conn.close()
        assert not self.thread.is_alive()
