"""``Context``: what a handler or tool knows about the request it serves, and what it may do
(progress, logging, cancellation, asking the client for input); ``PendingRequest``: one
server -> client request waiting for its answer.

A context belongs to one ``ServerConnection`` and reads and writes its own state under that
connection's lock (``ServerConnection.lock``); it never holds it across a write or a wait.
One programming model for both eras: ``request``/``ask`` block for the client's answer in
the handshake era, look it up among ``inputResponses`` (else ``InputRequired``) in the
modern era, and wait for ``tasks/update`` in a task.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import inputs, telemetry
from ..errors import Cancelled, InvalidParams, McpError
from ..inputs import InputRequest
from ..protocol import jsonrpc, versions
from ..protocol.modern import BeginTask, InputRequired
from .host import TaskControl

if TYPE_CHECKING:
    from .connection import ServerConnection

Sink = Callable[[dict[str, Any]], None]

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
LEVEL_RANK = {name: i for i, name in enumerate(LOG_LEVELS)}


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

    def __init__(self, conn: ServerConnection, request_id: Any, method: str,
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
        # the request's own _meta (modern era).
        self.version: str | None = conn.version
        self.client_capabilities: dict[str, Any] = conn.client_capabilities
        self.log_level: str | None = conn.log_level
        self.extra: dict[str, Any] = {}
        # Modern era: no log level means no log messages; client input arrives as
        # inputResponses (answers so far) instead of server -> client requests.
        self.modern = False
        self.input_responses: dict[str, Any] | None = None
        self._input_n = 0
        self._used: dict[str, Any] | None = None  # the answers the handler took (sealed on)
        self.principal: str | None = None
        # Tasks: the running task's handle (its thread waits for input through it), and
        # whether this call may still turn into a task at ``begin_task`` (defer_task tools).
        self.task: TaskControl | None = None
        self.defer_task = False
        self._on_cancel: list[Callable[[], None]] | None = None

    # ---- identity --------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self.conn.session_id

    @property
    def server(self) -> Any:
        """The ``Server`` that serves this request."""
        return self.conn.host

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
        with self.conn.lock:
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
        with self.conn.lock:
            fire = self._cancelled or self._stopped
            if not fire:
                if self._on_cancel is None:
                    self._on_cancel = []
                self._on_cancel.append(callback)
        if fire:
            callback()

        def remove() -> None:
            with self.conn.lock:
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
        with self.conn.lock:
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
        self._notify("notifications/progress", params)
        return True

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        """Send a ``notifications/message`` log entry to the client if ``level`` passes the
        level it set. Returns whether it was sent."""
        if level not in LEVEL_RANK:
            raise ValueError(f"unknown log level {level!r}")
        threshold = self.log_level
        if threshold is None and self.modern:
            return False  # 2026-07-28: only requests that carry a logLevel get log messages
        if threshold is not None and LEVEL_RANK[level] < LEVEL_RANK[threshold]:
            return False
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        self._notify("notifications/message", params)
        return True

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        tel = telemetry.ACTIVE  # OpenTelemetry: None when absent or off
        if tel is None or not tel.recording():
            self.sink(jsonrpc.notification(method, params))
        else:
            tel.server_notification(self.conn, method, params,
                                    lambda traced: self.sink(jsonrpc.notification(method, traced)))

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
        modern era (2026-07-28) there are no server -> client requests: the answer is
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
