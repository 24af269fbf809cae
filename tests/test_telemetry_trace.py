"""OpenTelemetry across processes and hops (``mcpsync.telemetry``): a ``traceparent`` in
``params._meta`` becomes the server span's parent; one trace from a client through
``mcpsync hub`` to its upstream (over Streamable HTTP in this process, and over stdio to a
real upstream process); cancelled requests; and the switch: with OpenTelemetry absent or
turned off, nothing of the telemetry runs and everything still works.
"""
from __future__ import annotations

import ast
import contextlib
import json
import pathlib
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

import otel_fixture_server  # noqa: E402
from httpclient import HttpMcp  # noqa: E402
from httpserver import serving  # noqa: E402
from otelutil import REPO, TESTS, Recorder, fixture_process, span_record, stdio_endpoint  # noqa: E402
from rpcutil import wait_until  # noqa: E402

from mcpsync import telemetry  # noqa: E402
from mcpsync.client.channels import make_channel  # noqa: E402
from mcpsync.client.endpoint import Endpoint  # noqa: E402
from mcpsync.client.session import ClientSession  # noqa: E402
from mcpsync.http.app import HttpApp  # noqa: E402
from mcpsync.hub import Hub, parse_config  # noqa: E402

WAIT_S = 20.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    monkeypatch.setattr(telemetry, "ACTIVE", telemetry.ACTIVE)  # put back afterwards
    yield Recorder()


@contextlib.contextmanager
def http_server(name: str = "otel-fixture") -> Iterator[str]:
    """The fixture server on mcpsync's front end in this process; yields its /mcp URL."""
    with serving(HttpApp(otel_fixture_server.make_server(name))) as base:
        yield f"{base}/mcp"


@contextlib.contextmanager
def client(url: str, revision: str = "2025-11-25") -> Iterator[ClientSession]:
    cfg = Endpoint(name="otel-client", transport="streamable-http", url=url, revision=revision)
    session = ClientSession(cfg, make_channel(cfg)).open()
    try:
        yield session
    finally:
        session.close()


def only(spans: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and s["kind"] == kind]
    assert len(found) == 1, (name, kind, [(s["name"], s["kind"]) for s in spans])
    return found[0]


# ---- extraction from params._meta -----------------------------------------------------------

def test_traceparent_in_meta_becomes_the_parent(otel: Recorder) -> None:
    with http_server() as url, HttpMcp(url) as c:
        c.initialize()
        meta = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "rojo=00f067aa0ba902b7"}
        result = c.call("tools/call", {"name": "echo", "arguments": {"text": "t"}, "_meta": meta})
        assert result["content"][0]["text"] == "t"
        c.delete()
    span = only(otel.spans(), "tools/call echo", "SERVER")
    assert (span["trace_id"], span["parent_id"]) == (TRACE_ID, PARENT_ID)
    [sdk_span] = [s for s in otel.exporter.get_finished_spans() if s.name == "tools/call echo"]
    assert sdk_span.parent is not None and sdk_span.parent.is_remote
    assert sdk_span.context.trace_state.get("rojo") == "00f067aa0ba902b7"  # tracestate carried on
    assert sdk_span.context.trace_flags.sampled


