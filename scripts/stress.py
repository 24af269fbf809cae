#!/usr/bin/env python3
"""Stress any Streamable HTTP MCP server (mcpsync or not) from a pool of threads, checking
every reply.

    python scripts/stress.py [URL] [SCENARIO ...] [--clients N] [--requests N] [--deadline S]
                             [--ws-url URL] [--allow-remote]

URL defaults to http://127.0.0.1:8000/mcp; SCENARIO to ``all``. The server needs an
``echo(text)`` tool; ``mixed`` also uses ``add``, ``sleep_ms`` and ``ping`` when listed.

Scenarios (a *step* is what ``--requests`` counts):

  init-storm  N clients initialize at once, each on a new connection; a step is one session
              opened and used once (echo). Every session id must be new; the sessions are
              deleted at the end.
  parallel    N connections share one session and call echo in parallel; a step is one call.
  churn       N clients loop initialize + initialized + echo + DELETE, and check the deleted
              session is gone (404); a step is one session lifetime.
  mixed       N clients, a session each, cycle through echo, add, sleep_ms, ping, tools/list.
  ws-storm    N clients loop: open a WebSocket (default ws://HOST:PORT/ws), initialize, four
              pipelined echo calls, close. Skipped unless the server has a /ws endpoint
              (``--ws-url`` or the ``ws-storm`` scenario named explicitly).
  idle-flood  ``--flood`` keep-alive connections that made one request each sit idle while
              N new clients initialize and call echo (as in ``parallel``, a session each).
              The flood must be served (no refusal) and so must every client.
  slowloris   ``--flood`` connections trickle a request head a byte a second meanwhile.

Every echo text is unique (run token, scenario, client, step), so an answer that went to the
wrong request or session is caught, as is a reply with the wrong JSON-RPC id. Each scenario
stops at ``--requests`` steps or ``--deadline`` seconds, whichever comes first. Only loopback
hosts are accepted unless ``--allow-remote``. One summary line per scenario; the exit status
is 1 if any invariant broke or any request failed, 2 for a usage error, else 0.

Everything here is importable: ``run_scenario(url, name, clients, requests, deadline_s)``
returns a ``Result`` (the test suite runs a small version of each scenario).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _loadclient import (Broken, Failed, HttpSession, LoadResult, WsSession,  # noqa: E402
                         check_echo, classify, closed_loop, is_loopback, tool_text, ws_url_for)
import _floods  # noqa: E402

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
SCENARIOS = ("init-storm", "parallel", "churn", "mixed", "ws-storm", "idle-flood", "slowloris")
DEFAULT_CLIENTS = 16
DEFAULT_REQUESTS = 2000
DEFAULT_DEADLINE_S = 30.0
DEFAULT_FLOOD = 200          # connections held by idle-flood and slowloris
WS_PIPELINE = 4              # echo calls in flight per WebSocket in ws-storm
MIXED_SLEEP_MS = 2           # the blocking call of the mixed scenario
TEARDOWN_BUDGET_S = 10.0     # init-storm: time allowed for deleting its sessions afterwards


@dataclass
class Result:
    """The outcome of one scenario run."""

    scenario: str
    clients: int
    requested: int
    done: int                   # steps completed correctly
    broken: int                 # invariants broken (wrong answers, ids, duplicate sessions)
    failed: int                 # steps that did not complete (transport/HTTP/JSON-RPC errors)
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    samples: list[str] = field(default_factory=list)
    skipped: str = ""           # why the scenario did not run ("" if it did)

    @property
    def ok(self) -> bool:
        return self.broken == 0 and self.failed == 0

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"stress {self.scenario}: skipped ({self.skipped})"
        verdict = "OK" if self.ok else "FAILED"
        stopped = "" if self.done + self.broken + self.failed >= self.requested else ", stopped at the deadline"
        return (f"stress {self.scenario}: clients={self.clients} steps={self.done}/{self.requested} "
                f"broken={self.broken} failed={self.failed} in {self.elapsed_s:.2f} s "
                f"({self.rate:.0f}/s{stopped}) p50={self.p50_ms:.1f}ms p99={self.p99_ms:.1f}ms: {verdict}")


def _result(name: str, clients: int, requests: int, load: LoadResult,
            extra_broken: tuple[str, ...] = ()) -> Result:
    st = load.stats
    samples = list(extra_broken) + st.samples
    return Result(name, clients, requests, st.ok_total, st.broken + len(extra_broken), st.failed,
                  load.window_s, load.percentile_ms(50), load.percentile_ms(99), samples[:10])


class _Tag:
    """Unique echo texts: run token, scenario, client, step."""

    def __init__(self, scenario: str) -> None:
        self.prefix = f"{secrets.token_hex(4)}:{scenario}"

    def __call__(self, client: int, seq: int) -> str:
        return f"{self.prefix}:{client}:{seq}"


def _check_new_session(session: HttpSession) -> str:
    if not session.session_id:
        raise Broken("initialize: no Mcp-Session-Id (a stateless server cannot be stress-tested for sessions)")
    return session.session_id


# ---- scenarios ------------------------------------------------------------------------------

def init_storm(url: str, clients: int, requests: int, deadline_s: float) -> Result:
    tag = _Tag("init-storm")
    # Per worker, written by it alone: (session id, protocol version) of the sessions it opened.
    opened: list[list[tuple[str, str | None]]] = [[] for _ in range(clients)]

    class Client:
        def __init__(self, index: int) -> None:
            self.index = index
            self.conn = HttpSession(url)  # for the DELETEs at the end

    def step(c: Client, seq: int) -> None:
        with HttpSession(url) as s:  # a new connection per session: a connect storm too
            s.initialize()
            opened[c.index].append((_check_new_session(s), s.version))
            s.echo(tag(c.index, seq))

    stop_deleting = time.monotonic() + deadline_s + TEARDOWN_BUDGET_S

    def teardown(c: Client) -> None:
        try:
            for sid, version in opened[c.index]:
                if time.monotonic() > stop_deleting:
                    break  # the rest expire on their own
                c.conn.session_id, c.conn.version = sid, version
                c.conn.delete()
        finally:
            c.conn.close()

    load = closed_loop(clients, Client, step, duration_s=deadline_s, max_steps=requests,
                       teardown=teardown, name="stress-init")
    ids = [sid for pairs in opened for sid, _ in pairs]
    dupes = len(ids) - len(set(ids))
    extra = (f"broken: {dupes} session id(s) handed out twice",) if dupes else ()
    return _result("init-storm", clients, requests, load, extra)


def parallel(url: str, clients: int, requests: int, deadline_s: float) -> Result:
    tag = _Tag("parallel")
    owner = HttpSession(url)
    try:
        owner.initialize()
        sid = _check_new_session(owner)

        def setup(index: int) -> tuple[int, HttpSession]:
            return index, HttpSession(url, session_id=sid, version=owner.version)

        def step(c: tuple[int, HttpSession], seq: int) -> None:
            c[1].echo(tag(c[0], seq))

        load = closed_loop(clients, setup, step, duration_s=deadline_s, max_steps=requests,
                           teardown=lambda c: c[1].close(), name="stress-parallel")
        owner.delete()
    finally:
        owner.close()
    return _result("parallel", clients, requests, load)


def churn(url: str, clients: int, requests: int, deadline_s: float) -> Result:
    tag = _Tag("churn")

    def step(c: tuple[int, HttpSession], seq: int) -> None:
        index, s = c
        s.initialize()
        _check_new_session(s)
        s.echo(tag(index, seq))
        if s.delete() == 405:
            return  # the server does not let clients end sessions; it may keep them
        try:
            s.echo(tag(index, seq) + ":after-delete")
        except Failed as exc:
            if "HTTP 404" not in str(exc):
                raise
        else:
            raise Broken(f"session {s.session_id} still answers after DELETE")
        finally:
            s.session_id = s.version = None

    load = closed_loop(clients, lambda i: (i, HttpSession(url)), step, duration_s=deadline_s,
                       max_steps=requests, teardown=lambda c: c[1].close(), name="stress-churn")
    return _result("churn", clients, requests, load)


def _add_sum(result: Any) -> float:
    """``add``'s answer, as structured content {"sum": x} or as a number in the text."""
    structured = result.get("structuredContent") if isinstance(result, dict) else None
    if isinstance(structured, dict):
        value = structured.get("sum", structured.get("result"))
        if isinstance(value, (int, float)):
            return float(value)
    text = tool_text(result, "add")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Broken(f"add: not a number: {text!r:.80}") from exc
    if isinstance(value, dict):
        value = value.get("sum")
    if not isinstance(value, (int, float)):
        raise Broken(f"add: not a number: {text!r:.80}")
    return float(value)


