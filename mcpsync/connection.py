"""One client's protocol handler: ``ServerConnection`` (one per session) and ``Context``.

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

``ServerConnection._lock`` guards the mutable session state: phase, negotiated version,
client capabilities, log level, subscriptions, ``_inflight``, ``_pending`` and the id
counter. Critical sections are a few dict operations; no I/O or callback runs under it.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import (Cancelled, ConnectionClosed, InvalidParams, InvalidRequest, McpError,
                     PeerError, RequestTimeout)
from .errors import MethodNotFound
from .protocol import jsonrpc, lifecycle, modern, versions
from .protocol.dispatch import wire_error
from .protocol.modern import BeginTask, InputRequired
from . import inputs
from .inputs import InputRequest
from .sync import may_block

if TYPE_CHECKING:
    from .server import Server
    from .tasks.runtime import TaskHandle

log = logging.getLogger("mcpsync.connection")

Sink = Callable[[dict[str, Any]], None]

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_LEVEL_RANK = {name: i for i, name in enumerate(LOG_LEVELS)}
CLIENT_REQUEST_TIMEOUT_S = 120.0
MAX_BATCH = 100  # messages in one JSON-RPC batch (2025-03-26 sessions only)


def _drop(_msg: dict[str, Any]) -> None:
    """Session stream of a connection that has none open: server-initiated messages are dropped."""


class PendingRequest:
    """A server -> client request waiting for its response (one waiter, one responder)."""

    __slots__ = ("id", "method", "call", "_done", "result", "error")

    def __init__(self, rid: int, method: str, call: "Context | None") -> None:
        self.id = rid
        self.method = method
        self.call = call
        self._done = threading.Event()  # set once, by whoever settles the request
        self.result: dict[str, Any] | None = None
        self.error: McpError | None = None

    def settle(self, result: dict[str, Any] | None = None, error: McpError | None = None) -> None:
        self.result, self.error = result, error
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


class Context:
    """What a handler or tool knows about the request it is serving, and what it may do.

    Give a tool a parameter annotated ``Context`` to receive it. Methods that talk to the
    client (``sample``, ``elicit``, ``list_roots``) block the calling worker thread only.
    """

    __slots__ = ("conn", "request_id", "method", "params", "meta", "sink", "_cancelled",
                 "_cancel_event", "_last_progress", "_pending_ids", "_finished", "version",
                 "client_capabilities", "log_level", "extra", "modern", "input_responses",
                 "_input_n", "principal", "_stopped", "_on_cancel", "task", "defer_task", "_used")

    def __init__(self, conn: "ServerConnection", request_id: Any, method: str,
                 params: dict[str, Any], sink: Sink) -> None:
        self.conn = conn
        self.request_id = request_id
        self.method = method
        self.params = params
        meta = params.get("_meta")
        self.meta: dict[str, Any] = meta if type(meta) is dict else {}
        self.sink = sink
        self._cancelled = False
        self._stopped = False  # told to stop by the server (a time limit); the reply still goes
        self._finished = False  # set once the request's response is decided; progress stops
        self._cancel_event: threading.Event | None = None
        self._last_progress: float | None = None
        self._pending_ids: list[int] | None = None
        # Per-request view of the protocol: a session's negotiated values (handshake era) or
        # the request's own _meta (stateless era).
        self.version: str | None = conn.version
        self.client_capabilities: dict[str, Any] = conn.client_capabilities
        self.log_level: str | None = conn.log_level
        self.extra: dict[str, Any] = {}
        # Stateless era: no log level means no log messages; client input arrives as
        # inputResponses (answers so far) instead of server -> client requests.
        self.modern = False
        self.input_responses: dict[str, Any] | None = None
        self._input_n = 0
        self._used: dict[str, Any] | None = None  # the answers the handler took (sealed on)
        self.principal: str | None = None
        # Tasks: the running task's handle (its thread waits for input through it), and
        # whether this call may still turn into a task at ``begin_task`` (defer_task tools).
        self.task: TaskHandle | None = None
        self.defer_task = False
        self._on_cancel: list[Callable[[], None]] | None = None

    # ---- identity --------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self.conn.session_id

    @property
    def server(self) -> "Server":
        return self.conn.server

    @property
    def progress_token(self) -> Any:
        return self.meta.get("progressToken")

    # ---- cancellation ----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the client cancelled the request or the server stopped it (time limit)."""
        return self._cancelled or self._stopped

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if the request was cancelled (tools call this in loops)."""
        if self._cancelled or self._stopped:
            raise Cancelled()

    def wait_cancelled(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds or until the request is cancelled; True if cancelled.
        Use it instead of ``time.sleep`` in tools so a cancellation ends the wait at once."""
        with self.conn._lock:
            if self._cancel_event is None:
                self._cancel_event = threading.Event()
                if self._cancelled:
                    self._cancel_event.set()
            event = self._cancel_event
        return event.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once when this request is cancelled (at once, on this thread, if
        it already is); it runs on the cancelling thread with no lock held, so it must be quick
        (the hub uses it to wake a call blocked on an upstream). Returns a function that
        unregisters it."""
        with self.conn._lock:
            fire = self._cancelled or self._stopped
            if not fire:
                if self._on_cancel is None:
                    self._on_cancel = []
                self._on_cancel.append(callback)
        if fire:
            callback()

        def remove() -> None:
            with self.conn._lock:
                if self._on_cancel is not None and callback in self._on_cancel:
                    self._on_cancel.remove(callback)
        return remove

    def close_stream(self) -> bool:
        """Ask the transport to end this request's response stream now (the client resumes
        it with ``Last-Event-ID``; SSE polling). Returns False where the transport has no
        such stream (stdio, WebSocket, JSON responses)."""
        closer = getattr(self.sink, "close_stream", None)
        if closer is None:
            return False
        closer()
        return True

    def wake(self) -> None:
        """End a ``wait_cancelled`` early without cancelling (a server-side shutdown of a
        long-lived request such as ``subscriptions/listen``)."""
        with self.conn._lock:
            if self._cancel_event is None:
                self._cancel_event = threading.Event()
            event = self._cancel_event
        event.set()

    # ---- request-scoped notifications ------------------------------------------------------

    def report_progress(self, progress: float, total: float | None = None,
                        message: str | None = None) -> bool:
        """Send ``notifications/progress`` if the request carried a progress token. Progress must
        increase; a value that does not is dropped. Returns whether anything was sent."""
        token = self.progress_token
        if token is None or self._cancelled or self._finished:
            return False
        if self._last_progress is not None and progress <= self._last_progress:
            return False
        self._last_progress = progress
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None and self.version != versions.V2024_11_05:
            params["message"] = message
        self.sink(jsonrpc.notification("notifications/progress", params))
        return True

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        """Send a ``notifications/message`` log entry to the client if ``level`` passes the
        level it set. Returns whether it was sent."""
        if level not in _LEVEL_RANK:
            raise ValueError(f"unknown log level {level!r}")
        threshold = self.log_level
        if threshold is None and self.modern:
            return False  # 2026-07-28: only requests that carry a logLevel get log messages
        if threshold is not None and _LEVEL_RANK[level] < _LEVEL_RANK[threshold]:
            return False
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        self.sink(jsonrpc.notification("notifications/message", params))
        return True

    def debug(self, data: Any, logger: str | None = None) -> bool:
        return self.log("debug", data, logger)

    def info(self, data: Any, logger: str | None = None) -> bool:
        return self.log("info", data, logger)

    def warning(self, data: Any, logger: str | None = None) -> bool:
        return self.log("warning", data, logger)

    def error(self, data: Any, logger: str | None = None) -> bool:
        return self.log("error", data, logger)

    # ---- server -> client requests ---------------------------------------------------------

    def request(self, method: str, params: dict[str, Any] | None = None, *,
                timeout: float | None = None, key: str | None = None) -> dict[str, Any]:
        """Send a request to the client on this request's stream and wait for its result.
        Raises ``RequestTimeout``, ``PeerError`` (the client answered with an error),
        ``ConnectionClosed`` or ``Cancelled``.

        One programming model for every era: in the handshake era the request goes to the
        client now (over the request's stream) and this call blocks for the answer. In the
        stateless era (2026-07-28) there are no server -> client requests: the answer is
        looked up under ``key`` (default ``input-<n>`` for the n-th request of the call)
        among the ``inputResponses`` the client sent; if it is not there yet,
        ``InputRequired`` unwinds the handler, the client gets an ``input_required``
        result, answers, and retries, and the handler runs again from the start, finding
        each earlier answer where it asked for it. So code before such a call may run more
        than once: ask for input before doing anything with side effects. In a task the
        call blocks until ``tasks/update`` brings the answer."""
        if not self.modern and self.task is None:
            return self.conn.request_client(method, params, call=self, timeout=timeout)
        req = InputRequest(method, params, "")
        name = key or self._next_key()
        return self._gather({name: req}, timeout)[name]

    def ask(self, requests: Mapping[str, InputRequest] | None = None, /, *,
            timeout: float | None = None, **named: InputRequest) -> dict[str, dict[str, Any]]:
        """Put several requests (built with ``mcpsync.inputs``) to the client at once; returns
        their answers by key. A 2026-07-28 client gets all the missing ones in one
        ``input_required`` result; a task waits until every one is answered; a session's
        client is asked one after the other. Raises ``MissingClientCapability`` first if
        the client did not declare what one of them needs."""
        todo = {**(requests or {}), **named}
        for req in todo.values():
            req.check(self.client_capabilities)
        if not self.modern and self.task is None:
            return {k: self.conn.request_client(r.method, r.message(self._form_mode())["params"] or None,
                                                call=self, timeout=timeout) for k, r in todo.items()}
        return self._gather(todo, timeout)

    def _gather(self, todo: Mapping[str, InputRequest], timeout: float | None) -> dict[str, dict[str, Any]]:
        form = self._form_mode()
        answers = self.input_responses or {}
        missing = {k: r.message(form) for k, r in todo.items() if k not in answers}
        if missing:
            if self.task is None:
                raise InputRequired(missing)
            answers = {**answers, **self.task.ask(missing, timeout)}  # blocks for tasks/update
        out = {}
        for k in todo:
            answer = answers[k]
            if type(answer) is not dict:
                raise InvalidParams(f"Invalid params: inputResponses[{k!r}] must be an object")
            if self._used is None:
                self._used = {}
            self._used[k] = answer
            out[k] = answer
        return out

    def _next_key(self) -> str:
        self._input_n += 1
        return f"input-{self._input_n}"

    def _form_mode(self) -> bool:
        return self.version is not None and versions.features(self.version).elicitation_url

    def sample(self, messages: list[dict[str, Any]] | str, *, max_tokens: int = 1000,
               system_prompt: str | None = None, timeout: float | None = None,
               key: str | None = None, **extra: Any) -> dict[str, Any]:
        """``sampling/createMessage``: ask the client's model. ``messages`` may be a plain string
        (one user text message). Returns the client's CreateMessageResult."""
        req = inputs.sampling(messages, max_tokens=max_tokens, system_prompt=system_prompt, **extra)
        return self.ask({key or self._next_key(): req}, timeout=timeout).popitem()[1]

    def elicit(self, message: str, requested_schema: dict[str, Any], *,
               timeout: float | None = None, key: str | None = None) -> dict[str, Any]:
        """``elicitation/create`` in form mode. Returns ``{"action": ..., "content": ...}``."""
        req = inputs.elicitation(message, requested_schema)
        return self.ask({key or self._next_key(): req}, timeout=timeout).popitem()[1]

    def list_roots(self, *, timeout: float | None = None, key: str | None = None) -> list[dict[str, Any]]:
        """``roots/list``: the client's roots."""
        answer = self.ask({key or self._next_key(): inputs.roots()}, timeout=timeout).popitem()[1]
        roots = answer.get("roots", [])
        return list(roots) if isinstance(roots, list) else []

    def begin_task(self) -> None:
        """Mark where a tool declared with ``defer_task=True`` turns into a task: the input it
        gathered before this point came through 2026-07-28 ``input_required`` rounds; here the
        client gets a ``CreateTaskResult`` and the function runs again from the start on a
        task thread, finding those answers. A no-op everywhere else (a session, a client
        without the tasks extension, a task already running)."""
        if self.task is None and self.defer_task:
            raise BeginTask()


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

    def __init__(self, server: "Server", *, session_id: str | None = None,
                 send: Sink | None = None,
                 request_timeout_s: float = CLIENT_REQUEST_TIMEOUT_S) -> None:
        self.server = server
        self.session_id = session_id
        self.send: Sink = send or _drop
        self.request_timeout_s = request_timeout_s
        # Guards the session state below; never held across I/O or a handler call.
        self._lock = threading.Lock()
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
        with self._lock:
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

    def handle_request(self, msg: dict[str, Any], sink: Sink) -> dict[str, Any] | None:
        """Run one request on this thread; None when it was cancelled (no response is sent)."""
        rid = msg["id"]
        method = msg["method"]
        params = msg.get("params") or {}
        if method == "server/discover" or modern.is_modern(params):
            return self.handle_modern(msg, sink)
        with self._lock:
            phase = self.phase
            duplicate = rid in self._inflight
            if not duplicate:
                ctx = Context(self, rid, method, params, sink)
                self._inflight[rid] = ctx
        if duplicate:
            return jsonrpc.error_response(rid, InvalidRequest(
                "Invalid Request: a request with this id is already in progress"))
        try:
            lifecycle.check_request(phase, method)
            result = self.server.dispatcher.handler_for(method)(params, ctx)
            reply = jsonrpc.response(rid, result)
        except Cancelled:
            reply = None
        except Exception as exc:
            reply = jsonrpc.error_response(rid, wire_error(exc, method))
        finally:
            with self._lock:
                self._inflight.pop(rid, None)
                ctx._finished = True
        if ctx._cancelled:
            return None
        return reply

    def handle_modern(self, msg: dict[str, Any], sink: Sink, *,
                      principal: str | None = None) -> dict[str, Any] | None:
        """Run one stateless-era (2026-07-28) request: the envelope in ``_meta`` stands in for
        the session, results are decorated, and input from the client is a multi round-trip
        (``input_required``). No session state is read or written."""
        rid = msg["id"]
        method = msg["method"]
        params = msg.get("params")
        if type(params) is not dict:
            params = {}
        ctx: Context | None = None
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            env = modern.request_envelope(params)
            if method not in modern.MODERN_METHODS:
                raise MethodNotFound(f"Method not found: {method}")
            handler = self.server.dispatcher.handler_for(method)
            with self._lock:
                if rid in self._inflight:
                    raise InvalidRequest("Invalid Request: a request with this id is already in progress")
                ctx = Context(self, rid, method, params, sink)
                self._inflight[rid] = ctx
            ctx.modern = True
            ctx.version = env.version
            ctx.client_capabilities = env.capabilities
            ctx.log_level = env.log_level
            ctx.principal = principal
            if method in modern.MRTR_METHODS:
                ctx.input_responses = self.server.mrtr_answers(method, params, principal)
            result = modern.decorate_result(method, handler(params, ctx),
                                            self.server.server_meta(env.version))
        except InputRequired as need:
            assert ctx is not None
            result = modern.decorate_result(method, {
                "resultType": modern.INPUT_REQUIRED,
                "inputRequests": need.requests,
                "requestState": self.server.mrtr_state(method, params, ctx._used or {}, principal),
            }, self.server.server_meta(ctx.version))
        except Cancelled:
            result = None
        except Exception as exc:
            error = jsonrpc.error_response(rid, wire_error(exc, method))
        finally:
            if ctx is not None:
                with self._lock:
                    self._inflight.pop(rid, None)
                    ctx._finished = True
        if ctx is not None and ctx._cancelled:
            return None
        if error is not None:
            return error
        return None if result is None else jsonrpc.response(rid, result)

    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        """The ``initialize`` request: negotiate, record the client, move to INITIALIZING."""
        if not isinstance(params.get("capabilities", {}), dict):
            raise InvalidParams("Invalid params: capabilities must be an object")
        version = versions.negotiate(params.get("protocolVersion"))
        with self._lock:
            if self.phase != lifecycle.NEW:
                raise InvalidRequest("Invalid Request: the session is already initialized")
            self.phase = lifecycle.next_phase(self.phase, "initialize")
            self.version = version
            self.client_capabilities = params.get("capabilities") or {}
            info = params.get("clientInfo")
            self.client_info = info if isinstance(info, dict) else {}
        return self.server.initialize_result(version)

    def set_log_level(self, level: Any) -> None:
        if level not in _LEVEL_RANK:
            raise InvalidParams(f"Invalid params: unknown log level {level!r}",
                                {"levels": list(LOG_LEVELS)})
        with self._lock:
            self.log_level = level
            for ctx in self._inflight.values():  # running calls log at the new level from now on
                if not ctx.modern:
                    ctx.log_level = level

    def subscribe(self, uri: str, on: bool) -> None:
        with self._lock:
            if on:
                self.subscriptions.add(uri)
            else:
                self.subscriptions.discard(uri)

    def is_subscribed(self, uri: str) -> bool:
        with self._lock:
            return uri in self.subscriptions

    # ---- notifications ---------------------------------------------------------------------------

    def handle_notification(self, msg: dict[str, Any]) -> None:
        method = msg["method"]
        params = msg.get("params") or {}
        if method == "notifications/initialized":
            with self._lock:
                self.phase = lifecycle.next_phase(self.phase, method)
            self.server._on_initialized(self)
        elif method == "notifications/cancelled":
            self.cancel(params.get("requestId"), params.get("reason"))
        elif method == "notifications/progress":
            pass  # progress on our own outgoing requests: accepted, nothing to do with it
        else:
            self.server.dispatcher.notify(msg, self)

    def cancel_call(self, ctx: Context) -> None:
        """Mark ``ctx`` cancelled so a cooperative tool stops, without suppressing the reply
        that the caller is about to send (a per-call timeout answers with an error result)."""
        with self._lock:
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
        with self._lock:
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
        with self._lock:
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
        out = call.sink if call is not None else self.send
        limit = self.request_timeout_s if timeout is None else timeout
        try:
            out(jsonrpc.request(rid, method, params))
            answered = pending.wait(limit)
        finally:
            with self._lock:
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
        with self._lock:
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
        with self._lock:
            return len(self._inflight)

    def close(self) -> None:
        """End the session: cancel in-flight calls, fail outgoing requests, leave the server."""
        with self._lock:
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
        self.server._forget(self)
        self.server._session_closed(self)
