"""Streamable HTTP at ``/mcp``: both protocol eras on one endpoint (a WSGI route).

Theory of operation
-------------------
A worker thread carries one POST from its body to its reply. The request's era is decided
once, here: a 2026-07-28 ``MCP-Protocol-Version`` header or envelope in ``params._meta``
makes it a *modern* request (no session: a throwaway ``RequestConnection`` runs it and a
``ModernResponse`` carries it); ``initialize`` opens a *handshake-era* session
(``Mcp-Session-Id`` in the answer); anything else belongs to the session its header names
(400 without one, 404 for an unknown, expired, deleted or someone else's id). Requests pass
admission control first (``HttpHost.admit``), except ``initialize`` (bounded by the session
quotas instead); notifications and responses are not requests. The admission is released
when the handler's reply is returned, before the front end sends it.

The JSON body goes to ``ServerConnection.receive`` on this thread and the reply comes back
as one JSON response, unless the handler streams first (see ``responses``). ``GET`` opens
the session's standalone SSE stream or resumes a lost one (``Last-Event-ID``); ``DELETE``
ends the session. A session's HTTP state is a ``StreamableState``: its SSE stream logs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from .. import telemetry
from ..core.connection import RequestConnection
from ..errors import InvalidRequest, McpError, ParseError
from ..protocol import jsonrpc, modern, versions
from ..sessions import Session
from . import sse
from .base import (SSE_HEADERS, Environ, HttpError, HttpHost, StartResponse, json_reply,
                   transport_of)
from .responses import ModernResponse, PostResponse

MCP_PATH = "/mcp"
SESSION_HEADER = "Mcp-Session-Id"
CORS_ALLOW_HEADERS = ("Content-Type, Accept, Authorization, Mcp-Session-Id, "
                      "Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name")


@dataclass
class StreamableState:
    """A handshake-era HTTP session's transport state: its SSE stream logs."""

    streams: sse.SessionStreams
    kind: str = "http"

    def in_use(self) -> bool:
        return bool(self.streams.standalone.attached)

    def end_streams(self) -> None:
        self.streams.close()


def attach(session: Session) -> None:
    """Give a new session its SSE stream logs; messages not tied to a request go there."""
    streams = sse.SessionStreams()
    session.transport = StreamableState(streams)
    session.handler.send = streams.push
    session.on_close(lambda _s: streams.close())


