"""Property-based bad input against the protocol core and the HTTP endpoint (hypothesis).

Invariants: never an exception out of the core, never a 500 or a traceback on the wire, the
right kind of error, ids echoed with their type, no session/thread leak, and the server
keeps serving. Bounded for CI by FUZZ_EXAMPLES; `scripts/fuzz.py` runs the same
properties longer."""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterator

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from httpclient import HttpMcp  # noqa: E402
from httpserver import serving  # noqa: E402
from memclient import MemClient  # noqa: E402

from mcpsync.app import McpApp  # noqa: E402
from mcpsync.examples.everything import server  # noqa: E402
from mcpsync.protocol import jsonrpc  # noqa: E402
from mcpsync.transports.wsgi import McpWsgiApp  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("MCPSYNC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
methods = st.sampled_from(["initialize", "ping", "tools/list", "tools/call", "resources/read",
                           "resources/list", "prompts/get", "completion/complete", "logging/setLevel",
                           "resources/subscribe", "server/discover", "subscriptions/listen",
                           "nope/nothing", "notifications/cancelled", "notifications/initialized"])
ids = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=8) | st.floats(allow_nan=False)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods},
    optional={"id": ids, "params": json_values | st.fixed_dictionaries(
        {"name": st.sampled_from(["echo", "add", "test_sampling", "nope"]) | st.text(max_size=5),
         "arguments": json_values, "uri": st.text(max_size=20) | st.just("test://static-text")},
        optional={"_meta": json_values})})


def check_reply(msg: Any, reply: Any) -> None:
    """A reply is None (notification / cancelled) or well-formed JSON-RPC with no traceback."""
    if reply is None:
        return
    replies = reply if isinstance(reply, list) else [reply]
    for r in replies:
        encoded = jsonrpc.encode(r)
        assert b"Traceback" not in encoded
        assert r["jsonrpc"] == "2.0"
        assert ("result" in r) != ("error" in r)
        if "error" in r:
            assert type(r["error"]["code"]) is int and isinstance(r["error"]["message"], str)
    if isinstance(msg, dict) and isinstance(reply, dict) and jsonrpc.is_valid_id(msg.get("id")) \
            and "method" in msg and msg.get("jsonrpc") == "2.0":
        assert reply["id"] == msg["id"] and type(reply["id"]) is type(msg["id"])


@FUZZ
@given(st.lists(messages | json_values, min_size=1, max_size=6))
def test_core_never_raises_and_answers_well_formed(batch: list[Any]) -> None:
    client = MemClient(server)
    for msg in batch:
        check_reply(msg, client.raw(msg))
    client.conn.close()


@FUZZ
@given(st.binary(max_size=200))
def test_core_decoder_only_raises_parse_errors(data: bytes) -> None:
    try:
        jsonrpc.decode(data)
    except Exception as exc:
        assert type(exc).__name__ == "ParseError"


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, McpApp]]:
    app = McpApp(server)
    with serving(McpWsgiApp(app)) as base:
        yield f"{base}/mcp", app
    app.close()


header_values = st.none() | st.sampled_from(["application/json", "text/plain", "", "*/*",
                                             "application/json; charset=utf-8", "2025-11-25",
                                             "1999-01-01", "2026-07-28", "garbage"]) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=12)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), messages.map(lambda m: json.dumps(m).encode()),
                      st.lists(messages, max_size=3).map(lambda b: json.dumps(b).encode())),
       ctype=header_values, accept=header_values, version=header_values, method=header_values,
       use_session=st.booleans())
def test_http_endpoint_never_500s_and_keeps_serving(live: tuple[str, McpApp], body: bytes,
                                                    ctype: Any, accept: Any, version: Any,
                                                    method: Any, use_session: bool) -> None:
    url, app = live
    with HttpMcp(url) as c:
        if use_session:
            c.initialize()
        headers = {"Content-Type": ctype, "Accept": accept, "MCP-Protocol-Version": version,
                   "Mcp-Method": method}
        reply = c.post(None, headers, raw=body, session=use_session)
        assert reply.status < 500 or reply.status == 503, (reply.status, reply.body[:200])
        assert b"Traceback" not in reply.body
        if reply.body and reply.content_type == "application/json":
            json.loads(reply.body)
        created = reply.headers.get("mcp-session-id")
        if created:  # a fuzzed body that was a valid initialize: that client ends its session
            assert c.request("DELETE", headers={"Mcp-Session-Id": created}, session=False).status == 200
        assert c.post({"jsonrpc": "2.0", "id": "alive", "method": "ping",
                       "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                            "io.modelcontextprotocol/clientCapabilities": {}}}},
                      {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "ping"},
                      session=False).status == 404  # a stateless ping: -32601, the server is fine
        if use_session:
            c.delete()


def test_fuzzing_leaked_no_sessions_or_threads(live: tuple[str, McpApp]) -> None:
    """Runs after the HTTP property test in this module: the store is back to empty (every
    fuzz client deleted the session it made) and no worker thread is stuck."""
    _, app = live
    assert len(app.store) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("mcpsync-stream")]
