"""Small helpers shared by the transport tests: JSON-RPC message builders and a bounded
predicate poll (for states another thread brings about and nothing signals)."""
from __future__ import annotations

import time
from typing import Any, Callable

POLL_S = 0.01  # the step of wait_until's predicate loop (observation, not synchronization)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll a condition another thread brings about, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def rpc(rid: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def call_tool(rid: Any, name: str, **arguments: Any) -> dict[str, Any]:
    return rpc(rid, "tools/call", {"name": name, "arguments": arguments})
