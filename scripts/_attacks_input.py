"""Malformed-input and HTTP-edge attacks of ``scripts/attack.py`` (registered into
``_attacks.ATTACKS`` on import).

A client's mistake must get a client error (400, -32700, -32600, -32602, a tool error),
never a 500 or an internal error (-32603), and never a connection dropped without an answer.
Each attack builds the bad request byte for byte with ``_wire`` and judges the answer.
"""
from __future__ import annotations

import secrets
import socket
import time
from typing import Any

from _attacks import (FAIL, PASS, SKIP, Ctx, attack, delete_if_created,
                      delete_sessions, open_session, post, tool_names, ws_available)
from _wire import (OutOfTime, Response, WireError, WsClosed, WsConn,
                   answer_for, build_request, dumps, initialize_msg, post_headers, rpc,
                   ws_initialize)

MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN,
               "io.modelcontextprotocol/clientCapabilities": {}}
NEST_RATIO = 4.0                 # deep-nesting-cost: slower than this × a flat body of the same size…
NEST_MARGIN_S = 0.05             # …and by more than this fails
NEST_TRIES = 3                   # best of this many per body
SURROGATE_PING = b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}'


def _rpc_error_code(resp: Response, rid: Any) -> int | None:
    answer = answer_for(resp.messages(), rid)
    if answer is None or "error" not in answer:
        return None
    code = (answer.get("error") or {}).get("code")
    return code if isinstance(code, int) else None


def _client_error_ok(resp: Response, rid: Any) -> bool:
    """Not a 5xx and not a JSON-RPC internal error."""
    return resp.status < 500 and _rpc_error_code(resp, rid) != -32603


# ---- request framing -------------------------------------------------------------------------------