def mixed(url: str, clients: int, requests: int, deadline_s: float) -> Result:
    tag = _Tag("mixed")
    with HttpSession(url) as probe:
        probe.initialize()
        tools = {t.get("name") for t in probe.request("tools/list").get("tools", [])}
        probe.delete()
    if "echo" not in tools:
        raise Failed("the server has no echo tool")

    def do_echo(s: HttpSession, index: int, seq: int) -> None:
        s.echo(tag(index, seq))

    def do_add(s: HttpSession, index: int, seq: int) -> None:
        got = _add_sum(s.call_tool("add", {"a": seq, "b": 0.5}))
        if got != seq + 0.5:
            raise Broken(f"add({seq}, 0.5) = {got}")

    def do_sleep(s: HttpSession, index: int, seq: int) -> None:
        tool_text(s.call_tool("sleep_ms", {"ms": MIXED_SLEEP_MS}), "sleep_ms")

    def do_ping(s: HttpSession, index: int, seq: int) -> None:
        if s.request("ping") != {}:
            raise Broken("ping: result is not {}")

    def do_list(s: HttpSession, index: int, seq: int) -> None:
        names = {t.get("name") for t in s.request("tools/list").get("tools", [])}
        if "echo" not in names:
            raise Broken("tools/list: echo is missing")

    mix: list[Callable[[HttpSession, int, int], None]] = [do_echo, do_ping, do_list]
    if "add" in tools:
        mix.append(do_add)
    if "sleep_ms" in tools:
        mix.append(do_sleep)

    def setup(index: int) -> tuple[int, HttpSession]:
        s = HttpSession(url)
        s.initialize()
        _check_new_session(s)
        return index, s

    def step(c: tuple[int, HttpSession], seq: int) -> None:
        mix[seq % len(mix)](c[1], c[0], seq)

    def teardown(c: tuple[int, HttpSession]) -> None:
        try:
            c[1].delete()
        finally:
            c[1].close()

    load = closed_loop(clients, setup, step, duration_s=deadline_s, max_steps=requests,
                       teardown=teardown, name="stress-mixed")
    return _result("mixed", clients, requests, load)


