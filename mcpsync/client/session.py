"""``ClientSession``: one MCP client session with one server instance (the hub's upstreams,
``mcpsync.Client``).

Theory of operation
-------------------
A session drives one ``Channel`` (a spawned stdio process, a Streamable HTTP endpoint, a
WebSocket, a legacy SSE endpoint: see ``channels/``).
The channel moves whole JSON-RPC messages; the session does the protocol:

* Negotiation: unless the config insists on one revision, ``server/discover`` at
  2026-07-28 (the envelope in ``_meta``) is tried first, bounded by the probe timeout; an
  error or silence falls back to the ``initialize`` handshake at our newest handshake
  revision. Either way ``revision`` says what was negotiated.
* ``request()``: one call, on the caller's thread (see ``correlator.py``). The downstream
  progress token is replaced by a fresh upstream token, and the downstream ``_meta`` is
  never passed on. Upstream progress and log messages go to the downstream ``Context``;
  requests from the upstream (sampling, elicitation, roots) are relayed to the downstream
  client through that ``Context`` when it declared the capability, else answered with an
  error; a downstream cancellation becomes ``notifications/cancelled`` upstream (or the end
  of the HTTP stream in 2026-07-28). In 2026-07-28 an ``input_required`` result is answered
  the same way and the request retried with the answers and the ``requestState``.
* Messages the upstream sends on its own: ``*/list_changed`` and ``resources/updated`` go to
  the owner's callbacks; progress matched by token; log messages and requests that the
  transport did not tie to a call go to the only downstream client with calls in flight,
  or, if that is ambiguous, to the hub's log (requests: an error answer).
* List changes in 2026-07-28 arrive on a ``subscriptions/listen`` request that a
  background thread (``mcpsync-hub-events-<name>``) keeps open.

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
from ..errors import (Cancelled, ConnectionClosed, McpError, MethodNotFound,
                      PeerError, RequestTimeout)
from ..protocol import jsonrpc, modern, versions
from .channels.base import Channel
from .correlator import (CANCELLED, CLOSED, EXPIRED, LOG, PROGRESS, REQUEST, RESPONSE, TIMEOUT,
                         Call, Correlator)

log = logging.getLogger("mcpsync.client")

CLIENT_INFO = {"name": "mcpsync-hub", "version": __version__}
# What the hub declares upstream: it relays these to the downstream client making the call
# (and answers with an error when that client lacks them).
CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": False}}
RELAYED = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
           "roots/list": "roots"}
MAX_INPUT_ROUNDS = 16            # 2026-07-28 input_required rounds of one request
LISTEN_RETRY_S = 1.0             # pause before re-opening an ended subscriptions/listen
UPSTREAM_LOG_LEVEL = "debug"     # handshake era: upstreams send everything, contexts filter

class SessionExpired(Exception):
    """Streamable HTTP: the upstream answered 404 for our session id (it restarted or
    expired the session); the session re-initializes and retries."""


class ClientSession:
    """One protocol session with one upstream instance (shared, or one client's own)."""

    def __init__(self, cfg: Endpoint, channel: Channel, *,
                 on_list_changed: Callable[[str], None] | None = None,
                 on_resource_updated: Callable[[str], None] | None = None,
                 on_lost: Callable[["ClientSession", str], None] | None = None,
                 prefer_handshake: bool = False) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.channel = channel
        self.corr = Correlator(cfg.name)
        self._on_list_changed = on_list_changed or (lambda kind: None)
        self._on_resource_updated = on_resource_updated or (lambda uri: None)
        self._on_lost = on_lost or (lambda session, reason: None)
        self._prefer_handshake = prefer_handshake
        self.revision: str | None = None
        self.modern = False
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.tool_schemas: dict[str, dict[str, Any]] = {}  # original name -> inputSchema (HTTP headers)
        # Guards lost, _reinit_epoch and _reinit_done; flag flips, never held across I/O.
        self._lock = threading.Lock()
        self.lost: str | None = None
        self._reinit_epoch = 0
        # Set when the re-initialization in progress (after a 404) ends; None when none is.
        self._reinit_done: threading.Event | None = None
        self._closing = threading.Event()  # set once by close(); the events thread exits on it
        self._events_thread: threading.Thread | None = None

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
                    raise ConnectionClosed(f"the upstream does not speak {rev} (it offers {supported})")
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
            "protocolVersion": version, "capabilities": CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO}, timeout=self.cfg.timeouts.connect, raw=True)
        got = result.get("protocolVersion")
        if got not in versions.HANDSHAKE_VERSIONS:
            raise ConnectionClosed(f"the upstream answered initialize with revision {got!r}, "
                                   "which the hub does not speak")
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
        if "logging" in self.capabilities:
            try:
                self.request("logging/setLevel", {"level": UPSTREAM_LOG_LEVEL},
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
        with self._lock:
            if self.lost is None:
                self.lost = "closed by the hub"
        self.corr.close("closed by the hub")
        self.channel.close()
        t = self._events_thread
        if t is not None and t is not threading.current_thread():
            t.join(self.cfg.timeouts.shutdown)
            if t.is_alive():
                log.warning("upstream %s: thread %s did not stop", self.name, t.name)

    @property
    def alive(self) -> bool:
        return self.lost is None

    # ---- the events thread (list changes) --------------------------------------------------

    def _start_events(self) -> None:
        wanted = {k: True for cap, k in (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
                                         ("resources", "resourcesListChanged"))
                  if isinstance(self.capabilities.get(cap), dict)
                  and self.capabilities[cap].get("listChanged")}
        if self.modern and wanted:
            target: Callable[[], None] | None = lambda: self._listen_loop(wanted)
        else:
            target = getattr(self.channel, "events_loop", None)
            if target is None or self.modern:
                return
        t = threading.Thread(target=target, name=f"mcpsync-hub-events-{self.name}", daemon=True)
        self._events_thread = t
        t.start()

    def _listen_loop(self, wanted: dict[str, bool]) -> None:
        """2026-07-28: keep one subscriptions/listen open; the notifications it carries are
        routed by ``_deliver`` like any other."""
        while not self._closing.is_set() and self.alive:
            try:
                self.request("subscriptions/listen", {"notifications": wanted}, timeout=None)
            except (McpError, Cancelled, SessionExpired) as exc:
                if self._closing.is_set() or not self.alive:
                    return
                if isinstance(exc, PeerError) and exc.code == -32601:
                    log.info("upstream %s: no subscriptions/listen; list changes are not followed", self.name)
                    return
                log.debug("upstream %s: listen ended: %s", self.name, exc)
            if self._closing.wait(LISTEN_RETRY_S):
                return

    # ---- sending -----------------------------------------------------------------------------

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.channel.send(jsonrpc.notification(method, params))

    @telemetry.client_request
    def request(self, method: str, params: dict[str, Any] | None = None, *, ctx: Any = None,
                timeout: float | None | str = "default", modern_envelope: str | None = None,
                raw: bool = False) -> dict[str, Any]:
        """Send one request and wait for its result, serving the downstream ``ctx`` meanwhile.
        Raises ``PeerError`` (the upstream's error), ``RequestTimeout``, ``ConnectionClosed``
        or ``Cancelled``; an ``InputRequired`` of a 2026-07-28 downstream passes through.
        Blocks up to ``timeout`` seconds per exchange (default: the configured request
        timeout; None: no limit)."""
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
            result = self._exchange_retrying(method, p, ctx, limit, envelope)
            if envelope and result.get("resultType") == modern.INPUT_REQUIRED:
                state = result.get("requestState")
                asks = result.get("inputRequests") or {}
                if not isinstance(asks, dict) or not asks:
                    raise PeerError("the upstream asked for input without saying what", code=-32603)
                for key, ask in asks.items():
                    if not isinstance(ask, dict) or not isinstance(ask.get("method"), str):
                        raise PeerError("the upstream sent a malformed input request", code=-32603)
                    answers[key] = self._relay_input(ctx, ask["method"], ask.get("params"))
                continue
            return result
        raise PeerError(f"the upstream asked for input more than {MAX_INPUT_ROUNDS} times", code=-32603)

    def _exchange_retrying(self, method: str, params: dict[str, Any], ctx: Any,
                           limit: float | None, envelope: str | None) -> dict[str, Any]:
        with self._lock:
            epoch = self._reinit_epoch
        try:
            return self._exchange(method, params, ctx, limit, envelope)
        except SessionExpired:
            if method == "initialize":
                raise ConnectionClosed("the upstream refused initialize (404)") from None
            self._reinitialize(epoch)
            return self._exchange(method, params, ctx, limit, envelope)

    def _exchange(self, method: str, params: dict[str, Any], ctx: Any, limit: float | None,
                  envelope: str | None) -> dict[str, Any]:
        progress = ctx is not None and ctx.progress_token is not None
        call = self.corr.open(method, ctx, progress=progress)
        meta: dict[str, Any] = {}
        if call.token is not None:
            meta["progressToken"] = call.token
        if envelope:
            meta[modern.META_VERSION] = envelope
            meta[modern.META_CAPABILITIES] = self._envelope_capabilities(ctx)
            meta[modern.META_CLIENT_INFO] = CLIENT_INFO
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
        remove_hook: Callable[[], None] | None = None
        if ctx is not None:
            def on_cancel() -> None:
                call.put(CANCELLED)
                call.wake()
            remove_hook = ctx.on_cancel(on_cancel)
        deadline = None if limit is None else time.monotonic() + limit
        settled = False  # the upstream has nothing left running for this call
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
                    self._forward_progress(ctx, payload)
                elif kind == LOG:
                    self._forward_log(ctx, payload)
                elif kind == REQUEST:
                    self._answer(payload, self._relay(ctx, payload))
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
            if remove_hook is not None:
                remove_hook()
            if not settled:  # unwound mid-call (a 2026-07-28 client's input_required, a bug)
                self._cancel_upstream(call, "abandoned by the hub")
            self.corr.finish(call)
            self.channel.end(call)

    def _envelope_capabilities(self, ctx: Any) -> dict[str, Any]:
        """2026-07-28: what the downstream client can answer (relays go to it)."""
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

    # ---- serving the downstream context ----------------------------------------------------

    def _forward_progress(self, ctx: Any, params: dict[str, Any]) -> None:
        if ctx is None:
            return
        progress = params.get("progress")
        total = params.get("total")
        message = params.get("message")
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):
            return
        ctx.report_progress(progress, total if isinstance(total, (int, float)) else None,
                            message if isinstance(message, str) else None)

    def _forward_log(self, ctx: Any, params: dict[str, Any]) -> None:
        level = params.get("level")
        logger = params.get("logger")
        name = f"{self.name}/{logger}" if isinstance(logger, str) and logger else self.name
        if ctx is None:
            log.debug("upstream %s log [%s]: %r", self.name, level, params.get("data"))
            return
        try:
            ctx.log(level, params.get("data"), name)
        except ValueError:
            ctx.log("info", params.get("data"), name)

    def _relay(self, ctx: Any, msg: dict[str, Any]) -> dict[str, Any] | McpError:
        """Answer a request from the upstream: relayed to the downstream client, or an error."""
        method = msg.get("method")
        params = msg.get("params")
        if method == "ping":
            return {}
        try:
            return self._relay_input(ctx, str(method), params if isinstance(params, dict) else None)
        except Cancelled:
            raise
        except McpError as exc:
            return exc

    def _relay_input(self, ctx: Any, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        needed = RELAYED.get(method)
        if needed is None:
            raise MethodNotFound(f"Method not found: the hub does not relay {method}")
        if ctx is None:
            raise self._no_client(method, several=False)
        caps = ctx.client_capabilities or {}
        if not isinstance(caps.get(needed), dict):
            raise MethodNotFound(f"the client of this call did not declare the {needed} capability")
        if method == "elicitation/create" and params is not None and not ctx.modern:
            version = ctx.version
            if version is not None and not versions.features(version).elicitation_url:
                params = {k: v for k, v in params.items() if k != "mode"}
        return dict(ctx.request(method, params))

    def _no_client(self, method: str, *, several: bool) -> McpError:
        """The answer to a request from the upstream that no client call can take: one
        arriving while only the hub's own requests run (its listings, pings), or while
        calls of several clients run (it would be a guess). An error, not an empty result:
        an empty ``roots/list`` would be cached as the client's roots by servers such as
        the reference server-everything and never asked again, while after an error they
        ask again in a client's call, which the hub relays (-32603 as the spec lists for
        a client's internal failures; -32601 would say roots are not supported at all)."""
        if method not in RELAYED:
            return MethodNotFound(f"Method not found: the hub does not relay {method}")
        if several:
            why = "calls of several clients are in progress, and the hub does not guess which one it is for"
        else:
            why = "no client request is in progress (the hub relays it to the client whose call is running)"
        return McpError(f"{method} is not available now: {why}", code=-32603)

    def _answer(self, msg: dict[str, Any], answer: dict[str, Any] | McpError) -> None:
        rid = msg.get("id")
        if not (type(rid) is str or type(rid) is int):
            return
        reply = (jsonrpc.error_response(rid, answer) if isinstance(answer, McpError)
                 else jsonrpc.response(rid, answer))
        try:
            self.channel.send(reply)
        except (McpError, OSError) as exc:
            log.debug("upstream %s: could not answer request %r: %s", self.name, rid, exc)

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
                self._answer(msg, {})
                return
            target = hint if hint is not None and hint.ctx is not None else self.corr.sole_client_call()
            if target is None:
                several = any(c.ctx is not None for c in self.corr.inflight())
                self._answer(msg, self._no_client(method, several=several))
            else:
                target.put(REQUEST, msg)
            return
        if method == "notifications/progress":
            call = self.corr.by_token(params.get("progressToken"))
            if call is not None:
                call.put(PROGRESS, params)
        elif method == "notifications/message":
            target = hint if hint is not None and hint.ctx is not None else self.corr.sole_client_call()
            if target is not None:
                target.put(LOG, params)
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
        else:
            log.debug("upstream %s: notification %s ignored", self.name, method)

    # ---- conveniences ----------------------------------------------------------------------

    def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paginated ``*/list`` (bounded by the request timeout per page)."""
        items: list[dict[str, Any]] = []
        cursor: Any = None
        for _page in range(1000):
            result = self.request(method, {"cursor": cursor} if cursor is not None else {})
            got = result.get(key)
            if isinstance(got, list):
                items.extend(i for i in got if isinstance(i, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                return items
        raise PeerError(f"the upstream's {method} did not end after 1000 pages", code=-32603)

    def ping(self, timeout: float) -> None:
        if self.modern:
            self.request("server/discover", {}, timeout=timeout)
        else:
            self.request("ping", None, timeout=timeout)

    def health(self) -> dict[str, Any]:
        return {"revision": self.revision, "server": self.server_info.get("name"),
                "inflight": len(self.corr.inflight()), **self.channel.info()}
