"""``ListenStream``: the one ``subscriptions/listen`` request (revision 2026-07-28) a
``ClientSession`` keeps open, so that list changes and resource updates reach it without
sessions.

The request runs on the session's events thread (``run``) with the current filter: the
list kinds the server says can change, plus the resources someone follows (``follow``).
A new set of resources cancels the request in flight, and the loop re-opens it at once
with the new filter; ``follow`` returns when the server has acknowledged that one
(``notifications/subscriptions/acknowledged``, seen by the session's router and passed
to ``acknowledged``). An ended listen is re-opened after ``LISTEN_RETRY_S``.

``_cond`` guards every field; held for assignments and the waits of ``follow`` only.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from ..errors import Cancelled, ConnectionClosed, McpError, PeerError, RequestTimeout
from .caller import CancelToken

log = logging.getLogger("mcpsync.client")

LISTEN_RETRY_S = 1.0             # pause before re-opening an ended subscriptions/listen

# (filter, cancel) -> returns when the listen request ends; raises like ClientSession.request
Listen = Callable[[dict[str, Any], CancelToken], None]


class ListenStream:
    """See the module docstring. ``flags()`` gives the list-changed part of the filter;
    ``alive()`` says whether the session still runs."""

    def __init__(self, name: str, listen: Listen, flags: Callable[[], dict[str, bool]],
                 alive: Callable[[], bool]) -> None:
        self.name = name
        self._listen = listen
        self._flags = flags
        self._alive = alive
        # Guards the fields below; notified on an acknowledgement and when listening ends.
        self._cond = threading.Condition(threading.Lock())
        self._uris: frozenset[str] = frozenset()
        self._stop: CancelToken | None = None   # ends the listen request in flight
        self._wanted = 1      # generation of the filter asked for (follow)
        self._opened = 0      # generation of the listen request in flight
        self._acked = 0       # generation the server acknowledged last
        self._ended: str | None = None           # why listening stopped for good
        self._closing = CancelToken()

    def wanted(self) -> bool:
        with self._cond:
            return bool(self._uris) or bool(self._flags())

    def follow(self, uris: frozenset[str], timeout: float) -> None:
        """Listen for updates of exactly ``uris``; blocks until the server acknowledged the
        new filter (``RequestTimeout`` after ``timeout`` s; ``ConnectionClosed`` if
        listening has ended for good). The caller makes sure ``run`` runs."""
        with self._cond:
            self._uris = frozenset(uris)
            self._wanted += 1
            want = self._wanted
            stop = self._stop
        if stop is not None:
            stop.cancel()
        if not uris and not self._flags():
            return  # nothing left to listen for: the loop waits for a new filter
        with self._cond:
            acked = self._cond.wait_for(lambda: self._acked >= want or self._ended is not None, timeout)
            ended = self._ended if self._acked < want else None
        if ended is not None:
            raise ConnectionClosed(f"upstream {self.name!r}: cannot follow resources: {ended}")
        if not acked:
            raise RequestTimeout(f"upstream {self.name!r} did not acknowledge subscriptions/listen "
                                 f"within {timeout:g} s")

    def ready(self, timeout: float) -> bool:
        """Wait until the current filter is acknowledged or listening ended (bounded)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._acked >= self._wanted or self._ended is not None, timeout)

    def acknowledged(self) -> None:
        with self._cond:
            self._acked = self._opened
            self._cond.notify_all()

    def close(self) -> None:
        """End the loop (the session closes the connection, which ends the request)."""
        self._end("the session is closed")
        self._closing.cancel()
        with self._cond:
            stop = self._stop
        if stop is not None:
            stop.cancel()

    def _end(self, reason: str) -> None:
        with self._cond:
            if self._ended is None:
                self._ended = reason
            self._cond.notify_all()

    def run(self) -> None:
        """The events thread: keep one listen open with the current filter until closed."""
        while not self._closing.cancelled and self._alive():
            stop = CancelToken()
            with self._cond:
                self._stop = stop
                uris = self._uris
                self._opened = self._wanted
            wanted: dict[str, Any] = dict(self._flags())
            if uris:
                wanted["resourceSubscriptions"] = sorted(uris)
            try:
                if wanted:
                    self._listen(wanted, stop)
            except (McpError, Cancelled) as exc:
                if self._closing.cancelled or not self._alive():
                    break
                if isinstance(exc, PeerError) and exc.code == -32601:
                    log.info("upstream %s: no subscriptions/listen; changes are not followed", self.name)
                    self._end("the server has no subscriptions/listen")
                    return
                log.debug("upstream %s: listen ended: %s", self.name, exc)
            if stop.cancelled:
                continue  # a new filter (or close): re-open at once, or leave
            wake = threading.Event()
            removers = [t.on_cancel(wake.set) for t in (stop, self._closing)]
            wake.wait(LISTEN_RETRY_S if wanted else None)
            for remove in removers:
                remove()
        self._end("the session is closed")
