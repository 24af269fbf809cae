"""A server for the telemetry tests, in-process (``make_server()``) or as a real process
(``python -m mcpsync serve tests/otel_fixture_server.py --stdio``, with tests/ on PYTHONPATH).

As a process with ``OTEL_FIXTURE_DUMP=PATH`` in its environment it records with the
OpenTelemetry SDK (in-memory span exporter and metric reader) and, when its session ends,
writes what it recorded to PATH as JSON (to a temporary name first, then renamed), for the
test in the parent process to read.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

from mcpsync import Context, Server, ToolError

WAIT_MAX_S = 30.0                # how long `wait` blocks if nobody cancels it (tests always do)
WAITING = threading.Event()      # set by `wait` once it runs (in-process tests wait for it)


def make_server(name: str = "otel-fixture") -> Server:
    server = Server(name, "0.0.1")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def fail(reason: str) -> str:
        """Fail as a tool does: an isError result."""
        raise ToolError(f"failed: {reason}")

    @server.tool()
    def wait(ctx: Context) -> str:
        """Block until the client cancels the call."""
        WAITING.set()
        return f"cancelled={ctx.wait_cancelled(WAIT_MAX_S)}"

    @server.tool()
    def confirm(ctx: Context) -> str:
        """Ask the client (elicitation) before answering."""
        answer = ctx.elicit("Go on?", {"type": "object", "properties": {}})
        return f"answer={answer['action']}"

    @server.tool()
    def chatty(ctx: Context) -> str:
        """Report progress and log a line, then answer."""
        ctx.report_progress(1, 2)
        ctx.info("half way")
        return "done"

    @server.resource("otel://items/{item}")
    def item(item: str) -> str:
        """One item."""
        return f"item {item}"

    @server.prompt()
    def greet(who: str) -> str:
        """A greeting."""
        return f"Hello, {who}"

    return server


server = make_server(os.environ.get("OTEL_FIXTURE_NAME", "otel-fixture"))

_DUMP = os.environ.get("OTEL_FIXTURE_DUMP")
if _DUMP:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otelutil import metric_records, span_record

    from mcpsync import telemetry

    _spans = InMemorySpanExporter()
    _tracing = TracerProvider()
    _tracing.add_span_processor(SimpleSpanProcessor(_spans))
    _reader = InMemoryMetricReader()
    telemetry.enable(tracer_provider=_tracing, meter_provider=MeterProvider(metric_readers=[_reader]))

    @server.on_session_closed
    def _dump(_conn: Any) -> None:
        record = {"spans": [span_record(s) for s in _spans.get_finished_spans()],
                  "metrics": metric_records(_reader)}
        tmp = f"{_DUMP}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, _DUMP)
