"""No call is free under an enforced budget: a call whose usage never arrives.

A stream without ``include_usage`` (what many clients send to proxies and
self-hosted servers) reports no tokens. Under a budget it is booked at an
estimate, marked ``techrevati.cost.source = "estimated"``: from the request and
the streamed text the client guard saw, else the model's learned cost, else the
session's ``call_estimate_usd``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, instrumented_openai, serve
from otel_harness import Otel
from techrevati.runtime import BudgetExceededError, UsageSnapshot, agent_session, agent_turn
from techrevati.runtime.pricing import price_call
from techrevati.runtime.telemetry.limits import guard
from techrevati.runtime.telemetry.report.model import build_report
from techrevati.runtime.telemetry.report.read import record_from_span
from techrevati.runtime.telemetry.report.text import render_report

pytestmark = pytest.mark.usefixtures("priced")

CHUNK: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1}
STREAM = [
    {**CHUNK, "model": "model-a", "choices": [{"index": 0, "delta": {"content": "x" * 400}}]},
    {**CHUNK, "model": "model-a", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]
MESSAGES = [{"role": "user", "content": "y" * 4000}]


def _estimate() -> float:
    # The rule of limits/estimate.py: request input characters / 4, streamed text / 4.
    chars = len(json.dumps(MESSAGES, ensure_ascii=False))
    return price_call("model-a", UsageSnapshot(-(-chars // 4), 100)).cost


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    guard.uninstall_guard()
    with serve(FakeOpenAI({}, stream=STREAM)) as fake:
        yield fake
    guard.uninstall_guard()


def _stream(client: openai.OpenAI) -> str:
    chunks = client.chat.completions.create(model="model-a", messages=MESSAGES, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_without_usage_is_booked_at_an_estimate(api: FakeOpenAI, otel: Otel) -> None:
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    budget = 2.5 * _estimate()
    sent = 0
    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        pytest.raises(BudgetExceededError),
        agent_session("w", budget_usd=budget, enforce_budget=True, **otel.kwargs()) as session,
    ):
        for _ in range(21):
            assert _stream(client) == "x" * 400
            sent += 1
    # Booked at $0 before: all 21 ran. Now the budget holds: 3 ran (the third crossed).
    assert len(api.requests) == 3
    assert session.tracker.total_cost() == pytest.approx(3 * _estimate())


def test_library_span_without_usage_is_booked_at_the_guards_estimate(api: FakeOpenAI) -> None:
    with instrumented_openai() as (provider, exporter):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        with (
            agent_session("w", budget_usd=1.0, enforce_budget=True, tracer_provider=provider) as s,
            pytest.warns(RuntimeWarning, match="no token usage"),
        ):
            _stream(client)
    assert s._iteration_count == 1
    assert s.tracker.total_cost() == pytest.approx(_estimate())
    chats = [x for x in exporter.get_finished_spans() if x.name.startswith("chat")]
    assert len(chats) == 1


def test_turn_without_usage_is_booked_at_the_learned_cost(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask(usage: bool) -> Any:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}} if usage else "text"

    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session,
    ):
        ask(True)
        ask(False)
    assert session.tracker.total_cost() == pytest.approx(2 * 0.0045)
    spans = otel.spans("chat model-a")
    sources = sorted(str((s.attributes or {}).get("techrevati.cost.source")) for s in spans)
    assert sources == ["estimated", "registered"]
    estimated = next(
        s for s in spans if (s.attributes or {}).get("techrevati.cost.source") == "estimated"
    )
    assert estimated.attributes is not None
    assert estimated.attributes["techrevati.cost.usd"] == pytest.approx(0.0045)
    assert estimated.attributes["techrevati.usage.missing"] is True
    # The report says how many calls were booked at an estimate, and for how much.
    report = build_report(r for r in map(record_from_span, otel.spans()) if r is not None)
    assert (report.calls_estimated, report.estimated_cost_usd) == (1, pytest.approx(0.0045))
    assert report.total_cost_usd == pytest.approx(0.009)
    assert "Booked at an estimate: 1 call, $0.004500" in render_report(report)


def test_turn_without_usage_falls_back_to_call_estimate_usd(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask() -> str:
        return "text"

    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        pytest.raises(BudgetExceededError),
        agent_session(
            "w", budget_usd=0.025, enforce_budget=True, call_estimate_usd=0.01, **otel.kwargs()
        ) as session,
    ):
        for _ in range(5):
            ask()
    assert session._iteration_count == 3  # $0.01 each: the third crosses $0.025
    assert session.tracker.total_cost() == pytest.approx(0.03)


def test_without_a_budget_nothing_is_invented(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask() -> str:
        return "text"

    with agent_session("w", **otel.kwargs()) as session:
        ask()
    assert session.tracker.total_cost() == 0.0
    span = otel.span("chat model-a")
    assert span.attributes is not None
    # $0 because no usage was read, not because a price said so.
    assert span.attributes["techrevati.cost.source"] == "no_usage"
