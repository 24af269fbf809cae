"""Run a WSGI app on a real socket (127.0.0.1, ephemeral port) for the duration of a test,
on mcpsync's own threaded front end (the one `python -m mcpsync` uses)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from mcpsync.frontend import make_server


@contextlib.contextmanager
def serving(app: Any, kind: str = "threaded") -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) of ``app`` served on its own threads.
    On exit, long-lived SSE and listen streams of an mcpsync app are ended first, then the
    front end shuts down; it must finish cleanly."""
    srv = make_server(app, "127.0.0.1", 0, kind=kind).start()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        end_streams = getattr(app, "end_streams", None)
        if end_streams is not None:
            end_streams()
        clean = srv.shutdown(10.0)
    assert clean, "the front end did not shut down cleanly"
