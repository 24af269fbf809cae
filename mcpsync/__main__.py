"""Command line: ``python -m mcpsync [serve TARGET | hub CONFIG.json] [--stdio] [--host H] [--port P]``.

The composition root: it parses argv, builds the server, picks the transport and maps
failures to exit codes (0 ok, 2 usage or configuration error, 1 runtime failure). It never
prints a traceback for a user error.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, NoReturn, Sequence

from ._version import __version__
from .auth import StaticTokenVerifier
from .errors import ConfigError
from .frontend.limits import (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, MAX_THREADS, WORKERS,
                              Limits)
from .server import Server
from .sessions import MAX_SESSIONS, MAX_SESSIONS_PER_OWNER, SESSION_IDLE_TTL_S
from .target import load_target
from .run import SHUTDOWN_GRACE_S, serve

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EXIT_USAGE = 2

DESCRIPTION = """\
Serve MCP (Model Context Protocol) servers written as plain Python functions, on threads.

  python -m mcpsync                     serve the bundled example server on http://127.0.0.1:8000/mcp
  python -m mcpsync --stdio             ... or over stdio (for desktop clients that spawn servers)
  python -m mcpsync serve TARGET        serve your server; TARGET is package.module:attr or path/to/file.py[:attr]
  python -m mcpsync hub CONFIG.json     aggregate the upstream servers of an mcpServers config
