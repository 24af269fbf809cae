"""``Server``: the API users write MCP servers with, and the handlers for every method.

Theory of operation
-------------------
Decorators register tools, resources, resource templates, prompts and completers in the
server's *registry*. The registry is copy-on-write: a write (registration, removal) takes
``Server._registry_mutex`` (a ``FIFOMutex``), builds new dicts and swaps them in whole;
readers (every ``*/list`` and ``*/call``) take the current dicts without any lock and
always see one consistent generation. Rendered ``*/list`` pages are cached per generation
and revision, so a hot ``tools/list`` is a dict lookup.

Registering or removing after the first session exists notifies connected sessions with
``notifications/<kind>/list_changed`` (the capability declares ``listChanged: true``).

Method handlers are ``handler(params, ctx) -> result`` functions in the dispatcher table;
``ctx`` is the request's ``Context`` (its session, version and client capabilities).

Lock order: ``_registry_mutex`` first, then ``_conns_lock``; neither is held while a
notification is written or a user function runs.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import json
import logging
import re
import secrets
import threading
import time
import typing
import weakref
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from typing import Any, Callable, Iterable, Iterator, TypeVar

from . import content as content_mod
from .connection import LOG_LEVELS, Context, ServerConnection
from .errors import (Cancelled, DefinitionError, InvalidParams, McpError, MethodNotFound,
                     MissingClientCapability, ResourceError, ResourceNotFound, ToolError)
from .protocol import jsonrpc, versions
from .protocol.dispatch import Dispatcher
from .protocol.modern import (META_SERVER_INFO, META_SUBSCRIPTION, TASKS_EXTENSION, BeginTask,
                              InputRequired, StateSealer, all_supported, has_tasks, header_params,
                              params_digest)
from .schema import (ArgumentError, compile_converter, compile_validator, convert, is_structured, schema_for, signature_schema, to_jsonable,
                     validate)
from .sync import FIFOMutex, may_block
from .tasks import TaskManager
from .tasks.runtime import task_notification

log = logging.getLogger("mcpsync.server")

F = TypeVar("F", bound=Callable[..., Any])

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
PAGE_SIZE = 100
MAX_TIMED_OUT_CALLS = 64       # tool threads still running past their limit before refusing
MAX_COMPLETION_VALUES = 100

# Fields of a Tool object by revision (older clients get only what their schema knows).
_TOOL_FIELDS = {
    versions.V2024_11_05: ("name", "description", "inputSchema"),
    versions.V2025_03_26: ("name", "description", "inputSchema", "annotations"),
    versions.V2025_06_18: ("name", "title", "description", "inputSchema", "outputSchema",
                           "annotations", "_meta"),
}


@dataclass
class ToolDef:
    name: str
    fn: Callable[..., Any]
    description: str
    input_schema: dict[str, Any]
    arg_hints: dict[str, Any]
    ctx_param: str | None
    output_schema: dict[str, Any] | None = None
    wrap_output: bool = False      # structured output of a non-object return: {"result": value}
    title: str | None = None
    annotations: dict[str, Any] | None = None
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    var_keyword: bool = False      # the function takes **kwargs: pass every argument through
    validate_arguments: bool = True  # False: arguments go to fn unchecked (a hub proxy: the upstream judges)
    task: str | None = None        # "optional" / "required": may run as a task (2026-07-28 tasks extension)
    defer_task: bool = False       # the task starts at ctx.begin_task(), after MRTR input
    # Derived once (hot path): a specialised argument validator and per-argument converters.
    check: Callable[[Any], list[str]] = field(init=False, repr=False)
    converters: dict[str, Callable[[Any], Any] | None] = field(init=False, repr=False)
    header_params: tuple[tuple[str, str], ...] = field(init=False, repr=False)  # x-mcp-header arguments

    def __post_init__(self) -> None:
        self.check = compile_validator(self.input_schema)
        self.header_params = header_params(self.input_schema)
        self.converters = {name: compile_converter(hint) for name, hint in self.arg_hints.items()}

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "description": self.description,
                             "inputSchema": self.input_schema}
        for key, value in (("title", self.title), ("outputSchema", self.output_schema),
                           ("annotations", self.annotations), ("icons", self.icons),
                           ("execution", self.execution), ("_meta", self.meta)):
            if value is not None:
                d[key] = value
        return d


@dataclass
class ResourceDef:
    uri: str                       # for templates: the RFC 6570 template
    fn: Callable[..., Any]
    name: str
    description: str | None
    mime_type: str | None
    ctx_param: str | None
    title: str | None = None
    size: int | None = None
    annotations: dict[str, Any] | None = None
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None
    pattern: re.Pattern[str] | None = None  # templates only
    arg_hints: dict[str, Any] = field(default_factory=dict)

    def describe(self, template: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"uriTemplate" if template else "uri": self.uri, "name": self.name}
        for key, value in (("title", self.title), ("description", self.description),
                           ("mimeType", self.mime_type), ("size", None if template else self.size),
                           ("annotations", self.annotations), ("icons", self.icons),
                           ("_meta", self.meta)):
            if value is not None:
                d[key] = value
        return d


@dataclass
class PromptDef:
    name: str
    fn: Callable[..., Any]
    description: str
    arguments: list[dict[str, Any]]
    arg_hints: dict[str, Any]
    ctx_param: str | None
    title: str | None = None
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "description": self.description,
                             "arguments": self.arguments}
        for key, value in (("title", self.title), ("icons", self.icons), ("_meta", self.meta)):
            if value is not None:
                d[key] = value
        return d


@dataclass(frozen=True)
class ProxyCompleter:
    """A completer that answers from the whole request rather than (value, context): the
    hub's, which forwards ``completion/complete`` to the upstream that owns the prompt or
    template. ``fn(ctx)`` returns the values."""

    fn: Callable[[Context], list[str]]


@dataclass(frozen=True)
class Registry:
    """One immutable generation of everything the server offers."""

    tools: dict[str, ToolDef] = field(default_factory=dict)
    resources: dict[str, ResourceDef] = field(default_factory=dict)
    templates: dict[str, ResourceDef] = field(default_factory=dict)
    prompts: dict[str, PromptDef] = field(default_factory=dict)
    completers: dict[tuple[str, str, str], Any] = field(default_factory=dict)  # fn or ProxyCompleter
    generation: int = 0


def _ctx_param(fn: Callable[..., Any]) -> str | None:
    """The name of the parameter that receives the ``Context``, if any."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    for name, param in inspect.signature(fn).parameters.items():
        if hints.get(name) is Context or param.annotation in (Context, "Context"):
            return name
    return None