def ws_storm(url: str, clients: int, requests: int, deadline_s: float) -> Result:
    tag = _Tag("ws-storm")

    def step(index: int, seq: int) -> None:
        with WsSession(url) as ws:
            ws.initialize()
            texts = [f"{tag(index, seq)}:{k}" for k in range(WS_PIPELINE)]
            results = ws.request_many("tools/call", [{"name": "echo", "arguments": {"text": t}}
                                                      for t in texts])
            for text, result in zip(texts, results):
                check_echo(result, text)

    load = closed_loop(clients, lambda i: i, step, duration_s=deadline_s, max_steps=requests,
                       name="stress-ws")
    return _result("ws-storm", clients, requests, load)


def _clients_during(url: str, name: str, clients: int, requests: int,
                    deadline_s: float) -> LoadResult:
    """N new clients, a session each, calling echo: what must keep working under a flood."""
    tag = _Tag(name)

    def setup(index: int) -> tuple[int, HttpSession]:
        session = HttpSession(url)
        session.initialize()
        return index, session

    def step(c: tuple[int, HttpSession], seq: int) -> None:
        c[1].echo(tag(c[0], seq))

    return closed_loop(clients, setup, step, duration_s=deadline_s, max_steps=requests,
                       teardown=lambda c: (c[1].delete(), c[1].close()), name=f"stress-{name}")


def idle_flood(url: str, clients: int, requests: int, deadline_s: float,
               flood: int = DEFAULT_FLOOD) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _floods.raise_nofile(flood + 1024)
    idle = _floods.open_idle(host, port, flood, parts.path or "/")
    try:
        load = _clients_during(url, "idle-flood", clients, requests, deadline_s)
        held = idle.still_open()
    finally:
        idle.close()
    refused = idle.failed + idle.statuses.get(503, 0)
    extra = (f"failed: {refused} of {flood} idle connections were refused",) if refused else ()
    result = _result("idle-flood", clients, requests, load)
    result.failed += len(extra)
    result.samples = [*extra, f"note: {held} of {flood} idle connections still open at the end",
                      *result.samples]
    return result


