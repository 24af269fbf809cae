"""``HttpFrontEnd``: the listening socket, the dispatcher, the pool and their lifecycle.

Pieces (see ``ARCHITECTURE.md`` for the path of a request)::

    listener ──► Dispatcher (one thread: every waiting socket and parked stream, the
                     │                limits, the deadlines)
                     │ complete request                      ▲ channel given back
                     ▼                                       │ (or with a parked stream)
                 WorkerPool (``Limits.workers`` slots, FIFO) ─► Bridge ─► the WSGI app

``start()`` runs the dispatcher on ``mcpsync-http-dispatcher``; ``serve_forever()`` runs
it on the calling thread. ``shutdown(timeout)`` stops accepting, closes idle connections at
once, lets requests in progress and parked streams finish (responses carry ``Connection:
close``; the app ends its streams when it drains), cuts what is left at the deadline, then
joins the pool's threads; it returns True if nothing had to be cut and every thread ended.

``make_server(app, host, port, kind=...)`` builds a front end by name: ``"threaded"`` (this
one; keyword arguments are ``Limits`` fields, or ``limits=Limits(...)``) or ``"werkzeug"``
(werkzeug's development server behind the same ``FrontEnd`` protocol).
"""
from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Protocol

from .bridge import Bridge, WSGIApp
from .dispatcher import STATES, Dispatcher
from .limits import Limits
from .poller import Poller
from .pool import WorkerPool
from .ticket import StartThread, start_daemon_thread

SHUTDOWN_TIMEOUT_S = 5.0


class FrontEnd(Protocol):
    """What ``make_server`` returns, whichever kind."""

    @property
    def server_address(self) -> tuple[Any, ...]: ...
    @property
    def port(self) -> int: ...
    def serve_forever(self) -> None: ...
    def start(self) -> FrontEnd: ...
    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool: ...


