"""``tools/list`` and ``tools/call``: arguments validated and converted before the function
runs; its outcome becomes a result (an error result for a ``ToolError``, a crash, a value
JSON cannot carry or invalid arguments from a revision that reports them so); a tool of a
2026-07-28 tasks-capable client may become a task (``TaskRouter``)."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from ... import content as content_mod
from ...errors import Cancelled, InvalidParams, McpError, MissingClientCapability, ToolError
from ...protocol import versions
from ...protocol.modern import BeginTask, InputRequired
from ...schema import ArgumentError, to_jsonable
from ..calls import ToolCalls
from ..context import Context
from ..host import TaskRouter
from ..registry import RegistryStore, ToolDef
from .paging import page

log = logging.getLogger("mcpsync.server")

# Fields of a Tool object by revision (older clients get only what their schema knows).
_TOOL_FIELDS = {
    versions.V2024_11_05: ("name", "description", "inputSchema"),
    versions.V2025_03_26: ("name", "description", "inputSchema", "annotations"),
    versions.V2025_06_18: ("name", "title", "description", "inputSchema", "outputSchema",
                           "annotations", "_meta"),
}


class ToolHandlers:
    """The two tool methods of one server."""

    def __init__(self, registry: RegistryStore, calls: ToolCalls,
                 tasks: Callable[[], TaskRouter], page_size: int) -> None:
        self.registry = registry
        self.calls = calls
        self.tasks = tasks
        self.page_size = page_size

    def list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        version = ctx.version
        reg = self.registry.current

        def render() -> list[dict[str, Any]]:
            fields = _TOOL_FIELDS.get(version or "")
            out = []
            for name in sorted(reg.tools):
                d = reg.tools[name].describe()
                if fields is not None:
                    d = {k: v for k, v in d.items() if k in fields}
                out.append(d)
            return out
        return page(self.registry, self.page_size, "tools", version, params, reg, render)

    def call(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """``tools/call`` (also run by a task's thread, with ``ctx.task`` set)."""
        name = params.get("name")
        tool = self.registry.current.tools.get(name) if isinstance(name, str) else None
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
            created = self.tasks().route(tool, params, ctx)
            if created is not None:
                return created
        try:
            value = self.calls.call(tool, kwargs, ctx)
        except InputRequired:
            raise  # the modern era's multi round-trip: the runner answers input_required
        except BeginTask:  # a defer_task tool gathered its input: the rest runs as a task
            return self.tasks().start(tool, params, ctx, ctx._used or {})
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
            result = _tool_result(tool, value, feats)
        except ValueError as exc:  # NaN or infinity: JSON has no way to say them
            log.warning("tool %s returned a value JSON cannot carry: %s", tool.name, exc)
            return {"content": [{"type": "text", "text": f"Tool {tool.name} returned a value JSON "
                                 f"cannot represent ({exc})"}], "isError": True}
        result["content"] = for_revision(result["content"], feats)
        return result


def _tool_result(tool: ToolDef, value: Any, feats: versions.Features) -> dict[str, Any]:
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


def for_revision(blocks: list[dict[str, Any]], feats: versions.Features) -> list[dict[str, Any]]:
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
