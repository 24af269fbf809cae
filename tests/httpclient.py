"""A small synchronous Streamable HTTP client for tests (stdlib http.client, real sockets)."""
from __future__ import annotations

import http.client
import itertools
import json
from typing import Any
from urllib.parse import urlsplit

INIT_PARAMS = {"capabilities": {}, "clientInfo": {"name": "mcpsync-tests", "version": "1"}}


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0]

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        """SSE events as dicts with id/event/data/retry (data JSON-decoded when non-empty)."""
        return parse_sse(self.body)

    def messages(self) -> list[dict[str, Any]]:
        """The JSON-RPC messages of the reply, whichever content type carried them."""
        if self.content_type == "application/json":
            value = self.json()
            return value if isinstance(value, list) else [value]
        return [e["data"] for e in self.events() if isinstance(e.get("data"), (dict, list))]


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        ev: dict[str, Any] = {}
        data_lines = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data_lines.append(value)
            else:
                ev[key] = value
        if data_lines:
            text = "\n".join(data_lines)
            ev["data"] = json.loads(text) if text.strip() else ""
        if ev:
            events.append(ev)
    return events


class HttpMcp:
    """One client (one keep-alive connection) of an MCP endpoint."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.session_id: str | None = None
        self.version: str | None = None
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "HttpMcp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, body: Any = None, headers: dict[str, str] | None = None,
                *, raw: bytes | None = None, session: bool = True) -> Reply:
        h = {"Accept": "application/json, text/event-stream"}
        if body is not None or raw is not None:
            h["Content-Type"] = "application/json"
        if session and self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        if session and self.version:
            h["MCP-Protocol-Version"] = self.version
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, self.path, body=data, headers=h)
        resp = self.conn.getresponse()
        payload = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)

    def post(self, msg: Any, headers: dict[str, str] | None = None, **kw: Any) -> Reply:
        return self.request("POST", msg, headers, **kw)

    def initialize(self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        params = dict(INIT_PARAMS, protocolVersion=version)
        if capabilities is not None:
            params["capabilities"] = capabilities
        reply = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params},
                          session=False)
        assert reply.status == 200, reply.body
        self.session_id = reply.headers["mcp-session-id"]
        result = reply.messages()[0]["result"]
        self.version = result["protocolVersion"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status == 202
        return result

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        reply = self.post(msg)
        assert reply.status == 200, (reply.status, reply.body)
        final = [m for m in reply.messages() if m.get("id") == rid]
        assert len(final) == 1, reply.body
        if "error" in final[0]:
            raise AssertionError(f"error reply: {final[0]['error']}")
        return final[0]["result"]

    def delete(self) -> Reply:
        return self.request("DELETE")
