"""``Service``: a ``Server`` being served. It owns what the transports share: the
``SessionStore``, the ``Admission`` control, and whether the process is draining. Every
transport served over HTTP (Streamable HTTP in both eras, legacy SSE, WebSocket) goes
through it, so limits, expiry, credential binding and admission control are the same for
all of them. stdio serves one session without a ``Service``: its ``MessageStream`` has an
``Admission`` of its own and there is no store.
"""
from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any, Callable

from .admission import MAX_INFLIGHT, MAX_INFLIGHT_PER_SESSION, Admission
from .core.connection import ServerConnection
from .core.context import Sink
from .errors import SessionLimitError, SessionNotFound
from .server import Server
from .sessions import (MAX_SESSIONS, MAX_SESSIONS_PER_OWNER, SESSION_IDLE_TTL_S, Session,
                       SessionStore)

if TYPE_CHECKING:
    from .state import SharedState

log = logging.getLogger("mcpsync.service")


def client_key(principal: Any, address: str | None) -> str:
    """Whose quota a new session counts against: the credential's principal, or without
    auth the client's address (behind a proxy that is the proxy's: use auth there, or
    raise the quota)."""
    if principal is not None:
        return f"principal:{principal}"
    return f"address:{address or '?'}"


class Service:
    """The served state of one server: sessions, admission control, draining. ``principal``
    is whatever identifies the credential of a request (None without auth); a session
    answers only to the principal that created it."""

    def __init__(self, server: Server, *, store: SessionStore | None = None,
                 max_sessions: int = MAX_SESSIONS,
                 max_sessions_per_client: int | None = MAX_SESSIONS_PER_OWNER,
                 session_idle_ttl_s: float | None = SESSION_IDLE_TTL_S,
                 max_inflight: int = MAX_INFLIGHT,
                 max_inflight_per_session: int = MAX_INFLIGHT_PER_SESSION,
                 state: "SharedState | None" = None) -> None:
        self.server = server
        # Shared state (several instances behind a balancer, mcpsync.state): attached to the
        # server here, its session-id prefix given to the store, closed with this app.
        self.state = state
        if state is not None:
            state.attach(server)
        # The one admission control of every transport, and the request metrics.
        self.admission = Admission(max_inflight=max_inflight,
                                   max_inflight_per_session=max_inflight_per_session,
                                   known_methods=lambda: server.dispatcher.requests)
        # Set once at shutdown: long-lived connections (WebSocket) finish their in-flight
        # calls and end instead of reading more. A plain flag: written once, read by loops.
        self.draining = False
        self.store = store if store is not None else SessionStore(
            max_sessions=max_sessions, max_sessions_per_owner=max_sessions_per_client,
            idle_ttl_s=session_idle_ttl_s, id_prefix=state.session_prefix if state is not None else "")
        self.evicted_total = 0  # idle sessions closed to make room (read by /metrics)

    def open_session(self, *, principal: Any = None, owner: str | None = None,
                     send: Sink | None = None,
                     setup: Callable[[Session], None] | None = None) -> Session:
        """Create a session with its own ``ServerConnection``, counted against ``owner``'s
        quota (``client_key``). ``setup(session)`` runs before the session is published
        (attach transport state there). When the store or the owner's quota is full, the
        least recently used session that is not in use (of that owner, for a quota) is
        closed to make room; if there is none, raises ``SessionLimitError``."""
        def factory(sid: str) -> Session:
            conn = self.server.connect(session_id=sid, send=send)
            session = Session(sid, conn, principal=principal)
            if setup is not None:
                setup(session)
            return session
        try:
            return self.store.create(factory, owner)
        except SessionLimitError as exc:
            if not self._evict_one(owner if exc.scope == "owner" else None):
                raise
        return self.store.create(factory, owner)

    def _evict_one(self, owner: str | None) -> bool:
        """Close the least recently used session (of ``owner``) that is not in use."""
        for session in self.store.oldest(owner):
            if not self.in_use(session) and self.store.delete(session.id):
                self.evicted_total += 1
                log.info("session %s… (idle) closed to make room for a new one", session.id[:8])
                return True
        return False

    def in_use(self, session: Session) -> bool:
        """Whether a session serves something now: a request in flight, or its transport
        holds a connection or stream open for it. Such a session is never evicted."""
        if self.admission.inflight_for(session.id):
            return True
        return session.transport is not None and session.transport.in_use()

    def find_session(self, session_id: str | None, *, principal: Any = None) -> Session:
        """The live session with this id created by this principal; else ``SessionNotFound``
        (unknown, expired, deleted, or another principal's: indistinguishable on purpose)."""
        if not session_id:
            raise SessionNotFound("no session id")
        session = self.store.get(session_id)
        if session is None or not _same_principal(session.principal, principal):
            raise SessionNotFound("unknown session")
        return session

    def close_session(self, session_id: str) -> bool:
        return self.store.delete(session_id)

    @staticmethod
    def connection(session: Session) -> ServerConnection:
        conn = session.handler
        assert isinstance(conn, ServerConnection)
        return conn

    def start(self) -> "Service":
        self.store.start()
        return self

    def close(self) -> None:
        self.store.close()
        self.server.close()  # tasks end (cancelled) and their threads are joined
        if self.state is not None:
            self.state.close()


def _same_principal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, str) and isinstance(b, str):
        return hmac.compare_digest(a.encode(), b.encode())
    return bool(a == b)
