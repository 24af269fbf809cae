"""``Limits``: every bound of the HTTP front end in one frozen object.

The parser (``h1``), the dispatcher, the worker pool and the WSGI bridge all read their
bounds from the one ``Limits`` the server was built with, so that what a peer may cost is
written down in one place. Defaults are the UPPER_CASE constants below; a timeout of
``None`` means "wait forever" (tests only).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# --- parsing (h1) ---------------------------------------------------------------------------
MAX_REQUEST_LINE_BYTES = 8190    # longer request line: 414
MAX_HEADER_LINE_BYTES = 8190     # one header (or trailer) line; longer: 431
MAX_HEAD_BYTES = 65536           # header section, request line excluded; larger: 431
MAX_HEADERS = 100                # header lines (and, separately, trailer lines); more: 431
MAX_CHUNK_LINE_BYTES = 1024      # a chunk-size line with its extensions; longer: 400

# --- connections (dispatcher) ---------------------------------------------------------------
MAX_CONNECTIONS = 10_000         # open connections; at the cap the oldest idle one is closed
MAX_CONNECTIONS_PER_ADDRESS = 4_096  # the same per client IP address (a proxy counts as one)
HEAD_TIMEOUT_S = 10.0            # from a request's first byte to its whole head: else 408
BODY_GRACE_S = 10.0              # a body may lag behind MIN_BODY_RATE by this much: else 408
MIN_BODY_RATE_BPS = 1024         # bytes per second a request body must average past the grace
KEEPALIVE_TIMEOUT_S = 75.0       # idle time allowed between two requests on a connection
WRITE_TIMEOUT_S = 60.0           # max time the peer may take no response bytes at all
BODY_BUFFER_BYTES = 1 << 20      # a body up to this size is read by the dispatcher, whole
WRITE_BUFFER_BYTES = 1 << 20     # unsent response bytes held for a slow reader before it must
                                 # drain (the reader's next request waits until they are sent)
DRAIN_LIMIT_BYTES = 256 * 1024   # unread request body discarded to keep a connection alive
LINGER_TIMEOUT_S = 5.0           # after an error response, time spent discarding the input
LINGER_MAX_BYTES = 16 << 20      # ... and at most this many bytes of it (a refused large
                                 # body: the client that is still sending reads our 413)
LISTEN_BACKLOG = 1024

# --- workers (pool) -------------------------------------------------------------------------
WORKERS = 8                      # requests running Python code at once (the pool's slots): 4
                                 # queue a 20 ms tool at 64 sessions (65 % of ideal), 8 do not
MAX_THREADS = 1024               # worker threads in all, including those parked in user code,
                                 # streaming a response or holding a WebSocket
QUEUE_TIMEOUT_S = 10.0           # a request that found no worker for this long: 503
NEXT_REQUEST_WAIT_S = 0.002      # a worker nobody else needs waits this long on the connection
                                 # it just answered for the next request (0: never), instead
                                 # of handing it back to the dispatcher at once


@dataclass(frozen=True)
class Limits:
    """The front end's bounds (see the module constants for units and meaning)."""

    max_request_line: int = MAX_REQUEST_LINE_BYTES
    max_header_line: int = MAX_HEADER_LINE_BYTES
    max_head: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS
    max_chunk_line: int = MAX_CHUNK_LINE_BYTES
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    head_timeout: float | None = HEAD_TIMEOUT_S
    body_grace: float | None = BODY_GRACE_S
    min_body_rate: int = MIN_BODY_RATE_BPS
    keepalive_timeout: float | None = KEEPALIVE_TIMEOUT_S
    write_timeout: float | None = WRITE_TIMEOUT_S
    body_buffer: int = BODY_BUFFER_BYTES
    write_buffer: int = WRITE_BUFFER_BYTES
    drain_limit: int = DRAIN_LIMIT_BYTES
    linger_timeout: float = LINGER_TIMEOUT_S
    linger_max: int = LINGER_MAX_BYTES
    backlog: int = LISTEN_BACKLOG
    workers: int = WORKERS
    max_threads: int = MAX_THREADS
    queue_timeout: float | None = QUEUE_TIMEOUT_S
    next_request_wait: float = NEXT_REQUEST_WAIT_S

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                if f.name not in _OPTIONAL:
                    raise ValueError(f"{f.name} may not be None")
            elif value <= 0 and not (f.name in _ZERO_OK and value == 0):
                raise ValueError(f"{f.name} must be positive, not {value!r}")
        if self.max_threads < self.workers:
            raise ValueError("max_threads must be at least workers")
        if self.max_connections_per_address > self.max_connections:
            object.__setattr__(self, "max_connections_per_address", self.max_connections)

    def replace(self, **changes: object) -> Limits:
        """A copy with ``changes`` applied (validated like a new one)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_ZERO_OK = frozenset(("drain_limit", "next_request_wait"))
_OPTIONAL = frozenset(("head_timeout", "body_grace", "keepalive_timeout", "write_timeout",
                       "queue_timeout"))
