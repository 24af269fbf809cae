"""The README's example server really runs: it is extracted from README.md, served with
`python -m mcpsync serve demo.py --stdio`, and driven over stdio."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_readme_demo_server_runs(tmp_path: pathlib.Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(# demo\.py\n.*?)```", readme, re.S)
    assert block, "the README lost its demo.py example"
    (tmp_path / "demo.py").write_text(block.group(1), encoding="utf-8")
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 2, "b": 3}}},
        {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "notes://todo"}},
    ]
    proc = subprocess.run([sys.executable, "-m", "mcpsync", "serve", str(tmp_path / "demo.py"), "--stdio"],
                          input="".join(json.dumps(m) + "\n" for m in lines), capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    replies = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    names = {t["name"] for t in replies[2]["result"]["tools"]}
    assert names == {"echo", "add", "slow_job"}
    assert replies[3]["result"]["structuredContent"] == {"sum": 5.0}
    assert replies[4]["result"]["contents"][0]["text"] == "contents of todo"


def test_readme_hub_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpsync.hub.config import parse_config

    monkeypatch.setenv("SEARCH_TOKEN", "example-token")  # the example expands ${SEARCH_TOKEN}

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", readme, re.S)
    assert block, "the README lost its hub config example"
    config = parse_config(json.loads(block.group(1)))
    assert sorted(config.upstreams) == ["files", "legacy", "memory", "search"]
    assert not config.upstreams["legacy"].enabled
