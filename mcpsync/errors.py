"""Typed errors for mcpsync: a leaf module every layer may import.

Two families live here:

* ``McpError`` and its subclasses are *protocol* errors. Each carries a class-level
  JSON-RPC ``code``; the protocol core turns them into wire errors in exactly one place
  (``mcpsync.protocol.dispatch``). Raise them when the *peer* broke a rule or asked for
  something that does not exist.
* Everything else (``SessionLimitError``, ``MutexTimeout`` ...) is a *local* condition that
  a transport maps to its own status (HTTP 503, 404 ...). Bugs in mcpsync are ordinary
  exceptions and become -32603 with no traceback on the wire.
"""
from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP-specific codes.
RESOURCE_NOT_FOUND = -32002
URL_ELICITATION_REQUIRED = -32042
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Implementation-defined (JSON-RPC server-error range).
CONNECTION_CLOSED = -32000
REQUEST_TIMEOUT = -32001
OVERLOADED = -32005          # admission control refused the request (see mcpsync.admission)


class McpError(Exception):
    """A JSON-RPC error to send to the peer: ``code``, one-sentence ``message``, optional ``data``."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(McpError):
    code = PARSE_ERROR


class InvalidRequest(McpError):
    code = INVALID_REQUEST


class MethodNotFound(McpError):
    code = METHOD_NOT_FOUND


class InvalidParams(McpError):
    code = INVALID_PARAMS


class InternalError(McpError):
    code = INTERNAL_ERROR


class ResourceNotFound(McpError):
    code = RESOURCE_NOT_FOUND


class ResourceError(McpError):
    """Raised by a resource (or prompt) function: reading it failed, and this message says
    why to the client (-32603 with your message; other exceptions stay "Internal error")."""

    code = INTERNAL_ERROR


class UrlElicitationRequired(McpError):
    code = URL_ELICITATION_REQUIRED


class HeaderMismatch(McpError):
    code = HEADER_MISMATCH


class MissingClientCapability(McpError):
    code = MISSING_CLIENT_CAPABILITY


class UnsupportedProtocolVersion(McpError):
    code = UNSUPPORTED_PROTOCOL_VERSION


class RequestTimeout(McpError):
    """An outgoing request (sampling, elicitation, roots, upstream call) got no answer in time."""

    code = REQUEST_TIMEOUT


class ConnectionClosed(McpError):
    """The peer went away while a request to it was outstanding."""

    code = CONNECTION_CLOSED


class PeerError(McpError):
    """The peer answered one of *our* requests with a JSON-RPC error (code as received)."""


class ToolError(Exception):
    """Raised by a tool to report a failure as a result with ``isError: true`` (not a protocol error)."""


class Cancelled(Exception):
    """The request being served was cancelled by the client; no response is sent."""


# ---- local conditions (not JSON-RPC errors) ----

class SessionLimitError(Exception):
    """Creating a session would exceed ``max_sessions`` (``scope`` "total": HTTP 503) or the
    client's own quota (``scope`` "owner": HTTP 429)."""

    def __init__(self, message: str, scope: str = "total") -> None:
        super().__init__(message)
        self.scope = scope


class SessionNotFound(Exception):
    """No live session has that id (unknown, expired or deleted); HTTP transports answer 404."""


class MutexTimeout(Exception):
    """A ``KeyedMutex.hold`` or registry wait ran out of time."""


class DefinitionError(TypeError):
    """A function cannot be registered as it is (a parameter type with no JSON form, a
    duplicate name, a decorator used wrongly): one line naming the function and the cause."""


class ConfigError(Exception):
    """Invalid configuration; ``key`` names the offending setting."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