class StreamableHttp:
    """The ``/mcp`` route of an ``HttpHost``."""

    def __init__(self, host: HttpHost) -> None:
        self.host = host

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "POST":
            return self._post(environ, start_response)
        if method == "GET":
            return self._get(environ, start_response)
        if method == "DELETE":
            return self._delete(environ, start_response)
        if method == "OPTIONS":
            start_response("204 No Content", [
                ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
                ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                ("Access-Control-Max-Age", "86400"), *environ["mcpsync.cors"]])
            return []
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "GET, POST, DELETE, OPTIONS")])

    # ---- POST -------------------------------------------------------------------------------

    def _post(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        host = self.host
        body = host.read_body(environ)
        accept = environ.get("HTTP_ACCEPT") or "*/*"
        can_sse = "text/event-stream" in accept or "*/*" in accept
        if not can_sse and "application/json" not in accept and "application/*" not in accept:
            raise HttpError(406, "Not Acceptable: accept application/json and text/event-stream")
        try:
            value = jsonrpc.decode(body)
        except ParseError as exc:
            raise HttpError(400, exc.message, exc.code) from None
        if _is_modern_post(environ, value):
            return self._post_modern(environ, start_response, value, can_sse)
        if type(value) is dict and value.get("method") == "initialize":
            return self._initialize(environ, start_response, value)
        session = host.find_session(environ)
        conn = host.service.connection(session)
        cors = environ["mcpsync.cors"]
        if not _has_request(value):
            reply = conn.receive(value)
            if reply is not None:  # invalid message(s): an HTTP error, nothing was accepted
                err = reply if type(reply) is dict else reply[0]
                raise HttpError(400, err["error"]["message"], err["error"]["code"])
            start_response("202 Accepted", [("Content-Length", "0"), *cors])
            return []
        streams = transport_of(session, StreamableState).streams
        response = PostResponse(streams, conn, jsonrpc.readable_id(value), start_response, cors,
                                can_sse, host.sse_retry_ms)
        ticket = host.admit(session.id, response.abort)
        started = time.perf_counter()
        reply = None
        try:
            reply = conn.receive(value, response)
            return response.finish(reply)
        finally:
            host.admission.release(session.id, ticket)
            host.admission.observe("http", value, reply, time.perf_counter() - started, session.id)

    def _post_modern(self, environ: Environ, start_response: StartResponse, value: Any,
                     can_sse: bool) -> Iterable[bytes]:
        """A modern-era (2026-07-28) POST: no session; the request carries its envelope.
        ``Mcp-Session-Id`` and ``Last-Event-ID`` are ignored, as the revision asks."""
        host = self.host
        cors = environ["mcpsync.cors"]
        if type(value) is not dict:
            raise HttpError(400, "Invalid Request: one JSON-RPC message per POST", InvalidRequest.code)
        if "method" not in value or "id" not in value:
            try:
                kind = jsonrpc.classify(value)
            except McpError as exc:
                raise HttpError(400, exc.message, exc.code) from None
            if kind != jsonrpc.NOTIFICATION:
                raise HttpError(400, "Invalid Request: this revision has no client responses",
                                InvalidRequest.code)
            start_response("202 Accepted", [("Content-Length", "0"), *cors])
            return []  # notifications/cancelled is stdio-only here: closing the stream cancels
        try:
            jsonrpc.classify(value)
            raw_params = value.get("params")
            params: dict[str, Any] = raw_params if type(raw_params) is dict else {}
            tool = None
            if value["method"] == "tools/call" and isinstance(params.get("name"), str):
                tool = host.server.registry.tools.get(params["name"])
            in_headers = tool.header_params if tool is not None else ()
            headers: dict[str, str | None] = {
                "mcp-protocol-version": environ.get("HTTP_MCP_PROTOCOL_VERSION"),
                "mcp-method": environ.get("HTTP_MCP_METHOD"),
                "mcp-name": environ.get("HTTP_MCP_NAME")}
            if in_headers:
                _add_param_headers(headers, environ, in_headers)
            envelope = modern.check_headers(headers, value, in_headers)
        except McpError as exc:
            tel = telemetry.ACTIVE
            if tel is not None and tel.recording():
                tel.refused(host.server, value, exc.code, exc.message, "http",
                            environ.get("REMOTE_ADDR") or None)
            refusal = jsonrpc.error_response(jsonrpc.readable_id(value), exc)
            return json_reply(start_response, modern.http_status(exc), refusal, cors)
        rid = value["id"]
        conn = RequestConnection(host.server)  # per request: no session, no broadcasts
        conn.client_address = environ.get("REMOTE_ADDR") or None
        response = ModernResponse(start_response, cors, can_sse, conn, rid)
        ticket = host.admit(None, response.abort)
        started = time.perf_counter()
        reply = None
        try:
            principal = host.principal(environ)
            reply = conn.handle_request(value, response, envelope=envelope,
                                       principal=None if principal is None else str(principal))
            return response.finish(reply)
        finally:
            host.admission.release(None, ticket)
            host.admission.observe("http-modern", value, reply, time.perf_counter() - started, None)

    def _initialize(self, environ: Environ, start_response: StartResponse,
                    msg: dict[str, Any]) -> Iterable[bytes]:
        if environ.get("HTTP_MCP_SESSION_ID"):
            raise HttpError(400, "Bad Request: initialize must not carry an Mcp-Session-Id",
                            InvalidRequest.code)
        service = self.host.service
        session = self.host.open_session(environ, attach)
        reply = service.connection(session).receive(msg)
        if reply is None or "error" in reply:
            service.close_session(session.id)
            headers = []
        else:
            headers = [(SESSION_HEADER, session.id)]
        return json_reply(start_response, 200, reply, [*headers, *environ["mcpsync.cors"]])

    # ---- GET and DELETE ---------------------------------------------------------------------

    def _get(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _modern_header(environ):
            raise HttpError(405, "Method Not Allowed: revision 2026-07-28 has no GET stream",
                            headers=[("Allow", "POST")])
        accept = environ.get("HTTP_ACCEPT") or ""
        if "text/event-stream" not in accept and "*/*" not in accept:
            raise HttpError(406, "Not Acceptable: a GET stream is text/event-stream")
        session = self.host.find_session(environ)
        streams = transport_of(session, StreamableState).streams
        last = environ.get("HTTP_LAST_EVENT_ID")
        if last:
            found = streams.take_over(last)
            if found is None:
                raise HttpError(400, "Bad Request: Last-Event-ID names an unknown or expired stream")
            events = streams.follow(*found)
        else:
            epoch = streams.attach_standalone()
            if epoch is None:
                raise HttpError(409, "Conflict: the session's GET stream is already open")
            events = streams.follow_standalone(epoch)
        start_response("200 OK", [*SSE_HEADERS, *environ["mcpsync.cors"]])
        return sse.touching(lambda: self.host.service.store.touch(session.id), events,
                            b": stream open\n\n")

    def _delete(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _modern_header(environ):
            raise HttpError(405, "Method Not Allowed: revision 2026-07-28 has no sessions",
                            headers=[("Allow", "POST")])
        session = self.host.find_session(environ)
        self.host.service.close_session(session.id)
        start_response("200 OK", [("Content-Length", "0"), *environ["mcpsync.cors"]])
        return []




def _modern_header(environ: Environ) -> bool:
    header = environ.get("HTTP_MCP_PROTOCOL_VERSION")
    return header is not None and header in versions.MODERN_VERSIONS


def _is_modern_post(environ: Environ, value: Any) -> bool:
    """A POST belongs to the modern era when its header or its envelope says so."""
    if _modern_header(environ):
        return True
    return type(value) is dict and modern.is_modern(value.get("params"))


def _add_param_headers(headers: dict[str, str | None], environ: Environ,
                       in_headers: tuple[tuple[str, str], ...]) -> None:
    """Add the ``Mcp-Param-*`` headers the called tool declares to the standard MCP request
    headers (lower-case names; None when absent)."""
    for _prop, name in in_headers:
        headers[f"mcp-param-{name.lower()}"] = environ.get(
            "HTTP_MCP_PARAM_" + name.upper().replace("-", "_"))


def _has_request(value: Any) -> bool:
    if type(value) is dict:
        return "method" in value and "id" in value
    return type(value) is list and any(type(m) is dict and "method" in m and "id" in m for m in value)
