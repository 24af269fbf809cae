"""The OpenTelemetry semantic conventions for MCP as mcpsync applies them: the attributes
of a span or a measurement, the names it may carry, the outcome of a reply. Plain data and
functions, no OpenTelemetry import: ``telemetry`` records with them through the API.

Cardinality stays bounded whatever a client sends: a method the server does not serve is
``OTHER``, a tool or prompt name longer than ``MAX_TARGET_CHARS`` is no name, and values a
client chose are ``cut`` to ``MAX_VALUE_CHARS``.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Protocol
from urllib.parse import urlsplit

from .errors import Cancelled, PeerError, RequestTimeout


class SessionView(Protocol):
    """What telemetry reads of a ``core.connection.ServerConnection`` (named here, not
    imported: telemetry sits below the core, which calls into it)."""

    @property
    def host(self) -> Any: ...          # the Server: its method table and registry
    @property
    def session_id(self) -> str | None: ...
    @property
    def transport(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def client_address(self) -> str | None: ...


class RequestView(Protocol):
    """What telemetry reads of a ``core.context.Context``."""

    @property
    def conn(self) -> SessionView: ...
    @property
    def method(self) -> str: ...
    @property
    def params(self) -> Any: ...
    @property
    def meta(self) -> Any: ...
    @property
    def request_id(self) -> Any: ...
    @property
    def version(self) -> str | None: ...
    @property
    def _cancelled(self) -> bool: ...   # the client cancelled (no reply goes out)


#: The conventions' advice for the MCP duration histograms, in seconds.
DURATION_BUCKETS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OTHER = "_OTHER"             # mcp.method.name of a method the server does not serve
#: Notifications every server takes (its own handlers add to these)
BUILTIN_NOTIFICATIONS = frozenset({"notifications/initialized", "notifications/cancelled",
                                   "notifications/progress"})
MAX_TARGET_CHARS = 256       # a longer tool/prompt name is not a name worth recording
MAX_VALUE_CHARS = 1024       # span attributes from a client's text beyond this are cut

Outcome = tuple["str | None", "str | None", "str | None"]  # error.type, status code, message

#: network.* attributes by the transport's name: the server's (``ServerConnection.transport``)
#: and the client's (``Endpoint.transport``). mcpsync's HTTP front end speaks HTTP/1.1.
_HTTP = {"network.transport": "tcp", "network.protocol.name": "http", "network.protocol.version": "1.1"}
NETWORK: dict[str, dict[str, str]] = {
    "stdio": {"network.transport": "pipe"},
    "http": _HTTP, "sse": _HTTP, "streamable-http": _HTTP,
    "ws": {"network.transport": "tcp", "network.protocol.name": "websocket"},
    "websocket": {"network.transport": "tcp", "network.protocol.name": "websocket"},
}
RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})



def target(method: str, params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(tool or prompt name, resource URI) of a request, when it names one."""
    if method == "tools/call" or method == "prompts/get":
        name = params.get("name")
        if type(name) is str and len(name) <= MAX_TARGET_CHARS:
            return name, None
    elif method in RESOURCE_METHODS:
        uri = params.get("uri")
        if type(uri) is str:
            return None, uri
    return None, None


def target_attributes(attrs: dict[str, Any], method: str, name: str | None) -> None:
    if method == "tools/call":
        attrs["gen_ai.operation.name"] = "execute_tool"
        if name is not None:
            attrs["gen_ai.tool.name"] = name
    elif name is not None:
        attrs["gen_ai.prompt.name"] = name


def cut(text: str) -> str:
    """A value a client chose (a request id, a URI, an error message quoting it), cut to
    ``MAX_VALUE_CHARS``: spans wait in an exporter's queue."""
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def outcome(method: str, reply: Any) -> Outcome:
    """(error.type, rpc.response.status_code, status message) of a JSON-RPC reply; all None
    for a success. None as the reply: the request was cancelled and nothing is sent."""
    if reply is None:
        return "cancelled", None, "cancelled"
    error = reply.get("error")
    if error is not None:
        code = str(error.get("code"))
        return code, code, cut(str(error.get("message", "")))
    if method == "tools/call":
        result = reply.get("result")
        if type(result) is dict and result.get("isError") is True:
            return "tool_error", None, None
    return None, None, None



def failure(exc: BaseException) -> Outcome:
    """The outcome of a request of ours that raised: the peer's error code, a timeout, a
    cancellation, or the exception's type."""
    if isinstance(exc, PeerError):
        return str(exc.code), str(exc.code), exc.message
    return ("timeout" if isinstance(exc, RequestTimeout) else
            "cancelled" if isinstance(exc, Cancelled) else type(exc).__qualname__, None, str(exc))


def session_attributes(conn: SessionView,
                        method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes of a span about one of a server session's messages (no target), and
    the metric's (the same without the session id)."""
    attrs: dict[str, Any] = {"mcp.method.name": method}
    if conn.version is not None:
        attrs["mcp.protocol.version"] = conn.version
    attrs.update(NETWORK.get(conn.transport or "", ()))
    metric_attrs = dict(attrs)
    if conn.session_id is not None:
        attrs["mcp.session.id"] = conn.session_id
    if conn.client_address is not None:
        attrs["client.address"] = conn.client_address
    return attrs, metric_attrs


def client_attributes(session: Any, method: str,
                       name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A client span's attributes, and the metric's (the same without the session id)."""
    attrs: dict[str, Any] = {"mcp.method.name": method}
    target_attributes(attrs, method, name)
    cfg = session.cfg
    attrs.update(NETWORK.get(cfg.transport, ()))
    attrs.update(server_address(cfg.url))
    if session.revision is not None:
        attrs["mcp.protocol.version"] = session.revision
    metric_attrs = dict(attrs)
    sid = getattr(session.channel, "session_id", None)
    if sid is not None:
        attrs["mcp.session.id"] = sid
    return attrs, metric_attrs


@functools.lru_cache(maxsize=256)
def server_address(url: str | None) -> tuple[tuple[str, Any], ...]:
    """server.address and server.port of a client's URL (parsed once per URL)."""
    if not url:
        return ()
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:
        return ()
    return (("server.address", parts.hostname or ""), ("server.port", port))