def _signature(fn: Callable[..., Any], ctx: str | None, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``signature_schema`` for a tool, prompt or resource function, with one warning per
    registration for parameters that have no type hint (they take any JSON value)."""
    schema, hints = signature_schema(fn, skip=frozenset({ctx}) if ctx else frozenset())
    untyped = [name for name, p in inspect.signature(fn).parameters.items()
               if p.annotation is p.empty and name in hints]
    if untyped:
        log.warning("%s %s(): parameter(s) %s have no type hint: any JSON value is accepted "
                    "and passed as it is", kind, fn.__qualname__, ", ".join(map(repr, untyped)))
    return schema, hints


def _is_content_type(hint: Any) -> bool:
    """Content classes (Image, Resource …) and ToolResult are returned as content, not data."""
    return isinstance(hint, type) and (hasattr(hint, "to_content") or hint is content_mod.ToolResult)


def _doc(fn: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(fn)
    return doc.strip() if doc else None


def _template_regex(template: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex for an RFC 6570 level-1/2 template (``{var}``, ``{+var}``) and its variables."""
    names: list[str] = []
    out = []
    pos = 0
    for m in re.finditer(r"\{(\+?)([A-Za-z0-9_]+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        names.append(m.group(2))
        out.append(f"(?P<{m.group(2)}>.+)" if m.group(1) else f"(?P<{m.group(2)}>[^/?#]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$"), names


def _uri_variable(hint: Any, text: str) -> Any:
    """A template variable (always text in the URI) as the parameter's type: ``"3"`` for an
    ``int`` parameter is parsed as JSON. A value that fits neither way is not this resource."""
    schema = schema_for(hint)
    if not validate(schema, text):
        try:
            return convert(hint, text)
        except ArgumentError as exc:
            raise InvalidParams(f"Invalid params: {exc}") from None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if value is None or validate(schema, value):
        raise InvalidParams(f"Invalid params: {text!r} is not a valid value for this resource template")
    try:
        return convert(hint, value)
    except ArgumentError as exc:
        raise InvalidParams(f"Invalid params: {exc}") from None


@contextlib.contextmanager
def _user_errors(kind: type[McpError]) -> Iterator[None]:
    """A ``ToolError`` raised by a resource or prompt function is its author's message for
    the client: sent as ``kind`` (McpErrors pass as they are; anything else stays an
    internal error whose details never leave the server)."""
    try:
        yield
    except ToolError as exc:
        raise kind(str(exc)) from None


def _for_revision(blocks: list[dict[str, Any]], feats: versions.Features) -> list[dict[str, Any]]:
    """Content blocks the session's revision defines: audio (2025-03-26) and resource_link
    (2025-06-18) become text for older clients, whose schemas have no such blocks."""
    if feats.audio and feats.structured_content:
        return blocks
    out = []
    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "audio" and not feats.audio:
            b = {"type": "text", "text": f"[{b.get('mimeType') or 'audio'} audio omitted: "
                                         "the client's protocol revision has no audio content]"}
        elif kind == "resource_link" and not feats.structured_content:
            b = {"type": "text", "text": f"{b.get('title') or b.get('name')}: {b.get('uri')}"}
        out.append(b)
    return out


def _json_text(data: Any) -> str:
    """JSON text of a tool's structured result; ValueError for NaN or infinity."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def _encode_cursor(offset: int, generation: int) -> str:
    return base64.urlsafe_b64encode(f"{generation}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        _gen, offset = raw.split(":")
        value = int(offset)
        if value < 0:
            raise ValueError
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidParams("Invalid params: invalid pagination cursor") from None


class Server:
    """An MCP server: register functions with the decorators, then serve it with
    ``mcpsync.serve(server)`` or ``python -m mcpsync serve module:server``."""

    def __init__(self, name: str, version: str = "0.1.0", *, title: str | None = None,
                 description: str | None = None, instructions: str | None = None,
                 website_url: str | None = None, icons: list[dict[str, Any]] | None = None,
                 page_size: int = PAGE_SIZE, tool_timeout_s: float | None = None,
                 max_timed_out_calls: int = MAX_TIMED_OUT_CALLS) -> None:
        self.name = name
        # Per-call limit: a tool still running after this many seconds gets its call answered
        # with an error result and its Context cancelled; its thread is counted in
        # _overrun until the function returns, and past max_timed_out_calls new calls are
        # refused rather than letting abandoned threads pile up.
        self.tool_timeout_s = tool_timeout_s
        self.max_timed_out_calls = max_timed_out_calls
        self._overrun_lock = threading.Lock()  # guards _overrun
        self._overrun = 0
        self.version = version
        self.title = title
        self.description = description
        self.instructions = instructions
        self.website_url = website_url
        self.icons = icons
        self.page_size = page_size
        # Writers of the registry queue here in arrival order: stage outside, commit inside.
        self._registry_mutex = FIFOMutex()
        self._registry = Registry()
        self._list_cache: dict[tuple[str, str | None, int], list[dict[str, Any]]] = {}
        # Guards _conns (the live connections, for broadcasts); taken briefly, never across I/O.
        self._conns_lock = threading.Lock()
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self._roots_changed: list[Callable[[Context | ServerConnection], None]] = []
        self._session_closed_hooks: list[Callable[[ServerConnection], None]] = []
        # Seals the requestState of multi round-trip requests (stateless era); the secret
        # lives as long as this process, so a state outlives no restart. Shared state
        # (mcpsync.state.SharedState.attach) replaces it with the key ring all instances share.
        self._sealer = StateSealer(secrets.token_bytes(32))
        # Shared state hook (issue 17): when set, notify_list_changed/notify_resource_updated
        # also hand their message to it for the other instances, whose buses call
        # deliver_list_changed/deliver_resource_updated. None: this process is the only one.
        self.publish: Callable[[dict[str, Any]], None] | None = None
        # Guards _listeners (the live subscriptions/listen streams); taken briefly.
        self._listeners_lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._server_meta: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # one revision's, swapped whole
        # Tasks (2026-07-28 extension): records, the task threads, TTL expiry; close() ends them.
        self.tasks = TaskManager(self)
        self.dispatcher = self._build_dispatcher()

    def close(self, timeout: float | None = None) -> bool:
        """Shutdown: cancel this server's running tasks and join their threads."""
        return self.tasks.close() if timeout is None else self.tasks.close(timeout)

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
        tool_name = name or fn.__name__
        if task not in (None, "optional", "required"):
            raise DefinitionError(f"tool {tool_name!r}: task must be None, 'optional' or "
                                  f"'required', not {task!r}")
        if not TOOL_NAME_RE.match(tool_name):
            raise DefinitionError(f"invalid tool name {tool_name!r}: 1-128 characters of A-Z a-z 0-9 _ - .")
        self._check_new("tools", tool_name, replace)
        ctx = _ctx_param(fn)
        schema, hints = _signature(fn, ctx, "tool")
        wrap = False
        if output_schema is None and structured_output is not False:
            ret = typing.get_type_hints(fn, include_extras=True).get("return", inspect.Parameter.empty)
            if is_structured(ret) and not _is_content_type(ret):
                output_schema = schema_for(ret)
            elif structured_output and ret is not inspect.Parameter.empty:
                output_schema = {"type": "object", "properties": {"result": schema_for(ret)},
                                 "required": ["result"]}
                wrap = True
        tool = ToolDef(tool_name, fn, description or _doc(fn) or tool_name,
                       input_schema if input_schema is not None else schema, hints, ctx,
                       output_schema, wrap, title, annotations, icons, meta)
        tool.var_keyword = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
        tool.task, tool.defer_task = task, defer_task and task is not None
        self._commit(lambda r: dataclass_replace(r, tools={**r.tools, tool_name: tool}), "tools")
        return tool

    def remove_tool(self, name: str) -> bool:
        return self._remove("tools", name)

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
        self._check_new("templates" if "{" in uri else "resources", uri, replace)
        ctx = _ctx_param(fn)
        res = ResourceDef(uri, fn, name or fn.__name__, description or _doc(fn), mime_type, ctx,
                          title, size, annotations, icons, meta)
        if "{" in uri:
            res.pattern, names = _template_regex(uri)
            _, hints = _signature(fn, ctx, "resource")
            res.arg_hints = hints
            missing = set(names) - set(hints)
            if missing and not any(p.kind == p.VAR_KEYWORD
                                   for p in inspect.signature(fn).parameters.values()):
                raise DefinitionError(f"resource template {uri!r}: {fn.__qualname__}() lacks "
                                      f"parameters {sorted(missing)}")
            self._commit(lambda r: dataclass_replace(r, templates={**r.templates, uri: res}), "resources")
        else:
            self._commit(lambda r: dataclass_replace(r, resources={**r.resources, uri: res}), "resources")
        return res

    def remove_resource(self, uri: str) -> bool:
        return self._remove("resources", uri) or self._remove("templates", uri)

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
        prompt_name = name or fn.__name__
        self._check_new("prompts", prompt_name, replace)
        ctx = _ctx_param(fn)
        schema, hints = _signature(fn, ctx, "prompt")
        required = set(schema.get("required", ()))
        arguments = []
        for arg, prop in schema["properties"].items():
            a: dict[str, Any] = {"name": arg, "required": arg in required}
            if prop.get("description"):
                a["description"] = prop["description"]
            arguments.append(a)
        p = PromptDef(prompt_name, fn, description or _doc(fn) or prompt_name, arguments, hints,
                      ctx, title, icons, meta)
        self._commit(lambda r: dataclass_replace(r, prompts={**r.prompts, prompt_name: p}), "prompts")
        return p

    def remove_prompt(self, name: str) -> bool:
        return self._remove("prompts", name)

    def completion(self, *, argument: str, prompt: str | None = None,
                   resource_template: str | None = None) -> Callable[[F], F]:
        """Register ``fn(value, context_arguments) -> list[str]`` to complete one argument of a
        prompt or one variable of a resource template."""
        if (prompt is None) == (resource_template is None):
            raise ValueError("name exactly one of prompt= or resource_template=")
        key = ("ref/prompt", prompt, argument) if prompt else ("ref/resource", resource_template, argument)

        def decorate(fn: F) -> F:
            self._commit(lambda r: dataclass_replace(r, completers={**r.completers, key: fn}), None)  # type: ignore[dict-item]
            return fn
        return decorate

    def on_roots_changed(self, fn: F) -> F:
        """Call ``fn(connection)`` when a client sends ``notifications/roots/list_changed``."""
        self._roots_changed.append(fn)
        return fn

    # ---- registry internals -------------------------------------------------------------------

    def _check_new(self, attr: str, key: str, replace: bool) -> None:
        """A second definition under one name is a mistake unless it says ``replace=True``."""
        if not replace and key in getattr(self._registry, attr):
            kind = {"tools": "tool", "prompts": "prompt"}.get(attr, "resource")
            raise DefinitionError(f"a {kind} named {key!r} is already registered; pass "
                                  "replace=True to replace it, or choose another name")

    def _commit(self, change: Callable[[Registry], Registry], kind: str | None) -> None:
        with self._registry_mutex:
            new = change(self._registry)
            self._registry = dataclass_replace(new, generation=self._registry.generation + 1)
            self._list_cache = {}
        if kind is not None:
            self.notify_list_changed(kind)

    def _remove(self, attr: str, key: str) -> bool:
        with self._registry_mutex:
            current = getattr(self._registry, attr)
            if key not in current:
                return False
            remaining = {k: v for k, v in current.items() if k != key}
            self._registry = dataclass_replace(self._registry, **{attr: remaining},
                                     generation=self._registry.generation + 1)
            self._list_cache = {}
        self.notify_list_changed("resources" if attr == "templates" else attr)
        return True

    @property
    def registry(self) -> Registry:
        return self._registry

    def update(self, *, tools: Iterable[ToolDef] | None = None,
               resources: Iterable[ResourceDef] | None = None,
               templates: Iterable[ResourceDef] | None = None,
               prompts: Iterable[PromptDef] | None = None,
               completers: dict[tuple[str, str, str], ProxyCompleter] | None = None,
               replace_prefix: str | None = None,
               replace_uri_prefix: str | None = None) -> None:
        """Replace a whole set of definitions at once (the hub's refresh): the entries whose
        name starts with ``replace_prefix`` (resources and templates: whose URI starts with
        ``replace_uri_prefix``, default ``replace_prefix``) are dropped and the given ones
        added, in one commit, so no reader ever sees half an update. A kind passed as None
        is left alone. Completers are keyed ``(ref type, prompt name or template URI,
        argument)`` and replaced by the same prefixes."""
        uri_prefix = replace_prefix if replace_uri_prefix is None else replace_uri_prefix

        def change(r: Registry) -> Registry:
            def merged(old: dict[str, Any], new: Iterable[Any] | None, key: str,
                       prefix: str | None) -> dict[str, Any]:
                if new is None:
                    return old
                kept = {k: v for k, v in old.items() if prefix is None or not k.startswith(prefix)}
                kept.update({getattr(d, key): d for d in new})
                return kept
            kept_completers = r.completers
            if completers is not None:
                def replaced(key: tuple[str, str, str]) -> bool:
                    prefix = replace_prefix if key[0] == "ref/prompt" else uri_prefix
                    return prefix is None or key[1].startswith(prefix)
                kept_completers = {k: v for k, v in r.completers.items() if not replaced(k)}
                kept_completers.update(completers)
            return dataclass_replace(r, tools=merged(r.tools, tools, "name", replace_prefix),
                           resources=merged(r.resources, resources, "uri", uri_prefix),
                           templates=merged(r.templates, templates, "uri", uri_prefix),
                           prompts=merged(r.prompts, prompts, "name", replace_prefix),
                           completers=kept_completers)
        with self._registry_mutex:
            self._registry = dataclass_replace(change(self._registry), generation=self._registry.generation + 1)
            self._list_cache = {}
        for kind, given in (("tools", tools), ("resources", resources or templates), ("prompts", prompts)):
            if given is not None:
                self.notify_list_changed(kind)

    # ---- connections and broadcasts ------------------------------------------------------------

    def connect(self, *, session_id: str | None = None,
                send: Callable[[dict[str, Any]], None] | None = None) -> ServerConnection:
        """A new protocol handler for one session of this server."""
        conn = ServerConnection(self, session_id=session_id, send=send)
        with self._conns_lock:
            self._conns.add(conn)
        return conn

    def _forget(self, conn: ServerConnection) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def is_connected(self, conn: ServerConnection) -> bool:
        """Whether ``conn`` is a live session made by ``connect`` (not a stateless request's)."""
        with self._conns_lock:
            return conn in self._conns

    def on_session_closed(self, fn: Callable[[ServerConnection], None]) -> Callable[[ServerConnection], None]:
        """Call ``fn(connection)`` when a session ends (``ServerConnection.close``), on the
        closing thread with no lock held (the hub reaps per-session upstreams with it)."""
        self._session_closed_hooks.append(fn)
        return fn

    def _session_closed(self, conn: ServerConnection) -> None:
        if not self._session_closed_hooks:
            return
        with may_block():  # hooks may block (the hub stops a per-session upstream)
            for fn in list(self._session_closed_hooks):
                try:
                    fn(conn)
                except Exception:
                    log.exception("session-closed hook %r failed", fn)

    def connections(self) -> list[ServerConnection]:
        with self._conns_lock:
            return list(self._conns)

    def _on_initialized(self, conn: ServerConnection) -> None:
        pass

    def notify_list_changed(self, kind: str) -> int:
        """Send ``notifications/<kind>/list_changed`` to every initialized session and to the
        ``subscriptions/listen`` streams that asked for it (on every instance, with shared
        state). Returns how many streams of this process got it."""
        sent = self.deliver_list_changed(kind)
        if self.publish is not None:
            self.publish({"k": "list", "kind": kind})
        return sent

    def deliver_list_changed(self, kind: str) -> int:
        """``notify_list_changed`` in this process only."""
        msg = jsonrpc.notification(f"notifications/{kind}/list_changed")
        sent = self._to_listeners(lambda lst: lst.wants_list(kind), msg)
        for conn in self.connections():
            if conn.phase == "ready" and not conn.closed:
                try:
                    conn.send(msg)
                    sent += 1
                except Exception:
                    log.debug("list_changed not delivered to %s", conn.session_id)
        return sent

    def notify_resource_updated(self, uri: str) -> int:
        """Send ``notifications/resources/updated`` to the sessions and listen streams
        subscribed to ``uri`` (on every instance, with shared state). Returns how many
        streams of this process got it."""
        sent = self.deliver_resource_updated(uri)
        if self.publish is not None:
            self.publish({"k": "resource", "uri": uri})
        return sent

    def deliver_resource_updated(self, uri: str) -> int:
        """``notify_resource_updated`` in this process only."""
        msg = jsonrpc.notification("notifications/resources/updated", {"uri": uri})
        sent = self._to_listeners(lambda lst: lst.wants_resource(uri), msg)
        for conn in self.connections():
            if conn.is_subscribed(uri) and not conn.closed:
                try:
                    conn.send(msg)
                    sent += 1
                except Exception:
                    log.debug("resource update not delivered to %s", conn.session_id)
        return sent

    def notify_task(self, record: dict[str, Any]) -> int:
        """A task's status changed: ``notifications/tasks`` (the whole task) to the
        ``subscriptions/listen`` streams that follow it (its creator's only)."""
        task_id = record["taskId"]
        return self._to_listeners(lambda lst: lst.wants_task(task_id), task_notification(record))

    def _to_listeners(self, wanted: Callable[["Listener"], bool], msg: dict[str, Any]) -> int:
        with self._listeners_lock:
            targets = [lst for lst in self._listeners if wanted(lst)]
        for lst in targets:
            lst.deliver(msg)
        return len(targets)

    # ---- the stateless era (2026-07-28) --------------------------------------------------------

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

    def _discover(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        result: dict[str, Any] = {"supportedVersions": all_supported(),
                                  "capabilities": self.capabilities(ctx.version),
                                  "_meta": {META_SERVER_INFO: self.server_info(ctx.version)}}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _listen(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """``subscriptions/listen``: acknowledge the honoured filter, then stream the chosen
        notifications (tagged with the subscription id) until the client goes away."""
        wanted = params.get("notifications") or {}
        if type(wanted) is not dict:
            raise InvalidParams("Invalid params: notifications must be an object")
        task_ids = wanted.get("taskIds")
        if task_ids is not None:
            if not has_tasks(ctx.client_capabilities):
                raise MissingClientCapability(
                    "Missing required client capability: the io.modelcontextprotocol/tasks "
                    "extension", {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
            if type(task_ids) is not list:
                raise InvalidParams("Invalid params: notifications.taskIds must be an array")
        listener = Listener(ctx, wanted, self.tasks.owned(task_ids or [], ctx.principal))
        with self._listeners_lock:  # listening before the ack: nothing between is lost
            self._listeners.add(listener)
        listener.acknowledge()
        try:
            while not ctx.wait_cancelled(LISTEN_KEEPALIVE_S):
                keepalive = getattr(ctx.sink, "keepalive", None)
                if keepalive is not None:
                    keepalive()
                if listener.ended:
                    break
        finally:
            with self._listeners_lock:
                self._listeners.discard(listener)
        if ctx.cancelled:
            raise Cancelled()
        return {"_meta": {META_SUBSCRIPTION: ctx.request_id}}

    def end_listeners(self) -> None:
        """End every subscriptions/listen stream gracefully (with its result): shutdown."""
        with self._listeners_lock:
            listeners = list(self._listeners)
        for lst in listeners:
            lst.end()

    # ---- protocol handlers ---------------------------------------------------------------------

    def capabilities(self, version: str | None = None) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "logging": {},
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
        }
        if versions.features(version or versions.LATEST_HANDSHAKE_VERSION).completions_capability:
            caps["completions"] = {}
        if version in versions.MODERN_VERSIONS:
            caps["extensions"] = {TASKS_EXTENSION: {}}
        return caps

    def server_info(self, version: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "version": self.version}
        feats = versions.features(version or versions.LATEST_HANDSHAKE_VERSION)
        if feats.structured_content and self.title:
            info["title"] = self.title
        if feats.icons:
            for key, value in (("description", self.description), ("websiteUrl", self.website_url),
                               ("icons", self.icons)):
                if value is not None:
                    info[key] = value
        return info

    def server_meta(self, version: str | None) -> dict[str, Any]:
        """``{serverInfo key: {name, version}}`` for 2026-07-28 results: one shared dict
        (rebuilt if the name or version changes), never mutated."""
        key = (version, self.name, self.version)
        cached = self._server_meta
        if cached is None or cached[0] != key:
            # name and version identify the server on every result; the rest of its
            # Implementation (title, description, icons …) is in server/discover's _meta only,
            # so a hot tools/call does not encode it again and again.
            cached = self._server_meta = (key, {META_SERVER_INFO: {"name": self.name, "version": self.version}})
        return cached[1]

    def initialize_result(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = {"protocolVersion": version,
                                  "capabilities": self.capabilities(version),
                                  "serverInfo": self.server_info(version)}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _build_dispatcher(self) -> Dispatcher:
        d = Dispatcher()
        d.on_request("initialize", lambda p, ctx: ctx.conn.initialize(p))
        d.on_request("ping", lambda p, ctx: {})
        d.on_request("tools/list", self._tools_list)
        d.on_request("tools/call", self._tools_call)
        d.on_request("resources/list", self._resources_list)
        d.on_request("resources/templates/list", self._templates_list)
        d.on_request("resources/read", self._resources_read)
        d.on_request("resources/subscribe", self._subscribe)
        d.on_request("resources/unsubscribe", self._unsubscribe)
        d.on_request("prompts/list", self._prompts_list)
        d.on_request("prompts/get", self._prompts_get)
        d.on_request("completion/complete", self._complete)
        d.on_request("logging/setLevel", self._set_level)
        d.on_request("server/discover", self._discover)
        d.on_request("subscriptions/listen", self._listen)
        d.on_request("tasks/get", lambda p, ctx: self.tasks.get(p, ctx))
        d.on_request("tasks/update", lambda p, ctx: self.tasks.update(p, ctx))
        d.on_request("tasks/cancel", lambda p, ctx: self.tasks.cancel(p, ctx))
        d.on_notification("notifications/roots/list_changed", self._roots_list_changed)
        return d

    def _page(self, kind: str, version: str | None, params: dict[str, Any], reg: Registry,
              render: Callable[[], list[dict[str, Any]]]) -> dict[str, Any]:
        # `reg` is the generation `render` reads: cached under its own number, never a newer one.
        key = (kind, version, reg.generation)
        items = self._list_cache.get(key)
        if items is None:
            items = render()
            self._list_cache[key] = items  # a racing writer may drop it: harmless, rebuilt next time
        offset = _decode_cursor(params.get("cursor"))
        page = items[offset:offset + self.page_size]
        result: dict[str, Any] = {kind: page}
        if offset + self.page_size < len(items):
            result["nextCursor"] = _encode_cursor(offset + self.page_size, reg.generation)
        return result

    def _tools_list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        version = ctx.version
        reg = self._registry

        def render() -> list[dict[str, Any]]:
            fields = _TOOL_FIELDS.get(version or "")
            out = []
            for name in sorted(reg.tools):
                d = reg.tools[name].describe()
                if fields is not None:
                    d = {k: v for k, v in d.items() if k in fields}
                out.append(d)
            return out
        return self._page("tools", version, params, reg, render)

    def _tools_call(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = params.get("name")
        tool = self._registry.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise InvalidParams(f"Invalid params: unknown tool {name!r}")
        args = params.get("arguments")
        if args is None:
            args = {}
        feats = versions.features(ctx.version)
        kwargs: dict[str, Any] = {}
        if not isinstance(args, dict):
            problems = ["arguments must be an object"]
        else:
            problems = tool.check(args)
        if not problems:
            converters = tool.converters
            for k, v in args.items():
                if k in converters:
                    conv = converters[k]
                    try:
                        kwargs[k] = v if conv is None else conv(v)
                    except ArgumentError as exc:  # validated JSON its type still refuses
                        problems.append(f"$.{k}: {exc}")
                elif tool.var_keyword:
                    kwargs[k] = v
        if problems:
            message = f"Invalid arguments for tool {tool.name}: " + "; ".join(problems[:5])
            if feats.tool_input_errors_as_results:
                return {"content": [{"type": "text", "text": message}], "isError": True}
            raise InvalidParams(message)
        if tool.ctx_param:
            kwargs[tool.ctx_param] = ctx
        if tool.task is not None and ctx.modern and ctx.task is None:
            created = self.tasks.route(tool, params, ctx)
            if created is not None:
                return created
        try:
            with may_block(tool.fn):  # user code may block: it must not hold up others' turn
                value = (tool.fn(**kwargs) if self.tool_timeout_s is None
                         else self._call_with_timeout(tool, kwargs, ctx))
        except InputRequired:
            raise  # the stateless era's multi round-trip: the driver answers input_required
        except BeginTask:  # a defer_task tool gathered its input: the rest runs as a task
            return self.tasks.start(tool, params, ctx, ctx._used or {})
        except (Cancelled, McpError) as exc:
            if isinstance(exc, Cancelled) or ctx.cancelled:
                raise Cancelled() from None
            if ctx.task is not None or (ctx.modern and isinstance(exc, MissingClientCapability)):
                raise  # a protocol error: -32021 in 2026-07-28, a failed task
            return {"content": [{"type": "text", "text": exc.message}], "isError": True}
        except ToolError as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        except Exception as exc:
            if ctx.task is not None:
                raise  # a crash fails the task
            log.exception("tool %s raised", tool.name)
            return {"content": [{"type": "text", "text": f"Tool {tool.name} failed: {type(exc).__name__}: {exc}"}],
                    "isError": True}
        try:
            result = self._tool_result(tool, value, feats)
        except ValueError as exc:  # NaN or infinity: JSON has no way to say them
            log.warning("tool %s returned a value JSON cannot carry: %s", tool.name, exc)
            return {"content": [{"type": "text", "text": f"Tool {tool.name} returned a value JSON "
                                 f"cannot represent ({exc})"}], "isError": True}
        result["content"] = _for_revision(result["content"], feats)
        return result

    call_tool = _tools_call  # the task runner calls it on a task thread

    def _call_with_timeout(self, tool: ToolDef, kwargs: dict[str, Any], ctx: Context) -> Any:
        """Run the tool on its own thread and wait at most ``tool_timeout_s`` for it."""
        with self._overrun_lock:
            if self._overrun >= self.max_timed_out_calls:
                raise ToolError(f"Tool {tool.name} refused: {self._overrun} earlier calls are "
                                "still running past their time limit")
        outcome: dict[str, Any] = {}
        done = threading.Event()  # set by the runner thread when the tool returned or raised

        def runner() -> None:
            try:
                outcome["value"] = tool.fn(**kwargs)
            except BaseException as exc:  # handed to the waiting thread, re-raised there
                outcome["error"] = exc
            finally:
                with self._overrun_lock:
                    if outcome.get("abandoned"):
                        self._overrun -= 1
                    outcome["finished"] = True
                done.set()

        threading.Thread(target=runner, name=f"mcpsync-tool-{tool.name}"[:60], daemon=True).start()
        if not done.wait(self.tool_timeout_s):
            with self._overrun_lock:
                if not outcome.get("finished"):
                    outcome["abandoned"] = True
                    self._overrun += 1
            if outcome.get("abandoned"):
                ctx.conn.cancel_call(ctx)  # cooperative tools see ctx.cancelled and stop
                raise ToolError(f"Tool {tool.name} timed out after {self.tool_timeout_s:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _tool_result(self, tool: ToolDef, value: Any, feats: versions.Features) -> dict[str, Any]:
        if isinstance(value, content_mod.ToolResult):
            result: dict[str, Any] = {"content": content_mod.to_content_list(value.content)}
            if value.structured is not None:
                # The text copy serves clients that ignore (or, before 2025-06-18, never get)
                # structuredContent; encoding it also refuses NaN and infinity (ValueError).
                text = _json_text(value.structured)
                if not result["content"]:
                    result["content"] = [{"type": "text", "text": text}]
                if feats.structured_content:
                    result["structuredContent"] = value.structured
            if value.is_error:
                result["isError"] = True
            if value.meta:
                result["_meta"] = value.meta
            return result
        if tool.output_schema is not None:
            data = to_jsonable(value)
            structured = {"result": data} if tool.wrap_output else data
            result = {"content": [{"type": "text", "text": _json_text(data)}]}
            if feats.structured_content:
                result["structuredContent"] = structured
            return result
        if type(value) is str:  # the hot path: one text block
            return {"content": [{"type": "text", "text": value}]}
        return {"content": content_mod.to_content_list(value)}

    def _resources_list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self._registry
        return self._page("resources", None, params, reg,
                          lambda: [reg.resources[u].describe(False) for u in sorted(reg.resources)])

    def _templates_list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self._registry
        return self._page("resourceTemplates", None, params, reg,
                          lambda: [reg.templates[u].describe(True) for u in sorted(reg.templates)])

    def find_resource(self, uri: str) -> tuple[ResourceDef, dict[str, str]] | None:
        reg = self._registry
        res = reg.resources.get(uri)
        if res is not None:
            return res, {}
        for tpl in reg.templates.values():
            assert tpl.pattern is not None
            m = tpl.pattern.match(uri)
            if m:
                return tpl, m.groupdict()
        return None

    def _resources_read(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidParams("Invalid params: uri must be a string")
        found = self.find_resource(uri)
        if found is None:
            raise ResourceNotFound(f"Resource not found: {uri}", {"uri": uri},
                                   code=versions.features(ctx.version).resource_not_found_code)
        res, variables = found
        kwargs: dict[str, Any] = {k: _uri_variable(res.arg_hints.get(k, Any), v) for k, v in variables.items()}
        if res.ctx_param:
            kwargs[res.ctx_param] = ctx
        try:
            with may_block(res.fn), _user_errors(ResourceError):
                value = res.fn(**kwargs)
        except ResourceNotFound as exc:  # the function's own "no such item": this revision's code
            raise ResourceNotFound(exc.message, exc.data if exc.data is not None else {"uri": uri},
                                   code=versions.features(ctx.version).resource_not_found_code) from None
        return {"contents": self._contents(uri, res, value)}

    @staticmethod
    def _contents(uri: str, res: ResourceDef, value: Any) -> list[dict[str, Any]]:
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if isinstance(item, content_mod.Resource):
                out.append(item.contents())
                continue
            if isinstance(item, dict) and "uri" in item:
                out.append(item)
                continue
            c: dict[str, Any] = {"uri": uri}
            if isinstance(item, (bytes, bytearray)):
                c["mimeType"] = res.mime_type or "application/octet-stream"
                c["blob"] = base64.b64encode(bytes(item)).decode("ascii")
            else:
                c["mimeType"] = res.mime_type or ("text/plain" if isinstance(item, str) else "application/json")
                c["text"] = item if isinstance(item, str) else json.dumps(to_jsonable(item), ensure_ascii=False)
            out.append(c)
        return out

    def _subscribe(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidParams("Invalid params: uri must be a string")
        ctx.conn.subscribe(uri, True)
        return {}

    def _unsubscribe(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidParams("Invalid params: uri must be a string")
        ctx.conn.subscribe(uri, False)
        return {}

    def _prompts_list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self._registry
        return self._page("prompts", None, params, reg,
                          lambda: [reg.prompts[n].describe() for n in sorted(reg.prompts)])

    def _prompts_get(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = params.get("name")
        prompt = self._registry.prompts.get(name) if isinstance(name, str) else None
        if prompt is None:
            raise InvalidParams(f"Invalid params: unknown prompt {name!r}")
        args = params.get("arguments") or {}
        if not isinstance(args, dict):
            raise InvalidParams("Invalid params: arguments must be an object")
        missing = [a["name"] for a in prompt.arguments if a["required"] and a["name"] not in args]
        if missing:
            raise InvalidParams(f"Invalid params: missing required arguments {missing}")
        try:
            kwargs = {k: convert(prompt.arg_hints.get(k, Any), v) for k, v in args.items()
                      if k in prompt.arg_hints}
        except ArgumentError as exc:
            raise InvalidParams(f"Invalid params: {exc}") from None
        if prompt.ctx_param:
            kwargs[prompt.ctx_param] = ctx
        with may_block(prompt.fn), _user_errors(ResourceError):
            value = prompt.fn(**kwargs)
        result: dict[str, Any] = {"description": prompt.description,
                                  "messages": self._messages(value)}
        feats = versions.features(ctx.version)
        for m in result["messages"]:
            m["content"] = _for_revision([m["content"]], feats)[0]
        return result

    @staticmethod
    def _messages(value: Any) -> list[dict[str, Any]]:
        if isinstance(value, str):
            return [{"role": "user", "content": {"type": "text", "text": value}}]
        out = []
        for m in value if isinstance(value, list) else [value]:
            if isinstance(m, dict) and "role" in m:
                c = m.get("content")
                out.append({**m, "content": content_mod.to_content(c)})
            else:
                out.append({"role": "user", "content": content_mod.to_content(m)})
        return out

    def _complete(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        ref = params.get("ref")
        argument = params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise InvalidParams("Invalid params: ref and argument must be objects")
        kind = ref.get("type")
        target = ref.get("name") if kind == "ref/prompt" else ref.get("uri")
        if kind == "ref/prompt" and target not in self._registry.prompts:
            raise InvalidParams(f"Invalid params: unknown prompt {target!r}")
        if kind not in ("ref/prompt", "ref/resource"):
            raise InvalidParams(f"Invalid params: unknown reference type {kind!r}")
        completer = self._registry.completers.get((str(kind), str(target), str(argument.get("name"))))
        values: list[str] = []
        if completer is not None:
            context = params.get("context") or {}
            with may_block(completer):
                got = (completer.fn(ctx) if isinstance(completer, ProxyCompleter) else
                       completer(str(argument.get("value", "")), dict(context.get("arguments") or {})))
            values = [str(v) for v in got]
        return {"completion": {"values": values[:MAX_COMPLETION_VALUES], "total": len(values),
                               "hasMore": len(values) > MAX_COMPLETION_VALUES}}

    def _set_level(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        ctx.conn.set_log_level(params.get("level"))
        return {}

    def _roots_list_changed(self, params: dict[str, Any], conn: ServerConnection) -> None:
        if not self._roots_changed:
            return
        with may_block():
            for fn in self._roots_changed:
                fn(conn)


LISTEN_KEEPALIVE_S = 15.0


#: list kind -> its flag in a subscriptions/listen filter
LIST_FILTERS = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
                ("resources", "resourcesListChanged"))


class Listener:
    """One ``subscriptions/listen`` stream: the notifications it asked for, and its sink."""

    def __init__(self, ctx: Context, wanted: dict[str, Any], task_ids: list[str]) -> None:
        self.ctx = ctx
        self.lists = {kind for kind, key in LIST_FILTERS if wanted.get(key) is True}
        uris = wanted.get("resourceSubscriptions")
        self.uris = frozenset(u for u in uris if isinstance(u, str)) if isinstance(uris, list) else frozenset()
        self.tasks = frozenset(task_ids)  # the requester's own live tasks it asked to follow
        self.honoured: dict[str, Any] = {key: True for kind, key in LIST_FILTERS if kind in self.lists}
        if self.uris:
            self.honoured["resourceSubscriptions"] = sorted(self.uris)
        if "taskIds" in wanted:
            self.honoured["taskIds"] = list(task_ids)
        self.ended = False
        # Orders writes to this listen stream: the ack strictly first, then notifications
        # as they come (it is this stream's write lock; held across one sink call).
        self._lock = threading.Lock()
        self._acked = False
        self._early: list[dict[str, Any]] = []

    def acknowledge(self) -> None:
        ack = jsonrpc.notification("notifications/subscriptions/acknowledged",
                                   {"_meta": {META_SUBSCRIPTION: self.ctx.request_id},
                                    "notifications": self.honoured})
        with self._lock:
            self.ctx.sink(ack)
            for msg in self._early:
                self._send(msg)
            self._early = []
            self._acked = True

    def wants_list(self, kind: str) -> bool:
        return kind in self.lists

    def wants_task(self, task_id: str) -> bool:
        return task_id in self.tasks

    def wants_resource(self, uri: str) -> bool:
        return uri in self.uris or any(uri.startswith(u.rstrip("/") + "/") for u in self.uris)

    def deliver(self, msg: dict[str, Any]) -> None:
        params = dict(msg.get("params") or {})
        params["_meta"] = {**(params.get("_meta") or {}), META_SUBSCRIPTION: self.ctx.request_id}
        tagged = {**msg, "params": params}
        with self._lock:
            if not self._acked:
                self._early.append(tagged)
                return
            self._send(tagged)

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self.ctx.sink(msg)
        except Exception:
            log.debug("listen stream %r: delivery failed", self.ctx.request_id)

    def end(self) -> None:
        self.ended = True
        self.ctx.wake()


__all__ = ["Server", "Context", "LOG_LEVELS", "MethodNotFound"]
