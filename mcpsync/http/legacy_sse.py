"""The deprecated HTTP+SSE transport of revision 2024-11-05: ``GET /sse`` + ``POST /messages``.

``GET /sse`` creates a session in the same store as Streamable HTTP (same limits, expiry
and credential binding) and holds an SSE stream open. Its first event is ``endpoint``,
whose data is the URL to POST messages to (``/messages?session_id=<id>``). Every message
from the server -- responses included -- travels on that stream as an ``event: message``.

``POST /messages?session_id=...`` hands the body to the session's ``MessageStream`` and
answers 202 at once: requests run on the stream's worker pool and their replies go out on
the SSE stream, so a slow tool never holds the client's POST. A request past the admission
limits (``mcpsync.admission``) is refused with 503 + Retry-After instead, so nothing queues
without bound. Closing the GET stream ends the session.

The GET stream is an ``sse.Follower``: under mcpsync's front end it is parked (an open
stream costs a buffer, not a thread) and the session's end, which may wait for its calls,
runs as a job on the worker pool (``environ["mcpsync.submit"]``), never on the dispatcher.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qs

from ..admission import Overloaded
from ..errors import ParseError
from ..protocol import jsonrpc
from ..sessions import Session
from ..streams.stream import MessageStream
from . import sse
from .base import SSE_HEADERS, Environ, HttpError, HttpHost, StartResponse, transport_of

SSE_PATH = "/sse"
MESSAGES_PATH = "/messages"


@dataclass
class LegacySseState:
    """A legacy session's transport state: its one SSE stream and the message stream whose
    replies go out on it. The session lives exactly as long as its GET stream."""

    streams: sse.SessionStreams
    stream: MessageStream
    kind: str = "legacy-sse"

    def in_use(self) -> bool:
        return True

    def end_streams(self) -> None:
        self.streams.close()


def _attach(host: HttpHost, session: Session) -> None:
    streams = sse.SessionStreams()
    stream = MessageStream(host.server, streams.push_encoded, name="sse", conn=session.handler,
                           admission=host.admission, admission_key=session.id)
    session.transport = LegacySseState(streams, stream)
    session.on_close(lambda _s: streams.close())
    session.on_close(lambda _s: stream.close())


def open_stream(host: HttpHost, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "GET":
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "GET")])
    session = host.open_session(environ, lambda s: _attach(host, s))
    streams = transport_of(session, LegacySseState).streams
    epoch = streams.attach_standalone()
    assert epoch is not None
    prefix = (environ.get("SCRIPT_NAME") or "").rstrip("/")
    endpoint = f"{prefix}{host.legacy_messages_path}?session_id={session.id}"
    start_response("200 OK", [*SSE_HEADERS, *environ["mcpsync.cors"]])
    submit = environ.get("mcpsync.submit")

    def end() -> None:  # the client left: the session ends with its stream
        host.service.close_session(session.id)

    def ended() -> None:  # closing the session may wait (its calls are cancelled and joined):
        if submit is None:  # not on the front end's dispatcher thread, which parks the stream
            end()
            return
        try:
            submit(end)
        except RuntimeError:  # the pool is gone (a shutdown giving up): here, then
            end()

    return sse.touching(lambda: host.service.store.touch(session.id),
                        streams.follow_standalone(epoch),
                        b"event: endpoint\ndata: " + endpoint.encode() + b"\n\n", on_close=ended)


def post_message(host: HttpHost, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "POST":
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "POST")])
    query = parse_qs(environ.get("QUERY_STRING") or "")
    sid = (query.get("session_id") or query.get("sessionId") or [None])[0]
    if not sid:
        raise HttpError(400, "Bad Request: session_id is required")
    stream = transport_of(host.find_session(environ, sid), LegacySseState).stream
    body = host.read_body(environ)
    try:
        value = jsonrpc.decode(body)
    except ParseError as exc:
        raise HttpError(400, exc.message, exc.code) from None
    try:
        stream.submit(value)  # a request runs on the session's pool; its reply takes the stream
    except Overloaded as exc:
        raise HttpError.overloaded(exc) from None
    start_response("202 Accepted", [("Content-Length", "0"), *environ["mcpsync.cors"]])
    return []
