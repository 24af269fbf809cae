"""An in-memory MCP client wired straight to a ServerConnection: no sockets, no threads of its own.

Messages the server sends on the request's stream or the session stream are collected in
``received``; server -> client requests are answered by ``handlers`` callbacks (run on the
thread that sent them, like a transport's reader would). A handler that returns None leaves
the request unanswered: the test answers it later with ``respond`` (from any thread), or
lets it time out.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable

from mcpsync.protocol import jsonrpc
from mcpsync.server import Server

WAIT_S = 5.0  # bound of every wait for a message in tests


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.code = error["code"]
        self.error = error


class MemClient:
    def __init__(self, server: Server) -> None:
        self.server = server
        # Guards `received`; notified by every delivery (server threads), waited on by tests.
        self._cond = threading.Condition()
        self.received: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}
        self.conn = server.connect(send=self._deliver)
        self._ids = itertools.count(1)

    def _deliver(self, msg: dict[str, Any]) -> None:
        with self._cond:
            self.received.append(msg)
            self._cond.notify_all()
        if "method" in msg and "id" in msg:
            handler = self.handlers.get(msg["method"])
            if handler is not None:
                try:
                    result = handler(msg.get("params") or {})
                except RpcError as exc:
                    self.conn.receive({"jsonrpc": "2.0", "id": msg["id"], "error": exc.error})
                    return
                if result is not None:
                    self.conn.receive(jsonrpc.response(msg["id"], result))

    def raw(self, value: Any) -> Any:
        """Hand one decoded message (or batch) to the server; returns its reply (or None)."""
        return self.conn.receive(value, self._deliver)

    def call(self, method: str, params: dict[str, Any] | None = None, *, rid: Any = None) -> Any:
        rid = next(self._ids) if rid is None else rid
        reply = self.raw(jsonrpc.request(rid, method, params))
        assert reply is not None, f"no reply to {method}"
        assert reply["id"] == rid and type(reply["id"]) is type(rid)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    def error(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``method`` expecting a JSON-RPC error; returns the error object."""
        try:
            result = self.call(method, params)
        except RpcError as exc:
            return exc.error
        raise AssertionError(f"{method} succeeded: {result!r}")

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        if meta is not None:
            params["_meta"] = meta
        result: dict[str, Any] = self.call("tools/call", params)
        return result

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        assert self.raw(jsonrpc.notification(method, params)) is None

    def respond(self, rid: Any, result: dict[str, Any]) -> None:
        """Answer a server -> client request (the transport would hand this to receive)."""
        assert self.raw(jsonrpc.response(rid, result)) is None

    def initialize(self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call("initialize", {"protocolVersion": version,
                                                          "capabilities": capabilities or {},
                                                          "clientInfo": {"name": "memclient", "version": "1"}})
        self.notify("notifications/initialized")
        return result

    def notifications(self, method: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m.get("params", {}) for m in self.received
                    if m.get("method") == method and "id" not in m]

    def requests(self, method: str) -> list[dict[str, Any]]:
        """The server -> client requests of ``method`` received so far (whole messages)."""
        with self._cond:
            return [m for m in self.received if m.get("method") == method and "id" in m]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = WAIT_S) -> dict[str, Any]:
        """Block until a received message satisfies ``predicate``; returns it. Raises
        AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.received:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("timed out waiting for a message from the server")
                self._cond.wait(remaining)

    def wait_request(self, method: str, timeout: float = WAIT_S) -> dict[str, Any]:
        return self.wait_for(lambda m: m.get("method") == method and "id" in m, timeout)


class CallThread(threading.Thread):
    """Runs one request on its own thread (the way a transport worker would); ``reply`` is
    the server's reply, None when none was produced."""

    def __init__(self, client: MemClient, msg: dict[str, Any]) -> None:
        super().__init__(name="test-call", daemon=True)
        self.client = client
        self.msg = msg
        self.reply: Any = None
        self.done = threading.Event()  # set when receive returned

    def run(self) -> None:
        try:
            self.reply = self.client.raw(self.msg)
        finally:
            self.done.set()

    def finish(self, timeout: float = WAIT_S) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call did not finish in time"
        return self.reply
