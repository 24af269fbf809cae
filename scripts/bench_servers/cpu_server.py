"""A server whose tool costs a set amount of CPU, for bench.py's ``scale-cpu`` scenario:

    python -m mcpsync serve scripts/bench_servers/cpu_server.py [options]

``burn(us)`` spins in Python until its own thread has used ``us`` microseconds of CPU
(``time.thread_time``), holding the GIL as a CPU-bound tool does; the reply carries the
request's ``tag`` back so the load generator can check it.
"""
from __future__ import annotations

import time

from mcpsync import Server

server = Server("bench-cpu", "1.0.0")

MAX_BURN_US = 100_000   # one call burns at most 100 ms


@server.tool()
def burn(us: int, tag: str) -> str:
    """Use ``us`` microseconds of CPU (at most 100,000), then answer ``tag``."""
    end = time.thread_time() + min(max(us, 0), MAX_BURN_US) / 1e6
    while time.thread_time() < end:
        pass
    return tag