"""


class UsageError(Exception):
    """A user error the CLI reports in one line with exit status 2."""


def _add_serving_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    # Subcommand copies default to SUPPRESS so they only override the top-level value when given.
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--host", default=d(DEFAULT_HOST),
                   help=f"interface to bind (default {DEFAULT_HOST}; exposing beyond loopback is your call)")
    p.add_argument("--port", type=_port, default=d(DEFAULT_PORT), help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--stdio", action="store_true", default=d(False),
                   help="serve newline-delimited JSON-RPC on stdin/stdout instead of HTTP")
    p.add_argument("--server", choices=["threaded", "werkzeug"], default=d("threaded"),
                   help="HTTP front end: mcpsync's keep-alive threaded server (default) or werkzeug's dev server")
    p.add_argument("--workers", type=_positive_int, default=d(WORKERS), metavar="N",
                   help=f"HTTP requests running Python code at once, in arrival order (default "
                        f"{WORKERS}); requests waiting in tools do not count")
    p.add_argument("--max-connections", type=_positive_int, default=d(MAX_CONNECTIONS), metavar="N",
                   help=f"open HTTP connections (default {MAX_CONNECTIONS:,}); at the cap the "
                        "oldest idle one is closed for a new client")
    p.add_argument("--max-connections-per-address", type=_positive_int,
                   default=d(MAX_CONNECTIONS_PER_ADDRESS), metavar="N",
                   help=f"the same per client IP address (default {MAX_CONNECTIONS_PER_ADDRESS:,})")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=d("INFO"),
                   metavar="LEVEL", help=f"logging level for stderr: {', '.join(LOG_LEVELS)} (default INFO)")
    p.add_argument("--access-log", action="store_true", default=d(False),
                   help="log one line per request (session, method, outcome, duration) to stderr")
    p.add_argument("--auth-tokens", default=d(None), metavar="SPEC",
                   help="require bearer tokens on the HTTP endpoints: 'token1:alice,token2:bob' "
                        "(default: $MCPSYNC_AUTH_TOKENS, else no auth)")
    p.add_argument("--max-sessions", type=_positive_int, default=d(MAX_SESSIONS), metavar="N",
                   help=f"live sessions at most (default {MAX_SESSIONS}); when full, the least "
                        "recently used idle session makes room, else 503")
    p.add_argument("--max-sessions-per-client", type=_positive_int, default=d(MAX_SESSIONS_PER_OWNER),
                   metavar="N", help=f"sessions per principal, or per client address without auth "
                                     f"(default {MAX_SESSIONS_PER_OWNER}); past it the client's own "
                                     "least recently used idle session makes room, else 429")
    p.add_argument("--session-ttl", type=_positive_float, default=d(SESSION_IDLE_TTL_S),
                   metavar="SECONDS", help=f"idle time after which a session ends "
                                           f"(default {SESSION_IDLE_TTL_S:g})")
    p.add_argument("--allow-origin", action="append", default=d(None), metavar="ORIGIN",
                   help="also accept browser requests from ORIGIN (e.g. http://localhost:6274; "
                        "repeatable); by default only pages of this server's own host and port")
    p.add_argument("--shutdown-grace", type=_positive_float, default=d(SHUTDOWN_GRACE_S),
                   metavar="SECONDS", help="on SIGTERM/SIGINT, how long calls in flight may "
                   f"finish; the rest are answered with an error (default {SHUTDOWN_GRACE_S:g})")
    p.add_argument("--metrics-auth", action="store_true", default=d(False),
                   help="put /metrics behind the same bearer tokens (default: open, like /healthz)")
    p.add_argument("--allow-host", action="append", default=d(None), metavar="NAME",
                   help="also accept requests whose Host header names NAME (the public name "
                        "behind a load balancer; repeatable); by default only loopback names")
    # Several instances behind a load balancer (mcpsync.state, README "Deployment").
    p.add_argument("--state-url", default=d(None), metavar="URL",
                   help="shared state of a deployment: redis://HOST:PORT/DB (pip install "
                        "'mcpsync[redis]'; default: $MCPSYNC_STATE_URL, else this process's memory)")
    p.add_argument("--secret-file", default=d(None), metavar="PATH",
                   help="the secrets that seal requestState and sign task ids, shared by every "
                        "instance, the current one first (default: $MCPSYNC_SECRET, else the state "
                        "backend's shared key, else one of this process)")
    p.add_argument("--instance-id", default=d(None), metavar="NAME",
                   help="this instance's name, put before its session ids as 'NAME.' so a "
                        "balancer can route sessions on it (default: $MCPSYNC_INSTANCE_ID)")


def _number(parse: Callable[[str], Any], unreadable: str, fits: Callable[[Any], bool],
            rule: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``parse`` the text (else "<unreadable>: 'text'"), then check
    it ``fits`` (else "<rule>, not <text>"): one line each, which _Parser prints."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{unreadable}: {text!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"{rule}, not {text}")
        return value
    return convert


_positive_int = _number(int, "not a whole number", lambda v: v >= 1, "must be at least 1")
_positive_float = _number(float, "not a number", lambda v: 0 < v < float("inf"),
                          "must be a positive number of seconds")
_port = _number(int, "not a port number", lambda v: 0 <= v <= 65535, "a port is 0-65535 (0 picks a free one)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and a hint for a misspelt option, which plain
    argparse would report as an invalid subcommand (``--prot 8001``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mcpsync: {message} (see --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        known = set(self._option_string_actions)
        for token in argv:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                self.error(f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else ""))
        return super().parse_args(argv, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mcpsync", description=DESCRIPTION, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mcpsync {__version__}")
    _add_serving_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="{serve,hub}", parser_class=_Parser)
    p_serve = sub.add_parser("serve", help="serve a server object from a module or file",
                             description="Serve TARGET: package.module:attr or path/to/file.py[:attr] "
                                         "(attr defaults to the module's `server`, `app` or `mcp`).")
    p_serve.add_argument("target")
    _add_serving_options(p_serve, top=False)
    p_hub = sub.add_parser("hub", help="serve many upstream MCP servers behind one endpoint",
                           description="Aggregate the upstream servers listed in an mcpServers JSON config.")
    p_hub.add_argument("config")
    _add_serving_options(p_hub, top=False)
    return parser


def _server_for(args: argparse.Namespace) -> "Server":
    if args.command == "serve":
        try:
            return load_target(args.target)
        except ConfigError as exc:
            raise UsageError(f"serve: {exc}") from None
    from .examples.everything import server
    return server


def _limits(args: argparse.Namespace) -> Limits:
    try:
        return Limits(workers=args.workers, max_threads=max(MAX_THREADS, args.workers),
                      max_connections=args.max_connections,
                      max_connections_per_address=args.max_connections_per_address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed command line; returns the exit status."""
    if args.command == "hub":
        return _run_hub(args)
    server = _server_for(args)
    try:
        spec = args.auth_tokens or os.environ.get("MCPSYNC_AUTH_TOKENS")
        verifier = StaticTokenVerifier.from_spec(spec) if spec else None
        return serve(server, host=args.host, port=args.port, stdio=args.stdio,
                     server_kind=args.server, auth=verifier, metrics_auth=args.metrics_auth,
                     limits=_limits(args), **_session_options(args))
    except OSError as exc:  # e.g. the port is taken
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


