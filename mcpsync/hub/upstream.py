"""``Upstream``: one configured upstream server, kept alive and registered.

Theory of operation
-------------------
A supervisor thread (``mcpsync-hub-supervisor-<name>``) owns the upstream's *shared*
session. It connects (spawn + negotiate), lists everything with no lock held, builds the
proxy definitions, and commits them with one ``server.store.update(..., replace_prefix=...)``:
readers see the old set or the new one, never half, and refreshes of different upstreams
queue on the registry's FIFO mutex instead of interleaving. Then it waits for one of: a
refresh request (an upstream ``list_changed``, ``refresh()``), the session's loss, the ping
interval, or ``stop()``. Refreshes of one upstream are therefore strictly one at a time,
so an older listing can never be committed over a newer one.

When the session is lost the state becomes ``backoff``: the tools stay listed but calls
get an ``isError`` result naming the upstream and its state; after the backoff delay
(exponential, capped; see ``RestartPolicy``) the supervisor connects again and refreshes,
and the tools work again.

Isolation ``per-session``: the shared session only lists (and follows list changes); each
downstream session gets its own upstream session (its own process, for stdio), created on
its first call and closed when the downstream session closes. Creation is single-flight:
the first caller creates, concurrent callers of the same session wait for it, and no lock
is held while the upstream starts. A downstream request with no session (2026-07-28 over
HTTP) gets a fresh upstream session for that request alone.

``Upstream._cond`` guards every mutable field below (state, counters, sessions, the
per-session slots, refresh bookkeeping); its critical sections are assignments and dict
operations, and it is never held across I/O, an upstream call or a callback.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .._version import __version__
from ..errors import ConnectionClosed, McpError, PeerError, RequestTimeout
from ..server import Server
from . import aggregate
from ..client.channels import Channel, make_channel
from ..client.session import ClientSession
from .config import PER_SESSION, UpstreamConfig

log = logging.getLogger("mcpsync.hub")

# States, as /healthz shows them.
DISABLED = "disabled"
CONNECTING = "connecting"
READY = "ready"
BACKOFF = "backoff"
FAILED = "failed"
STOPPED = "stopped"

CLIENT_INFO = {"name": "mcpsync-hub", "version": __version__}
# What the hub declares upstream: it relays these to the downstream client making the call
# (and answers with an error when that client lacks them).
CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": False}}
STABLE_AFTER_S = 10.0      # a session that lived this long resets the backoff on its loss
JOIN_TIMEOUT_S = 10.0      # bound for the supervisor to finish after stop()


class UpstreamUnavailable(McpError):
    """A call to an upstream that is not ready (its message names the upstream and state)."""


class _Slot:
    """A per-session upstream session being created or in use (single-flight)."""

    def __init__(self) -> None:
        self.ready = threading.Event()   # set once, by the creator, when session or error is known
        self.session: ClientSession | None = None
        self.error: BaseException | None = None
        self.dropped = False             # the downstream session ended meanwhile (under _cond)
        self.label = ""


class Upstream:
    """One ``mcpServers`` entry at run time."""

    def __init__(self, cfg: UpstreamConfig, server: Server, *,
                 reap: Callable[[ClientSession], None], forward: aggregate.Forward,
                 on_change: Callable[[], None] = lambda: None,
                 channel_factory: Callable[[UpstreamConfig], Channel] = make_channel) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.server = server
        self._reap = reap
        self._forward = forward      # the Router's: what the proxies built here call
        self._on_change = on_change
        self._make_channel = channel_factory
        # Guards everything below; see the module docstring.
        self._cond = threading.Condition(threading.Lock())
        self.state = STOPPED if cfg.enabled else DISABLED
        self.since = time.monotonic()
        self.last_error: str | None = None
        self.attempts = 0
        self.failures = 0
        self.next_retry_at: float | None = None
        self._session: ClientSession | None = None
        self._opening: ClientSession | None = None
        self._lost = False
        self._stopping = False
        self._want = 0            # refresh requests so far
        self._done = 0            # the highest request number a finished refresh covered
        self._defs: aggregate.Defs | None = None
        self._committed = False
        self._slots: dict[Any, _Slot] = {}
        self._prefer_handshake = False
        self.instance_failures = 0
        self.tool_schemas: dict[str, Any] = {}
        self._thread: threading.Thread | None = None

    @property
    def session(self) -> ClientSession | None:
        """The shared session while the upstream is ready (else None)."""
        with self._cond:
            return self._session if self.state == READY else None

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> "Upstream":
        if not self.cfg.enabled:
            return self
        t = threading.Thread(target=self._supervise, name=f"mcpsync-hub-supervisor-{self.name}",
                             daemon=True)
        self._thread = t
        t.start()
        return self

    def stop(self, *, unregister: bool = True) -> None:
        """Close every session, join the supervisor, and (by default) remove the upstream's
        names from the registry. Blocks (bounded by the shutdown timeouts)."""
        with self._cond:
            self._stopping = True
            sessions = [s for s in (self._session, self._opening) if s is not None]
            for slot in self._slots.values():
                slot.dropped = True
                if slot.session is not None:
                    sessions.append(slot.session)
            self._slots.clear()
            self._session = None
            self._cond.notify_all()
        for s in sessions:
            s.close()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(JOIN_TIMEOUT_S)
            if t.is_alive():
                log.warning("upstream %s: the supervisor did not stop in time", self.name)
        if unregister:
            self.server.store.update(tools=[], prompts=[], resources=[], templates=[], completers={},
                               replace_prefix=self.cfg.tool_prefix, replace_uri_prefix=self.cfg.uri_prefix)
        self._set_state(STOPPED if self.cfg.enabled else DISABLED)

    def _set_state(self, state: str, error: str | None = None, retry_in: float | None = None) -> None:
        with self._cond:
            if self.state != state:
                self.since = time.monotonic()
            self.state = state
            if error is not None:
                self.last_error = error
            self.next_retry_at = None if retry_in is None else time.monotonic() + retry_in
            self._cond.notify_all()
        self._on_change()

    # ---- supervision -------------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            while not self._stopping:
                session = self._connect()
                if session is None:
                    if not self._backoff():
                        return
                    continue
                ready_at = time.monotonic()
                self._watch(session)
                with self._cond:
                    if self._session is session:
                        self._session = None
                    self._lost = False
                    stable = time.monotonic() - ready_at >= STABLE_AFTER_S
                    if stable:
                        self.failures = 0
                    self.failures += 1
                session.close()
                if self._stopping:
                    return
                if not self._backoff():
                    return
        except Exception:
            log.exception("upstream %s: supervisor failed", self.name)
            self._set_state(FAILED, "internal error in the hub's supervisor (see the hub's log)")

    def _backoff(self) -> bool:
        """Wait before the next attempt; False when the upstream should not be retried."""
        policy = self.cfg.restart
        with self._cond:
            failures = self.failures
        if policy.max_attempts and failures >= policy.max_attempts:
            self._set_state(FAILED)
            log.error("upstream %s: giving up after %d failed attempts", self.name, failures)
            return False
        delay = policy.delay(failures)
        self._set_state(BACKOFF, retry_in=delay)
        with self._cond:
            return not self._cond.wait_for(lambda: self._stopping, delay)

    def _connect(self) -> ClientSession | None:
        """Start a session and register its lists; None on failure (recorded)."""
        self._set_state(CONNECTING)
        session = self._new_session(on_lost=self._shared_lost)
        with self._cond:
            if self._stopping:
                return None
            self.attempts += 1
            self._opening = session
            self._lost = False
        try:
            session.open()
            with self._cond:
                if session.revision is not None and not session.modern:
                    self._prefer_handshake = True
                want = self._want
            self._refresh(session, want)
        except Exception as exc:
            session.close()
            reason = _with_stderr(session, _describe(exc))
            with self._cond:
                self._opening = None
                self.failures += 1
            if not self._stopping:
                log.warning("upstream %s: start failed: %s", self.name, reason)
                self._set_state(BACKOFF, reason)
            return None
        with self._cond:
            self._opening = None
            if self._stopping:
                stopped = True
            else:
                stopped = False
                self._session = session
        if stopped:
            session.close()
            return None
        log.info("upstream %s: ready (%s, revision %s)", self.name, self.cfg.transport, session.revision)
        self._set_state(READY)
        return session

    def _watch(self, session: ClientSession) -> None:
        """Serve refresh requests and pings until the session is lost or we stop."""
        ping = self.cfg.ping_interval or None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._lost or self._want > self._done, ping)
                if self._stopping or self._lost:
                    return
                want = self._want
                refresh = want > self._done
            try:
                if refresh:
                    self._refresh(session, want)
                else:
                    try:
                        session.ping(self.cfg.timeouts.request)
                    except PeerError:
                        pass  # an answer, even an error, is a live upstream
            except Exception as exc:
                if not session.alive or isinstance(exc, (ConnectionClosed, RequestTimeout)):
                    reason = _with_stderr(session, session.lost or _describe(exc))
                    log.warning("upstream %s: %s", self.name, reason)
                    self._set_state(BACKOFF, reason)
                    return
                log.warning("upstream %s: refresh failed: %s", self.name, _describe(exc))
                with self._cond:
                    self.last_error = f"refresh failed: {_describe(exc)}"
                    self._done = max(self._done, want)
                    self._cond.notify_all()

    def _shared_lost(self, session: ClientSession, reason: str) -> None:
        with self._cond:
            if session is not self._session and session is not self._opening:
                return
            self._lost = True
            current = session is self._session
        reason = _with_stderr(session, reason)
        if current:  # calls fail from now on: say so at once, not after the cleanup
            log.warning("upstream %s: lost (%s); it will be restarted", self.name, reason)
            self._set_state(BACKOFF, reason)
        else:
            with self._cond:
                self.last_error = reason
                self._cond.notify_all()
            self._on_change()

    # ---- refresh -----------------------------------------------------------------------------

    def request_refresh(self, _kind: str = "all") -> None:
        with self._cond:
            self._want += 1
            self._cond.notify_all()

    def refresh(self, timeout: float) -> bool:
        """Ask for a refresh and wait until one that started after this call is committed
        (True), or ``timeout`` seconds pass (False). Blocks."""
        with self._cond:
            self._want += 1
            mine = self._want
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._done >= mine or self._stopping, timeout)
            return self._done >= mine

    def _refresh(self, session: ClientSession, want: int) -> None:
        """List everything (no lock held), build the proxies, commit them in one update."""
        caps = session.capabilities
        lists: dict[str, list[dict[str, Any]]] = {}
        if "tools" in caps:
            lists["tools"] = session.list_all("tools/list", "tools")
        if "prompts" in caps:
            lists["prompts"] = session.list_all("prompts/list", "prompts")
        if "resources" in caps:
            lists["resources"] = session.list_all("resources/list", "resources")
            try:
                lists["resourceTemplates"] = session.list_all("resources/templates/list", "resourceTemplates")
            except PeerError as exc:
                if exc.code != -32601:
                    raise
        schemas: dict[str, Any] = {t["name"]: t["inputSchema"] for t in lists.get("tools", [])
                                   if isinstance(t.get("name"), str) and isinstance(t.get("inputSchema"), dict)}
        with self._cond:
            previous = self._defs
        defs = aggregate.build(self.cfg, lists, self._forward,
                               previous.names if previous is not None else None,
                               completions="completions" in caps)
        new_sig = defs.signature()
        old_sig = previous.signature() if previous is not None and self._committed else None
        changed = {k: old_sig is None or old_sig[k] != v for k, v in new_sig.items()}
        with self._cond:
            if self._stopping:
                return
        if any(changed.values()):
            self.server.store.update(tools=defs.tools if changed["tools"] else None,
                               prompts=defs.prompts if changed["prompts"] else None,
                               resources=defs.resources if changed["resources"] else None,
                               templates=defs.templates if changed["resources"] else None,
                               completers=defs.completers if changed["prompts"] or changed["resources"] else None,
                               replace_prefix=self.cfg.tool_prefix, replace_uri_prefix=self.cfg.uri_prefix)
        with self._cond:
            self._defs = defs
            self._committed = True
            self.tool_schemas = schemas
            self._done = max(self._done, want)
            self._cond.notify_all()
        session.tool_schemas = schemas
        if defs.skipped != (previous.skipped if previous is not None else []):
            for item in defs.skipped:
                log.warning("upstream %s: %s %r skipped: %s", self.name, item["kind"], item["name"],
                            item["reason"])
        self._on_change()

    # ---- calls (the Router drives these) -------------------------------------------------

    def release(self, session: ClientSession) -> None:
        """A request's own session (``session_for`` said ephemeral) is done: reap it."""
        self._reap(session)

    def _unavailable(self) -> UpstreamUnavailable:
        with self._cond:
            state, err, retry = self.state, self.last_error, self.next_retry_at
        text = f"upstream {self.name!r} is unavailable (state: {state}"
        if err:
            text += f"; last error: {err}"
        if retry is not None:
            text += f"; next attempt in {max(0.0, retry - time.monotonic()):.1f} s"
        return UpstreamUnavailable(text + ")")

    def session_for(self, ctx: Any) -> tuple[ClientSession, bool]:
        """The upstream session for the request ``ctx`` and whether it is the request's
        own (a sessionless request with per-session isolation: ``release`` it after)."""
        if self.cfg.isolation != PER_SESSION:
            with self._cond:
                session = self._session if self.state == READY else None
            if session is None or not session.alive:
                raise self._unavailable()
            return session, False
        with self._cond:
            if self._stopping:
                raise UpstreamUnavailable(f"upstream {self.name!r} is stopped")
        conn = ctx.conn
        if not self.server.is_connected(conn):
            return self._open_instance(f"request {ctx.request_id!r}"), True  # a sessionless request
        while True:
            with self._cond:
                slot = self._slots.get(conn)
                creator = slot is None
                if creator:
                    slot = _Slot()
                    slot.label = conn.session_id or f"connection {id(conn):x}"
                    self._slots[conn] = slot
            assert slot is not None
            if creator:
                return self._create(conn, slot), False
            if not slot.ready.wait(self.cfg.timeouts.connect + self.cfg.timeouts.probe):
                raise UpstreamUnavailable(f"upstream {self.name!r}: the session's own upstream "
                                          "did not start in time")
            if slot.error is not None:
                raise UpstreamUnavailable(f"upstream {self.name!r}: {_describe(slot.error)}")
            session = slot.session
            assert session is not None
            if session.alive:
                return session, False
            with self._cond:  # it died: the next round creates a new one
                if self._slots.get(conn) is slot:
                    del self._slots[conn]
                    self.instance_failures += 1
            self._reap(session)

    def _create(self, conn: Any, slot: _Slot) -> ClientSession:
        try:
            session = self._open_instance(slot.label)
        except BaseException as exc:
            with self._cond:
                if self._slots.get(conn) is slot:
                    del self._slots[conn]
                self.instance_failures += 1
            slot.error = exc
            slot.ready.set()
            self._on_change()
            raise UpstreamUnavailable(f"upstream {self.name!r}: {_describe(exc)}") from None
        with self._cond:
            slot.session = session
            dropped = slot.dropped
        slot.ready.set()
        self._on_change()
        if dropped or getattr(conn, "closed", False):
            self.drop_connection(conn)
            self._reap(session)
            raise UpstreamUnavailable(f"upstream {self.name!r}: the client session ended")
        return session

    def _instance_lost(self, session: ClientSession, reason: str) -> None:
        """A per-session upstream died: forget it now (the next call of its client starts a
        new one) and have it reaped, so no dead child waits for its client to leave."""
        with self._cond:
            dead = [c for c, slot in self._slots.items() if slot.session is session]
            for conn in dead:
                del self._slots[conn]
            if dead:
                self.instance_failures += 1
        if dead:
            log.warning("upstream %s: a per-session instance was lost (%s)", self.name, reason)
            self._reap(session)
        self._on_change()

    def _open_instance(self, label: str) -> ClientSession:
        session = self._new_session(on_lost=self._instance_lost)
        log.info("upstream %s: starting an instance for %s", self.name, label)
        try:
            session.open()
        except Exception:
            session.close()
            raise
        with self._cond:
            session.tool_schemas = dict(self.tool_schemas)
        return session

    def drop_connection(self, conn: Any) -> None:
        """The downstream session ``conn`` ended: its upstream session is closed (by the
        reaper, not on this thread)."""
        with self._cond:
            slot = self._slots.pop(conn, None)
            if slot is None:
                return
            slot.dropped = True
            session = slot.session
        if session is not None:
            self._reap(session)
        self._on_change()

    def sweep(self) -> int:
        """Close the per-session upstreams whose downstream session is gone without having
        told us (a leak). Returns how many were reaped."""
        with self._cond:
            leaked = [c for c in self._slots if getattr(c, "closed", False)]
        for conn in leaked:
            self.drop_connection(conn)
        return len(leaked)

    def _new_session(self, on_lost: Callable[[ClientSession, str], None]) -> ClientSession:
        with self._cond:
            prefer = self._prefer_handshake
        return ClientSession(self.cfg, self._make_channel(self.cfg),
                               on_list_changed=self.request_refresh,
                               on_resource_updated=self._resource_updated,
                               on_lost=on_lost, prefer_handshake=prefer,
                               client_info=CLIENT_INFO, capabilities=CLIENT_CAPABILITIES)

    def _resource_updated(self, uri: str) -> None:
        self.server.notify_resource_updated(aggregate.hub_uri(self.cfg, uri))

    # ---- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        with self._cond:
            session = self._session
            defs = self._defs
            out: dict[str, Any] = {
                "state": self.state, "enabled": self.cfg.enabled, "required": self.cfg.required,
                "transport": self.cfg.transport,
                "isolation": self.cfg.isolation, "prefix": self.cfg.prefix,
                "restarts": max(0, self.attempts - 1), "failures": self.failures,
                "lastError": self.last_error,
                "sinceS": round(time.monotonic() - self.since, 3),
                "nextRetryS": (None if self.next_retry_at is None
                               else round(max(0.0, self.next_retry_at - time.monotonic()), 3)),
                "sessions": sum(1 for s in self._slots.values() if s.session is not None),
                "instanceFailures": self.instance_failures,
            }
        out["revision"] = session.revision if session is not None else None
        if session is not None:
            out["upstream"] = session.health()
        out["tools"] = len(defs.tools) if defs else 0
        out["prompts"] = len(defs.prompts) if defs else 0
        out["resources"] = len(defs.resources) if defs else 0
        out["resourceTemplates"] = len(defs.templates) if defs else 0
        out["filtered"] = defs.filtered if defs else 0
        out["skipped"] = list(defs.skipped) if defs else []
        return out

    def session_pids(self) -> dict[str, Any]:
        """pid of the shared session and of each per-session one (stdio; for tests/ops)."""
        with self._cond:
            shared = self._session
            per = {s.label: s.session for s in self._slots.values() if s.session is not None}
        pid = (lambda s: s.channel.info().get("pid") if s is not None else None)
        return {"shared": pid(shared), "sessions": {k: pid(v) for k, v in per.items()}}


def _with_stderr(session: ClientSession, reason: str) -> str:
    """``reason`` and the last lines the upstream wrote to stderr (stdio), for lastError."""
    tail = list(getattr(session.channel, "stderr_tail", None) or ())
    return f"{reason}; its last stderr: {' | '.join(tail)}" if tail else reason


def _describe(exc: BaseException) -> str:
    if isinstance(exc, McpError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
