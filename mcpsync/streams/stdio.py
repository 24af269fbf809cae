"""The stdio transport: newline-delimited JSON-RPC on stdin/stdout.

The calling thread is the reader. stdout carries protocol messages only, one per line,
written under the session's single write lock; logs go to stderr. EOF on stdin ends the
session: its subscriptions/listen streams end with their result, requests already read get
``EOF_DRAIN_S`` to answer, then the rest are cancelled and the stream closed (which waits
a bounded time for the workers; one running a call that ignores cancellation is joined by
the interpreter at exit).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import BinaryIO, Iterator

from ..errors import InvalidRequest
from ..protocol import jsonrpc
from ..server import Server
from .stream import MessageStream

log = logging.getLogger("mcpsync.stdio")

MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer line is answered with a parse error and skipped
EOF_DRAIN_S = 5.0  # after EOF, how long requests already read may still run and answer


def serve_stdio(server: Server, stdin: BinaryIO | None = None,
                stdout: BinaryIO | None = None) -> None:
    """Serve ``server`` on stdin/stdout until stdin closes. On the process's own stdout, the
    protocol takes the descriptor for itself: ``print()`` in a tool, C extensions and child
    processes that write to standard output reach stderr instead of corrupting the stream."""
    if stdout is None:
        with _protocol_stdout() as out:
            _serve(server, stdin if stdin is not None else sys.stdin.buffer, out)
    else:
        _serve(server, stdin if stdin is not None else sys.stdin.buffer, stdout)


@contextlib.contextmanager
def _protocol_stdout() -> Iterator[BinaryIO]:
    """A private duplicate of descriptor 1 for protocol messages, while descriptor 1 itself
    (and ``sys.stdout``) point at stderr; both are put back afterwards."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    previous = sys.stdout
    sys.stdout = sys.stderr
    try:
        with os.fdopen(os.dup(saved), "wb") as out:
            yield out
    finally:
        sys.stdout = previous
        os.dup2(saved, 1)
        os.close(saved)


def _serve(server: Server, inp: BinaryIO, out: BinaryIO) -> None:
    def write(data: bytes) -> None:
        out.write(data + b"\n")
        out.flush()

    session = MessageStream(server, write, name="stdio")
    eof = False
    try:
        while True:
            line = inp.readline(MAX_LINE_BYTES + 1)
            if not line:
                eof = True
                break
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                # Skip the rest of the oversized line, then answer once.
                while True:
                    rest = inp.readline(MAX_LINE_BYTES)
                    if not rest or rest.endswith(b"\n"):
                        break
                session.send(jsonrpc.error_response(None, InvalidRequest(
                    f"Invalid Request: message larger than {MAX_LINE_BYTES} bytes")))
                continue
            line = line.strip()
            if line:
                session.feed(line)
    except KeyboardInterrupt:
        pass
    finally:
        if eof:  # `printf requests | mcpsync --stdio`: answer what was asked before leaving,
            server.end_listeners(session.conn)  # ending the listen streams, which never end
            session.drain(EOF_DRAIN_S)
        session.close()
        server.close()  # tasks end with the process's only client
