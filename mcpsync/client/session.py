"""``ClientSession``: one MCP client session with one server instance (the hub's upstreams,
and ``mcpsync.Client``, which drives it with a ``CallContext`` where the hub passes a
downstream ``Context``).

Theory of operation
-------------------
A session drives one ``Channel`` (a spawned stdio process, a Streamable HTTP endpoint, a
WebSocket, a legacy SSE endpoint: see ``channels/``).
The channel moves whole JSON-RPC messages; the session does the protocol:

* Negotiation: unless the config insists on one revision, ``server/discover`` at
  2026-07-28 (the envelope in ``_meta``) is tried first, bounded by the probe timeout; an
  error or silence falls back to the ``initialize`` handshake at our newest handshake
  revision. Either way ``revision`` says what was negotiated.
* ``request()``: one call, on the caller's thread (see ``correlator.py``), serving a
  ``Caller`` (``caller.py``). The caller's progress token is replaced by a fresh token of
  ours, and the caller's ``_meta`` is never passed on. Progress and log messages go to the
  caller; requests from the server (sampling, elicitation, roots) are relayed to it when it
  declared the capability, else answered with an error; a cancellation (the caller's, or a
  ``CancelToken``'s) or the deadline becomes ``notifications/cancelled`` (or the end of the
  HTTP stream in 2026-07-28). In 2026-07-28 an ``input_required`` result is answered the
  same way and the request retried with the answers and the ``requestState``.
* Messages the server sends on its own: ``*/list_changed`` and ``resources/updated`` go to
  the owner's callbacks; progress matched by token; log messages and requests that the
  transport did not tie to a call go to the only client with calls in flight; else to the
  owner's ``on_log`` / ``on_request`` when it gave them, or our log (requests: an error
  answer). A request left in a call's queue when the call ends is handled the same way.
* List changes and resource updates in 2026-07-28 arrive on a ``subscriptions/listen``
  request that a background thread (``mcpsync-<role>-events-<name>``) keeps open; a new
  set of resource subscriptions (``listen_resources``) re-opens it at once.

A lost connection (process exit, socket error) fails every call in flight at once and is
reported to the owner through ``on_lost``; the owner decides about restarts.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from .. import telemetry
from .._version import __version__
from .endpoint import AUTO, Endpoint
from ..errors import Cancelled, ConnectionClosed, McpError, PeerError, RequestTimeout
from ..protocol import jsonrpc, modern, versions
from .caller import (Cancellable, CancelToken, Caller, forward_log, forward_progress, no_caller,
                     relay_input)
from .channels.base import Channel
from .correlator import (CANCELLED, CLOSED, EXPIRED, LOG, PROGRESS, REQUEST, RESPONSE, TIMEOUT,
                         Call, Correlator)
from .listen import ListenStream

log = logging.getLogger("mcpsync.client")

CLIENT_INFO = {"name": "mcpsync", "version": __version__}
MAX_INPUT_ROUNDS = 16            # 2026-07-28 input_required rounds of one request
MAX_PAGES = 1000                 # pages of one */list before we call the listing endless
UPSTREAM_LOG_LEVEL = "debug"     # handshake era: upstreams send everything, contexts filter
LIST_FLAGS = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
              ("resources", "resourcesListChanged"))


class SessionExpired(Exception):
    """Streamable HTTP: the upstream answered 404 for our session id (it restarted or
    expired the session); the session re-initializes and retries."""


class ClientSession:
    """One protocol session with one server instance (a hub upstream, shared or one
    client's own, or a ``mcpsync.Client``).

    ``client_info`` and ``capabilities`` are what we declare (``initialize``, and the
    2026-07-28 envelope: there the capabilities of each request are those of its caller).
    ``log_level`` is asked for with ``logging/setLevel`` after ``initialize`` (None: never).
    ``on_log(params)`` and ``on_request(msg)`` take log messages and requests from the
    server that no call in flight can take (``on_request`` answers through ``answer``);
    without them such logs go to our log and such requests get an error answer."""

    def __init__(self, cfg: Endpoint, channel: Channel, *,
                 on_list_changed: Callable[[str], None] | None = None,
                 on_resource_updated: Callable[[str], None] | None = None,
                 on_lost: Callable[["ClientSession", str], None] | None = None,
                 prefer_handshake: bool = False,
                 client_info: dict[str, Any] | None = None,
                 capabilities: dict[str, Any] | None = None,
                 log_level: str | None = UPSTREAM_LOG_LEVEL,
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 on_request: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.channel = channel
        self.corr = Correlator(cfg.name, cfg.role)
        self._on_list_changed = on_list_changed or (lambda kind: None)
        self._on_resource_updated = on_resource_updated or (lambda uri: None)
        self._on_lost = on_lost or (lambda session, reason: None)
        self._on_log = on_log
        self._on_request = on_request
        self._prefer_handshake = prefer_handshake
        self.client_info = dict(client_info or CLIENT_INFO)
        self.client_capabilities = dict(capabilities or {})
        self._log_level = log_level
        self.revision: str | None = None
        self.modern = False
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        # Guards lost, _reinit_epoch, _reinit_done and _events_thread; flag flips, never
        # held across I/O or a thread start.
        self._lock = threading.Lock()
        self.lost: str | None = None
        self._reinit_epoch = 0
        # Set when the re-initialization in progress (after a 404) ends; None when none is.
        self._reinit_done: threading.Event | None = None
        self._closing = threading.Event()  # set once by close(); the events thread exits on it
        self._events_thread: threading.Thread | None = None
        self._listener = ListenStream(cfg.name, self._listen, self._list_flags, lambda: self.alive)

    @property
    def tool_schemas(self) -> dict[str, Any]:
        """Tool name -> inputSchema: the ``Mcp-Param-*`` headers of 2026-07-28 HTTP calls."""
        schemas = getattr(self.channel, "tool_schemas", None)
        return schemas if isinstance(schemas, dict) else {}

    @tool_schemas.setter
    def tool_schemas(self, schemas: dict[str, Any]) -> None:
        if hasattr(self.channel, "tool_schemas"):
            self.channel.tool_schemas = dict(schemas)

    # ---- life ------------------------------------------------------------------------------

    def open(self) -> "ClientSession":
        """Connect and negotiate (blocks up to the connect timeout plus the probe)."""
        t = self.cfg.timeouts
        try:
            self.channel.open(self._deliver, self._lost, t.connect)
            self._negotiate()
        except BaseException:
            self.close()
            raise
        self._start_events()
        return self

    def _negotiate(self) -> None:
        rev = self.cfg.revision
        t = self.cfg.timeouts
        handshake_only = getattr(self.channel, "handshake_only", False)
        if rev in versions.MODERN_VERSIONS or (rev == AUTO and not self._prefer_handshake
                                               and not handshake_only):
            try:
                result = self.request("server/discover", {}, modern_envelope=rev if rev != AUTO
                                      else versions.V2026_07_28,
                                      timeout=t.probe if rev == AUTO else t.connect)
                supported = result.get("supportedVersions") or []
                chosen = rev if rev != AUTO else versions.V2026_07_28
                if chosen in supported or (not supported and "capabilities" in result):
                    self._become_modern(chosen, result)
                    return
                if rev != AUTO:
                    raise ConnectionClosed(f"the server does not speak {rev} (it offers {supported})")
            except (McpError, SessionExpired) as exc:
                if rev != AUTO or isinstance(exc, ConnectionClosed) and self.corr.closed:
                    raise
                log.debug("upstream %s: no 2026-07-28 (%s); initializing", self.name, exc)
        self._initialize(rev if rev in versions.HANDSHAKE_VERSIONS else versions.LATEST_HANDSHAKE_VERSION)

    def _become_modern(self, version: str, result: dict[str, Any]) -> None:
        self.revision = version
        self.modern = True
        self.channel.modern = True
        self.capabilities = result.get("capabilities") or {}
        self.instructions = result.get("instructions")
        meta = result.get("_meta") or {}
        info = meta.get(modern.META_SERVER_INFO) if isinstance(meta, dict) else None
        self.server_info = info if isinstance(info, dict) else {}

    def _initialize(self, version: str) -> None:
        result = self.request("initialize", {
            "protocolVersion": version, "capabilities": self.client_capabilities,
            "clientInfo": self.client_info}, timeout=self.cfg.timeouts.connect, raw=True)
        got = result.get("protocolVersion")
        if got not in versions.HANDSHAKE_VERSIONS:
            raise ConnectionClosed(f"the server answered initialize with revision {got!r}, "
                                   f"which the {self.cfg.role} does not speak")
        self.revision = got
        self.modern = False
        self.channel.modern = False
        setter = getattr(self.channel, "set_version", None)
        if setter is not None:
            setter(got)
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        self.instructions = result.get("instructions")
        self.notify("notifications/initialized")
        if "logging" in self.capabilities and self._log_level is not None:
            try:
                self.request("logging/setLevel", {"level": self._log_level},
                             timeout=self.cfg.timeouts.connect)
            except McpError as exc:
                log.debug("upstream %s: logging/setLevel failed: %s", self.name, exc)

    def _reinitialize(self, epoch: int) -> None:
        """After a 404: a new HTTP session, once per epoch. The first caller re-initializes
        (no lock held); callers that hit the same 404 meanwhile wait for it (bounded)."""
        with self._lock:
            if self._reinit_epoch != epoch:
                return  # another thread already did it
            mine = self._reinit_done is None
            if mine:
                self._reinit_done = threading.Event()
            done = self._reinit_done
        assert done is not None
        if not mine:
            if not done.wait(self.cfg.timeouts.connect):
                raise RequestTimeout(f"upstream {self.name!r}: re-initializing took too long")
            return
        try:
            log.info("upstream %s: session expired; initializing a new one", self.name)
            forget = getattr(self.channel, "forget_session", None)
            if forget is not None:
                forget()
            self._initialize(self.revision or versions.LATEST_HANDSHAKE_VERSION)
        finally:
            with self._lock:
                self._reinit_epoch += 1
                self._reinit_done = None
            done.set()
        self._on_list_changed("all")  # the new session may offer other things

    def _lost(self, reason: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = reason
        log.info("upstream %s: connection lost: %s", self.name, reason)  # the owner says what it means
        self.corr.close(reason)
        self._on_lost(self, reason)

    def close(self) -> None:
        """End the session: fail calls in flight, close the channel, join our thread."""
        self._closing.set()
        reason = f"closed by the {self.cfg.role}"
        t = self._events_thread
        mine = t is not None and t is not threading.current_thread()
        if self.alive and mine and self.modern:
            # Cancel the listen request first (a stdio server still running one when its
            # stdin ends may wait for it, and be killed only after the shutdown timeout).
            self._listener.close()
            assert t is not None
            t.join(self.cfg.timeouts.shutdown)
        with self._lock:
            if self.lost is None:
                self.lost = reason
        self.corr.close(reason)
        self._listener.close()
        self.channel.close()
        if t is not None and mine:
            t.join(self.cfg.timeouts.shutdown)
            if t.is_alive():
                log.warning("upstream %s: thread %s did not stop", self.name, t.name)

    @property
    def alive(self) -> bool:
        return self.lost is None

    # ---- the events thread (list changes, 2026-07-28 resource updates) ---------------------

    def _list_flags(self) -> dict[str, bool]:
        return {flag: True for cap, flag in LIST_FLAGS
                if isinstance(self.capabilities.get(cap), dict) and self.capabilities[cap].get("listChanged")}

    def _start_events(self, listen: bool = False) -> None:
        """Start the events thread: the GET stream (handshake era, HTTP) or the listen loop
        (2026-07-28, when there is something to listen for, or ``listen``)."""
        if self.modern:
            target: Callable[[], None] | None = self._listener.run if listen or self._listener.wanted() else None
        else:
            target = getattr(self.channel, "events_loop", None)
        if target is None:
            return
        t = threading.Thread(target=target, name=f"mcpsync-{self.cfg.role}-events-{self.name}", daemon=True)
        with self._lock:
            if self._events_thread is not None or self._closing.is_set():
                return
            self._events_thread = t
        t.start()

    def wait_events(self, timeout: float) -> bool:
        """Wait until what the server sends on its own reaches us: the 2026-07-28 listen is
        acknowledged, or the HTTP GET stream answered (bounded; False on timeout)."""
        if self.modern:
            return not self._listener.wanted() or self._listener.ready(timeout)
        ready = getattr(self.channel, "events_ready", None)
        return ready is None or self._events_thread is None or bool(ready.wait(timeout))

    def _listen(self, wanted: dict[str, Any], stop: CancelToken) -> None:
        self.request("subscriptions/listen", {"notifications": wanted}, timeout=None, cancel=stop)

    def listen_resources(self, uris: frozenset[str], timeout: float | None = None) -> None:
        """2026-07-28: follow updates of exactly these resources (``resources/updated``
        reaches ``on_resource_updated``); blocks until the server acknowledged it (up to
        ``timeout``, default the request timeout). See ``listen.ListenStream.follow``."""
        if uris:
            self._start_events(listen=True)
        self._listener.follow(uris, self.cfg.timeouts.request if timeout is None else timeout)

    # ---- sending -----------------------------------------------------------------------------

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        tel = telemetry.ACTIVE
        if tel is None or not tel.recording():
            self.channel.send(jsonrpc.notification(method, params))
        else:
            tel.client_notification(self, method, params,
                                    lambda traced: self.channel.send(jsonrpc.notification(method, traced)))

    @telemetry.client_request
    def request(self, method: str, params: dict[str, Any] | None = None, *, ctx: Caller | None = None,
                timeout: float | None | str = "default", modern_envelope: str | None = None,
                raw: bool = False, cancel: Cancellable | None = None,
                extensions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and wait for its result, serving ``ctx`` meanwhile. Raises
        ``PeerError`` (the server's error), ``RequestTimeout``, ``ConnectionClosed`` or
        ``Cancelled`` (by ``ctx`` or ``cancel``); an ``InputRequired`` of a 2026-07-28
        downstream passes through. ``extensions`` are declared in this request's 2026-07-28
        capabilities. Blocks up to ``timeout`` seconds per exchange (default: the
        configured request timeout; None: no limit)."""
        limit = self.cfg.timeouts.request if timeout == "default" else timeout
        assert limit is None or isinstance(limit, (int, float))
        base = dict(params or {})
        envelope = modern_envelope or (versions.V2026_07_28 if self.modern and not raw else None)
        answers: dict[str, Any] = {}
        state: Any = None
        for _round in range(MAX_INPUT_ROUNDS):
            p = dict(base)
            if answers:
                p["inputResponses"] = dict(answers)
            if state is not None:
                p["requestState"] = state
            result = self._exchange_retrying(method, p, ctx, limit, envelope, cancel, extensions)
            if envelope and result.get("resultType") == modern.INPUT_REQUIRED:
                state = result.get("requestState")
                answers.update(self.answer_inputs(ctx, result.get("inputRequests")))
                continue
            return result
        raise PeerError(f"the server asked for input more than {MAX_INPUT_ROUNDS} times", code=-32603)

    def answer_inputs(self, ctx: Caller | None, asks: Any) -> dict[str, Any]:
        """The caller's answers to 2026-07-28 ``inputRequests`` (an ``input_required``
        result, or a task waiting for input), by key."""
        if not isinstance(asks, dict) or not asks:
            raise PeerError("the server asked for input without saying what", code=-32603)
        answers: dict[str, Any] = {}
        for key, ask in asks.items():
            if not isinstance(ask, dict) or not isinstance(ask.get("method"), str):
                raise PeerError("the server sent a malformed input request", code=-32603)
            params = ask.get("params")
            answers[key] = relay_input(ctx, ask["method"], params if isinstance(params, dict) else None,
                                       self.cfg.role)
        return answers

    def _exchange_retrying(self, method: str, params: dict[str, Any], ctx: Caller | None,
                           limit: float | None, envelope: str | None, cancel: Cancellable | None,
                           extensions: dict[str, Any] | None) -> dict[str, Any]:
        with self._lock:
            epoch = self._reinit_epoch
        try:
            return self._exchange(method, params, ctx, limit, envelope, cancel, extensions)
        except SessionExpired:
            if method == "initialize":
                raise ConnectionClosed("the server refused initialize (404)") from None
            self._reinitialize(epoch)
            return self._exchange(method, params, ctx, limit, envelope, cancel, extensions)

    def _exchange(self, method: str, params: dict[str, Any], ctx: Caller | None, limit: float | None,
                  envelope: str | None, cancel: Cancellable | None,
                  extensions: dict[str, Any] | None) -> dict[str, Any]:
        progress = ctx is not None and ctx.progress_token is not None
        call = self.corr.open(method, ctx, progress=progress)
        meta: dict[str, Any] = {}
        if call.token is not None:
            meta["progressToken"] = call.token
        if envelope:
            caps = self._envelope_capabilities(ctx)
            if extensions:
                caps["extensions"] = dict(extensions)
            meta[modern.META_VERSION] = envelope
            meta[modern.META_CAPABILITIES] = caps
            meta[modern.META_CLIENT_INFO] = self.client_info
            # The downstream context filters by its client's level; a handshake-era client
            # that set none gets everything, so everything is asked for.
            level = None
            if ctx is not None:
                level = ctx.log_level if ctx.log_level is not None or ctx.modern else UPSTREAM_LOG_LEVEL
            if level is not None:
                meta[modern.META_LOG_LEVEL] = level
        if telemetry.ACTIVE is not None:
            telemetry.ACTIVE.inject(meta, call.id)
        if meta:
            params = {**params, "_meta": meta}

        def on_cancel() -> None:
            call.put(CANCELLED)
            call.wake()
        removers = [c.on_cancel(on_cancel) for c in (ctx, cancel) if c is not None]
        deadline = None if limit is None else time.monotonic() + limit
        settled = False  # the server has nothing left running for this call
        try:
            self.channel.send(jsonrpc.request(call.id, method, params), call)
            while True:
                kind, payload = call.next(deadline)
                if kind in (RESPONSE, CLOSED, EXPIRED, CANCELLED, TIMEOUT):
                    settled = True
                if kind == RESPONSE:
                    if "error" in payload:
                        err = payload["error"]
                        raise PeerError(str(err.get("message", "error")), err.get("data"),
                                        code=err.get("code", -32603))
                    result = payload.get("result")
                    return result if isinstance(result, dict) else {}
                if kind == PROGRESS:
                    forward_progress(ctx, payload)
                elif kind == LOG:
                    forward_log(ctx, payload, self.name)
                elif kind == REQUEST:
                    self.answer(payload, self._relay(ctx, payload))
                elif kind == CANCELLED:
                    self._cancel_upstream(call, "cancelled by the client")
                    raise Cancelled()
                elif kind == CLOSED:
                    raise payload
                elif kind == EXPIRED:
                    raise SessionExpired()
                elif kind == TIMEOUT:
                    self._cancel_upstream(call, "timed out")
                    raise RequestTimeout(f"upstream {self.name!r} did not answer {method} within "
                                         f"{limit:g} s")
        finally:
            for remove in removers:
                remove()
            if not settled:  # unwound mid-call (a 2026-07-28 client's input_required, a bug)
                self._cancel_upstream(call, f"abandoned by the {self.cfg.role}")
            for kind, payload in self.corr.finish(call):
                if kind == REQUEST:  # arrived too late for this call: someone else answers it
                    self._unclaimed_request(payload)
            self.channel.end(call)

    def _envelope_capabilities(self, ctx: Caller | None) -> dict[str, Any]:
        """2026-07-28: what the caller can answer (relays go to it)."""
        if ctx is None:
            return {}
        caps = ctx.client_capabilities or {}
        return {k: v for k, v in caps.items() if k in ("sampling", "elicitation", "roots")}

    def _cancel_upstream(self, call: Call, reason: str) -> None:
        if self.modern and getattr(self.channel, "cancels_by_closing", False):
            call.wake()  # 2026-07-28 over HTTP: closing the response stream is the cancellation
            return
        try:
            self.notify("notifications/cancelled", {"requestId": call.id, "reason": reason})
        except (McpError, OSError) as exc:
            log.debug("upstream %s: could not send the cancellation: %s", self.name, exc)
        call.wake()

    def _relay(self, ctx: Caller | None, msg: dict[str, Any]) -> dict[str, Any] | McpError:
        """Answer a request from the server: relayed to the caller, or an error."""
        method = msg.get("method")
        params = msg.get("params")
        if method == "ping":
            return {}
        try:
            return relay_input(ctx, str(method), params if isinstance(params, dict) else None, self.cfg.role)
        except Cancelled:
            raise
        except McpError as exc:
            return exc

    def answer(self, msg: dict[str, Any], answer: dict[str, Any] | McpError) -> None:
        """Send the answer to a request the server sent (a result, or an error)."""
        rid = msg.get("id")
        if not (type(rid) is str or type(rid) is int):
            return
        reply = (jsonrpc.error_response(rid, answer) if isinstance(answer, McpError)
                 else jsonrpc.response(rid, answer))
        try:
            self.channel.send(reply)
        except (McpError, OSError) as exc:
            log.debug("upstream %s: could not answer request %r: %s", self.name, rid, exc)

    def _unclaimed_request(self, msg: dict[str, Any]) -> None:
        """A request from the server that no call in flight takes: the owner's, or an error."""
        if self._on_request is not None:
            self._on_request(msg)
            return
        several = any(c.ctx is not None for c in self.corr.inflight())
        self.answer(msg, no_caller(str(msg.get("method")), several=several, role=self.cfg.role))

    # ---- incoming messages (reader threads, HTTP pumps) ------------------------------------

    def _deliver(self, msg: Any, hint: Call | None) -> None:
        try:
            kind = jsonrpc.classify(msg)
        except McpError as exc:
            if isinstance(msg, dict) and "error" in msg and msg.get("id") is None:
                log.warning("upstream %s reported an error: %s", self.name, msg.get("error"))
            else:
                log.warning("upstream %s sent an invalid message (%s): %.200r", self.name, exc.message, msg)
            return
        if kind in (jsonrpc.RESPONSE, jsonrpc.ERROR):
            call = self.corr.get(msg.get("id"))
            if call is None:
                log.debug("upstream %s: response to unknown id %r", self.name, msg.get("id"))
            else:
                call.put(RESPONSE, msg)
            return
        method = msg["method"]
        params = msg.get("params") or {}
        if kind == jsonrpc.REQUEST:
            if method == "ping":
                self.answer(msg, {})
                return
            target = hint if hint is not None and hint.ctx is not None else self.corr.sole_client_call()
            if target is None or not target.put(REQUEST, msg):
                self._unclaimed_request(msg)
            return
        if method == "notifications/progress":
            call = self.corr.by_token(params.get("progressToken"))
            if call is not None:
                call.put(PROGRESS, params)
        elif method == "notifications/message":
            target = hint if hint is not None and hint.ctx is not None else self.corr.sole_client_call()
            if target is not None and target.put(LOG, params):
                return
            if self._on_log is not None:
                self._on_log(params)
            else:
                log.debug("upstream %s log [%s]: %r", self.name, params.get("level"), params.get("data"))
        elif method.endswith("/list_changed") and method.startswith("notifications/"):
            kind_name = method[len("notifications/"):-len("/list_changed")]
            if kind_name in ("tools", "prompts", "resources"):
                self._on_list_changed(kind_name)
        elif method == "notifications/resources/updated":
            uri = params.get("uri")
            if isinstance(uri, str):
                self._on_resource_updated(uri)
        elif method == "notifications/subscriptions/acknowledged":
            self._listener.acknowledged()
        else:
            log.debug("upstream %s: notification %s ignored", self.name, method)

    # ---- conveniences ----------------------------------------------------------------------

    def list_all(self, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated ``*/list`` (bounded by the request timeout per page;
        ``kwargs`` go to ``request``)."""
        items: list[dict[str, Any]] = []
        cursor: Any = None
        for _page in range(MAX_PAGES):
            result = self.request(method, {"cursor": cursor} if cursor is not None else {}, **kwargs)
            got = result.get(key)
            if isinstance(got, list):
                items.extend(i for i in got if isinstance(i, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                return items
        raise PeerError(f"the server's {method} did not end after {MAX_PAGES} pages", code=-32603)

    def ping(self, timeout: float) -> None:
        if self.modern:
            self.request("server/discover", {}, timeout=timeout)
        else:
            self.request("ping", None, timeout=timeout)

    def health(self) -> dict[str, Any]:
        return {"revision": self.revision, "server": self.server_info.get("name"),
                "inflight": len(self.corr.inflight()), **self.channel.info()}