@attack("chunked-bad-size", 5, "malformed chunk sizes get 400, not 500")
def chunked_bad_size(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    ping = dumps(rpc("ping", None, 1))
    got, bad = [], []
    for size in (b"zz", b"-1", b"1" + b"0" * 15, b"0x2"):
        with ctx.conn() as conn:
            head = build_request("POST", t.path, [*post_headers(t), ("Transfer-Encoding", "chunked"),
                                                  ("Connection", "close")], None, host=t.host_header)
            conn.send(head + size + b"\r\n" + ping + b"\r\n0\r\n\r\n")
            try:
                resp = conn.read_head()
                status = str(resp.status)
            except WireError as exc:
                status = f"no answer ({exc})"
        got.append(f"{size.decode()} → {status}")
        if not status.startswith("4"):
            bad.append(got[-1])
    if bad:
        return FAIL, "chunk size " + "; ".join(bad)
    return PASS, "chunk size " + "; ".join(got)


@attack("body-cut-short", 5, "a body cut short by the client gets 400 (or a close), not 500")
def body_cut_short(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    part = dumps(rpc("ping", None, 1))[:20]
    cases = {"Content-Length 200, 20 sent": [("Content-Length", "200")],
             "chunk of 0x64, 20 sent": [("Transfer-Encoding", "chunked")]}
    got, bad = [], []
    for label, framing in cases.items():
        with ctx.conn() as conn:
            body = part if "Content-Length" in label else b"64\r\n" + part
            conn.send(build_request("POST", t.path, [*post_headers(t), *framing], None,
                                    host=t.host_header) + body)
            conn.sock.shutdown(socket.SHUT_WR)
            try:
                data = conn.read_until_eof(10.0)
                status = data.split(b"\r\n", 1)[0].decode("latin-1")[9:12] if data else "closed"
            except WireError as exc:
                status = f"reset ({exc})"
        got.append(f"{label} → {status}")
        if not (status == "closed" or status.startswith("4")):
            bad.append(got[-1])
    return (FAIL if bad else PASS), "; ".join(bad or got)


@attack("lone-surrogate-http", 5, "a lone surrogate as a JSON-RPC id over HTTP is a client error")
def lone_surrogate_http(ctx: Ctx) -> tuple[str, str]:
    got, bad = [], []
    with ctx.conn() as conn:
        sid = open_session(conn)
        try:
            stateless = SURROGATE_PING[:-1] + b',"params":{"_meta":' + dumps(MODERN_META) + b"}}"
            for label in ("session", "stateless"):
                if label == "session":
                    resp = post(conn, None, raw=SURROGATE_PING, session=sid, version="2025-11-25")
                else:
                    resp = post(conn, None, raw=stateless, version=MODERN,
                                extra=[("Mcp-Method", "ping")])
                code = _rpc_error_code(resp, "\ud800")
                got.append(f"{label}: {resp.status}" + (f" ({code})" if code else ""))
                if not _client_error_ok(resp, "\ud800"):
                    bad.append(got[-1])
                if "close" in resp.header("connection").lower():
                    conn.close()
                    conn = ctx.conn()
        finally:
            conn.close()
            delete_sessions(ctx.target, [sid])
    return (FAIL if bad else PASS), 'id "\\ud800" → ' + "; ".join(bad or got)


@attack("lone-surrogate-ws", 5,
        "a lone surrogate as a JSON-RPC id over WebSocket: an error or a close frame")
def lone_surrogate_ws(ctx: Ctx) -> tuple[str, str]:
    if not ws_available(ctx):
        return SKIP, f"no WebSocket endpoint at {ctx.target.ws_path}"
    resp, ws = WsConn.open(ctx.target, ctx.budget)
    if ws is None:
        return FAIL, f"WebSocket upgrade → {resp.status}"
    try:
        ws_initialize(ws, 10.0)
        ws.send_text(SURROGATE_PING)
        ws.send_json(rpc("ping", None, "after"))
        answers = []
        while True:
            try:
                msg = ws.recv_message(10.0)
            except WsClosed as exc:
                if exc.code is None:
                    return FAIL, f'id "\\ud800" → the connection dropped without a close frame'
                return PASS, f'id "\\ud800" → close frame {exc.code}'
            answers.append(msg)
            if isinstance(msg, dict) and msg.get("id") == "after":
                break
    finally:
        ws.close()
    first = answers[0] if answers else {}
    if isinstance(first, dict) and (first.get("error") or {}).get("code") == -32603:
        return FAIL, 'id "\\ud800" → internal error -32603'
    is_error = isinstance(first, dict) and "error" in first
    what = f"error {first['error'].get('code')}" if is_error else "a reply"
    return PASS, f'id "\\ud800" → {what}; the connection still answers'


@attack("add-overflow", 5, "add(1e999, 1) is a client error (-32700/-32602/a tool error), not an internal one")
def add_overflow(ctx: Ctx) -> tuple[str, str]:
    if "add" not in tool_names(ctx):
        return SKIP, "the server lists no add(a, b) tool"
    got, bad = [], []
    with ctx.conn() as conn:
        sid = open_session(conn)
        try:
            for i, args in enumerate((b'{"a":1e999,"b":1}', b'{"a":1e308,"b":1e308}')):
                raw = (b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"add","arguments":'
                       % i + args + b"}}")
                resp = post(conn, None, raw=raw, session=sid, version="2025-11-25")
                answer = answer_for(resp.messages(), i) or answer_for(resp.messages(), None) or {}
                if "error" in answer:
                    what = f"error {answer['error'].get('code')}"
                elif (answer.get("result") or {}).get("isError"):
                    what = "tool error"
                else:
                    what = f"result {dumps(answer.get('result'))[:60]!r}" if answer else "no answer"
                got.append(f"add({args.decode()}) → {resp.status} {what}")
                if resp.status >= 500 or what in ("error -32603", "no answer"):
                    bad.append(got[-1])
        finally:
            delete_sessions(ctx.target, [sid])
    return (FAIL if bad else PASS), "; ".join(bad or got)


# ---- observability ---------------------------------------------------------------------------------

def _metrics(ctx: Ctx) -> Response | None:
    with ctx.conn() as conn:
        resp = conn.request("GET", "/metrics", [("Connection", "close")])
    if resp.status == 401:
        with ctx.conn() as conn:
            resp = conn.request("GET", "/metrics", [*ctx.target.auth(), ("Connection", "close")])
    return resp if resp.status == 200 else None


@attack("metrics-label-cardinality", 4, "request-chosen method names never become metric labels")
def metrics_label_cardinality(ctx: Ctx) -> tuple[str, str]:
    o = ctx.opts
    before = _metrics(ctx)
    if before is None:
        return SKIP, "no /metrics endpoint"
    marker = "attack" + secrets.token_hex(4)
    with ctx.conn() as conn:
        sid = open_session(conn)
        try:
            for i in range(o.metrics_requests):
                name = f"{marker}-{i}-".ljust(o.metrics_name_bytes, "m")
                if i % 2:
                    post(conn, rpc(name, {}, i), session=sid, version="2025-11-25")
                else:
                    post(conn, rpc(name, {"_meta": MODERN_META}, i), version=MODERN,
                         extra=[("Mcp-Method", name)])
        finally:
            delete_sessions(ctx.target, [sid])
    after = _metrics(ctx)
    if after is None:
        return FAIL, "/metrics stopped answering"
    growth = len(after.body) - len(before.body)
    sent = f"{o.metrics_requests} requests with {o.metrics_name_bytes}-byte method names"
    if marker.encode() in after.body:
        return FAIL, (f"{sent} → /metrics grew by {growth / 1e6:.1f} MB "
                      f"({growth // o.metrics_requests} bytes each): the names are labels")
    return PASS, f"{sent} → /metrics grew by {growth} bytes; no request-chosen label"


@attack("log-forging", 9, "a newline in a method name forges access-log lines (not remotely observable)")
def log_forging(ctx: Ctx) -> tuple[str, str]:
    marker = "FORGED-" + secrets.token_hex(4)
    name = f"ping\n{marker} session=admin method=tools/call outcome=ok"
    with ctx.conn() as conn:
        sid = open_session(conn)
        try:
            resp = post(conn, rpc(name, {}, 1), session=sid, version="2025-11-25")
        finally:
            delete_sessions(ctx.target, [sid])
    ctx.details["marker"] = marker
    return SKIP, (f"the access log is not visible from here: sent a method name with a newline "
                  f"(→ {resp.status}); a log line starting with {marker!r} means lines can be forged")


# ---- HTTP edges --------------------------------------------------------------------------------------

@attack("keepalive-half-close", 9, "a peer closing an idle keep-alive connection gets no 400")
def keepalive_half_close(ctx: Ctx) -> tuple[str, str]:
    t = ctx.target
    for method, path, body in (("GET", "/healthz", None), ("OPTIONS", t.path, None),
                               ("POST", t.path, dumps(rpc("ping", None, 1)))):
        with ctx.conn() as conn:
            resp = conn.request(method, path, post_headers(t) if body else t.auth(), body)
            if "close" in resp.header("connection").lower() or conn.closed_by_peer:
                continue
            conn.sock.shutdown(socket.SHUT_WR)
            try:
                data = conn.read_until_eof(5.0)
            except WireError as exc:
                return FAIL, f"after {method} {path} and our FIN: {exc}"
            if data:
                first = data.split(b"\r\n", 1)[0].decode("latin-1")
                return FAIL, (f"after {method} {path} → {resp.status}, "
                              f"our FIN on the idle connection got {first!r}")
            return PASS, f"after {method} {path} → {resp.status}, our FIN got a clean close"
    return SKIP, "no request kept the connection alive"


@attack("oversized-body", 9, "a client still sending an oversized body can read the 413")
def oversized_body(ctx: Ctx) -> tuple[str, str]:
    t, o = ctx.target, ctx.opts
    total = o.body_limit + 1024 * 1024
    with ctx.conn() as conn:
        conn.send(build_request("POST", t.path, [*post_headers(t), ("Content-Length", str(total))],
                                None, host=t.host_header))
        chunk = b" " * 65536
        sent = 0
        error = ""
        try:
            while sent < total:
                conn.send(chunk[:total - sent], cap=10.0)
                sent += min(len(chunk), total - sent)
        except OutOfTime:
            error = "the server stopped reading without answering"
        except WireError as exc:
            error = str(exc)
        try:
            resp: Response | None = conn.read_head(5.0)
        except WireError:
            resp = None
    mib = f"{sent / 1048576:.1f} of {total / 1048576:.0f} MiB"
    if error:
        seen = f"; a {resp.status} was readable after it" if resp else "; no response readable"
        return FAIL, f"sending the body failed after {mib} ({error}){seen}"
    if resp is None:
        return FAIL, f"whole body sent ({mib}), no response"
    if resp.status == 413:
        return PASS, f"whole {total / 1048576:.0f} MiB body sent, then read 413"
    if resp.status < 500:
        return SKIP, (f"a {total / 1048576:.0f} MiB body → {resp.status}: "
                      f"the limit is not {o.body_limit} bytes")
    return FAIL, f"{total / 1048576:.0f} MiB body → {resp.status}"


def _initialize_with(ctx: Ctx, extra: list[tuple[str, str]], *, host: bool = True) -> Response:
    """An otherwise valid initialize POST with changed headers (a session it opens is deleted)."""
    t = ctx.target
    with ctx.conn() as conn:
        resp = conn.request("POST", t.path, [*post_headers(t), *extra, ("Connection", "close")],
                            dumps(initialize_msg(0)), host=host)
    delete_if_created(t, resp)
    return resp


@attack("missing-host", 9, "HTTP/1.1 without Host → 400 (RFC 9112 3.2)")
def missing_host(ctx: Ctx) -> tuple[str, str]:
    resp = _initialize_with(ctx, [], host=False)
    verdict = PASS if resp.status == 400 else FAIL
    return verdict, f"initialize over HTTP/1.1 without Host → {resp.status}"


@attack("nul-in-header", 9, "a NUL byte in a header value → 400 (RFC 9110 5.5)")
def nul_in_header(ctx: Ctx) -> tuple[str, str]:
    resp = _initialize_with(ctx, [("X-Attack", "a\x00b")])
    return (PASS if resp.status == 400 else FAIL), f"initialize with X-Attack: a<NUL>b → {resp.status}"


@attack("origin-other-port", 9, "an Origin on another local port is refused (403)")
def origin_other_port(ctx: Ctx) -> tuple[str, str]:
    port = 9999 if ctx.target.port != 9999 else 9998
    got, bad = [], []
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
        resp = _initialize_with(ctx, [("Origin", origin)])
        got.append(f"Origin {origin} → {resp.status}")
        if resp.status != 403:
            bad.append(got[-1])
    return (FAIL if bad else PASS), "; ".join(bad or got) + f" (server on port {ctx.target.port})"


@attack("deep-nesting-cost", 9, "a body of 4 MiB of '[' costs about what a flat body does")
def deep_nesting_cost(ctx: Ctx) -> tuple[str, str]:
    t, o = ctx.target, ctx.opts
    size = o.body_limit - 1024
    bodies = {"nested": b"[" * size, "flat": b'"' + b"a" * (size - 2) + b'"'}
    best = {k: float("inf") for k in bodies}
    statuses: dict[str, int] = {}
    for _ in range(NEST_TRIES):
        for label, body in bodies.items():
            with ctx.conn() as conn:
                conn.send(build_request("POST", t.path, [*post_headers(t), ("Connection", "close")],
                                        body, host=t.host_header))
                started = time.monotonic()
                resp = conn.read_head()
                best[label] = min(best[label], time.monotonic() - started)
                statuses[label] = resp.status
    nested, flat = best["nested"] * 1000, best["flat"] * 1000
    summary = (f"{size / 1048576:.1f} MiB of '[' → {statuses['nested']} in {nested:.0f} ms; "
               f"a flat string of that size → {statuses['flat']} in {flat:.0f} ms")
    if statuses["nested"] >= 500:
        return FAIL, summary
    if nested > NEST_RATIO * flat and nested - flat > NEST_MARGIN_S * 1000:
        return FAIL, summary + f" ({nested / max(flat, 0.001):.0f}×)"
    return PASS, summary

