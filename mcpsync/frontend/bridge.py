"""``Bridge``: one HTTP request as a WSGI call, on a worker thread.

Theory of operation
-------------------
The dispatcher hands a ``Channel`` with a complete request head to the pool; a worker calls
``Bridge.serve``, which builds the PEP 3333 environ, calls the app, sends the response and
gives the channel back to the dispatcher.

Request bodies: a body the dispatcher read whole (up to ``Limits.body_buffer``) is a
``BytesIO``. A larger one is handed over with the part read so far and ``wsgi.input``
(``StreamingInput``) reads the rest from the socket itself, through the channel's parser,
waiting for bytes against the minimum-body-rate deadline (inside ``may_block()``, so the
waiting worker holds no pool slot). ``Expect: 100-continue`` for such a body is answered
when the app first reads; for a buffered one the dispatcher answered it already.

Responses: a whole response (a list body returned before anything was written) leaves as
one ``send``; what the kernel does not take at once stays in ``Channel.out`` and the
dispatcher flushes it after the worker has moved on, so a client that never reads costs a
buffer, not a worker. A streamed response (an iterator, or ``write()``) is chunked on
HTTP/1.1 and delimited by closing on HTTP/1.0; its worker gives up its pool slot
(``WorkerPool.leave_slot``: producing the next piece may wait for events) and writes each
piece as it comes, waiting for the peer within the write timeout: such a response keeps
its thread until it ends. A response that waits for events instead returns a *parked*
stream (``environ["mcpsync.park"]``, ``parked.py``): the head is sent here and the
channel goes back to the dispatcher, which drives the stream; the worker is free.

The next request: a worker that would go idle after a keep-alive response waits briefly
on the same connection for its next request and runs it too (``serve``; see
``Limits.next_request_wait`` and ``HttpFrontEnd._may_wait_next``).

Upgrades: ``werkzeug.socket`` in the environ is the connection's socket. For an
``Upgrade: websocket`` request the socket is made blocking and the worker leaves its slot
before the call, because the app may take the socket over and run the connection inside
the call. When such a request returns without a response having been sent (and its status
is not a 4xx/5xx refusal), or the app set ``environ["mcpsync.socket_taken"]``, nothing
more is written and the channel is closed. An app may park the connection instead
(``park(stream, raw=True)``: mcpsync's WebSocket, ``streams/ws_parked.py``), and run its
work on the pool through ``environ["mcpsync.submit"]``.

``write()`` may be called from threads the app starts (progress from a tool's helper
thread); ``Exchange._lock`` serializes those writes with the end of the response, after
which ``write()`` raises instead of touching a channel that has moved on.
"""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from .channel import Channel, PeerGone
from .h1 import NEED_DATA, Data, EndOfMessage, H1Error, Request
from .response import CONTINUE, ResponseFraming, error_response, response_head
from .limits import Limits
from .parked import Parked, park
from .pool import WorkerPool

log = logging.getLogger("mcpsync.http")

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]

# Field name (lower case) -> environ key ("" = dropped: names with "_" could spoof others).
_ENV_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": ""}
_ENV_KEYS_MAX = 512


def _env_key(name: str) -> str:
    key = _ENV_KEYS.get(name)
    if key is None:
        key = "" if "_" in name else "HTTP_" + name.upper().replace("-", "_")
        if len(_ENV_KEYS) < _ENV_KEYS_MAX:
            _ENV_KEYS[name] = key
    return key


