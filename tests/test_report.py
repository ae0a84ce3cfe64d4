"""The terminal report: aggregation from spans, OTLP JSON round trip, rendering."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.export.jsonl import spans_to_json_line
from techrevati.runtime.telemetry.report.exporter import (
    ReportExporter,
    RunReport,
    build_report,
    record_from_span,
    records_from_otlp_json,
    render_report,
)


@pytest.fixture
def recorded() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "report-test"}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider.get_tracer("report-test"), memory
    provider.shutdown()


def _chat(
    tracer: Tracer, model: str, tokens_in: int, tokens_out: int, cost: float, **extra: Any
) -> None:
    with tracer.start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_USAGE_INPUT_TOKENS: tokens_in,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: tokens_out,
            sc.COST_USD: cost,
            **extra,
        },
    ):
        pass


def _tool(
    tracer: Tracer, name: str, decision: str, *, error: bool = False, blocked: bool = False
) -> None:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: name,
            sc.PERMISSION_DECISION: decision,
            sc.GUARDRAIL_OUTCOME: sc.GUARDRAIL_BLOCKED if blocked else sc.GUARDRAIL_PASSED,
        },
    ) as span:
        if error:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute(sc.ERROR_TYPE, "ToolError")


def _run(tracer: Tracer) -> None:
    """Two sessions: a researcher over budget, a writer that fails on a guardrail."""
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "researcher"},
    ) as session:
        _chat(
            tracer,
            "gpt-4o",
            1000,
            200,
            0.0045,
            **{sc.BREAKER_NAME: "llm", sc.BREAKER_STATE: "closed"},
        )
        _tool(tracer, "search", sc.PERMISSION_ALLOW)
        _tool(tracer, "search", sc.PERMISSION_ALLOW, error=True)
        _tool(tracer, "shell", sc.PERMISSION_DENY)
        # A GenAI library's own span under ours describes the same call: not counted twice.
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                sc.GEN_AI_USAGE_INPUT_TOKENS: 500,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 50,
                sc.COST_USD: 0.002,
                sc.BREAKER_NAME: "llm",
                sc.BREAKER_STATE: "open",
            },
        ):
            _chat(tracer, "gpt-4o", 500, 50, 0.002)
        session.add_event(sc.EVENT_LIMIT_HIT, {sc.LIMIT_KIND: sc.LIMIT_BUDGET})
        session.add_event(sc.EVENT_HANDOFF, {})
        session.set_attribute(sc.SESSION_OUTCOME, sc.OUTCOME_COMPLETED)

    with tracer.start_as_current_span(
        "invoke_agent writer",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "writer"},
    ) as session:
        _chat(tracer, "claude-sonnet", 300, 30, 0.001)
        _tool(tracer, "publish", sc.PERMISSION_ALLOW, blocked=True)
        session.add_event(
            sc.EVENT_GUARDRAIL, {sc.GUARDRAIL_NAME: "pii", sc.GUARDRAIL_STAGE: "input"}
        )
        # Roll-ups on the session span win over what its children add up to.
        session.set_attribute(sc.SESSION_TURNS, 4)
        session.set_attribute(sc.COST_USD, 0.01)
        session.set_attribute(sc.SESSION_OUTCOME, sc.OUTCOME_FAILED)
        session.set_status(Status(StatusCode.ERROR))


def _report(spans: tuple[ReadableSpan, ...]) -> RunReport:
    return build_report(r for r in (record_from_span(s) for s in spans) if r is not None)


def test_report_aggregates_sessions_models_tools_and_events(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    _run(tracer)
    report = _report(memory.get_finished_spans())

    researcher, writer = report.sessions
    assert (researcher.role, researcher.outcome) == ("researcher", "completed")
    assert researcher.turns == 2
    assert (researcher.input_tokens, researcher.output_tokens) == (1500, 250)
    assert researcher.cost_usd == pytest.approx(0.0065)
    assert researcher.limit_hits == ["budget"]
    assert (writer.role, writer.outcome, writer.turns) == ("writer", "failed", 4)
    assert writer.cost_usd == pytest.approx(0.01)

    models = {row.model: row for row in report.models}
    assert models["gpt-4o"].calls == 2
    assert models["gpt-4o"].input_tokens == 1500
    assert models["gpt-4o"].cost_usd == pytest.approx(0.0065)
    assert models["claude-sonnet"].calls == 1
    # The writer's roll-up ($0.01) holds $0.009 no exported call span carries: the
    # header counts the sessions, and the model table shows the difference on its
    # own row, so the two always agree.
    assert report.total_cost_usd == pytest.approx(0.0165)
    assert report.unattributed_cost_usd == pytest.approx(0.009)
    assert sum(row.cost_usd for row in report.models) + report.unattributed_cost_usd == (
        pytest.approx(report.total_cost_usd)
    )
    # The same for calls: the writer's roll-up counts 4 turns, 1 with a call span.
    assert (report.unattributed_calls, report.model_calls) == (3, 6)

    tools = {row.tool: row for row in report.tools}
    assert (tools["search"].calls, tools["search"].allowed, tools["search"].errors) == (2, 2, 1)
    assert (tools["shell"].denied, tools["shell"].allowed) == (1, 0)
    assert tools["publish"].blocked == 1

    assert report.breakers == {"llm": Counter({"closed": 1, "open": 1})}
    assert report.limit_hits == Counter({("budget", "researcher"): 1})
    assert report.guardrail_violations == Counter({("pii (input)", "writer"): 1})
    assert report.other_events == Counter({sc.EVENT_HANDOFF: 1})
    assert report.services == ["report-test"]


def test_render_shows_the_numbers(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, memory = recorded
    _run(tracer)
    text = render_report(_report(memory.get_finished_spans()), source="x.jsonl")
    assert text.startswith(
        "techrevati-runtime telemetry report: 2 sessions, 6 model calls, 4 tool calls, "
        "total cost $0.016500\n"
    )
    lines = text.splitlines()
    researcher = next(line for line in lines if line.lstrip().startswith("researcher"))
    assert researcher.split()[1:2] == ["completed"]
    assert researcher.split()[-4:] == ["1500", "250", "0.006500", "budget"]
    gpt = next(line for line in lines if line.lstrip().startswith("gpt-4o"))
    assert gpt.split() == ["gpt-4o", "2", "1500", "250", "0.006500", "0"]
    rest = next(line for line in lines if line.lstrip().startswith("(session roll-ups"))
    assert rest.split()[-5:] == ["3", "-", "-", "0.009000", "-"]
    # Each token column says which input count it is; none is unlabelled.
    assert "input incl. cached" in lines[lines.index("Sessions") + 1]
    assert "input tok" not in text
    shell = next(line for line in lines if line.lstrip().startswith("shell"))
    assert shell.split() == ["shell", "1", "0", "1", "0", "0"]
    assert "  llm      closed x1, open x1" in lines
    assert any(line.split() == ["pii", "(input)", "writer", "1"] for line in lines)
    assert "Events: 1 handoff" in lines
    assert lines[-1] == "spans: x.jsonl"


def test_otlp_json_line_is_the_proto3_mapping_with_hex_ids(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    _run(tracer)
    spans = memory.get_finished_spans()
    line = spans_to_json_line(spans)
    assert "\n" not in line
    decoded = json.loads(line)
    first = decoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert first["traceId"] == f"{spans[0].context.trace_id:032x}"
    assert first["spanId"] == f"{spans[0].context.span_id:016x}"
    assert isinstance(first["kind"], int)  # OTLP/JSON wants enum numbers

    # Turning the hex ids back into base64 gives exactly the protobuf the OTLP
    # exporter would send: nothing was lost or renamed on the way to JSON.
    def to_base64(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId")
                else to_base64(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [to_base64(item) for item in node]
        return node

    parsed = ParseDict(to_base64(decoded), ExportTraceServiceRequest())
    assert parsed == encode_spans(spans)


def test_report_from_json_equals_report_from_spans(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    _run(tracer)
    spans = memory.get_finished_spans()
    from_memory = _report(spans)
    # Two lines, as the batch processor would write them.
    lines = [spans_to_json_line(spans[:5]), spans_to_json_line(spans[5:])]
    from_json = build_report(
        record for line in lines for record in records_from_otlp_json(json.loads(line))
    )
    assert from_json == from_memory


def test_report_exporter_keeps_a_bounded_window(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    for _ in range(5):
        _run(tracer)
    spans = memory.get_finished_spans()
    keeper = ReportExporter(max_spans=10)
    keeper.export(spans[: len(spans) // 2])
    keeper.export(spans[len(spans) // 2 :])
    kept, older = keeper.records()
    assert len(kept) <= 10 and older == len(spans) - len(kept)
    report = keeper.build()
    # Older spans are folded into the totals: the whole run is counted, exactly.
    whole = build_report([r for r in (record_from_span(s) for s in spans) if r is not None])
    assert report.span_count == len(spans) and report.evicted == 0
    assert len(report.sessions) + report.earlier_sessions == len(whole.sessions) == 10
    assert report.earlier_sessions >= 1
    assert [(m.model, m.calls, m.cost_usd) for m in report.models] == [
        (m.model, m.calls, pytest.approx(m.cost_usd)) for m in whole.models
    ]
    assert report.total_cost_usd == pytest.approx(whole.total_cost_usd)
    assert "earlier sessions are counted in the totals" in render_report(report)


def test_report_does_not_keep_captured_content(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    with tracer.start_as_current_span(
        "chat m", attributes={sc.GEN_AI_INPUT_MESSAGES: "password=hunter2", sc.COST_USD: 0.1}
    ):
        pass
    [record] = [record_from_span(span) for span in memory.get_finished_spans()]
    assert record is not None
    assert record.attributes == {sc.COST_USD: 0.1}


def test_empty_run_renders() -> None:
    text = render_report(build_report([]))
    assert "0 sessions, 0 model calls, 0 tool calls" in text
    assert "no spans recorded" in text


def test_calls_a_session_admitted_count_when_nothing_booked_them(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """A client call that failed (a 404) counted against the cap, with no span and no booking."""
    tracer, memory = recorded
    session = tracer.start_span(
        "invoke_agent fails",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "fails"},
    )
    session.set_attribute(sc.SESSION_TURNS, 0)  # nothing booked
    session.set_attribute(sc.SESSION_ITERATION, 3)  # three calls admitted: the cap saw them
    session.set_attribute(sc.SESSION_OUTCOME, sc.OUTCOME_COMPLETED)
    session.end()
    report = _report(memory.get_finished_spans())
    [row] = report.sessions
    assert row.turns == 3
    assert (report.unattributed_calls, report.model_calls) == (3, 3)


def test_a_replay_prices_other_instrumentations_calls_as_the_ledger_booked_them() -> None:
    """A negotiated rate registered in the agent's process is unknown to the one that
    reads the file: the session span's per-model roll-up says what the calls cost."""
    from techrevati.runtime import ModelPricing, UsageSnapshot, agent_session
    from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor
    from techrevati.runtime.usage_tracking import PRICING_TABLE, register_pricing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ensure_limits_processor(provider)
    register_pricing(
        "negotiated-model", ModelPricing(input_per_million=100.0, output_per_million=0)
    )
    try:
        with agent_session("mixed", tracer_provider=provider):
            # Ours: a turn that carries its cost on its span ($0.0002).
            from techrevati.runtime import current_agent_session

            session = current_agent_session()
            assert session is not None
            session.run_turn(lambda: "ok", model="negotiated-model", usage=UsageSnapshot(2, 0))
            # Another instrumentation's call span: tokens, no cost on it ($0.001 booked).
            library = provider.get_tracer("some.instrumentation")
            span = library.start_span(
                "chat negotiated-model",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "negotiated-model",
                },
            )
            span.set_attributes({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 0})
            span.end()
    finally:
        PRICING_TABLE.pop("negotiated-model", None)  # the reading process does not know it
    report = _report(exporter.get_finished_spans())
    [row] = [r for r in report.models if r.model == "negotiated-model"]
    assert (row.calls, row.unpriced_calls) == (2, 0)
    assert row.cost_usd == pytest.approx(0.0012)
    assert report.unpriced_models == {}


