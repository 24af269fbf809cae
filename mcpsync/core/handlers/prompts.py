"""``prompts/list`` and ``prompts/get``: arguments converted to the function's parameter
types; a string result is one user message, a list is messages (content blocks of the
client's revision)."""
from __future__ import annotations

from typing import Any

from ... import content as content_mod
from ...errors import InvalidParams, ResourceError
from ...protocol import versions
from ...schema import ArgumentError, convert
from ..calls import user_code
from ..context import Context
from ..registry import RegistryStore
from .paging import page
from .resources import user_errors
from .tools import for_revision


class PromptHandlers:
    """The prompt methods of one server."""

    def __init__(self, registry: RegistryStore, page_size: int) -> None:
        self.registry = registry
        self.page_size = page_size

    def list(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        reg = self.registry.current
        return page(self.registry, self.page_size, "prompts", None, params, reg,
                          lambda: [reg.prompts[n].describe() for n in sorted(reg.prompts)])

    def get(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = params.get("name")
        prompt = self.registry.current.prompts.get(name) if isinstance(name, str) else None
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
        with user_code(prompt.fn), user_errors(ResourceError):
            value = prompt.fn(**kwargs)
        result: dict[str, Any] = {"description": prompt.description,
                                  "messages": _messages(value)}
        feats = versions.features(ctx.version)
        for m in result["messages"]:
            m["content"] = for_revision([m["content"]], feats)[0]
        return result


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
