"""scripts/attack.py against `python -m mcpsync` as a subprocess: one test per attack.

The attacks reproduce the findings of issue 13 (``FINDINGS`` names each one's finding);
every one must PASS against this code. The server runs with two tokens (alice, bob), the
access log on and stderr in a file (tracebacks of the findings would fill a pipe nobody
reads). Negative controls show the verdicts can go both ways: a server that never reads
makes ``ws-slow-reader`` PASS; the benchmark's canned stdlib server makes the CLI exit 1.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import attack  # noqa: E402
from _attacks import ATTACKS, PASS, SKIP, Options, run_attack  # noqa: E402
from _wire import OP_TEXT, Target, encode_frame  # noqa: E402

TOKENS = "tA:alice,tB:bob"
# Limits are the server's own (64 per session, 512 in total, 10,000 sessions), so the
# counts that must exceed them stay; the rest is small.
OPTS = Options(deadline_s=60.0, metrics_requests=40)
BANNER_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0   # sessions of closed SSE streams end at the next keep-alive (15 s)

F = "issue 13 finding "
FINDINGS = {
    "ws-options-auth-bypass": F + "1",
    "auth-every-route": F + "1 (OPTIONS /ws upgrade without a token)",
    "ws-non-get-upgrade": F + "1",
    "ws-http10-upgrade": "found by attack.py: GET /ws over HTTP/1.0 upgrades (RFC 6455 4.2.1)",
    "upgrade-header-on-http-route": "found by attack.py: an Upgrade header on /mcp swallows the answer",
    "chunked-bad-size": F + "5",
    "body-cut-short": F + "5",
    "lone-surrogate-http": F + "5",
    "lone-surrogate-ws": F + "5",
    "add-overflow": F + "5",
    "metrics-label-cardinality": F + "4",
    "keepalive-half-close": F + "9",
    "oversized-body": F + "9",
    "missing-host": F + "9",
    "nul-in-header": F + "9",
    "origin-other-port": F + "9",
    "ws-inflight-per-session": F + "2",
    "ws-inflight-total": F + "2",
    "messages-inflight": F + "2",
    "ws-slow-reader": F + "3",
    "session-quota": F + "6",
}
# Judged elsewhere: log-forging needs the server's log (test below); deep-nesting-cost is a
# timing comparison, which the project keeps out of unit tests (smoke-tested below).
SEPARATE = {"log-forging", "deep-nesting-cost"}
HEAVY = {"ws-inflight-total", "ws-slow-reader", "session-quota"}


def _stop(proc: "subprocess.Popen[Any]") -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: pathlib.Path) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])


@contextlib.contextmanager
def mcpsync_server(*args: str) -> Iterator[Server]:
    """`python -m mcpsync --port 0 ARGS` with stderr in a file; stopped with SIGTERM (exit 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = pathlib.Path(tmp) / "stderr.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "mcpsync", "--port", "0", *args],
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + BANNER_TIMEOUT_S
            match = None
            while match is None and time.monotonic() < deadline and proc.poll() is None:
                match = re.search(r"http://127\.0\.0\.1:\d+/mcp", log.read_text(errors="replace"))
                if match is None:
                    threading.Event().wait(0.05)  # bounded poll of the banner
            assert match, f"no URL in the banner: {log.read_text(errors='replace')[:500]}"
            yield Server(proc, match.group(0), log)
        finally:
            _stop(proc)
        assert proc.returncode == 0, f"python -m mcpsync exited {proc.returncode} on SIGTERM"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with mcpsync_server("--auth-tokens", TOKENS, "--access-log", "--log-level", "INFO") as srv:
        yield srv


@pytest.fixture(scope="module")
def open_server() -> Iterator[Server]:
    with mcpsync_server("--log-level", "CRITICAL") as srv:
        yield srv


def _run(srv: Server, name: str, **kw: str) -> attack.Verdict:
    """One attack; an answer it could not judge raises (not an AssertionError: a failure
    must be the finding's, not a bug of the attack)."""
    verdicts = attack.run(srv.url, [name], OPTS, token=kw.get("token", "tA"),
                          token2=kw.get("token2", "tB"))
    assert len(verdicts) == 1
    if verdicts[0].details.get("error"):
        raise RuntimeError(verdicts[0].line())
    return verdicts[0]


def _param(name: str) -> object:
    marks = []
    if name in HEAVY:
        marks.append(pytest.mark.timeout(240))
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_param(n) for n in attack.attack_names() if n not in SEPARATE])
def test_attack_passes(server: Server, name: str) -> None:
    verdict = _run(server, name)
    assert verdict.status == PASS, verdict.line()


def test_every_attack_is_covered_and_names_its_finding() -> None:
    assert set(ATTACKS) == set(FINDINGS) | SEPARATE | {"http-inflight-per-session"}
    for name, spec in ATTACKS.items():
        reason = FINDINGS.get(name, "")
        if reason.startswith(F):
            assert reason.split()[3] == str(spec.finding), name


