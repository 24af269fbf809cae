#!/usr/bin/env python3
"""``python -m mcpsync`` (the bundled example server, threaded front end) with the session
store's tunables exposed, for the benchmark's memory scenario.

    python scripts/bench_servers/mcpsync_server.py [--port 0] [--session-ttl S]
        [--reap-interval S] [--max-sessions N]

Prints ``READY http://127.0.0.1:PORT/mcp`` on stdout once listening; serves until SIGTERM/SIGINT.
``/metrics`` reports ``mcpsync_sessions``, which the benchmark reads to see expiry finish.
"""
from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the checkout's mcpsync

from mcpsync.service import Service
from mcpsync.examples.everything import server
from mcpsync.sessions import MAX_SESSIONS, SESSION_IDLE_TTL_S, SESSION_REAP_INTERVAL_S, SessionStore
from mcpsync.frontend import make_server
from mcpsync.http.app import LOOPBACK_HOSTS, HttpApp

HOST = "127.0.0.1"
SHUTDOWN_GRACE_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--session-ttl", type=float, default=SESSION_IDLE_TTL_S, help="idle TTL, s")
    parser.add_argument("--reap-interval", type=float, default=SESSION_REAP_INTERVAL_S, help="s")
    parser.add_argument("--max-sessions", type=int, default=MAX_SESSIONS)
    args = parser.parse_args(argv)
    store = SessionStore(max_sessions=args.max_sessions, max_sessions_per_owner=None,
                         idle_ttl_s=args.session_ttl,
                         reap_interval_s=args.reap_interval)
    wsgi = HttpApp(Service(server, store=store).start(), allowed_hosts=LOOPBACK_HOSTS)
    front = make_server(wsgi, HOST, args.port)
    stop = threading.Event()  # set by SIGTERM/SIGINT; the main thread waits on it

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    front.start()
    print(f"READY http://{HOST}:{front.port}{wsgi.path}", flush=True)
    while not stop.wait(1.0):
        pass
    wsgi.end_streams()
    front.shutdown(SHUTDOWN_GRACE_S)
    wsgi.service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
