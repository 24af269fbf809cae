"""``Task``: a tool call that the server runs as a task (the 2026-07-28 tasks extension,
``io.modelcontextprotocol/tasks``), as ``mcpsync.Client`` hands it out.

The server answers ``tools/call`` with a task handle (``resultType: "task"``) instead of
the result; the client polls ``tasks/get`` at the interval the server suggests until the
task is ``completed`` (the tool's result inlined), ``failed`` (a JSON-RPC error inlined)
or ``cancelled``. A task in ``input_required`` lists ``inputRequests``: they are answered
with the client's callbacks (as for a 2026-07-28 ``input_required`` result) and sent with
``tasks/update``. ``tasks/cancel`` stops it (cooperatively).

A ``Task`` may be used from several threads: ``_lock`` guards its last known state (one
assignment per poll); requests and waits happen outside it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import Cancelled, PeerError, RequestTimeout
from .caller import CancelToken
from .results import CallToolResult

WORKING = "working"
INPUT_REQUIRED = "input_required"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = (COMPLETED, FAILED, CANCELLED)

MIN_POLL_S = 0.01       # never poll faster than this, whatever the server suggests
MAX_POLL_S = 5.0        # nor slower than this
DEFAULT_POLL_S = 0.5    # when the server suggests nothing

Request = Callable[[str, dict[str, Any], "float | None"], dict[str, Any]]
Answer = Callable[[dict[str, Any]], dict[str, Any]]


class Task:
    """A task the server runs for a ``call_tool_as_task``. ``status`` is what the last poll
    saw; ``wait()`` polls until it ends and returns the tool's result. A call the server
    answered at once gives a task that is already ``completed`` and has no ``id``."""

    def __init__(self, request: Request, answer: Answer, closing: CancelToken,
                 first: dict[str, Any], *, timeout: float | None) -> None:
        self._request = request          # (method, params, timeout) -> result, tasks extension declared
        self._answer = answer            # inputRequests -> inputResponses (the client's callbacks)
        self._closing = closing          # cancelled when the client closes: ends a wait at once
        self._timeout = timeout          # the client's request timeout, per poll
        # Guards the fields below (the last known state); a poll replaces them at once.
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self.id: str | None = None
        self.status = COMPLETED
        self.status_message: str | None = None
        self.poll_interval_s = DEFAULT_POLL_S
        self._record: dict[str, Any] = {}
        if first.get("resultType") == "task":
            task_id = first.get("taskId")
            if not isinstance(task_id, str):
                raise PeerError("the server answered with a task without a taskId", code=-32603)
            self.id = task_id
            self._update(first)
        else:
            self._record = {"status": COMPLETED, "result": first}

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.status}>"

    def _update(self, record: dict[str, Any]) -> None:
        status = record.get("status")
        interval = record.get("pollIntervalMs")
        message = record.get("statusMessage")
        with self._lock:
            self._record = record
            self.status = status if isinstance(status, str) else WORKING
            self.status_message = message if isinstance(message, str) else None
            if isinstance(interval, (int, float)) and not isinstance(interval, bool):
                self.poll_interval_s = min(MAX_POLL_S, max(MIN_POLL_S, interval / 1000))

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def refresh(self) -> str:
        """Poll once (``tasks/get``); input the task waits for is answered with the client's
        callbacks (``tasks/update``). Returns the status. Blocks up to the request timeout."""
        if self.id is None or self.done:
            return self.status
        record = self._request("tasks/get", {"taskId": self.id}, self._timeout)
        self._update(record)
        asks = record.get("inputRequests")
        if self.status == INPUT_REQUIRED and isinstance(asks, dict):
            with self._lock:
                fresh = {k: v for k, v in asks.items() if k not in self._answered}
                self._answered.update(fresh)
            if fresh:
                answers = self._answer(fresh)
                self._request("tasks/update", {"taskId": self.id, "inputResponses": answers}, self._timeout)
        return self.status

    def wait(self, timeout: float | None = None, *, cancel: CancelToken | None = None) -> CallToolResult:
        """Poll until the task ends and return the tool's result (``result()``). Blocks up to
        ``timeout`` seconds (None: no limit): then the task is cancelled on the server and
        ``RequestTimeout`` raised; ``cancel`` does the same with ``Cancelled``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wake = threading.Event()
        removers = [t.on_cancel(wake.set) for t in (cancel, self._closing) if t is not None]
        try:
            while not self.done:
                if cancel is not None and cancel.cancelled:
                    self.cancel()
                    raise Cancelled()
                self.refresh()
                if self.done:
                    break
                pause = self.poll_interval_s if self.status != INPUT_REQUIRED else MIN_POLL_S
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.cancel()
                        raise RequestTimeout(f"task {self.id} did not end within {timeout:g} s (cancelled)")
                    pause = min(pause, left)
                wake.wait(pause)
        finally:
            for remove in removers:
                remove()
        return self.result()

    def result(self) -> CallToolResult:
        """The tool's result once the task is ``completed``. Raises ``PeerError`` (the
        inlined error) if it ``failed``, ``Cancelled`` if it was cancelled, and
        ``RuntimeError`` while it runs."""
        with self._lock:
            record, status = self._record, self.status
        if status == COMPLETED:
            result = record.get("result")
            return CallToolResult.from_wire(result if isinstance(result, dict) else {})
        if status == FAILED:
            got = record.get("error")
            err: dict[str, Any] = got if isinstance(got, dict) else {}
            code = err.get("code")
            raise PeerError(str(err.get("message", "the task failed")), err.get("data"),
                            code=code if isinstance(code, int) else -32603)
        if status == CANCELLED:
            raise Cancelled()
        raise RuntimeError(f"task {self.id} is still {status}")

    def cancel(self) -> None:
        """Ask the server to stop the task (``tasks/cancel``); the next poll shows whether it
        did. Nothing for a task that has ended."""
        if self.id is None or self.done:
            return
        self._request("tasks/cancel", {"taskId": self.id}, self._timeout)
