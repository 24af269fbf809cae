"""``Router``: where a proxied request goes.

The registry's proxies are built from one listing and outlive a reload that replaces the
``Upstream`` object of their name, so a proxy names its upstream and the router finds the
*current* ``Upstream`` of that name when the request comes. The call path is therefore
proxy (``aggregate``) → ``Router.forward`` → the upstream's session for this request
(``Upstream.session_for``) → ``ClientSession.request``, all on the downstream worker
thread; the router holds no state of its own beyond the hub's lookup.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConnectionClosed, PeerError, RequestTimeout, ToolError
from .upstream import Upstream, UpstreamUnavailable


def upstream_request(kind: str, original: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The upstream's method and params for a downstream request of ``kind`` on the
    upstream's own name (or URI) ``original``: the client's arguments, the upstream's name."""
    if kind == "tool":
        args = params.get("arguments")
        return "tools/call", {"name": original, "arguments": args if isinstance(args, dict) else {}}
    if kind == "prompt":
        args = params.get("arguments")
        prompt: dict[str, Any] = {"name": original}
        if isinstance(args, dict):
            prompt["arguments"] = args
        return "prompts/get", prompt
    if kind == "complete":
        given = params.get("ref")
        ref: dict[str, Any] = given if isinstance(given, dict) else {}
        key = "name" if ref.get("type") == "ref/prompt" else "uri"
        complete: dict[str, Any] = {"ref": {"type": ref.get("type"), key: original},
                                    "argument": params.get("argument")}
        if isinstance(params.get("context"), dict):
            complete["context"] = params["context"]
        return "completion/complete", complete
    return "resources/read", {"uri": original}


class Router:
    """Routes proxied requests by upstream name; ``lookup`` is the hub's name → Upstream."""

    def __init__(self, lookup: Callable[[str], Upstream | None]) -> None:
        self._lookup = lookup

    def forward(self, kind: str, name: str, original: str, ctx: Any) -> dict[str, Any]:
        """Run one proxied request on the right upstream session for ``ctx`` (blocks). A
        failing tool call is an ``isError`` result (ToolError); other kinds raise."""
        up = self._lookup(name)
        if up is None:
            raise UpstreamUnavailable(f"upstream {name!r} is no longer configured")
        session, ephemeral = up.session_for(ctx)
        method, params = upstream_request(kind, original, ctx.params if isinstance(ctx.params, dict) else {})
        try:
            return session.request(method, params, ctx=ctx)
        except PeerError as exc:
            if kind == "tool":
                raise ToolError(f"upstream {up.name!r} answered with an error: {exc.message}") from None
            raise
        except (ConnectionClosed, RequestTimeout) as exc:
            if kind == "tool":
                raise ToolError(exc.message) from None
            raise UpstreamUnavailable(exc.message) from None
        finally:
            if ephemeral:
                up.release(session)
