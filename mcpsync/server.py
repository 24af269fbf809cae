"""``Server``: the API users write MCP servers with: decorators and wiring.

A ``Server`` registers functions as tools, resources, resource templates, prompts and
completers (``core.registry``: copy-on-write generations committed under a FIFO mutex) and
wires the method handlers (``core.handlers``) into its method table (``dispatcher``). It is
the ``SessionHost`` every session's ``ServerConnection`` talks to (``core.host``), owns the
broadcasts to live sessions and listen streams (``core.broadcast``), the tasks of the
2026-07-28 extension (``tasks``), and the key that seals multi round-trip ``requestState``.

Registering or removing after sessions exist notifies them with
``notifications/<kind>/list_changed`` (the capability declares ``listChanged: true``).
"""
from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Callable, TypeVar

from .core.broadcast import Broadcaster
from .core.calls import MAX_TIMED_OUT_CALLS, ToolCalls, user_code
from .core.connection import ServerConnection
from .core.context import Context
from .core.handlers.completion import CompletionHandler
from .core.handlers.prompts import PromptHandlers
from .core.handlers.resources import ResourceHandlers
from .core.handlers.tools import ToolHandlers
from .core.identity import ServerIdentity
from .core.registry import (PromptDef, Registry, RegistryStore, ResourceDef,
                            ToolDef, prompt_def, resource_def, tool_def)
from .errors import DefinitionError, InvalidParams
from .protocol.dispatch import Dispatcher
from .protocol.modern import StateSealer, params_digest
from .tasks import TaskManager
from .tasks.runtime import task_notification

log = logging.getLogger("mcpsync.server")

F = TypeVar("F", bound=Callable[..., Any])

PAGE_SIZE = 100


