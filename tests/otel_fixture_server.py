"""A server for the telemetry tests, in-process (``make_server()``) or as a real process
(``python -m mcpsync serve tests/otel_fixture_server.py --stdio``).

As a process with ``OTEL_FIXTURE_DUMP=PATH`` in its environment it records with the
OpenTelemetry SDK (in-memory span exporter and metric reader) and, when its session ends,
writes what it recorded to PATH as JSON (to a temporary name first, then renamed), for the
test in the parent process to read.
"""
from __future__ import annotations

import json
import os
from typing import Any

from mcpsync import Server, ToolError


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

    @server.resource("otel://items/{item}")
    def item(item: str) -> str:
        """One item."""
        return f"item {item}"

    @server.prompt()
    def greet(who: str) -> str:
        """A greeting."""
        return f"Hello, {who}"

    return server


def span_record(span: Any) -> dict[str, Any]:
    """What the tests compare of a finished SDK span (ids as 32/16 hex digits)."""
    parent = span.parent
    return {"name": span.name, "kind": span.kind.name,
            "trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}",
            "parent_id": None if parent is None else f"{parent.span_id:016x}",
            "attributes": dict(span.attributes or {}),
            "status": span.status.status_code.name, "description": span.status.description,
            "links": [f"{link.context.span_id:016x}" for link in span.links]}


def metric_records(reader: Any) -> list[dict[str, Any]]:
    """Every histogram data point of ``reader``: name, attributes, count."""
    out: list[dict[str, Any]] = []
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data is not None else ()):
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    out.append({"name": metric.name, "unit": metric.unit,
                                "attributes": dict(point.attributes), "count": point.count,
                                "sum": point.sum, "bounds": list(point.explicit_bounds)})
    return out


server = make_server(os.environ.get("OTEL_FIXTURE_NAME", "otel-fixture"))

_DUMP = os.environ.get("OTEL_FIXTURE_DUMP")
if _DUMP:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
