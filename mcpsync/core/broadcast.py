"""Broadcasts: messages not tied to a request, to every live session and every
``subscriptions/listen`` stream that wants them (``*/list_changed``, ``resources/updated``,
``notifications/tasks``), and the session-closed hooks.

Theory of operation
-------------------
``Broadcaster`` keeps the live handshake-era connections (a weak set: a connection that is
dropped without ``close`` disappears on its own) and the open listen streams. A broadcast
takes a snapshot under the set's lock and delivers outside it. Delivery never waits for a
client: a session's ``send`` is its transport's non-blocking post (a logged SSE stream, or
a message stream's outbox), and a ``Listener`` only appends to its own bounded outbox,
which the listen request's own thread writes out. So one client that stops reading slows
nobody else, and the thread that broadcasts (a registration, the hub, another instance's
bus) is never held by a client.

``notify_*`` deliver here and hand the message to ``publish`` when the process shares
state with others (``mcpsync.state``); their buses call ``deliver_*`` on every instance.

A listen stream needs no thread while it waits when its sink can carry it: a sink with
``follow(source)`` (the 2026-07-28 HTTP response) takes the ``Listener`` as a message
source (``attach(wake)``, ``take()``, ``close()``) and writes what it holds whenever it
is woken; the handler then returns its result at once, which goes out after the last
notification, when the stream is ended (``end_listeners``). Any other sink (stdio, a
WebSocket) is written by the listen request's own thread (``Listener.run``).

Locks: ``_conns_lock`` guards the connection set, ``_listeners_lock`` the listener set;
each is held for a copy or an add/remove and nothing is taken under it. A ``Listener``'s
``_cond`` guards its outbox and flags (a leaf; the writes happen outside it).
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from typing import Any, Callable

from .. import telemetry
from ..errors import Cancelled, InvalidParams, MissingClientCapability
from ..protocol import jsonrpc
from ..protocol.modern import META_SUBSCRIPTION, TASKS_EXTENSION, has_tasks
from ..sync import may_block
from .connection import ServerConnection
from .context import Context

log = logging.getLogger("mcpsync.server")

LISTEN_KEEPALIVE_S = 15.0
LISTENER_OUTBOX = 1000   # notifications a listen stream may fall behind by; the oldest go first
#: list kind -> its flag in a subscriptions/listen filter
LIST_FILTERS = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
                ("resources", "resourcesListChanged"))


class Broadcaster:
    """See the module docstring. ``owned_tasks(ids, principal)`` says which task ids a
    listen stream of ``principal`` may follow (``TaskManager.owned``)."""

    def __init__(self, owned_tasks: Callable[[list[Any], str | None], list[str]]) -> None:
        self._owned_tasks = owned_tasks
        # Guards _conns (the live connections, for broadcasts); taken briefly, never across I/O.
        self._conns_lock = threading.Lock()
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        # Guards _listeners (the live subscriptions/listen streams) and _ended_conns (the
        # connections whose listen streams were ended: a new one ends at once); taken briefly.
        self._listeners_lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._ended_conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self._session_closed_hooks: list[Callable[[ServerConnection], None]] = []
        # Shared state hook (mcpsync.state): when set, notify_* also hand their message to
        # it for the other instances, whose buses call deliver_*. None: this process alone.
        self.publish: Callable[[dict[str, Any]], None] | None = None

    # ---- sessions ---------------------------------------------------------------------------

    def add(self, conn: ServerConnection) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        if telemetry.ACTIVE is not None:
            telemetry.ACTIVE.session_opened(conn)

    def is_connected(self, conn: ServerConnection) -> bool:
        with self._conns_lock:
            return conn in self._conns

    def connections(self) -> list[ServerConnection]:
        with self._conns_lock:
            return list(self._conns)

    def on_session_closed(self, fn: Callable[[ServerConnection], None]) -> Callable[[ServerConnection], None]:
        self._session_closed_hooks.append(fn)
        return fn

    def session_closed(self, conn: ServerConnection) -> None:
        """Forget ``conn`` and run the session-closed hooks (they may block: the hub stops a
        per-session upstream), on the closing thread with no lock held."""
        with self._conns_lock:
            self._conns.discard(conn)
        if telemetry.ACTIVE is not None:
            telemetry.ACTIVE.session_closed(conn)
        if not self._session_closed_hooks:
            return
        with may_block():
            for fn in list(self._session_closed_hooks):
                try:
                    fn(conn)
                except Exception:
                    log.exception("session-closed hook %r failed", fn)

    # ---- broadcasts ---------------------------------------------------------------------------

    def notify_list_changed(self, kind: str) -> int:
        """``notifications/<kind>/list_changed`` to every initialized session and listen
        stream that asked for it, on every instance. Returns how many of this process's."""
        sent = self._traced(f"notifications/{kind}/list_changed", lambda: self.deliver_list_changed(kind))
        if self.publish is not None:
            self.publish({"k": "list", "kind": kind})
        return sent

    def deliver_list_changed(self, kind: str) -> int:
        """``notify_list_changed`` in this process only."""
        msg = jsonrpc.notification(f"notifications/{kind}/list_changed")
        return (self._to_listeners(lambda lst: lst.wants_list(kind), msg)
                + self._to_sessions(lambda conn: conn.phase == "ready", msg))

    def notify_resource_updated(self, uri: str) -> int:
        """``notifications/resources/updated`` to the sessions and listen streams subscribed
        to ``uri``, on every instance. Returns how many of this process's."""
        sent = self._traced("notifications/resources/updated", lambda: self.deliver_resource_updated(uri))
        if self.publish is not None:
            self.publish({"k": "resource", "uri": uri})
        return sent

    def deliver_resource_updated(self, uri: str) -> int:
        """``notify_resource_updated`` in this process only."""
        msg = jsonrpc.notification("notifications/resources/updated", {"uri": uri})
        return (self._to_listeners(lambda lst: lst.wants_resource(uri), msg)
                + self._to_sessions(lambda conn: conn.is_subscribed(uri), msg))

    def _traced(self, method: str, deliver: Callable[[], int]) -> int:
        """``deliver()`` inside a broadcast's span when telemetry records and somebody may
        hear it (no span for the registrations of a server nobody is connected to)."""
        tel = telemetry.ACTIVE
        if tel is None or not tel.recording():
            return deliver()
        with self._conns_lock:
            audience = len(self._conns) > 0
        with self._listeners_lock:
            audience = audience or len(self._listeners) > 0
        return tel.broadcast(method, deliver) if audience else deliver()

    def notify_task(self, msg: dict[str, Any], task_id: str) -> int:
        """A task changed: ``msg`` (``notifications/tasks``) to the listen streams that
        follow it (its creator's only)."""
        return self._to_listeners(lambda lst: lst.wants_task(task_id), msg)

    def _to_sessions(self, wanted: Callable[[ServerConnection], bool], msg: dict[str, Any]) -> int:
        sent = 0
        for conn in self.connections():
            if not conn.closed and wanted(conn):
                try:
                    conn.send(msg)
                    sent += 1
                except Exception:
                    log.debug("%s not delivered to %s", msg["method"], conn.session_id)
        return sent

    def _to_listeners(self, wanted: Callable[[Listener], bool], msg: dict[str, Any]) -> int:
        with self._listeners_lock:
            targets = [lst for lst in self._listeners if wanted(lst)]
        for lst in targets:
            lst.deliver(msg)
        return len(targets)

    # ---- subscriptions/listen (2026-07-28) ------------------------------------------------------

    def listen(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """``subscriptions/listen``: acknowledge the honoured filter, then stream the chosen
        notifications (tagged with the subscription id) until the client goes away. This
        request's own thread does every write of its stream."""
        wanted = params.get("notifications") or {}
        if type(wanted) is not dict:
            raise InvalidParams("Invalid params: notifications must be an object")
        task_ids = wanted.get("taskIds")
        if task_ids is not None:
            if not has_tasks(ctx.client_capabilities):
                raise MissingClientCapability(
                    "Missing required client capability: the io.modelcontextprotocol/tasks "
                    "extension", {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
            if type(task_ids) is not list:
                raise InvalidParams("Invalid params: notifications.taskIds must be an array")
        listener = Listener(ctx, wanted, self._owned_tasks(task_ids or [], ctx.principal),
                            self._forget)
        with self._listeners_lock:  # listening before the ack: nothing between is lost
            self._listeners.add(listener)
            over = ctx.conn in self._ended_conns
        if over:  # its connection's listen streams were ended: just the ack and the result
            listener.end()
        follow = getattr(ctx.sink, "follow", None)
        if follow is not None and follow(listener):  # the sink streams it from now on
            return {"_meta": {META_SUBSCRIPTION: ctx.request_id}}
        remove = ctx.on_cancel(listener.end)
        try:
            listener.run()
        finally:
            remove()
            with self._listeners_lock:
                self._listeners.discard(listener)
        if ctx.cancelled:
            raise Cancelled()
        return {"_meta": {META_SUBSCRIPTION: ctx.request_id}}

    def _forget(self, listener: Listener) -> None:
        with self._listeners_lock:
            self._listeners.discard(listener)

    def end_listeners(self, conn: ServerConnection | None = None) -> None:
        """End every subscriptions/listen stream gracefully (with its result): shutdown. With
        ``conn``, only that connection's, and a listen it opens later ends at once (its
        client has stopped sending: stdio EOF)."""
        with self._listeners_lock:
            if conn is not None:
                self._ended_conns.add(conn)
            listeners = [lst for lst in self._listeners if conn is None or lst.ctx.conn is conn]
        for lst in listeners:
            lst.end()


class Listener:
    """One ``subscriptions/listen`` stream: what it asked for, and its outbox. ``deliver``
    (any thread) only queues. Its sink takes the acknowledgement first, then the queued
    notifications: either pulled by the sink (``attach``/``take``/``close``, see the module
    docstring) or written by ``run`` on the listen request's thread, with a keep-alive
    when idle. ``forget(listener)`` is called when a followed listener closes."""

    def __init__(self, ctx: Context, wanted: dict[str, Any], task_ids: list[str],
                 forget: Callable[[Listener], None] = lambda listener: None) -> None:
        self.ctx = ctx
        self._forget = forget
        self.lists = {kind for kind, key in LIST_FILTERS if wanted.get(key) is True}
        uris = wanted.get("resourceSubscriptions")
        self.uris = frozenset(u for u in uris if isinstance(u, str)) if isinstance(uris, list) else frozenset()
        self.tasks = frozenset(task_ids)  # the requester's own live tasks it asked to follow
        self.honoured: dict[str, Any] = {key: True for kind, key in LIST_FILTERS if kind in self.lists}
        if self.uris:
            self.honoured["resourceSubscriptions"] = sorted(self.uris)
        if "taskIds" in wanted:
            self.honoured["taskIds"] = list(task_ids)
        # Guards _outbox, ended, _acked and _wake; notified by deliver and end. The writer
        # (run) waits on it; a following sink is woken through _wake instead.
        self._cond = threading.Condition(threading.Lock())
        self._outbox: deque[dict[str, Any]] = deque()
        self.ended = False
        self._acked = False
        self._wake: Callable[[], None] | None = None
        self.dropped = 0  # notifications lost because the client fell LISTENER_OUTBOX behind

    def wants_list(self, kind: str) -> bool:
        return kind in self.lists

    def wants_task(self, task_id: str) -> bool:
        return task_id in self.tasks

    def wants_resource(self, uri: str) -> bool:
        return uri in self.uris or any(uri.startswith(u.rstrip("/") + "/") for u in self.uris)

    def deliver(self, msg: dict[str, Any]) -> None:
        """Queue ``msg`` (tagged with the subscription id) for the stream; never blocks."""
        params = dict(msg.get("params") or {})
        params["_meta"] = {**(params.get("_meta") or {}), META_SUBSCRIPTION: self.ctx.request_id}
        with self._cond:
            if self.ended:
                return
            if len(self._outbox) >= LISTENER_OUTBOX:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append({**msg, "params": params})
            self._cond.notify()
            wake = self._wake
        if wake is not None:
            wake()

    def end(self) -> None:
        """End the stream gracefully (shutdown): what is queued goes out, then its result."""
        with self._cond:
            self.ended = True
            self._cond.notify()
            wake = self._wake
        if wake is not None:
            wake()

    # ---- as a source a sink follows (any thread; never blocks) ----------------------------------

    def attach(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called (with no lock held) whenever ``take`` may have more."""
        with self._cond:
            self._wake = wake

    def take(self) -> list[dict[str, Any]] | None:
        """The messages to write now (the acknowledgement first), ``[]`` for none, None
        once the stream has ended and everything was taken."""
        with self._cond:
            batch = list(self._outbox)
            self._outbox.clear()
            if not self._acked:
                self._acked = True
                batch.insert(0, self._acknowledgement())
            if not batch and self.ended:
                return None
            return batch

    def close(self) -> None:
        """The sink is done (the client went away, or the stream was written to its end)."""
        with self._cond:
            self.ended = True
            self._wake = None
        self._forget(self)

    def _acknowledgement(self) -> dict[str, Any]:
        return jsonrpc.notification("notifications/subscriptions/acknowledged", {
            "_meta": {META_SUBSCRIPTION: self.ctx.request_id}, "notifications": self.honoured})

    def run(self) -> None:
        """Write the acknowledgement, then what is delivered, until ``end`` (or a failed
        write: the client is gone)."""
        sink = self.ctx.sink
        if not self._write(self._acknowledgement()):
            return
        keepalive = getattr(sink, "keepalive", None)
        while True:
            with may_block(), self._cond:  # waiting for events is not this worker's turn
                if not self._outbox and not self.ended:  # (the lock is taken inside the
                    self._cond.wait(LISTEN_KEEPALIVE_S)  # block and released before its end)
                if self.ended:
                    return
                batch = list(self._outbox)
                self._outbox.clear()
            if not batch and keepalive is not None:
                keepalive()
            for msg in batch:
                if not self._write(msg):
                    return

    def _write(self, msg: dict[str, Any]) -> bool:
        try:
            with may_block():  # a slow client: the write waits, the worker's turn goes on
                self.ctx.sink(msg)
            return True
        except Exception:
            log.debug("listen stream %r: delivery failed", self.ctx.request_id)
            return False
