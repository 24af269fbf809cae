"""Attacks of ``scripts/attack.py`` on resource limits: requests in flight per session and
in total (HTTP, WebSocket, legacy ``/messages``), a WebSocket client that never reads, and
one principal filling the session table. Registered into ``_attacks.ATTACKS`` on import.

The in-flight attacks hold calls open with the example server's ``sleep_ms(ms)`` tool and
count what comes back: a result (the call ran), a refusal (HTTP 503/429, or a JSON-RPC error
that is not about the request's content), or nothing. A call whose result arrives within
1.5 × the sleep ran at once with the first ones; later ones were queued.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from _attacks import (CLEANUP_BUDGET_S, FAIL, PASS, SKIP, Ctx, attack, auth_required,
                      delete_sessions, is_refusal, open_session, post, sleep_call, tool_names,
                      ws_available)
from _wire import (OP_TEXT, HttpConn, OutOfTime, Response, WireError, WsClosed, WsConn,
                   build_request, dumps, encode_frame, initialize_msg, open_sse, parse_event,
                   post_headers, rpc, ws_initialize)

SESSION_FLOOD_THREADS = 4        # connections the session flood uses


# ---- in-flight limits -----------------------------------------------------------------------------

def _need_sleep_tool(ctx: Ctx) -> str | None:
    if "sleep_ms" not in tool_names(ctx):
        return "the server lists no sleep_ms(ms) tool to hold calls in flight"
    return None


@attack("http-inflight-per-session", 2, "parallel POSTs on one session past its in-flight limit → 503",
        cost=1)
def http_inflight_per_session(ctx: Ctx) -> tuple[str, str]:
    if (why := _need_sleep_tool(ctx)) is not None:
        return SKIP, why
    o = ctx.opts
    n = o.per_session_limit + o.extra_calls
    conns: list[HttpConn] = []
    with ctx.conn() as first:
        sid = open_session(first)
    try:
        for i in range(n):
            conn = ctx.conn()
            conns.append(conn)
            conn.send(build_request("POST", ctx.target.path,
                                    post_headers(ctx.target, True, sid, "2025-11-25"),
                                    dumps(sleep_call(i, o.slow_ms)), host=ctx.target.host_header))
        ok = refused = other = no_retry = 0
        for conn in conns:
            resp = conn.read_head()
            conn.read_body(resp)
            if resp.status == 200:
                ok += 1
            elif resp.status in (429, 503):
                refused += 1
                no_retry += not resp.header("retry-after")
            else:
                other += 1
    finally:
        for conn in conns:
            conn.close()
        delete_sessions(ctx.target, [sid])
    summary = f"{n} parallel sleep_ms POSTs on one session: {ok} ran, {refused} refused"
    if other:
        summary += f", {other} other answers"
    if refused < n - o.per_session_limit:
        return FAIL, summary + f" (limit {o.per_session_limit})"
    if no_retry:
        return FAIL, summary + f", {no_retry} refusals without Retry-After"
    return PASS, summary + " with Retry-After"


def _ws_flood(ctx: Ctx, connections: int, per_connection: int) -> tuple[int, int, int, int]:
    """``connections`` WebSockets, each with ``per_connection`` pipelined sleep_ms calls.
    Returns (results, refusals, first wave, unanswered): the first wave is the results that
    came back within 1.5 × the sleep, i.e. that ran at once."""
    o = ctx.opts
    socks: list[WsConn] = []
    results = refusals = wave = unanswered = 0
    try:
        for _ in range(connections):
            resp, ws = WsConn.open(ctx.target, ctx.budget)
            if ws is None:
                raise WireError(f"WebSocket upgrade → {resp.status}")
            socks.append(ws)
            ws_initialize(ws, 10.0)
        started = time.monotonic()
        for ws in socks:
            ws.http.send(b"".join(_text_frame(dumps(sleep_call(i, o.slow_ms)))
                                  for i in range(per_connection)))
        for ws in socks:
            pending = set(range(per_connection))
            try:
                while pending:
                    msg = ws.recv_message()
                    if not isinstance(msg, dict) or msg.get("id") not in pending:
                        continue
                    pending.discard(msg["id"])
                    if "result" in msg:
                        results += 1
                        wave += time.monotonic() - started < 1.5 * o.slow_ms / 1000
                    elif is_refusal(msg):
                        refusals += 1
            except WsClosed:
                pass
            unanswered += len(pending)
    finally:
        for ws in socks:
            ws.close()
    return results, refusals, wave, unanswered


def _text_frame(payload: bytes) -> bytes:
    return encode_frame(OP_TEXT, payload)


def _need_ws_and_sleep(ctx: Ctx) -> str | None:
    if not ws_available(ctx):
        return f"no WebSocket endpoint at {ctx.target.ws_path}"
    return _need_sleep_tool(ctx)


@attack("ws-inflight-per-session", 2, "pipelined WebSocket calls past the per-session limit are refused",
        cost=1)
def ws_inflight_per_session(ctx: Ctx) -> tuple[str, str]:
    if (why := _need_ws_and_sleep(ctx)) is not None:
        return SKIP, why
    o = ctx.opts
    n = o.per_session_limit + o.extra_calls
    results, refused, wave, lost = _ws_flood(ctx, 1, n)
    summary = (f"{n} pipelined sleep_ms({o.slow_ms}) calls on one WebSocket: {wave} ran at once, "
               f"{results - wave} queued, {refused} refused, {lost} unanswered")
    if refused < n - o.per_session_limit or lost:
        return FAIL, summary + f" (limit {o.per_session_limit})"
    return PASS, summary


@attack("ws-inflight-total", 2, "WebSocket calls past the server-wide in-flight limit are refused",
        cost=1)
def ws_inflight_total(ctx: Ctx) -> tuple[str, str]:
    if (why := _need_ws_and_sleep(ctx)) is not None:
        return SKIP, why
    o = ctx.opts
    conns = o.total_limit // o.per_session_limit + 1
    n = conns * o.per_session_limit
    results, refused, wave, lost = _ws_flood(ctx, conns, o.per_session_limit)
    summary = (f"{conns} WebSockets × {o.per_session_limit} sleep_ms calls: {wave} ran at once, "
               f"{refused} refused, {lost} unanswered")
    if refused < n - o.total_limit or lost:
        return FAIL, summary + f" (total limit {o.total_limit})"
    return PASS, summary


@attack("messages-inflight", 2, "legacy POST /messages past the per-session limit → 503/429", cost=1)
def messages_inflight(ctx: Ctx) -> tuple[str, str]:
    if (why := _need_sleep_tool(ctx)) is not None:
        return SKIP, why
    t, o = ctx.target, ctx.opts
    sse_conn, resp, stream = open_sse(t, ctx.budget, t.sse_path)
    try:
        if stream is None:
            return SKIP, f"GET {t.sse_path} → {resp.status}: no legacy SSE endpoint"
        event = stream.next_event(10.0)
        if event is None or event[0] != "endpoint":
            return SKIP, f"GET {t.sse_path}: no endpoint event first ({event!r:.60})"
        endpoint = event[1].decode()
        if "://" in endpoint:
            endpoint = "/" + endpoint.split("://", 1)[1].split("/", 1)[1]
        n = o.per_session_limit + o.extra_calls
        pending: set[int] = set()
        refused = 0
        with ctx.conn() as conn:
            def send(msg: Any) -> Response:
                return conn.request("POST", endpoint, post_headers(t), dumps(msg))
            send(initialize_msg("init"))
            send(rpc("notifications/initialized"))
            for i in range(n):
                status = send(sleep_call(i, o.slow_ms)).status
                if 200 <= status < 300:
                    pending.add(i)
                refused += status in (429, 503)
        accepted = len(pending)
        errors = 0
        while pending:
            ev = stream.next_event()
            if ev is None:
                break
            msg = parse_event(b"data: " + ev[1])
            if isinstance(msg, dict) and msg.get("id") in pending:
                pending.discard(msg["id"])
                errors += is_refusal(msg)
    finally:
        sse_conn.close()
    summary = (f"{n} POST {t.messages_path} sleep_ms calls on one session: {accepted} accepted, "
               f"{refused} refused by status, {errors} refused on the stream")
    if refused + errors < n - o.per_session_limit:
        return FAIL, summary + f" (limit {o.per_session_limit}; the rest queued)"
    return PASS, summary


@attack("ws-slow-reader", 3, "a WebSocket client that never reads meets backpressure", cost=2)
def ws_slow_reader(ctx: Ctx) -> tuple[str, str]:
    t, o = ctx.target, ctx.opts
    if not ws_available(ctx):
        return SKIP, f"no WebSocket endpoint at {t.ws_path}"
    if "echo" not in tool_names(ctx):
        return SKIP, "the server lists no echo(text) tool"
    resp, ws = WsConn.open(t, ctx.budget, rcvbuf=16384, sndbuf=65536)
    if ws is None:
        return FAIL, f"WebSocket upgrade → {resp.status}"
    text = "x" * o.slow_reader_bytes
    sent = 0
    try:
        ws_initialize(ws, 10.0)
        for i in range(o.slow_reader_calls):
            frame = _text_frame(dumps(rpc("tools/call", {"name": "echo", "arguments": {"text": text}}, i)))
            try:
                ws.http.send(frame, cap=3.0)
            except OutOfTime:
                mb = sent * o.slow_reader_bytes / 1e6
                return PASS, (f"the server stopped reading after {sent} unread calls "
                              f"({mb:.1f} MB): backpressure")
            except WireError as exc:
                return PASS, f"the server closed the connection after {sent} unread calls ({exc})"
            sent += 1
    finally:
        ws.close()
    mb = sent * o.slow_reader_bytes / 1e6
    return FAIL, (f"all {sent} pipelined {o.slow_reader_bytes // 1000} KB echo calls ({mb:.0f} MB) "
                  "accepted while the client read nothing: no backpressure")


# ---- sessions -----------------------------------------------------------------------------------

def _principals(ctx: Ctx) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """Keyword sets for HttpConn/post of two distinct clients, and how they differ."""
    t = ctx.target
    if auth_required(ctx):
        if not t.token2:
            return None
        return {"conn": {}, "token": True}, {"conn": {}, "token": t.token2}, "two tokens"
    a, b = ctx.opts.source_addresses
    try:
        for source in (a, b):
            HttpConn(t, ctx.budget, source=source).close()
    except WireError:
        return None
    return ({"conn": {"source": a}, "token": True}, {"conn": {"source": b}, "token": True},
            f"client addresses {a} and {b}")


@attack("session-quota", 6, "one principal cannot fill the session table for everyone",
        cost=3, deadline_factor=2.0)
def session_quota(ctx: Ctx) -> tuple[str, str]:
    t, o = ctx.target, ctx.opts
    who = _principals(ctx)
    if who is None:
        why = ("needs --token2 (a second principal)" if auth_required(ctx)
               else f"cannot connect from {' and '.join(o.source_addresses)}")
        return SKIP, why
    first, second, how = who
    opened: list[list[str]] = [[] for _ in range(SESSION_FLOOD_THREADS)]
    # Written by the flood threads: the first refusal seen and a stop flag (set once).
    stop = threading.Event()
    refusal: list[str] = []
    problems: list[str] = []
    count_lock = threading.Lock()  # guards `total`, the sessions opened so far by all threads
    total = [0]

    def flood(mine: list[str]) -> None:
        conn: HttpConn | None = None
        try:
            while not stop.is_set():
                with count_lock:
                    if total[0] >= o.sessions:
                        return
                    total[0] += 1
                if conn is None:
                    conn = ctx.conn(**first["conn"])
                resp = post(conn, initialize_msg(0), token=first["token"])
                sid = resp.header("mcp-session-id")
                if resp.status == 200 and sid:
                    mine.append(sid)
                else:
                    refusal.append(f"{resp.status} {resp.reason}")
                    stop.set()
                if "close" in resp.header("connection").lower():
                    conn.close()
                    conn = None
        except WireError as exc:
            problems.append(str(exc))
            stop.set()
        finally:
            if conn is not None:
                conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=flood, args=(opened[i],), name=f"attack-flood-{i}", daemon=True)
               for i in range(SESSION_FLOOD_THREADS)]
    b_sid = ""
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(ctx.budget.left())
        stop.set()
        took = time.monotonic() - started
        n = sum(len(ids) for ids in opened)
        with ctx.conn(**second["conn"]) as conn:
            resp = post(conn, initialize_msg(0), token=second["token"])
        b_sid = resp.header("mcp-session-id")
    finally:
        stop.set()
        for th in threads:
            th.join(CLEANUP_BUDGET_S)
        for ids in opened:
            delete_sessions(t, ids, first["token"], first["conn"].get("source"))
        if b_sid:
            delete_sessions(t, [b_sid], second["token"], second["conn"].get("source"))
    flood_note = (f"the first client opened {n} sessions in {took:.1f} s"
                  + (f", then got {refusal[0]}" if refusal else " without a refusal")
                  + (f" ({problems[0]})" if problems else ""))
    if resp.status == 200 and b_sid:
        return PASS, f"{flood_note}; a second client ({how}) could still initialize"
    return FAIL, f"{flood_note}; then the second client's initialize → {resp.status} ({how})"

