"""A small version of every scenario of scripts/stress.py against `python -m mcpsync` as a
subprocess: zero broken invariants, zero failed requests. Not a timing test (the counts are
small and the deadlines generous); the negative control shows the checks catch a server
that breaks an invariant."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from typing import Iterator

import pytest
from cliserver import CliServer, mcpsync_cli

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import stress  # noqa: E402

CLIENTS = 6
REQUESTS = 120
DEADLINE_S = 20.0
STARTUP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def server() -> Iterator[CliServer]:
    with mcpsync_cli() as srv:
        yield srv


@pytest.mark.parametrize("scenario", stress.SCENARIOS)
def test_scenario_keeps_every_invariant(server: CliServer, scenario: str) -> None:
    result = stress.run_scenario(server.url, scenario, CLIENTS, REQUESTS, DEADLINE_S)
    assert result.broken == 0 and result.failed == 0, result.samples
    assert result.done > 0, result.summary()
    assert result.ok


def test_cli_prints_one_line_per_scenario_and_exits_0(server: CliServer) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "stress.py"), server.url, "parallel",
                           "--clients", "4", "--requests", "50", "--deadline", "20"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stress parallel:") and lines[0].endswith("OK"), lines


@pytest.mark.parametrize("url", ["http://example.com/mcp", "http://10.1.2.3:8000/mcp",
                                 "https://127.0.0.1/mcp"])
def test_refuses_remote_hosts_without_allow_remote(url: str) -> None:
    assert stress.main([url, "parallel"]) == 2
    with pytest.raises(ValueError):
        stress.check_target(url, allow_remote=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "[::1]"])
def test_accepts_loopback_hosts(host: str) -> None:
    stress.check_target(f"http://{host}:8000/mcp", allow_remote=False)


def test_a_server_that_keeps_deleted_sessions_is_caught() -> None:
    """Negative control: the benchmark's canned ceiling server keeps no sessions, so a deleted
    session still answers; churn must report that as broken and the CLI exit 1."""
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "bench_servers" / "ceiling_server.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/mcp", proc.stdout.readline())
        assert match, "the ceiling server printed no URL"
        result = stress.run_scenario(match.group(0), "churn", 2, 10, DEADLINE_S)
        assert result.broken == 10 and not result.ok, result.summary()
        assert "still answers after DELETE" in result.samples[0]
        assert stress.main([match.group(0), "churn", "--clients", "1", "--requests", "2"]) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STARTUP_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
