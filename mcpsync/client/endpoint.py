"""Where a client connects and how long it waits: ``Endpoint`` (a transport and its
address: a command to spawn, or a URL with headers) and its ``Timeouts``. The hub's
upstream configuration is an ``Endpoint`` with the hub's own settings added;
``endpoint_for`` makes one from what a ``mcpsync.Client`` user passes (a URL or a command)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from ..protocol import versions

STDIO = "stdio"
STREAMABLE_HTTP = "streamable-http"
SSE = "sse"
WEBSOCKET = "websocket"
TRANSPORTS = (STDIO, STREAMABLE_HTTP, SSE, WEBSOCKET)
AUTO = "auto"                  # negotiate the revision: 2026-07-28 if the server has it

REQUEST_TIMEOUT_S = 60.0       # one request, from send to response
CONNECT_TIMEOUT_S = 30.0       # start (spawn or connect) and handshake
PROBE_TIMEOUT_S = 3.0          # the server/discover probe of revision 2026-07-28
SHUTDOWN_TIMEOUT_S = 5.0       # a stdio server's exit after its stdin closes, before SIGTERM


@dataclass(frozen=True)
class Timeouts:
    request: float = REQUEST_TIMEOUT_S
    connect: float = CONNECT_TIMEOUT_S
    probe: float = PROBE_TIMEOUT_S
    shutdown: float = SHUTDOWN_TIMEOUT_S


@dataclass(frozen=True)
class Endpoint:
    """One server to connect to. ``transport`` is one of ``TRANSPORTS``; stdio uses
    ``command``/``args``/``env``/``cwd``, the others ``url``/``headers``. ``revision`` is
    ``AUTO`` or the one protocol revision to insist on. ``role`` names the owner in thread
    names (``mcpsync-<role>-…``) and messages ("closed by the <role>")."""

    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    revision: str = AUTO
    timeouts: Timeouts = field(default_factory=Timeouts)
    role: str = "hub"


def endpoint_for(target: str | Sequence[str], *, transport: str | None = None,
                 revision: str = AUTO, headers: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeouts: Timeouts | None = None, role: str = "client") -> Endpoint:
    """The ``Endpoint`` of a client's target: a list of strings is a command to run over
    stdio; ``ws://``/``wss://`` is a WebSocket; an ``http(s)://`` URL whose path ends in
    ``/sse`` is the legacy HTTP+SSE transport, any other Streamable HTTP. ``transport``
    overrides the guess. Raises ``ValueError`` naming what is wrong."""
    if revision != AUTO and revision not in versions.HANDSHAKE_VERSIONS + versions.MODERN_VERSIONS:
        known = ", ".join(versions.MODERN_VERSIONS + tuple(reversed(versions.HANDSHAKE_VERSIONS)))
        raise ValueError(f"unknown protocol revision {revision!r}; expected 'auto' or one of {known}")
    if transport is not None and transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; expected one of {', '.join(TRANSPORTS)}")
    t = timeouts or Timeouts()
    if not isinstance(target, str):
        argv = list(target)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a command target must be a non-empty list of strings")
        if transport not in (None, STDIO):
            raise ValueError(f"a command list runs over stdio, not {transport}")
        return Endpoint(name=os.path.basename(argv[0]) or argv[0], transport=STDIO, command=argv[0],
                        args=tuple(argv[1:]), env=dict(env or {}), cwd=cwd, revision=revision,
                        timeouts=t, role=role)
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"target {target!r} is neither an http(s):// or ws(s):// URL nor a command "
                         "list (for stdio give a list: Client(['python', 'server.py']))")
    guess = WEBSOCKET if scheme in ("ws", "wss") else SSE if parts.path.rstrip("/").endswith("/sse") \
        else STREAMABLE_HTTP
    chosen = transport or guess
    if chosen == STDIO or (chosen == WEBSOCKET) != (scheme in ("ws", "wss")):
        raise ValueError(f"transport {chosen} does not fit the URL {target!r}")
    if chosen == SSE and revision not in (AUTO, *versions.HANDSHAKE_VERSIONS):
        raise ValueError(f"the legacy SSE transport speaks the handshake era, not {revision}")
    name = parts.hostname + (f":{parts.port}" if parts.port else "")
    return Endpoint(name=name, transport=chosen, url=target, headers=dict(headers or {}),
                    revision=revision, timeouts=t, role=role)
