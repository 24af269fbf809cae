"""The channels a ``ClientSession`` moves messages over, one module per transport, and
``make_channel`` to pick one for an ``Endpoint``."""
from __future__ import annotations

from ..endpoint import SSE, STDIO, STREAMABLE_HTTP, WEBSOCKET, Endpoint
from ..process import Guardian
from .base import Channel, Deliver

__all__ = ["Channel", "Deliver", "make_channel"]


def make_channel(cfg: Endpoint, guardian: Guardian | None = None) -> Channel:
    """The channel for ``cfg``'s transport; stdio children are reported to ``guardian``
    so that they end with their parent (the hub, a client's process)."""
    if cfg.transport == STDIO:
        from .stdio import StdioChannel
        return StdioChannel(cfg, guardian)
    if cfg.transport in (STREAMABLE_HTTP, SSE):
        if cfg.transport == STREAMABLE_HTTP:
            from .http import HttpChannel
            return HttpChannel(cfg)
        from .legacy_sse import LegacySseChannel
        return LegacySseChannel(cfg)
    if cfg.transport == WEBSOCKET:
        from .websocket import WebSocketChannel
        return WebSocketChannel(cfg)
    raise ValueError(f"unknown transport {cfg.transport!r}")
