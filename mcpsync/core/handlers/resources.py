"""``resources/list``, ``resources/templates/list``, ``resources/read``,
``resources/subscribe`` and ``resources/unsubscribe``. A template's variables are parsed
into its function's parameter types; what the function returns becomes contents (text,
JSON, or a base64 blob); ``ResourceNotFound`` and ``ResourceError`` it raises reach the
client with their message (``ToolError`` too), anything else is an internal error."""
from __future__ import annotations

import base64
import contextlib
import json
from typing import Any, Iterator

from ... import content as content_mod
from ...errors import InvalidParams, McpError, ResourceError, ResourceNotFound, ToolError
from ...protocol import versions
from ...schema import ArgumentError, convert, schema_for, to_jsonable, validate
from ..calls import user_code
from ..context import Context
from ..registry import RegistryStore, ResourceDef
from .paging import page


class ResourceHandlers:
    """The resource methods of one server."""

    def __init__(self, registry: RegistryStore, page_size: int) -> None:
        self.registry = registry
        self.page_size = page_size

    def list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self.registry.current
        return page(self.registry, self.page_size, "resources", None, params, reg,
                          lambda: [reg.resources[u].describe(False) for u in sorted(reg.resources)])

    def templates(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self.registry.current
        return page(self.registry, self.page_size, "resourceTemplates", None, params, reg,
                          lambda: [reg.templates[u].describe(True) for u in sorted(reg.templates)])

    def find(self, uri: str) -> tuple[ResourceDef, dict[str, str]] | None:
        """The resource or template serving ``uri``, and the template's variables."""
        reg = self.registry.current
        res = reg.resources.get(uri)
        if res is not None:
            return res, {}
        for tpl in reg.templates.values():
            assert tpl.pattern is not None
            m = tpl.pattern.match(uri)
            if m:
                return tpl, m.groupdict()
        return None

    def read(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise InvalidParams("Invalid params: uri must be a string")
        found = self.find(uri)
        if found is None:
            raise ResourceNotFound(f"Resource not found: {uri}", {"uri": uri},
                                   code=versions.features(ctx.version).resource_not_found_code)
        res, variables = found
        kwargs: dict[str, Any] = {k: _uri_variable(res.arg_hints.get(k, Any), v) for k, v in variables.items()}
        if res.ctx_param:
            kwargs[res.ctx_param] = ctx
        try:
            with user_code(res.fn), user_errors(ResourceError):
                value = res.fn(**kwargs)
        except ResourceNotFound as exc:  # the function's own "no such item": this revision's code
            raise ResourceNotFound(exc.message, exc.data if exc.data is not None else {"uri": uri},
                                   code=versions.features(ctx.version).resource_not_found_code) from None
        return {"contents": _contents(uri, res, value)}

    def subscribe(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _subscription(params, ctx, True)

    def unsubscribe(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _subscription(params, ctx, False)


def _subscription(params: dict[str, Any], ctx: Context, on: bool) -> dict[str, Any]:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise InvalidParams("Invalid params: uri must be a string")
    ctx.conn.subscribe(uri, on)
    return {}


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
def user_errors(kind: type[McpError]) -> Iterator[None]:
    """A ``ToolError`` raised by a resource or prompt function is its author's message for
    the client: sent as ``kind`` (McpErrors pass as they are; anything else stays an
    internal error whose details never leave the server)."""
    try:
        yield
    except ToolError as exc:
        raise kind(str(exc)) from None