def slowloris(url: str, clients: int, requests: int, deadline_s: float,
              flood: int = DEFAULT_FLOOD) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _floods.raise_nofile(flood + 1024)
    slow = _floods.Slowloris(host, port, flood, interval_s=1.0, path=parts.path or "/")
    try:
        load = _clients_during(url, "slowloris", clients, requests, deadline_s)
        trickling = slow.open
    finally:
        slow.close()
    result = _result("slowloris", clients, requests, load)
    result.samples = [f"note: {trickling} trickling, {slow.cut} cut by the server, "
                      f"{slow.failed} not connected", *result.samples]
    return result


def run_scenario(url: str, name: str, clients: int = DEFAULT_CLIENTS, requests: int = DEFAULT_REQUESTS,
                 deadline_s: float = DEFAULT_DEADLINE_S, *, ws_url: str | None = None,
                 flood: int = DEFAULT_FLOOD) -> Result:
    """Run one scenario against the Streamable HTTP endpoint ``url`` (``ws-storm``: against
    ``ws_url``, default ws://HOST:PORT/ws). Blocks for about ``deadline_s`` at most, plus
    the request timeout and, for init-storm, the time its clean-up takes."""
    if clients < 1 or requests < 1 or deadline_s <= 0:
        raise ValueError("clients and requests must be at least 1, deadline_s positive")
    try:
        if name == "init-storm":
            return init_storm(url, clients, requests, deadline_s)
        if name == "parallel":
            return parallel(url, clients, requests, deadline_s)
        if name == "churn":
            return churn(url, clients, requests, deadline_s)
        if name == "mixed":
            return mixed(url, clients, requests, deadline_s)
        if name == "ws-storm":
            return ws_storm(ws_url or ws_url_for(url), clients, requests, deadline_s)
        if name == "idle-flood":
            return idle_flood(url, clients, requests, deadline_s, flood)
        if name == "slowloris":
            return slowloris(url, clients, requests, deadline_s, flood)
    except Exception as exc:  # the scenario could not even start
        kind, message = classify(exc, "setup: ")
        return Result(name, clients, requests, 0, int(kind == "broken"), int(kind == "failed"),
                      0.0, 0.0, 0.0, [f"{kind}: {message}"])
    raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")


def check_target(url: str, allow_remote: bool) -> None:
    """Refuse anything but http:// on a loopback host, unless ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        raise ValueError(f"{url}: only http:// (and ws:// for --ws-url) URLs are supported")
    host = parts.hostname or ""
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"{host!r} is not a loopback host; stress-testing another machine "
                         f"needs --allow-remote (and its owner's consent)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stress.py", description=__doc__.split("\n\n")[0],
                                     epilog="Scenarios: " + ", ".join(SCENARIOS) + ", all.")
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("scenarios", nargs="*", default=["all"], metavar="SCENARIO")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="steps per scenario")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, help="seconds per scenario")
    parser.add_argument("--ws-url", default=None, help="WebSocket endpoint for ws-storm")
    parser.add_argument("--flood", type=int, default=DEFAULT_FLOOD,
                        help=f"connections held by idle-flood and slowloris (default {DEFAULT_FLOOD})")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    args = parser.parse_args(argv)
    names = list(args.scenarios)
    if names == ["all"]:
        names = [n for n in SCENARIOS if n != "ws-storm" or args.ws_url]
    unknown = [n for n in names if n not in SCENARIOS]
    try:
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; expected {', '.join(SCENARIOS)} or all")
        if args.clients < 1 or args.requests < 1 or args.deadline <= 0 or args.flood < 0:
            raise ValueError("--clients and --requests must be at least 1, --deadline positive, "
                             "--flood not negative")
        check_target(args.url, args.allow_remote)
        if args.ws_url:
            check_target(args.ws_url, args.allow_remote)
    except ValueError as exc:
        print(f"stress.py: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for name in names:
        result = run_scenario(args.url, name, args.clients, args.requests, args.deadline,
                              ws_url=args.ws_url, flood=args.flood)
        print(result.summary(), flush=True)
        for sample in result.samples:
            print(f"  {sample}", file=sys.stderr)
        failures += not result.ok
    if len(names) > 1:
        print(f"stress: {len(names)} scenarios, " + (f"{failures} FAILED" if failures else "all OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    threading.current_thread().name = "stress-main"
    sys.exit(main())