class InputError(ConnectionError):
    """Reading the request body failed because of the peer; ``status`` is what to answer
    (400 bad framing, 408 too slow) or None (the peer is gone). Raised into the app from
    ``wsgi.input``; a ``ConnectionError`` so that frameworks treat it as a dropped client."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class StreamingInput:
    """``wsgi.input`` for a body larger than the dispatcher buffers: the part read so far,
    then the socket. Used by the request's worker only. Ends at the end of the body, so
    ``wsgi.input_terminated`` holds."""

    def __init__(self, ex: Exchange, prefix: list[bytes], received: int) -> None:
        self._ex = ex
        self._pending = b"".join(prefix)
        self._received = received       # body bytes read from the socket so far
        self._done = ex.chan.reader.done
        self._continue = ex.request.expect_continue  # "100 Continue" owed before a read
        self.error: InputError | None = None

    def _piece(self, limit: int) -> bytes:
        """Up to ``limit`` (> 0) more body bytes, ``b""`` at the end. Blocks."""
        if self._pending:
            piece, self._pending = self._pending[:limit], self._pending[limit:]
            return piece
        if self._done:
            return b""
        if self.error is not None:
            raise self.error
        ex = self._ex
        chan = ex.chan
        if self._continue:
            self._continue = False
            if not ex.head_sent:
                try:
                    chan.send_all(CONTINUE, ex.bridge.limits.write_timeout)
                except PeerGone as exc:
                    raise self._fail(str(exc), None) from None
        reader = chan.reader
        limits = ex.bridge.limits
        while True:
            try:
                event = reader.next_event()
            except H1Error as exc:
                raise self._fail(exc.reason, exc.status) from None
            if type(event) is Data:
                data: bytes = event.data
                if len(data) > limit:
                    self._pending = data[limit:]
                    data = data[:limit]
                return data
            if type(event) is EndOfMessage:
                self._done = True
                return b""
            if event is not NEED_DATA:
                raise RuntimeError(f"unexpected parser event {event!r}")
            deadline = None
            if limits.body_grace is not None:
                deadline = (ex.started + limits.body_grace
                            + self._received / limits.min_body_rate)
            try:
                data = chan.recv_some(deadline)
            except TimeoutError:
                raise self._fail("timed out reading the request body", 408) from None
            except PeerGone as exc:
                raise self._fail(str(exc), None) from None
            self._received += len(data)
            reader.feed(data)

    def _fail(self, message: str, status: int | None) -> InputError:
        self.error = exc = InputError(message, status)
        return exc

    def read(self, size: int | None = -1) -> bytes:
        return self._collect(size, line=False)

    def readline(self, size: int | None = -1) -> bytes:
        return self._collect(size, line=True)

    def _collect(self, size: int | None, *, line: bool) -> bytes:
        parts = []
        want = -1 if size is None or size < 0 else size
        while want:
            piece = self._piece(65536 if want < 0 else want)
            if not piece:
                break
            if line:
                end = piece.find(b"\n") + 1
                if end:
                    self._pending = piece[end:] + self._pending
                    parts.append(piece[:end])
                    break
            parts.append(piece)
            if want > 0:
                want -= len(piece)
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body; False if more than ``limit`` bytes remain,
        the client still waits for "100 Continue", or reading failed (then close)."""
        if self._continue and not self._done:
            return False
        total = 0
        try:
            while total <= limit:
                piece = self._piece(65536)
                if not piece:
                    return True
                total += len(piece)
        except InputError:
            pass
        return False


