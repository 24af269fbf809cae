"""An in-memory MCP client wired straight to a ServerConnection: no sockets, no threads.

Messages the server sends on the request's stream or the session stream are collected in
``received``; server -> client requests are answered by ``on_request`` callbacks (run on the
thread that sent them, like a transport's reader would).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

from mcpsync.protocol import jsonrpc
from mcpsync.server import Server


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.code = error["code"]
        self.error = error


class MemClient:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.received: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.conn = server.connect(send=self._deliver)
        self._ids = itertools.count(1)

    def _deliver(self, msg: dict[str, Any]) -> None:
        self.received.append(msg)
        if "method" in msg and "id" in msg:
            handler = self.handlers.get(msg["method"])
            if handler is not None:
                try:
                    reply = jsonrpc.response(msg["id"], handler(msg.get("params") or {}))
                except RpcError as exc:
                    reply = {"jsonrpc": "2.0", "id": msg["id"], "error": exc.error}
                self.conn.receive(reply)

    def raw(self, value: Any) -> Any:
        return self.conn.receive(value, self._deliver)

    def call(self, method: str, params: dict[str, Any] | None = None, *, rid: Any = None) -> Any:
        rid = next(self._ids) if rid is None else rid
        reply = self.raw(jsonrpc.request(rid, method, params))
        assert reply is not None, f"no reply to {method}"
        assert reply["id"] == rid and type(reply["id"]) is type(rid)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        assert self.raw(jsonrpc.notification(method, params)) is None

    def initialize(self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self.call("initialize", {"protocolVersion": version,
                                          "capabilities": capabilities or {},
                                          "clientInfo": {"name": "memclient", "version": "1"}})
        self.notify("notifications/initialized")
        return result

    def notifications(self, method: str) -> list[dict[str, Any]]:
        return [m.get("params", {}) for m in self.received if m.get("method") == method and "id" not in m]
