"""OpenTelemetry traces and metrics for MCP, after OpenTelemetry's semantic conventions for
the Model Context Protocol (``docs/gen-ai/mcp.md`` of open-telemetry/semantic-conventions).

Theory of operation
-------------------
Optional: ``opentelemetry-api`` (``pip install 'mcpsync[otel]'``) is imported once, here, at
import time. Without it ``AVAILABLE`` is False, ``ACTIVE`` stays None, and the only trace of
this module on a request is the ``ACTIVE is None`` check at its call sites (the server's
request path, session start and end, the client's ``_meta``); the client's ``request`` is not
even wrapped. With it, ``ACTIVE`` is a ``Telemetry`` from the start, through the API's
global providers: until the application installs an SDK (or ``enable`` is given providers)
nothing is recorded (``Telemetry.recording``) and a request only carries a client's trace
context on to the server's own calls, so a hub without an SDK still joins a client's trace
to its upstream's. What has no context to carry (notifications, the server's own requests,
refusals) is passed to telemetry only while ``ACTIVE.recording()``: the check stays at the
call site, so turned off nothing here runs. ``disable()`` (or ``OTEL_SDK_DISABLED=true``
in the environment) turns it all off.
``ACTIVE`` is a plain module attribute: ``enable``/``disable`` assign it, each call site
reads it once.

What is recorded:

* Server: one ``SERVER`` span per request (both eras, every transport), named
  ``{mcp.method.name} {target}``: the target is the tool's or the prompt's name; a resource
  URI only with ``resource_uri_in_span_name=True`` (the conventions keep it out by default:
  high cardinality). The parent is the context a client put in ``params._meta``
  (``traceparent``/``tracestate``/``baggage``, through the API's global propagator); an
  ambient span (an HTTP instrumentation's) is then linked. The span is current while the
  handler runs, so a hub's upstream call becomes its child.
  ``error.type`` is the JSON-RPC error code as a string, ``tool_error`` for an ``isError``
  result, ``cancelled`` for a request the client cancelled (no response sent); the span's
  status is then ERROR with the error's message. A 2026-07-28 request refused before it
  runs (its envelope, its headers, a method the revision lacks) is a span of its error
  alone (``refused``). ``mcp.server.operation.duration`` and, at
  the end of a handshake-era session, ``mcp.server.session.duration`` (histograms, seconds).
  A notification from the client is a ``SERVER`` span too, named after its method (its
  parent the context in its ``_meta``), and counts in the operation duration.
* Client (``ClientSession.request``: the hub's upstream calls, ``mcpsync.Client``): one
  ``CLIENT`` span per request, its context injected into the request's ``params._meta``, and
  ``mcp.client.operation.duration``; the same for a notification it sends
  (``ClientSession.notify``), the span covering the sending, and for the server's own
  requests to its client (sampling, elicitation, roots: ``server_request``), children of
  the span of the call that asks, and its notifications: those of a call (progress, log
  messages: ``server_notification``) and broadcasts (list changes, resource updates:
  ``broadcast``, one span for all the sessions).

Cardinality stays bounded whatever a client sends: a method the server does not serve is
recorded as ``_OTHER``, and a tool or prompt name only when the server has it.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Mapping, TypeVar, cast

from . import semconv
from .protocol import runner
from .protocol.modern import InputRequired
from .semconv import (BUILTIN_NOTIFICATIONS, DURATION_BUCKETS_S, NETWORK, OTHER, Outcome, RequestView,
                      SessionView)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate as otel_propagate
    from opentelemetry import trace as otel_trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import Link, SpanKind, StatusCode
except ImportError:  # the optional extra is not installed: telemetry stays off, at no cost
    AVAILABLE = False
else:
    AVAILABLE = True
    try:  # the global meter provider before an SDK sets one (no public name for it)
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # another API version: then metrics always count as recording
        _ProxyMeterProvider = None  # type: ignore[assignment,misc]



log = logging.getLogger("mcpsync.telemetry")

INSTRUMENTATION = "mcpsync"
PROVIDER_RECHECK_S = 1.0     # how long "no SDK installed" is believed before looking again

Result = dict[str, Any]
Run = Callable[..., "Result | None"]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


if AVAILABLE:
    class _MetaGetter(Getter[Mapping[str, Any]]):
        """Reads propagation fields from a request's ``_meta``: strings only (a client may
        send anything there, and propagators expect text)."""

        def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
            value = carrier.get(key)
            return [value] if type(value) is str else None

        def keys(self, carrier: Mapping[str, Any]) -> list[str]:
            return [k for k in carrier if type(k) is str]

    _META_GETTER = _MetaGetter()


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _end(span: Any, outcome: Outcome, late_version: str | None, histogram: Any,
         metric_attrs: dict[str, Any], started: float) -> None:
    """End a request's span with its outcome and record its duration. ``late_version``: the
    revision a request negotiated itself (initialize), unknown when the span began."""
    error_type, status_code, message = outcome
    more: dict[str, Any] = {}
    if late_version is not None:
        more["mcp.protocol.version"] = late_version
    if error_type is not None:
        more["error.type"] = error_type
        if status_code is not None:
            more["rpc.response.status_code"] = status_code
    if more:
        metric_attrs.update(more)
        if span.is_recording():
            span.set_attributes(more)
            if error_type is not None:
                span.set_status(StatusCode.ERROR, message)
    span.end()
    histogram.record(time.perf_counter() - started, metric_attrs)


class Telemetry:
    """The tracer, the meter's instruments and the bookkeeping of open sessions. Providers
    default to the API's global ones (set by the application's SDK setup)."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None,
                 resource_uri_in_span_name: bool = False) -> None:
        from ._version import __version__
        self.tracer = otel_trace.get_tracer(INSTRUMENTATION, __version__, tracer_provider)
        meter = otel_metrics.get_meter(INSTRUMENTATION, __version__, meter_provider)
        buckets = list(DURATION_BUCKETS_S)
        self.server_duration = meter.create_histogram(
            "mcp.server.operation.duration", unit="s", explicit_bucket_boundaries_advisory=buckets,
            description="MCP request duration as observed on the receiver, until its reply")
        self.session_duration = meter.create_histogram(
            "mcp.server.session.duration", unit="s", explicit_bucket_boundaries_advisory=buckets,
            description="The duration of the MCP session as observed on the MCP server")
        self.client_duration = meter.create_histogram(
            "mcp.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=buckets,
            description="The duration of the MCP request as observed on the sender, until its reply")
        self.resource_uri_in_span_name = resource_uri_in_span_name
        self._recording = tracer_provider is not None or meter_provider is not None
        self._recheck_at = 0.0  # when to look at the global providers again (see recording)
        # Guards _opened (a connection -> when its session began); one dict operation at a
        # time, taken by whichever threads open and close sessions.
        self._opened_lock = threading.Lock()
        self._opened: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        # The global propagator and the _meta keys it reads (a composite propagator builds
        # that set anew on each look). Replaced whole by any request thread; a stale read
        # only recomputes it.
        self._fields: tuple[Any, frozenset[str]] = (None, frozenset())

    def _span_name(self, method: str, name: str | None, uri: str | None) -> str:
        """``{mcp.method.name} {target}``, or the method alone when there is no target."""
        target = name if name is not None else (uri if self.resource_uri_in_span_name else None)
        return method if target is None else f"{method} {semconv.cut(target)}"

    # ---- server: requests -----------------------------------------------------------------

    def recording(self) -> bool:
        """Whether anything records: providers were given, or an SDK set a global one. Else
        every span and measurement would be the API's no-op, and only a client's trace
        context is worth carrying (to this server's own calls: a hub forwards it).

        The API's getters read the environment on every call (a few µs), so "no SDK" is
        believed for ``PROVIDER_RECHECK_S``; a global provider, once set, stays (the API
        refuses to replace it). ``_recording`` and ``_recheck_at`` are plain attributes that
        request threads write; a stale read only moves the next look by one request."""
        if self._recording:
            return True
        now = time.monotonic()
        if now < self._recheck_at:
            return False
        self._recheck_at = now + PROVIDER_RECHECK_S
        self._recording = (
            not isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider)
            or _ProxyMeterProvider is None
            or not isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider))
        return self._recording

    def traced_runner(self, ctx: RequestView) -> Run:
        """``protocol.runner.run`` inside a server span for the request ``ctx`` serves
        (``ServerConnection.handle_request`` calls what this returns instead)."""
        if not self.recording():
            parent = self._extract(ctx.meta)
            if parent is None:
                return runner.run

            def forward(rid: Any, method: str, call: Callable[[], Result], *,
                        on_input: Callable[[InputRequired], Result] | None = None) -> Result | None:
                token = otel_context.attach(parent)
                try:
                    return runner.run(rid, method, call, on_input=on_input)
                finally:
                    otel_context.detach(token)
            return forward

        def run(rid: Any, method: str, call: Callable[[], Result], *,
                on_input: Callable[[InputRequired], Result] | None = None) -> Result | None:
            return self.serve(ctx, lambda: runner.run(rid, method, call, on_input=on_input))
        return run

    def serve(self, ctx: RequestView, run: Callable[[], Result | None]) -> Result | None:
        """Run one request (``run()`` returns its reply) as the current span; record it."""
        started = time.perf_counter()
        conn = ctx.conn
        host = conn.host
        method = ctx.method
        label = method if method in host.dispatcher.requests else OTHER
        name, uri = semconv.target(method, ctx.params)
        if name is not None:  # only what the server offers: a client's made-up names are not kept
            registry = getattr(host, "registry", None)
            if registry is not None and name not in (
                    registry.tools if method == "tools/call" else registry.prompts):
                name = None
        attrs: dict[str, Any] = {"mcp.method.name": label}
        semconv.target_attributes(attrs, method, name)
        metric_attrs = dict(attrs)
        attrs["jsonrpc.request.id"] = semconv.cut(str(ctx.request_id))
        if uri is not None:
            attrs["mcp.resource.uri"] = semconv.cut(uri)
        if conn.session_id is not None:
            attrs["mcp.session.id"] = conn.session_id
        if conn.client_address is not None:
            attrs["client.address"] = conn.client_address
        if ctx.version is not None:
            attrs["mcp.protocol.version"] = metric_attrs["mcp.protocol.version"] = ctx.version
        network = NETWORK.get(conn.transport or "")
        if network is not None:
            attrs.update(network)
            metric_attrs.update(network)
        parent, links = self._parent(ctx.meta)
        span = self.tracer.start_span(self._span_name(label, name, uri), parent, SpanKind.SERVER,
                                      attrs, links)
        token = otel_context.attach(otel_trace.set_span_in_context(span, parent))
        try:
            reply = run()
            # A request the client cancelled gets no response, whatever the handler returned.
            outcome = semconv.outcome(method, None if ctx._cancelled else reply)
            return reply
        except BaseException as exc:  # an interrupt (runner.run maps every Exception)
            outcome = (type(exc).__qualname__, None, str(exc))
            raise
        finally:
            otel_context.detach(token)
            self._finish_server(span, outcome, ctx, metric_attrs, started)

    def refused(self, host: Any, msg: Any, code: int, message: str, transport: str,
                client_address: str | None = None) -> None:
        """A request refused before it could run (a 2026-07-28 envelope or header error, a
        method the revision does not have): a SERVER span that is only its error, and its
        duration, so refusals are seen too."""
        started = time.perf_counter()
        method = msg.get("method") if type(msg) is dict else None
        label = method if type(method) is str and method in host.dispatcher.requests else OTHER
        attrs: dict[str, Any] = {"mcp.method.name": label}
        attrs.update(NETWORK.get(transport, ()))
        metric_attrs = dict(attrs)
        rid = msg.get("id") if type(msg) is dict else None
        if rid is not None:
            attrs["jsonrpc.request.id"] = semconv.cut(str(rid))
        if client_address is not None:
            attrs["client.address"] = client_address
        params = msg.get("params") if type(msg) is dict else None
        parent, links = self._parent_of(params)
        span = self.tracer.start_span(label, parent, SpanKind.SERVER, attrs, links)
        _end(span, (str(code), str(code), message), None, self.server_duration, metric_attrs, started)

    def _extract(self, meta: Mapping[str, Any]) -> Any:
        """The context a client propagated in ``_meta``, or None when it sent none."""
        if not meta:
            return None
        textmap = otel_propagate.get_global_textmap()
        known = self._fields
        if known[0] is not textmap:  # a propagator set since: its fields, once
            known = self._fields = (textmap, frozenset(textmap.fields))
        if known[1].isdisjoint(meta):  # a modern request's _meta, no trace context in it
            return None
        try:
            return textmap.extract(meta, getter=_META_GETTER)
        except Exception:  # a third-party propagator that chokes on a client's text
            log.debug("could not extract a trace context from _meta", exc_info=True)
            return None

    def _parent(self, meta: Mapping[str, Any]) -> tuple[Any, list[Any] | None]:
        """The parent context of a server span: the client's (with a link to the ambient
        span, as the conventions ask), else the ambient one (None)."""
        parent = self._extract(meta)
        if parent is None:
            return None, None
        ambient = otel_trace.get_current_span()
        if not otel_trace.get_current_span(parent).get_span_context().is_valid:
            # baggage without a trace: the ambient span stays the parent
            return otel_trace.set_span_in_context(ambient, parent), None
        ambient_context = ambient.get_span_context()
        return parent, [Link(ambient_context)] if ambient_context.is_valid else None

    def _parent_of(self, params: Any) -> tuple[Any, list[Any] | None]:
        """``_parent`` of a message's ``params`` as a peer sent them (anything at all)."""
        meta = params.get("_meta") if type(params) is dict else None
        return self._parent(meta if type(meta) is dict else {})

    def _finish_server(self, span: Any, outcome: Outcome, ctx: RequestView,
                       metric_attrs: dict[str, Any], started: float) -> None:
        _end(span, outcome, ctx.conn.version if ctx.version is None else None,  # initialize
             self.server_duration, metric_attrs, started)

    def serve_notification(self, conn: SessionView, method: str, params: Any,
                           handle: Callable[[], None]) -> None:
        """Handle one notification from the client (``handle()``) as the current SERVER
        span, named after its method (a notification has no target); record its duration."""
        started = time.perf_counter()
        label = method if method in BUILTIN_NOTIFICATIONS or \
            method in conn.host.dispatcher.notifications else OTHER
        attrs, metric_attrs = semconv.session_attributes(conn, label)
        parent, links = self._parent_of(params)
        span = self.tracer.start_span(label, parent, SpanKind.SERVER, attrs, links)
        self._within(span, parent, handle, self.server_duration, metric_attrs, started)

    def _within(self, span: Any, parent: Any, fn: Callable[[], T], histogram: Any,
                metric_attrs: dict[str, Any], started: float) -> T:
        """Run ``fn()`` (a notification's handling or sending, a request of the server's)
        with ``span`` current; end the span with the outcome and record the duration."""
        token = otel_context.attach(otel_trace.set_span_in_context(span, parent))
        outcome: Outcome = (None, None, None)
        try:
            return fn()
        except BaseException as exc:
            outcome = semconv.failure(exc)
            raise
        finally:
            otel_context.detach(token)
            _end(span, outcome, None, histogram, metric_attrs, started)

    # ---- server: sessions -------------------------------------------------------------------

    def session_opened(self, conn: SessionView) -> None:
        if not self.recording():
            return
        with self._opened_lock:
            self._opened[conn] = time.monotonic()

    def session_closed(self, conn: SessionView) -> None:
        with self._opened_lock:
            opened = self._opened.pop(conn, None)
        if opened is None:
            return  # opened before telemetry was enabled
        attrs: dict[str, Any] = dict(NETWORK.get(conn.transport or "", ()))
        if conn.version is not None:
            attrs["mcp.protocol.version"] = conn.version
        self.session_duration.record(time.monotonic() - opened, attrs)

    # ---- client -------------------------------------------------------------------------------

    def client_call(self, session: Any, method: str, params: Mapping[str, Any] | None,
                    call: Callable[[], Result]) -> Result:
        """Run one client request (``call()``) as the current CLIENT span; record it."""
        started = time.perf_counter()
        name, uri = semconv.target(method, params or {})
        attrs, metric_attrs = semconv.client_attributes(session, method, name)
        if uri is not None:
            attrs["mcp.resource.uri"] = semconv.cut(uri)
        span = self.tracer.start_span(self._span_name(method, name, uri), kind=SpanKind.CLIENT,
                                      attributes=attrs)
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        outcome: Outcome = (None, None, None)
        negotiated: str | None = None
        try:
            result = call()
            if method == "initialize" and type(result.get("protocolVersion")) is str:
                negotiated = result["protocolVersion"]  # the revision is known from now on
            if method == "tools/call" and result.get("isError") is True:
                outcome = ("tool_error", None, None)
            return result
        except InputRequired:
            raise  # a 2026-07-28 downstream is asked for input: not a failure of this call
        except BaseException as exc:
            outcome = semconv.failure(exc)
            raise
        finally:
            otel_context.detach(token)
            _end(span, outcome, negotiated, self.client_duration, metric_attrs, started)

    def server_request(self, conn: SessionView, method: str, params: dict[str, Any] | None,
                       ask: Callable[[dict[str, Any], Callable[[Any], None]], Result]) -> Result:
        """The server's own request to the client (sampling, elicitation, roots, ping) as a
        CLIENT span, the current span's child (the call that asks), its context in the
        request's ``_meta``: ``ask(params, note_id)`` sends it and waits for the answer."""
        started = time.perf_counter()
        attrs, metric_attrs = semconv.session_attributes(conn, method)
        span = self.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attrs)

        def traced() -> Result:  # the span is current: its context goes into _meta
            return ask(_with_context(params), lambda rid: span.set_attribute("jsonrpc.request.id", str(rid)))
        return self._within(span, None, traced, self.client_duration, metric_attrs, started)

    def client_notification(self, session: Any, method: str, params: dict[str, Any] | None,
                            send: Callable[[dict[str, Any] | None], None]) -> None:
        """Send one notification of the client (``send(params)``) as a CLIENT span, its
        context put in the notification's ``_meta``; the span covers the sending."""
        attrs, metric_attrs = semconv.client_attributes(session, method, None)
        self._sent(method, params, send, attrs, metric_attrs)

    def server_notification(self, conn: SessionView, method: str, params: dict[str, Any] | None,
                            send: Callable[[dict[str, Any] | None], None]) -> None:
        """One notification the server sends while a call runs (progress, a log message):
        a CLIENT span (the server initiates it), child of the call's, its context in the
        notification's ``_meta``; the span covers handing it to the transport."""
        attrs, metric_attrs = semconv.session_attributes(conn, method)
        self._sent(method, params, send, attrs, metric_attrs)

    def broadcast(self, method: str, deliver: Callable[[], int]) -> int:
        """A notification the server sends to every session that wants it (a list change,
        a resource update): one CLIENT span around the delivery to all of them."""
        started = time.perf_counter()
        attrs: dict[str, Any] = {"mcp.method.name": method}
        span = self.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attrs)
        return self._within(span, None, deliver, self.client_duration, dict(attrs), started)

    def _sent(self, method: str, params: dict[str, Any] | None,
              send: Callable[[dict[str, Any] | None], None], attrs: dict[str, Any],
              metric_attrs: dict[str, Any]) -> None:
        started = time.perf_counter()
        span = self.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attrs)

        self._within(span, None, lambda: send(_with_context(params)), self.client_duration,
                     metric_attrs, started)

    def inject(self, meta: dict[str, Any], request_id: Any) -> None:
        """Put the current span's context into an outgoing request's ``_meta`` (and its id
        on the span: ``jsonrpc.request.id``)."""
        span = otel_trace.get_current_span()
        if span.is_recording():
            span.set_attribute("jsonrpc.request.id", str(request_id))
        otel_propagate.inject(meta)