def _session_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {"max_sessions": args.max_sessions, "max_sessions_per_client": args.max_sessions_per_client,
               "session_ttl_s": args.session_ttl, "allowed_origins": args.allow_origin,
               "shutdown_grace_s": args.shutdown_grace, "state": _shared_state(args)}
    if args.allow_host:
        bound = () if args.host in ("0.0.0.0", "::") else (args.host.lower(),)
        options["allowed_hosts"] = {"localhost", "127.0.0.1", "[::1]", "::1", *bound,
                                    *(h.lower() for h in args.allow_host)}
    return options


def _shared_state(args: argparse.Namespace) -> Any:
    """The ``SharedState`` the options and environment ask for (an option wins over its
    variable), or None (one instance; stdio, where the environment's settings do not apply)."""
    if args.stdio:
        if args.state_url or args.secret_file or args.instance_id:
            raise UsageError("--state-url, --secret-file and --instance-id are for HTTP instances, not --stdio")
        return None
    from .state import SharedState
    given = {"MCPSYNC_STATE_URL": args.state_url, "MCPSYNC_SECRET_FILE": args.secret_file,
             "MCPSYNC_INSTANCE_ID": args.instance_id}
    try:
        return SharedState.from_environ({**os.environ, **{k: v for k, v in given.items() if v}})
    except ConfigError as exc:
        raise UsageError(f"{exc.key}: {exc.reason}") from None


def _hub_gauges(hub: Any) -> dict[str, Any]:
    """/metrics gauges for each upstream of the hub: up (1 when ready), restarts, tools."""
    def reading(key: str) -> Any:
        def read() -> list[tuple[dict[str, str], float]]:
            out = []
            for name, h in hub.health()["upstreams"].items():
                value = (1.0 if h.get("state") == "ready" else 0.0) if key == "up" else float(h.get(key) or 0)
                out.append(({"upstream": name, "state": str(h.get("state"))}, value))
            return out
        return read
    return {"mcpsync_hub_upstream_up": ("1 while the upstream is ready.", reading("up")),
            "mcpsync_hub_upstream_restarts": ("Restarts of the upstream.", reading("restarts")),
            "mcpsync_hub_upstream_tools": ("Tools the upstream contributes.", reading("tools"))}


def _run_hub(args: argparse.Namespace) -> int:
    """``hub CONFIG.json``: check the config (nothing starts if it is invalid), start the
    upstreams and serve at once (each upstream's tools appear, with list_changed, when it
    is ready; /readyz says when every required one is); SIGHUP reloads the config."""
    from .hub import Hub, load_config
    from .http.hub_routes import HEALTHZ_PATH, READYZ_PATH, healthz_route, readyz_route
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(f"config: {exc.key}: {exc.reason}") from None
    spec = args.auth_tokens or os.environ.get("MCPSYNC_AUTH_TOKENS")
    verifier = StaticTokenVerifier.from_spec(spec) if spec else None
    hub = Hub(config, config_path=os.path.abspath(args.config))
    previous = None
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGHUP, lambda _sig, _frame: hub.request_reload())
    hub.start()
    try:
        names = ", ".join(n for n, u in config.upstreams.items() if u.enabled)
        print(f"mcpsync: hub: {len(config.upstreams)} upstream(s), starting: {names or 'none'} "
              "(their tools appear as each is ready; GET /readyz says when all required ones are)",
              file=sys.stderr, flush=True)
        try:
            return serve(hub.server, host=args.host, port=args.port, stdio=args.stdio,
                         server_kind=args.server, auth=verifier, metrics_auth=args.metrics_auth,
                         limits=_limits(args), **_session_options(args),
                         routes={HEALTHZ_PATH: healthz_route(hub.health),
                                 READYZ_PATH: readyz_route(hub.readiness)},
                         gauges=_hub_gauges(hub))
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    finally:
        hub.close()
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mcpsync.access").setLevel(logging.INFO if args.access_log else logging.WARNING)
    try:
        return run(args)
    except UsageError as exc:
        print(f"mcpsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
