"""The hub's configuration: the ``mcpServers`` JSON desktop clients use, plus hub settings.

Theory of operation
-------------------
``load_config(path)`` reads the file and ``parse_config(data)`` turns the JSON value into
frozen dataclasses, checking everything before anything starts: every problem is a
``ConfigError(key, reason)`` whose key is the dotted path of the offending setting
(``mcpServers.github.args[1]``). ``${VAR}`` and ``${VAR:-default}`` in string values are
expanded from the environment at load time; an unset variable without a default is an
error naming the key that used it.

Hub-wide defaults (``hub.timeouts``, ``hub.restart``, ``hub.pingInterval``) are folded into
each ``UpstreamConfig``, so two configs compare equal exactly when nothing an upstream
depends on changed: that is what a reload uses to restart only the changed upstreams.
``required`` (default true) says whether the hub's ``/readyz`` waits for the upstream.

An example::

    {
      "mcpServers": {
        "files":  {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "${HOME}"]},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"},
                   "required": false},
        "memory": {"command": "mcp-server-memory", "isolation": "per-session", "prefix": "mem",
                   "tools": {"deny": ["delete_*"]}, "timeouts": {"request": 30}}
      },
      "hub": {"separator": "__", "timeouts": {"request": 60}, "restart": {"maxDelay": 30}}
    }

Unknown keys are errors that name the key and the closest known one (``evn``: did you mean
``env``?): a typo must not pass silently. The few keys desktop clients add for their own
approval UI (``CLIENT_KEYS``) are accepted and ignored; keys of other clients' formats that
would change what runs (``envFile``, ``serverUrl``, ``disabledTools`` ...) are errors that
say what to write instead.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..client.endpoint import (AUTO, SSE, STDIO, STREAMABLE_HTTP, TRANSPORTS, WEBSOCKET,
                               Endpoint, Timeouts)
from ..errors import ConfigError
from ..protocol import versions

_TRANSPORT_ALIASES = {"stdio": STDIO, "streamable-http": STREAMABLE_HTTP, "streamableHttp": STREAMABLE_HTTP,
                      "http": STREAMABLE_HTTP, "sse": SSE, "websocket": WEBSOCKET, "ws": WEBSOCKET}

SHARED = "shared"
PER_SESSION = "per-session"
ISOLATIONS = (SHARED, PER_SESSION)

DEFAULT_HUB_NAME = "mcpsync-hub"
DEFAULT_SEPARATOR = "__"
MAX_NAME_CHARS = 64            # server names and prefixes: leaves room for the tool's own name
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
SEPARATOR_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,8}$")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Defaults, in seconds unless named otherwise.
PING_INTERVAL_S = 30.0         # idle health pings of a ready upstream (0: never)
WATCH_INTERVAL_S = 1.0         # config file mtime polling
RESTART_INITIAL_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 30.0
RESTART_FACTOR = 2.0

SERVER_KEYS = ("command", "args", "env", "cwd", "url", "headers", "type", "transport", "enabled",
               "disabled", "required", "isolation", "prefix", "revision", "timeouts", "restart",
               "pingInterval", "tools")
# Desktop clients' own keys (tool approval in their UI): accepted and ignored.
CLIENT_KEYS = ("autoApprove", "alwaysAllow", "description")
# Keys of other clients' formats that must not be dropped silently, and what to write instead.
FOREIGN_KEYS = {
    "envFile": "is not supported; put the variables in env",
    "serverUrl": "is not supported; write url",
    "httpUrl": "is not supported; write url",
    "transportType": "is not supported; write type",
    "timeout": 'is not supported; write "timeouts": {"request": SECONDS}',
    "disabledTools": 'is not supported; write "tools": {"deny": [...]}',
    "excludeTools": 'is not supported; write "tools": {"deny": [...]}',
    "includeTools": 'is not supported; write "tools": {"allow": [...]}',
}


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between attempts: ``initial_delay * factor ** (n - 1)`` seconds,
    capped at ``max_delay``; ``max_attempts`` consecutive failures (0: no limit) leave the
    upstream ``failed`` until the next reload."""

    initial_delay: float = RESTART_INITIAL_DELAY_S
    max_delay: float = RESTART_MAX_DELAY_S
    factor: float = RESTART_FACTOR
    max_attempts: int = 0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.initial_delay * self.factor ** max(0, failures - 1))


