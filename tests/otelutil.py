"""Helpers of the telemetry tests: the OpenTelemetry SDK recording in memory, records of
spans and metric points as plain dicts (also what ``otel_fixture_server`` writes from its
process), and the fixture server as a stdio process."""
from __future__ import annotations

import pathlib
import sys
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcpsync import telemetry
from mcpsync.client.endpoint import Endpoint

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURE = str(TESTS / "otel_fixture_server.py")


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


class Recorder:
    """An SDK tracer and meter provider with in-memory export, made the telemetry's
    (``telemetry.enable``: the test puts the previous ``telemetry.ACTIVE`` back)."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing = TracerProvider()
        self.tracing.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        telemetry.enable(tracer_provider=self.tracing,
                         meter_provider=MeterProvider(metric_readers=[self.reader]), **options)

    def spans(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in map(span_record, self.exporter.get_finished_spans())
                if kind is None or r["kind"] == kind]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        return [m for m in metric_records(self.reader) if m["name"] == name]


def fixture_process(dump: pathlib.Path, name: str = "otel-fixture") -> dict[str, Any]:
    """How to run the fixture server as a stdio process that writes its records to ``dump``.
    At 2025-11-25: a 2026-07-28 client keeps a subscriptions/listen open, which holds the
    server's exit past the client's close (and the records are written at the session's end)."""
    return {"command": sys.executable,
            "args": ["-m", "mcpsync", "serve", FIXTURE, "--stdio", "--log-level", "WARNING"],
            "env": {"PYTHONPATH": f"{REPO}:{TESTS}", "OTEL_FIXTURE_DUMP": str(dump),
                    "OTEL_FIXTURE_NAME": name},
            "revision": "2025-11-25"}


def stdio_endpoint(dump: pathlib.Path) -> Endpoint:
    p = fixture_process(dump)
    return Endpoint(name="otel-stdio", transport="stdio", command=p["command"], args=tuple(p["args"]),
                    env=p["env"], revision=p["revision"])