@pytest.mark.parametrize("meta", [
    {"traceparent": 5}, {"traceparent": ["00-" + TRACE_ID + "-" + PARENT_ID + "-01"]},
    {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"},
    {"traceparent": None, "tracestate": {"a": 1}}, {"baggage": 7},
], ids=["number", "list", "garbage", "zero-trace", "null", "bad-baggage"])
def test_a_bad_trace_context_is_ignored(otel: Recorder, meta: dict[str, Any]) -> None:
    """Whatever a client puts in _meta, the call is served and its span is a new trace."""
    with http_server() as url, HttpMcp(url) as c:
        c.initialize()
        result = c.call("tools/call", {"name": "echo", "arguments": {"text": "b"}, "_meta": meta})
        assert result["content"][0]["text"] == "b"
        c.delete()
    span = only(otel.spans(), "tools/call echo", "SERVER")
    assert span["parent_id"] is None and span["trace_id"] != TRACE_ID


def test_ambient_span_becomes_a_link(otel: Recorder) -> None:
    """A span current when the request arrives (an HTTP instrumentation's, here the test's
    own) is linked when _meta brings the parent, and is the parent otherwise."""
    from memclient import MemClient
    mem = MemClient(otel_fixture_server.make_server())
    mem.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"}})
    tracer = otel.tracing.get_tracer("test")
    with tracer.start_as_current_span("POST /mcp") as ambient:
        mem.call("tools/call", {"name": "echo", "arguments": {"text": "a"},
                                "_meta": {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}})
        mem.call("prompts/get", {"name": "greet", "arguments": {"who": "b"}})
    ambient_id = f"{ambient.get_span_context().span_id:016x}"
    linked = only(otel.spans(), "tools/call echo", "SERVER")
    assert linked["parent_id"] == PARENT_ID and linked["links"] == [ambient_id]
    child = only(otel.spans(), "prompts/get greet", "SERVER")
    assert child["parent_id"] == ambient_id and child["links"] == []
    mem.conn.close()


def test_cancelled_request_span(otel: Recorder) -> None:
    otel_fixture_server.WAITING.clear()
    with http_server() as url, HttpMcp(url) as c:
        c.initialize()
        replies: list[Any] = []
        call = threading.Thread(target=lambda: replies.append(c.post(
            {"jsonrpc": "2.0", "id": "w", "method": "tools/call", "params": {"name": "wait"}})),
            name="mcpsync-test-caller")
        call.start()
        assert otel_fixture_server.WAITING.wait(WAIT_S)
        with HttpMcp(url) as other:
            other.session_id, other.version = c.session_id, c.version
            cancel = other.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": "w", "reason": "test"}})
            assert cancel.status == 202
        call.join(WAIT_S)
        assert not call.is_alive() and replies and replies[0].messages() == []  # no response
        c.delete()
    span = only(otel.spans(), "tools/call wait", "SERVER")
    assert span["attributes"]["error.type"] == "cancelled" and span["status"] == "ERROR"


def test_a_propagator_set_later_reads_its_own_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """The _meta keys a propagator reads are looked up once per propagator: a modern
    request's envelope alone is no trace context; one set later is asked for its fields."""
    from opentelemetry import propagate
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Custom(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return {"found": getter.get(carrier, "x-trace")}

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            pass

        @property
        def fields(self) -> set[str]:
            return {"x-trace"}

    tel = telemetry.Telemetry()
    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "x-trace": "t"}
    assert tel._extract(envelope) is None
    assert tel._extract({**envelope, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) is not None
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", Custom())  # set_global_textmap, undone after
    assert tel._extract(envelope) == {"found": ["t"]}


# ---- one trace: client -> hub -> upstream ----------------------------------------------------

def chain(spans: list[dict[str, Any]], upstream_server: dict[str, Any]) -> None:
    """The client's span -> the hub's server span -> the hub's client span -> the upstream's
    server span: one trace, each the parent of the next."""
    client_span = only(spans, "tools/call up__echo", "CLIENT")
    hub_server = only(spans, "tools/call up__echo", "SERVER")
    hub_client = only(spans, "tools/call echo", "CLIENT")
    trace = client_span["trace_id"]
    assert hub_server["trace_id"] == hub_client["trace_id"] == upstream_server["trace_id"] == trace
    assert client_span["parent_id"] is None
    assert hub_server["parent_id"] == client_span["span_id"]
    assert hub_client["parent_id"] == hub_server["span_id"]
    assert upstream_server["parent_id"] == hub_client["span_id"]
    assert upstream_server["attributes"]["gen_ai.tool.name"] == "echo"
    assert hub_server["attributes"]["gen_ai.tool.name"] == "up__echo"


@contextlib.contextmanager
def hub_with(entry: dict[str, Any]) -> Iterator[str]:
    """An in-process hub with one upstream ``up``, served over Streamable HTTP; yields its URL."""
    hub = Hub(parse_config({"mcpServers": {"up": entry}})).start()
    try:
        assert hub.wait_ready(WAIT_S), hub.health()
        with serving(HttpApp(hub.server)) as base:
            yield f"{base}/mcp"
    finally:
        hub.close()


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_one_trace_through_the_hub_to_an_http_upstream(otel: Recorder, revision: str) -> None:
    with http_server("up") as upstream, hub_with({"url": upstream, "revision": revision}) as url:
        with client(url, revision) as session:
            result = session.request("tools/call", {"name": "up__echo", "arguments": {"text": "x"}})
    assert result["content"][0]["text"] == "x"
    spans = otel.spans()
    chain(spans, only(spans, "tools/call echo", "SERVER"))


def test_one_trace_through_the_hub_to_a_stdio_upstream(otel: Recorder, tmp_path: pathlib.Path) -> None:
    dump = tmp_path / "upstream.json"
    with hub_with(fixture_process(dump, "up")) as url:
        with client(url) as session:
            result = session.request("tools/call", {"name": "up__echo", "arguments": {"text": "y"}})
    assert result["content"][0]["text"] == "y"
    assert wait_until(dump.exists, WAIT_S), "the upstream process wrote no records"
    upstream_spans = json.loads(dump.read_text(encoding="utf-8"))["spans"]
    upstream = only(upstream_spans, "tools/call echo", "SERVER")
    assert upstream["attributes"]["network.transport"] == "pipe"
    spans = otel.spans()
    chain(spans, upstream)
    assert only(spans, "tools/call echo", "CLIENT")["attributes"]["network.transport"] == "pipe"


def test_a_hub_without_an_sdk_passes_the_trace_on(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: pathlib.Path) -> None:
    """With the API alone (no SDK: nothing recorded, no span of its own) the hub still
    carries a client's trace context to its upstream, which records under it."""
    tel = telemetry.Telemetry()  # the global providers: no SDK is installed in this process
    monkeypatch.setattr(telemetry, "ACTIVE", tel)
    assert not tel.recording()
    dump = tmp_path / "upstream.json"
    with hub_with(fixture_process(dump, "up")) as url, HttpMcp(url) as c:
        c.initialize()
        result = c.call("tools/call", {"name": "up__echo", "arguments": {"text": "p"},
                                       "_meta": {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}})
        assert result["content"][0]["text"] == "p"
        c.delete()
    assert wait_until(dump.exists, WAIT_S), "the upstream process wrote no records"
    upstream = only(json.loads(dump.read_text(encoding="utf-8"))["spans"], "tools/call echo", "SERVER")
    assert (upstream["trace_id"], upstream["parent_id"]) == (TRACE_ID, PARENT_ID)


# ---- the switch: absent, disabled by the environment, turned off -----------------------------

ABSENT = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed: importing it raises ImportError
from httpserver import serving
from otel_fixture_server import make_server
from mcpsync import telemetry
from mcpsync.client.channels import make_channel
from mcpsync.client.endpoint import Endpoint
from mcpsync.client.session import ClientSession
from mcpsync.http.app import HttpApp
assert telemetry.AVAILABLE is False and telemetry.ACTIVE is None
assert not hasattr(ClientSession.request, "__wrapped__"), "the client request is wrapped"
try:
    telemetry.enable()
except RuntimeError as exc:
    print("refused:", exc)
with serving(HttpApp(make_server())) as base:
    cfg = Endpoint(name="c", transport="streamable-http", url=base + "/mcp")
    session = ClientSession(cfg, make_channel(cfg)).open()
    try:
        print("echo:", session.request("tools/call", {"name": "echo", "arguments": {"text": "z"}})["content"][0]["text"])
    finally:
        session.close()
print("loaded:", sorted(m for m, mod in sys.modules.items() if m.startswith("opentelemetry") and mod is not None))
"""


def run_python(code: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{REPO}:{TESTS}", "PATH": "/usr/bin:/bin", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_without_opentelemetry_nothing_is_wrapped_and_all_works() -> None:
    out = run_python(ABSENT)
    assert "refused: OpenTelemetry is not installed: pip install 'mcpsync[otel]'" in out
    assert "echo: z" in out
    assert "loaded: []" in out


def test_otel_sdk_disabled_turns_it_off() -> None:
    out = run_python("from mcpsync import telemetry; print(telemetry.AVAILABLE, telemetry.ACTIVE)",
                     OTEL_SDK_DISABLED="true")
    assert out.split() == ["True", "None"]
    out = run_python("from mcpsync import telemetry; print(type(telemetry.ACTIVE).__name__)")
    assert out.split() == ["Telemetry"]  # on by default when the API is installed


def test_an_sdk_set_later_is_picked_up() -> None:
    out = run_python("""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from mcpsync import telemetry
tel = telemetry.ACTIVE
print(tel.recording(), tel.recording())
trace.set_tracer_provider(TracerProvider())
print(tel.recording())
tel._recheck_at = 0.0  # the next look is due (PROVIDER_RECHECK_S later)
print(tel.recording())
""")
    assert out.split() == ["False", "False", "False", "True"]


def telemetry_calls() -> tuple[int, int]:
    """How many functions of mcpsync/telemetry.py run, on any thread, while a client opens a
    session, calls a tool and closes: (the client's wrapper, everything else). The wrapper
    of ``ClientSession.request`` is there whenever the API is installed; turned off, all it
    does is its ``ACTIVE is None`` check."""
    wrapper = ClientSession.request.__code__
    counts = [0, 0]
    lock = threading.Lock()  # guards counts; taken by the profiled threads

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename == telemetry.__file__:
            with lock:
                counts[frame.f_code is not wrapper] += 1

    threading.setprofile(profile)  # threads started from now on: the front end's workers
    try:
        with serving(HttpApp(otel_fixture_server.make_server())) as base:
            sys.setprofile(profile)
            try:
                with client(base + "/mcp") as session:
                    session.request("tools/call", {"name": "echo", "arguments": {"text": "p"}})
            finally:
                sys.setprofile(None)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return counts[0], counts[1]


def test_turned_off_nothing_of_it_runs(otel: Recorder) -> None:
    assert ClientSession.request.__code__.co_filename == telemetry.__file__  # wrapped: API installed
    requests, others = telemetry_calls()
    assert requests == 3 and others > 0  # the control: on, it runs (initialize, setLevel, call)
    assert otel.spans("SERVER")
    otel.exporter.clear()
    telemetry.disable()
    assert telemetry.ACTIVE is None
    assert telemetry_calls() == (3, 0)  # the wrapper's check, and nothing else
    assert otel.spans() == []


def test_only_the_telemetry_module_imports_opentelemetry() -> None:
    pkg = REPO / "mcpsync"
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "opentelemetry" for n in names):
                assert path == pkg / "telemetry.py", f"{path} imports OpenTelemetry"
    for path in sorted((pkg / "protocol").rglob("*.py")):  # sans-IO: no telemetry either
        assert "telemetry" not in path.read_text(encoding="utf-8"), path


def test_readme_sdk_setup_records_a_served_call(tmp_path: pathlib.Path) -> None:
    """The README's SDK setup, in a served module, exports the server span of a stdio call."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    part = readme.split("## Observability: OpenTelemetry", 1)[1]
    setup = part.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "traced.py").write_text(
        setup + "\nfrom otel_fixture_server import make_server\nserver = make_server()\n", encoding="utf-8")
    lines = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                 "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "echo", "arguments": {"text": "r"},
                         "_meta": {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}}}]
    proc = subprocess.run([sys.executable, "-m", "mcpsync", "serve", str(tmp_path / "traced.py"), "--stdio"],
                          input="".join(json.dumps(m) + "\n" for m in lines), capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": f"{REPO}:{TESTS}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["result"]["content"][0]["text"] == "r"
    assert '"name": "tools/call echo"' in proc.stderr and f'"trace_id": "0x{TRACE_ID}"' in proc.stderr
    assert '"name": "mcp.server.operation.duration"' in proc.stderr
