"""What every HTTP endpoint of mcpsync shares: the WSGI types, ``HttpError`` (a refusal with
its status, JSON-RPC code and headers), writing a JSON reply, and ``HttpHost``: the part of
the application (``http.app.HttpApp``) an endpoint may use. Endpoints import this module,
never the application itself, so the application can mount them without an import circle.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from ..admission import RETRY_AFTER_S, Admission, Overloaded
from ..protocol.dispatch import encode_outgoing
from ..protocol.jsonrpc import encode
from ..server import Server
from ..service import Service
from ..sessions import Session
from ..sync.pollable import iterate

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], Any]]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

JSON_HEADER = ("Content-Type", "application/json")
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache, no-transform"),
               ("X-Accel-Buffering", "no")]
STATUS = {200: "200 OK", 202: "202 Accepted", 204: "204 No Content", 400: "400 Bad Request",
          403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed",
          406: "406 Not Acceptable", 408: "408 Request Timeout", 409: "409 Conflict",
          413: "413 Content Too Large", 415: "415 Unsupported Media Type",
          429: "429 Too Many Requests", 431: "431 Request Header Fields Too Large",
          500: "500 Internal Server Error", 503: "503 Service Unavailable"}
SESSION_NOT_FOUND = -32001
T = TypeVar("T")


class EventStream:
    """A response body that waits for events (an SSE stream, a listen stream): a
    ``sync.pollable.Pollable``. ``HttpApp`` hands it to the front end to park when the
    server offers ``environ["mcpsync.park"]``; any other server iterates it, which drives
    it on the request's thread. Subclasses implement the ``Pollable`` methods."""

    tick_s: float | None = None

    def attach(self, wake: Callable[[], None]) -> None:
        raise NotImplementedError

    def poll(self) -> bytes | None:
        raise NotImplementedError

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[bytes]:
        return iterate(self)


class HttpError(Exception):
    """An HTTP-level refusal: status, JSON-RPC error code and message, extra headers."""

    def __init__(self, status: int, message: str, code: int = -32000,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = list(headers)

    @classmethod
    def overloaded(cls, exc: Overloaded) -> "HttpError":
        """Admission control's refusal on HTTP: 503 + Retry-After."""
        return cls(503, f"Service Unavailable: {exc.message}", exc.code,
                   headers=[("Retry-After", str(RETRY_AFTER_S))])


def transport_of(session: Session, kind: type[T]) -> T:
    """The session's transport state if it is ``kind``; another transport's session id is
    "not found" on this route (404), as an unknown one is."""
    state = session.transport
    if not isinstance(state, kind):
        raise HttpError(404, "Session not found", SESSION_NOT_FOUND)
    return state


def json_reply(start_response: StartResponse, status: int, reply: Any,
               extra: list[tuple[str, str]], encoder: Callable[[Any], bytes] = encode) -> list[bytes]:
    """A whole JSON response: one ``start_response``, one body chunk with its length
    (``encoder``: see ``encode_outgoing``)."""
    body = encode_outgoing(reply, encoder) or b""
    start_response(STATUS.get(status, f"{status} Error"),
                   [JSON_HEADER, ("Content-Length", str(len(body))), *extra])
    return [body]


class HttpHost(Protocol):
    """What an endpoint may use of the HTTP application that mounts it."""

    service: Service
    server: Server
    admission: Admission
    sse_retry_ms: int
    legacy_messages_path: str
    draining: bool

    def principal(self, environ: Environ) -> Any:
        """The verified credential of a request (None without auth)."""
        ...

    def open_session(self, environ: Environ, setup: Callable[[Session], None]) -> Session:
        """A new session for the request's client, or ``HttpError`` (503/429)."""
        ...

    def find_session(self, environ: Environ, session_id: str | None = None) -> Session:
        """The session named by ``session_id`` or the ``Mcp-Session-Id`` header, created by
        the request's principal; else ``HttpError`` (400/404)."""
        ...

    def read_body(self, environ: Environ) -> bytes:
        """The request's JSON body within the size limit, or ``HttpError``."""
        ...

    def admit(self, key: str | None, abort: Callable[[str], None]) -> int:
        """Admission control for one request, or ``HttpError`` (503)."""
        ...