def _with_context(params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of an outgoing message's ``params`` with the current span's context in its
    ``_meta`` (call it with the message's span current)."""
    meta = dict((params or {}).get("_meta") or {})
    otel_propagate.inject(meta)
    return {**(params or {}), "_meta": meta}


def client_request(fn: F) -> F:
    """Decorates ``ClientSession.request``: a client span around each request when
    telemetry is on. Without OpenTelemetry, ``fn`` itself (nothing is wrapped)."""
    if not AVAILABLE:
        return fn

    @functools.wraps(fn)
    def request(session: Any, method: str, params: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Any:
        tel = ACTIVE
        if tel is None or not tel.recording():
            return fn(session, method, params, **kwargs)
        return tel.client_call(session, method, params, lambda: fn(session, method, params, **kwargs))
    return cast(F, request)


def enable(*, tracer_provider: Any = None, meter_provider: Any = None,
           resource_uri_in_span_name: bool = False) -> Telemetry:
    """Turn telemetry on (again), with these providers (default: the API's global ones).
    Raises RuntimeError when ``opentelemetry-api`` is not installed."""
    global ACTIVE
    if not AVAILABLE:
        raise RuntimeError("OpenTelemetry is not installed: pip install 'mcpsync[otel]'")
    tel = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider,
                    resource_uri_in_span_name=resource_uri_in_span_name)
    ACTIVE = tel
    return tel


def disable() -> None:
    """Turn telemetry off: the call sites see ``ACTIVE is None`` and do nothing more."""
    global ACTIVE
    ACTIVE = None


#: The telemetry in force, or None (absent or off): the one check of every call site.
ACTIVE: Telemetry | None = Telemetry() if AVAILABLE and not _sdk_disabled() else None