class Exchange:
    """One request and its response, on the worker that serves it."""

    __slots__ = ("bridge", "chan", "request", "started", "status", "headers", "framing",
                 "head_sent", "peer_error", "finished", "_lock")

    def __init__(self, bridge: Bridge, chan: Channel, request: Request) -> None:
        self.bridge = bridge
        self.chan = chan
        self.request = request
        self.started = time.monotonic()
        self.status: str | None = None
        self.headers: Iterable[tuple[str, str]] = ()
        self.framing: ResponseFraming | None = None
        self.head_sent = False
        self.peer_error: Exception | None = None
        self.finished = False
        # Serializes write() (any thread the app starts) with the end of the response;
        # held across one send: the stream write lock of ARCHITECTURE.md's lock map.
        self._lock = threading.Lock()

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def _head(self, total: int | None) -> bytes:
        if self.status is None:
            raise RuntimeError("the app did not call start_response()")
        request = self.request
        head, self.framing = response_head(
            self.status, self.headers, http11=request.version == "HTTP/1.1",
            head_request=request.method == "HEAD",
            keep_alive=request.keep_alive and not self.bridge.stopping(), total=total)
        self.head_sent = True
        return head

    def send_whole(self, body: bytes) -> None:
        """A response whose body is all known: one send; the rest is the dispatcher's."""
        head = self._head(len(body))
        assert self.framing is not None
        data = head + self.framing.frame(body) if body else head
        try:
            self.chan.send_some(data)
        except PeerGone as exc:
            self.peer_error = exc
            raise

    def write(self, data: bytes) -> None:
        """WSGI's ``write()``, and the sink for a streamed body: sends at once. Blocks
        (up to the write timeout per wait); raises PeerGone, or ValueError once the
        response has ended."""
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"WSGI body must be bytes, not {type(data).__name__}")
        self.bridge.pool.leave_slot()  # a streamed response: this thread may wait from now on
        with self._lock:
            if self.finished:
                raise ValueError("the response has ended")
            out = self._head(None) if not self.head_sent else b""
            assert self.framing is not None
            out += self.framing.frame(bytes(data))
            if out:
                try:
                    self.chan.send_all(out, self.bridge.limits.write_timeout)
                except PeerGone as exc:
                    self.peer_error = exc
                    raise

    def end_stream(self) -> None:
        with self._lock:
            if not self.head_sent:
                data = self._head(0)
            else:
                assert self.framing is not None
                data = self.framing.end()
            self.finished = True
            if data:
                try:
                    self.chan.send_some(data)
                except PeerGone as exc:
                    self.peer_error = exc
                    raise

    def finish(self) -> None:
        with self._lock:
            self.finished = True

    def taken_over(self) -> bool:
        """After an ``Upgrade: websocket`` request: did the app take the socket over?"""
        if self.head_sent:
            return False
        status = self.status
        return status is None or status[:1] not in ("4", "5")


