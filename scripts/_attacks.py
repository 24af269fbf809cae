"""The attack registry of ``scripts/attack.py`` and the attacks on authentication and limits.

Theory of operation
-------------------
An attack is a function ``(Ctx) -> Verdict`` registered with ``@attack(name, finding)``.
``Ctx`` carries the target, the scale options, the attack's ``Budget`` (every blocking call
takes its timeout from it) and a per-run cache of probes (does the server want a token?
which tools does it list? does it speak WebSocket?). An attack opens its own connections
and sessions and releases them in ``finally`` (sockets closed, sessions DELETEd) with a
budget of its own, so a failed or timed-out attack still cleans up.

Verdicts: ``PASS`` (the server held), ``FAIL`` (it did not: the reason says what was
measured), ``SKIP`` (the attack does not apply: no token configured, no such tool...).
``finding`` is the number of the issue-13 finding the attack reproduces (0: none).

The attacks on limits live in ``_attacks_limits.py``, the malformed-input ones in
``_attacks_input.py``; both register into this module's table and ``attack.py`` imports
them. Attacks run cheapest first (``cost``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from _wire import (Budget, HttpConn, OutOfTime, Response, Target, WireError, WsConn,
                   answer_for, build_request, dumps, initialize_msg, post_headers, rpc,
                   ws_handshake_headers, ws_initialize)

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
CLEANUP_BUDGET_S = 60.0          # closing sockets and DELETEing sessions after an attack


@dataclass
class Verdict:
    name: str
    status: str
    reason: str
    finding: int = 0
    elapsed_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.reason}"


@dataclass
class Options:
    """How hard to push. The defaults reproduce the issue-13 findings in about a minute."""

    deadline_s: float = 30.0          # per attack (the session flood gets twice this)
    slow_ms: int = 1500               # duration of each sleep_ms call in the in-flight attacks
    per_session_limit: int = 64       # the server's in-flight limit per session
    total_limit: int = 512            # the server's in-flight limit in total
    extra_calls: int = 32             # calls sent beyond a limit
    slow_reader_calls: int = 1000     # pipelined echo calls on a WebSocket that is never read
    slow_reader_bytes: int = 20_000   # text size of each of them
    metrics_requests: int = 200       # requests with unique method names
    metrics_name_bytes: int = 1024    # length of each of those names
    sessions: int = 10_050            # sessions one principal tries to open
    body_limit: int = 4 * 1024 * 1024  # the server's request body limit
    source_addresses: tuple[str, str] = ("127.0.0.2", "127.0.0.3")  # two clients without auth


class NeedToken(WireError):
    """The server refused us for want of a bearer token (run_attack makes that a SKIP)."""


@dataclass
class Ctx:
    target: Target
    opts: Options
    budget: Budget
    cache: dict[str, Any]                  # probes shared by the attacks of one run
    details: dict[str, Any] = field(default_factory=dict)  # extra fields of the verdict

    def conn(self, **kw: Any) -> HttpConn:
        return HttpConn(self.target, self.budget, **kw)


AttackFn = Callable[[Ctx], tuple[str, str]]


@dataclass
class Attack:
    name: str
    finding: int
    summary: str
    run: AttackFn
    cost: int = 0                 # run order: cheap (0) first, the session flood (3) last
    deadline_factor: float = 1.0  # times Options.deadline_s


ATTACKS: dict[str, Attack] = {}


def attack(name: str, finding: int, summary: str, *, cost: int = 0,
           deadline_factor: float = 1.0) -> Callable[[AttackFn], AttackFn]:
    def register(fn: AttackFn) -> AttackFn:
        ATTACKS[name] = Attack(name, finding, summary, fn, cost, deadline_factor)
        return fn
    return register


def attack_names() -> list[str]:
    """Every registered attack, in run order."""
    order = list(ATTACKS)
    return sorted(order, key=lambda n: (ATTACKS[n].cost, order.index(n)))


def run_attack(name: str, target: Target, opts: Options, cache: dict[str, Any]) -> Verdict:
    """Run one attack within its deadline. Never raises: a server that times out or breaks
    the connection FAILs; an answer the attack cannot make sense of FAILs too, with
    ``details["error"]`` set (it may be the attack's own bug)."""
    spec = ATTACKS[name]
    deadline = opts.deadline_s * spec.deadline_factor
    ctx = Ctx(target, opts, Budget(deadline), cache)
    started = time.monotonic()
    try:
        status, reason = spec.run(ctx)
    except NeedToken as exc:
        status, reason = SKIP, f"the server wants a bearer token: pass --token ({exc})"
    except OutOfTime as exc:
        status, reason = FAIL, f"no answer within the {deadline:.0f} s deadline ({exc})"
    except WireError as exc:
        status, reason = FAIL, f"connection failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - one attack must not stop the others
        status, reason = FAIL, f"unexpected answer ({type(exc).__name__}: {exc})"
        ctx.details["error"] = True
    return Verdict(name, status, reason, spec.finding, time.monotonic() - started, ctx.details)


# ---- probes and helpers shared by the attacks ---------------------------------------------------

def post(conn: HttpConn, msg: Any, *, token: str | None | bool = True, session: str | None = None,
         version: str | None = None, extra: list[tuple[str, str]] | None = None,
         raw: bytes | None = None) -> Response:
    """One POST to the MCP endpoint (a JSON message, or ``raw`` bytes)."""
    t = conn.target
    headers = post_headers(t, token, session, version) + (extra or [])
    return conn.request("POST", t.path, headers, raw if raw is not None else dumps(msg))


def open_session(conn: HttpConn, token: str | None | bool = True) -> str:
    """initialize + initialized; the session id (WireError if the server gave none)."""
    resp = post(conn, initialize_msg(0), token=token)
    sid = resp.header("mcp-session-id")
    if resp.status == 401:
        raise NeedToken("initialize → 401")
    if resp.status != 200 or not sid:
        raise WireError(f"initialize: HTTP {resp.status} {resp.body[:100]!r}")
    post(conn, rpc("notifications/initialized"), token=token, session=sid, version="2025-11-25")
    return sid


def delete_sessions(target: Target, ids: list[str], token: str | None | bool = True,
                    source: str | None = None) -> int:
    """DELETE each session (own budget); how many the server confirmed (2xx)."""
    budget = Budget(CLEANUP_BUDGET_S)
    deleted = 0
    conn: HttpConn | None = None
    for sid in ids:
        try:
            if conn is None:
                conn = HttpConn(target, budget, source=source)
            resp = conn.request("DELETE", target.path, [*target.auth(token), ("Mcp-Session-Id", sid)])
            deleted += 200 <= resp.status < 300
            if "close" in resp.header("connection").lower():
                conn.close()
                conn = None
        except OutOfTime:
            break
        except WireError:
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return deleted


def delete_if_created(target: Target, resp: Response, token: str | None | bool = True) -> None:
    sid = resp.header("mcp-session-id")
    if sid:
        delete_sessions(target, [sid], token)


def auth_required(ctx: Ctx) -> bool:
    """Does the MCP endpoint refuse an initialize without a token (401)?"""
    if "auth" not in ctx.cache:
        with ctx.conn() as conn:
            resp = post(conn, initialize_msg(0), token=None)
        delete_if_created(ctx.target, resp, token=None)
        ctx.cache["auth"] = resp.status == 401
    return bool(ctx.cache["auth"])


def tool_names(ctx: Ctx) -> set[str]:
    """The tools the server lists (one short session)."""
    if "tools" not in ctx.cache:
        with ctx.conn() as conn:
            sid = open_session(conn)
            try:
                resp = post(conn, rpc("tools/list", {}, 1), session=sid, version="2025-11-25")
                answer = answer_for(resp.messages(), 1) or {}
                tools = (answer.get("result") or {}).get("tools") or []
                ctx.cache["tools"] = {t.get("name") for t in tools if isinstance(t, dict)}
            finally:
                delete_sessions(ctx.target, [sid])
    return set(ctx.cache["tools"])


def ws_available(ctx: Ctx) -> bool:
    if "ws" not in ctx.cache:
        resp, ws = WsConn.open(ctx.target, ctx.budget)
        if ws is not None:
            ws.close()
        if resp.status == 401:
            raise NeedToken("WebSocket upgrade → 401")
        ctx.cache["ws"] = ws is not None
    return bool(ctx.cache["ws"])


def is_refusal(msg: dict[str, Any]) -> bool:
    """A JSON-RPC error that refuses work (overload), not one about the request's content."""
    code = (msg.get("error") or {}).get("code")
    return "error" in msg and code not in (-32700, -32600, -32601, -32602)


def sleep_call(rid: Any, ms: int) -> dict[str, Any]:
    return rpc("tools/call", {"name": "sleep_ms", "arguments": {"ms": ms}}, rid)


# ---- authentication -------------------------------------------------------------------------------

@attack("ws-options-auth-bypass", 1, "OPTIONS /ws with the upgrade headers and no token")
def ws_options_auth_bypass(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    if not auth_required(ctx):
        return SKIP, "the server takes requests without a token: no authentication to bypass"
    resp, ws = WsConn.open(t, ctx.budget, method="OPTIONS", token=None)
    if ws is None:
        verdict = PASS if 400 <= resp.status < 500 else FAIL
        return verdict, f"OPTIONS {t.ws_path} without token → {resp.status}"
    did = "a session opened"
    try:  # show what the bypass reaches: list the tools on it, call echo if there is one
        ws_initialize(ws, 5.0)
        did = "tools/list ran"
        listed = _ws_call(ws, rpc("tools/list", {}, 1))
        names = {tool.get("name") for tool in (listed.get("result") or {}).get("tools") or []}
        if "echo" in names:
            echoed = _ws_call(ws, rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}}, 2))
            did = "tools/call ran" if "result" in echoed else did
    except WireError as exc:
        did += f", then {exc}"
    finally:
        ws.close()
    return FAIL, f"OPTIONS {t.ws_path} without token → 101 and {did}"


