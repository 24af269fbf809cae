"""One client's protocol state: ``ServerConnection`` (one per session, or one per modern-era
request).

Theory of operation
-------------------
A transport decodes bytes into JSON values and calls ``conn.receive(value, sink)`` on the
worker thread that read them. ``receive`` returns the reply to write back (a response
dict, a list for a batch, or None) and never writes itself; messages *related to* a request
that appear while it runs (progress, log messages, sampling/elicitation/roots requests) go
to ``sink``, the request's own stream. Messages not tied to a request (list_changed,
resources/updated) go to ``conn.send``, the session's stream, set by the transport.

A request runs on the caller's thread, holding no lock. Its ``Context`` is registered in
``_inflight`` so ``notifications/cancelled`` can find it: cancelling sets a flag, fails
the outgoing requests the call is blocked on, and suppresses its response.

Outgoing requests (server -> client) get ids from a per-session counter; the caller blocks
on a ``PendingRequest`` until the client's response arrives through ``receive`` on another
thread, or the timeout passes (then the client is sent ``notifications/cancelled``).

``ServerConnection.lock`` guards the mutable session state: phase, negotiated version,
client capabilities, log level, subscriptions, ``_inflight``, ``_pending`` and the id
counter, and the cancellation state of each in-flight ``Context`` (``_cancelled``,
``_stopped``, ``_cancel_event``, ``_on_cancel``, ``_pending_ids``). Besides the session's
own workers it is taken by broadcasters (``is_subscribed``), by tasks and time limits
(``cancel_call``), by the shutdown timer (an abort cancels) and by any thread that cancels
or wakes a call. Critical sections are a few dict operations; no I/O or callback runs
under it, and no other lock is taken under it.

The connection knows its server only as a ``SessionHost`` (``core.host``): the method table,
the initialize result, sealing, and one call when the session ends.
"""
from __future__ import annotations

import itertools
import logging
import threading
from types import MappingProxyType
from typing import Any, Callable

from .. import telemetry
from ..errors import (Cancelled, ConnectionClosed, InvalidParams, InvalidRequest, McpError,
                      MethodNotFound, PeerError, RequestTimeout)
from ..protocol import jsonrpc, lifecycle, modern, runner, versions
from ..protocol.modern import InputRequired
from ..sync import may_block
from .context import LEVEL_RANK, LOG_LEVELS, Context, PendingRequest, Sink
from .host import SessionHost

log = logging.getLogger("mcpsync.connection")

CLIENT_REQUEST_TIMEOUT_S = 120.0
MAX_BATCH = 100  # messages in one JSON-RPC batch (2025-03-26 sessions only)


def _drop(_msg: dict[str, Any]) -> None:
    """Session stream of a connection that has none open: server-initiated messages are dropped."""


def _run_cancel_callbacks(callbacks: list[Callable[[], None]], request_id: Any) -> None:
    """Run a cancelled request's ``on_cancel`` callbacks (no lock held; one failing does not
    stop the others)."""
    if not callbacks:
        return
    with may_block():  # callbacks may block (the hub tells its upstream)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("cancellation callback of request %r failed", request_id)


