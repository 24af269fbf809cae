"""A message-stream session: one connection that carries whole JSON-RPC messages both ways.

stdio (one message per line) and WebSocket (one message per text frame) are the same shape:
a reader delivers messages in order, one writer sends them back. ``MessageStream``
is that shape, shared by both transports.

Theory of operation
-------------------
The reader thread calls ``feed(data)`` for every incoming message. Requests are handed to
a worker pool so a slow tool never blocks the reader: pings, cancellations, responses to
our own sampling/elicitation requests and other calls keep flowing. A transport that can
hand its reading over to another thread (WebSocket) may instead run a request on the
reader thread itself when it is the session's only request: no thread switch on the way. Everything else
(notifications, responses, ``initialize``, parse errors) is handled on the reader thread
at once, which keeps their order: a cancellation is processed before the next message. A
cancellation of a request handed to the pool is also remembered here until the request
finishes: a queued request then never starts, and one that a worker took just before the
connection registered it (where ``ServerConnection.cancel`` cannot see it yet) still gets
no response.

One writer: ``write_lock`` serializes every write of the connection (responses from the
workers, notifications, server requests), so frames or lines never interleave. Messages not
tied to a request (broadcasts, the session's own requests) are *posted*: queued in a
bounded outbox that a flush job on the stream's workers writes (one job at a time), so a
broadcaster never waits for this client and never writes to it. A writer that holds the
write lock empties the outbox before its own message and after it: what was posted first
goes out first (a tool's list_changed before the tool's reply).

Admission: every request is admitted (``mcpsync.admission``) before it is queued or run,
and released once its reply is written. A refused request is answered with a JSON-RPC
error by the reader thread itself; a client that stops reading therefore blocks its own
reader on the write lock once its session's share is in flight, and nothing more is read
from it (backpressure). Threads per connection are bounded by the worker pool
(``STREAM_WORKERS``) plus the reader; the replies waiting to be written by the session's
in-flight limit. A transport whose host runs work for it (a WebSocket parked in mcpsync's
front end) passes ``executor`` instead: requests then run where it puts them (the front
end's worker pool) and the stream starts no thread of its own.

``close()`` cancels in-flight calls (their responses are dropped), fails outgoing
requests, and waits up to ``CLOSE_TIMEOUT_S`` for the workers to finish (a
``mcpsync-stream-closer`` thread joins them; a call that ignores cancellation finishes on
its own, its reply dropped).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable

from ..admission import Admission, Overloaded
from ..errors import ConnectionClosed, McpError
from ..protocol import jsonrpc
from ..protocol.dispatch import encode_outgoing
from ..core.connection import ServerConnection
from ..server import Server
from ..sync import may_block

log = logging.getLogger("mcpsync.stream")

STREAM_WORKERS = 64          # concurrent tool calls per connection
OUTBOX_LIMIT = 1000          # posted messages a client may fall behind by (the oldest go first)
CLOSE_TIMEOUT_S = 5.0


class MessageStream:
    """Drive one ``ServerConnection`` from a message stream.

    ``write(data: bytes)`` sends one encoded message; it is always called with
    ``self.write_lock`` held, from whichever thread produced the message.
    """

    def __init__(self, server: Server, write: Callable[[bytes], None], *,
                 name: str = "stream", session_id: str | None = None,
                 conn: ServerConnection | None = None,
                 max_workers: int = STREAM_WORKERS,
                 admission: Admission | None = None,
                 admission_key: Hashable | None = None,
                 executor: Callable[[Callable[[], None]], None] | None = None) -> None:
        self._write = write
        self._name = name  # the transport's name in metrics and logs
        # The app's admission control; a stream of its own (stdio) gets its own.
        self._admission = admission if admission is not None else Admission(
            known_methods=lambda: server.dispatcher.requests)
        self._key: Hashable = admission_key if admission_key is not None else id(self)
        # Serializes writes to the connection; held for one write call and for flushing the
        # outbox before and after it, so whoever holds it writes what was posted meanwhile.
        self.write_lock = threading.Lock()
        # Guards _outbox and _flushing: encoded session-level messages (broadcasts, requests
        # not tied to a call) waiting to be written, and whether a flush job is on its way; a
        # few deque operations. Taken alone, or inside write_lock (a leaf).
        self._outbox_lock = threading.Lock()
        self._outbox: deque[bytes] = deque()
        self._flushing = False
        self.dropped = 0  # posted messages lost because the client fell OUTBOX_LIMIT behind
        if conn is None:
            conn = server.connect(session_id=session_id)
        conn.send = self.post
        conn.transport = name
        self.conn = conn
        self._pool: ThreadPoolExecutor | None = None
        if executor is None:
            self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix=f"mcpsync-{name}-worker")
        self._executor = executor
        self.closed = False
        self.write_failed = False
        # Ids of requests handed to the pool and not finished -> whether the client cancelled
        # them (the connection only knows a request once a worker runs it; an entry lives until
        # its reply is written, so no cancellation falls in between, and a reply blocked on
        # a client that does not read keeps the next request off the reader thread).
        # Guards _queued, _waiting and _released; taken by the reader thread and the
        # workers, for a few dict operations.
        self._queued_lock = threading.Lock()
        self._queued: dict[Any, bool] = {}
        # Requests admitted and not started yet (id -> their admission ticket and message):
        # a cancellation releases such a request at once (it is no longer in flight), and
        # the job that takes it later finds its ticket among the _released and does nothing.
        self._waiting: dict[Any, tuple[int, Any]] = {}
        self._released: set[int] = set()

    def send(self, msg: Any) -> None:
        """Encode and write one message (or batch) as one unit; waits for the write lock
        and for the peer (replies, and messages about a running request). What was posted
        before goes out first (a list_changed a tool caused precedes its reply)."""
        data = encode_outgoing(msg)
        if data is None:
            return
        self._lock_writes()
        try:
            self._flush_locked()
            self._write_locked(data)
            self._flush_locked()
        finally:
            self.write_lock.release()

    def send_raw(self, write: Callable[[], Any]) -> None:
        """Run ``write()`` (a transport's own bytes, such as a WebSocket control frame) as
        one write of this stream: under the write lock, then the outbox."""
        self._lock_writes()
        try:
            if not self.write_failed:
                try:
                    write()
                except OSError:
                    self.write_failed = True
            self._flush_locked()
        finally:
            self.write_lock.release()

    def _lock_writes(self) -> None:
        """Take the write lock; waiting for it (another writer waits for the peer) is a
        wait in the sense of ``may_block``."""
        if not self.write_lock.acquire(blocking=False):
            with may_block():
                self.write_lock.acquire()

    def post(self, msg: Any) -> None:
        """Queue a message not tied to a request (a broadcast, the session's own requests);
        never waits and never writes: a job on the stream's workers writes the outbox (one
        at a time per stream), so a client that does not read holds up only its own stream,
        never the broadcasting thread (past ``OUTBOX_LIMIT`` the oldest are dropped)."""
        data = encode_outgoing(msg)
        if data is None:
            return
        with self._outbox_lock:
            if len(self._outbox) >= OUTBOX_LIMIT:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append(data)
            if self._flushing:
                return
            self._flushing = True
        try:
            self._spawn(self._flush_posted)
        except RuntimeError:  # workers shut down: drain() writes it, or the stream is over
            with self._outbox_lock:
                self._flushing = False

    def _flush_posted(self) -> None:
        """The flush job: write the outbox until it is empty (a writer holding the write
        lock meanwhile writes some of it itself). Should a write raise, the next post
        starts a new job."""
        try:
            while True:
                self._lock_writes()
                try:
                    self._flush_locked()
                finally:
                    self.write_lock.release()
                with self._outbox_lock:
                    if not self._outbox:
                        self._flushing = False
                        return
        except BaseException:
            with self._outbox_lock:
                self._flushing = False
            raise

    def _flush_locked(self) -> None:
        while True:
            with self._outbox_lock:
                if not self._outbox:
                    return
                data = self._outbox.popleft()
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        if self.write_failed:
            return
        try:
            self._write(data)
        except (OSError, ValueError) as exc:  # peer gone; the reader will see EOF
            self.write_failed = True
            log.debug("write failed: %s", exc)

    def feed(self, data: bytes | str,
             inline: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Handle one incoming message (called by the reader thread, in order): decode it
        and ``submit`` it; a refusal is answered on the stream by this thread."""
        try:
            value = jsonrpc.decode(data)
        except McpError as exc:
            self.send(jsonrpc.error_response(None, exc))
            return
        try:
            self.submit(value, inline)
        except Overloaded as exc:
            self.send(jsonrpc.error_response(jsonrpc.readable_id(value), exc))

    def submit(self, value: Any,
               inline: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Handle one decoded message. Requests are admitted (raises ``Overloaded``), then
        run by the worker pool. ``inline``, if given, is offered a request when no other
        request of this session is running or queued: ``inline(job)`` must run ``job()``
        (on the calling thread, after making sure someone else reads meanwhile if it
        takes long). Everything else runs on the calling thread at once, in order."""
        if not self._goes_to_worker(value):
            self._note_cancellation(value)
            self._run(value, None)
            return
        rid = value.get("id") if type(value) is dict else None
        if not jsonrpc.is_valid_id(rid):
            rid = None  # a batch
        ticket = self._admission.admit(self._key, lambda message: self._abort(rid, message))
        with self._queued_lock:
            alone = not self._queued
            if rid is not None:
                self._queued.setdefault(rid, False)
                self._waiting.setdefault(rid, (ticket, value))  # (an id reused: the first)
        if inline is not None and alone:
            inline(lambda: self._run(value, ticket))
            return
        try:
            self._spawn(lambda: self._run(value, ticket))
        except RuntimeError:  # pool shut down: we are closing
            self._forget(rid, ticket, value, None, time.perf_counter())

    def _spawn(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the stream's workers (its pool, or the executor it was given).
        Raises RuntimeError once they are shut down."""
        if self._executor is not None:
            self._executor(job)
        else:
            assert self._pool is not None
            self._pool.submit(job)

    def _abort(self, rid: Any, message: str) -> None:
        """Shutdown past its grace period: answer the request with an error now and cancel
        it (its own reply, if it ever comes, is dropped)."""
        if rid is not None:
            with self._queued_lock:
                if rid in self._queued:
                    self._queued[rid] = True
            self.conn.cancel(rid, message)
        self.send(jsonrpc.error_response(rid, ConnectionClosed(message)))

    def _note_cancellation(self, value: Any) -> None:
        """Mark a still-queued request as cancelled; a running one is the connection's job."""
        if type(value) is not dict or value.get("method") != "notifications/cancelled" or "id" in value:
            return
        params = value.get("params")
        rid = params.get("requestId") if type(params) is dict else None
        if jsonrpc.is_valid_id(rid):
            with self._queued_lock:
                if rid in self._queued:
                    self._queued[rid] = True
                waiting = self._waiting.pop(rid, None)
                if waiting is not None:
                    self._released.add(waiting[0])
            if waiting is not None:  # it never started: no longer in flight
                log.debug("request %r cancelled before it started", rid)
                self._admission.release(self._key, waiting[0])
                self._admission.observe(self._name, waiting[1], None, 0.0, self.conn.session_id)

    @staticmethod
    def _goes_to_worker(value: Any) -> bool:
        if type(value) is list:
            return True
        return (type(value) is dict and "method" in value and "id" in value
                and value.get("method") != "initialize")

    def _run(self, value: Any, ticket: int | None) -> None:
        """Run one message; ``ticket`` is its admission (None: not a request)."""
        rid = value.get("id") if type(value) is dict and "method" in value else None
        tracked = jsonrpc.is_valid_id(rid)
        started = time.perf_counter()
        reply = None
        if tracked and ticket is not None:
            with self._queued_lock:
                if ticket in self._released:  # cancelled and released before it started
                    self._released.discard(ticket)
                    if self._queued.get(rid):
                        del self._queued[rid]
                    return
                if self._waiting.get(rid, (None,))[0] == ticket:
                    del self._waiting[rid]
        try:
            if self.closed and ticket is not None:  # queued when the connection ended
                return
            if tracked:
                with self._queued_lock:
                    cancelled = self._queued.get(rid, False)
                if cancelled:
                    log.debug("request %r cancelled before it started", rid)
                    return
            try:
                reply = self.conn.receive(value, self.send)
            except Exception:  # receive maps errors itself; this is a bug, keep serving
                log.exception("unexpected failure while handling a message")
            if tracked:
                with self._queued_lock:
                    if self._queued.get(rid, False):  # cancelled while it ran
                        reply = None
            if reply is not None and not self.closed:
                self.send(reply)
        finally:
            if ticket is not None:  # after the write: a reply the client does not read still counts
                self._forget(rid if tracked else None, ticket, value, reply, started)

    def _forget(self, rid: Any, ticket: int, value: Any, reply: Any, started: float) -> None:
        """An admitted request is over: drop its queue entry, release it, record it."""
        if rid is not None:
            with self._queued_lock:
                self._queued.pop(rid, None)
        self._admission.release(self._key, ticket)
        self._admission.observe(self._name, value, reply, time.perf_counter() - started,
                                self.conn.session_id)

    def drain(self, timeout: float) -> bool:
        """Take no more work and let queued and running requests finish and answer, for at
        most ``timeout`` seconds (the peer closed its side but may still read ours: stdio EOF).
        True if everything finished."""
        pool = self._pool
        if pool is None:  # (a host runs the work: it is not this stream's to wait for)
            return self.conn.inflight_count() == 0
        done = threading.Event()

        def wait_all() -> None:
            pool.shutdown(wait=True)
            done.set()

        threading.Thread(target=wait_all, name="mcpsync-stream-drain", daemon=True).start()
        finished = done.wait(timeout)
        # What was posted meanwhile found the workers shut down: written here, unless a
        # writer (which empties the outbox after its own message) holds the lock.
        if self.write_lock.acquire(blocking=False):
            try:
                self._flush_locked()
            finally:
                self.write_lock.release()
        return finished

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel in-flight work and join the workers (bounded by ``timeout`` for calls that
        ignore cancellation; those threads finish on their own and their replies are dropped)."""
        if self.closed:
            return
        self.closed = True
        self.conn.close()
        pool = self._pool
        if pool is None:  # queued work finds the stream closed and only releases itself
            return
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = threading.Event()

        def join_workers() -> None:
            pool.shutdown(wait=True)
            deadline.set()

        joiner = threading.Thread(target=join_workers, name="mcpsync-stream-closer", daemon=True)
        joiner.start()
        if not deadline.wait(timeout):
            log.warning("%d call(s) still running after close; their replies are dropped",
                        self.conn.inflight_count())
