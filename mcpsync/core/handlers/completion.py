"""``completion/complete``: the completer registered for a prompt argument or a template
variable (or the hub's ``ProxyCompleter``, which forwards the whole request)."""
from __future__ import annotations

from typing import Any

from ...errors import InvalidParams
from ..calls import user_code
from ..context import Context
from ..registry import ProxyCompleter, RegistryStore

MAX_COMPLETION_VALUES = 100


class CompletionHandler:
    """``completion/complete`` of one server."""

    def __init__(self, registry: RegistryStore) -> None:
        self.registry = registry

    def complete(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        ref = params.get("ref")
        argument = params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise InvalidParams("Invalid params: ref and argument must be objects")
        kind = ref.get("type")
        target = ref.get("name") if kind == "ref/prompt" else ref.get("uri")
        if kind == "ref/prompt" and target not in self.registry.current.prompts:
            raise InvalidParams(f"Invalid params: unknown prompt {target!r}")
        if kind not in ("ref/prompt", "ref/resource"):
            raise InvalidParams(f"Invalid params: unknown reference type {kind!r}")
        completer = self.registry.current.completers.get((str(kind), str(target), str(argument.get("name"))))
        values: list[str] = []
        if completer is not None:
            context = params.get("context") or {}
            with user_code(completer):
                got = (completer.fn(ctx) if isinstance(completer, ProxyCompleter) else
                       completer(str(argument.get("value", "")), dict(context.get("arguments") or {})))
            values = [str(v) for v in got]
        return {"completion": {"values": values[:MAX_COMPLETION_VALUES], "total": len(values),
                               "hasMore": len(values) > MAX_COMPLETION_VALUES}}
