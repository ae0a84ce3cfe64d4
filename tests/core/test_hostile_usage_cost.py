"""A hostile usage block is booked at the clamp, and every report of the session agrees.

A response claiming 2**64 input tokens prices at trillions of dollars. The
ledger books one call at most ``MAX_CALL_USD`` ($1e6, logged), so the limits
stay on; the session's summary, its tracker, its span and the report built
from the spans must show that same amount, not the unclamped one.
"""

from __future__ import annotations

import logging

import pytest

from otel_harness import Otel
from techrevati.runtime import UsageSnapshot, agent_session, agent_turn
from techrevati.runtime.pricing import MAX_CALL_USD, price_call
from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor
from techrevati.runtime.telemetry.report.model import build_report
from techrevati.runtime.telemetry.report.read import record_from_span

pytestmark = pytest.mark.usefixtures("priced")

HOSTILE = {"model": "model-a", "usage": {"prompt_tokens": 2**64, "completion_tokens": 5}}
NORMAL = UsageSnapshot(1000, 100)


def test_every_report_of_the_session_shows_what_the_ledger_booked(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    normal = price_call("model-a", NORMAL).cost  # 0.0045

    @agent_turn(model="model-a")
    def hostile() -> dict[str, object]:
        return HOSTILE

    @agent_turn(model="model-a", usage=NORMAL)
    def fair() -> str:
        return "ok"

    with caplog.at_level(logging.WARNING), agent_session("w", **otel.kwargs()) as session:
        fair()
        hostile()
        fair()
    assert "out of range" in caplog.text  # the clamp is logged
    booked = MAX_CALL_USD + 2 * normal
    assert session._ledger.spent == pytest.approx(booked, rel=1e-12)
    # The session's own readings: once 4.6e13 USD here.
    assert session.tracker.total_cost() == pytest.approx(booked, rel=1e-12)
    usage = session.summary()["usage"]
    assert usage["total_cost_usd"] == round(booked, 4)
    assert session.summary()["per_model_cost"] == {"model-a": pytest.approx(booked, rel=1e-12)}
    # Tokens are reported as they came (clamped to the largest count we keep); only
    # their price is not believed.
    assert usage["total_input_tokens"] == 2**63 - 1 + 2 * 1000
    # The spans: the call's own cost, its source, and the session's roll-ups.
    calls = otel.spans("chat model-a")
    costs = sorted(float((s.attributes or {})["techrevati.cost.usd"]) for s in calls)
    assert costs == [pytest.approx(normal), pytest.approx(normal), MAX_CALL_USD]
    sources = sorted(str((s.attributes or {})["techrevati.cost.source"]) for s in calls)
    assert sources == ["clamped", "registered", "registered"]
    attrs = otel.span("invoke_agent w").attributes or {}
    assert attrs["techrevati.cost.usd"] == pytest.approx(booked, rel=1e-12)
    assert attrs["techrevati.budget.spent_usd"] == pytest.approx(booked, rel=1e-12)
    # The report built from the exported spans.
    report = build_report(r for r in map(record_from_span, otel.spans()) if r is not None)
    assert report.total_cost_usd == pytest.approx(booked, rel=1e-12)


def test_another_instrumentations_hostile_span_is_booked_at_the_clamp(otel: Otel) -> None:
    ensure_limits_processor(otel.tracer_provider)
    tracer = otel.tracer_provider.get_tracer("some.instrumentation")
    with (
        agent_session("w", **otel.kwargs()) as session,
        tracer.start_as_current_span(
            "chat model-b",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "model-b",
            },
        ) as span,
    ):
        span.set_attribute("gen_ai.usage.input_tokens", 2**62)
        span.set_attribute("gen_ai.usage.output_tokens", 0)
    assert session._ledger.spent == MAX_CALL_USD
    assert session.tracker.total_cost() == MAX_CALL_USD
    assert session.summary()["usage"]["total_cost_usd"] == MAX_CALL_USD
    attrs = otel.span("invoke_agent w").attributes or {}
    assert attrs["techrevati.cost.usd"] == MAX_CALL_USD
