"""Where a client connects and how long it waits: ``Endpoint`` (a transport and its
address: a command to spawn, or a URL with headers) and its ``Timeouts``. The hub's
upstream configuration is an ``Endpoint`` with the hub's own settings added."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

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
    ``AUTO`` or the one protocol revision to insist on."""

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