def test_log_forging_leaves_no_forged_line(server: Server) -> None:
    verdict = _run(server, "log-forging")
    assert verdict.status == SKIP and "not visible" in verdict.reason
    marker = verdict.details["marker"]
    lines = server.log.read_text(errors="replace").splitlines()
    assert any(marker in line for line in lines), "the request never reached the access log"
    forged = [line for line in lines if line.startswith(marker)]
    assert not forged, forged


def test_deep_nesting_cost_measures_both_bodies(server: Server) -> None:
    verdict = _run(server, "deep-nesting-cost")
    assert verdict.status in (PASS, "FAIL"), verdict.line()
    measured = r"'\[' → 4\d\d in \d+ ms; a flat string of that size → 4\d\d in \d+ ms"
    assert re.search(measured, verdict.reason), verdict.line()


@pytest.mark.parametrize("name", ["ws-options-auth-bypass", "auth-every-route"])
def test_auth_attacks_skip_without_auth(open_server: Server, name: str) -> None:
    verdict = _run(open_server, name, token="")
    assert verdict.status == SKIP and "without a token" in verdict.reason, verdict.line()


@pytest.mark.timeout(240)
def test_session_quota_by_client_address(open_server: Server) -> None:
    verdict = _run(open_server, "session-quota", token="")
    assert "client addresses" in verdict.reason, verdict.line()
    assert verdict.status == PASS, verdict.line()


def test_session_quota_skips_with_one_token(server: Server) -> None:
    verdict = _run(server, "session-quota", token2="")
    assert verdict.status == SKIP and "--token2" in verdict.reason, verdict.line()


class NeverReads:
    """A WebSocket peer that answers the handshake and initialize, then reads nothing: the
    backpressure a correct server applies, in its simplest form."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name="test-never-reads", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.conns.append(conn)
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        # The answer to the initialize the client is about to send; nothing is read after
        # the handshake.
        reply = {"jsonrpc": "2.0", "id": "init", "result": {"protocolVersion": "2025-11-25"}}
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
                     + encode_frame(OP_TEXT, json.dumps(reply).encode(), mask=None))

    def close(self) -> None:
        self.thread.join(10)
        for conn in self.conns:
            conn.close()
        self.listener.close()


def test_slow_reader_attack_passes_against_a_peer_that_stops_reading() -> None:
    peer = NeverReads()
    try:
        target = Target("127.0.0.1", peer.port)
        verdict = run_attack("ws-slow-reader", target, OPTS, {"ws": True, "tools": {"echo"}})
    finally:
        peer.close()
    assert verdict.status == PASS and "backpressure" in verdict.reason, verdict.line()


@contextlib.contextmanager
def ceiling_server() -> Iterator[str]:
    """The benchmark's canned stdlib server: validates nothing, so attacks FAIL on it."""
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "bench_servers" / "ceiling_server.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/mcp", proc.stdout.readline())
        assert match, "the ceiling server printed no URL"
        yield match.group(0)
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def test_cli_prints_one_verdict_per_attack_and_exits_1_on_a_failure() -> None:
    with ceiling_server() as url:
        proc = subprocess.run([sys.executable, str(SCRIPTS / "attack.py"), "--url", url, "--json",
                               "--only", "missing-host", "origin-other-port"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["name"], r["verdict"]) for r in rows] == [("missing-host", "FAIL"),
                                                         ("origin-other-port", "FAIL")], rows
    assert "→ 200" in rows[0]["reason"] and rows[0]["finding"] == 9


def test_cli_exits_0_when_nothing_fails(server: Server) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "attack.py"), "--url", server.url,
                           "--token", "tA", "--only", "http-inflight-per-session", "log-forging"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["SKIP", "log-forging:"],
                                                    ["PASS", "http-inflight-per-session:"]], lines
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("url", ["http://example.com/mcp", "http://10.1.2.3:8000/mcp"])
def test_refuses_remote_targets_without_ownership(url: str) -> None:
    assert attack.main(["--url", url]) == 2
    with pytest.raises(ValueError):
        attack.check_target(url, owned=False)
    assert attack.check_target(url, owned=True).port in (80, 8000)


@pytest.mark.parametrize("url", ["https://127.0.0.1/mcp", "ftp://127.0.0.1/"])
def test_refuses_non_http_urls(url: str) -> None:
    assert attack.main(["--url", url]) == 2


def test_unknown_attack_is_a_usage_error(server: Server) -> None:
    assert attack.main(["--url", server.url, "--only", "no-such-attack"]) == 2


def test_the_attacks_left_no_session_behind(server: Server) -> None:
    """Runs last: every attack closed its sockets and deleted its sessions (those of closed
    SSE streams end at the server's next keep-alive), and the server still serves."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    sessions = None
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        found = re.search(rb"^mcpsync_sessions (\d+)", data, re.M)
        assert found, data[:300]
        sessions = int(found.group(1))
        if sessions == 0:
            break
        threading.Event().wait(0.25)  # bounded poll
    assert sessions == 0, f"{sessions} session(s) left after the attacks"
    assert server.proc.poll() is None