@dataclass(frozen=True)
class UpstreamConfig(Endpoint):
    """One ``mcpServers`` entry: where the upstream is (``Endpoint``) and how the hub runs it."""

    enabled: bool = True
    required: bool = True                  # /readyz waits for it
    isolation: str = SHARED
    prefix: str = ""
    allow: tuple[str, ...] | None = None   # tool-name globs; None: every tool
    deny: tuple[str, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    ping_interval: float = PING_INTERVAL_S
    separator: str = DEFAULT_SEPARATOR

    @property
    def tool_prefix(self) -> str:
        """What every hub name of this upstream starts with (``<prefix><separator>``)."""
        return f"{self.prefix}{self.separator}"

    @property
    def uri_prefix(self) -> str:
        """What every hub resource URI of this upstream starts with."""
        return f"hub://{self.prefix}/"


@dataclass(frozen=True)
class HubConfig:
    upstreams: Mapping[str, UpstreamConfig]
    name: str = DEFAULT_HUB_NAME
    separator: str = DEFAULT_SEPARATOR
    watch: bool = True
    watch_interval: float = WATCH_INTERVAL_S


def load_config(path: str, env: Mapping[str, str] | None = None) -> HubConfig:
    """Read and check the config file. Raises ``ConfigError`` naming the key and the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "the file is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line}, column {getattr(exc, 'colno', '?')})" if line else ""
        msg = getattr(exc, "msg", str(exc))
        raise ConfigError(path, f"not valid JSON{where}: {msg}") from None
    return parse_config(data, env=os.environ if env is None else env,
                        base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(data: Any, *, env: Mapping[str, str] | None = None,
                 base_dir: str | None = None) -> HubConfig:
    """Check a decoded config and build the ``HubConfig`` (see the module docstring)."""
    env = os.environ if env is None else env
    if not isinstance(data, dict):
        raise ConfigError("(root)", "the config must be a JSON object with an mcpServers object")
    hub = data.get("hub", {})
    if not isinstance(hub, dict):
        raise ConfigError("hub", "must be an object")
    _only_keys(hub, "hub", ("name", "separator", "timeouts", "restart", "pingInterval", "watch",
                            "watchInterval"))
    name = _expand(hub.get("name", DEFAULT_HUB_NAME), "hub.name", env)
    if not name.strip():
        raise ConfigError("hub.name", "must be a non-empty string")
    separator = _expand(hub.get("separator", DEFAULT_SEPARATOR), "hub.separator", env)
    if not SEPARATOR_RE.match(separator):
        raise ConfigError("hub.separator", "must be 1-8 characters of A-Z a-z 0-9 _ . -")
    timeouts = _timeouts(hub.get("timeouts", {}), "hub.timeouts", Timeouts())
    restart = _restart(hub.get("restart", {}), "hub.restart", RestartPolicy())
    ping = _seconds(hub.get("pingInterval", PING_INTERVAL_S), "hub.pingInterval", zero_ok=True)
    watch = hub.get("watch", True)
    if not isinstance(watch, bool):
        raise ConfigError("hub.watch", "must be true or false")
    watch_interval = _seconds(hub.get("watchInterval", WATCH_INTERVAL_S), "hub.watchInterval")

    servers = data.get("mcpServers")
    if servers is None:
        raise ConfigError("mcpServers", "is missing (an object of server name -> server entry)")
    if not isinstance(servers, dict):
        raise ConfigError("mcpServers", "must be an object of server name -> server entry")
    upstreams: dict[str, UpstreamConfig] = {}
    for sname, entry in servers.items():
        upstreams[sname] = _upstream(sname, entry, env=env, base_dir=base_dir, separator=separator,
                                     timeouts=timeouts, restart=restart, ping=ping)
    _check_prefixes(upstreams, separator)
    return HubConfig(upstreams=upstreams, name=name, separator=separator, watch=watch,
                     watch_interval=watch_interval)


# ---- one server entry ----------------------------------------------------------------------------

def _upstream(name: str, entry: Any, *, env: Mapping[str, str], base_dir: str | None,
              separator: str, timeouts: Timeouts, restart: RestartPolicy,
              ping: float) -> UpstreamConfig:
    key = f"mcpServers.{name}"
    _check_name(name, key, separator)
    if not isinstance(entry, dict):
        raise ConfigError(key, "must be an object with a command (stdio) or a url")
    for k in entry:
        if k in FOREIGN_KEYS:
            raise ConfigError(f"{key}.{k}", FOREIGN_KEYS[k])
        if k not in SERVER_KEYS and k not in CLIENT_KEYS:
            _unknown(entry, key, SERVER_KEYS, k)
    declared = entry.get("type", entry.get("transport"))
    tkey = f"{key}.type" if "type" in entry else f"{key}.transport"
    if "type" in entry and "transport" in entry and entry["type"] != entry["transport"]:
        raise ConfigError(f"{key}.transport", f"contradicts {key}.type")
    has_command, has_url = "command" in entry, "url" in entry
    if has_command and has_url:
        raise ConfigError(key, "has both command and url: a server is either spawned or remote")
    if not has_command and not has_url:
        raise ConfigError(key, "needs a command (a stdio server) or a url (a remote server)")
    if declared is not None:
        if not isinstance(declared, str) or declared not in _TRANSPORT_ALIASES:
            raise ConfigError(tkey, f"unknown transport {declared!r}; use one of {', '.join(TRANSPORTS)}")
        transport = _TRANSPORT_ALIASES[declared]
    else:
        transport = STDIO if has_command else ""
    enabled = _enabled(entry, key)
    required = entry.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{key}.required", "must be true or false")
    common: dict[str, Any] = dict(
        name=name, enabled=enabled, required=required, separator=separator,
        isolation=_choice(entry.get("isolation", SHARED), f"{key}.isolation", ISOLATIONS),
        prefix=_prefix(entry, key, env, separator),
        revision=_revision(entry.get("revision", AUTO), f"{key}.revision"),
        timeouts=_timeouts(entry.get("timeouts", {}), f"{key}.timeouts", timeouts),
        restart=_restart(entry.get("restart", {}), f"{key}.restart", restart),
        ping_interval=_seconds(entry.get("pingInterval", ping), f"{key}.pingInterval", zero_ok=True),
    )
    common["allow"], common["deny"] = _tool_filters(entry.get("tools", {}), f"{key}.tools")
    if has_command:
        if transport != STDIO:
            raise ConfigError(tkey, f"a server with a command speaks stdio, not {transport}")
        command = _expand(entry["command"], f"{key}.command", env)
        if not command.strip():
            raise ConfigError(f"{key}.command", "must be a non-empty string")
        args = entry.get("args", [])
        if not isinstance(args, list):
            raise ConfigError(f"{key}.args", "must be an array of strings")
        args_t = tuple(_expand(a, f"{key}.args[{i}]", env) for i, a in enumerate(args))
        envmap = _string_map(entry.get("env", {}), f"{key}.env", env)
        cwd = entry.get("cwd")
        if cwd is not None:
            cwd = _expand(cwd, f"{key}.cwd", env)
            if base_dir is not None and not os.path.isabs(cwd):
                cwd = os.path.join(base_dir, cwd)
            if not os.path.isdir(cwd):
                raise ConfigError(f"{key}.cwd", f"no such directory: {cwd}")
        return UpstreamConfig(transport=STDIO, command=command, args=args_t, env=envmap, cwd=cwd,
                              **common)
    for k in ("args", "env", "cwd"):
        if k in entry:
            raise ConfigError(f"{key}.{k}", "applies to stdio servers (with a command), not to a url")
    url = _expand(entry["url"], f"{key}.url", env)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ConfigError(f"{key}.url", f"must be an http(s):// or ws(s):// URL, not {url!r}")
    if not transport:
        transport = WEBSOCKET if parts.scheme in ("ws", "wss") else STREAMABLE_HTTP
    if transport == STDIO:
        raise ConfigError(tkey, "stdio needs a command, not a url")
    if transport == WEBSOCKET and parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"{key}.url", "a websocket server needs a ws:// or wss:// URL")
    if transport != WEBSOCKET and parts.scheme not in ("http", "https"):
        raise ConfigError(f"{key}.url", f"a {transport} server needs an http:// or https:// URL")
    headers = _string_map(entry.get("headers", {}), f"{key}.headers", env)
    for hname, hvalue in headers.items():
        if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", hname):
            raise ConfigError(f"{key}.headers", f"{hname!r} is not a valid HTTP header name")
        if "\r" in hvalue or "\n" in hvalue:
            raise ConfigError(f"{key}.headers.{hname}", "must not contain line breaks")
    return UpstreamConfig(transport=transport, url=url, headers=headers, **common)


def _check_name(name: str, key: str, separator: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or not NAME_RE.match(name):
        raise ConfigError(key, f"a server name must be 1-{MAX_NAME_CHARS} characters of "
                               "A-Z a-z 0-9 _ . - (it becomes part of tool names)")


def _prefix(entry: dict[str, Any], key: str, env: Mapping[str, str], separator: str) -> str:
    name = key.split(".", 1)[1]
    if "prefix" not in entry:
        prefix = name
        pkey = key
    else:
        pkey = f"{key}.prefix"
        prefix = _expand(entry["prefix"], pkey, env)
    if not prefix or len(prefix) > MAX_NAME_CHARS or not NAME_RE.match(prefix):
        raise ConfigError(pkey, f"a prefix must be 1-{MAX_NAME_CHARS} characters of A-Z a-z 0-9 _ . -")
    if separator in prefix:
        raise ConfigError(pkey, f"{prefix!r} contains the separator {separator!r}; set a prefix "
                                "without it (or another hub.separator)")
    return prefix


def _check_prefixes(upstreams: Mapping[str, UpstreamConfig], separator: str) -> None:
    """No upstream's names may fall under another's prefix: each refresh replaces every name
    that starts with ``<prefix><separator>``, so overlapping prefixes would wipe each other."""
    seen: list[UpstreamConfig] = []
    for up in upstreams.values():
        for other in seen:
            a, b = up.tool_prefix, other.tool_prefix
            if a.startswith(b) or b.startswith(a):
                key = f"mcpServers.{up.name}.prefix" if up.prefix != up.name else f"mcpServers.{up.name}"
                raise ConfigError(key, f"the prefix {up.prefix!r} overlaps {other.prefix!r} of "
                                       f"server {other.name!r}: names {a}... and {b}... would collide")
        seen.append(up)


def _enabled(entry: dict[str, Any], key: str) -> bool:
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{key}.enabled", "must be true or false")
    if "disabled" in entry:
        disabled = entry["disabled"]
        if not isinstance(disabled, bool):
            raise ConfigError(f"{key}.disabled", "must be true or false")
        if "enabled" in entry and enabled == disabled:
            raise ConfigError(f"{key}.disabled", f"contradicts {key}.enabled")
        enabled = not disabled
    return enabled


def _tool_filters(value: Any, key: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError(key, 'must be an object like {"allow": [...], "deny": [...]}')
    _only_keys(value, key, ("allow", "deny"))
    out: list[tuple[str, ...] | None] = []
    for which in ("allow", "deny"):
        if which not in value:
            out.append(None)
            continue
        items = value[which]
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(f"{key}.{which}", "must be an array of tool names or glob patterns")
        out.append(tuple(items))
    return out[0], out[1] or ()


def _revision(value: Any, key: str) -> str:
    if value == AUTO:
        return AUTO
    if not isinstance(value, str) or value not in versions.FEATURES:
        supported = ", ".join([AUTO, *versions.MODERN_VERSIONS, *reversed(versions.HANDSHAKE_VERSIONS)])
        raise ConfigError(key, f"unknown protocol revision {value!r}; use one of {supported}")
    return value


def _timeouts(value: Any, key: str, base: Timeouts) -> Timeouts:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be an object of seconds: request, connect, probe, shutdown")
    _only_keys(value, key, ("request", "connect", "probe", "shutdown"))
    return Timeouts(**{k: _seconds(value.get(k, getattr(base, k)), f"{key}.{k}")
                       for k in ("request", "connect", "probe", "shutdown")})


def _restart(value: Any, key: str, base: RestartPolicy) -> RestartPolicy:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be an object: initialDelay, maxDelay (seconds), factor, maxAttempts")
    _only_keys(value, key, ("initialDelay", "maxDelay", "factor", "maxAttempts"))
    initial = _seconds(value.get("initialDelay", base.initial_delay), f"{key}.initialDelay", zero_ok=True)
    maximum = _seconds(value.get("maxDelay", base.max_delay), f"{key}.maxDelay", zero_ok=True)
    if maximum < initial:
        raise ConfigError(f"{key}.maxDelay", "must not be smaller than initialDelay")
    factor = value.get("factor", base.factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 10:
        raise ConfigError(f"{key}.factor", "must be a number from 1 to 10")
    attempts = value.get("maxAttempts", base.max_attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ConfigError(f"{key}.maxAttempts", "must be a whole number >= 0 (0: retry forever)")
    return RestartPolicy(float(initial), float(maximum), float(factor), attempts)


# ---- values --------------------------------------------------------------------------------------

def _only_keys(value: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    for k in value:
        if k not in allowed:
            _unknown(value, key, allowed, k)


def _unknown(value: dict[str, Any], key: str, allowed: tuple[str, ...], k: Any) -> None:
    """Raise the error for the unknown setting ``k`` of ``value``: the closest known name
    that is not set already, else the list."""
    close = [c for c in difflib.get_close_matches(str(k), allowed, n=3, cutoff=0.6) if c not in value]
    if close:
        raise ConfigError(f"{key}.{k}", f"unknown setting; did you mean {close[0]!r}?")
    raise ConfigError(f"{key}.{k}", f"unknown setting; expected one of {', '.join(allowed)}")


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _seconds(value: Any, key: str, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(key, "must be a number of seconds")
    if value < 0 or (value == 0 and not zero_ok) or value > 86_400:
        raise ConfigError(key, f"must be {'>= 0' if zero_ok else '> 0'} and at most 86400 seconds")
    return float(value)


def _string_map(value: Any, key: str, env: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be an object of strings")
    return {k: _expand(v, f"{key}.{k}", env) for k, v in value.items()}


def _expand(value: Any, key: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from ``env`` (the default also when VAR is empty)."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, not {type(value).__name__}")
    if "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        body = m.group(1)
        var, sep, default = body.partition(":-")
        if not _VAR_NAME_RE.match(var):
            raise ConfigError(key, f"${{{body}}} is not a valid variable reference "
                                   "(use ${VAR} or ${VAR:-default})")
        got = env.get(var)
        if got:
            return got
        if sep:
            return default
        if got is not None:
            return got
        raise ConfigError(key, f"environment variable {var} is not set (write ${{{var}:-default}} "
                               "for a fallback)")
    out = _VAR_RE.sub(sub, value)
    if "${" in _VAR_RE.sub("", value):
        raise ConfigError(key, "has an unterminated ${ (use ${VAR} or ${VAR:-default})")
    return out
