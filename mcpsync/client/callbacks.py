"""The user's side of a ``mcpsync.Client``: ``Callbacks`` (sampling, elicitation, roots and
log messages, as the user gave them), ``CallContext`` (one call as the ``Caller`` its
``ClientSession`` serves) and ``CallbackRunner`` (the thread that runs what no call's own
thread can).

Where a callback runs: a server's request or log message that belongs to a call in flight
(tied to it by the transport, or the only call running) is handled on the thread that made
the call, while it waits, like its progress. Anything else (a request while no call runs,
``*/list_changed``, ``resources/updated``) runs on the client's ``mcpsync-client-callbacks-
<name>`` thread, in arrival order: never on a transport's reader thread, so a callback may
call the client again.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Mapping, Sequence, Union

from ..errors import Cancelled, McpError, MethodNotFound
from .results import LogMessage

log = logging.getLogger("mcpsync.client")

ProgressCallback = Callable[[float, Union[float, None], Union[str, None]], None]
RequestCallback = Callable[[dict[str, Any]], dict[str, Any]]
RootsSource = Union[Sequence[Union[str, Mapping[str, Any]]], Callable[[], Sequence[Union[str, Mapping[str, Any]]]]]

MAX_QUEUED_CALLBACKS = 1000    # jobs waiting for the callback thread; beyond, notifications drop
RUNNER_JOIN_S = 5.0            # close(): how long to wait for a running callback


class Callbacks:
    """Answers a server's requests with the user's callbacks (any thread may call ``answer``)."""

    def __init__(self, server: str, *, sampling: RequestCallback | None,
                 elicitation: RequestCallback | None, roots: RootsSource | None,
                 on_log: Callable[[LogMessage], None] | None, log_level: str | None) -> None:
        self.server = server   # the session's name for the server (log messages carry it first)
        self.sampling = sampling
        self.elicitation = elicitation
        self.roots = roots
        self.on_log = on_log
        # What 2026-07-28 requests ask for; None: no log messages (the handshake era asks once).
        self.log_level = log_level if log_level is not None else ("debug" if on_log is not None else None)

    def capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {}
        if self.sampling is not None:
            caps["sampling"] = {}
        if self.elicitation is not None:
            caps["elicitation"] = {"form": {}}
        if self.roots is not None:
            caps["roots"] = {"listChanged": True}
        return caps

    def answer(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The result for a server's request; raises ``McpError`` for the error answer."""
        callback: Callable[[], Any]
        if method == "sampling/createMessage" and self.sampling is not None:
            sampling = self.sampling
            callback = lambda: sampling(dict(params or {}))  # noqa: E731
        elif method == "elicitation/create" and self.elicitation is not None:
            elicitation = self.elicitation
            callback = lambda: elicitation(dict(params or {}))  # noqa: E731
        elif method == "roots/list" and self.roots is not None:
            callback = self._roots
        else:
            raise MethodNotFound(f"Method not found: this client does not answer {method}")
        try:
            result = callback()
        except (McpError, Cancelled):
            raise
        except Exception as exc:
            log.exception("the client's callback for %s failed", method)
            raise McpError(f"the client's {method} callback failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, dict):
            raise McpError(f"the client's {method} callback returned {type(result).__name__}, not a dict")
        return result

    def _roots(self) -> dict[str, Any]:
        source = self.roots
        listed = source() if callable(source) else source
        roots = []
        for root in listed or ():
            roots.append({"uri": root} if isinstance(root, str) else dict(root))
        return {"roots": roots}

    def log(self, params: dict[str, Any]) -> None:
        """A ``notifications/message``'s params to ``on_log`` (or our debug log)."""
        if self.on_log is None:
            log.debug("server log [%s]: %r", params.get("level"), params.get("data"))
            return
        logger = params.get("logger")
        self.on_log(LogMessage(str(params.get("level")), params.get("data"),
                               logger if isinstance(logger, str) else None))


class CallContext:
    """One client call as ``ClientSession``'s ``Caller``: progress to the call's callback,
    the rest to the client's ``Callbacks``. Every call of one client has the same ``conn``
    (its ``Callbacks``): a message the transport did not tie to a call may go to any of
    them. Cancellation comes from the call's ``CancelToken`` (``cancel=``), not from here."""

    modern = True         # without a log level, 2026-07-28 requests ask for no log messages
    version: str | None = None

    def __init__(self, callbacks: Callbacks, progress: ProgressCallback | None) -> None:
        self.conn = callbacks
        self.client_capabilities = callbacks.capabilities()
        self.log_level = callbacks.log_level
        self._progress = progress
        self.progress_token: Any = "progress" if progress is not None else None

    def report_progress(self, progress: float, total: float | None = None,
                        message: str | None = None) -> bool:
        if self._progress is not None:
            self._progress(progress, total, message)
        return True

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        # The session names the logger "<server>/<logger>" (the hub's style): take ours back.
        prefix = self.conn.server
        if logger == prefix:
            logger = None
        elif logger is not None and logger.startswith(prefix + "/"):
            logger = logger[len(prefix) + 1:]
        self.conn.log({"level": level, "data": data, "logger": logger})
        return True

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.conn.answer(method, params)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


class CallbackRunner:
    """One thread (``mcpsync-client-callbacks-<name>``, started on demand, joined by
    ``close``) running jobs in submission order; a job must not raise (it is logged)."""

    def __init__(self, name: str) -> None:
        self.name = name
        # Guards _jobs, _thread and _closed; the thread waits on it. Jobs run outside it.
        self._cond = threading.Condition(threading.Lock())
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False when the client is closed or the queue is full."""
        start = None
        with self._cond:
            if self._closed or len(self._jobs) >= MAX_QUEUED_CALLBACKS:
                return False
            self._jobs.append(job)
            if self._thread is None:
                start = self._thread = threading.Thread(
                    target=self._run, name=f"mcpsync-client-callbacks-{self.name}", daemon=True)
            else:
                self._cond.notify()
        if start is not None:
            start.start()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:
                log.exception("client %s: a callback failed", self.name)

    def close(self) -> None:
        """Drop the queued jobs and join the thread (bounded; not from a callback itself)."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            t = self._thread
            self._cond.notify_all()
        if t is not None and t is not threading.current_thread():
            t.join(RUNNER_JOIN_S)
            if t.is_alive():
                log.warning("client %s: a callback still runs after %g s", self.name, RUNNER_JOIN_S)