def _ws_call(ws: WsConn, msg: dict[str, Any]) -> dict[str, Any]:
    """Send a request over a WebSocket and wait for its answer."""
    ws.send_json(msg)
    while True:
        answer = ws.recv_message(5.0)
        if isinstance(answer, dict) and answer.get("id") == msg["id"]:
            return answer


@attack("upgrade-header-on-http-route", 0, "Upgrade: websocket on a plain HTTP route still gets an answer")
def upgrade_header_on_http_route(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    with ctx.conn() as conn:
        conn.send(build_request("OPTIONS", t.path, [*ws_handshake_headers(t.auth())], host=t.host_header))
        try:
            resp = conn.read_head(5.0)
        except OutOfTime:
            return FAIL, f"OPTIONS {t.path} with the upgrade headers → no answer within 5 s"
        except WireError as exc:
            return FAIL, f"OPTIONS {t.path} with the upgrade headers → no answer ({exc})"
    if resp.status == 101:
        return FAIL, f"OPTIONS {t.path} with the upgrade headers → 101"
    return PASS, f"OPTIONS {t.path} with the upgrade headers → {resp.status}"


@attack("auth-every-route", 1, "every method on every MCP route without a valid token → 401")
def auth_every_route(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    if not auth_required(ctx):
        return SKIP, "the server takes requests without a token: nothing to check"
    last = t.ws_path[-1]
    paths = [t.path, t.ws_path, t.sse_path, t.messages_path + "?session_id=attack",
             f"{t.ws_path[:-1]}%{ord(last):02x}", f"http://{t.host_header}{t.ws_path}"]
    body = dumps(initialize_msg(0))
    upgrade = ws_handshake_headers([])
    plain = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
    cases: list[tuple[str, str, list[tuple[str, str]], bool]] = []
    for path in paths:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO"):
            cases.append((method, path, plain, False))
        for method in ("GET", "POST", "OPTIONS"):
            cases.append((method, path, upgrade, True))
        cases.append(("POST", path, plain + [("Authorization", "Bearer not-a-valid-token")], False))
    bad: list[str] = []
    for method, path, headers, is_upgrade in cases:
        with ctx.conn() as conn:
            sent = headers if is_upgrade else [*headers, ("Connection", "close")]
            conn.send(build_request(method, path, sent,
                                    body if method in ("POST", "PUT", "PATCH") else None,
                                    host=t.host_header))
            try:
                resp: Response | None = conn.read_head(5.0)
                if resp is not None and resp.status != 101:
                    conn.read_body(resp, head_request=method == "HEAD", cap=5.0)
            except WireError:  # no answer: not a bypass, but not a 401 either
                resp = None
        status = resp.status if resp is not None else 0
        what = f"{method} {path}{' (upgrade)' if is_upgrade else ''} → {status or 'no answer'}"
        if status == 101:
            bad.append(what)
        elif method == "OPTIONS":
            # A CORS preflight may be answered without a token, as long as nothing opens.
            if resp is not None and (resp.header("mcp-session-id")
                                     or "event-stream" in resp.header("content-type")):
                bad.append(what + " with a session or stream")
        elif status != 401:
            bad.append(what)
    if bad:
        return FAIL, (f"{len(bad)} of {len(cases)} unauthenticated requests not refused: "
                      + "; ".join(bad[:4]))
    return PASS, f"{len(cases)} unauthenticated requests on {len(paths)} paths: all refused (401)"


@attack("ws-non-get-upgrade", 1, "a WebSocket upgrade by any method but GET is refused")
def ws_non_get_upgrade(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    if not ws_available(ctx):
        return SKIP, f"no WebSocket endpoint at {t.ws_path}"
    got = []
    upgraded = []
    for method in ("OPTIONS", "POST", "PUT", "DELETE"):
        resp, ws = WsConn.open(t, ctx.budget, method=method)
        if ws is not None:
            ws.close()
            upgraded.append(method)
        got.append(f"{method} → {resp.status}")
    if upgraded:
        return FAIL, f"{', '.join(upgraded)} {t.ws_path} upgraded to WebSocket (101); expected 405/400"
    return PASS, "; ".join(got)


@attack("ws-http10-upgrade", 0, "a WebSocket upgrade over HTTP/1.0 is refused (RFC 6455 4.2.1)")
def ws_http10_upgrade(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    if not ws_available(ctx):
        return SKIP, f"no WebSocket endpoint at {t.ws_path}"
    resp, ws = WsConn.open(t, ctx.budget, version="HTTP/1.0")
    if ws is not None:
        ws.close()
        return FAIL, f"GET {t.ws_path} HTTP/1.0 with the upgrade headers → 101"
    return PASS, f"GET {t.ws_path} HTTP/1.0 with the upgrade headers → {resp.status}"