def _session_span(tracer: Tracer, role: str, **attributes: Any) -> None:
    span = tracer.start_span(
        f"invoke_agent {role}",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: role},
    )
    span.set_attributes({sc.SESSION_OUTCOME: sc.OUTCOME_COMPLETED, **attributes})
    span.end()


def test_unpriced_calls_only_the_session_roll_up_counts_are_listed(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """A bare client's 10 calls of an unknown model have no call span: the session
    roll-up names them. Before: "10 model calls, total cost $0.000000", no unpriced
    list, no model row."""
    tracer, memory = recorded
    _session_span(
        tracer,
        "s",
        **{
            sc.SESSION_TURNS: 10,
            sc.COST_USD: 0.0,
            sc.SESSION_UNPRICED_CALLS: 10,
            sc.SESSION_UNPRICED_MODELS: ["my-private-model"],
            sc.SESSION_UNPRICED_MODEL_CALLS: [10],
        },
    )
    report = _report(memory.get_finished_spans())
    assert report.unpriced_models == {"my-private-model": 10}
    [row] = report.models
    assert (row.model, row.calls, row.unpriced_calls, row.rollup_calls) == (
        "my-private-model",
        10,
        10,
        10,
    )
    assert (report.unattributed_calls, report.model_calls) == (0, 10)
    text = render_report(report)
    assert text.startswith(
        "techrevati-runtime telemetry report: 1 session, 10 model calls, 0 tool calls, "
        "total cost $0.000000 (10 calls of unpriced models not counted: my-private-model "
        "— price them with register_pricing())\n"
    )
    line = next(x for x in text.splitlines() if x.lstrip().startswith("my-private-model"))
    assert line.split() == ["my-private-model", "10", "-", "-", "0.000000", "0"]
    assert "Unpriced models (no known price; booked at $0): my-private-model (10 calls)" in text
    # The HTML page's total-cost card says the same (it showed $0.000000 alone).
    from techrevati.runtime.telemetry.report.detail import build_detail
    from techrevati.runtime.telemetry.report.html import render_html

    records = [r for r in (record_from_span(s) for s in memory.get_finished_spans()) if r]
    page = render_html(report, build_detail(records, report))
    card = page[page.index('id="kpi-total-cost"') :]
    card = card[: card.index('<div class="kpi')]
    assert "0.000000" in card
    assert "10 calls of unpriced models not counted: my-private-model" in card


def test_unpriced_roll_up_takes_out_the_calls_with_spans_and_keeps_an_unnamed_count(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, memory = recorded
    with tracer.start_as_current_span(
        "invoke_agent mixed",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "mixed"},
    ) as session:
        # One call of the model with a span of its own (a turn), two without (bare client).
        _chat(tracer, "my-private-model", 10, 1, 0.0, **{sc.COST_SOURCE: sc.COST_SOURCE_UNPRICED})
        session.set_attributes(
            {
                sc.SESSION_TURNS: 3,
                sc.COST_USD: 0.0,
                sc.SESSION_UNPRICED_CALLS: 3,
                sc.SESSION_UNPRICED_MODELS: ["my-private-model"],
                sc.SESSION_UNPRICED_MODEL_CALLS: [3],
            }
        )
    # A file written before sessions named their unpriced models: only the count.
    _session_span(tracer, "older", **{sc.SESSION_TURNS: 2, sc.SESSION_UNPRICED_CALLS: 2})
    report = _report(memory.get_finished_spans())
    assert report.unpriced_models == {"(model not named)": 2, "my-private-model": 3}
    [row] = report.models
    assert (row.calls, row.rollup_calls, row.input_tokens) == (3, 2, 10)
    # The older session's 2 calls stay on the roll-up row: their model is not known.
    assert (report.unattributed_calls, report.model_calls) == (2, 5)
    assert (
        "(5 calls of unpriced models not counted: (model not named), my-private-model"
        in (render_report(report).splitlines()[0])
    )


def test_breaker_states_count_model_calls_not_the_session_span(
    recorded: tuple[Tracer, InMemorySpanExporter],
) -> None:
    """The session span carries its breaker's state at the end: not a call. Before: the
    decorated demo's 2 calls read "openai closed x3"."""
    tracer, memory = recorded
    breaker = {sc.BREAKER_NAME: "openai", sc.BREAKER_STATE: "closed"}
    with tracer.start_as_current_span(
        "invoke_agent writer",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "writer"},
    ) as session:
        _chat(tracer, "gpt-4o-mini", 5000, 120, 0.0005219999999999999, **breaker)
        _chat(tracer, "gpt-4o-mini", 1200, 300, 0.00036, **breaker)
        session.set_attributes(breaker)
    report = _report(memory.get_finished_spans())
    assert report.breakers == {"openai": Counter({"closed": 2})}
    text = render_report(report)
    assert "  openai   closed x2" in text.splitlines()
    # Costs print with 6 decimals everywhere: no float tail of a span's value.
    assert "0.000882" in text and "0.000522" not in text and "99999" not in text


