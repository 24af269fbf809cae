"""Client round trips for ``scripts/bench.py`` (scenarios ``client-stdio``, ``client-http``,
``client-http-16``): ``mcpsync.Client`` against the official Python SDK's client
(``mcp.Client``, asyncio, PyPI ``mcp``), both calling ``echo`` on the same mcpsync server.

* ``client-stdio``: one client that starts ``python -m mcpsync --stdio`` itself, one call
  at a time.
* ``client-http``: one client, one call at a time, over Streamable HTTP to ``python -m
  mcpsync`` (bench.py starts it).
* ``client-http-16``: 16 calls in flight on one client: 16 threads sharing one
  ``mcpsync.Client``, 16 asyncio tasks on one ``mcp.Client``.

Each runs in both eras: ``2026-07-28`` (mcpsync ``revision="auto"``, the SDK's
``mode="auto"``: both land in 2026-07-28 against mcpsync) and ``2025-11-25`` (a session:
``revision="2025-11-25"``, ``mode="legacy"``). Rows: server ``mcpsync`` / ``py-sdk`` (the
client), driver = the era, so bench.py's ratio column is mcpsync ÷ SDK. ``cpu_us`` is the
CPU this process (the client) spent per call. Every echo is checked (unique texts); the
server's own CPU is not counted.
"""
from __future__ import annotations

import itertools
import pathlib
import sys
import time
from typing import Any, Callable

from _loadclient import Broken, LoadResult, Stats, closed_loop

REPO = pathlib.Path(__file__).resolve().parent.parent

ERAS = {"2026-07": ("auto", "auto"), "2025-11": ("2025-11-25", "legacy")}   # era -> (ours, SDK mode)
CONCURRENT = 16
SCENARIOS = ("client-stdio", "client-http", "client-http-16")

MakeMeasurement = Callable[..., Any]


def stdio_argv() -> list[str]:
    return [sys.executable, "-m", "mcpsync", "--stdio", "--log-level", "WARNING"]


def has_sdk() -> bool:
    try:
        import mcp  # noqa: F401
    except ImportError:
        return False
    return True


def _measurement(make: MakeMeasurement, run: int, scenario: str, who: str, era: str, load: LoadResult,
                 cpu_s: float) -> Any:
    st = load.stats
    m = make(run, scenario, who, era, load.rate, load.percentile_ms(50), load.percentile_ms(99),
             st.ok, st.broken + st.failed, st.samples[:3])
    if st.ok_total:
        m.extra["cpu_us"] = cpu_s / st.ok_total * 1e6
    return m


# ---- mcpsync.Client -------------------------------------------------------------------------

def ours(target: Any, revision: str, workers: int, duration_s: float, warmup_s: float) -> tuple[LoadResult, float]:
    from mcpsync import Client

    kwargs: dict[str, Any] = {"revision": revision}
    if isinstance(target, list):
        kwargs.update(env={"PYTHONPATH": str(REPO)}, cwd=str(REPO))
    with Client(target, **kwargs) as client:
        def step(c: Any, seq: int) -> None:
            text = f"c-{seq}"
            got = c.call_tool("echo", {"text": text}).text
            if got != text:
                raise Broken(f"echo gave {got!r} for {text!r}")
        cpu0 = time.process_time()
        load = closed_loop(workers, lambda i: client, step, duration_s=duration_s, warmup_s=warmup_s,
                           name="bench-client")
        return load, time.process_time() - cpu0


# ---- the official Python SDK's client ---------------------------------------------------------

def sdk(target: Any, mode: str, workers: int, duration_s: float, warmup_s: float) -> tuple[LoadResult, float]:
    import anyio
    from mcp import Client as SdkClient, StdioServerParameters

    server: Any = target
    if isinstance(target, list):
        server = StdioServerParameters(command=target[0], args=target[1:], cwd=str(REPO),
                                       env={"PYTHONPATH": str(REPO)})
    stats = Stats()
    window: list[float] = []
    seqs = itertools.count()

    async def main() -> None:
        async with SdkClient(server, mode=mode) as client:  # type: ignore[arg-type]
            start = time.perf_counter()
            measure, end = start + warmup_s, start + warmup_s + duration_s

            async def worker() -> None:
                while True:
                    t0 = time.perf_counter()
                    if t0 >= end:
                        return
                    text = f"s-{next(seqs)}"
                    try:
                        result = await client.call_tool("echo", {"text": text})
                        got = "".join(getattr(b, "text", "") for b in result.content)
                        if got != text:
                            raise Broken(f"echo gave {got!r} for {text!r}")
                    except Exception as exc:  # counted, like closed_loop does
                        stats.note("broken" if isinstance(exc, Broken) else "failed", repr(exc)[:200])
                        continue
                    t1 = time.perf_counter()
                    stats.ok_total += 1
                    if t1 >= measure and t1 <= end:
                        stats.ok += 1
                        stats.latencies.append(t1 - t0)
            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
            window.append(min(time.perf_counter(), end) - measure)

    cpu0 = time.process_time()
    anyio.run(main)
    return LoadResult("bench-sdk-client", workers, stats, window[0] if window else 0.0), time.process_time() - cpu0


# ---- the scenarios ---------------------------------------------------------------------------

def bench_clients(run: int, scenarios: list[str], http_url: str | None, make: MakeMeasurement,
                  duration_s: float, warmup_s: float, log: Callable[[str], None]) -> list[Any]:
    """Every (scenario, era, client) of ``scenarios``; ``http_url`` is the running mcpsync
    server's ``/mcp`` (None: the HTTP scenarios are left out)."""
    out = []
    with_sdk = has_sdk()
    for scenario in scenarios:
        if scenario != "client-stdio" and http_url is None:
            continue
        target: Any = stdio_argv() if scenario == "client-stdio" else http_url
        workers = CONCURRENT if scenario.endswith("-16") else 1
        for era, (revision, mode) in ERAS.items():
            log(f"run {run}: {scenario} {era}")
            load, cpu = ours(target, revision, workers, duration_s, warmup_s)
            out.append(_measurement(make, run, scenario, "mcpsync", era, load, cpu))
            if with_sdk:
                load, cpu = sdk(target, mode, workers, duration_s, warmup_s)
                out.append(_measurement(make, run, scenario, "py-sdk", era, load, cpu))
    return out
