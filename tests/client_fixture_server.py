"""The server the ``mcpsync.Client`` tests talk to: ``python -m mcpsync serve
tests/client_fixture_server.py --stdio`` (or served in-process with ``make_server()``).

Lists come in pages of ``PAGE_SIZE`` (so every listing needs several requests); tools
exercise progress, logs, sampling / elicitation / roots (one at a time and several in one
round), cancellation (``slow`` remembers the calls that saw theirs), tasks, structured
output and errors; a resource can be touched to notify its subscribers.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Any, TypedDict

from mcpsync import Context, Server, ToolError, inputs
from mcpsync.protocol.modern import META_CLIENT_INFO

PAGE_SIZE = 3
SLOW_MAX_S = 60.0
BEAT_S = 0.05            # slow's pace of progress steps
EXTRA_TOOLS = 7          # filler tools, so that tools/list has several pages


class Sum(TypedDict):
    sum: int


def _constant(text: str) -> Any:
    def constant() -> str:
        return text
    return constant


def make_server(name: str = "client-fixture") -> Server:
    server = Server(name, "2.0.0", instructions="Talk to me.", page_size=PAGE_SIZE)
    # Guards `cancelled` (tags of calls that saw their cancellation) and `started` (of
    # task_work calls that began); notified on each.
    seen = threading.Condition()
    cancelled: list[str] = []
    started: list[str] = []

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> Sum:
        """Structured output."""
        return {"sum": a + b}

    @server.tool()
    def region_echo(region: Annotated[str, "Where to run", {"x-mcp-header": "Region"}], text: str) -> str:
        """2026-07-28 over HTTP: `region` travels in the Mcp-Param-Region header too."""
        return f"{region}: {text}"

    @server.tool()
    def fail(why: str) -> str:
        """A tool error (isError)."""
        raise ToolError(f"failed: {why}")

    @server.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """The client's name as it declared it, and this process."""
        info = ctx.conn.client_info or (ctx.meta.get(META_CLIENT_INFO) or {})
        return {"client": info.get("name"), "pid": os.getpid(), "version": ctx.version}

    @server.tool()
    def progress(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, logging each step."""
        for i in range(1, steps + 1):
            ctx.report_progress(i, steps, f"step {i}")
            ctx.info(f"step {i} of {steps}", logger="fixture")
        return f"done {steps}"

    @server.tool()
    def ask_model(question: str, ctx: Context) -> str:
        """Sampling: the client's model answers."""
        answer = ctx.sample(question, max_tokens=20)
        return f"model said: {(answer.get('content') or {}).get('text')}"

    @server.tool()
    def ask_user(question: str, ctx: Context) -> str:
        """Elicitation: the user answers."""
        answer = ctx.elicit(question, {"type": "object", "properties": {"name": {"type": "string"}}})
        return f"{answer.get('action')}: {(answer.get('content') or {}).get('name')}"

    @server.tool()
    def where(ctx: Context) -> str:
        """The client's roots."""
        return " ".join(r.get("uri", "") for r in ctx.list_roots())

    @server.tool()
    def ask_all(ctx: Context) -> str:
        """Three questions at once (one 2026-07-28 round; one after the other in a session)."""
        got = ctx.ask(model=inputs.sampling("2+2?", max_tokens=5),
                      user=inputs.elicitation("Name?", {"type": "object", "properties": {"name": {"type": "string"}}}),
                      roots=inputs.roots())
        return (f"{got['model']['content']['text']}|{got['user']['content']['name']}|"
                f"{','.join(r['uri'] for r in got['roots']['roots'])}")

    @server.tool()
    def slow(tag: str, ctx: Context, seconds: float = SLOW_MAX_S) -> str:
        """Report progress 0 ("started"), then one step every BEAT_S until cancelled
        (remembering `tag`) or `seconds` pass. The steps are writes: a 2026-07-28 HTTP
        client cancels by closing the response stream, which the server sees at a write."""
        ctx.report_progress(0, None, "started")
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            if ctx.wait_cancelled(BEAT_S):
                with seen:
                    cancelled.append(tag)
                    seen.notify_all()
                return "cancelled"
            step += 1
            ctx.report_progress(step)
        return "finished"

    @server.tool()
    def cancelled_calls(tag: str, wait_s: float = 10.0) -> bool:
        """Whether the call tagged `tag` saw its cancellation (waiting up to `wait_s`)."""
        with seen:
            return seen.wait_for(lambda: tag in cancelled, wait_s)

    @server.tool(task="optional")
    def task_work(seconds: float, ctx: Context, tag: str = "") -> str:
        """Works for `seconds` (a task for clients that take tasks); cancellable. A tagged
        call is remembered when it starts and when it sees its cancellation."""
        with seen:
            started.append(tag)
            seen.notify_all()
        if ctx.wait_cancelled(seconds):
            with seen:
                cancelled.append(tag)
                seen.notify_all()
            return "cancelled"
        return f"worked {seconds:g} s"

    @server.tool()
    def started_calls(tag: str, wait_s: float = 10.0) -> bool:
        """Whether the task_work call tagged `tag` started (waiting up to `wait_s`)."""
        with seen:
            return seen.wait_for(lambda: tag in started, wait_s)

    @server.tool(task="required")
    def task_only(text: str) -> str:
        """Runs only as a task."""
        return f"task says {text}"

    @server.tool(task="required")
    def task_ask(ctx: Context) -> str:
        """A task that asks the user (input_required, answered with tasks/update)."""
        answer = ctx.elicit("Who?", {"type": "object", "properties": {"name": {"type": "string"}}})
        return f"task got {(answer.get('content') or {}).get('name')}"

    @server.tool(task="required")
    def task_crash() -> str:
        """A task that fails with a JSON-RPC error."""
        raise RuntimeError("crashed on purpose")

    @server.tool()
    def die(status: int) -> str:
        """End this process at once (a crashed stdio server)."""
        os._exit(status)

    @server.tool()
    def touch(uri: str) -> str:
        """Tell the subscribers of `uri` that it changed."""
        server.notify_resource_updated(uri)
        return "touched"

    @server.tool()
    def add_tool(tool: str) -> str:
        """Register a tool (tools/list_changed)."""
        server.add_tool(_constant(f"dynamic {tool}"), name=tool, description=f"added: {tool}")
        return "added"

    for i in range(EXTRA_TOOLS):
        server.add_tool(_constant(f"filler {i}"), name=f"filler_{i}", description=f"filler {i}")

    @server.resource("fixture://static", mime_type="text/plain")
    def static() -> str:
        """A fixed text."""
        return f"static text of {name}"

    @server.resource("fixture://bytes", mime_type="application/octet-stream")
    def raw_bytes() -> bytes:
        """Four bytes."""
        return b"\x00\x01\xfe\xff"

    for i in range(5):
        server.add_resource(_constant(f"note {i}"), f"fixture://notes/{i}", name=f"note-{i}",
                            mime_type="text/plain")

    @server.resource("fixture://items/{item}", mime_type="text/plain")
    def item(item: str) -> str:
        """One item by name."""
        return f"item {item}"

    @server.prompt()
    def greet(who: str) -> str:
        """Greet someone."""
        return f"Hello, {who}!"

    @server.completion(prompt="greet", argument="who")
    def complete_who(value: str, context: dict[str, str]) -> list[str]:
        return [n for n in ("Ada", "Alan", "Grace") if n.lower().startswith(value.lower())]

    @server.completion(resource_template="fixture://items/{item}", argument="item")
    def complete_item(value: str, context: dict[str, str]) -> list[str]:
        return [f"{value}-1", f"{value}-2"]

    return server


server = make_server(os.environ.get("FIXTURE_NAME", "client-fixture"))