class Server:
    """An MCP server: register functions with the decorators, then serve it with
    ``mcpsync.serve(server)`` or ``python -m mcpsync serve module:server``.

    ``tool_timeout_s``: per-call time limit of tools (``core.calls``); ``page_size``: items
    per ``*/list`` page."""

    def __init__(self, name: str, version: str = "0.1.0", *, title: str | None = None,
                 description: str | None = None, instructions: str | None = None,
                 website_url: str | None = None, icons: list[dict[str, Any]] | None = None,
                 page_size: int = PAGE_SIZE, tool_timeout_s: float | None = None,
                 max_timed_out_calls: int = MAX_TIMED_OUT_CALLS) -> None:
        self.identity = ServerIdentity(name, version, title, description, instructions,
                                       website_url, icons)
        self.page_size = page_size
        self.calls = ToolCalls(tool_timeout_s, max_timed_out_calls)
        # Every definition, committed under its FIFO mutex; the hub commits whole sets with
        # store.update(..., replace_prefix=...).
        self.store = RegistryStore(self.notify_list_changed)
        self.broadcast = Broadcaster(self._owned_tasks)
        self._roots_changed: list[Callable[[ServerConnection], None]] = []
        # Seals the requestState of multi round-trip requests (modern era); the secret lives
        # as long as this process, so a state outlives no restart. Shared state
        # (mcpsync.state.SharedState.attach) replaces it with the key ring all instances share.
        self._sealer = StateSealer(secrets.token_bytes(32))
        # Tasks (2026-07-28 extension): records, the task threads, TTL expiry; close() ends
        # them. Replaceable (``server.tasks = TaskManager(server, ...)``): read at each use.
        self.tasks: TaskManager = TaskManager(self)
        self._tools = ToolHandlers(self.store, self.calls, lambda: self.tasks, page_size)
        self._resources = ResourceHandlers(self.store, page_size)
        self._prompts = PromptHandlers(self.store, page_size)
        self._completion = CompletionHandler(self.store)
        self.dispatcher = self._build_dispatcher()

    def _owned_tasks(self, task_ids: list[Any], principal: str | None) -> list[str]:
        return self.tasks.owned(task_ids, principal)

    def close(self, timeout: float | None = None) -> bool:
        """Shutdown: cancel this server's running tasks and join their threads."""
        return self.tasks.close() if timeout is None else self.tasks.close(timeout)

    # ---- identity ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def version(self) -> str:
        return self.identity.version

    @property
    def instructions(self) -> str | None:
        return self.identity.instructions

    def capabilities(self, version: str | None = None) -> dict[str, Any]:
        return self.identity.capabilities(version)

    def server_info(self, version: str | None = None) -> dict[str, Any]:
        return self.identity.server_info(version)

    def server_meta(self, version: str | None) -> dict[str, Any]:
        return self.identity.server_meta(version)

    def initialize_result(self, version: str) -> dict[str, Any]:
        return self.identity.initialize_result(version)

    # ---- registration API -----------------------------------------------------------------

    def tool(self, name: str | Callable[..., Any] | None = None, *, title: str | None = None,
             description: str | None = None, annotations: dict[str, Any] | None = None,
             output_schema: dict[str, Any] | None = None, structured_output: bool | None = None,
             icons: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None,
             input_schema: dict[str, Any] | None = None, task: str | None = None,
             defer_task: bool = False, replace: bool = False) -> Any:
        """Register a function as a tool (``@server.tool`` or ``@server.tool(...)``). Its
        parameters (typed) become the input schema; a structured return annotation
        (TypedDict, dataclass, dict, pydantic model) becomes the output schema.
        ``task="optional"`` or ``"required"``: a 2026-07-28 client that declares the tasks
        extension gets a task (the function runs on a task thread; ``"required"`` refuses
        other clients with -32021). ``defer_task=True``: the task starts where the function
        calls ``ctx.begin_task()`` (input before it comes through MRTR rounds).
        ``replace=True`` replaces a tool of the same name (otherwise a ``DefinitionError``)."""
        def decorate(fn: F) -> F:
            self.add_tool(fn, name=None if callable(name) else name, title=title,
                          description=description, annotations=annotations,
                          output_schema=output_schema, structured_output=structured_output,
                          icons=icons, meta=meta, input_schema=input_schema, task=task,
                          defer_task=defer_task, replace=replace)
            return fn
        return decorate(name) if callable(name) else decorate

    def add_tool(self, fn: Callable[..., Any], *, name: str | None = None, title: str | None = None,
                 description: str | None = None, annotations: dict[str, Any] | None = None,
                 output_schema: dict[str, Any] | None = None, structured_output: bool | None = None,
                 icons: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None,
                 input_schema: dict[str, Any] | None = None, task: str | None = None,
                 defer_task: bool = False, replace: bool = False) -> ToolDef:
        tool = tool_def(fn, name=name, title=title, description=description,
                        annotations=annotations, output_schema=output_schema,
                        structured_output=structured_output, icons=icons, meta=meta,
                        input_schema=input_schema, task=task, defer_task=defer_task)
        self.store.add("tools", tool.name, tool, replace=replace)
        return tool

    def remove_tool(self, name: str) -> bool:
        return self.store.remove("tools", name)

    def resource(self, uri: str, *, name: str | None = None, title: str | None = None,
                 description: str | None = None, mime_type: str | None = None,
                 size: int | None = None, annotations: dict[str, Any] | None = None,
                 icons: list[dict[str, Any]] | None = None,
                 meta: dict[str, Any] | None = None, replace: bool = False) -> Callable[[F], F]:
        """Register a resource (``uri``) or a resource template (a ``uri`` with ``{var}``
        parts, whose values are passed to the function as arguments):
        ``@server.resource("notes://{name}")``; there is no bare form, a resource needs its URI."""
        if callable(uri):
            raise DefinitionError(
                f"@server.resource needs a URI: write @server.resource(\"scheme://...\") above "
                f"{getattr(uri, '__qualname__', 'the function')}()")

        def decorate(fn: F) -> F:
            self.add_resource(fn, uri, name=name, title=title, description=description,
                              mime_type=mime_type, size=size, annotations=annotations,
                              icons=icons, meta=meta, replace=replace)
            return fn
        return decorate

    def add_resource(self, fn: Callable[..., Any], uri: str, *, name: str | None = None,
                     title: str | None = None, description: str | None = None,
                     mime_type: str | None = None, size: int | None = None,
                     annotations: dict[str, Any] | None = None,
                     icons: list[dict[str, Any]] | None = None,
                     meta: dict[str, Any] | None = None, replace: bool = False) -> ResourceDef:
        res = resource_def(fn, uri, name=name, title=title, description=description,
                           mime_type=mime_type, size=size, annotations=annotations, icons=icons,
                           meta=meta)
        self.store.add("templates" if res.pattern is not None else "resources", uri, res,
                        replace=replace)
        return res

    def remove_resource(self, uri: str) -> bool:
        return self.store.remove("resources", uri) or self.store.remove("templates", uri)

    def prompt(self, name: str | Callable[..., Any] | None = None, *, title: str | None = None,
               description: str | None = None, icons: list[dict[str, Any]] | None = None,
               meta: dict[str, Any] | None = None, replace: bool = False) -> Any:
        """Register a prompt (``@server.prompt`` or ``@server.prompt(...)``). Its parameters
        are the prompt's arguments (required unless they have a default); it returns a
        string (one user message) or a list of messages."""
        def decorate(fn: F) -> F:
            self.add_prompt(fn, name=None if callable(name) else name, title=title,
                            description=description, icons=icons, meta=meta, replace=replace)
            return fn
        return decorate(name) if callable(name) else decorate

    def add_prompt(self, fn: Callable[..., Any], *, name: str | None = None,
                   title: str | None = None, description: str | None = None,
                   icons: list[dict[str, Any]] | None = None,
                   meta: dict[str, Any] | None = None, replace: bool = False) -> PromptDef:
        prompt = prompt_def(fn, name=name, title=title, description=description, icons=icons,
                            meta=meta)
        self.store.add("prompts", prompt.name, prompt, replace=replace)
        return prompt

    def remove_prompt(self, name: str) -> bool:
        return self.store.remove("prompts", name)

    def completion(self, *, argument: str, prompt: str | None = None,
                   resource_template: str | None = None) -> Callable[[F], F]:
        """Register ``fn(value, context_arguments) -> list[str]`` to complete one argument of a
        prompt or one variable of a resource template."""
        if (prompt is None) == (resource_template is None):
            raise DefinitionError("name exactly one of prompt= or resource_template=")
        key = ("ref/prompt", prompt, argument) if prompt else ("ref/resource", resource_template, argument)

        def decorate(fn: F) -> F:
            self.store.add_completer(key, fn)  # type: ignore[arg-type]
            return fn
        return decorate

    def on_roots_changed(self, fn: F) -> F:
        """Call ``fn(connection)`` when a client sends ``notifications/roots/list_changed``."""
        self._roots_changed.append(fn)
        return fn

    @property
    def registry(self) -> Registry:
        """The current generation of everything this server offers (read without a lock)."""
        return self.store.current

    def find_resource(self, uri: str) -> tuple[ResourceDef, dict[str, str]] | None:
        return self._resources.find(uri)

    def call_tool(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """``tools/call`` (the task runner calls it on a task thread)."""
        return self._tools.call(params, ctx)

    # ---- sessions and broadcasts (core.broadcast) ----------------------------------------------

    def connect(self, *, session_id: str | None = None,
                send: Callable[[dict[str, Any]], None] | None = None) -> ServerConnection:
        """A new protocol handler for one session of this server."""
        conn = ServerConnection(self, session_id=session_id, send=send)
        self.broadcast.add(conn)
        return conn

    def session_closed(self, conn: ServerConnection) -> None:
        self.broadcast.session_closed(conn)

    def is_connected(self, conn: ServerConnection) -> bool:
        """Whether ``conn`` is a live session made by ``connect`` (not a modern request's)."""
        return self.broadcast.is_connected(conn)

    def connections(self) -> list[ServerConnection]:
        return self.broadcast.connections()

    def on_session_closed(self, fn: Callable[[ServerConnection], None]) -> Callable[[ServerConnection], None]:
        """Call ``fn(connection)`` when a session ends (``ServerConnection.close``), on the
        closing thread with no lock held (the hub reaps per-session upstreams with it)."""
        return self.broadcast.on_session_closed(fn)

    @property
    def publish(self) -> Callable[[dict[str, Any]], None] | None:
        return self.broadcast.publish

    @publish.setter
    def publish(self, hook: Callable[[dict[str, Any]], None] | None) -> None:
        self.broadcast.publish = hook

    def notify_list_changed(self, kind: str) -> int:
        return self.broadcast.notify_list_changed(kind)

    def deliver_list_changed(self, kind: str) -> int:
        return self.broadcast.deliver_list_changed(kind)

    def notify_resource_updated(self, uri: str) -> int:
        return self.broadcast.notify_resource_updated(uri)

    def deliver_resource_updated(self, uri: str) -> int:
        return self.broadcast.deliver_resource_updated(uri)

    def notify_task(self, record: dict[str, Any]) -> int:
        """A task's status changed: ``notifications/tasks`` to the listen streams following it."""
        return self.broadcast.notify_task(task_notification(record), record["taskId"])

    def end_listeners(self, conn: ServerConnection | None = None) -> None:
        self.broadcast.end_listeners(conn)

    # ---- the modern era (2026-07-28) ---------------------------------------------------------

    def mrtr_answers(self, method: str, params: dict[str, Any], principal: str | None) -> dict[str, Any]:
        """The client's answers for a retried multi round-trip request: the ones sealed in its
        requestState plus this round's inputResponses."""
        responses = params.get("inputResponses")
        if responses is not None and (type(responses) is not dict
                                      or any(type(v) is not dict for v in responses.values())):
            raise InvalidParams("Invalid params: inputResponses must be an object of objects")
        answers: dict[str, Any] = {}
        state = params.get("requestState")
        if state is not None:
            answers = self._sealer.open(state, method=method, digest=params_digest(method, params),
                                        principal=principal, now=time.time())
        answers.update(responses or {})
        return answers

    def mrtr_state(self, method: str, params: dict[str, Any], answers: dict[str, Any],
                   principal: str | None) -> str:
        return self._sealer.seal(method=method, digest=params_digest(method, params),
                                 answers=answers, principal=principal, now=time.time())

    # ---- wiring -------------------------------------------------------------------------------

    def _build_dispatcher(self) -> Dispatcher:
        d = Dispatcher()
        d.on_request("initialize", lambda p, ctx: ctx.conn.initialize(p))
        d.on_request("ping", lambda p, ctx: {})
        d.on_request("tools/list", self._tools.list)
        d.on_request("tools/call", self._tools.call)
        d.on_request("resources/list", self._resources.list)
        d.on_request("resources/templates/list", self._resources.templates)
        d.on_request("resources/read", self._resources.read)
        d.on_request("resources/subscribe", self._resources.subscribe)
        d.on_request("resources/unsubscribe", self._resources.unsubscribe)
        d.on_request("prompts/list", self._prompts.list)
        d.on_request("prompts/get", self._prompts.get)
        d.on_request("completion/complete", self._completion.complete)
        d.on_request("logging/setLevel", _set_level)
        d.on_request("server/discover", self.identity.discover)
        d.on_request("subscriptions/listen", self.broadcast.listen)
        d.on_request("tasks/get", lambda p, ctx: self.tasks.get(p, ctx))
        d.on_request("tasks/update", lambda p, ctx: self.tasks.update(p, ctx))
        d.on_request("tasks/cancel", lambda p, ctx: self.tasks.cancel(p, ctx))
        d.on_notification("notifications/roots/list_changed", self._roots_list_changed)
        return d

    def _roots_list_changed(self, params: dict[str, Any], conn: ServerConnection) -> None:
        if not self._roots_changed:
            return
        with user_code():
            for fn in self._roots_changed:
                fn(conn)


def _set_level(params: dict[str, Any], ctx: Context) -> dict[str, Any]:
    ctx.conn.set_log_level(params.get("level"))
    return {}


__all__ = ["Server"]
