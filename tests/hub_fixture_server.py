"""An upstream for the hub tests: ``python -m mcpsync serve tests/hub_fixture_server.py --stdio``
(or served in-process over HTTP / WebSocket / legacy SSE with ``make_server()``).

Its tools exercise what the hub forwards: progress, log messages, sampling, cancellation,
a list that changes (``add_dynamic_tool``), a call that never ends, a name of 128
characters, and the pid of the process (per-session isolation makes several).
"""
from __future__ import annotations

import os
import threading
from typing import Any

from mcpsync import Context, ResourceLink, Server

HANG_MAX_S = 60.0    # how long `hang` blocks if nobody cancels it
LONG_NAME = "long_" + "x" * 123   # 128 characters: valid upstream, too long with a prefix


def make_server(name: str = "hub-fixture") -> Server:
    server = Server(name, "0.0.1")
    # Guards `cancelled` (names of calls that saw their cancellation); notified when one is
    # added. Tool threads only.
    seen = threading.Condition()
    cancelled: list[str] = []

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """The upstream's server name, process id and the hub's session with it."""
        return {"server": name, "pid": os.getpid(), "session": ctx.session_id}

    @server.tool()
    def add_dynamic_tool(tool: str) -> str:
        """Register a new tool named `tool` (the server announces tools/list_changed)."""
        def dynamic() -> str:
            return f"dynamic {tool}"
        server.add_tool(dynamic, name=tool, description=f"added at run time: {tool}")
        return f"added {tool}"

    @server.tool()
    def remove_dynamic_tool(tool: str) -> str:
        """Remove a tool added by add_dynamic_tool."""
        return f"removed={server.remove_tool(tool)}"

    @server.tool()
    def progress(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, logging each step."""
        for i in range(1, steps + 1):
            ctx.report_progress(i, steps, f"step {i}")
            ctx.info(f"step {i} of {steps}", logger="fixture")
        return f"done {steps}, token {ctx.progress_token}"

    @server.tool()
    def ask_model(question: str, ctx: Context) -> str:
        """Ask the client's model (sampling/createMessage) and return its answer."""
        result = ctx.sample(question, max_tokens=50)
        content = result.get("content") or {}
        return f"model said: {content.get('text')}"

    @server.tool()
    def slow(ctx: Context, seconds: float = HANG_MAX_S) -> str:
        """Log that it started, then block until cancelled (remembering that it was) or
        `seconds` pass."""
        ctx.info("slow started")
        if ctx.wait_cancelled(seconds):
            with seen:
                cancelled.append("slow")
                seen.notify_all()
            return "cancelled"
        return "finished"

    @server.tool()
    def cancelled_calls(at_least: int = 0) -> list[str]:
        """Which calls saw a cancellation so far (waiting up to 10 s for `at_least` of them)."""
        with seen:
            seen.wait_for(lambda: len(cancelled) >= at_least, 10.0)
            return list(cancelled)

    @server.tool()
    def link() -> ResourceLink:
        """A link to this server's static resource."""
        return ResourceLink("fixture://static", "static")

    @server.tool(name=LONG_NAME)
    def long_named() -> str:
        """A tool whose name is 128 characters long."""
        return "long"

    @server.resource("fixture://static", mime_type="text/plain")
    def static() -> str:
        """A fixed text."""
        return f"static text of {name}"

    @server.resource("fixture://items/{item}", mime_type="text/plain")
    def item(item: str) -> str:
        """One item by name."""
        return f"item {item} of {name}"

    @server.prompt()
    def greet(who: str) -> str:
        """Greet someone."""
        return f"Hello, {who}, from {name}!"

    @server.completion(prompt="greet", argument="who")
    def complete_who(value: str, context: dict[str, str]) -> list[str]:
        return [n for n in ("Ada", "Alan", "Grace") if n.startswith(value)] + [name]

    @server.completion(resource_template="fixture://items/{item}", argument="item")
    def complete_item(value: str, context: dict[str, str]) -> list[str]:
        return [f"{value}-{name}"]

    # Two prompt names that the hub's naming maps to the same name ("dup_name").
    server.add_prompt(lambda: "first", name="dup name", description="listed first")
    server.add_prompt(lambda: "second", name="dup_name", description="listed second")
    return server


server = make_server(os.environ.get("FIXTURE_NAME", "hub-fixture"))
