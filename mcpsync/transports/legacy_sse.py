"""The deprecated HTTP+SSE transport of revision 2024-11-05: ``GET /sse`` + ``POST /messages``.

``GET /sse`` creates a session in the same store as Streamable HTTP (same limits, expiry
and credential binding) and holds an SSE stream open. Its first event is ``endpoint``,
whose data is the URL to POST messages to (``/messages?session_id=<id>``). Every message
from the server -- responses included -- travels on that stream as an ``event: message``.

``POST /messages?session_id=...`` hands the body to the session's ``MessageStreamSession``
and answers 202 at once: requests run on the session's worker pool and their replies go
out on the stream, so a slow tool never holds the client's POST. A request past the
admission limits (``mcpsync.admission``) is refused with 503 + Retry-After instead, so
nothing queues without bound. Closing the GET stream
ends the session.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

from ..admission import Overloaded
from ..errors import ParseError, SessionNotFound
from ..protocol import jsonrpc
from ..sessions import Session
from . import sse
from .stream import MessageStreamSession

if TYPE_CHECKING:
    from .wsgi import McpWsgiApp

SSE_PATH = "/sse"
MESSAGES_PATH = "/messages"


def _attach(owner: "McpWsgiApp", session: Session) -> None:
    streams = sse.SessionStreams()
    session.data["streams"] = streams
    session.data["legacy"] = MessageStreamSession(owner.server, streams.push_encoded,
                                                  name="sse", conn=session.handler,
                                                  admission=owner.app.admission,
                                                  admission_key=session.id)
    session.on_close(lambda _s: streams.close())
    session.on_close(lambda s: s.data["legacy"].close())


def open_stream(owner: "McpWsgiApp", environ: dict[str, Any],
                start_response: Callable[..., Any]) -> Iterable[bytes]:
    from .wsgi import HttpError  # the HTTP error type of the app that mounts us
    if environ["REQUEST_METHOD"] != "GET":
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "GET")])
    session = owner.open_session(environ, lambda s: _attach(owner, s))
    streams: sse.SessionStreams = session.data["streams"]
    epoch = streams.attach_standalone()
    assert epoch is not None
    prefix = (environ.get("SCRIPT_NAME") or "").rstrip("/")
    endpoint = f"{prefix}{owner.legacy_messages_path}?session_id={session.id}"
    start_response("200 OK", [("Content-Type", "text/event-stream"),
                              ("Cache-Control", "no-cache, no-transform"),
                              ("X-Accel-Buffering", "no"), *environ["mcpsync.cors"]])
    return _stream(owner, session, endpoint, streams.follow_standalone(epoch))


def _stream(owner: "McpWsgiApp", session: Session, endpoint: str,
            events: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield b"event: endpoint\ndata: " + endpoint.encode() + b"\n\n"
        for chunk in events:
            if chunk is sse.KEEPALIVE:
                owner.app.store.touch(session.id)
            yield chunk
    finally:
        events.close()  # type: ignore[attr-defined]
        owner.app.close_session(session.id)  # the client left: the session ends with it


def post_message(owner: "McpWsgiApp", environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
    from .wsgi import HttpError
    if environ["REQUEST_METHOD"] != "POST":
        raise HttpError(405, "Method Not Allowed", headers=[("Allow", "POST")])
    query = parse_qs(environ.get("QUERY_STRING") or "")
    sid = (query.get("session_id") or query.get("sessionId") or [None])[0]
    if not sid:
        raise HttpError(400, "Bad Request: session_id is required")
    try:
        session = owner.app.find_session(sid, principal=owner.principal(environ))
    except SessionNotFound:
        raise HttpError(404, "Session not found", -32001) from None
    legacy = session.data.get("legacy")
    if legacy is None:
        raise HttpError(404, "Session not found", -32001)
    body = owner.read_body(environ)
    try:
        value = jsonrpc.decode(body)
    except ParseError as exc:
        raise HttpError(400, exc.message, exc.code) from None
    try:
        legacy.submit(value)  # a request runs on the session's pool; its reply takes the stream
    except Overloaded as exc:
        raise HttpError.overloaded(exc) from None
    start_response("202 Accepted", [("Content-Length", "0"), *environ["mcpsync.cors"]])
    return []