def _run_job(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # the job's own guard failed: keep the worker
        log.exception("a submitted job failed")


class Bridge:
    """Runs requests from the dispatcher through a WSGI app (see the module docstring)."""

    def __init__(self, app: WSGIApp, limits: Limits, pool: WorkerPool, server_name: str,
                 port: int) -> None:
        self.app = app
        self.limits = limits
        self.pool = pool
        self.give_back: Callable[[Channel], None] = lambda chan: None  # set by the server
        self.hold: Callable[[int], None] = lambda fd: None    # set by the server: the
        self.unhold: Callable[[int], None] = lambda fd: None  # poller's hold / unhold
        self.stopping: Callable[[], bool] = lambda: False                # set by the server
        # Set by the server: whether a worker done with a request may wait for the next
        # one on the same connection (nobody else needs it, and few connections are busy).
        self.may_wait_next: Callable[[], bool] = lambda: False
        self.followed = 0  # requests taken by a worker waiting on its connection (racy count)
        self._base: dict[str, Any] = {
            "SCRIPT_NAME": "", "SERVER_NAME": server_name, "SERVER_PORT": str(port),
            "SERVER_SOFTWARE": "mcpsync", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "wsgi.input_terminated": True,
            "mcpsync.park": park,  # parked streams (parked.py)
            "mcpsync.submit": self.submit,
        }

    def submit(self, job: Callable[[], None]) -> None:
        """``environ["mcpsync.submit"]``: run ``job()`` on a worker of the pool (a slot, in
        arrival order; never withdrawn by the queue timeout), from any thread: the work of
        a parked connection (a WebSocket's messages). Never blocks; RuntimeError once the
        pool is shut down."""
        self.pool.submit(_run_job, job, expirable=False)

    def serve(self, chan: Channel) -> None:
        """Run the request ``chan`` carries, then give ``chan`` back (a pool task). While
        nobody else needs this worker, it waits a moment for the connection's next request
        and runs that too (``Limits.next_request_wait``)."""
        held = False
        while True:
            try:
                keep = self._respond(chan)
            except Exception:  # a bug of ours; the worker must not die with it
                log.exception("HTTP request failed")
                keep = False
            if keep and chan.reader.done:
                chan.reader.next_cycle()
            else:
                chan.close_after = True
            chan.request = None
            chan.body = []
            chan.body_size = 0
            if chan.close_after or chan.out or chan.stream is not None \
                    or not self.limits.next_request_wait or not self.may_wait_next():
                break
            if not held:
                self.hold(chan.fd)
                held = True
            if not self._next_request(chan):
                break
            self.followed += 1
        if held:
            chan.end_waiting()
            self.unhold(chan.fd)
        self.give_back(chan)

    def _next_request(self, chan: Channel) -> bool:
        """Wait up to ``Limits.next_request_wait`` for the head of the connection's next
        request; True when ``chan.request`` is set (with as much of the body as came).
        False: the dispatcher takes the channel back as it is (a partial head or a whole
        request stays in the parser: it queues like any other; an error is answered here
        and the channel lingers). Blocks briefly."""
        reader = chan.reader
        deadline = 0.0
        try:
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + self.limits.next_request_wait
                    elif now >= deadline:
                        return False
                    with self.pool.waiting_idle() as wait:
                        data = chan.recv_waiting(deadline - now)
                    if data is None:
                        continue
                    reader.feed(data)
                    if not data or not wait.kept:  # EOF, or others were waiting meanwhile
                        return False
                elif type(event) is Request:
                    chan.request = event
                    while True:  # the body bytes that came with it
                        event = reader.next_event()
                        if type(event) is Data:
                            chan.body.append(event.data)
                            chan.body_size += len(event.data)
                        elif type(event) is EndOfMessage or event is NEED_DATA:
                            return True  # (a body still coming: wsgi.input reads it)
                        else:
                            raise RuntimeError(f"unexpected parser event {event!r}")
                else:  # the peer's EOF between requests: the dispatcher closes
                    return False
        except PeerGone:
            chan.close_after = True
            return False
        except H1Error as exc:
            chan.request = None
            chan.body = []
            try:
                chan.send_some(error_response(exc.status))
            except PeerGone:
                pass
            chan.close_after = chan.linger = True
            return False

    def environ(self, chan: Channel, request: Request, ex: Exchange) -> dict[str, Any]:
        env = self._base.copy()
        for name, value in request.fields.items():
            key = _ENV_KEYS.get(name)
            if key is None:
                key = _env_key(name)
            if key:
                env[key] = value
        if request.host is not None:
            env["HTTP_HOST"] = request.host  # an absolute-form target's authority wins
        if request.length is not None and "content-length" in request.fields:
            env["CONTENT_LENGTH"] = str(request.length)
        path = request.path
        if "%" in path:
            path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
        addr = chan.addr
        env.update(REQUEST_METHOD=request.method, SERVER_PROTOCOL=request.version,
                   REQUEST_URI=request.target, RAW_URI=request.target, PATH_INFO=path,
                   QUERY_STRING=request.query, REMOTE_ADDR=chan.client,
                   REMOTE_PORT=str(addr[1]) if isinstance(addr, tuple) and len(addr) > 1 else "")
        env["werkzeug.socket"] = chan.sock
        if chan.reader.done:
            body = chan.body
            env["wsgi.input"] = io.BytesIO(body[0] if len(body) == 1 else b"".join(body))
        else:
            env["wsgi.input"] = StreamingInput(ex, chan.body, chan.body_size)
        return env

    def _respond(self, chan: Channel) -> bool:
        """Run the app for one request and send its response; True to keep the channel."""
        request = chan.request
        assert request is not None
        ex = Exchange(self, chan, request)
        environ = self.environ(chan, request, ex)
        upgrade = "websocket" in request.fields.get("upgrade", "").lower()
        if upgrade:  # the app may take the socket over and read it itself
            chan.sock.setblocking(True)
            self.pool.leave_slot()
        result: Any = None
        try:
            result = self.app(environ, ex.start_response)
            if type(result) is Parked:
                return self._park(ex, result, upgrade)
            if environ.get("mcpsync.socket_taken") or (upgrade and ex.taken_over()):
                ex.finish()
                return False
            if upgrade:  # refused: the channel goes on, non-blocking again
                chan.sock.setblocking(False)
            if type(result) is list and not ex.head_sent:
                body = result[0] if len(result) == 1 else b"".join(result)
                if type(body) is not bytes and not isinstance(body, (bytearray, memoryview)):
                    raise TypeError(f"WSGI body must be bytes, not {type(body).__name__}")
                ex.send_whole(bytes(body))
                ex.finish()
            else:
                self.pool.leave_slot()  # producing the next piece may wait for events
                for piece in result:
                    if piece:
                        ex.write(piece)
                ex.end_stream()
            if ex.framing is not None and ex.framing.short:
                log.warning("%s %s: app sent fewer bytes than its Content-Length",
                            request.method, request.path)
                return False
        except Exception as exc:
            ex.finish()
            self._on_app_error(ex, exc, environ, upgrade)
            return False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("close() of the WSGI response failed")
                    ex.peer_error = ex.peer_error or RuntimeError("close() failed")
        if ex.peer_error is not None:  # the app caught it and answered anyway
            return False
        body_in = environ["wsgi.input"]
        if type(body_in) is StreamingInput and not body_in.discard(self.limits.drain_limit):
            ex.chan.linger = True  # discard the rest before closing: the client reads our answer
            return False
        assert ex.framing is not None
        return ex.framing.keep_alive and not self.stopping()

    def _park(self, ex: Exchange, parked: Parked, upgrade: bool) -> bool:
        """The app answered with a parked stream: send the head (none for a raw connection)
        and leave the stream on the channel for the dispatcher to drive (``parked.py``).
        True to keep the connection once the stream is over."""
        chan = ex.chan
        if upgrade:
            chan.sock.setblocking(False)
        if parked.raw:
            if ex.head_sent:
                raise RuntimeError("park(raw=True) after a response head was sent")
            ex.finish()
            keep = False
        else:
            with ex._lock:  # the end of write(): the stream's bytes go out from the dispatcher
                head = b"" if ex.head_sent else ex._head(None)
                ex.finished = True
            try:
                chan.send_some(head)
            except PeerGone as exc:  # the stream is closed with the response (result.close)
                ex.peer_error = exc
                raise
            assert ex.framing is not None
            keep = ex.framing.keep_alive and chan.reader.done and not self.stopping()
        parked.taken = True
        chan.stream = parked.stream
        chan.framing = ex.framing if not parked.raw else None
        return keep

    def _on_app_error(self, ex: Exchange, exc: Exception, environ: dict[str, Any],
                      upgrade: bool) -> None:
        body_in = environ.get("wsgi.input")
        input_error = body_in.error if type(body_in) is StreamingInput else None
        peer = ex.peer_error or input_error
        if peer is not None or (upgrade and isinstance(exc, ConnectionError)):
            log.debug("client connection lost: %s", peer or exc)
            status = getattr(peer, "status", None)
            if status is not None and not ex.head_sent:
                self._send_error(ex, status)
            return
        log.exception("error in WSGI app for %s %s", environ.get("REQUEST_METHOD"),
                      environ.get("PATH_INFO"))
        if not ex.head_sent and not upgrade:  # an upgrade's socket may belong to the app
            ex.head_sent = True
            self._send_error(ex, 500)

    @staticmethod
    def _send_error(ex: Exchange, status: int) -> None:
        chan = ex.chan
        try:
            chan.send_some(error_response(status))
        except PeerGone:
            return
        chan.linger = True
