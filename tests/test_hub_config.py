"""The hub's configuration: the mcpServers format, hub settings, ${VAR} expansion, and an
error naming the key for every invalid setting (the CLI exits 2 with one line)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from mcpsync.errors import ConfigError
from mcpsync.hub import load_config, parse_config
from mcpsync.hub.config import PER_SESSION, RestartPolicy

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {"HOME": "/home/ada", "TOKEN": "s3cret", "EMPTY": ""}


def parse(servers: dict[str, Any], hub: dict[str, Any] | None = None, **kw: Any) -> Any:
    data: dict[str, Any] = {"mcpServers": servers}
    if hub is not None:
        data["hub"] = hub
    return parse_config(data, env=kw.pop("env", ENV), **kw)


def test_desktop_client_entries() -> None:
    cfg = parse({
        "files": {"command": "npx", "args": ["-y", "server-filesystem", "${HOME}/work"],
                  "env": {"API_KEY": "${TOKEN}"}},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
        "vscode": {"type": "http", "url": "http://127.0.0.1:9000/mcp"},
        "legacy": {"transport": "sse", "url": "http://127.0.0.1:9000/sse"},
        "sock": {"url": "ws://127.0.0.1:9000/ws"},
        "off": {"command": "x", "disabled": True, "autoApprove": ["y"]},
    })
    files = cfg.upstreams["files"]
    assert (files.transport, files.command, files.args) == ("stdio", "npx", ("-y", "server-filesystem", "/home/ada/work"))
    assert files.env == {"API_KEY": "s3cret"} and files.enabled and files.isolation == "shared"
    assert files.tool_prefix == "files__" and files.uri_prefix == "hub://files/"
    remote = cfg.upstreams["remote"]
    assert (remote.transport, remote.headers) == ("streamable-http", {"Authorization": "Bearer s3cret"})
    assert cfg.upstreams["vscode"].transport == "streamable-http"
    assert cfg.upstreams["legacy"].transport == "sse"
    assert cfg.upstreams["sock"].transport == "websocket"
    assert cfg.upstreams["off"].enabled is False


def test_hub_settings_fold_into_each_upstream() -> None:
    cfg = parse({"a": {"command": "a"},
                 "b": {"command": "b", "timeouts": {"request": 5}, "restart": {"maxAttempts": 3},
                       "isolation": "per-session", "prefix": "bee", "tools": {"allow": ["get_*"], "deny": ["get_secret"]},
                       "revision": "2025-06-18"}},
                hub={"separator": ".", "timeouts": {"request": 20, "connect": 4}, "restart": {"initialDelay": 1, "maxDelay": 8},
                     "pingInterval": 0, "watch": False, "name": "my-hub"})
    a, b = cfg.upstreams["a"], cfg.upstreams["b"]
    assert cfg.name == "my-hub" and cfg.separator == "." and cfg.watch is False
    assert (a.timeouts.request, a.timeouts.connect, a.ping_interval) == (20, 4, 0)
    assert (b.timeouts.request, b.timeouts.connect) == (5, 4)
    assert b.restart == RestartPolicy(1.0, 8.0, 2.0, 3)
    assert [b.restart.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert b.isolation == PER_SESSION and b.tool_prefix == "bee." and b.revision == "2025-06-18"
    assert (b.allow, b.deny) == (("get_*",), ("get_secret",))


def test_expansion_defaults_and_equality() -> None:
    cfg = parse({"a": {"command": "${NOPE:-python}", "args": ["${EMPTY:-fallback}", "${EMPTY}", "$plain", "${HOME}${HOME}"]}})
    a = cfg.upstreams["a"]
    assert a.command == "python" and a.args == ("fallback", "", "$plain", "/home/ada/home/ada")
    # Equal configs compare equal (a reload restarts only what changed).
    assert parse({"a": {"command": "x"}}).upstreams["a"] == parse({"a": {"command": "x"}}).upstreams["a"]
    assert parse({"a": {"command": "x"}}).upstreams["a"] != parse({"a": {"command": "x", "args": ["1"]}}).upstreams["a"]


def test_relative_cwd_is_resolved_against_the_config_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "srv").mkdir()
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"mcpServers": {"a": {"command": "x", "cwd": "srv"}}}))
    assert load_config(str(path)).upstreams["a"].cwd == str(tmp_path / "srv")


BAD: list[tuple[Any, str]] = [
    ([], "(root)"),
    ({}, "mcpServers"),
    ({"mcpServers": []}, "mcpServers"),
    ({"mcpServers": {"a": "npx"}}, "mcpServers.a"),
    ({"mcpServers": {"a": {}}}, "mcpServers.a"),
    ({"mcpServers": {"a b": {"command": "x"}}}, "mcpServers.a b"),
    ({"mcpServers": {"x" * 65: {"command": "x"}}}, "mcpServers." + "x" * 65),
    ({"mcpServers": {"a": {"command": "x", "url": "http://h/mcp"}}}, "mcpServers.a"),
    ({"mcpServers": {"a": {"command": ""}}}, "mcpServers.a.command"),
    ({"mcpServers": {"a": {"command": 3}}}, "mcpServers.a.command"),
    ({"mcpServers": {"a": {"command": "x", "args": "-v"}}}, "mcpServers.a.args"),
    ({"mcpServers": {"a": {"command": "x", "args": ["ok", 1]}}}, "mcpServers.a.args[1]"),
    ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, "mcpServers.a.env.K"),
    ({"mcpServers": {"a": {"command": "x", "env": []}}}, "mcpServers.a.env"),
    ({"mcpServers": {"a": {"command": "x", "cwd": "/no/such/dir"}}}, "mcpServers.a.cwd"),
    ({"mcpServers": {"a": {"command": "x", "type": "http"}}}, "mcpServers.a.type"),
    ({"mcpServers": {"a": {"command": "x", "type": "carrier-pigeon"}}}, "mcpServers.a.type"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "type": "sse", "transport": "websocket"}}}, "mcpServers.a.transport"),
    ({"mcpServers": {"a": {"url": "ftp://h/x"}}}, "mcpServers.a.url"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "type": "websocket"}}}, "mcpServers.a.url"),
    ({"mcpServers": {"a": {"url": "ws://h/ws", "type": "sse"}}}, "mcpServers.a.url"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "type": "stdio"}}}, "mcpServers.a.type"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "args": []}}}, "mcpServers.a.args"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "headers": {"Bad Name": "v"}}}}, "mcpServers.a.headers"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "headers": {"X": "a\r\nb"}}}}, "mcpServers.a.headers.X"),
    ({"mcpServers": {"a": {"command": "x", "enabled": "yes"}}}, "mcpServers.a.enabled"),
    ({"mcpServers": {"a": {"command": "x", "required": "yes"}}}, "mcpServers.a.required"),
    ({"mcpServers": {"a": {"command": "x", "evn": {"K": "v"}}}}, "mcpServers.a.evn"),
    ({"mcpServers": {"a": {"command": "x", "envFile": ".env"}}}, "mcpServers.a.envFile"),
    ({"mcpServers": {"a": {"url": "http://h/mcp", "disabledTools": ["x"]}}}, "mcpServers.a.disabledTools"),
    ({"mcpServers": {"a": {"command": "x", "zzz": 1}}}, "mcpServers.a.zzz"),
    ({"mcpServers": {"a": {"command": "x", "enabled": True, "disabled": True}}}, "mcpServers.a.disabled"),
    ({"mcpServers": {"a": {"command": "x", "isolation": "per-user"}}}, "mcpServers.a.isolation"),
    ({"mcpServers": {"a": {"command": "x", "revision": "2099-01-01"}}}, "mcpServers.a.revision"),
    ({"mcpServers": {"a": {"command": "x", "prefix": "has space"}}}, "mcpServers.a.prefix"),
    ({"mcpServers": {"a": {"command": "x", "prefix": "a__b"}}}, "mcpServers.a.prefix"),
    ({"mcpServers": {"a__b": {"command": "x"}}}, "mcpServers.a__b"),
    ({"mcpServers": {"a": {"command": "x"}, "b": {"command": "x", "prefix": "a"}}}, "mcpServers.b.prefix"),
    ({"mcpServers": {"a": {"command": "x"}, "a_": {"command": "x"}}}, "mcpServers.a_"),
    ({"mcpServers": {"a": {"command": "x", "tools": ["read"]}}}, "mcpServers.a.tools"),
    ({"mcpServers": {"a": {"command": "x", "tools": {"allow": "read"}}}}, "mcpServers.a.tools.allow"),
    ({"mcpServers": {"a": {"command": "x", "tools": {"only": []}}}}, "mcpServers.a.tools.only"),
    ({"mcpServers": {"a": {"command": "x", "timeouts": {"request": 0}}}}, "mcpServers.a.timeouts.request"),
    ({"mcpServers": {"a": {"command": "x", "timeouts": {"request": "5s"}}}}, "mcpServers.a.timeouts.request"),
    ({"mcpServers": {"a": {"command": "x", "timeouts": {"reqest": 5}}}}, "mcpServers.a.timeouts.reqest"),
    ({"mcpServers": {"a": {"command": "x", "restart": {"factor": 0.5}}}}, "mcpServers.a.restart.factor"),
    ({"mcpServers": {"a": {"command": "x", "restart": {"maxAttempts": -1}}}}, "mcpServers.a.restart.maxAttempts"),
    ({"mcpServers": {"a": {"command": "x", "restart": {"initialDelay": 5, "maxDelay": 1}}}}, "mcpServers.a.restart.maxDelay"),
    ({"mcpServers": {"a": {"command": "x", "pingInterval": -1}}}, "mcpServers.a.pingInterval"),
    ({"mcpServers": {"a": {"command": "${UNSET_VAR}"}}}, "mcpServers.a.command"),
    ({"mcpServers": {"a": {"command": "x", "args": ["${1BAD}"]}}}, "mcpServers.a.args[0]"),
    ({"mcpServers": {"a": {"command": "x", "env": {"K": "${OPEN"}}}}, "mcpServers.a.env.K"),
    ({"mcpServers": {}, "hub": []}, "hub"),
    ({"mcpServers": {}, "hub": {"separater": "_"}}, "hub.separater"),
    ({"mcpServers": {}, "hub": {"separator": ""}}, "hub.separator"),
    ({"mcpServers": {}, "hub": {"separator": "::"}}, "hub.separator"),
    ({"mcpServers": {}, "hub": {"name": " "}}, "hub.name"),
    ({"mcpServers": {}, "hub": {"watch": "always"}}, "hub.watch"),
    ({"mcpServers": {}, "hub": {"watchInterval": 0}}, "hub.watchInterval"),
    ({"mcpServers": {}, "hub": {"timeouts": {"probe": -1}}}, "hub.timeouts.probe"),
    ({"mcpServers": {}, "hub": {"restart": []}}, "hub.restart"),
]


@pytest.mark.parametrize("data,key", BAD, ids=[k for _, k in BAD])
def test_every_error_names_its_key(data: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert info.value.key == key, info.value
    assert info.value.reason and "\n" not in info.value.reason


@pytest.mark.parametrize("entry,reason", [
    ({"command": "x", "evn": {}}, "unknown setting; did you mean 'env'?"),
    ({"command": "x", "arg": []}, "unknown setting; did you mean 'args'?"),
    ({"url": "http://h/mcp", "header": {}}, "unknown setting; did you mean 'headers'?"),
    ({"command": "x", "requird": False}, "unknown setting; did you mean 'required'?"),
    ({"command": "x", "env": {}, "evn": {}}, "unknown setting; expected one of command, args, env,"),
    ({"url": "http://h/mcp", "serverUrl": "http://h/mcp"}, "is not supported; write url"),
    ({"command": "x", "timeout": 30}, 'is not supported; write "timeouts": {"request": SECONDS}'),
])
def test_unknown_server_keys_are_named_with_the_close_match(entry: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"a": entry})
    assert info.value.reason.startswith(reason), info.value.reason


def test_required_defaults_to_true() -> None:
    cfg = parse({"a": {"command": "x"}, "b": {"command": "x", "required": False}})
    assert cfg.upstreams["a"].required is True and cfg.upstreams["b"].required is False


def test_an_unset_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"a": {"command": "x", "headers": {}, "env": {"K": "${GITHUB_TOKEN}"}}})
    assert "GITHUB_TOKEN" in info.value.reason


def test_file_errors(tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.key == missing and "cannot read" in info.value.reason
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {\n  "a": {"command": "x",}\n}}')
    with pytest.raises(ConfigError) as info:
        load_config(str(broken))
    assert info.value.key == str(broken) and "line 2" in info.value.reason


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "mcpsync", "hub", *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("content,expected", [
    ('{"mcpServers": {"a": {"url": "ftp://example.com"}}}',
     "mcpsync: config: mcpServers.a.url: must be an http(s):// or ws(s):// URL, not 'ftp://example.com'"),
    ('{"mcpServers": {"a": {"command": "${HUB_TEST_SURELY_UNSET}"}}}',
     "mcpsync: config: mcpServers.a.command: environment variable HUB_TEST_SURELY_UNSET is not set"),
    ("not json", "mcpsync: config: {path}: not valid JSON (line 1, column 1): Expecting value"),
])
def test_cli_exits_2_with_one_line_and_starts_nothing(tmp_path: pathlib.Path, content: str, expected: str) -> None:
    path = tmp_path / "hub.json"
    path.write_text(content)
    proc = _cli(str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(expected.format(path=path)), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_bad_config_spawns_no_upstream(tmp_path: pathlib.Path) -> None:
    # The valid upstream would create the marker file if anything were started.
    marker = tmp_path / "started"
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"mcpServers": {
        "good": {"command": sys.executable, "args": ["-c", f"open({str(marker)!r}, 'w')"]},
        "bad": {"command": "x", "isolation": "sometimes"}}}))
    proc = _cli(str(path))
    assert proc.returncode == 2 and "mcpServers.bad.isolation" in proc.stderr
    assert not marker.exists()
