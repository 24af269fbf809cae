"""The registry: everything a server offers (tools, resources, templates, prompts,
completers) as one immutable generation, and how definitions are made and committed.

Theory of operation
-------------------
The registry is copy-on-write. A write (registration, removal, the hub's bulk ``update``)
takes ``RegistryStore.mutex`` (a ``FIFOMutex``: writers commit in arrival order), builds new
dicts and swaps the ``Registry`` in whole; readers (every ``*/list`` and ``*/call``) take
``store.current`` without any lock and always see one consistent generation. Rendered
``*/list`` pages are cached per generation and revision (``store.list_cache``), so a hot
``tools/list`` is a dict lookup. After a commit the store calls ``changed(kind)`` (the
server's ``notify_list_changed``) with no lock held.

Definitions are made from plain functions here (``tool_def``, ``resource_def``,
``prompt_def``): the input schema from the type hints, the parameter that receives the
``Context``, the output schema of a structured return; a function that cannot be described
raises ``DefinitionError`` naming it.

Lock order: ``RegistryStore.mutex`` first; nothing is taken under it and no notification is
written while it is held.
"""
from __future__ import annotations

import inspect
import logging
import re
import typing
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from typing import Any, Callable, Iterable

from .. import content as content_mod
from ..errors import DefinitionError
from ..protocol.modern import header_params
from ..schema import (compile_converter, compile_validator, is_structured, schema_for,
                      signature_schema)
from ..sync import FIFOMutex
from .context import Context

log = logging.getLogger("mcpsync.server")

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_KIND = {"tools": "tool", "prompts": "prompt", "resources": "resource", "templates": "resource"}


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

class RegistryStore:
    """The current ``Registry`` and its writers (see the module docstring). ``changed(kind)``
    is called after each commit that touched ``kind`` ("tools", "resources", "prompts")."""

    def __init__(self, changed: Callable[[str], Any]) -> None:
        # Writers of the registry queue here in arrival order: stage outside, commit inside.
        self.mutex = FIFOMutex()
        self.current = Registry()
        # Rendered */list pages by (kind, revision, generation); a racing writer may drop an
        # entry (harmless: rebuilt on the next read). Replaced whole at each commit.
        self.list_cache: dict[tuple[str, str | None, int], list[dict[str, Any]]] = {}
        self._changed = changed

    def add(self, attr: str, key: str, definition: Any, *, replace: bool = False) -> None:
        """Commit one definition under ``key`` in ``attr`` ("tools", "resources",
        "templates", "prompts"); a second one under a name is refused unless ``replace``."""
        with self.mutex:
            current = getattr(self.current, attr)
            if not replace and key in current:
                raise DefinitionError(f"a {_KIND[attr]} named {key!r} is already registered; "
                                      "pass replace=True to replace it, or choose another name")
            changes: dict[str, Any] = {attr: {**current, key: definition}}
            self._swap(dataclass_replace(self.current, **changes))
        self._changed("resources" if attr == "templates" else attr)

    def add_completer(self, key: tuple[str, str, str], fn: Any) -> None:
        with self.mutex:
            self._swap(dataclass_replace(self.current, completers={**self.current.completers, key: fn}))

    def remove(self, attr: str, key: str) -> bool:
        with self.mutex:
            current = getattr(self.current, attr)
            if key not in current:
                return False
            changes: dict[str, Any] = {attr: {k: v for k, v in current.items() if k != key}}
            self._swap(dataclass_replace(self.current, **changes))
        self._changed("resources" if attr == "templates" else attr)
        return True

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

        def merged(old: dict[str, Any], new: Iterable[Any] | None, key: str,
                   prefix: str | None) -> dict[str, Any]:
            if new is None:
                return old
            kept = {k: v for k, v in old.items() if prefix is None or not k.startswith(prefix)}
            kept.update({getattr(d, key): d for d in new})
            return kept

        def replaced(key: tuple[str, str, str]) -> bool:
            prefix = replace_prefix if key[0] == "ref/prompt" else uri_prefix
            return prefix is None or key[1].startswith(prefix)

        with self.mutex:
            r = self.current
            kept_completers = r.completers
            if completers is not None:
                kept_completers = {k: v for k, v in r.completers.items() if not replaced(k)}
                kept_completers.update(completers)
            self._swap(dataclass_replace(r, tools=merged(r.tools, tools, "name", replace_prefix),
                                         resources=merged(r.resources, resources, "uri", uri_prefix),
                                         templates=merged(r.templates, templates, "uri", uri_prefix),
                                         prompts=merged(r.prompts, prompts, "name", replace_prefix),
                                         completers=kept_completers))
        for kind, given in (("tools", tools), ("resources", resources or templates), ("prompts", prompts)):
            if given is not None:
                self._changed(kind)

    def _swap(self, new: Registry) -> None:
        """Publish ``new`` as the next generation (call with ``mutex`` held)."""
        self.current = dataclass_replace(new, generation=self.current.generation + 1)
        self.list_cache = {}


# ---- making definitions from functions --------------------------------------------------------

def tool_def(fn: Callable[..., Any], *, name: str | None = None, title: str | None = None,
             description: str | None = None, annotations: dict[str, Any] | None = None,
             output_schema: dict[str, Any] | None = None, structured_output: bool | None = None,
             icons: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None,
             input_schema: dict[str, Any] | None = None, task: str | None = None,
             defer_task: bool = False) -> ToolDef:
    tool_name = name or fn.__name__
    if task not in (None, "optional", "required"):
        raise DefinitionError(f"tool {tool_name!r}: task must be None, 'optional' or "
                              f"'required', not {task!r}")
    if not TOOL_NAME_RE.match(tool_name):
        raise DefinitionError(f"invalid tool name {tool_name!r}: 1-128 characters of A-Z a-z 0-9 _ - .")
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
    return tool


def resource_def(fn: Callable[..., Any], uri: str, *, name: str | None = None,
                 title: str | None = None, description: str | None = None,
                 mime_type: str | None = None, size: int | None = None,
                 annotations: dict[str, Any] | None = None,
                 icons: list[dict[str, Any]] | None = None,
                 meta: dict[str, Any] | None = None) -> ResourceDef:
    """A resource, or a resource template when ``uri`` has ``{var}`` parts."""
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
    return res


def prompt_def(fn: Callable[..., Any], *, name: str | None = None, title: str | None = None,
               description: str | None = None, icons: list[dict[str, Any]] | None = None,
               meta: dict[str, Any] | None = None) -> PromptDef:
    prompt_name = name or fn.__name__
    ctx = _ctx_param(fn)
    schema, hints = _signature(fn, ctx, "prompt")
    required = set(schema.get("required", ()))
    arguments = []
    for arg, prop in schema["properties"].items():
        a: dict[str, Any] = {"name": arg, "required": arg in required}
        if prop.get("description"):
            a["description"] = prop["description"]
        arguments.append(a)
    return PromptDef(prompt_name, fn, description or _doc(fn) or prompt_name, arguments, hints,
                     ctx, title, icons, meta)
