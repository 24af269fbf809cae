"""Method table and the one place where exceptions become wire errors.

Theory of operation
-------------------
A ``Dispatcher`` maps method names to handlers ``handler(params, ctx) -> result dict``
(``handler_for``). Requests are run by ``protocol.runner.run`` (called by
``core.connection``), which turns every exception raised while serving a request into a
wire error through ``wire_error``:

* ``McpError`` subclasses are the peer's fault or a deliberate protocol answer: sent as they
  are (code, message, data).
* anything else is our bug: logged with its traceback here, sent as -32603 "Internal error"
  with no detail, so nothing internal leaks to the client.

``encode_outgoing`` applies the same rule at the other end: a reply we cannot encode as JSON
is our bug, sent as -32603 for its id rather than left unanswered.

Handlers for notifications return nothing and never produce a reply; their exceptions are
logged and swallowed (JSON-RPC forbids answering a notification).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..errors import InternalError, McpError, MethodNotFound
from .jsonrpc import encode, error_response, is_valid_id

log = logging.getLogger("mcpsync.protocol")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
NotificationHandler = Callable[[dict[str, Any], Any], None]


def wire_error(exc: BaseException, method: str | None = None) -> McpError:
    """The error to send for ``exc``. Unknown exceptions are logged, never described."""
    if isinstance(exc, McpError):
        return exc
    log.error("internal error while serving %s", method or "a message", exc_info=exc)
    return InternalError("Internal error")


def encode_outgoing(msg: Any, encoder: Callable[[Any], bytes] = encode) -> bytes | None:
    """``jsonrpc.encode`` (or ``encoder``: ``modern.encode_response``) for transports. A
    response we cannot encode (a NaN or a non-JSON object in a result: our bug) is logged and
    becomes -32603 for its id, so the peer is never left waiting; any other unencodable
    message is logged and dropped (None)."""
    try:
        return encoder(msg)
    except (ValueError, TypeError) as exc:
        if type(msg) is list:
            parts = [p for p in map(encode_outgoing, msg) if p is not None]
            return b"[" + b",".join(parts) + b"]" if parts else None
        log.error("an outgoing message is not valid JSON: %s", exc)
    if type(msg) is dict and "method" not in msg and is_valid_id(msg.get("id")):
        try:
            return encode(error_response(msg["id"], InternalError("Internal error")))
        except ValueError:  # the id itself cannot be encoded: answer without it
            return encode(error_response(None, InternalError("Internal error")))
    return None


class Dispatcher:
    """Method name -> handler, for requests and for notifications.

    Built once at start-up and read-only afterwards, so workers read it without a lock.
    """

    def __init__(self) -> None:
        self.requests: dict[str, Handler] = {}
        self.notifications: dict[str, NotificationHandler] = {}

    def on_request(self, method: str, handler: Handler) -> None:
        self.requests[method] = handler

    def on_notification(self, method: str, handler: NotificationHandler) -> None:
        self.notifications[method] = handler

    def handler_for(self, method: str) -> Handler:
        try:
            return self.requests[method]
        except KeyError:
            raise MethodNotFound(f"Method not found: {method}") from None

    def notify(self, msg: dict[str, Any], ctx: Any) -> None:
        """Run one notification; unknown ones are ignored, failures logged."""
        handler = self.notifications.get(msg["method"])
        if handler is None:
            return
        try:
            handler(msg.get("params") or {}, ctx)
        except Exception as exc:
            log.warning("notification %s failed: %s", msg["method"], exc,
                        exc_info=not isinstance(exc, McpError))