class HttpFrontEnd:
    """mcpsync's HTTP/1.1 front end (see the module docstring)."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 8000, *,
                 limits: Limits | None = None, start_thread: StartThread = start_daemon_thread,
                 poller: Poller | None = None, **overrides: Any) -> None:
        limits = limits or Limits()
        if overrides:
            limits = limits.replace(**overrides)
        self.limits = limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(limits.backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.server_address: tuple[Any, ...] = listener.getsockname()
        self.port: int = self.server_address[1]
        self.pool = WorkerPool(limits.workers, limits.max_threads, start_thread=start_thread)
        self.bridge = Bridge(app, limits, self.pool, host or str(self.server_address[0]),
                             self.port)
        try:
            self.dispatcher = Dispatcher(listener, limits, self.pool, self.bridge.serve, poller)
        except BaseException:
            listener.close()
            raise
        self.bridge.give_back = self.dispatcher.give_back
        self.bridge.hold = self.dispatcher.poller.hold
        self.bridge.unhold = self.dispatcher.poller.unhold
        self.bridge.stopping = lambda: self.dispatcher.stopping
        self.bridge.may_wait_next = self._may_wait_next
        # Guards _serving, _stopping and _result: serve_forever() against shutdown().
        self._lock = threading.Lock()
        self._serving = False
        self._stopping = False
        self._result: bool | None = None
        self._thread: threading.Thread | None = None

    def _may_wait_next(self) -> bool:
        """A worker done with a keep-alive request may wait a moment for the connection's
        next one (``Limits.next_request_wait``) while nobody waits for a worker and there
        are no more connections than slots: with more, another connection's request is
        likely due first, and it would have to wait for the slot. (Hints: read without a
        lock.)"""
        d = self.dispatcher
        return self.pool.spare and d.connections <= self.pool.slots and not d.stopping

    def serve_forever(self) -> None:
        """Run the dispatcher until ``shutdown()``. Blocks until then."""
        with self._lock:
            if self._stopping:
                return
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            self._serving = True
        self.pool.prestart()
        self.dispatcher.run()

    def start(self) -> HttpFrontEnd:
        """Serve on a background thread (``mcpsync-http-dispatcher``); returns self."""
        thread = threading.Thread(target=self.serve_forever, name="mcpsync-http-dispatcher",
                                  daemon=True)
        self._thread = thread
        thread.start()
        return self

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop accepting, close idle connections, wait up to ``timeout`` for requests in
        progress, cut the rest and join the threads. Blocks up to ``timeout`` (plus the
        time to join). True if everything finished cleanly. Idempotent."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._result is not None:
                return self._result
            self._stopping = True
            serving = self._serving
        dispatcher = self.dispatcher
        clean = True
        if serving:
            dispatcher.request_stop(deadline)
            # The loop ends by the deadline (it cuts what is left then); allow it a moment.
            clean = dispatcher.exited.wait(max(deadline - time.monotonic(), 0.0) + 1.0)
            clean = clean and dispatcher.clean
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(deadline - time.monotonic(), 0.0) + 1.0)
            clean = clean and not self._thread.is_alive()
        clean = self.pool.shutdown(max(deadline - time.monotonic(), 0.0)) and clean
        dispatcher.close_all()
        with self._lock:
            self._result = clean
        return clean

    def stats(self) -> list[tuple[dict[str, str], float]]:
        """Gauges for ``/metrics``: connections by state, the pool, the dispatcher's
        counters (refused, evicted, timed out, shed)."""
        d = self.dispatcher
        counts = dict(d.counts)
        st = self.pool.stats()
        rows: list[tuple[dict[str, str], float]] = [
            ({"stat": "connections", "state": state}, counts[state]) for state in STATES]
        rows += [({"stat": name}, value) for name, value in (
            ("accepted", d.accepted), ("refused", d.refused), ("evicted", d.evicted),
            ("timed_out", d.timed_out), ("shed", d.shed), ("slots", st.slots),
            ("busy_slots", st.busy_slots), ("threads", st.threads),
            ("queued", st.queued), ("resuming", st.resuming), ("started", st.started),
            ("waited", st.waited), ("overdrafts", st.overdrafts), ("parked", st.parked),
            ("steals", st.steals), ("followed", self.bridge.followed))]
        return rows

    def __enter__(self) -> HttpFrontEnd:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


class WerkzeugServer:
    """``werkzeug.serving``'s threaded development server behind the FrontEnd API."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 8000,
                 **kwargs: Any) -> None:
        from werkzeug.serving import make_server as werkzeug_make_server
        self._server = werkzeug_make_server(host, port, app, threaded=True, **kwargs)
        self.server_address: tuple[Any, ...] = self._server.socket.getsockname()
        self.port: int = self.server_address[1]
        self._thread: threading.Thread | None = None
        self._closed = False

    def serve_forever(self) -> None:
        """Serve until ``shutdown()``; blocks until then."""
        self._server.serve_forever()

    def start(self) -> WerkzeugServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mcpsync-http-werkzeug", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the accept loop (werkzeug polls for this every 0.5 s) and close the socket.
        Requests in progress are not waited for: werkzeug's request threads are daemons."""
        if self._closed:
            return True
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()
        return self._thread is None or not self._thread.is_alive()

    def __enter__(self) -> WerkzeugServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


def make_server(app: WSGIApp, host: str = "127.0.0.1", port: int = 8000, *,
                kind: str = "threaded", **kwargs: Any) -> HttpFrontEnd | WerkzeugServer:
    """A front end hosting ``app``: ``kind="threaded"`` is ``HttpFrontEnd`` (keyword
    arguments: ``Limits`` fields or ``limits=``); ``"werkzeug"`` is werkzeug's server."""
    if kind == "threaded":
        return HttpFrontEnd(app, host, port, **kwargs)
    if kind == "werkzeug":
        return WerkzeugServer(app, host, port, **kwargs)
    raise ValueError(f"unknown server kind {kind!r}; expected 'threaded' or 'werkzeug'")
