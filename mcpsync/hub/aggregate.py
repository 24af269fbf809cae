"""Naming, proxies and registration: how upstream tools, prompts and resources appear in the
hub's own ``Server``.

Naming policy
-------------
* Tools and prompts are ``<prefix><separator><name>`` (``github__create_issue``); the
  prefix defaults to the server's name. Characters outside ``[A-Za-z0-9_.-]`` become ``_``.
* A name longer than 128 characters is cut to 119 and given ``-`` and 8 hex digits of the
  SHA-256 of the full original name: deterministic, so the same tool keeps the same name
  across restarts, and two long names that share a beginning stay apart.
* If two upstream names map to the same hub name, the one that had it in the previous
  refresh keeps it (names are stable across re-lists), otherwise the first listed; the
  other is skipped, logged, and reported under ``skipped`` in ``/healthz``.
* Resource URIs become ``hub://<prefix>/<original URI>`` and templates likewise (the
  template's own variables are untouched), so a read is routed by its prefix and the rest
  is the upstream's URI, byte for byte. URIs inside results (resource links, embedded
  resources, read contents) are rewritten the same way so a client can read what it is
  given.

``build(...)`` turns the upstream's lists into definitions without touching the registry;
the caller commits them with one ``server.store.update(..., replace_prefix=...)``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..content import ToolResult
from ..core.registry import PromptDef, ProxyCompleter, ResourceDef, ToolDef
from .config import UpstreamConfig

log = logging.getLogger("mcpsync.hub")

MAX_NAME = 128
HASH_CHARS = 8
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_TEMPLATE_EXPR = re.compile(r"\{[^{}]*\}")
_MODERN_META = "io.modelcontextprotocol/"

# proxy(kind, upstream name, original name or URI, ctx) -> upstream result
Forward = Callable[[str, str, str, Any], dict[str, Any]]


def hub_name(prefix: str, separator: str, name: str) -> str:
    """The hub's name for an upstream tool or prompt (see the module docstring)."""
    full = f"{prefix}{separator}{_BAD_CHARS.sub('_', name)}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(f"{prefix}{separator}{name}".encode()).hexdigest()[:HASH_CHARS]
    return f"{full[:MAX_NAME - HASH_CHARS - 1]}-{digest}"


def hub_uri(cfg: UpstreamConfig, uri: str) -> str:
    return cfg.uri_prefix + uri


def upstream_uri(cfg: UpstreamConfig, uri: str) -> str | None:
    """The upstream's URI for a hub URI of this upstream, else None."""
    return uri[len(cfg.uri_prefix):] if uri.startswith(cfg.uri_prefix) else None


def template_pattern(hub_template: str) -> re.Pattern[str]:
    """A lax regex for a hub URI template: literal parts exact, each ``{...}`` anything
    (any RFC 6570 level; the upstream judges the values)."""
    out, pos = [], 0
    for m in _TEMPLATE_EXPR.finditer(hub_template):
        out.append(re.escape(hub_template[pos:m.start()]))
        out.append(".*")
        pos = m.end()
    out.append(re.escape(hub_template[pos:]))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def tool_allowed(cfg: UpstreamConfig, name: str) -> bool:
    if cfg.allow is not None and not any(fnmatch.fnmatchcase(name, p) for p in cfg.allow):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in cfg.deny)


@dataclass
class Defs:
    """One upstream's definitions, ready to commit, and what had to be left out."""

    tools: list[ToolDef] = field(default_factory=list)
    prompts: list[PromptDef] = field(default_factory=list)
    resources: list[ResourceDef] = field(default_factory=list)
    templates: list[ResourceDef] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)          # hub tool/prompt name -> original
    # (ref type, hub prompt name or hub URI template, argument) -> forwarding completer; only
    # for an upstream that offers completions
    completers: dict[tuple[str, str, str], ProxyCompleter] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    filtered: int = 0

    def signature(self) -> dict[str, Any]:
        """What listing clients see, per kind (to skip commits that change nothing)."""
        return {"tools": [t.describe() for t in self.tools],
                "prompts": [p.describe() for p in self.prompts],
                "resources": [r.describe(False) for r in self.resources]
                + [r.describe(True) for r in self.templates]}


