"""Helpers for the hub tests that run ``python -m mcpsync hub`` as a real process: its stderr
read by a pump thread (so a chatty hub never blocks on a full pipe, and the log volume can
be measured), HTTP GETs of its routes, and process facts from /proc (peak RSS, CPU time,
whether a pid is gone, zombies included: orphans here may never be reaped)."""
from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from rpcutil import wait_until

REPO = pathlib.Path(__file__).resolve().parent.parent
RAW = str(pathlib.Path(__file__).resolve().parent / "hub_raw_upstream.py")
BANNER_WAIT_S = 20.0
TAIL_BYTES = 64 * 1024


def raw_entry(env: dict[str, str] | None = None, mode: str = "serve", **extra: Any) -> dict[str, Any]:
    """A stdio upstream running tests/hub_raw_upstream.py (handshake era: no probe)."""
    return {"command": sys.executable, "args": [RAW, mode], "env": dict(env or {}),
            "revision": "2025-11-25", **extra}


def banner_url(line: str) -> str | None:
    """The MCP URL if ``line`` is the CLI's serving banner."""
    if "over Streamable HTTP at " in line:
        return line.split(" at ", 1)[1].strip()
    return None


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.fixture
def kill_leftovers() -> Iterator[list[int]]:
    """pids a failing test may leave running: killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_pid(directory: pathlib.Path, role: str, timeout: float) -> int:
    path = directory / f"{role}.pid"
    assert wait_until(path.exists, timeout), f"no {role}.pid"
    return int(path.read_text())


class CliHub:
    """``python -m mcpsync hub CONFIG --port 0`` with its stderr pumped by a thread that
    counts the bytes, keeps the tail and catches the banner."""

    def __init__(self, config: dict[str, Any], tmp: pathlib.Path, *, log_level: str = "INFO") -> None:
        self.path = tmp / "hub.json"
        self.path.write_text(json.dumps(config))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "mcpsync", "hub", str(self.path), "--port", "0",
                                      "--log-level", log_level], cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Guards log_bytes, tail and url; the pump writes, the test reads.
        self._lock = threading.Lock()
        self.log_bytes = 0
        self.tail = b""
        self.url: str | None = None
        self.banner = threading.Event()
        self._pump = threading.Thread(target=self._read, name="mcpsync-test-hub-stderr", daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            url = banner_url(line.decode("utf-8", "replace"))
            with self._lock:
                self.log_bytes += len(line)
                self.tail = (self.tail + line)[-TAIL_BYTES:]
                if url is not None and self.url is None:
                    self.url = url
            if url is not None:
                self.banner.set()
        self.banner.set()

    def wait_banner(self, timeout: float = BANNER_WAIT_S) -> str:
        assert self.banner.wait(timeout), f"no banner within {timeout} s"
        with self._lock:
            assert self.url is not None, f"the hub ended without serving: {self.tail[-2000:]!r}"
            return self.url

    def logged(self) -> int:
        with self._lock:
            return self.log_bytes

    def log_tail(self) -> str:
        with self._lock:
            return self.tail.decode("utf-8", "replace")

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` on the hub: (status, decoded JSON body)."""
        parts = urlsplit(self.wait_banner())
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=BANNER_WAIT_S)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def upstream(self, name: str) -> dict[str, Any]:
        return dict(self.get("/healthz")[1]["upstreams"][name])

    def wait_upstream(self, name: str, predicate: Any, timeout: float) -> dict[str, Any]:
        """Poll /healthz until ``predicate(upstream health)`` holds; returns that health."""
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.upstream(name))
            return bool(predicate(seen))
        assert wait_until(check, timeout), seen
        return seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(BANNER_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(BANNER_WAIT_S)
        self._pump.join(BANNER_WAIT_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def __enter__(self) -> "CliHub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
