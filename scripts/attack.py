#!/usr/bin/env python3
"""Attack your own MCP server (mcpsync or any other) and print one verdict per attack.

    python scripts/attack.py --url http://127.0.0.1:8000/mcp [--token T] [--token2 T2]
                             [--only NAME ...] [--json] [--list] [scale flags]

Each attack reproduces one of the security and limit findings of mcpsync's issue 13 and
judges the answer: ``PASS`` (the server held), ``FAIL`` (it did not; the line says what was
measured) or ``SKIP`` (the attack does not apply, e.g. no token configured or no such
tool). The exit status is 0 when nothing failed, 1 otherwise, 2 for a usage error.

Bounded on purpose: every attack has a deadline (``--deadline``, the session flood twice
that), opens a bounded number of connections and bytes (the scale flags), closes its
sockets and DELETEs the sessions it opened. With the defaults a run takes about a minute
against mcpsync. Only loopback targets are accepted unless ``--i-own-this-server``: these
are denial-of-service attacks.

``--token`` is a bearer token the server accepts; ``--token2`` one of a second principal
(for ``session-quota``). Some attacks need tools of the bundled example server
(``echo``, ``add``, ``sleep_ms``) and skip without them. Only the standard library is used.

Everything is importable: ``run(url, names, options, token=...)`` returns the verdicts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _attacks_input  # noqa: E402,F401  (registers the malformed-input attacks)
import _attacks_limits  # noqa: E402,F401  (registers the attacks on limits)
from _attacks import ATTACKS, FAIL, Options, Verdict, attack_names, run_attack  # noqa: E402
from _loadclient import is_loopback  # noqa: E402  (stdlib only until a WsSession is made)
from _wire import Target  # noqa: E402

EXIT_USAGE = 2


def check_target(url: str, *, owned: bool) -> Target:
    """The target of ``url``; ValueError for a bad URL or a remote host without ``owned``."""
    target = Target.from_url(url)
    if not owned and not is_loopback(target.host):
        raise ValueError(f"{target.host} is not a loopback address; pass --i-own-this-server "
                         "to attack a server you run elsewhere")
    return target


def run(url: str, names: Sequence[str] | None = None, options: Options | None = None, *,
        token: str | None = None, token2: str | None = None, owned: bool = False,
        ws_path: str = "/ws", sse_path: str = "/sse", messages_path: str = "/messages",
        on_verdict: Any = None) -> list[Verdict]:
    """Run the named attacks (all by default) in order; ``on_verdict(v)`` sees each one."""
    target = check_target(url, owned=owned)
    target.token, target.token2 = token, token2
    target.ws_path, target.sse_path, target.messages_path = ws_path, sse_path, messages_path
    unknown = [n for n in names or () if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s): {', '.join(unknown)}")
    chosen = [n for n in attack_names() if not names or n in names]
    cache: dict[str, Any] = {}
    verdicts = []
    for name in chosen:
        verdict = run_attack(name, target, options or Options(), cache)
        verdicts.append(verdict)
        if on_verdict is not None:
            on_verdict(verdict)
    return verdicts


def build_parser() -> argparse.ArgumentParser:
    d = Options()
    p = argparse.ArgumentParser(prog="attack.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000/mcp", help="the MCP endpoint")
    p.add_argument("--token", help="a bearer token the server accepts")
    p.add_argument("--token2", help="a bearer token of a second principal (session-quota)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these attacks")
    p.add_argument("--list", action="store_true", help="list the attacks and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per verdict")
    p.add_argument("--i-own-this-server", dest="owned", action="store_true",
                   help="allow a target that is not on a loopback address")
    p.add_argument("--ws-path", default="/ws")
    p.add_argument("--sse-path", default="/sse")
    p.add_argument("--messages-path", default="/messages")
    g = p.add_argument_group("scale")
    g.add_argument("--deadline", type=float, default=d.deadline_s, help="seconds per attack")
    g.add_argument("--slow-ms", type=int, default=d.slow_ms, help="sleep_ms duration in the in-flight attacks")
    g.add_argument("--per-session-limit", type=int, default=d.per_session_limit)
    g.add_argument("--total-limit", type=int, default=d.total_limit)
    g.add_argument("--extra-calls", type=int, default=d.extra_calls, help="calls sent past a limit")
    g.add_argument("--slow-reader-calls", type=int, default=d.slow_reader_calls)
    g.add_argument("--slow-reader-bytes", type=int, default=d.slow_reader_bytes)
    g.add_argument("--metrics-requests", type=int, default=d.metrics_requests)
    g.add_argument("--sessions", type=int, default=d.sessions, help="sessions the flood tries to open")
    g.add_argument("--body-limit", type=int, default=d.body_limit, help="the server's body limit in bytes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name in attack_names():
            spec = ATTACKS[name]
            print(f"{name:28} {'finding ' + str(spec.finding) if spec.finding else '':11} {spec.summary}")
        return 0
    opts = Options(deadline_s=args.deadline, slow_ms=args.slow_ms,
                   per_session_limit=args.per_session_limit, total_limit=args.total_limit,
                   extra_calls=args.extra_calls, slow_reader_calls=args.slow_reader_calls,
                   slow_reader_bytes=args.slow_reader_bytes, metrics_requests=args.metrics_requests,
                   sessions=args.sessions, body_limit=args.body_limit)

    def show(v: Verdict) -> None:
        if args.json:
            print(json.dumps({"name": v.name, "verdict": v.status, "reason": v.reason,
                              "finding": v.finding, "seconds": round(v.elapsed_s, 2), **v.details},
                             ensure_ascii=False),
                  flush=True)
        else:
            print(v.line(), flush=True)

    try:
        verdicts = run(args.url, args.only, opts, token=args.token, token2=args.token2,
                       owned=args.owned, ws_path=args.ws_path, sse_path=args.sse_path,
                       messages_path=args.messages_path, on_verdict=show)
    except ValueError as exc:
        print(f"attack.py: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 1 if any(v.status == FAIL for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
