"""Calling user code: a tool, resource, prompt or completer function runs inside
``user_code(fn)`` (the front end's hook: while it may block, the worker gives its turn to
the next request; ``sync.may_block``), and a tool under a per-call time limit runs on a
thread of its own (``ToolCalls``).

Time limits: a tool still running after ``timeout_s`` gets its call answered with an error
result and its ``Context`` told to stop (``cancel_call``); the abandoned thread is counted
until the function returns, and past ``max_overrun`` such threads new calls are refused
rather than letting them pile up. ``ToolCalls._lock`` guards that count (a leaf lock).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, ContextManager

from ..errors import ToolError
from ..sync import may_block

if TYPE_CHECKING:
    from .context import Context
    from .registry import ToolDef

MAX_TIMED_OUT_CALLS = 64       # tool threads still running past their limit before refusing


def user_code(fn: Callable[..., Any] | None = None) -> ContextManager[None]:
    """Around a call into user code that may block (``fn``: the function, remembered by the
    front end's pool for how long it blocked last time)."""
    return may_block(fn)


class ToolCalls:
    """How a server runs its tools' functions (see the module docstring)."""

    def __init__(self, timeout_s: float | None = None,
                 max_overrun: int = MAX_TIMED_OUT_CALLS) -> None:
        self.timeout_s = timeout_s
        self.max_overrun = max_overrun
        self._lock = threading.Lock()  # guards _overrun; a few integer updates
        self._overrun = 0

    @property
    def overrun(self) -> int:
        """Threads of tools still running past their limit."""
        return self._overrun

    def call(self, tool: ToolDef, kwargs: dict[str, Any], ctx: Context) -> Any:
        """Run ``tool.fn(**kwargs)`` as user code, within the time limit if there is one."""
        with user_code(tool.fn):
            if self.timeout_s is None:
                return tool.fn(**kwargs)
            return self._call_with_timeout(tool, kwargs, ctx, self.timeout_s)

    def _call_with_timeout(self, tool: ToolDef, kwargs: dict[str, Any], ctx: Context,
                           limit: float) -> Any:
        """Run the tool on its own thread and wait at most ``limit`` seconds for it."""
        with self._lock:
            if self._overrun >= self.max_overrun:
                raise ToolError(f"Tool {tool.name} refused: {self._overrun} earlier calls are "
                                "still running past their time limit")
        outcome: dict[str, Any] = {}
        done = threading.Event()  # set by the runner thread when the tool returned or raised

        def runner() -> None:
            try:
                outcome["value"] = tool.fn(**kwargs)
            except BaseException as exc:  # handed to the waiting thread, re-raised there
                outcome["error"] = exc
            finally:
                with self._lock:
                    if outcome.get("abandoned"):
                        self._overrun -= 1
                    outcome["finished"] = True
                done.set()

        threading.Thread(target=runner, name=f"mcpsync-tool-{tool.name}"[:60], daemon=True).start()
        if not done.wait(limit):
            with self._lock:
                if not outcome.get("finished"):
                    outcome["abandoned"] = True
                    self._overrun += 1
            if outcome.get("abandoned"):
                ctx.conn.cancel_call(ctx)  # cooperative tools see ctx.cancelled and stop
                raise ToolError(f"Tool {tool.name} timed out after {limit:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
