"""Session store: the id -> session map that every transport shares.

Theory of operation
-------------------
One dict, one ``threading.RLock`` (``SessionStore._lock``). The lock guards the dict, the
per-owner counts, the counters, each session's ``last_used`` and the reaper's handle:
every public operation is a single critical section that looks up, inserts or removes, so
there is never a check-then-read window. Factories (which build a session's
protocol handler) run *inside* the lock only in ``get_or_create`` -- that is what makes it
atomic; they must be cheap and must not block (no I/O). ``create`` runs the factory outside
the lock, then inserts under it.

Close hooks (end streams, cancel in-flight work) always run *after* the lock is released,
so a hook may call back into the store.

Quotas: every session has an ``owner`` (the credential's principal, or the client's address
without auth). ``max_sessions`` bounds the store and ``max_sessions_per_owner`` each owner,
so one client cannot fill the store for everyone. ``create`` raises ``SessionLimitError``
(its ``scope`` says which limit) and leaves the choice of what to evict to the caller
(``Service``, which knows which sessions are in use); ``oldest`` lists the candidates.

Idle expiry: every session records ``last_used`` from an injectable monotonic clock. A
reaper thread (``mcpsync-session-reaper``) wakes every ``reap_interval_s`` and removes the
sessions idle for longer than ``idle_ttl_s``; ``reap()`` does one pass synchronously, which
is what tests call with a fake clock. ``close()`` stops and joins the reaper and closes every
session.

Lock order: ``SessionStore._lock`` is taken with no other mcpsync lock held, and nothing
is taken under it except a factory's own work (``get_or_create``) and the start of the
reaper thread (``start``, once). Close hooks run after it is released.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterator, Protocol

from .errors import SessionLimitError

log = logging.getLogger("mcpsync.sessions")

SESSION_ID_BYTES = 24  # 192 bits from `secrets`: unguessable, URL-safe base64 of 32 chars
SESSION_IDLE_TTL_S = 1800.0
SESSION_REAP_INTERVAL_S = 30.0
MAX_SESSIONS = 10_000
MAX_SESSIONS_PER_OWNER = 1_000  # one principal's (or, without auth, one address's) share

Clock = Callable[[], float]


def new_session_id() -> str:
    """A fresh session id: 192 random bits as URL-safe base64 (visible ASCII, no padding)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class TransportState(Protocol):
    """A transport's own state for one session (``Session.transport``)."""

    kind: str  # "http", "legacy-sse", "websocket": metrics count sessions by it

    def in_use(self) -> bool:
        """A connection or stream is open for the session now (it is not idle)."""
        ...

    def end_streams(self) -> None:
        """Shutdown: end long-lived streams so they do not hold the front end up."""
        ...


