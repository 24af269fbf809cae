"""Transport-agnostic glue: a ``Server``, its ``SessionStore``, and how sessions are opened,
found and closed. Every transport (Streamable HTTP, legacy SSE, WebSocket) goes through
``McpApp`` so limits, expiry and credential binding are the same everywhere.
"""
from __future__ import annotations

import hmac
from typing import Any, Callable

from .connection import ServerConnection, Sink
from .errors import SessionNotFound
from .server import Server
from .sessions import MAX_SESSIONS, SESSION_IDLE_TTL_S, Session, SessionStore


class McpApp:
    """Sessions of one server. ``principal`` is whatever identifies the credential of a
    request (None without auth); a session answers only to the principal that created it."""

    def __init__(self, server: Server, *, store: SessionStore | None = None,
                 max_sessions: int = MAX_SESSIONS,
                 session_idle_ttl_s: float | None = SESSION_IDLE_TTL_S) -> None:
        self.server = server
        # Set once at shutdown: long-lived connections (WebSocket) finish their in-flight
        # calls and end instead of reading more. A plain flag: written once, read by loops.
        self.draining = False
        self.store = store if store is not None else SessionStore(
            max_sessions=max_sessions, idle_ttl_s=session_idle_ttl_s)

    def open_session(self, *, principal: Any = None, send: Sink | None = None,
                     setup: Callable[[Session], None] | None = None) -> Session:
        """Create a session with its own ``ServerConnection``. ``setup(session)`` runs before
        the session is published (attach transport state there). Raises ``SessionLimitError``."""
        def factory(sid: str) -> Session:
            conn = self.server.connect(session_id=sid, send=send)
            session = Session(sid, conn, principal=principal)
            if setup is not None:
                setup(session)
            return session
        return self.store.create(factory)

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

    def start(self) -> "McpApp":
        self.store.start()
        return self

    def close(self) -> None:
        self.store.close()
        self.server.close()  # tasks end (cancelled) and their threads are joined


def _same_principal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, str) and isinstance(b, str):
        return hmac.compare_digest(a.encode(), b.encode())
    return bool(a == b)