def test_orchestrator_breaker_counts_one_state_per_call() -> None:
    from otel_harness import make_otel
    from techrevati.runtime import CircuitBreaker, ModelPricing, Orchestrator, UsageSnapshot
    from techrevati.runtime.usage_tracking import register_pricing

    register_pricing("model-a", ModelPricing(3.0, 15.0))
    otel = make_otel()
    try:
        orch = Orchestrator(
            role="writer", circuit_breaker=CircuitBreaker("model-api"), **otel.kwargs()
        )
        with orch.session() as session:
            for _ in range(2):
                session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(10, 1))
        report = _report(otel.exporter.get_finished_spans())
    finally:
        otel.shutdown()
    assert report.model_calls == 2
    assert report.breakers == {"model-api": Counter({"closed": 2})}


def test_a_bare_clients_unpriced_calls_warn_once_and_reach_the_report() -> None:
    """No budget: the first call of a model with no price warns at the caller's line
    (before: a log line only, shown only where logging is configured)."""
    import warnings

    import openai

    from fake_openai import FakeOpenAI, serve
    from otel_harness import make_otel
    from techrevati.runtime import agent_session
    from techrevati.runtime.telemetry.limits import guard

    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "my-private-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
    otel = make_otel()
    guard.uninstall_guard()
    guard.enable_guard()
    try:
        with serve(FakeOpenAI(completion)) as api, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
            with agent_session("s", max_iterations=20, **otel.kwargs()):
                for _ in range(10):
                    client.chat.completions.create(
                        model="my-private-model", messages=[{"role": "user", "content": "hi"}]
                    )
        report = _report(otel.exporter.get_finished_spans())
    finally:
        guard.uninstall_guard()
        guard.enable_guard()
        otel.shutdown()
    said = [w for w in seen if "has no known price" in str(w.message)]
    assert len(said) == 1
    assert said[0].category is RuntimeWarning and said[0].filename == __file__
    assert "'my-private-model'" in str(said[0].message)
    assert report.unpriced_models == {"my-private-model": 10}
    assert report.model_calls == 10
    assert "10 calls of unpriced models not counted: my-private-model" in render_report(report)


def test_counts_of_one_are_singular_in_the_text_report() -> None:
    from test_report_html import _one_call_tree

    report = build_report(_one_call_tree())
    report.earlier_sessions = report.evicted = 1
    text = render_report(report)
    assert "\n  ... and 1 earlier session\n" in text
    assert (
        "note: 1 earlier session is counted in the totals above but not listed (the "
        "in-memory report keeps a bounded sample of the latest); the spans file has it\n"
    ) in text
    assert (
        "note: the oldest span was left out of this in-memory report to bound memory; the "
        "spans file has it"
    ) in text
    report.earlier_sessions = report.evicted = 2
    text = render_report(report)
    assert "note: 2 earlier sessions are counted in the totals" in text
    assert "note: the oldest 2 spans were left out of this in-memory report" in text


def test_one_problem_left_out_is_said_in_the_singular() -> None:
    from techrevati.runtime.telemetry.report.read import MAX_PROBLEM_LINES, Problems

    problems = Problems()
    for line in range(MAX_PROBLEM_LINES + 1):
        problems.add(f"f:{line}", "not JSON")
    assert problems.lines()[-1] == "... and 1 more problem"
    problems.add("f:last", "not JSON")
    assert problems.lines()[-1] == "... and 2 more problems"