def _assign(kind: str, cfg: UpstreamConfig, items: list[dict[str, Any]], previous: dict[str, str],
            skipped: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(hub name, item) pairs, collisions resolved (previous owner, else first listed)."""
    claims: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            skipped.append({"kind": kind, "name": name, "reason": "no name"})
            continue
        claims.setdefault(hub_name(cfg.prefix, cfg.separator, name), []).append(item)
    out = []
    for hname, claimants in claims.items():
        owner = next((c for c in claimants if previous.get(hname) == c["name"]), claimants[0])
        out.append((hname, owner))
        for other in claimants:
            if other is not owner:
                reason = f"its hub name {hname!r} is already taken by {owner['name']!r}"
                skipped.append({"kind": kind, "name": other["name"], "hubName": hname, "reason": reason})
    return out


def build(cfg: UpstreamConfig, lists: dict[str, list[dict[str, Any]]], forward: Forward,
          previous: dict[str, str] | None = None, *, completions: bool = False) -> Defs:
    """Proxy definitions for one upstream's tools, prompts, resources and templates, and,
    with ``completions`` (the upstream offers them), completers that forward
    ``completion/complete`` for every prompt argument and template variable."""
    previous = previous or {}
    defs = Defs()
    tools = [t for t in lists.get("tools", []) if isinstance(t.get("name"), str)]
    allowed = [t for t in tools if tool_allowed(cfg, t["name"])]
    defs.filtered = len(tools) - len(allowed)
    for hname, t in _assign("tool", cfg, allowed, previous, defs.skipped):
        defs.names[hname] = t["name"]
        defs.tools.append(_tool_def(cfg, hname, t, forward))
    for hname, p in _assign("prompt", cfg, lists.get("prompts", []), previous, defs.skipped):
        defs.names[hname] = p["name"]
        defs.prompts.append(_prompt_def(cfg, hname, p, forward))
    seen: set[str] = set()  # URIs and URI templates share one namespace
    for kind, key, into, template in (("resources", "uri", defs.resources, False),
                                      ("resourceTemplates", "uriTemplate", defs.templates, True)):
        for r in lists.get(kind, []):
            uri = r.get(key)
            if not isinstance(uri, str) or uri in seen:
                continue
            seen.add(uri)
            into.append(_resource_def(cfg, hub_uri(cfg, uri), r, forward, template=template))
    if completions:
        for pdef in defs.prompts:
            for a in pdef.arguments:
                defs.completers[("ref/prompt", pdef.name, a["name"])] = _completer(
                    cfg, forward, defs.names[pdef.name])
        for tdef in defs.templates:
            original = upstream_uri(cfg, tdef.uri) or tdef.uri
            for m in _TEMPLATE_EXPR.finditer(tdef.uri):
                for var in m.group(0)[1:-1].lstrip("+#./;?&").split(","):
                    var = var.split(":")[0].rstrip("*")
                    if var:
                        defs.completers[("ref/resource", tdef.uri, var)] = _completer(cfg, forward, original)
    return defs


def _completer(cfg: UpstreamConfig, forward: Forward, original: str) -> ProxyCompleter:
    """Forwards a completion request to the upstream, naming its own prompt or template."""
    up = cfg.name

    def complete(ctx: Any) -> list[str]:
        result = forward("complete", up, original, ctx)
        completion = _dict(result.get("completion")) or {}
        return [v for v in _list(completion.get("values")) or [] if isinstance(v, str)]
    return ProxyCompleter(complete)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _tool_def(cfg: UpstreamConfig, hname: str, t: dict[str, Any], forward: Forward) -> ToolDef:
    original = t["name"]
    up = cfg.name

    def proxy(ctx: Any) -> ToolResult:
        return tool_result(cfg, forward("tool", up, original, ctx))
    schema = _dict(t.get("inputSchema")) or {"type": "object"}
    description = _str(t.get("description")) or _str(t.get("title")) or original
    return ToolDef(hname, proxy, description, schema, {}, "ctx",
                   output_schema=_dict(t.get("outputSchema")), title=_str(t.get("title")),
                   annotations=_dict(t.get("annotations")), icons=_list(t.get("icons")),
                   meta=_dict(t.get("_meta")))


def _prompt_def(cfg: UpstreamConfig, hname: str, p: dict[str, Any], forward: Forward) -> PromptDef:
    original = p["name"]
    up = cfg.name
    arguments = []
    for a in _list(p.get("arguments")) or []:
        if isinstance(a, dict) and isinstance(a.get("name"), str):
            arguments.append({**a, "required": bool(a.get("required"))})

    def proxy(ctx: Any, **_arguments: Any) -> list[dict[str, Any]]:
        result = forward("prompt", up, original, ctx)
        messages = [m for m in _list(result.get("messages")) or [] if isinstance(m, dict)]
        return [{**m, "content": _rewrite_block(cfg, m.get("content"))} for m in messages]
    description = _str(p.get("description")) or _str(p.get("title")) or original
    return PromptDef(hname, proxy, description, arguments, {a["name"]: Any for a in arguments}, "ctx",
                     title=_str(p.get("title")), icons=_list(p.get("icons")), meta=_dict(p.get("_meta")))


def _resource_def(cfg: UpstreamConfig, huri: str, r: dict[str, Any], forward: Forward, *,
                  template: bool) -> ResourceDef:
    up = cfg.name

    def proxy(ctx: Any, **_variables: Any) -> list[dict[str, Any]]:
        requested = ctx.params.get("uri")
        original = upstream_uri(cfg, requested) if isinstance(requested, str) else None
        if original is None:
            raise ValueError(f"not a resource of upstream {up!r}: {requested!r}")
        result = forward("resource", up, original, ctx)
        return [_rewrite_contents(cfg, c) for c in _list(result.get("contents")) or []
                if isinstance(c, dict)]
    size = r.get("size")
    res = ResourceDef(huri, proxy, _str(r.get("name")) or huri, _str(r.get("description")),
                      _str(r.get("mimeType")), "ctx", title=_str(r.get("title")),
                      size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                      annotations=_dict(r.get("annotations")), icons=_list(r.get("icons")),
                      meta=_dict(r.get("_meta")))
    if template:
        res.pattern = template_pattern(huri)
    return res


# ---- results -------------------------------------------------------------------------------------

def tool_result(cfg: UpstreamConfig, result: dict[str, Any]) -> ToolResult:
    """An upstream tools/call result as the hub returns it (URIs rewritten, the upstream's
    2026-07-28 decorations dropped: the hub decorates for its own clients)."""
    content = [_rewrite_block(cfg, b) for b in _list(result.get("content")) or []]
    structured = _dict(result.get("structuredContent"))
    meta = _dict(result.get("_meta"))
    if meta is not None:
        meta = {k: v for k, v in meta.items() if not k.startswith(_MODERN_META)} or None
    return ToolResult(content=content, structured=structured, is_error=bool(result.get("isError")),
                      meta=meta)


def _rewrite_block(cfg: UpstreamConfig, block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "resource_link" and isinstance(block.get("uri"), str):
        return {**block, "uri": hub_uri(cfg, block["uri"])}
    if kind == "resource" and isinstance(block.get("resource"), dict):
        return {**block, "resource": _rewrite_contents(cfg, block["resource"])}
    return block


def _rewrite_contents(cfg: UpstreamConfig, contents: dict[str, Any]) -> dict[str, Any]:
    uri = contents.get("uri")
    return {**contents, "uri": hub_uri(cfg, uri)} if isinstance(uri, str) else contents
