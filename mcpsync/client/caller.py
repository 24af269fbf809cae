"""Whom a call serves while it waits: the ``Caller`` protocol (the hub's downstream
``Context``, or a ``mcpsync.Client`` call's ``CallContext``), ``CancelToken`` (cancelling a
call from another thread), and the relays from the server to the caller (progress, log
messages, sampling / elicitation / roots requests), run on the thread that waits for the call.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Protocol

from ..errors import McpError, MethodNotFound
from ..protocol import versions

log = logging.getLogger("mcpsync.client")

# A server's requests a caller may answer, and the capability each needs.
RELAYED = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
           "roots/list": "roots"}


class Cancellable(Protocol):
    """Anything a call can be cancelled through: ``on_cancel(callback)`` calls it once on
    cancellation (at once if already cancelled) and returns a function that unregisters it."""

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        ...


class Caller(Cancellable, Protocol):
    """What a call serves. ``conn``: calls with the same ``conn`` belong to the same client
    (a message the transport did not tie to a call may go to any of them);
    ``client_capabilities``: what ``request`` can answer; ``modern``/``version``: the
    caller's own protocol era; ``log_level``: the level to ask the server for (None: none
    in the 2026-07-28 era, everything in the handshake era)."""

    conn: Any
    client_capabilities: dict[str, Any]
    modern: bool
    version: str | None
    log_level: str | None

    @property
    def progress_token(self) -> Any:
        ...

    def report_progress(self, progress: float, total: float | None = None,
                        message: str | None = None) -> bool:
        ...

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        ...

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        ...


class CancelToken:
    """Cancels calls from another thread: pass it as ``cancel=`` to one or more calls, then
    call ``cancel()``; each call still running sends the server its cancellation and raises
    ``mcpsync.Cancelled``. A token stays cancelled."""

    def __init__(self) -> None:
        # Guards _callbacks; the event is the cancelled flag. Callbacks run outside it.
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            callback()

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds or until cancelled; True if cancelled."""
        return self._event.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            if not self._event.is_set():
                key = next(self._ids)
                self._callbacks[key] = callback

                def remove() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)
                return remove
        callback()
        return lambda: None


def forward_progress(ctx: Caller | None, params: dict[str, Any]) -> None:
    if ctx is None:
        return
    progress = params.get("progress")
    total = params.get("total")
    message = params.get("message")
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        return
    ctx.report_progress(progress, total if isinstance(total, (int, float)) else None,
                        message if isinstance(message, str) else None)


def forward_log(ctx: Caller | None, params: dict[str, Any], server: str) -> None:
    level = params.get("level")
    logger = params.get("logger")
    name = f"{server}/{logger}" if isinstance(logger, str) and logger else server
    if ctx is None:
        log.debug("upstream %s log [%s]: %r", server, level, params.get("data"))
        return
    try:
        ctx.log(str(level), params.get("data"), name)
    except ValueError:
        ctx.log("info", params.get("data"), name)


def relay_input(ctx: Caller | None, method: str, params: dict[str, Any] | None, role: str) -> dict[str, Any]:
    """Ask the caller what the server asks (sampling, elicitation, roots). Raises
    ``McpError`` (the server gets it as the error answer) or ``Cancelled``."""
    needed = RELAYED.get(method)
    if needed is None:
        raise MethodNotFound(f"Method not found: the {role} does not answer {method}")
    if ctx is None:
        raise no_caller(method, several=False, role=role)
    caps = ctx.client_capabilities or {}
    if not isinstance(caps.get(needed), dict):
        raise MethodNotFound(f"the client of this call did not declare the {needed} capability")
    if method == "elicitation/create" and params is not None and not ctx.modern:
        version = ctx.version
        if version is not None and not versions.features(version).elicitation_url:
            params = {k: v for k, v in params.items() if k != "mode"}
    return dict(ctx.request(method, params))


def no_caller(method: str, *, several: bool, role: str) -> McpError:
    """The answer to a request from the server that no call can take: one arriving while
    only our own requests run (listings, pings), or while calls of several clients run (it
    would be a guess). An error, not an empty result: an empty ``roots/list`` would be
    cached as the client's roots by servers such as the reference server-everything and
    never asked again, while after an error they ask again in a client's call, which is
    relayed (-32603 as the spec lists for a client's internal failures; -32601 would say
    roots are not supported at all)."""
    if method not in RELAYED:
        return MethodNotFound(f"Method not found: the {role} does not answer {method}")
    if several:
        why = f"calls of several clients are in progress, and the {role} does not guess which one it is for"
    else:
        why = f"no client request is in progress (the {role} relays it to the client whose call is running)"
    return McpError(f"{method} is not available now: {why}", code=-32603)
