"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, pinned in
tests/js/package.json) against the bundled example server over Streamable HTTP.

All 32 server scenarios (`--suite all`, including the pending ones) must pass with no
FAILURE and no WARNING."""
from __future__ import annotations

import re
import subprocess

from jsdeps import NODE_MODULES, node22, node_env
from httpserver import serving

from mcpsync.examples.everything import server
from mcpsync.transports.wsgi import McpWsgiApp


def run_suite(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cli = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    return subprocess.run([node22(), str(cli), "server", "--url", url, *extra],
                          capture_output=True, text=True, timeout=240, env=node_env())


def test_conformance_suite_all_scenarios_pass() -> None:
    with serving(McpWsgiApp(server)) as base:
        proc = run_suite(f"{base}/mcp", "--suite", "all")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    total = re.search(r"Total: (\d+) passed, (\d+) failed", out)
    assert total is not None, out[-4000:]
    passed, failed = int(total.group(1)), int(total.group(2))
    assert failed == 0 and passed >= 46, out[-4000:]
    assert out.count("✓") >= 32, out[-4000:]  # one line per scenario, all passing


def test_conformance_sse_scenarios_have_no_warnings() -> None:
    """The SSE polling and multiple-stream scenarios report warnings per check; none allowed."""
    with serving(McpWsgiApp(server)) as base:
        for scenario in ("server-sse-polling", "server-sse-multiple-streams", "dns-rebinding-protection"):
            proc = run_suite(f"{base}/mcp", "--scenario", scenario)
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out[-3000:]
            assert re.search(r"\d+ failed, 0 warnings", out), out[-3000:]
