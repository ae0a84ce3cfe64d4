"""Poison-proof export: one bad value never costs another span, and everything is bounded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from otlp_receiver import HttpReceiver, attributes

from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.calls.labels import NAME_LIMIT
from techrevati.runtime.telemetry.export.jsonl import read_json_lines
from techrevati.runtime.telemetry.export.pipeline import BoundedSpanProcessor
from techrevati.runtime.telemetry.export.sanitize import (
    DEFAULT_ATTRIBUTE_VALUE_LENGTH,
    DEFAULT_NAME_LENGTH,
    ExportLimits,
    sanitize_span,
)
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

_CONTEXT = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))


def _span(**overrides: Any) -> ReadableSpan:
    fields: dict[str, Any] = {
        "name": "chat model-a",
        "context": _CONTEXT,
        "attributes": {"a": "fine"},
        "start_time": 1,
        "end_time": 2,
    }
    fields.update(overrides)
    return ReadableSpan(**fields)


def test_a_clean_span_is_passed_through_untouched() -> None:
    span = _span(events=[Event("e", {"k": 1}, 5)])
    assert sanitize_span(span, ExportLimits()) is span


def test_every_field_is_made_encodable_and_bounded() -> None:
    limits = ExportLimits(max_attribute_length=8, max_span_attributes=3, max_name_length=10)
    span = _span(
        name="execute_tool tool\ud800 and a long tail",
        attributes={
            "tool": "tool\ud800",
            "long": "x" * 100,
            "huge": 2**64,
            "list": ("ok", "bad\udcff", "y" * 20),
            "fourth": "dropped by the count cap",
        },
        events=[Event("exception\ud800", {"exception.message": "m\udc80" * 20}, 7)],
        status=Status(StatusCode.ERROR, "boom\ud800" * 5),
        resource=Resource({"service.name": "svc\ud800"}),
    )
    clean = sanitize_span(span, limits)
    assert clean is not span
    assert clean.name == "execute_to"
    assert dict(clean.attributes or {}) == {
        "tool": "tool\ufffd",
        "long": "xxxxxxxx",
        "huge": float(2**64),
    }
    assert clean.events[0].name == "exception\ufffd"
    assert clean.events[0].attributes == {"exception.message": "m\ufffdm\ufffdm\ufffdm\ufffd"}
    assert clean.status.status_code is StatusCode.ERROR
    assert clean.status.description == "boom\ufffdboo"
    assert clean.resource.attributes["service.name"] == "svc\ufffd"
    assert clean.context == span.context and clean.end_time == 2
    # A sequence keeps its type and each item is cut on its own.
    alone = sanitize_span(_span(attributes={"list": ("ok", "bad\udcff", "y" * 20)}), limits)
    assert (alone.attributes or {})["list"] == ("ok", "bad\ufffd", "yyyyyyyy")


def test_limits_follow_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ExportLimits.from_env() == ExportLimits()
    assert ExportLimits().max_attribute_length == DEFAULT_ATTRIBUTE_VALUE_LENGTH
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "40")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5")
    limits = ExportLimits.from_env()
    assert (limits.max_attribute_length, limits.max_span_attributes) == (40, 5)
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "")  # the SDK's "no limit"
    assert ExportLimits.from_env().max_attribute_length is None


def test_a_bad_limit_variable_warns_and_keeps_the_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "lots")
    assert ExportLimits.from_env() == ExportLimits()
    assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT must be a non-negative integer" in caplog.text
    handle = configure(set_global=False, spans_file=False, report=False, metrics=False)
    handle.shutdown(timeout_s=1)


def _session_names(path: Path) -> list[str]:
    return [
        span["name"]
        for request in read_json_lines(path)
        for resource_spans in request["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
        if span["name"].startswith("invoke_agent")
    ]


def test_one_bad_tool_name_costs_no_other_session_in_the_file_or_at_the_collector(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.jsonl"
    with HttpReceiver() as receiver:
        handle = configure(
            endpoint=receiver.endpoint,
            spans_file=path,
            set_global=False,
            metrics=False,
            report=False,
            timeout=5,
        )
        orch = Orchestrator(role="good", phase="p", tracer_provider=handle.tracer_provider)
        for _ in range(100):
            with orch.session() as session:
                session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(10, 2))
        bad = Orchestrator(role="bad", phase="p", tracer_provider=handle.tracer_provider)
        with bad.session() as session:
            session.run_tool("tool\ud800", lambda: "result")
        assert handle.shutdown(timeout_s=10)
        received = receiver.received.spans()
    stats = handle.stats()
    assert (stats["otlp"].exported, stats["otlp"].lost) == (202, 0)
    assert (stats["local"].exported, stats["local"].lost) == (202, 0)

    names = _session_names(path)
    assert names.count("invoke_agent good") == 100 and names.count("invoke_agent bad") == 1
    at_collector = [span.name for _resource, span in received]
    assert at_collector.count("invoke_agent good") == 100
    assert "execute_tool tool\ufffd" in at_collector
    tool = next(span for _r, span in received if span.name.startswith("execute_tool"))
    assert attributes(tool.attributes)[sc.GEN_AI_TOOL_NAME] == "tool\ufffd"


def test_a_huge_name_and_value_are_cut_for_our_spans_and_other_instrumentations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    path = tmp_path / "spans.jsonl"
    handle = configure(spans_file=path, set_global=False, metrics=False, report=False)
    role = "r" * 10_000_000
    orch = Orchestrator(role=role, phase="p", tracer_provider=handle.tracer_provider)
    with orch.session() as session:
        session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(10, 2))
    assert handle.tracer_provider is not None
    foreign = handle.tracer_provider.get_tracer("some.other.instrumentation")
    with foreign.start_as_current_span(
        "x" * 5000, attributes={f"k{i}": "v" * 1000 for i in range(10)}
    ):
        pass
    handle.shutdown(timeout_s=5)

    spans = [
        span
        for request in read_json_lines(path)
        for resource_spans in request["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    assert max(len(span["name"]) for span in spans) == DEFAULT_NAME_LENGTH
    session_span = next(s for s in spans if s["name"].startswith("invoke_agent"))
    # Our own names are bounded where they are made (calls/labels.py), far below the cut.
    assert session_span["name"] == "invoke_agent " + "r" * (NAME_LIMIT - 1) + "…"
    assert len(session_span["attributes"]) == 4
    assert all(len(a["value"].get("stringValue", "")) <= 100 for a in session_span["attributes"])
    other = next(s for s in spans if s["name"].startswith("xxx"))
    assert len(other["attributes"]) == 4
    assert {len(a["value"]["stringValue"]) for a in other["attributes"]} == {100}
    assert path.stat().st_size < 100_000


class _Picky(SpanExporter):
    """Raises on any batch holding a span named "bad" (as an encoder would)."""

    def __init__(self) -> None:
        self.exported: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if any(span.name == "bad" for span in spans):
            raise ValueError("cannot encode")
        self.exported.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def test_a_batch_the_exporter_cannot_take_is_split_around_the_bad_span(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    picky = _Picky()
    processor = BoundedSpanProcessor(picky, name="picky", max_export_batch_size=512)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for index in range(200):
        with tracer.start_as_current_span("bad" if index in (17, 150) else f"good {index}"):
            pass
    processor.shutdown_within(5)
    stats = processor.stats()
    assert (stats.exported, stats.failed, stats.pending) == (198, 2, 0)
    assert sorted(picky.exported) == sorted(f"good {i}" for i in range(200) if i not in (17, 150))
    assert (
        sum("raised; exporting the batch in parts" in r.getMessage() for r in caplog.records) == 1
    )


def test_the_sdk_says_truncated_once_not_once_per_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    handle = configure(spans_file=False, set_global=False, metrics=False, report=False)
    assert handle.tracer_provider is not None
    tracer = handle.tracer_provider.get_tracer("t")
    caplog.clear()
    for _ in range(50):
        with tracer.start_as_current_span("s", attributes={"prompt": "p" * 100}):
            pass
    handle.shutdown(timeout_s=2)
    cut = [r for r in caplog.records if "exceeds max length" in r.getMessage()]
    assert len(cut) <= 1


def test_the_file_exporter_splits_long_batches_and_leaves_out_only_what_cannot_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from techrevati.runtime.telemetry.export import jsonl

    monkeypatch.setattr(jsonl, "MAX_LINE_CHARS", 3000)
    path = tmp_path / "split.jsonl"
    exporter = jsonl.JsonLinesSpanExporter(path)
    spans = [
        _span(
            name=f"chat {i}" if i != 7 else "chat \ud800",  # unencodable (not sanitised here)
            context=SpanContext(0x99, 0x100 + i, is_remote=False, trace_flags=TraceFlags(1)),
            attributes={"pad": "p" * 400},
        )
        for i in range(20)
    ]
    assert exporter.export(spans) is SpanExportResult.FAILURE  # span 7 could not be encoded
    exporter.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) > 1 and all(len(line) <= 3000 for line in lines)
    names = [
        span["name"]
        for request in read_json_lines(path)
        for rs in request["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    assert sorted(names) == sorted(f"chat {i}" for i in range(20) if i != 7)
    assert sum("could not encode a span" in r.getMessage() for r in caplog.records) == 1
