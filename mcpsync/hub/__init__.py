"""The hub: many upstream MCP servers (stdio, Streamable HTTP, WebSocket, legacy SSE) served
as one, over every mcpsync transport. ``python -m mcpsync hub CONFIG.json`` runs it.

    from mcpsync.hub import Hub, load_config
    hub = Hub(load_config("servers.json"), config_path="servers.json").start()
    serve(hub.server)   # then hub.close()

This package never imports ``mcpsync.http``, ``mcpsync.streams`` (or werkzeug): it is a client of its
upstreams and a plain ``Server`` to its clients; ``/healthz`` and the CLI live above it.
"""
from __future__ import annotations

from .config import HubConfig, UpstreamConfig, load_config, parse_config
from .hub import Hub, HubServer
from .upstream import Upstream, UpstreamUnavailable

__all__ = ["Hub", "HubConfig", "HubServer", "Upstream", "UpstreamConfig", "UpstreamUnavailable",
           "load_config", "parse_config"]