class Session:
    """One client session: an id, its protocol handler, and bookkeeping.

    ``handler`` is the session's own protocol handler (never shared between sessions).
    ``principal`` is the credential identity that created the session; transports refuse the
    session to any other principal. ``last_used`` is written by the store under its lock.
    """

    __slots__ = ("id", "handler", "principal", "owner", "created", "last_used", "transport",
                 "_close_hooks", "_closed", "__weakref__")

    def __init__(self, session_id: str, handler: Any = None, *, principal: Any = None,
                 owner: str | None = None, now: float = 0.0) -> None:
        self.id = session_id
        self.handler = handler
        self.principal = principal
        self.owner = owner  # whose quota the session counts against (None: only the total)
        self.created = now
        self.last_used = now
        # What the session's transport keeps for it (streams, a connection); set once by the
        # transport before the session is published.
        self.transport: TransportState | None = None
        # Written only before the session is published or by the single closer (see close()).
        self._close_hooks: list[Callable[["Session"], None]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def on_close(self, hook: Callable[["Session"], None]) -> None:
        """Register ``hook(session)`` to run once when the session ends (outside any store lock)."""
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Run the close hooks once. Called by the store after the session left the dict,
        so exactly one thread (the one that removed it) gets here."""
        if self._closed:
            return
        self._closed = True
        hooks, self._close_hooks = self._close_hooks, []
        handler_close = getattr(self.handler, "close", None)
        for hook in hooks:
            try:
                hook(self)
            except Exception:  # a hook's bug must not stop the others or the caller
                log.exception("session %s: close hook failed", self.id[:8])
        if callable(handler_close):
            try:
                handler_close()
            except Exception:
                log.exception("session %s: handler close failed", self.id[:8])

    def __repr__(self) -> str:
        return f"<Session {self.id[:8]}… closed={self._closed}>"


SessionFactory = Callable[[str], Session]


class SessionStore:
    """Thread-safe map of live sessions with limits and idle expiry.

    ``factory(session_id) -> Session`` builds a session (and its handler); the store owns
    the id. Start the reaper with ``start()`` (the servers do) or call ``reap()`` yourself.
    """

    def __init__(self, *, max_sessions: int = MAX_SESSIONS,
                 max_sessions_per_owner: int | None = MAX_SESSIONS_PER_OWNER,
                 idle_ttl_s: float | None = SESSION_IDLE_TTL_S,
                 reap_interval_s: float = SESSION_REAP_INTERVAL_S,
                 clock: Clock = time.monotonic, id_prefix: str = "") -> None:
        if max_sessions < 1 or (max_sessions_per_owner is not None and max_sessions_per_owner < 1):
            raise ValueError("session limits must be at least 1")
        self.max_sessions = max_sessions
        self.max_sessions_per_owner = max_sessions_per_owner
        self.idle_ttl_s = idle_ttl_s
        self.reap_interval_s = reap_interval_s
        self._clock = clock
        # Prepended to every new id ("NAME." from --instance-id): a balancer that cannot
        # learn ids from responses (nginx open source) routes a session on its prefix.
        self.id_prefix = id_prefix
        # Guards _sessions, _per_owner, the counters, sessions' last_used and _reaper. Taken
        # by any worker for one lookup/insert/delete; never held across I/O or a close hook.
        # Reentrant so a factory may read len(store).
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._per_owner: dict[str, int] = {}  # owner -> live sessions (entries > 0 only)
        # Set by close(); the reaper waits on it between passes.
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        self.created_total = 0
        self.expired_total = 0

    # ---- lookup and creation -------------------------------------------------------------

    def create(self, factory: SessionFactory, owner: str | None = None) -> Session:
        """Build a session with a fresh id for ``owner`` and insert it. Raises
        ``SessionLimitError`` when the store or the owner's quota is full (checked before
        the factory runs and again at insert)."""
        with self._lock:
            self._check_room(owner)
        sid = self.id_prefix + new_session_id()
        session = factory(sid)
        session.owner = owner
        refused: SessionLimitError | None = None
        with self._lock:
            try:
                self._check_room(owner)
            except SessionLimitError as exc:
                refused = exc
            else:
                self._insert(session)
        if refused is not None:
            session.close()
            raise refused
        return session

    def oldest(self, owner: str | None = None) -> list[Session]:
        """The live sessions (of ``owner``, if given), least recently used first: the
        candidates for eviction when the store or a quota is full."""
        with self._lock:
            sessions = [s for s in self._sessions.values() if owner is None or s.owner == owner]
        sessions.sort(key=lambda s: s.last_used)
        return sessions

    def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session with this id, or None. One lookup under the lock."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and touch:
                session.last_used = self._clock()
            return session

    def get_or_create(self, session_id: str, factory: SessionFactory) -> tuple[Session, bool]:
        """Atomically return the session for ``session_id``, creating it with ``factory`` if
        absent. Returns ``(session, created)``. The factory runs under the store lock, so N
        racing threads create exactly one session; it must not block."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_used = self._clock()
                return session, False
            self._check_room(None)
            session = factory(session_id)
            if session.id != session_id:
                raise ValueError("factory returned a session with another id")
            self._insert(session)
            return session, True

    def touch(self, session_id: str) -> bool:
        """Mark the session used now; False if it does not exist."""
        return self.get(session_id, touch=True) is not None

    def delete(self, session_id: str) -> bool:
        """Remove and close the session. Idempotent: True only for the call that removed it."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is not None:
                self._uncount(session)
        if session is None:
            return False
        session.close()
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions

    def snapshot(self) -> list[Session]:
        """A list of the live sessions at one instant (safe to iterate while others mutate)."""
        with self._lock:
            return list(self._sessions.values())

    def __iter__(self) -> Iterator[Session]:
        return iter(self.snapshot())

    # ---- expiry ---------------------------------------------------------------------------

    def reap(self) -> int:
        """Remove and close every session idle for longer than ``idle_ttl_s``; returns how many."""
        if self.idle_ttl_s is None:
            return 0
        deadline = self._clock() - self.idle_ttl_s
        with self._lock:
            stale = [s for s in self._sessions.values() if s.last_used < deadline]
            for s in stale:
                del self._sessions[s.id]
                self._uncount(s)
            self.expired_total += len(stale)
        for s in stale:
            s.close()
        return len(stale)

    def start(self) -> "SessionStore":
        """Start the idle reaper thread (idempotent). Returns self."""
        with self._lock:
            if self._reaper is not None or self.idle_ttl_s is None:
                return self
            self._reaper = threading.Thread(target=self._reap_loop, name="mcpsync-session-reaper",
                                            daemon=True)
            self._reaper.start()
        return self

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self.reap_interval_s):
            try:
                self.reap()
            except Exception:  # keep reaping; a failing close hook is already logged
                log.exception("session reaper pass failed")

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the reaper (joined) and close every session."""
        self._stopping.set()
        reaper = self._reaper
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout)
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._per_owner.clear()
        for s in sessions:
            s.close()

    # ---- internals (call with _lock held) -------------------------------------------------

    def _check_room(self, owner: str | None) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimitError(f"session limit of {self.max_sessions} reached", "total")
        quota = self.max_sessions_per_owner
        if owner is not None and quota is not None and self._per_owner.get(owner, 0) >= quota:
            raise SessionLimitError(f"this client's session limit of {quota} reached", "owner")

    def _insert(self, session: Session) -> None:
        now = self._clock()
        session.created = session.last_used = now
        self._sessions[session.id] = session
        if session.owner is not None:
            self._per_owner[session.owner] = self._per_owner.get(session.owner, 0) + 1
        self.created_total += 1

    def _uncount(self, session: Session) -> None:
        owner = session.owner
        if owner is not None:
            left = self._per_owner[owner] - 1
            if left:
                self._per_owner[owner] = left
            else:
                del self._per_owner[owner]
