"""``Client``: the public synchronous MCP client, on plain threads.

A ``Client`` is one ``ClientSession`` (the hub's client code: negotiation, the request
loop, every transport) plus what a program needs around it: a target parsed into an
``Endpoint``, typed results (``results.py``), callbacks instead of a downstream client
(``callbacks.py``), complete listings, tasks (``task.py``), resource subscriptions with
callbacks, and cancellation through ``CancelToken``.

Threads: every method may be called from any number of threads at once; each call waits
on its own thread, which also runs the progress callback and the callbacks for the
server's requests made within that call. The transport's threads (readers, the HTTP GET
stream or the 2026-07-28 listen) belong to the session; ``mcpsync-client-callbacks-<name>``
runs the rest (``callbacks.CallbackRunner``). ``close()`` joins them all.

``_lock`` guards ``_subscriptions`` (uri -> callbacks) and ``_closed``: dict operations
only, never held across a request or a callback.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Mapping, Sequence

from .._version import __version__
from ..errors import HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY, McpError, PeerError
from ..protocol.modern import TASKS_EXTENSION
from . import process
from .caller import CancelToken
from .callbacks import (CallbackRunner, CallContext, Callbacks, ProgressCallback, RequestCallback,
                        RootsSource)
from .channels import make_channel
from .endpoint import (AUTO, CONNECT_TIMEOUT_S, PROBE_TIMEOUT_S, REQUEST_TIMEOUT_S, STDIO, STREAMABLE_HTTP,
                       Timeouts, endpoint_for)
from .results import (CallToolResult, Completion, GetPromptResult, LogMessage, Prompt, ReadResourceResult,
                      Resource, ResourceTemplate, ServerInfo, Tool)
from .session import ClientSession
from .task import Task

log = logging.getLogger("mcpsync.client")

SHUTDOWN_TIMEOUT_S = 2.0     # a stdio server's exit after its stdin closes, before SIGTERM
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
TASKS: dict[str, Any] = {TASKS_EXTENSION: {}}


class Client:
    """A connection to one MCP server. ``target`` is an ``http(s)://…`` URL (Streamable
    HTTP; a path ending in ``/sse``: the legacy HTTP+SSE transport), a ``ws(s)://…`` URL
    (WebSocket), or a command as a list of strings (stdio: the server runs as a child
    process). The constructor connects and negotiates (blocks up to ``connect_timeout``)::

        with Client(["python", "-m", "mcpsync", "--stdio"]) as client:
            print(client.call_tool("echo", {"text": "hi"}).text)

    ``revision``: ``"auto"`` asks for 2026-07-28 (``server/discover``) and falls back to
    the newest handshake revision; a revision string insists on it. ``transport`` overrides
    the guess from the URL. ``timeout`` bounds each request (seconds; per call with
    ``timeout=``). Callbacks: ``sampling(params) -> CreateMessageResult dict``,
    ``elicitation(params) -> {"action": ..., "content": ...}``, ``roots`` (a list of URIs
    or root dicts, or a function returning one), ``on_log(LogMessage)`` with ``log_level``
    (default "debug" when ``on_log`` is given), ``on_list_changed(kind)`` (``"tools"``,
    ``"prompts"``, ``"resources"``, ``"all"``). A callback raising ``McpError`` sends that
    error to the server. Errors: ``PeerError`` (the server's error answer: ``code``,
    ``message``, ``data``), ``RequestTimeout``, ``ConnectionClosed`` (all ``McpError``),
    and ``Cancelled``. A lost connection is not re-established: make a new ``Client``."""

    def __init__(self, target: str | Sequence[str], *, transport: str | None = None,
                 revision: str = AUTO, headers: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 timeout: float = REQUEST_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 shutdown_timeout: float = SHUTDOWN_TIMEOUT_S, name: str = "mcpsync",
                 version: str = __version__, sampling: RequestCallback | None = None,
                 elicitation: RequestCallback | None = None, roots: RootsSource | None = None,
                 on_log: Callable[[LogMessage], None] | None = None, log_level: str | None = None,
                 on_list_changed: Callable[[str], None] | None = None) -> None:
        if log_level is not None and log_level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {log_level!r}; expected one of {', '.join(LOG_LEVELS)}")
        timeouts = Timeouts(request=timeout, connect=connect_timeout,
                            probe=min(PROBE_TIMEOUT_S, connect_timeout), shutdown=shutdown_timeout)
        self.endpoint = endpoint_for(target, transport=transport, revision=revision, headers=headers,
                                     env=env, cwd=cwd, timeouts=timeouts)
        self._callbacks = Callbacks(self.endpoint.name, sampling=sampling, elicitation=elicitation,
                                    roots=roots, on_log=on_log, log_level=log_level)
        self._on_list_changed = on_list_changed
        self._runner = CallbackRunner(self.endpoint.name)
        self._closing = CancelToken()   # cancelled by close(): ends task waits at once
        self._lock = threading.Lock()
        self._subscriptions: dict[str, list[Callable[[str], None]]] = {}
        self._closed = False
        guardian = process.shared_guardian() if self.endpoint.transport == STDIO else None
        self._session = ClientSession(
            self.endpoint, make_channel(self.endpoint, guardian), on_list_changed=self._list_changed,
            on_resource_updated=self._resource_updated, client_info={"name": name, "version": version},
            capabilities=self._callbacks.capabilities(), log_level=self._callbacks.log_level,
            on_log=self._unclaimed_log, on_request=self._unclaimed_request)
        try:
            self._session.open()
        except BaseException:
            self._runner.close()
            raise
        # A list change or resource update sent right after we return must not be missed.
        if not self._session.wait_events(timeouts.probe):
            log.debug("client %s: the server's event stream is not ready yet", self.endpoint.name)

    # ---- life ------------------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect: calls in flight fail with ``ConnectionClosed``; a stdio server is
        stopped (stdin closed, then SIGTERM after ``shutdown_timeout``). Joins every thread
        the client started. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.cancel()
        self._session.close()
        self._runner.close()

    @property
    def connected(self) -> bool:
        """False once the connection is lost or closed."""
        return self._session.alive

    @property
    def server(self) -> ServerInfo:
        s = self._session
        info = s.server_info
        return ServerInfo(str(info.get("name", "")), info.get("version"), s.revision or "",
                          dict(s.capabilities), info.get("title"), s.instructions, dict(info))

    @property
    def protocol_version(self) -> str:
        """The negotiated revision (``"2026-07-28"``, ``"2025-11-25"`` …)."""
        return self._session.revision or ""

    # ---- requests ----------------------------------------------------------------------------

    def _limit(self, timeout: float | None) -> float | None:
        if timeout is None:
            return self.endpoint.timeouts.request
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        return None if math.isinf(timeout) else timeout

    def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict[str, Any]:
        """Send any request and return its raw result (for methods this class has no verb
        for). ``timeout``: seconds (None: the client's; ``math.inf``: no limit); on expiry
        the server is told the request is cancelled and ``RequestTimeout`` raised.
        ``progress(progress, total, message)`` runs on this thread; ``cancel.cancel()`` from
        another thread ends the call with ``Cancelled``."""
        return self._session.request(method, params, ctx=CallContext(self._callbacks, progress),
                                     timeout=self._limit(timeout), cancel=cancel)

    def ping(self, timeout: float | None = None) -> None:
        self._session.ping(self._limit(timeout) or self.endpoint.timeouts.request)

    def _list(self, method: str, key: str) -> list[dict[str, Any]]:
        return self._session.list_all(method, key, ctx=CallContext(self._callbacks, None))

    def list_tools(self) -> list[Tool]:
        """Every tool (all pages)."""
        tools = self._list("tools/list", "tools")
        schemas = dict(self._session.tool_schemas)
        schemas.update({t["name"]: t.get("inputSchema") for t in tools if isinstance(t.get("name"), str)})
        self._session.tool_schemas = schemas
        return [Tool.from_wire(t) for t in tools]

    def list_resources(self) -> list[Resource]:
        return [Resource.from_wire(r) for r in self._list("resources/list", "resources")]

    def list_resource_templates(self) -> list[ResourceTemplate]:
        return [ResourceTemplate.from_wire(r) for r in
                self._list("resources/templates/list", "resourceTemplates")]

    def list_prompts(self) -> list[Prompt]:
        return [Prompt.from_wire(p) for p in self._list("prompts/list", "prompts")]

    def read_resource(self, uri: str, *, timeout: float | None = None,
                      cancel: CancelToken | None = None) -> ReadResourceResult:
        return ReadResourceResult.from_wire(self.request("resources/read", {"uri": uri}, timeout=timeout,
                                                         cancel=cancel))

    def get_prompt(self, name: str, arguments: Mapping[str, str] | None = None, *,
                   timeout: float | None = None, cancel: CancelToken | None = None) -> GetPromptResult:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = dict(arguments)
        return GetPromptResult.from_wire(self.request("prompts/get", params, timeout=timeout, cancel=cancel))

    def complete(self, *, argument: str, value: str, prompt: str | None = None,
                 resource: str | None = None, context: Mapping[str, str] | None = None,
                 timeout: float | None = None) -> Completion:
        """Completions for ``argument`` of a ``prompt`` (its name) or of a ``resource``
        template (its URI template), given what was typed (``value``) and the other
        arguments' values (``context``)."""
        if (prompt is None) == (resource is None):
            raise ValueError("give exactly one of prompt= and resource=")
        ref = {"type": "ref/prompt", "name": prompt} if prompt is not None else \
            {"type": "ref/resource", "uri": resource}
        params: dict[str, Any] = {"ref": ref, "argument": {"name": argument, "value": value}}
        if context is not None:
            params["context"] = {"arguments": dict(context)}
        return Completion.from_wire(self.request("completion/complete", params, timeout=timeout))

    # ---- tools and tasks ---------------------------------------------------------------------

    def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                  progress: ProgressCallback | None = None, timeout: float | None = None,
                  cancel: CancelToken | None = None) -> CallToolResult:
        """Call a tool and return its result; a tool failure is a result with ``is_error``
        (not an exception). A tool the server only runs as a task (2026-07-28 tasks
        extension) is run as one and waited for: ``timeout`` then bounds the whole wait,
        and the task is cancelled when it expires or ``cancel`` fires."""
        limit = self._limit(timeout)
        params = {"name": name, "arguments": dict(arguments or {})}
        ctx = CallContext(self._callbacks, progress)
        try:
            result = self._call(params, ctx, limit, cancel, None)
        except PeerError as exc:
            if not (exc.code == MISSING_CLIENT_CAPABILITY and _wants_tasks(exc.data)):
                raise
            result = self._call(params, ctx, limit, cancel, TASKS)
        if result.get("resultType") != "task":
            return CallToolResult.from_wire(result)
        return self._task(result).wait(limit, cancel=cancel)

    def call_tool_as_task(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                          timeout: float | None = None, cancel: CancelToken | None = None) -> Task:
        """Call a tool declaring the tasks extension and return the ``Task`` at once (poll it,
        ``wait()`` for it, ``cancel()`` it). If the server ran the call at once instead, the
        task is already ``completed``."""
        params = {"name": name, "arguments": dict(arguments or {})}
        result = self._call(params, CallContext(self._callbacks, None), self._limit(timeout), cancel, TASKS)
        return self._task(result)

    def _call(self, params: dict[str, Any], ctx: CallContext, limit: float | None,
              cancel: CancelToken | None, extensions: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return self._session.request("tools/call", params, ctx=ctx, timeout=limit, cancel=cancel,
                                         extensions=extensions)
        except PeerError as exc:
            # 2026-07-28 over HTTP: the tool mirrors arguments into Mcp-Param headers, and we
            # had not listed it yet. List, then try once more.
            if exc.code != HEADER_MISMATCH or self.endpoint.transport != STREAMABLE_HTTP \
                    or params["name"] in self._session.tool_schemas:
                raise
            self.list_tools()
            return self._session.request("tools/call", params, ctx=ctx, timeout=limit, cancel=cancel,
                                         extensions=extensions)

    def _task(self, first: dict[str, Any]) -> Task:
        ctx = CallContext(self._callbacks, None)

        def request(method: str, params: dict[str, Any], timeout: float | None) -> dict[str, Any]:
            return self._session.request(method, params, ctx=ctx, timeout=timeout, extensions=TASKS)

        def answer(asks: dict[str, Any]) -> dict[str, Any]:
            return self._session.answer_inputs(ctx, asks)
        return Task(request, answer, self._closing, first, timeout=self.endpoint.timeouts.request)

    # ---- subscriptions and notifications -----------------------------------------------------

    def subscribe(self, uri: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(uri)`` (on the client's callback thread) whenever the server says
        the resource changed; returns the function that unsubscribes this callback. The
        first callback of a URI subscribes with the server (``resources/subscribe``, or the
        2026-07-28 listen stream)."""
        with self._lock:
            callbacks = self._subscriptions.setdefault(uri, [])
            first = not callbacks
            callbacks.append(callback)
            uris = frozenset(self._subscriptions)
        try:
            if first:
                self._sync_subscription(uri, uris, subscribe=True)
        except BaseException:
            self._forget(uri, callback)
            raise

        def unsubscribe() -> None:
            self.unsubscribe(uri, callback)
        return unsubscribe

    def unsubscribe(self, uri: str, callback: Callable[[str], None] | None = None) -> None:
        """Remove ``callback`` (None: every callback) of ``uri``; the last one unsubscribes
        with the server."""
        last, uris = self._forget(uri, callback)
        if last:
            self._sync_subscription(uri, uris, subscribe=False)

    def _forget(self, uri: str, callback: Callable[[str], None] | None) -> tuple[bool, frozenset[str]]:
        with self._lock:
            callbacks = self._subscriptions.get(uri)
            if not callbacks:
                return False, frozenset(self._subscriptions)
            if callback is None:
                callbacks.clear()
            elif callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                del self._subscriptions[uri]
            return not callbacks, frozenset(self._subscriptions)

    def _sync_subscription(self, uri: str, uris: frozenset[str], *, subscribe: bool) -> None:
        if self._session.modern:
            self._session.listen_resources(uris)
        else:
            self.request("resources/subscribe" if subscribe else "resources/unsubscribe", {"uri": uri})

    def set_logging_level(self, level: str) -> None:
        """The least severe log messages to receive (``on_log``)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}")
        self._callbacks.log_level = level
        if not self._session.modern:
            self.request("logging/setLevel", {"level": level})

    def notify_roots_changed(self) -> None:
        """Tell the server the roots changed (handshake era: ``notifications/roots/list_changed``;
        2026-07-28 servers ask for roots within each request anyway)."""
        if not self._session.modern:
            self._session.notify("notifications/roots/list_changed")

    # ---- from the session's threads ------------------------------------------------------

    def _list_changed(self, kind: str) -> None:
        callback = self._on_list_changed
        if callback is not None:
            self._runner.submit(lambda: callback(kind))

    def _resource_updated(self, uri: str) -> None:
        with self._lock:
            callbacks = list(self._subscriptions.get(uri, ()))
        for callback in callbacks:
            self._runner.submit(lambda cb=callback: cb(uri))  # type: ignore[misc]

    def _unclaimed_log(self, params: dict[str, Any]) -> None:
        self._runner.submit(lambda: self._callbacks.log(params))

    def _unclaimed_request(self, msg: dict[str, Any]) -> None:
        def job() -> None:
            params = msg.get("params")
            try:
                answer: dict[str, Any] | McpError = self._callbacks.answer(
                    str(msg.get("method")), params if isinstance(params, dict) else None)
            except McpError as exc:
                answer = exc
            except Exception as exc:  # Cancelled from a callback: there is no call to cancel
                answer = McpError(f"the client's callback gave up: {type(exc).__name__}", code=-32603)
            self._session.answer(msg, answer)
        if not self._runner.submit(job):
            self._session.answer(msg, McpError("the client is closing or too busy to answer", code=-32603))


def _wants_tasks(data: Any) -> bool:
    """Whether a -32021 error asks for the tasks extension."""
    required = data.get("requiredCapabilities") if isinstance(data, dict) else None
    ext = required.get("extensions") if isinstance(required, dict) else None
    return isinstance(ext, dict) and TASKS_EXTENSION in ext
