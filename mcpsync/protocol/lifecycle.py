"""Session lifecycle of the handshake-era revisions, as one transition table.

Theory of operation
-------------------
A handshake-era session moves through three phases::

    NEW --initialize--> INITIALIZING --notifications/initialized--> READY

* In ``NEW`` only ``initialize`` and ``ping`` are legal requests; any other request is the
  peer's mistake (-32600 "not initialized"). Notifications other than ``initialized`` are
  ignored, as JSON-RPC requires (never answer a notification).
* In ``INITIALIZING`` the client has its answer but has not confirmed; the spec lets a
  server tolerate requests here, and we do (clients pipeline). A second ``initialize`` is an
  error in every phase after ``NEW``.
* In ``READY`` everything but ``initialize`` is legal as far as the lifecycle goes;
  capability checks happen in the handlers.

The modern revision (2026-07-28) has no phases: every request carries its version and
capabilities in ``_meta``, checked per request by ``ServerConnection.handle_request``
(``modern.request_envelope``), or over HTTP before it by ``modern.check_headers``, which
hands it the ``Envelope``.
"""
from __future__ import annotations

from ..errors import InvalidRequest

NEW = "new"
INITIALIZING = "initializing"
READY = "ready"

#: (phase, method) -> next phase. A method absent here leaves the phase unchanged.
TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, "initialize"): INITIALIZING,
    (INITIALIZING, "notifications/initialized"): READY,
    (NEW, "notifications/initialized"): NEW,  # confirmation of nothing: ignored
}

#: Requests legal in each phase; None means "all except initialize".
ALLOWED_REQUESTS: dict[str, frozenset[str] | None] = {
    NEW: frozenset({"initialize", "ping"}),
    INITIALIZING: None,
    READY: None,
}


def check_request(phase: str, method: str) -> None:
    """Raise ``InvalidRequest`` if ``method`` may not be requested in ``phase``."""
    allowed = ALLOWED_REQUESTS[phase]
    if allowed is None:
        if method == "initialize":
            raise InvalidRequest("Invalid Request: the session is already initialized")
        return
    if method not in allowed:
        raise InvalidRequest("Invalid Request: the session is not initialized; send initialize first")


def next_phase(phase: str, method: str) -> str:
    """The phase after ``method`` (a request that succeeded, or a notification) in ``phase``."""
    return TRANSITIONS.get((phase, method), phase)