class ServerConnection:
    """The protocol state machine of one session, driven by a transport.

    ``send`` is the session's stream for messages not tied to a request; transports set it
    (stdio and WebSocket: the connection's writer; HTTP: the GET stream's outbox).
    """

    transport = "http"  # what carries it (telemetry): a MessageStream sets stdio, ws or sse
    client_address: str | None = None  # the peer's address when it has one (telemetry)

    def __init__(self, host: SessionHost, *, session_id: str | None = None,
                 send: Sink | None = None,
                 request_timeout_s: float = CLIENT_REQUEST_TIMEOUT_S) -> None:
        self.host = host
        self.session_id = session_id
        self.send: Sink = send or _drop
        self.request_timeout_s = request_timeout_s
        # Guards the session state below (and each in-flight Context's cancellation state);
        # never held across I/O or a handler call.
        self.lock = threading.Lock()
        self.phase = lifecycle.NEW
        self.version: str | None = None
        self.client_capabilities: dict[str, Any] = {}
        self.client_info: dict[str, Any] = {}
        self.log_level: str | None = None
        self.subscriptions: set[str] = set()
        self._inflight: dict[Any, Context] = {}
        self._pending: dict[int, PendingRequest] = {}
        self._ids = itertools.count(1)
        self.closed = False

    # ---- entry point ---------------------------------------------------------------------------

    def receive(self, value: Any, sink: Sink | None = None) -> Any:
        """Handle one decoded JSON value (message or batch). Returns the reply to send (a dict,
        a list of dicts for a batch, or None when there is nothing to answer)."""
        sink = sink or self.send
        if type(value) is list:
            return self._receive_batch(value, sink)
        return self._receive_one(value, sink)

    def _receive_one(self, msg: Any, sink: Sink) -> dict[str, Any] | None:
        try:
            kind = jsonrpc.classify(msg)
        except McpError as exc:
            return jsonrpc.error_response(jsonrpc.readable_id(msg), exc)
        if kind == jsonrpc.REQUEST:
            return self.handle_request(msg, sink)
        if kind == jsonrpc.NOTIFICATION:
            self.handle_notification(msg)
            return None
        self.handle_response(msg, kind)
        return None

    def _receive_batch(self, batch: list[Any], sink: Sink) -> Any:
        with self.lock:
            version = self.version
        if not versions.features(version).batching:
            return jsonrpc.error_response(None, InvalidRequest(
                "Invalid Request: JSON-RPC batches are not supported in this protocol revision"))
        if not batch:
            return jsonrpc.error_response(None, InvalidRequest("Invalid Request: empty batch"))
        if len(batch) > MAX_BATCH:
            return jsonrpc.error_response(None, InvalidRequest(
                f"Invalid Request: a batch may hold at most {MAX_BATCH} messages"))
        replies = []
        for msg in batch:
            if type(msg) is dict and msg.get("method") == "initialize":
                reply: Any = jsonrpc.error_response(jsonrpc.readable_id(msg), InvalidRequest(
                    "Invalid Request: initialize must not be part of a batch"))
            else:
                reply = self._receive_one(msg, sink)
            if reply is not None:
                replies.append(reply)
        return replies or None

    # ---- requests --------------------------------------------------------------------------------

    def handle_request(self, msg: dict[str, Any], sink: Sink, *, principal: str | None = None,
                       envelope: modern.Envelope | None = None) -> dict[str, Any] | None:
        """Run one request on this thread, in either era; None when it was cancelled (no
        response is sent). A modern-era request (``modern.is_modern_request``) brings its
        version and capabilities in ``_meta`` instead of reading this session's; its result
        is decorated, and input from the client is a multi round-trip (``input_required``).
        ``principal`` (modern era) binds its sealed ``requestState``; ``envelope``: the modern
        request's, when the transport has checked it already (HTTP, with the headers)."""
        rid = msg["id"]
        method = msg["method"]
        params = msg.get("params")
        if type(params) is not dict:
            params = {}
        env = envelope
        if env is not None or modern.is_modern_request(method, params):
            try:
                if env is None:
                    env = modern.request_envelope(params)
                if method not in modern.MODERN_METHODS:
                    raise MethodNotFound(f"Method not found: {method}")
            except McpError as exc:
                tel = telemetry.ACTIVE
                if tel is not None and tel.recording():
                    tel.refused(self.host, msg, exc.code, exc.message, self.transport, self.client_address)
                return jsonrpc.error_response(rid, exc)
        with self.lock:
            phase = self.phase
            duplicate = rid in self._inflight
            if not duplicate:
                ctx = Context(self, rid, method, params, sink)
                self._inflight[rid] = ctx
        if duplicate:
            return jsonrpc.error_response(rid, InvalidRequest(
                "Invalid Request: a request with this id is already in progress"))
        if env is not None:
            ctx.modern = True
            ctx.version = env.version
            ctx.client_capabilities = env.capabilities
            ctx.log_level = env.log_level
            ctx.principal = principal
        tel = telemetry.ACTIVE  # OpenTelemetry: None when absent or off
        run = runner.run if tel is None else tel.traced_runner(ctx)
        try:
            reply = run(rid, method, lambda: self._call(ctx, phase, env is not None),
                        on_input=None if env is None else lambda need: self._input_required(ctx, need))
        finally:
            with self.lock:
                self._inflight.pop(rid, None)
                ctx._finished = True
        return None if ctx._cancelled else reply

    def _call(self, ctx: Context, phase: str, modern_era: bool) -> dict[str, Any]:
        method, params = ctx.method, ctx.params
        if not modern_era:
            lifecycle.check_request(phase, method)
            return self.host.dispatcher.handler_for(method)(params, ctx)
        handler = self.host.dispatcher.handler_for(method)
        # A first round (the usual call) carries no answers: nothing to open or check.
        if ("inputResponses" in params or "requestState" in params) and method in modern.MRTR_METHODS:
            ctx.input_responses = self.host.mrtr_answers(method, params, ctx.principal)
        return modern.decorate_result(method, handler(params, ctx), self.host.server_meta(ctx.version))

    def _input_required(self, ctx: Context, need: InputRequired) -> dict[str, Any]:
        """The modern era's answer to a handler that needs the client's input: the missing
        requests, and the answers so far sealed for the retry."""
        return modern.decorate_result(ctx.method, {
            "resultType": modern.INPUT_REQUIRED,
            "inputRequests": need.requests,
            "requestState": self.host.mrtr_state(ctx.method, ctx.params, ctx._used or {}, ctx.principal),
        }, self.host.server_meta(ctx.version))

    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        """The ``initialize`` request: negotiate, record the client, move to INITIALIZING."""
        if not isinstance(params.get("capabilities", {}), dict):
            raise InvalidParams("Invalid params: capabilities must be an object")
        version = versions.negotiate(params.get("protocolVersion"))
        with self.lock:
            if self.phase != lifecycle.NEW:
                raise InvalidRequest("Invalid Request: the session is already initialized")
            self.phase = lifecycle.next_phase(self.phase, "initialize")
            self.version = version
            self.client_capabilities = params.get("capabilities") or {}
            info = params.get("clientInfo")
            self.client_info = info if isinstance(info, dict) else {}
        return self.host.initialize_result(version)

    def set_log_level(self, level: Any) -> None:
        if level not in LEVEL_RANK:
            raise InvalidParams(f"Invalid params: unknown log level {level!r}",
                                {"levels": list(LOG_LEVELS)})
        with self.lock:
            self.log_level = level
            for ctx in self._inflight.values():  # running calls log at the new level from now on
                if not ctx.modern:
                    ctx.log_level = level

    def subscribe(self, uri: str, on: bool) -> None:
        with self.lock:
            if on:
                self.subscriptions.add(uri)
            else:
                self.subscriptions.discard(uri)

    def is_subscribed(self, uri: str) -> bool:
        with self.lock:
            return uri in self.subscriptions

    # ---- notifications ---------------------------------------------------------------------------

    def handle_notification(self, msg: dict[str, Any]) -> None:
        tel = telemetry.ACTIVE  # OpenTelemetry: None when absent or off
        if tel is None or not tel.recording():
            self._notified(msg)
        else:
            tel.serve_notification(self, msg["method"], msg.get("params"), lambda: self._notified(msg))

    def _notified(self, msg: dict[str, Any]) -> None:
        method = msg["method"]
        params = msg.get("params") or {}
        if method == "notifications/initialized":
            with self.lock:
                self.phase = lifecycle.next_phase(self.phase, method)
        elif method == "notifications/cancelled":
            self.cancel(params.get("requestId"), params.get("reason"))
        elif method == "notifications/progress":
            pass  # progress on our own outgoing requests: accepted, nothing to do with it
        else:
            self.host.dispatcher.notify(msg, self)

    def cancel_call(self, ctx: Context) -> None:
        """Mark ``ctx`` cancelled so a cooperative tool stops, without suppressing the reply
        that the caller is about to send (a per-call timeout answers with an error result)."""
        with self.lock:
            ctx._stopped = True
            if ctx._cancel_event is None:
                ctx._cancel_event = threading.Event()
            event = ctx._cancel_event
            callbacks, ctx._on_cancel = ctx._on_cancel or [], None
        event.set()
        _run_cancel_callbacks(callbacks, ctx.request_id)

    def cancel(self, request_id: Any, reason: Any = None) -> bool:
        """Cancel the in-flight request ``request_id`` (no response will be sent for it).
        Unknown or finished ids and ``initialize`` are ignored, as the spec asks."""
        if not jsonrpc.is_valid_id(request_id):
            return False
        with self.lock:
            ctx = self._inflight.get(request_id)
            if ctx is None or ctx.method == "initialize":
                return False
            ctx._cancelled = True
            event = ctx._cancel_event
            pending = [self._pending.pop(i) for i in (ctx._pending_ids or ()) if i in self._pending]
            callbacks, ctx._on_cancel = ctx._on_cancel or [], None
        log.debug("request %r cancelled: %s", request_id, reason)
        if event is not None:
            event.set()
        for p in pending:
            p.settle(error=McpError("cancelled"))
        _run_cancel_callbacks(callbacks, request_id)
        return True

    # ---- server -> client requests -----------------------------------------------------------

    def request_client(self, method: str, params: dict[str, Any] | None, *,
                       call: Context | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Send ``method`` to the client and block until its response (see ``Context.request``)."""
        tel = telemetry.ACTIVE  # OpenTelemetry: None when absent or off
        if tel is None or not tel.recording():
            return self._ask(method, params, call, timeout, None)
        return tel.server_request(self, method, params, lambda traced, note_id: self._ask(
            method, traced, call, timeout, note_id))

    def _ask(self, method: str, params: dict[str, Any] | None, call: Context | None,
             timeout: float | None, note_id: Callable[[int], None] | None) -> dict[str, Any]:
        with self.lock:
            if self.closed:
                raise ConnectionClosed("the session is closed")
            if self.phase != lifecycle.READY and method != "ping":
                # Lifecycle: no server requests but ping before notifications/initialized.
                raise InvalidRequest(f"cannot send {method} before the client sent "
                                     "notifications/initialized")
            rid = next(self._ids)
            pending = PendingRequest(rid, method, call)
            self._pending[rid] = pending
            if call is not None:
                if call._cancelled:
                    del self._pending[rid]
                    raise Cancelled()
                if call._pending_ids is None:
                    call._pending_ids = []
                call._pending_ids.append(rid)
        if note_id is not None:  # (telemetry: outside the lock, as every callback)
            note_id(rid)
        out = call.sink if call is not None else self.send
        limit = self.request_timeout_s if timeout is None else timeout
        try:
            out(jsonrpc.request(rid, method, params))
            answered = pending.wait(limit)
        finally:
            with self.lock:
                self._pending.pop(rid, None)
                if call is not None and call._pending_ids:
                    call._pending_ids.remove(rid)
        if call is not None and call._cancelled:
            raise Cancelled()
        if not answered:
            try:
                out(jsonrpc.notification("notifications/cancelled",
                                         {"requestId": rid, "reason": "timed out"}))
            except Exception:
                log.debug("could not send the cancellation of request %d", rid)
            raise RequestTimeout(f"the client did not answer {method} within {limit:g} s")
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def handle_response(self, msg: dict[str, Any], kind: str) -> None:
        rid = msg.get("id")
        with self.lock:
            pending = self._pending.pop(rid, None) if type(rid) is int else None
        if pending is None:
            log.debug("response to an unknown request id %r ignored", rid)
            return
        if kind == jsonrpc.RESPONSE:
            result = msg["result"]
            pending.settle(result=result if isinstance(result, dict) else {"value": result})
        else:
            err = msg["error"]
            pending.settle(error=PeerError(str(err.get("message", "error")), err.get("data"),
                                           code=err["code"]))

    # ---- life ------------------------------------------------------------------------------------

    def inflight_count(self) -> int:
        with self.lock:
            return len(self._inflight)

    def close(self) -> None:
        """End the session: cancel in-flight calls, fail outgoing requests, leave the server."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            calls = list(self._inflight.values())
            pending = list(self._pending.values())
            self._pending.clear()
        for ctx in calls:
            self.cancel(ctx.request_id, "session closed")
        for p in pending:
            p.settle(error=ConnectionClosed("the session closed"))
        self.host.session_closed(self)


class RequestConnection(ServerConnection):
    """The connection of one modern-era request that has no session (Streamable HTTP in
    revision 2026-07-28): made per request, so it holds only what a request
    needs of its connection, its host, its lock and ``_inflight`` (cancellation finds the
    request there). What a session would hold is a class-level default: no phase, no
    negotiated version (the request brings its envelope), no subscriptions, no requests to
    the client (the revision asks for input with ``input_required`` instead); the
    containers are read-only, so a misuse fails loudly instead of sharing state."""

    session_id = None
    send = staticmethod(_drop)
    request_timeout_s = CLIENT_REQUEST_TIMEOUT_S
    phase = lifecycle.NEW
    version = None
    client_capabilities: dict[str, Any] = MappingProxyType({})  # type: ignore[assignment]
    client_info: dict[str, Any] = MappingProxyType({})  # type: ignore[assignment]
    log_level = None
    subscriptions: set[str] = frozenset()  # type: ignore[assignment]
    _pending: dict[int, PendingRequest] = MappingProxyType({})  # type: ignore[assignment]
    closed = False

    def __init__(self, host: SessionHost) -> None:  # noqa: the session's state is not made
        self.host = host
        # Guards _inflight and its Context's cancellation state, as a session's lock does.
        self.lock = threading.Lock()
        self._inflight: dict[Any, Context] = {}

    def request_client(self, method: str, params: dict[str, Any] | None, *,
                       call: Context | None = None, timeout: float | None = None) -> dict[str, Any]:
        raise InvalidRequest(f"cannot send {method}: a request without a session has no "
                             "server-to-client requests")

    def close(self) -> None:
        """Cancel the request if it still runs; there is no session to leave."""
        with self.lock:
            self.closed = True
            calls = list(self._inflight.values())
        for ctx in calls:
            self.cancel(ctx.request_id, "connection closed")
