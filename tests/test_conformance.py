"""The official MCP conformance suite against `python -m mcpsync` over Streamable HTTP.

Two pinned versions of npm `@modelcontextprotocol/conformance` (tests/js/package.json): the
release 0.1.16 and the newest pre-release 0.2.0-alpha.12, run twice: restricted to revision
2025-11-25 (it adds the session-lifecycle scenario), and with `--requirements 2026-07-28`
(the stateless revision's 37 scored scenarios, the 3 pending ones and the 10 scenarios of
the tasks extension). Every scenario must pass, and the test reads each scenario's
checks.json: any FAILURE or WARNING fails it."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
from typing import Iterator

import pytest
from cliserver import mcpsync_cli
from jsdeps import NODE_MODULES, node22, node_env

@pytest.fixture(scope="module")
def mcpsync_url() -> Iterator[str]:
    """`python -m mcpsync` as a subprocess; it must shut down cleanly on SIGTERM."""
    with mcpsync_cli() as srv:
        yield srv.url


def run_suite(package: str, url: str, out_dir: pathlib.Path, *extra: str) -> tuple[str, list[dict]]:
    cli = NODE_MODULES / package / "dist" / "index.js"
    selection = [] if "--requirements" in extra else ["--suite", "all"]
    proc = subprocess.run([node22(), str(cli), "server", "--url", url, *selection,
                           "-o", str(out_dir), *extra],
                          capture_output=True, text=True, timeout=300, env=node_env())
    output = proc.stdout + proc.stderr
    checks = []
    for path in sorted(out_dir.glob("*/checks.json")):
        scenario = path.parent.name
        for check in json.loads(path.read_text()):
            checks.append({**check, "scenario": scenario})
    assert proc.returncode == 0, output[-4000:]
    return output, checks


def assert_clean(output: str, checks: list[dict], min_scenarios: int) -> None:
    bad = [f"{c['scenario']}: {c['status']} {c['id']}: {c.get('errorMessage') or c.get('description')}"
           for c in checks if c["status"] in ("FAILURE", "WARNING")]
    assert not bad, "\n".join(bad)
    scenarios = {c["scenario"].rsplit("-20", 1)[0] for c in checks}
    assert len(scenarios) >= min_scenarios, sorted(scenarios)
    assert sum(c["status"] == "SUCCESS" for c in checks) >= min_scenarios
    assert re.search(r"Total: \d+ passed, 0 failed", output), output[-2000:]


def test_conformance_0_1_16_all_scenarios(mcpsync_url: str, tmp_path: pathlib.Path) -> None:
    output, checks = run_suite("@modelcontextprotocol/conformance", mcpsync_url, tmp_path)
    assert_clean(output, checks, min_scenarios=32)


def test_conformance_next_prerelease_2025_11_25(mcpsync_url: str, tmp_path: pathlib.Path) -> None:
    output, checks = run_suite("conformance-next", mcpsync_url, tmp_path, "--spec-version", "2025-11-25")
    assert_clean(output, checks, min_scenarios=33)
    assert any("session-lifecycle" in c["scenario"] for c in checks)


REQUIRED_2026_07_28 = 37   # scored scenarios of the 2026-07-28 requirement set (alpha.12)
PENDING_2026_07_28 = ("json-schema-2020-12", "http-header-validation",
                      "http-custom-header-server-validation")
TASKS_SCENARIOS = ("tasks-lifecycle", "tasks-capability-negotiation", "tasks-wire-fields",
                   "tasks-request-state-removal", "tasks-mrtr-input", "tasks-request-headers",
                   "tasks-dispatch-and-envelope", "tasks-status-notifications",
                   "tasks-required-task-error", "tasks-mrtr-composition")


def test_conformance_next_requirements_2026_07_28(mcpsync_url: str, tmp_path: pathlib.Path) -> None:
    """The stateless revision in full: scored, pending and tasks-extension scenarios, each
    without a failure or a warning."""
    output, checks = run_suite("conformance-next", mcpsync_url, tmp_path, "--requirements", "2026-07-28")
    assert_clean(output, checks, min_scenarios=REQUIRED_2026_07_28 + len(PENDING_2026_07_28) + len(TASKS_SCENARIOS))
    ran = {re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", c["scenario"]).removeprefix("server-") for c in checks}
    missing = [s for s in (*PENDING_2026_07_28, *TASKS_SCENARIOS) if s not in ran]
    assert not missing, missing
    assert re.search(r"Not scored for 2026-07-28: 13 scenario\(s\) run, 0 failing", output), output[-2000:]
