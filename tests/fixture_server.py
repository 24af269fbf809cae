"""A small server for the subprocess tests: ``python -m mcpsync serve tests/fixture_server.py --stdio``."""
from __future__ import annotations

from mcpsync import Context, Server

SLOW_CALL_MAX_S = 30.0  # the slow tool's bound if nobody cancels it (tests always do)

server = Server("fixture-server", "0.0.1")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def slow(ctx: Context) -> str:
    """Announce that it started (a log message), then block until cancelled."""
    ctx.info("slow started")
    cancelled = ctx.wait_cancelled(SLOW_CALL_MAX_S)
    return f"slow finished, cancelled={cancelled}"
